"""What every command-line tool here starts with: the repository root, logging and argparse."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout this code runs from."""
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
"""The Triton model repository the exporters write and the launchers serve."""
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def machine() -> str:
    """CPU model and core count of this machine, e.g. 'AMD EPYC, 2 cores', for reports."""
    model = platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = names[0].strip() if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def setup_logging(level: int | str = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose help shows the module docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
