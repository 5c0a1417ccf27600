"""Labelled Korean comments for the classifier: BEEP!, K-MHaS and plain ``text,label`` CSVs.

Each file's format is told by its header (or named with ``--format``):

- ``csv``: a CSV with the columns ``text,label`` (label 1 = harmful, 0 = normal; other columns
  are ignored);
- ``beep``: BEEP!'s TSV ``comments, contain_gender_bias, bias, hate``; harmful is ``hate`` or
  ``offensive``, normal is ``none``;
- ``kmhas``: K-MHaS's TSV ``document, label``; the label is a comma list of its categories 0-7
  (origin, physical, politics, profanity, age, gender, race, religion), or 8 alone: not hate
  speech.

Every row teaches the ``harmful`` head; only K-MHaS rows also teach the eight category heads (a
row of the other formats leaves them unknown, masked out of the loss). The data are read from
where they lie (``../shared/data`` here) and never copied into the project.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

CATEGORIES = ("origin", "physical", "politics", "profanity", "age", "gender", "race", "religion")
"""K-MHaS's categories, in the order of its label numbers 0-7."""
HEADS = ("harmful", *CATEGORIES)
"""The classifier's outputs: its logit i scores HEADS[i] (a sigmoid each: multi-label)."""
KMHAS_NOT_HATE = 8
"""K-MHaS's label of a comment that is not hate speech."""
BEEP_LABELS = {"hate": 1, "offensive": 1, "none": 0}
"""BEEP!'s ``hate`` column: hate and offensive comments are harmful."""
CSV_LABELS = {"0": 0, "1": 1}
FORMATS = ("csv", "beep", "kmhas")
HEADERS = {"csv": ("text", "label"), "beep": ("comments", "hate"), "kmhas": ("document", "label")}
"""The columns each format needs (a header with others is still read, by name)."""
DEV_FRACTION = 0.2
"""Share of a K-MHaS file held out as its dev split (for measuring and calibrating, never training)."""
SPLIT_SEED = 20261201
"""Seed of the dev split: the same file always gives the same split, run after run."""


class DatasetError(ValueError):
    """A file that cannot be trained or evaluated on; the message names the file and the line."""


@dataclass
class Labelled:
    """Rows of one or more files: texts, the harmful label of each, and its categories when known."""

    name: str
    """Where the rows came from (a path, or a path and its split)."""
    texts: list[str] = field(default_factory=list)
    harmful: list[int] = field(default_factory=list)
    categories: list[tuple[int, ...] | None] = field(default_factory=list)
    """Per row, one 0/1 per CATEGORIES entry, or None where the source does not say."""
    sources: list[str] = field(default_factory=list)
    """The files the rows came from."""

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, harmful: int, categories: tuple[int, ...] | None = None) -> None:
        self.texts.append(text)
        self.harmful.append(harmful)
        self.categories.append(categories)

    def subset(self, name: str, indices: list[int]) -> Labelled:
        return Labelled(name, [self.texts[i] for i in indices], [self.harmful[i] for i in indices],
                        [self.categories[i] for i in indices], list(self.sources))

    @property
    def harmful_rows(self) -> int:
        return sum(self.harmful)

    @property
    def has_categories(self) -> bool:
        return any(c is not None for c in self.categories)

    def describe(self) -> dict:
        return {"name": self.name, "files": self.sources, "rows": len(self), "harmful_rows": self.harmful_rows,
                "rows_with_categories": sum(c is not None for c in self.categories)}


def concat(name: str, parts: list[Labelled]) -> Labelled:
    """One dataset of ``parts``' rows, in order."""
    whole = Labelled(name)
    for part in parts:
        whole.texts += part.texts
        whole.harmful += part.harmful
        whole.categories += part.categories
        whole.sources += [s for s in part.sources if s not in whole.sources]
    return whole


def dev_split(data: Labelled, fraction: float = DEV_FRACTION, seed: int = SPLIT_SEED) -> tuple[Labelled, Labelled]:
    """(rest, dev): a fixed-seed random ``fraction`` of the rows held out, the same on every run."""
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    cut = round(len(order) * fraction)
    held = sorted(order[:cut])
    rest = sorted(order[cut:])
    return data.subset(f"{data.name} (train split)", rest), data.subset(f"{data.name} (dev split)", held)


