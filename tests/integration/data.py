"""Where the tests find the labelled Korean comments (never committed): $MODERATION_DATA, else
../shared/data beside the checkout, as on CI."""

from __future__ import annotations

import os
from pathlib import Path

from scripts.cli import REPO_ROOT
from scripts.train.build_classifier import data_files

DATA_VARIABLE = "MODERATION_DATA"


def shared_data_dir() -> Path | None:
    """The data directory when every file a build reads is in it; None otherwise."""
    data = Path(os.environ.get(DATA_VARIABLE) or REPO_ROOT.parent / "shared" / "data")
    try:
        data_files(data)
    except FileNotFoundError:
        return None
    return data
