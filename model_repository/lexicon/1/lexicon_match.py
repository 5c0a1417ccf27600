"""Korean and English harmful-word matching with exact character spans; no Triton imports.

``model.py`` serves it, ``scripts/export/export_lexicon.py`` normalises the sources' terms with
it, and the unit tests and ``scripts/bench/lexicon.py`` run it in-process.

Text and terms go through one normalisation (``normalise``): NFKC, case folding, Hangul
conjoining jamo as compatibility jamo (ㅅㅂ), accents and zero-width characters dropped, and
leetspeak inside Latin words (sh1t, a$$). A term may also skip a short run of spaces, digits or
punctuation inserted between two Hangul letters (시1발, 씨 발, 씨.발). Every normalised character
remembers which character of the original text it came from, so spans are exact.

Which matches count is decided by ``Rules`` (measured on tests/data/moderation_ko.csv, see
docs/MODERATION.md) and by the operators' overrides file (``parse_overrides``): added terms,
removed terms, and allowed words (innocent words that contain a term, such as 시발점).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
"""Leetspeak read as letters, only inside a word that has Latin letters (so 시1발 and 18 keep their digits)."""
LATIN_WORD = re.compile(r"[a-z0-9@$!]+")
DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
"""Combining accents and format characters (zero-width space and joiner, soft hyphen): obfuscators
insert them invisibly, and they carry no letter."""
MAX_GAP_CHARS = 3
"""The longest run of spaces, digits or punctuation a term may skip between two Hangul letters
(씨 . 발 is 3); longer runs separate words that only happen to follow each other."""
MIN_SOURCE_TERM_CHARS = 1
"""Source terms shorter than this are not matched (1: all are). Measured: keeping the single
syllables as whole words (below) finds 썅 and flags nothing innocent more than dropping them."""
WHOLE_WORD_TERM_CHARS = 1
"""Terms this short match only a whole word: single syllables such as 개, 새, 년, 좇 are parts of
everyday words (개발, 새로, 일 년, 좇아), and some are words of their own."""
DEFAULT_CATEGORY = "profanity"
"""The category of an added term that names none."""
OVERRIDES_SOURCE = "overrides"
"""The source name of the terms the overrides file adds."""
CATEGORY = re.compile(r"[a-z][a-z0-9_]*")
"""A category is a short snake_case label."""
LEXICON_FORMAT = 1
"""The layout of lexicon.json this code reads (and scripts/export/export_lexicon.py writes)."""
_END = ""
"""Trie key of the entry that ends at a node (no text character normalises to the empty string)."""


@dataclass(frozen=True)
class Rules:
    """Which raw matches count; the defaults are the measured, shipped choice."""

    min_source_chars: int = MIN_SOURCE_TERM_CHARS
    whole_word_chars: int = WHOLE_WORD_TERM_CHARS
    word_start_chars: int = 0
    """Terms up to this long must start a word (0: off; measured, it costs recall: 개씨발, ㄱㅅㄲ)."""
    max_gap: int = MAX_GAP_CHARS
    spaced_whole_words: bool = True
    """A match that skips a space must cover whole words (씨 발, 개 새 끼, not 다섯 시 발표)."""
    source_allowed: bool = True
    """Also allow the words a source lists as its own false positives (korcen's: 시발점, 꺼져있)."""


# --- normalisation -------------------------------------------------------------------------

def _compat_jamo() -> dict[str, str]:
    """Conjoining Hangul jamo (what NFKC makes of ㅅ) -> the compatibility jamo people type."""
    table = {}
    for cp in range(0x1100, 0x1200):
        name = unicodedata.name(chr(cp), "")
        for part in ("CHOSEONG ", "JUNGSEONG ", "JONGSEONG "):
            if part in name:
                try:
                    table[chr(cp)] = unicodedata.lookup("HANGUL LETTER " + name.split(part, 1)[1])
                except KeyError:
                    pass  # archaic jamo without a compatibility letter stay as they are
    return table


def _jamo_clusters() -> dict[str, str]:
    """Compatibility jamo clusters as the letters they are made of (ㅄ -> ㅂㅅ, ㅽ -> ㅅㅂ), so ㅄ
    matches the lexicon's ㅂㅅ; from the Unicode names (HANGUL LETTER PIEUP-SIOS)."""
    table = {}
    for cp in range(0x3131, 0x318F):
        parts = unicodedata.name(chr(cp), "").removeprefix("HANGUL LETTER ").split("-")
        if len(parts) > 1:
            table[chr(cp)] = "".join(unicodedata.lookup("HANGUL LETTER " + part) for part in parts)
    return table


COMPAT_JAMO = _compat_jamo()
JAMO_CLUSTERS = _jamo_clusters()


def is_hangul(ch: str) -> bool:
    """A Hangul syllable or compatibility jamo."""
    return "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e"


@functools.lru_cache(maxsize=8192)
def _fold(ch: str) -> str:
    """The normalised form of one character: zero, one or more characters."""
    if "\uac00" <= ch <= "\ud7a3":
        return ch
    out = []
    for c in unicodedata.normalize("NFKC", ch).casefold():
        c = COMPAT_JAMO.get(c, c)
        if is_hangul(c):
            out.append(JAMO_CLUSTERS.get(c, c))
            continue
        out.extend(d for d in unicodedata.normalize("NFD", c) if unicodedata.category(d) not in DROPPED_CATEGORIES)
    return "".join(out)


def _unleet(text: str) -> str:
    """Leetspeak as letters in words with Latin letters; a trailing ! stays punctuation."""
    def word(match: re.Match) -> str:
        token = match.group()
        if not re.search("[a-z]", token):
            return token
        core = token.rstrip("!")
        return core.translate(LEET) + token[len(core):]

    return LATIN_WORD.sub(word, text)


@dataclass(frozen=True)
class Normalised:
    text: str
    origin: tuple[int, ...]
    """origin[i]: index in the original text of the character text[i] came from."""

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original text's [start, end) of the normalised [start, end)."""
        return self.origin[start], self.origin[end - 1] + 1


def normalise(text: str) -> Normalised:
    chars: list[str] = []
    origin: list[int] = []
    for index, ch in enumerate(text):
        folded = _fold(ch)
        chars.append(folded)
        origin.extend([index] * len(folded))
    return Normalised(_unleet("".join(chars)), tuple(origin))


def _skippable(ch: str) -> bool:
    """Spaces, digits and punctuation: what obfuscators put between the syllables of a word."""
    return not ch.isalpha()


def normalise_term(term: str) -> str:
    """A term's matching form: normalised, with the runs a match may skip between Hangul removed."""
    text = normalise(term.strip()).text
    out: list[str] = []
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and _skippable(text[j]):
            j += 1
        if j > i and out and is_hangul(out[-1]) and j < len(text) and is_hangul(text[j]):
            i = j  # 씨-발, 개 새 끼, 씨1발: the text may skip these, so the term does not keep them
            continue
        out.append(text[i])
        i += 1
    return re.sub(r"\s+", " ", "".join(out)).strip()


# --- lexicon -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    term: str
    """Normalised (``normalise_term``)."""
    category: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Match:
    start: int
    end: int
    text: str
    term: str
    category: str
    sources: tuple[str, ...]

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text, "term": self.term,
                "category": self.category, "sources": list(self.sources)}


