"""Fine-tune a KoELECTRA classifier for harmful speech on labelled CSVs (label 1 = harmful).

    .venv/bin/python -m scripts.train.finetune_koelectra --train train.csv --eval eval.csv \\
        --base monologg/koelectra-base-v3-discriminator --out ./koelectra-finetuned

Both CSVs have the header ``text,label`` (label 1 = harmful, 0 = normal; other columns are
ignored). ``--base`` is an ``ElectraForSequenceClassification`` checkpoint: a hub id (needs
internet) or a local directory such as ``.cache/koelectra-small-untrained``. The loop is plain
PyTorch (AdamW, linear warm-up then decay, fixed seed), sized for a CPU; a GPU is used when
there is one. Accuracy, precision, recall and F1 (harmful = positive) on --eval are measured
before and after training, printed, and written to ``<out>/training_metrics.json``; the model
and tokenizer are saved into --out with ``moderation_training.json``, the marker that makes
``python -m scripts.export.export_koelectra --source <out>`` export it as trained.
Exit codes: 0 done, 2 bad arguments or bad CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from scripts.cli import parser, setup_logging
from scripts.export.export_koelectra import MAX_LENGTH
from scripts.train import TRAINING_MARKER

logger = logging.getLogger(__name__)

TEXT_COLUMN, LABEL_COLUMN = "text", "label"
LABELS = {"0": 0, "1": 1}
"""The CSV's label values: 1 = harmful (the classifier's logit 1, as the Triton model reads it), 0 = normal."""
ID2LABEL = {0: "normal", 1: "harmful"}
METRICS_NAME = "training_metrics.json"
EXIT_BAD_INPUT = 2
"""As argparse's usage errors: the operator's input is wrong, not the tool."""
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 5e-5
"""The usual rate for fine-tuning a pretrained ELECTRA. A randomly initialised base needs a higher
one and more epochs (the tests train the small untrained model with 3e-4, batch 8, 10 epochs;
at 1e-3 it mostly fails to learn)."""
DEFAULT_SEED = 42
WARMUP_RATIO = 0.1
"""Share of the optimizer steps over which the rate climbs from 0: the first updates, driven by
a freshly initialised classification head, must not wreck the pretrained encoder."""
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
"""Gradient clipping; keeps a single odd batch from throwing the weights far."""
EVAL_BATCH_SIZE = 64


class DatasetError(ValueError):
    """A CSV that cannot be trained or evaluated on; the message names the file and the line."""


@dataclass(frozen=True)
class Labelled:
    """The rows of one CSV."""

    path: Path
    texts: list[str]
    labels: list[int]

    @property
    def harmful(self) -> int:
        return sum(self.labels)


@dataclass(frozen=True)
class TrainingParams:
    """What shaped the training, recorded with its metrics."""

    epochs: int
    batch_size: int
    lr: float
    max_length: int
    seed: int
    warmup_ratio: float = WARMUP_RATIO
    weight_decay: float = WEIGHT_DECAY
    max_grad_norm: float = MAX_GRAD_NORM


def _positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: ``kind`` of the text, refused unless above 0."""
    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--train", type=Path, required=True, help="CSV text,label to train on")
    p.add_argument("--eval", type=Path, required=True, help="held-out CSV text,label, measured before and after")
    p.add_argument("--base", required=True, help="hub id or local ElectraForSequenceClassification checkpoint")
    p.add_argument("--out", type=Path, required=True, help="directory for the fine-tuned model, tokenizer and metrics")
    p.add_argument("--epochs", type=_positive(int), default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=_positive(int), default=DEFAULT_BATCH_SIZE)
    p.add_argument("--lr", type=_positive(float), default=DEFAULT_LR, help="peak learning rate")
    p.add_argument("--max-length", type=_positive(int), default=MAX_LENGTH,
                   help="tokens per text, as the exporter's default (longer texts are truncated)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for PyTorch; 0 = its default (one per core). On a machine busy with other "
                        "work, 1 avoids oversubscribed threads waiting on each other, which can be many times slower")
    return p.parse_args(argv)


def _row(path: Path, line: int, row: dict) -> tuple[str, int]:
    text, label = row.get(TEXT_COLUMN), row.get(LABEL_COLUMN)
    if text is None or label is None:
        raise DatasetError(f"{path} line {line}: too few fields (expected {TEXT_COLUMN},{LABEL_COLUMN})")
    if not text.strip():
        raise DatasetError(f"{path} line {line}: empty text")
    if label.strip() not in LABELS:
        raise DatasetError(f"{path} line {line}: label {label!r} is not 0 or 1 (1 = harmful, 0 = normal)")
    return text, LABELS[label.strip()]


def read_labelled_csv(path: Path) -> Labelled:
    """The rows of a ``text,label`` CSV; DatasetError on anything that is not one."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        # utf-8-sig: spreadsheets save CSVs with a byte-order mark, which would glue onto "text".
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise DatasetError(f"{path} is empty: expected a header {TEXT_COLUMN},{LABEL_COLUMN} and rows")
            missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in reader.fieldnames]
            if missing:
                raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} "
                                   f"(header is {','.join(reader.fieldnames)}; expected {TEXT_COLUMN},{LABEL_COLUMN})")
            rows = [_row(path, reader.line_num, row) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV ({exc})") from exc
    if not rows:
        raise DatasetError(f"{path} has a header but no rows")
    return Labelled(path, [t for t, _ in rows], [label for _, label in rows])


def seed_everything(seed: int) -> None:
    """Same data, same seed, same model: shuffling, dropout and the new head's init all draw from these."""
    random.seed(seed)
    torch.manual_seed(seed)


