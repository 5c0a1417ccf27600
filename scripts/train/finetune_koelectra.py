"""Fine-tune KoELECTRA for harmful speech, and its categories, on labelled Korean comments.

    .venv/bin/python -m scripts.train.finetune_koelectra \\
        --train ../shared/data/korean-hate-speech/labeled/train.tsv ../shared/data/kmhas/kmhas_valid.txt \\
        --eval ../shared/data/korean-hate-speech/labeled/dev.tsv \\
        --base .cache/koelectra-small-untrained --out ./koelectra-finetuned

``--train`` and ``--eval`` take BEEP! TSVs, K-MHaS TSVs and ``text,label`` CSVs, each told by its
header (scripts/train/datasets.py; ``--format`` names one for all). A K-MHaS file given to
``--train`` is split: a fixed-seed share (``--kmhas-dev-fraction``) is held out as its dev split,
measured and calibrated on, never trained on; ``--calibration-fraction`` holds out a share of
the other --train files likewise, and the threshold is then calibrated on all those splits
together (BEEP! counts offensive comments as harmful, K-MHaS only hate speech: a threshold
calibrated on K-MHaS alone is far too strict for BEEP!'s kind). The head is multi-label:
``harmful`` and K-MHaS's eight categories, one sigmoid each; rows without categories (BEEP!,
CSV) teach ``harmful`` only, their category targets masked out of the loss.

``--base`` is an ``ElectraForSequenceClassification`` (or ELECTRA discriminator) checkpoint: a hub
id (needs internet, e.g. monologg/koelectra-base-v3-discriminator) or a local directory such as
``.cache/koelectra-small-untrained``. The loop is plain PyTorch (AdamW, linear warm-up then decay,
fixed seed), sized for a CPU; a GPU is used when there is one. It logs its progress, saves a
checkpoint every ``--checkpoint-every`` steps and on Ctrl-C, and ``--resume`` goes on from it
(scripts/train/loop.py).

Every eval set is measured before and after training; the threshold for ``--target-precision``
is chosen on the K-MHaS dev split when there is one, else on the first ``--eval`` set. All goes
to ``<out>/training_metrics.json``; the model and tokenizer are saved into --out with
``moderation_training.json``, the marker that makes ``python -m scripts.export.export_koelectra
--source <out>`` export it as trained.
Exit codes: 0 done, 2 bad arguments or bad data, 130 stopped (resume with --resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from scripts.cli import parser, setup_logging
from scripts.export.export_koelectra import MAX_LENGTH
from scripts.train import TRAINING_MARKER, fraction, loop, positive
from scripts.train.datasets import (
    CATEGORIES,
    DEV_FRACTION,
    FORMATS,
    HEADS,
    Labelled,
    concat,
    hold_out_dev,
    read_all,
)
from scripts.train.loop import DEFAULT_CHECKPOINT_EVERY, DEFAULT_LOG_EVERY_S, RunOptions, TrainingParams
from scripts.train.metrics import (
    DEFAULT_TARGET_PRECISION,
    DEFAULT_THRESHOLD,
    Calibration,
    Scores,
    at_threshold,
    calibrate,
    calibration_line,
    category_recall,
)

logger = logging.getLogger(__name__)

ID2LABEL = dict(enumerate(HEADS))
METRICS_NAME = "training_metrics.json"
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 5e-5
"""The usual rate for fine-tuning a pretrained ELECTRA. A randomly initialised base needs a higher
one and more epochs (the tests train the small untrained model with 3e-4, batch 8, 10 epochs;
at 1e-3 it mostly fails to learn)."""
DEFAULT_SEED = 42
EVAL_BATCH_SIZE = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--train", type=Path, nargs="+", required=True, help="files to train on (BEEP!, K-MHaS, CSV)")
    p.add_argument("--eval", type=Path, nargs="+", required=True, help="held-out files, measured before and after")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto", help="format of every file; auto: by header")
    p.add_argument("--base", required=True, help="hub id or local ElectraForSequenceClassification checkpoint")
    p.add_argument("--out", type=Path, required=True, help="directory for the fine-tuned model, tokenizer and metrics")
    p.add_argument("--kmhas-dev-fraction", type=fraction, default=DEV_FRACTION,
                   help="share of each K-MHaS --train file held out as its dev split (fixed seed); 0: none")
    p.add_argument("--calibration-fraction", type=fraction, default=0.0,
                   help="share of each other --train file (BEEP!, CSV) held out likewise (fixed seed); the "
                        "threshold is then calibrated on all held-out splits together. 0: none")
    p.add_argument("--target-precision", type=fraction, default=DEFAULT_TARGET_PRECISION,
                   help="precision the calibrated threshold is chosen for")
    p.add_argument("--epochs", type=positive(int), default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=positive(int), default=DEFAULT_BATCH_SIZE)
    p.add_argument("--lr", type=positive(float), default=DEFAULT_LR, help="peak learning rate")
    p.add_argument("--max-length", type=positive(int), default=MAX_LENGTH,
                   help="tokens per text, as the exporter's default (longer texts are truncated)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for PyTorch; 0 = its default (one per core). On a machine busy with other "
                        "work, 1 avoids oversubscribed threads waiting on each other, which can be many times slower")
    p.add_argument("--checkpoint-every", type=positive(int), default=DEFAULT_CHECKPOINT_EVERY,
                   help="steps between checkpoints (one is also saved on Ctrl-C)")
    p.add_argument("--log-every-s", type=positive(float), default=DEFAULT_LOG_EVERY_S,
                   help="seconds between progress lines")
    p.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Data:
    """What a run trains on, what it measures on, and which set calibrates the threshold."""

    train: Labelled
    evals: list[Labelled]
    calibration: Labelled


def read_data(args: argparse.Namespace) -> Data:
    """The training rows (less their held-out splits) and the eval sets (--eval, then the held-out
    splits); the threshold is calibrated on the held-out splits together, else on the first
    --eval set. DatasetError for a bad file."""
    parts, held_out = hold_out_dev(read_all(args.train, args.format), args.kmhas_dev_fraction,
                                   args.calibration_fraction)
    train = concat(" + ".join(p.name for p in parts), parts)
    evals = [*read_all(args.eval, args.format), *held_out]
    if len(held_out) > 1:
        calibration = concat(" + ".join(d.name for d in held_out), held_out)
        return Data(train, [*evals, calibration], calibration)
    return Data(train, evals, held_out[0] if held_out else evals[0])


def seed_everything(seed: int) -> None:
    """Same data, same seed, same model: shuffling, dropout and the new head's init all draw from these."""
    random.seed(seed)
    torch.manual_seed(seed)


