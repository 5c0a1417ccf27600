"""Measure the harmful-word lexicon on the labelled evaluation set, per source and combined.

    python -m scripts.bench.lexicon [--data tests/data/moderation_ko.csv] [--failures korcen koslang]

Runs the model's matcher in-process (model_repository/lexicon/1/lexicon_match.py) on lexicons
assembled from the installed sources, with the committed overrides file, and prints Markdown:
precision, recall and F1 (a text counts as flagged when anything matched) for every source alone
and every combination, the shipped combination per kind of sentence, the rule variants, the
failures, and the time per text. The numbers in docs/MODERATION.md come from here.
"""

from __future__ import annotations

import csv
import itertools
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from scripts.cli import REPO_ROOT, machine, parser
from scripts.export import export_lexicon

DATA = REPO_ROOT / "tests" / "data" / "moderation_ko.csv"
"""The labelled evaluation set: text, label (1 = harmful), kind."""
OVERRIDES = export_lexicon.MODEL_DIR / "overrides.txt"
KINDS = ("clean", "harmful", "obfuscated", "trap", "english_clean", "english_harmful")
PREVALENCE = 0.05
"""Share of harmful segments assumed when ranking combinations. Real voice chat is mostly innocent,
unlike the evaluation set (46 % harmful), so a source's false positives on innocent texts weigh
far more in service than the set's own precision shows."""


@dataclass(frozen=True)
class Sample:
    text: str
    label: int
    kind: str


@dataclass
class Score:
    name: str
    terms: int
    flagged: list[bool]
    us_per_text: float

    def counts(self, samples: list[Sample]) -> tuple[int, int, int]:
        """(true positives, false positives, false negatives)."""
        tp = sum(f and s.label == 1 for f, s in zip(self.flagged, samples, strict=True))
        fp = sum(f and s.label == 0 for f, s in zip(self.flagged, samples, strict=True))
        fn = sum(not f and s.label == 1 for f, s in zip(self.flagged, samples, strict=True))
        return tp, fp, fn

    def prf(self, samples: list[Sample]) -> tuple[float, float, float]:
        tp, fp, fn = self.counts(samples)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        return precision, recall, f1(precision, recall)

    def at_prevalence(self, samples: list[Sample], prevalence: float = PREVALENCE) -> tuple[float, float, float]:
        """(false-positive rate on innocent texts, precision and F1 if ``prevalence`` of texts were harmful)."""
        _, fp, _ = self.counts(samples)
        innocent = sum(s.label == 0 for s in samples)
        fp_rate = fp / innocent
        _, recall, _ = self.prf(samples)
        flagged = recall * prevalence + fp_rate * (1 - prevalence)
        precision = recall * prevalence / flagged if flagged else 1.0
        return fp_rate, precision, f1(precision, recall)


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def read_samples(path: Path = DATA) -> list[Sample]:
    with open(path, encoding="utf-8", newline="") as f:
        return [Sample(row["text"], int(row["label"]), row["kind"]) for row in csv.DictReader(f)]


def score(name: str, check: Callable[[str], bool], samples: list[Sample], terms: int, repeats: int) -> Score:
    """Flags of every sample, and the mean time per text over ``repeats`` passes (0: not timed, nan)."""
    flagged = [check(s.text) for s in samples]
    start = time.perf_counter()
    for _ in range(repeats):
        for s in samples:
            check(s.text)
    elapsed = time.perf_counter() - start
    return Score(name, terms, flagged, elapsed / (repeats * len(samples)) * 1e6 if repeats else math.nan)


def lexicon_score(document: dict, sources: Iterable[str], samples: list[Sample], overrides, repeats: int,
                  rules=None, name: str | None = None) -> Score:
    match = export_lexicon.lexicon_match()
    lexicon = match.build(document, overrides, rules or match.Rules(), sources=tuple(sources))
    return score(name or " + ".join(sources), lambda t: bool(lexicon.match(t)), samples, len(lexicon), repeats)


def combinations() -> list[tuple[str, ...]]:
    """Every non-empty subset of the sources, singles first."""
    sources = export_lexicon.SOURCES
    return [c for n in range(1, len(sources) + 1) for c in itertools.combinations(sources, n)]


