"""Fixtures of the integration tier: the exported model repository, a real tritonserver on free
ports, the real edge process in front of it, and speech synthesised with espeak-ng."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import pytest

from scripts.cli import MODEL_REPOSITORY
from scripts.launch import free_port, running_edge
from scripts.serve_triton import Ports, TritonServer
from scripts.speech import DIALOGUE, ENGLISH_SENTENCE, synthesize, write_dialogue

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def model_repository() -> Path:
    missing = [p for p in ("whisper/1/whisper.pt", "koelectra/1/model.onnx", "ensemble/config.pbtxt")
               if not (MODEL_REPOSITORY / p).exists()]
    if missing:
        pytest.fail(f"model repository not exported ({', '.join(missing)} missing): run `make export`")
    return MODEL_REPOSITORY


SUPERVISE_POLL_S = 0.5
"""How often the session's tritonserver is checked for a crash (its exit has no notification)."""


class Restarter(threading.Thread):
    """Restarts the session's tritonserver when it dies, as `make run`'s supervisor does in
    production: tritonserver 2.51 can crash under load (SIGSEGV, docs/OPERATIONS.md), and one
    crash must not fail every later test. Tests running at the crash still fail; each restart
    is logged and counted."""

    def __init__(self, server: TritonServer):
        super().__init__(daemon=True)
        self.server, self.stopped, self.restarts = server, threading.Event(), 0

    def run(self) -> None:
        while not self.stopped.wait(SUPERVISE_POLL_S):
            code = self.server.poll()
            if code is None:
                continue
            self.restarts += 1
            logger.error("the session's tritonserver exited with %s: restarting it (restart %d)", code, self.restarts)
            self.server.stop()
            try:
                self.server.start()
            except (RuntimeError, TimeoutError):
                logger.exception("restarting tritonserver failed; trying again")


@pytest.fixture(scope="session")
def triton(model_repository, tmp_path_factory) -> str:
    """A real tritonserver serving the exported repository, restarted if it crashes; yields its
    gRPC address."""
    ports = Ports(free_port(), free_port(), free_port())
    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with open(log_path, "wb") as log, TritonServer(model_repository, ports, log_file=log) as server:
        restarter = Restarter(server)
        restarter.start()
        try:
            yield f"127.0.0.1:{ports.grpc}"
        finally:
            restarter.stopped.set()
            restarter.join()
        if restarter.restarts:
            warnings.warn(f"tritonserver crashed and was restarted {restarter.restarts} time(s); see {log_path}",
                          stacklevel=1)


@pytest.fixture(scope="session")
def english_wav(tmp_path_factory) -> Path:
    return synthesize(ENGLISH_SENTENCE, tmp_path_factory.mktemp("speech") / "english.wav")


@pytest.fixture(scope="session")
def spanish_wav(tmp_path_factory) -> Path:
    """A Spanish greeting that Whisper base detects as Spanish (espeak-ng's Korean it mostly takes
    for Thai, so language detection is tested on Spanish)."""
    return synthesize("Buenos días, ¿cómo estás hoy?", tmp_path_factory.mktemp("speech") / "spanish.wav", voice="es")


@pytest.fixture(scope="session")
def dialogue_wav(tmp_path_factory) -> Path:
    """DIALOGUE freshly synthesised (the committed copy is in loadtest/audio)."""
    return write_dialogue(DIALOGUE, tmp_path_factory.mktemp("dialogue") / "dialogue.wav")


@pytest.fixture(scope="session")
def edge(triton, tmp_path_factory) -> str:
    """The real edge (uvicorn) wired to the real tritonserver; yields host:port."""
    log_path = tmp_path_factory.mktemp("edge") / "edge.log"
    # A generous Triton deadline: a slow CI machine must not turn load into timeouts here.
    with open(log_path, "wb") as log, \
            running_edge(free_port(), triton, log, max_frame_bytes=65536, triton_timeout_s=60) as running:
        yield running.address
