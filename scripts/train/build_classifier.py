"""Build the served classifier from the labelled Korean comments: ``make classifier DATA=<dir>``.

    .venv/bin/python -m scripts.train.build_classifier --data ../shared/data

One command for what README's "Fine-tuning" section does by hand: pretrain the small ELECTRA on
the comments (scripts/train/pretrain_electra.py; ``--pretrain-epochs 0`` starts from random
weights with the same WordPiece vocabulary), fine-tune it on BEEP! train and K-MHaS (less its
fixed-seed dev split; scripts/train/finetune_koelectra.py), blend a character n-gram model
trained on the same rows into its harmful score and calibrate the blend
(scripts/train/ngram_blend.py; ``--ngram-weight 0`` serves KoELECTRA alone), export it into the
Triton repository as a trained classifier with its calibrated threshold, and render the ensemble
again, so the next ``make run`` serves it (``make run`` keeps an exported trained classifier).

``--data`` is a directory laid out as ``../shared/data`` is (DATA_FILES); a missing file stops
the build with exit code 2 naming it. Each step's output is kept under ``--work``; a step whose
output exists and was made with the same settings is not run again (``--force`` runs all). The
defaults (Recipe) are what CI builds with: about 7 minutes on 2 CPU cores.
Exit codes: 0 built, 1 export failed, 2 bad arguments or missing data, 130 stopped (run again).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.train import EXIT_BAD_INPUT, fraction, marked_trained, share

logger = logging.getLogger(__name__)

DATA_FILES = {
    "beep_train": "korean-hate-speech/labeled/train.tsv",
    "beep_dev": "korean-hate-speech/labeled/dev.tsv",
    "unlabelled": "korean-hate-speech/unlabeled/unlabeled_comments_5.txt",
    "kmhas": "kmhas/kmhas_valid.txt",
}
"""The files a build reads, relative to --data (BEEP! and K-MHaS's validation split; see
../shared/data/README.md). K-MHaS's test split is never read: it is kept for independent evaluation."""
FRACTIONS = ("calibration_fraction", "target_precision", "ngram_weight")
SHARES = ("ngram_category_weight",)
"""Recipe fields from 0 to 1, both included."""
"""Recipe fields that are shares (at least 0, below 1), refused otherwise before any step runs."""
STEP_SETTINGS = "build_settings.json"
"""Written into a step's output: the settings it was made with, so a changed recipe rebuilds it."""
PENDING = "build_pending.json"
"""The settings of a step under way: a stopped build resumes only a step of the same settings."""


@dataclass(frozen=True)
class Recipe:
    """How the classifier is built; the defaults are CI's budget (measured in docs/MODERATION.md)."""

    pretrain_epochs: int = 0
    """Masked-LM passes over the ~43,500 comments; 0: the WordPiece vocabulary only, on random
    weights (two passes, 12 minutes, did not improve the fine-tuned classifier: docs/MODERATION.md)."""
    vocab_size: int = 16000
    epochs: int = 4
    """Fine-tuning passes over BEEP! train and K-MHaS's training split (6 over-fitted: F1 fell)."""
    batch_size: int = 32
    lr: float = 3e-4
    max_length: int = 64
    calibration_fraction: float = 0.1
    """Share of BEEP! train held out to calibrate on, with K-MHaS's dev split."""
    target_precision: float = 0.8
    """The precision the acceptance targets state, on BEEP! and K-MHaS held out together. The
    fine-tuning tool's own default, 0.9, lands this offline model at a threshold of about 0.99,
    where it flags almost nothing (docs/MODERATION.md)."""
    ngram_weight: float = 0.5
    """Share of the character n-gram model in the served harmful score; 0: KoELECTRA alone (the
    blend is better than either on both datasets: docs/MODERATION.md)."""
    ngram_category_weight: float = 1.0
    """Its share in each category's score: KoELECTRA's category heads recall almost nothing."""
    seed: int = 42


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, required=True, help="directory with BEEP! and K-MHaS (as ../shared/data)")
    p.add_argument("--work", type=Path, default=REPO_ROOT / ".cache" / "classifier",
                   help="where the pretrained base and the fine-tuned model are kept")
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    defaults = Recipe()
    for name, value in asdict(defaults).items():
        kind = fraction if name in FRACTIONS else share if name in SHARES else type(value)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch; 0 = its default")
    p.add_argument("--force", action="store_true", help="run every step again, even if its output is current")
    p.add_argument("--check-data", action="store_true",
                   help="only check that --data has every file (exit 0 or 2); needs no installed packages")
    return p.parse_args(argv)


def data_files(data: Path) -> dict[str, Path]:
    """Each DATA_FILES entry under ``data``; FileNotFoundError naming the ones that are missing."""
    files = {key: data / relative for key, relative in DATA_FILES.items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"missing under --data {data}: {', '.join(missing)} (see the README's Fine-tuning "
                                "section for where BEEP! and K-MHaS come from)")
    return files


def current(output: Path, settings: dict, done: bool) -> bool:
    """Whether ``output`` is finished (``done``) and was made with ``settings``."""
    path = output / STEP_SETTINGS
    return done and path.is_file() and json.loads(path.read_text(encoding="utf-8")) == settings


def record(output: Path, settings: dict) -> None:
    (output / STEP_SETTINGS).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    (output / PENDING).unlink(missing_ok=True)


