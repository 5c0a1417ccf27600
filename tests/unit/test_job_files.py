"""Uploaded files on disk: safe names, and the sweep that removes the files of expired jobs."""

from __future__ import annotations

import os

from jobs import files


def test_the_stored_name_keeps_only_a_plain_extension(tmp_path):
    assert files.upload_path(tmp_path, "j1", "Match Replay.MP3").name == "upload.mp3"
    assert files.upload_path(tmp_path, "j1", "../../etc/passwd").name == "upload"
    assert files.upload_path(tmp_path, "j1", "a.m3u8;rm -rf").name == "upload"


def test_the_sweep_removes_old_folders_of_jobs_redis_no_longer_holds(tmp_path):
    now = 1_000_000.0
    for name in ("expired", "live", "young"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "upload.mp3").write_bytes(b"x")
    old = now - files.ORPHAN_MIN_AGE_S - 1
    for name in ("expired", "live"):
        os.utime(tmp_path / name, (old, old))
    os.utime(tmp_path / "young", (now - 10, now - 10))
    assert files.sweep(tmp_path, {"live"}, now=now) == ["expired"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "young"]
    assert files.find_upload(tmp_path, "live").name == "upload.mp3" and files.find_upload(tmp_path, "expired") is None
