"""Uploaded files on disk: one folder per job under ``JobSettings.data_dir``."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

logger = logging.getLogger(__name__)

UPLOAD_NAME = "upload"
"""The stored file's name (its extension, from the uploaded name, helps FFmpeg guess the format)."""
ORPHAN_MIN_AGE_S = 3600.0
"""A job folder without a job in Redis is removed once it is this old: younger ones may belong to
an upload whose job is being created."""
SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / job_id


def upload_path(data_dir: Path, job_id: str, filename: str) -> Path:
    suffix = Path(filename).suffix
    return job_dir(data_dir, job_id) / (UPLOAD_NAME + (suffix.lower() if SAFE_SUFFIX.match(suffix) else ""))


def find_upload(data_dir: Path, job_id: str) -> Path | None:
    folder = job_dir(data_dir, job_id)
    return next(iter(sorted(folder.glob(UPLOAD_NAME + "*"))), None) if folder.is_dir() else None


def remove(data_dir: Path, job_id: str) -> None:
    shutil.rmtree(job_dir(data_dir, job_id), ignore_errors=True)


def sweep(data_dir: Path, live_ids: set[str], now: float | None = None) -> list[str]:
    """Removes the folders of jobs Redis no longer holds (expired or deleted); returns their ids."""
    now = time.time() if now is None else now
    removed = []
    for folder in data_dir.iterdir() if data_dir.is_dir() else []:
        try:
            young = now - folder.stat().st_mtime < ORPHAN_MIN_AGE_S
        except OSError:  # removed meanwhile (another worker's sweep, a DELETE)
            continue
        if folder.name in live_ids or young:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    if removed:
        logger.info("removed the files of %d expired job(s)", len(removed))
    return removed
