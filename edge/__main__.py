"""``python -m edge``: run the edge with uvicorn on EDGE_HOST:EDGE_PORT."""

from __future__ import annotations

import logging
import re

import uvicorn

from edge.app import create_app
from edge.auth import serving_options
from edge.settings import EdgeSettings

WS_MAX_SIZE_MARGIN = 2
"""The transport limit, uvicorn's ``ws_max_size``, is this multiple of max_frame_bytes: frames
over max_frame_bytes up to it reach the app and get a ``frame_too_large`` event while the session
goes on; a bigger frame (or text message) is refused by uvicorn, which closes with 1009."""

TOKEN_PARAMETER = re.compile(r"([?&]token=)[^&\s\"']+")
CLIENT_INPUT_ERRORS = (UnicodeDecodeError,)
"""Exceptions that uvicorn logs with a traceback although the client caused them (a text frame
that is not UTF-8: uvicorn closes with 1007); they are logged as one warning line instead."""


def transport_max_bytes(settings: EdgeSettings) -> int:
    """uvicorn's WebSocket message limit for these settings (see WS_MAX_SIZE_MARGIN)."""
    return settings.max_frame_bytes * WS_MAX_SIZE_MARGIN


class RedactTokens(logging.Filter):
    """Blanks ``token=`` query parameters (browser credentials) in uvicorn's handshake and access
    lines, so no credential reaches the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = TOKEN_PARAMETER.sub(r"\1<redacted>", message), None
        return True


class OneLineClientErrors(logging.Filter):
    """Turns uvicorn's traceback for bad client input into one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, CLIENT_INPUT_ERRORS):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args, record.exc_info, record.exc_text = None, None, None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def main() -> None:
    settings = EdgeSettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_level=settings.log_level, ws_max_size=transport_max_bytes(settings),
                            ws_ping_interval=settings.ws_ping_interval_s, ws_ping_timeout=settings.ws_ping_timeout_s,
                            **serving_options(settings))  # TLS files; refuses an unchosen EDGE_AUTH
    logging.getLogger("uvicorn.error").addFilter(OneLineClientErrors())  # after uvicorn's logging set-up
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactTokens())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