def encode(tokenizer, texts: list[str], max_length: int, device: torch.device) -> dict[str, torch.Tensor]:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {name: tensor.to(device) for name, tensor in batch.items()}


def classification_metrics(labels: list[int], predictions: list[int]) -> dict:
    """Accuracy, and precision/recall/F1 of the harmful class (0.0 where a ratio has no denominator)."""
    tp = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 1 and p == 1)
    fp = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 1 and p == 0)
    tn = len(labels) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(labels), "precision": precision, "recall": recall, "f1": f1,
            "rows": len(labels), "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def evaluate(model, tokenizer, data: Labelled, max_length: int, device: torch.device) -> dict:
    """Metrics of the argmax prediction, the decision the 0.5 default threshold of the edge takes."""
    model.eval()
    predictions: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(data.texts), EVAL_BATCH_SIZE):
            batch = encode(tokenizer, data.texts[start:start + EVAL_BATCH_SIZE], max_length, device)
            predictions += model(**batch).logits.argmax(dim=-1).tolist()
    return classification_metrics(data.labels, predictions)


def make_optimizer(model, params: TrainingParams, total_steps: int):
    """AdamW without decay on biases and LayerNorms (as BERT/ELECTRA were trained), and a linear
    warm-up then linear decay to 0 over ``total_steps``."""
    from transformers import get_linear_schedule_with_warmup

    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": params.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=params.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(params.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def train(model, tokenizer, data: Labelled, params: TrainingParams, device: torch.device) -> list[float]:
    """Fine-tune in place; returns the mean training loss of each epoch."""
    steps_per_epoch = -(-len(data.texts) // params.batch_size)
    optimizer, scheduler = make_optimizer(model, params, params.epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(params.seed)
    losses = []
    for epoch in range(1, params.epochs + 1):
        model.train()
        total = 0.0
        for indices in torch.randperm(len(data.texts), generator=order).split(params.batch_size):
            batch = encode(tokenizer, [data.texts[i] for i in indices], params.max_length, device)
            labels = torch.tensor([data.labels[i] for i in indices], device=device)
            loss = model(**batch, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total += loss.item() * len(indices)
        losses.append(total / len(data.texts))
        logger.info("epoch %d/%d: mean training loss %.4f", epoch, params.epochs, losses[-1])
    return losses


def load(base: str, device: torch.device):
    """The base classifier (a new two-label head when it has none) and its tokenizer."""
    from transformers import AutoTokenizer, ElectraForSequenceClassification

    model = ElectraForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})
    return model.to(device), AutoTokenizer.from_pretrained(base)


def format_metrics(metrics: dict) -> str:
    return " ".join(f"{k} {metrics[k]:.3f}" for k in ("accuracy", "precision", "recall", "f1"))


def write_outputs(out: Path, model, tokenizer, report: dict) -> None:
    """Model, tokenizer, metrics, and last the marker: a directory with a marker is complete."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / METRICS_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    marker = {"trained": True, "base": report["base"], "metrics": report["after"]}
    (out / TRAINING_MARKER).write_text(json.dumps(marker, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def describe(data: Labelled) -> dict:
    return {"csv": str(data.path.resolve()), "rows": len(data.texts), "harmful_rows": data.harmful}


def check_balance(data: Labelled) -> None:
    if data.harmful in (0, len(data.texts)):
        logger.warning("%s has only label %d: the classifier cannot learn to tell harmful from normal",
                       data.path, data.labels[0])


def select_device(threads: int) -> torch.device:
    """A GPU when there is one; on the CPU, ``threads`` threads (0 = PyTorch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def measured_training(model, tokenizer, train_data: Labelled, eval_data: Labelled, params: TrainingParams,
                      device: torch.device) -> dict:
    """Train, with the held-out metrics before and after, the epochs' losses and the training time."""
    before = evaluate(model, tokenizer, eval_data, params.max_length, device)
    logger.info("held-out before training: %s", format_metrics(before))
    started = time.monotonic()
    losses = train(model, tokenizer, train_data, params, device)
    seconds = round(time.monotonic() - started, 1)
    after = evaluate(model, tokenizer, eval_data, params.max_length, device)
    logger.info("held-out after training: %s", format_metrics(after))
    if after["f1"] <= before["f1"]:
        logger.warning("held-out F1 did not improve (%.3f -> %.3f): check the data and the parameters",
                       before["f1"], after["f1"])
    return {"train_loss": losses, "training_seconds": seconds, "before": before, "after": after}


def run(args: argparse.Namespace) -> dict:
    """Read, measure, train, measure again, save; returns what training_metrics.json holds."""
    train_data, eval_data = read_labelled_csv(args.train), read_labelled_csv(args.eval)
    check_balance(train_data)
    params = TrainingParams(args.epochs, args.batch_size, args.lr, args.max_length, args.seed)
    device = select_device(args.threads)
    seed_everything(params.seed)
    model, tokenizer = load(args.base, device)
    results = measured_training(model, tokenizer, train_data, eval_data, params, device)
    report = {"base": args.base, "train": describe(train_data), "eval": describe(eval_data),
              "parameters": asdict(params), "device": device.type, "threads": torch.get_num_threads(), **results}
    write_outputs(args.out, model, tokenizer, report)
    return report


def print_summary(report: dict, out: Path) -> None:
    print(f"held-out {report['eval']['csv']} ({report['eval']['rows']} rows), harmful = positive")
    print(f"  before training: {format_metrics(report['before'])}")
    print(f"  after training:  {format_metrics(report['after'])}")
    print(f"saved to {out} ({METRICS_NAME}, {TRAINING_MARKER})")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        report = run(args)
    except DatasetError as exc:
        logger.error("%s", exc)
        return EXIT_BAD_INPUT
    print_summary(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
