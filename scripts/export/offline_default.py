"""Export the offline-capable default repository: Whisper base from PyPI, the UNTRAINED small
KoELECTRA, the harmful-word lexicon from its installed sources, and the ensemble. Skips models
whose artifacts already exist unless --force."""

from __future__ import annotations

import logging
from pathlib import Path

from scripts.cli import MODEL_REPOSITORY, parser, setup_logging
from scripts.export import export_ensemble, export_koelectra, export_lexicon, export_whisper, triton_config

logger = logging.getLogger(__name__)


class StaleExport(Exception):
    """A model exported before config templates: its flags are unknown, so it is not replaced silently."""


def exported(model_dir: Path, artifact: str) -> bool:
    """The model's artifact and its config values are there; StaleExport if only the artifact is."""
    has_artifact = (model_dir / "1" / artifact).exists()
    if has_artifact and not (model_dir / triton_config.VALUES_NAME).exists():
        raise StaleExport(f"{model_dir} has {artifact} but no {triton_config.VALUES_NAME} (exported before "
                          "config templates): re-export it with the flags you used, or pass --force to replace it "
                          "with the offline default")
    return has_artifact


def whisper_exported(model_dir: Path) -> bool:
    """Whisper is exported on either engine (an operator's choice of engine is kept)."""
    if (model_dir / triton_config.VALUES_NAME).exists():
        checkpoint = triton_config.read(model_dir, triton_config.WhisperValues).checkpoint
        return (model_dir / "1" / checkpoint).exists()
    return exported(model_dir, export_whisper.CHECKPOINT_NAME)  # raises StaleExport for a bare whisper.pt


def rerender(repository: Path) -> None:
    """Render the configs of models exported earlier from their saved values, so a changed
    template (a new scheduling option, say) reaches an existing export without re-exporting."""
    for name, values in (("whisper", triton_config.WhisperValues), ("koelectra", triton_config.KoelectraValues),
                         ("lexicon", triton_config.LexiconValues)):
        if (repository / name / triton_config.VALUES_NAME).exists():
            triton_config.write(repository / name, triton_config.read(repository / name, values))


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--force", action="store_true", help="re-export even if artifacts exist")
    args = p.parse_args(argv)
    repo = str(args.repository)
    try:
        if args.force or not whisper_exported(args.repository / "whisper"):
            export_whisper.main(["--repository", repo])
        if args.force or not exported(args.repository / "koelectra", "model.onnx"):
            if export_koelectra.main(["--untrained", "--repository", repo]) != 0:
                return 1
        if args.force or not exported(args.repository / "lexicon", "lexicon.json"):
            if export_lexicon.main(["--repository", repo]) != 0:
                return 1
    except StaleExport as exc:
        logger.error("%s", exc)
        return 1
    rerender(args.repository)
    export_ensemble.main(["--repository", repo])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
