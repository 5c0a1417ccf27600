"""Typed HTTP errors of the edge's JSON APIs (the job API, text moderation)."""

from __future__ import annotations

from fastapi import HTTPException


def problem(status_code: int, code: str, message: str) -> HTTPException:
    """A typed error: ``{"detail": {"code": ..., "message": ...}}``."""
    return HTTPException(status_code, {"code": code, "message": message})
