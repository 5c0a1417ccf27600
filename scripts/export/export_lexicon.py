"""Assemble the harmful-word lexicon into ``model_repository/lexicon`` from installed packages.

    python -m scripts.export.export_lexicon [--sources korcen badwords-ko better-profanity]

Terms are read from the packages' own data, never typed here: ``koslang`` (PyPI, data.csv),
``badwords-ko`` (npm, in node_modules), ``korcen`` (PyPI, its literal pattern lists) and
``better-profanity`` (PyPI, profanity_wordlist.txt). They are normalised with the model's own
matcher (``model_repository/lexicon/1/lexicon_match.py``), merged into
``lexicon/1/lexicon.json`` (one entry per term: category and the sources that list it), and the
config is rendered from the template. The default sources are the combination measured best by
``scripts/bench/lexicon.py`` (docs/MODERATION.md). Operators tune the served lexicon with
``lexicon/overrides.txt``, not here.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.resources
import io
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.export import triton_config
from scripts.export.triton_config import QUEUE_SAFE_INSTANCES

logger = logging.getLogger(__name__)

MODEL_DIR = MODEL_REPOSITORY / "lexicon"
"""The committed model directory: the template, the model code and the overrides file."""
LEXICON_NAME = "lexicon.json"
SOURCES = ("korcen", "badwords-ko", "better-profanity", "koslang")
"""Every known source, in the order whose first source listing a term gives it its category:
korcen's categories are the most precise; koslang's flags label even 시발 'eroticism'."""
DEFAULT_SOURCES = ("korcen", "badwords-ko", "better-profanity")
"""The shipped combination, chosen by scripts/bench/lexicon.py (koslang costs precision)."""
LICENCES = {"korcen": "Apache-2.0", "badwords-ko": "MIT", "better-profanity": "MIT", "koslang": "MIT"}
"""As the packages declare them (korcen: its LICENSE file; the others: their metadata)."""
KORCEN_LISTS = {
    "GENERAL_PROFANITY_PATTERNS": "profanity", "MINOR_PROFANITY_PATTERNS": "insult",
    "SEXUAL_PROFANITY_PATTERNS": "sexual", "BELITTLE_PROFANITY_PATTERNS": "insult",
    "RACE_PROFANITY_PATTERNS": "slur", "PARENT_PROFANITY_PATTERNS": "parent_insult",
    "SPECIAL_PROFANITY_PATTERNS": "gesture",
}
"""korcen's literal lists and their categories. Left out: its Japanese and Chinese lists (not the
languages served) and its politics list (politicians' names and nicknames, such as 박정희)."""
KORCEN_ALLOWED_PREFIX = "FALSE_POSITIVE_PATTERNS_"
"""korcen's lists of innocent words that contain a pattern (시발점, 꺼져있, 새끼손): the matcher
allows them as words, as the overrides file's allow lines are."""
KOSLANG_CATEGORIES = {"eroticism": "sexual", "specific": "slur"}
"""koslang's data.csv flags that name a kind of harm; its other flags describe word formation."""
BADWORDS_KO_FILE = Path("badwords-ko") / "src" / "badwords.ko.config.json"


def lexicon_match() -> ModuleType:
    """The model's matcher module (it has no Triton imports), imported the way Triton loads it."""
    return triton_config.model_code(MODEL_DIR.name, "lexicon_match")


def read_korcen(node_modules: Path) -> tuple[list[tuple[str, str]], str]:
    """(term, category) of korcen's literal lists, and its version."""
    from korcen import korcen

    terms = [(t, category) for name, category in KORCEN_LISTS.items() for t in getattr(korcen, name)]
    return terms, importlib.metadata.version("korcen")


def read_korcen_allowed() -> list[str]:
    """korcen's own false-positive words (every FALSE_POSITIVE_PATTERNS_* list)."""
    from korcen import korcen

    return [w for name in sorted(vars(korcen)) if name.startswith(KORCEN_ALLOWED_PREFIX) for w in getattr(korcen, name)]


def read_better_profanity(node_modules: Path) -> tuple[list[tuple[str, str]], str]:
    """better-profanity's English word list, one term (or phrase) a line."""
    text = importlib.resources.files("better_profanity").joinpath("profanity_wordlist.txt").read_text("utf-8")
    return [(line, "profanity") for line in text.splitlines() if line.strip()], importlib.metadata.version(
        "better-profanity")


def read_koslang(node_modules: Path) -> tuple[list[tuple[str, str]], str]:
    """koslang's data.csv (cp949), read directly: its API needs a native Mecab binding."""
    raw = importlib.resources.files("koslang").joinpath("data.csv").read_bytes().decode("cp949")
    terms = []
    for row in csv.DictReader(io.StringIO(raw)):
        flags = {key for key, value in row.items() if key != "word_data" and (value or "").strip() == "1"}
        category = next((c for flag, c in KOSLANG_CATEGORIES.items() if flag in flags), "profanity")
        terms.append((row["word_data"], category))
    return terms, importlib.metadata.version("koslang")


def read_badwords_ko(node_modules: Path) -> tuple[list[tuple[str, str]], str]:
    """badwords-ko from node_modules (package.json devDependencies, installed by `npm ci`)."""
    path = node_modules / BADWORDS_KO_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `npm ci` (make install) to install badwords-ko")
    words = json.loads(path.read_text(encoding="utf-8"))["badWords"]
    version = json.loads((node_modules / "badwords-ko" / "package.json").read_text(encoding="utf-8"))["version"]
    return [(w, "profanity") for w in words], version


READERS: dict[str, Callable[[Path], tuple[list[tuple[str, str]], str]]] = {
    "korcen": read_korcen, "badwords-ko": read_badwords_ko, "better-profanity": read_better_profanity,
    "koslang": read_koslang,
}
"""Each source's reader: (term, category) pairs and the installed version."""


def assemble(sources: tuple[str, ...] = SOURCES, node_modules: Path = REPO_ROOT / "node_modules") -> dict:
    """The lexicon.json document of ``sources``: normalised, merged terms and where they came from."""
    match = lexicon_match()
    entries, info = [], {}
    for source in (s for s in SOURCES if s in sources):
        terms, version = READERS[source](node_modules)
        entries += [match.Entry(term, category, (source,)) for term, category in terms]
        info[source] = {"version": version, "licence": LICENCES[source], "raw_terms": len(terms)}
    merged = match.merge_entries(entries)
    for source in info:
        info[source]["terms"] = sum(source in e.sources for e in merged.values())
    terms = [{"term": e.term, "category": e.category, "sources": list(e.sources)}
             for e in sorted(merged.values(), key=lambda e: e.term)]
    allowed = []
    if "korcen" in info:
        words = sorted({w for w in map(match.normalise_term, read_korcen_allowed()) if w})
        allowed = [{"word": w, "sources": ["korcen"]} for w in words]
        info["korcen"]["allowed"] = len(allowed)
    return {"format": match.LEXICON_FORMAT, "sources": info, "terms": terms, "allowed": allowed}


def config_values(args: argparse.Namespace) -> triton_config.LexiconValues:
    return triton_config.LexiconValues(
        name=args.model_name, max_batch_size=args.max_batch_size,
        max_queue_delay_us=None if args.max_queue_delay_us < 0 else args.max_queue_delay_us,
        instance_count=args.instance_count, instance_kind=args.instance_kind,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(DEFAULT_SOURCES))
    p.add_argument("--node-modules", type=Path, default=REPO_ROOT / "node_modules",
                   help="where npm installed badwords-ko")
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--model-name", default="lexicon")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-queue-delay-us", type=int, default=1000, help="negative turns dynamic batching off")
    p.add_argument("--instance-count", type=int, default=QUEUE_SAFE_INSTANCES,
                   help="model instances; the default 2 keeps Triton 2.51's batcher from stalling requests 500 ms "
                        "(scripts/export/triton_config.py, QUEUE_SAFE_INSTANCES)")
    p.add_argument("--instance-kind", choices=("CPU", "GPU"), default="CPU",
                   help="where Triton places the instance; the matching itself always runs on the CPU")
    return p.parse_args(argv)


def install_model_files(model_dir: Path, overrides_name: str) -> None:
    """A model directory other than the committed one gets a copy of the model code and, unless it
    has its own already, of the overrides file, so the repository it is in can be served."""
    if model_dir.resolve() == MODEL_DIR.resolve():
        return
    triton_config.install_code("lexicon", model_dir)
    if not (model_dir / overrides_name).exists():
        shutil.copy2(MODEL_DIR / "overrides.txt", model_dir / overrides_name)


def export(args: argparse.Namespace) -> Path:
    """Write lexicon.json and the config into the repository; returns the model directory."""
    document = assemble(tuple(args.sources), args.node_modules)
    values = config_values(args)
    model_dir = args.repository / args.model_name
    install_model_files(model_dir, values.overrides)
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    path = model_dir / "1" / LEXICON_NAME
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    triton_config.write(model_dir, values)
    logger.info("exported lexicon %s: %d terms from %s", path, len(document["terms"]),
                ", ".join(f"{s} {i['version']} ({i['terms']})" for s, i in document["sources"].items()))
    return model_dir


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        export(parse_args(argv))
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