def encode(tokenizer, texts: list[str], max_length: int, device: torch.device) -> dict[str, torch.Tensor]:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {name: tensor.to(device) for name, tensor in batch.items()}


def targets(data: Labelled, indices: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, mask) of the heads for rows ``indices``: a row's unknown categories are masked out."""
    rows, mask = [], []
    for i in indices:
        known = data.categories[i]
        rows.append([data.harmful[i], *(known or [0] * len(CATEGORIES))])
        mask.append([1, *([1 if known is not None else 0] * len(CATEGORIES))])
    return torch.tensor(rows, dtype=torch.float32, device=device), torch.tensor(mask, dtype=torch.float32,
                                                                                  device=device)


def masked_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every known head, averaged over them."""
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (losses * mask).sum() / mask.sum()


def batch_loss(model, tokenizer, data: Labelled, max_length: int, device: torch.device):
    """The training loss of a batch of ``data``'s rows: every known head's cross-entropy."""
    def loss_of(indices: list[int]) -> torch.Tensor:
        batch = encode(tokenizer, [data.texts[i] for i in indices], max_length, device)
        target, mask = targets(data, indices, device)
        return masked_loss(model(**batch).logits, target, mask)
    return loss_of


def score(model, tokenizer, data: Labelled, max_length: int, device: torch.device) -> Scores:
    """Every head's probability on every row (``harmful`` is head 0)."""
    model.eval()
    heads: list[list[float]] = []
    with torch.inference_mode():
        for start in range(0, len(data.texts), EVAL_BATCH_SIZE):
            batch = encode(tokenizer, data.texts[start:start + EVAL_BATCH_SIZE], max_length, device)
            heads += torch.sigmoid(model(**batch).logits).tolist()
    return Scores([h[0] for h in heads], [h[1:] for h in heads])


def trained_max_length(checkpoint: Path) -> int:
    """The token limit a checkpoint of this tool was trained with (its METRICS_NAME), else the exporter's."""
    path = checkpoint / METRICS_NAME
    if path.is_file():
        return int(json.loads(path.read_text(encoding="utf-8"))["parameters"]["max_length"])
    return MAX_LENGTH


def score_checkpoint(checkpoint: Path, sets: list[Labelled]) -> list[Scores]:
    """A fine-tuned checkpoint's scores on each set, on the CPU, texts cut as in its training."""
    from transformers import AutoTokenizer, ElectraForSequenceClassification

    model = ElectraForSequenceClassification.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    max_length = trained_max_length(checkpoint)
    return [score(model, tokenizer, data, max_length, torch.device("cpu")) for data in sets]


def measure(data: Labelled, scores: Scores, threshold: float) -> dict:
    """Harmful at the default and at the calibrated threshold, and the categories' heads."""
    report = {"default": at_threshold(data.harmful, scores.harmful, DEFAULT_THRESHOLD),
              "calibrated": at_threshold(data.harmful, scores.harmful, threshold)}
    if data.has_categories:
        report["categories"] = category_recall(data.categories, scores.categories, CATEGORIES)
    return report


def load(base: str, device: torch.device):
    """The base with a multi-label head over HEADS (a new one when it has another) and its tokenizer."""
    from transformers import AutoTokenizer, ElectraForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the new head's "newly initialized" warning is expected here
    model = ElectraForSequenceClassification.from_pretrained(
        base, num_labels=len(HEADS), id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
        problem_type="multi_label_classification", ignore_mismatched_sizes=True)
    return model.to(device), AutoTokenizer.from_pretrained(base)


