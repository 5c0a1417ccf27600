"""Fixtures of the integration tier: the exported model repository, a real tritonserver on free
ports, the real edge process in front of it, and speech synthesised with espeak-ng."""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from pathlib import Path

import pytest
from _pytest.runner import runtestprotocol

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT
from scripts.export import triton_config
from scripts.export.koelectra_untrained import UNTRAINED_NAME, build_untrained
from scripts.export.triton_config import WhisperValues
from scripts.export.whisper_sources import torch_checkpoint_file
from scripts.service.launch import free_port, http_get, running_edge
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import DIALOGUE, ENGLISH_SENTENCE, synthesize, write_dialogue

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def model_repository() -> Path:
    whisper = MODEL_REPOSITORY / "whisper"
    exported = (whisper / triton_config.VALUES_NAME).exists()
    artifact = f"whisper/1/{triton_config.read(whisper, WhisperValues).checkpoint}" if exported else "whisper"
    missing = [p for p in (artifact, "koelectra/1/model.onnx", "ensemble/config.pbtxt")
               if not (MODEL_REPOSITORY / p).exists()]
    if missing:
        pytest.fail(f"model repository not exported ({', '.join(missing)} missing): run `make export`")
    return MODEL_REPOSITORY


@pytest.fixture(scope="session")
def served_signals(model_repository) -> list[str]:
    """The signals the served ensemble decides with: the lexicon, and the classifier when the
    exported one is trained (after `make classifier`, as in CI) rather than the offline default."""
    info = json.loads((model_repository / "koelectra" / "1" / "model_info.json").read_text(encoding="utf-8"))
    return ["lexicon", "classifier"] if info.get("trained") is True else ["lexicon"]


@pytest.fixture(scope="session")
def whisper_pt(model_repository, tmp_path_factory) -> Path:
    """The exported Whisper as a torch checkpoint, for the torch engine's in-process tests (written
    from the CTranslate2 export when that is what the repository serves)."""
    return torch_checkpoint_file(model_repository / "whisper", tmp_path_factory.mktemp("whisper-pt"))


SUPERVISE_POLL_S = 0.5
"""How often the session's tritonserver is checked for a crash (its exit has no notification)."""
RESTART_WAIT_S = 180.0
"""How long a failed test waits for the crashed tritonserver to be back before it is run again."""


class Restarter(threading.Thread):
    """Restarts the session's tritonserver when it dies, as `make run`'s supervisor does in
    production: tritonserver 2.51 can crash under load (SIGSEGV, docs/OPERATIONS.md), and one
    crash must not fail every later test (see pytest_runtest_protocol); each restart is logged
    and counted."""

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

    def ready(self) -> bool:
        """Whether the server answers ready now (asked over HTTP: its process may be gone)."""
        try:
            return not self.stopped.is_set() and \
                http_get(f"http://127.0.0.1:{self.server.ports.http}/v2/health/ready")[0] == 200
        except OSError:  # refused: nothing listens
            return False

    def wait_ready(self) -> bool:
        """Waits (polling: readiness has no notification) for a crashed server to be back."""
        deadline = time.monotonic() + RESTART_WAIT_S
        while not self.ready():
            if self.stopped.is_set() or time.monotonic() > deadline:
                return False
            self.stopped.wait(SUPERVISE_POLL_S)
        return True

    def crashed_during(self, restarts_before: int) -> bool:
        """Whether the server died since ``restarts_before`` (or is down now); waits for it to be
        back before answering True."""
        if self.stopped.is_set() or (self.restarts == restarts_before and self.ready()):
            return False
        return self.wait_ready()


RESTARTER: Restarter | None = None
"""The session's, once the ``triton`` fixture started (pytest_runtest_protocol reads it)."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """A test that needs the session's tritonserver starts once it is up (after a crash in an
    earlier test, once restarted), and if it fails while the server crashed (tritonserver 2.51's
    SIGSEGV, docs/OPERATIONS.md) it runs once more after the restart; the crash is reported as a
    warning. Any other failure, and a second failure, stands."""
    if "triton" not in item.fixturenames:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    if RESTARTER is not None and not RESTARTER.ready() and not RESTARTER.wait_ready():  # an earlier crash
        warnings.warn(f"{item.nodeid} starts while tritonserver is still down", stacklevel=1)
    before = RESTARTER.restarts if RESTARTER else 0  # none yet: this test starts the server
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    if any(r.failed for r in reports) and RESTARTER is not None and RESTARTER.crashed_during(before):
        warnings.warn(f"{item.nodeid} failed while tritonserver crashed; ran it again after the restart",
                      stacklevel=1)
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


@pytest.fixture(scope="session")
def triton(model_repository, tmp_path_factory) -> str:
    """A real tritonserver serving the exported repository, restarted if it crashes; yields its
    gRPC address."""
    ports = Ports(free_port(), free_port(), free_port())
    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    global RESTARTER
    with open(log_path, "wb") as log, TritonServer(model_repository, ports, log_file=log) as server:
        restarter = RESTARTER = Restarter(server)
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
def untrained_base(tmp_path_factory) -> Path:
    """The offline untrained KoELECTRA to fine-tune: `make export`'s copy in .cache, else a fresh one."""
    cached = REPO_ROOT / ".cache" / UNTRAINED_NAME
    if (cached / "config.json").exists():
        return cached
    return build_untrained(tmp_path_factory.mktemp("base") / UNTRAINED_NAME)


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