@dataclass
class Overrides:
    """The operators' file: terms to add (with a category), terms to remove, allowed words."""

    add: dict[str, str] = field(default_factory=dict)
    remove: set[str] = field(default_factory=set)
    allow: set[str] = field(default_factory=set)


def merge_entries(entries: Iterable[Entry]) -> dict[str, Entry]:
    """One entry per normalised term: the first one's category, every source."""
    merged: dict[str, Entry] = {}
    for entry in entries:
        term = normalise_term(entry.term)
        if not term:
            continue
        known = merged.get(term)
        sources = entry.sources if known is None else known.sources + entry.sources
        category = entry.category if known is None else known.category
        merged[term] = Entry(term, category, tuple(sorted(set(sources))))
    return merged


class _Trie:
    """Terms by character; ``walk`` follows the text and may skip gaps between Hangul letters."""

    def __init__(self, terms: Iterable[str]):
        self.root: dict = {}
        for term in terms:
            node = self.root
            for ch in term:
                node = node.setdefault(ch, {})
            node[_END] = term

    def walk(self, text: str, start: int, gaps: dict[int, tuple[int, bool]]) -> Iterator[tuple[str, int, bool]]:
        """(term, end, skipped a space) of every term that matches text from ``start``."""
        stack = [(self.root, start, False)]
        while stack:
            node, pos, spaced = stack.pop()
            if _END in node:
                yield node[_END], pos, spaced
            if pos >= len(text):
                continue
            child = node.get(text[pos])
            if child is not None:
                stack.append((child, pos + 1, spaced))
            gap = gaps.get(pos) if pos > start else None
            if gap is not None:
                stack.append((node, gap[0], spaced or gap[1]))


