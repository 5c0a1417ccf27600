"""Write ``model_repository/ensemble/config.pbtxt``: AUDIO (+LANGUAGE) -> whisper -> koelectra.

Rendered from the ensemble's template with its members' exported values (config.values.json):
max_batch_size is the smaller of theirs, as Triton requires, and default_language is whisper's.
Run it after the member exporters.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scripts.cli import MODEL_REPOSITORY, parser, setup_logging
from scripts.export import triton_config
from scripts.export.triton_config import EnsembleValues, KoelectraValues, WhisperValues

logger = logging.getLogger(__name__)


def export(repository: Path, name: str = "ensemble", whisper: str = "whisper", koelectra: str = "koelectra") -> Path:
    """Render the ensemble over the members exported under ``repository``; returns its model dir."""
    values = EnsembleValues.of(name, triton_config.read(repository / whisper, WhisperValues),
                               triton_config.read(repository / koelectra, KoelectraValues))
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    triton_config.write(model_dir, values)
    logger.info("ensemble %s: max_batch_size %d, default language %s", name, values.max_batch_size,
                values.default_language)
    return model_dir


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--name", default="ensemble")
    p.add_argument("--whisper", default="whisper", help="name of the whisper model in the repository")
    p.add_argument("--koelectra", default="koelectra", help="name of the koelectra model in the repository")
    args = p.parse_args(argv)
    export(args.repository, args.name, args.whisper, args.koelectra)


if __name__ == "__main__":
    main()