def hold_out_dev(parts: list[Labelled], fraction: float = DEV_FRACTION,
                 calibration_fraction: float = 0.0) -> tuple[list[Labelled], list[Labelled]]:
    """(training parts, dev splits): each file with categories (K-MHaS) loses a fixed-seed
    ``fraction`` of its rows to the second list, every other file ``calibration_fraction``
    (so the threshold can be calibrated on every kind of comment trained on); a fraction of 0
    leaves those files whole."""
    training, devs = [], []
    for data in parts:
        share = fraction if data.has_categories else calibration_fraction
        if share > 0:
            data, dev = dev_split(data, share)
            devs.append(dev)
        training.append(data)
    return training, devs


def detect_format(path: Path, header: list[str], delimiter: str) -> str:
    """The format whose columns the header has. A CSV that fits none is taken as ``csv`` (its
    error then names the missing columns); a TSV that fits none is a DatasetError."""
    columns = {c.strip() for c in header}
    for fmt in ("beep", "kmhas", "csv"):
        if set(HEADERS[fmt]) <= columns:
            return fmt
    if delimiter == ",":
        return "csv"
    expected = "; ".join(f"{fmt}: {', '.join(HEADERS[fmt])}" for fmt in FORMATS)
    raise DatasetError(f"{path} line 1: header {'|'.join(header)!r} is no known format (columns {expected})")


def _open_rows(path: Path, delimiter: str):
    """A csv reader of the file (a BOM before the header is dropped: spreadsheets write one)."""
    f = path.open(newline="", encoding="utf-8-sig")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV texts hold bare quotes
    return f, csv.reader(f, delimiter=delimiter, quoting=quoting)


def _first_line(path: Path) -> str:
    with path.open(encoding="utf-8-sig") as f:
        return f.readline()


def read_labelled(path: Path, fmt: str = "auto") -> Labelled:
    """The rows of one file of ``fmt`` (``auto``: told by its header); DatasetError on anything else."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        first = _first_line(path)
        if not first.strip():
            raise DatasetError(f"{path} is empty: expected a header and rows")
        delimiter = "\t" if "\t" in first else ","
        f, reader = _open_rows(path, delimiter)
        with f:
            header = next(reader)
            fmt = detect_format(path, header, delimiter) if fmt == "auto" else fmt
            data = _read_rows(path, fmt, header, reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV or TSV ({exc})") from exc
    if not data.texts:
        raise DatasetError(f"{path} has a header but no rows")
    return data


def _read_rows(path: Path, fmt: str, header: list[str], reader) -> Labelled:
    missing = [c for c in HEADERS[fmt] if c not in [h.strip() for h in header]]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} "
                           f"(header is {','.join(header)}; expected {','.join(HEADERS[fmt])})")
    columns = {name.strip(): i for i, name in enumerate(header)}
    text_at, label_at = (columns[c] for c in HEADERS[fmt])
    data = Labelled(str(path), sources=[str(path)])
    for row in reader:
        if not row:
            continue
        line = reader.line_num
        if len(row) <= max(text_at, label_at):
            raise DatasetError(f"{path} line {line}: too few fields (expected {','.join(HEADERS[fmt])})")
        text, label = row[text_at], row[label_at].strip()
        if not text.strip():
            raise DatasetError(f"{path} line {line}: empty text")
        data.add(text, *_label(path, line, fmt, label))
    return data


def _label(path: Path, line: int, fmt: str, label: str) -> tuple[int, tuple[int, ...] | None]:
    """(harmful, categories) of one row's label."""
    if fmt == "csv":
        if label not in CSV_LABELS:
            raise DatasetError(f"{path} line {line}: label {label!r} is not 0 or 1 (1 = harmful, 0 = normal)")
        return CSV_LABELS[label], None
    if fmt == "beep":
        if label not in BEEP_LABELS:
            raise DatasetError(f"{path} line {line}: hate label {label!r} is not one of {', '.join(BEEP_LABELS)}")
        return BEEP_LABELS[label], None
    return _kmhas_label(path, line, label)


def _kmhas_label(path: Path, line: int, label: str) -> tuple[int, tuple[int, ...]]:
    try:
        numbers = {int(part) for part in label.split(",")}
    except ValueError:
        numbers = {-1}
    if not numbers <= set(range(KMHAS_NOT_HATE + 1)) or (KMHAS_NOT_HATE in numbers and len(numbers) > 1):
        raise DatasetError(f"{path} line {line}: label {label!r} is not a comma list of categories 0-7, "
                           f"or {KMHAS_NOT_HATE} alone (not hate speech)")
    categories = tuple(int(i in numbers) for i in range(len(CATEGORIES)))
    return int(any(categories)), categories


def read_all(paths: list[Path], fmt: str = "auto") -> list[Labelled]:
    """Each file's rows; DatasetError for the first bad one."""
    return [read_labelled(path, fmt) for path in paths]