def format_metrics(metrics: dict) -> str:
    return " ".join(f"{k} {metrics[k]:.3f}" for k in ("accuracy", "precision", "recall", "f1"))


def write_outputs(out: Path, model, tokenizer, report: dict) -> None:
    """Model, tokenizer, metrics, and last the marker: a directory with a marker is complete."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / METRICS_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    marker = {"trained": True, "base": report["base"], "metrics": report["after"], "heads": report["heads"],
              "threshold": report["threshold"]}
    (out / TRAINING_MARKER).write_text(json.dumps(marker, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_balance(data: Labelled) -> None:
    if data.harmful_rows in (0, len(data)):
        logger.warning("%s has only label %d: the classifier cannot learn to tell harmful from normal",
                       data.name, data.harmful[0])


def select_device(threads: int) -> torch.device:
    """A GPU when there is one; on the CPU, ``threads`` threads (0 = PyTorch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def measure_all(model, tokenizer, data: Data, params: TrainingParams, device: torch.device,
                target_precision: float) -> tuple[list[dict], Calibration]:
    """Every eval set at the default threshold and at the one calibrated for ``target_precision``."""
    scores = [score(model, tokenizer, d, params.max_length, device) for d in data.evals]
    at = data.evals.index(data.calibration)
    calibration = calibrate(data.calibration.harmful, scores[at].harmful, target_precision, data.calibration.name)
    return [measure(d, s, calibration.threshold) for d, s in zip(data.evals, scores, strict=True)], calibration


def measured_training(model, tokenizer, data: Data, params: TrainingParams, device: torch.device,
                      options: RunOptions, fingerprint: dict, target_precision: float) -> dict:
    """Train, with every eval set's metrics before and after, the losses and the training time."""
    before, _ = measure_all(model, tokenizer, data, params, device, target_precision)
    logger.info("%s before training: %s", data.evals[0].name, format_metrics(before[0]["default"]))
    started = time.monotonic()
    losses = loop.Trainer(model, batch_loss(model, tokenizer, data.train, params.max_length, device),
                          [len(t) for t in data.train.texts], params, options,
                          loop.LoopState(fingerprint=fingerprint)).run()
    seconds = round(time.monotonic() - started, 1)
    after, calibration = measure_all(model, tokenizer, data, params, device, target_precision)
    for d, m in zip(data.evals, after, strict=True):
        logger.info("%s after training: %s; at the calibrated threshold %.3f: %s", d.name,
                    format_metrics(m["default"]), calibration.threshold, format_metrics(m["calibrated"]))
    if after[0]["default"]["f1"] <= before[0]["default"]["f1"]:
        logger.warning("held-out F1 did not improve (%.3f -> %.3f): check the data and the parameters",
                       before[0]["default"]["f1"], after[0]["default"]["f1"])
    evals = [{**d.describe(), "before": b, "after": a} for d, b, a in zip(data.evals, before, after, strict=True)]
    return {"train_loss": losses, "training_seconds": seconds, "evals": evals, "threshold": calibration.as_dict(),
            "before": before[0]["default"], "after": after[0]["default"]}


def run(args: argparse.Namespace) -> dict:
    """Read, measure, train, measure again, save; returns what training_metrics.json holds."""
    data = read_data(args)
    check_balance(data.train)
    params = TrainingParams(args.epochs, args.batch_size, args.lr, args.max_length, args.seed)
    fingerprint = {"base": args.base, "train": data.train.describe(), "parameters": asdict(params)}
    options = RunOptions(args.out / loop.CHECKPOINT_NAME, args.resume, args.checkpoint_every, args.log_every_s)
    device = select_device(args.threads)
    seed_everything(params.seed)
    model, tokenizer = load(args.base, device)
    results = measured_training(model, tokenizer, data, params, device, options, fingerprint, args.target_precision)
    # Category heads count as trained only when some training rows had categories (K-MHaS's).
    heads = list(HEADS) if data.train.has_categories else list(HEADS[:1])
    report = {"base": args.base, "heads": heads, "train": data.train.describe(),
              "eval": data.evals[0].describe(), "parameters": asdict(params), "device": device.type,
              "threads": torch.get_num_threads(), **results}
    write_outputs(args.out, model, tokenizer, report)
    options.checkpoint.unlink(missing_ok=True)  # the finished model supersedes it
    return report


def print_summary(report: dict, out: Path) -> None:
    threshold = report["threshold"]
    for evaluated in report["evals"]:
        print(f"held-out {evaluated['name']} ({evaluated['rows']} rows), harmful = positive")
        print(f"  before training: {format_metrics(evaluated['before']['default'])}")
        print(f"  after training:  {format_metrics(evaluated['after']['default'])}")
        print(f"  at threshold {threshold['threshold']:.3f}: {format_metrics(evaluated['after']['calibrated'])}")
    print(calibration_line(threshold))
    print(f"saved to {out} ({METRICS_NAME}, {TRAINING_MARKER})")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    return loop.run_tool(lambda: run(args), lambda report: print_summary(report, args.out))


if __name__ == "__main__":
    sys.exit(main())
