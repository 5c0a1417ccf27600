"""Export a KoELECTRA classifier into ``model_repository/koelectra`` as ONNX plus tokenizer.

The source is a Hugging Face ``ElectraForSequenceClassification`` checkpoint: a two-label one
(label 1 = harmful), or the multi-label one of the fine-tuning tool (``harmful`` and categories):
a hub id (default ``monologg/koelectra-base-v3-discriminator``, needs internet) or a local
fine-tuned directory. ``--untrained`` builds a small randomly initialised model instead, for
machines without internet; its scores are meaningless.

Whether the classifier is *trained* (its head fine-tuned for harmful speech) is recorded in
``model_info.json`` and in the config values (``trained``), from which the ensemble tells the
edge: only a trained classifier decides verdicts. It is trained when --source holds the marker
``moderation_training.json`` of ``scripts/train/finetune_koelectra.py``, or when --trained says
so (a checkpoint fine-tuned elsewhere); a hub base such as the default (random head) and
--untrained are not.

``--blend`` (the output of ``scripts/train/ngram_blend.py``) serves the classifier blended with
its character n-gram model: the n-gram model is copied beside the ONNX model, and
model_info.json's ``blend`` (weights, the blend's calibrated threshold) tells the Triton model to
mix it into HARMFUL_PROB and the categories; that threshold is then the one published.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.export import triton_config
from scripts.export.onnx_parity import ParityError, check_parity, export_onnx
from scripts.export.triton_config import QUEUE_SAFE_INSTANCES
from scripts.train import TRAINING_MARKER, marked_trained, read_training_marker
from scripts.train.ngram_blend import BLEND_FILE, NGRAM_FILE

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "monologg/koelectra-base-v3-discriminator"
MAX_LENGTH = 128
"""Tokens per text; a 5 s utterance is far shorter, longer transcripts are truncated."""


def config_values(args: argparse.Namespace) -> triton_config.KoelectraValues:
    """The values of the koelectra model's config template, from the exporter's flags."""
    return triton_config.KoelectraValues(
        name=args.model_name, max_batch_size=args.max_batch_size,
        max_queue_delay_us=None if args.max_queue_delay_us < 0 else args.max_queue_delay_us,
        instance_count=args.instance_count, instance_kind=args.instance_kind, max_length=args.max_length,
        cpu_threads=args.cpu_threads, trained=classifier_trained(args), threshold=calibrated_threshold(args),
        categories=category_heads(args),
    )


def category_heads(args: argparse.Namespace) -> tuple[str, ...]:
    """The category heads the fine-tuning tool trained (its marker's ``heads`` after ``harmful``)."""
    marker = None if args.untrained else read_training_marker(args.source)
    heads = (marker or {}).get("heads") or []
    return tuple(str(h) for h in heads if h != "harmful")


def read_blend(args: argparse.Namespace) -> dict | None:
    """--blend's blend.json (None without --blend); ValueError when it is not a complete blend."""
    if args.blend is None:
        return None
    path = args.blend / BLEND_FILE
    try:
        blend = json.loads(path.read_text(encoding="utf-8"))
        weight, threshold = float(blend["weight"]), float(blend["threshold"]["threshold"])
        float(blend["category_weight"])  # present and a number, as the Triton model reads it
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--blend {args.blend}: no readable {BLEND_FILE} of scripts/train/ngram_blend.py "
                         f"({exc})") from exc
    if not (args.blend / NGRAM_FILE).is_file() or not 0 <= weight < 1 or not 0 <= threshold <= 1:
        raise ValueError(f"--blend {args.blend}: needs {NGRAM_FILE}, a weight in [0, 1) and a threshold in [0, 1]")
    return blend


def calibrated_threshold(args: argparse.Namespace) -> float | None:
    """The threshold calibrated for what is served: the blend's with --blend, else the one in the
    fine-tuning tool's marker in --source (None without one)."""
    marker = None if args.untrained else read_training_marker(args.source)
    calibration = (read_blend(args) or marker or {}).get("threshold")
    return float(calibration["threshold"]) if isinstance(calibration, dict) and "threshold" in calibration else None


