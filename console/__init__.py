"""The browser console (issue 12): static pages served by the edge at /console and /console/ops.

No build step: plain HTML, CSS and ES modules under ``static/``, served as they are by
``edge/routers/console.py``.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The console's pages, style sheet and ES modules."""