def print_table(scores: list[Score], samples: list[Sample]) -> None:
    print(f"| sources | terms | precision | recall | F1 | false pos. | false neg. | innocent flagged "
          f"| precision at {PREVALENCE:.0%} harmful | F1 at {PREVALENCE:.0%} | µs per text |")
    print("|---|" + "---:|" * 10)
    for s in scores:
        (p, r, f), (_, fp, fn) = s.prf(samples), s.counts(samples)
        fp_rate, p5, f5 = s.at_prevalence(samples)
        print(f"| {s.name} | {s.terms} | {p:.3f} | {r:.3f} | {f:.3f} | {fp} | {fn} | {fp_rate:.1%} | {p5:.3f} "
              f"| {f5:.3f} | {s.us_per_text:.0f} |")
    print()


def print_kinds(scores: list[Score], samples: list[Sample]) -> None:
    """Per kind: how many texts were flagged (right for harmful kinds, wrong for clean ones)."""
    print("| sources | " + " | ".join(f"{k} (n={sum(s.kind == k for s in samples)})" for k in KINDS) + " |")
    print("|---|" + "---:|" * len(KINDS))
    for sc in scores:
        cells = []
        for kind in KINDS:
            flags = [f for f, s in zip(sc.flagged, samples, strict=True) if s.kind == kind]
            cells.append(f"{sum(flags)} flagged")
        print(f"| {sc.name} | " + " | ".join(cells) + " |")
    print()


def print_failures(name: str, document: dict, sources: Iterable[str], samples: list[Sample], overrides) -> None:
    match = export_lexicon.lexicon_match()
    lexicon = match.build(document, overrides, sources=tuple(sources))
    print(f"Failures of {name}:\n")
    for s in samples:
        found = lexicon.match(s.text)
        if bool(found) != (s.label == 1):
            what = ", ".join(f"{m.text!r}→{m.term} ({'/'.join(m.sources)})" for m in found) or "nothing matched"
            print(f"- {'false positive' if found else 'missed'} ({s.kind}): {s.text} — {what}")
    print()


def rule_variants(match) -> list[tuple[str, object, bool]]:
    """(name, rules, with overrides) of the variants measured on the shipped combination."""
    rules = match.Rules()
    return [
        ("shipped rules and overrides", rules, True),
        ("without the overrides file", rules, False),
        ("without korcen's false-positive words", match.Rules(source_allowed=False), True),
        ("single-character source terms dropped", match.Rules(min_source_chars=2), True),
        ("single-character terms also inside words", match.Rules(whole_word_chars=0), True),
        ("two-syllable terms must start a word", match.Rules(word_start_chars=2), True),
        ("spaced matches need not be whole words", match.Rules(spaced_whole_words=False), True),
        ("no skipping between Hangul letters", match.Rules(max_gap=0), True),
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--overrides", type=Path, default=OVERRIDES)
    p.add_argument("--repeats", type=int, default=20, help="passes over the set for the time per text")
    p.add_argument("--failures", nargs="*", choices=export_lexicon.SOURCES, default=[],
                   help="also list the failures of these sources alone")
    args = p.parse_args(argv)
    match = export_lexicon.lexicon_match()
    samples = read_samples(args.data)
    document = export_lexicon.assemble()
    try:
        overrides = match.parse_overrides(args.overrides.read_text(encoding="utf-8"), str(args.overrides))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shipped = export_lexicon.DEFAULT_SOURCES
    print(f"{len(samples)} texts from {args.data.relative_to(REPO_ROOT)}; "
          f"{machine()}, Python {platform.python_version()}, {date.today()}\n")
    scores = [lexicon_score(document, c, samples, overrides, args.repeats) for c in combinations()]
    from korcen import korcen

    scores.append(score("korcen's own check() (reference)", korcen.check, samples, 0, args.repeats))
    print_table(scores, samples)
    best = max(scores[:-1], key=lambda s: s.at_prevalence(samples)[2])
    print(f"Best F1 at {PREVALENCE:.0%} harmful: {best.name}; shipped (export_lexicon.DEFAULT_SOURCES): "
          f"{' + '.join(shipped)}\n")
    singles_and_shipped = [s for s in scores if " + " not in s.name or s.name == " + ".join(shipped)]
    print_kinds(singles_and_shipped, samples)
    variants = [lexicon_score(document, shipped, samples, overrides if with_overrides else match.Overrides(),
                              args.repeats, rules, name) for name, rules, with_overrides in rule_variants(match)]
    print(f"Rule variants on {' + '.join(shipped)}:\n")
    print_table(variants, samples)
    print_failures(" + ".join(shipped), document, shipped, samples, overrides)
    for source in args.failures:
        print_failures(source, document, (source,), samples, overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