def classifier_trained(args: argparse.Namespace) -> bool:
    """Whether the exported classifier was fine-tuned for harmful speech: --trained, or the
    fine-tuning tool's marker in --source. Never --untrained."""
    if args.untrained:
        return False
    return args.trained or marked_trained(args.source)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--source", default=DEFAULT_SOURCE, help="hub id or local checkpoint directory")
    training = p.add_mutually_exclusive_group()
    training.add_argument("--untrained", action="store_true",
                          help="build a small UNTRAINED KoELECTRA-architecture model locally (offline; random scores)")
    training.add_argument("--trained", action="store_true",
                          help=f"--source was fine-tuned for harmful speech elsewhere (no {TRAINING_MARKER} in it): "
                               "let its HARMFUL_PROB decide verdicts")
    p.add_argument("--verify-only", action="store_true",
                   help="do not export: check the ONNX already in the repository against --source")
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--model-name", default="koelectra")
    p.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-queue-delay-us", type=int, default=2000, help="negative turns dynamic batching off")
    p.add_argument("--instance-count", type=int, default=QUEUE_SAFE_INSTANCES,
                   help="model instances; the default 2 keeps Triton 2.51's batcher from stalling requests 500 ms "
                        "(scripts/export/triton_config.py, QUEUE_SAFE_INSTANCES)")
    p.add_argument("--instance-kind", choices=("CPU", "GPU"), default="CPU")
    p.add_argument("--max-length", type=int, default=MAX_LENGTH)
    p.add_argument("--cpu-threads", type=int, default=0, help="ONNX Runtime intra-op threads; 0 = its default")
    p.add_argument("--blend", type=Path,
                   help="scripts/train/ngram_blend.py's --out: serve the classifier blended with its n-gram model")
    args = p.parse_args(argv)
    if args.blend is not None and not marked_trained(args.source):
        p.error("--blend blends a classifier fine-tuned by scripts/train/finetune_koelectra.py: --source has no "
                f"{TRAINING_MARKER}")
    return args


def resolve_source(args: argparse.Namespace) -> tuple[str, str]:
    """Checkpoint location and display name; builds the untrained model when asked to."""
    if args.untrained:
        from scripts.export.koelectra_untrained import UNTRAINED_NAME, build_untrained

        target = args.cache_dir / UNTRAINED_NAME
        if not (target / "config.json").exists():
            build_untrained(target)
        return str(target), UNTRAINED_NAME
    return args.source, args.source


def export(args: argparse.Namespace) -> Path:
    """Export (or with --verify-only just check) and return the model directory."""
    from transformers import AutoTokenizer, ElectraForSequenceClassification

    source, name = resolve_source(args)
    model = ElectraForSequenceClassification.from_pretrained(source).eval()  # its own head: 2 labels or HEADS
    tokenizer = AutoTokenizer.from_pretrained(source)
    model_dir = args.repository / args.model_name
    onnx_path = model_dir / "1" / "model.onnx"
    if not args.verify_only:
        export_onnx(model, tokenizer, onnx_path)
    check_parity(model, tokenizer, onnx_path, args.max_length)
    if args.verify_only:
        return model_dir
    tokenizer.backend_tokenizer.save(str(model_dir / "1" / "tokenizer.json"))
    write_model_info(model_dir / "1", args, name, source, model.config)
    triton_config.install_code("koelectra", model_dir)
    triton_config.write(model_dir, config_values(args))
    log_training_state(args, name)
    logger.info("exported koelectra %s to %s", name, model_dir)
    return model_dir


def head_info(config) -> dict:
    """How the Triton model reads the logits: ``multi_label`` (a sigmoid per head, ``harmful`` among
    ``labels``, scripts/train/datasets.py's HEADS) or a two-label softmax whose label 1 is harmful."""
    labels = {str(i): label for i, label in config.id2label.items()}
    if config.problem_type == "multi_label_classification" and "harmful" in labels.values():
        return {"labels": labels, "multi_label": True}
    return {"labels": {"0": "normal", "1": "harmful"}, "multi_label": False}


def write_model_info(version_dir: Path, args: argparse.Namespace, name: str, source: str, config) -> None:
    """model_info.json: what was exported. ``untrained`` (the offline random model) is kept for the
    readers that predate ``trained``; the marker's base and metrics come along when there is one."""
    info = {"name": name, "source": source, "trained": classifier_trained(args), "untrained": args.untrained,
            **head_info(config)}
    marker = None if args.untrained else read_training_marker(args.source)
    if marker is not None:
        info["training"] = marker
    (version_dir / NGRAM_FILE).unlink(missing_ok=True)  # a blend of an earlier export is not this model's
    blend = read_blend(args)
    if blend is not None:
        shutil.copyfile(args.blend / NGRAM_FILE, version_dir / NGRAM_FILE)
        info["blend"] = {"ngram": NGRAM_FILE, "weight": blend["weight"],
                         "category_weight": blend["category_weight"],
                         "threshold": blend["threshold"]}
    (version_dir / "model_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))


def log_training_state(args: argparse.Namespace, name: str) -> None:
    """Say loudly which kind of classifier was exported: only a trained one decides verdicts."""
    if args.untrained:
        logger.warning("exported %s: UNTRAINED, random weights - HARMFUL_PROB is noise and never decides a "
                       "verdict (the lexicon does)", name)
    elif classifier_trained(args):
        how = f"{TRAINING_MARKER} in the source" if marked_trained(args.source) else "--trained"
        logger.info("exported %s: TRAINED for harmful speech (%s) - its HARMFUL_PROB decides verdicts beside the "
                    "lexicon once export_ensemble has published it", name, how)
    else:
        logger.warning("exported %s: NOT TRAINED for harmful speech (no %s in the source, no --trained) - its "
                       "classification head is not fine-tuned, HARMFUL_PROB never decides a verdict", name,
                       TRAINING_MARKER)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        read_blend(args)  # a bad --blend stops the export before it writes anything
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    try:
        export(args)
    except ParityError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