def _gaps(text: str, max_gap: int) -> dict[int, tuple[int, bool]]:
    """For each run of at most max_gap skippable characters between two Hangul letters: its start
    -> (index of the next Hangul letter, whether the run holds whitespace)."""
    gaps = {}
    i = 1
    while i < len(text):
        if _skippable(text[i]) and is_hangul(text[i - 1]):
            j = i
            while j < len(text) and _skippable(text[j]):
                j += 1
            if j - i <= max_gap and j < len(text) and is_hangul(text[j]):
                gaps[i] = (j, any(c.isspace() for c in text[i:j]))
            i = j
        else:
            i += 1
    return gaps


def _word_start(text: str, i: int) -> bool:
    return i == 0 or not text[i - 1].isalnum()


def _word_end(text: str, i: int) -> bool:
    return i == len(text) or not text[i].isalnum()


class Lexicon:
    """Finds the entries' terms in text; ``match`` returns non-overlapping, leftmost-longest spans."""

    def __init__(self, entries: Iterable[Entry], allowed: Iterable[str] = (), rules: Rules = Rules()):
        self.entries = {e.term: e for e in entries}
        self.allowed = {a for a in (normalise_term(w) for w in allowed) if a}
        self.rules = rules
        self._terms = _Trie(self.entries)
        self._allowed = _Trie(self.allowed)

    def __len__(self) -> int:
        return len(self.entries)

    def _counts(self, text: str, term: str, start: int, end: int, spaced: bool) -> bool:
        """The rules: Latin and digit edges need a word boundary, short terms a whole word, and a
        match that skipped a space whole words."""
        if term[0].isascii() and term[0].isalnum() and start > 0 and text[start - 1].isascii() \
                and text[start - 1].isalnum():
            return False
        if term[-1].isascii() and term[-1].isalnum() and end < len(text) and text[end].isascii() \
                and text[end].isalnum():
            return False
        whole = _word_start(text, start) and _word_end(text, end)
        if len(term) <= self.rules.whole_word_chars or (spaced and self.rules.spaced_whole_words):
            return whole
        return len(term) > self.rules.word_start_chars or _word_start(text, start)

    def _candidates(self, text: str) -> list[tuple[int, int, str]]:
        gaps = _gaps(text, self.rules.max_gap)
        allowed = [(i, end) for i in range(len(text)) for _, end, _ in self._allowed.walk(text, i, gaps)]
        found = []
        for i in range(len(text)):
            for term, end, spaced in self._terms.walk(text, i, gaps):
                if not self._counts(text, term, i, end, spaced):
                    continue
                if any(a <= i and end <= b for a, b in allowed):
                    continue  # inside an allowed word: 시발점, 수박씨 발라
                found.append((i, end, term))
        return found

    def match(self, text: str) -> list[Match]:
        norm = normalise(text)
        chosen: list[Match] = []
        taken_until = 0
        for start, end, term in sorted(self._candidates(norm.text), key=lambda c: (c[0], -c[1])):
            if start < taken_until:
                continue
            taken_until = end
            entry = self.entries[term]
            a, b = norm.span(start, end)
            chosen.append(Match(a, b, text[a:b], term, entry.category, entry.sources))
        return chosen


