"""Write ``model_repository/ensemble/config.pbtxt``: AUDIO (+LANGUAGE) -> whisper -> koelectra
and, when the lexicon model is exported, lexicon beside koelectra.

Rendered from the ensemble's template with its members' exported values (config.values.json):
max_batch_size is the smallest of theirs, as Triton requires; default_language is whisper's and
classifier_trained koelectra's, published for the edge. Run it after the member exporters.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scripts.cli import MODEL_REPOSITORY, parser, setup_logging
from scripts.export import triton_config
from scripts.export.triton_config import VALUES_NAME, EnsembleValues, KoelectraValues, LexiconValues, WhisperValues

logger = logging.getLogger(__name__)


def export(repository: Path, name: str = "ensemble", whisper: str = "whisper", koelectra: str = "koelectra",
           lexicon: str | None = "lexicon") -> Path:
    """Render the ensemble over the members exported under ``repository`` (the lexicon only if it
    was exported there); returns its model dir."""
    lexicon_values = None
    if lexicon and (repository / lexicon / VALUES_NAME).exists():
        lexicon_values = triton_config.read(repository / lexicon, LexiconValues)
    elif lexicon:
        logger.warning("no %s model exported under %s: the ensemble runs without a lexicon", lexicon, repository)
    values = EnsembleValues.of(name, triton_config.read(repository / whisper, WhisperValues),
                               triton_config.read(repository / koelectra, KoelectraValues), lexicon_values)
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    triton_config.write(model_dir, values)
    logger.info("ensemble %s: max_batch_size %d, default language %s, lexicon %s, classifier %s", name,
                values.max_batch_size, values.default_language, values.lexicon or "none",
                "trained" if values.classifier_trained else "UNTRAINED (decides nothing)")
    return model_dir


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--name", default="ensemble")
    p.add_argument("--whisper", default="whisper", help="name of the whisper model in the repository")
    p.add_argument("--koelectra", default="koelectra", help="name of the koelectra model in the repository")
    p.add_argument("--lexicon", default="lexicon", help="name of the lexicon model (used when exported)")
    p.add_argument("--no-lexicon", action="store_true", help="leave the lexicon out of the ensemble")
    args = p.parse_args(argv)
    export(args.repository, args.name, args.whisper, args.koelectra, None if args.no_lexicon else args.lexicon)


if __name__ == "__main__":
    main()
