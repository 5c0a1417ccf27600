"""Shared fixtures: the exported model repository, a real tritonserver on free ports, test speech."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from scripts.serve_triton import Ports, TritonServer, free_port  # noqa: E402
from scripts.edge_process import running_edge  # noqa: E402
from tests.speech import write_dialogue, synthesize  # noqa: E402

MODEL_REPOSITORY = REPO_ROOT / "model_repository"
ENGLISH_SENTENCE = "Please keep the voice chat friendly and respectful for everyone."


@pytest.fixture(scope="session")
def model_repository() -> Path:
    missing = [p for p in ("whisper/1/whisper.pt", "koelectra/1/model.onnx", "ensemble/config.pbtxt")
               if not (MODEL_REPOSITORY / p).exists()]
    if missing:
        pytest.fail(f"model repository not exported ({', '.join(missing)} missing): run `make export`")
    return MODEL_REPOSITORY


@pytest.fixture(scope="session")
def triton(model_repository, tmp_path_factory) -> str:
    """A real tritonserver serving the exported repository; yields its gRPC address."""
    ports = Ports(free_port(), free_port(), free_port())
    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with open(log_path, "wb") as log, TritonServer(model_repository, ports, log_file=log):
        yield f"127.0.0.1:{ports.grpc}"


@pytest.fixture(scope="session")
def english_wav(tmp_path_factory) -> Path:
    return synthesize(ENGLISH_SENTENCE, tmp_path_factory.mktemp("speech") / "english.wav")


DIALOGUE = [
    "Good morning everyone, welcome to the game.",
    "Please keep the voice chat friendly.",
    "See you in the next round.",
]
"""Three English sentences, spoken with 1 s pauses, for the edge tests."""


@pytest.fixture(scope="session")
def dialogue_wav(tmp_path_factory) -> Path:
    return write_dialogue(DIALOGUE, tmp_path_factory.mktemp("dialogue"))


@pytest.fixture(scope="session")
def edge(triton, tmp_path_factory) -> str:
    """The real edge (uvicorn) wired to the real tritonserver; yields host:port."""
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    # A generous Triton deadline: a slow CI machine must not turn load into timeouts here.
    with running_edge(free_port(), triton, log, max_frame_bytes=65536, triton_timeout_s=60) as address:
        yield address