def resumable(output: Path, settings: dict, force: bool) -> bool:
    """Whether a step stopped earlier with these settings can resume from its checkpoint; if not,
    an older checkpoint (of other settings) is removed and these settings are noted as pending."""
    pending = output / PENDING
    if not force and pending.is_file() and json.loads(pending.read_text(encoding="utf-8")) == settings:
        return True
    from scripts.train.loop import CHECKPOINT_NAME

    (output / CHECKPOINT_NAME).unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    pending.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return False


def pretrain(files: dict[str, Path], recipe: Recipe, args: argparse.Namespace) -> Path:
    from scripts.train import pretrain_electra

    out = args.work / "base"
    settings = {"data": {k: str(v) for k, v in files.items()}, "epochs": recipe.pretrain_epochs,
                "vocab_size": recipe.vocab_size, "seed": recipe.seed}
    if not args.force and current(out, settings, (out / pretrain_electra.REPORT_NAME).is_file()):
        logger.info("pretrained base %s is current: not pretraining again", out)
        return out
    resume = ["--resume"] if resumable(out, settings, args.force) else []
    code = pretrain_electra.main(["--text", str(files["unlabelled"]), "--labelled", str(files["beep_train"]),
                                  str(files["kmhas"]), "--out", str(out), "--epochs", str(recipe.pretrain_epochs),
                                  "--vocab-size", str(recipe.vocab_size), "--seed", str(recipe.seed),
                                  "--threads", str(args.threads), *resume])
    if code != 0:
        raise StepFailed("pretraining", code)
    record(out, settings)
    return out


def finetune(files: dict[str, Path], base: Path, recipe: Recipe, args: argparse.Namespace) -> Path:
    from scripts.train import finetune_koelectra

    out = args.work / "finetuned"
    # the blend's weight is not the fine-tuning's: changing it refits only the blend
    tuning = {k: v for k, v in asdict(recipe).items() if not k.startswith("ngram_")}
    settings = {"data": {k: str(v) for k, v in files.items()}, "base": str(base), **tuning}
    if not args.force and current(out, settings, marked_trained(out)):
        logger.info("fine-tuned classifier %s is current: not fine-tuning again", out)
        return out
    resume = ["--resume"] if resumable(out, settings, args.force) else []
    code = finetune_koelectra.main([
        "--train", str(files["beep_train"]), str(files["kmhas"]), "--eval", str(files["beep_dev"]),
        "--base", str(base), "--out", str(out), "--epochs", str(recipe.epochs), "--batch-size",
        str(recipe.batch_size), "--lr", str(recipe.lr), "--max-length", str(recipe.max_length),
        "--calibration-fraction", str(recipe.calibration_fraction), "--target-precision",
        str(recipe.target_precision), "--seed", str(recipe.seed), "--threads",
        str(args.threads), *resume])
    if code != 0:
        raise StepFailed("fine-tuning", code)
    record(out, settings)
    return out


def blend(files: dict[str, Path], finetuned: Path, recipe: Recipe, args: argparse.Namespace) -> Path | None:
    """The n-gram model and the blend's threshold (seconds); None with ``ngram_weight`` 0."""
    from scripts.train import ngram_blend

    if recipe.ngram_weight == 0:
        return None
    out = args.work / "blended"
    settings = {"data": {k: str(v) for k, v in files.items()}, "classifier": str(finetuned), **asdict(recipe)}
    if not args.force and current(out, settings, (out / ngram_blend.BLEND_FILE).is_file()):
        logger.info("blend %s is current: not fitting it again", out)
        return out
    (out / ngram_blend.BLEND_FILE).unlink(missing_ok=True)
    code = ngram_blend.main([
        "--classifier", str(finetuned), "--train", str(files["beep_train"]), str(files["kmhas"]),
        "--eval", str(files["beep_dev"]), "--calibration-fraction", str(recipe.calibration_fraction),
        "--target-precision", str(recipe.target_precision), "--weight", str(recipe.ngram_weight),
        "--category-weight", str(recipe.ngram_category_weight),
        "--out", str(out)])
    if code != 0:
        raise StepFailed("blending", code)
    record(out, settings)
    return out


class StepFailed(Exception):
    def __init__(self, step: str, code: int) -> None:
        super().__init__(f"{step} failed with exit code {code}")
        self.code = code


def export(finetuned: Path, blended: Path | None, recipe: Recipe, args: argparse.Namespace) -> None:
    """The trained classifier (blended, when there is a blend) into the repository, then every
    model the offline default needs and the ensemble over them (scripts/export/offline_default.py
    keeps what is exported)."""
    from scripts.export import export_koelectra, offline_default

    repository = str(args.repository)
    with_blend = ["--blend", str(blended)] if blended is not None else []
    # served with the token limit it was trained with: positions past it were never trained
    limit = ["--max-length", str(recipe.max_length)]
    if export_koelectra.main(["--source", str(finetuned), "--repository", repository, *limit, *with_blend]) != 0:
        raise StepFailed("export", 1)
    if offline_default.main(["--repository", repository]) != 0:
        raise StepFailed("export", 1)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    recipe = Recipe(**{name: getattr(args, name) for name in asdict(Recipe())})
    try:
        files = data_files(args.data)
        if args.check_data:
            return 0
        finetuned = finetune(files, pretrain(files, recipe, args), recipe, args)
        export(finetuned, blend(files, finetuned, recipe, args), recipe, args)
    except FileNotFoundError as exc:
        logger.error("%s", exc)
        return EXIT_BAD_INPUT
    except StepFailed as exc:
        logger.error("%s", exc)
        return exc.code
    print(f"served classifier built from {args.data}: {finetuned} exported to {args.repository / 'koelectra'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
