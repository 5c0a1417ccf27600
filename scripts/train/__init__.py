"""Training tools, and the marker by which a fine-tuned checkpoint says it was trained.

The marker is the contract between ``scripts/train/finetune_koelectra.py`` (which writes it) and
``scripts/export/export_koelectra.py`` (which reads it). It lives here, free of torch and of
either tool, so that neither tool imports the other.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
"""Exit code of every training tool given bad arguments or bad data (as argparse's usage errors)."""

TRAINING_MARKER = "moderation_training.json"
"""File in a checkpoint directory: {"trained": true, "base": ..., "metrics": ...}, written by the
fine-tuning tool once the classification head has been trained for harmful speech."""


def read_training_marker(checkpoint: str | Path) -> dict | None:
    """The marker of a local checkpoint directory; None for a hub id, a directory without one, or
    an unreadable marker (logged): a checkpoint is only ever taken as trained on clear evidence."""
    path = Path(checkpoint) / TRAINING_MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return None
    if not isinstance(marker, dict):
        logger.warning("ignoring %s: not a JSON object", path)
        return None
    return marker


def marked_trained(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` holds a marker saying it was trained."""
    marker = read_training_marker(checkpoint)
    return marker is not None and marker.get("trained") is True


def positive(kind: type, allow_zero: bool = False) -> Callable[[str], int | float]:
    """An argparse type: ``kind`` of the text, refused unless above 0 (or 0, with ``allow_zero``)."""
    def parse(text: str) -> int | float:
        value = kind(text)
        if not (value >= 0 if allow_zero else value > 0):
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0, got {text}")
        return value
    return parse


def fraction(text: str) -> float:
    """An argparse type: a share, at least 0 and below 1."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def share(text: str) -> float:
    """An argparse type: a share from 0 to 1, both included."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value
