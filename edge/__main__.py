"""``python -m edge``: run the edge with uvicorn on EDGE_HOST:EDGE_PORT."""

from __future__ import annotations

import logging

import uvicorn

from edge.app import create_app
from edge.settings import EdgeSettings

WS_MAX_SIZE_MARGIN = 2
"""uvicorn's own frame limit is this multiple of max_frame_bytes, so oversize frames reach the
app and get a clear error event instead of a bare 1009 close."""


def main() -> None:
    settings = EdgeSettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                ws_max_size=settings.max_frame_bytes * WS_MAX_SIZE_MARGIN)


if __name__ == "__main__":
    main()
