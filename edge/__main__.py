"""``python -m edge``: run the edge with uvicorn on EDGE_HOST:EDGE_PORT.

The first SIGTERM (or SIGINT) drains the edge (edge/drain.py) and then shuts it down, exiting
with 0; a second one shuts it down at once."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from types import FrameType

import uvicorn

from edge.app import create_app
from edge.auth import serving_options
from edge.dependencies import EdgeServices
from edge.drain import Drain
from edge.settings import EdgeSettings

logger = logging.getLogger(__name__)

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


CLOSING_HANDSHAKE_WAIT_S = 3.0
"""After the drain, how long the edge waits for the WebSocket connections it closed to finish their
closing handshake before uvicorn's shutdown, which closes sockets at once: a socket closed with
unread client audio in it is reset, and the reset throws away the last events the client has not
read yet (results, summary, ``server_shutdown``). A live client answers within a round trip."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGTERM or SIGINT after startup starts the edge's drain,
    and uvicorn's own shutdown (which closes open WebSockets with 1012 and no event) runs only
    once the drain is over and the closed WebSockets are gone. A later signal, or one during
    startup, is uvicorn's as usual: shut down at once (and, for a further SIGINT, without
    waiting for anything)."""

    def __init__(self, config: uvicorn.Config, drain: Drain):
        super().__init__(config)
        self.drain = drain
        self.drain_task: asyncio.Task[None] | None = None
        self._drain_requested = False
        self._drained_at: float | None = None
        """Loop time the drain ended at."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_requested or not self.started or self.should_exit:
            super().handle_exit(sig, frame)
            return
        # Not recorded as uvicorn's captured signal, which it would raise again after shutdown:
        # a drained edge exits with 0.
        self._drain_requested = True
        # A signal handler runs between any two bytecodes of the loop's thread: hand over to the loop.
        asyncio.get_running_loop().call_soon_threadsafe(self._start_drain, signal.Signals(sig).name)

    def _start_drain(self, signal_name: str) -> None:
        logger.info("%s: draining before shutdown (send it again to shut down at once)", signal_name)
        self.drain_task = self.drain.start()
        self.drain_task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the drain failed; shutting down", exc_info=task.exception())
        self._drained_at = asyncio.get_running_loop().time()

    async def on_tick(self, counter: int) -> bool:
        """Whether uvicorn's main loop (every 0.1 s) ends and its shutdown starts: for uvicorn's
        reasons (a second signal), or once the drain is over and no WebSocket is left closing."""
        if await super().on_tick(counter):
            return True
        if self._drained_at is None:
            return False
        waited_s = asyncio.get_running_loop().time() - self._drained_at
        return not self._websockets_open() or waited_s > CLOSING_HANDSHAKE_WAIT_S

    def _websockets_open(self) -> bool:
        ws_class = self.config.ws_protocol_class
        return ws_class is not None and any(isinstance(c, ws_class) for c in self.server_state.connections)


def main() -> None:
    settings = EdgeSettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, ws_max_size=transport_max_bytes(settings),
                            ws_ping_interval=settings.ws_ping_interval_s, ws_ping_timeout=settings.ws_ping_timeout_s,
                            **serving_options(settings))  # TLS files; refuses an unchosen EDGE_AUTH
    logging.getLogger("uvicorn.error").addFilter(OneLineClientErrors())  # after uvicorn's logging set-up
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactTokens())
    services: EdgeServices = app.state.services
    DrainingServer(config, services.drain).run()


if __name__ == "__main__":
    main()