# --- building from lexicon.json and the overrides file -------------------------------------

def parse_overrides(text: str, name: str = "overrides.txt") -> Overrides:
    """The overrides file format (documented in its header): ``add TERM [| CATEGORY]``,
    ``remove TERM``, ``allow WORD``; ``#`` starts a comment line. ValueError names a bad line."""
    overrides = Overrides()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        directive, _, rest = line.partition(" ")
        value, _, category = (part.strip() for part in rest.partition("|"))
        term = normalise_term(value)
        if not term:
            raise ValueError(f"{name}:{number}: {directive!r} needs a term: {raw!r}")
        if category and directive != "add":
            raise ValueError(f"{name}:{number}: only add takes a category: {raw!r}")
        if directive == "add":
            category = category or DEFAULT_CATEGORY
            if not CATEGORY.fullmatch(category):
                raise ValueError(f"{name}:{number}: category {category!r} is not snake_case")
            overrides.add[term] = category
        elif directive in ("remove", "allow"):
            getattr(overrides, directive).add(term)
        else:
            raise ValueError(f"{name}:{number}: unknown directive {directive!r} (add, remove or allow): {raw!r}")
    return overrides


def build(data: dict, overrides: Overrides | None = None, rules: Rules = Rules(),
          sources: Iterable[str] | None = None) -> Lexicon:
    """The lexicon of a lexicon.json document, restricted to ``sources`` if given (terms and the
    sources' allowed words), with the rules' length cut on source terms and the overrides applied
    (their terms are not cut)."""
    if data.get("format") != LEXICON_FORMAT:
        raise ValueError(f"lexicon.json has format {data.get('format')!r}, this model reads {LEXICON_FORMAT}: "
                         "re-export it with scripts/export/export_lexicon.py")
    overrides = overrides or Overrides()
    keep = None if sources is None else set(sources)
    entries = []
    for item in data["terms"]:
        item_sources = tuple(s for s in item["sources"] if keep is None or s in keep)
        if item_sources:
            entries.append(Entry(item["term"], item["category"], item_sources))
    merged = {term: e for term, e in merge_entries(entries).items()
              if len(term) >= rules.min_source_chars and term not in overrides.remove}
    for term, category in overrides.add.items():
        known = merged.get(term)
        sources_of = (known.sources if known else ()) + (OVERRIDES_SOURCE,)
        merged[term] = Entry(term, category, tuple(sorted(set(sources_of))))
    allowed = set(overrides.allow)
    if rules.source_allowed:
        allowed.update(a["word"] for a in data.get("allowed", ()) if keep is None or keep & set(a["sources"]))
    return Lexicon(merged.values(), allowed, rules)


def load(lexicon_path: Path, overrides_path: Path | None, rules: Rules = Rules()) -> Lexicon:
    """The served lexicon: lexicon.json plus the overrides file (none if it does not exist)."""
    data = json.loads(Path(lexicon_path).read_text(encoding="utf-8"))
    overrides = Overrides()
    if overrides_path is not None and Path(overrides_path).exists():
        overrides = parse_overrides(Path(overrides_path).read_text(encoding="utf-8"), str(overrides_path))
    elif overrides_path is not None:
        logger.warning("no overrides file at %s: serving the sources' terms as exported", overrides_path)
    lexicon = build(data, overrides)
    logger.info("lexicon: %d terms, %d allowed words (%d added, %d removed by %s)", len(lexicon),
                len(lexicon.allowed), len(overrides.add), len(overrides.remove), overrides_path)
    return lexicon
