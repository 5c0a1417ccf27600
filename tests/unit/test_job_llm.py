"""The LLM summary against a real OpenAI-compatible stub server: the request it sends, and every way
the LLM can fail becoming an ``error`` instead of an exception."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from jobs.llm import summarize
from jobs.models import LlmSummary
from jobs.settings import JobSettings

MESSAGES = [{"role": "system", "content": "Summarise."}, {"role": "user", "content": "[00:00:01] ok: 안녕"}]
SECRET = "sk-test-secret"
STALL_LIMIT_S = 5.0
"""Longest a stalled stub handler waits before it gives up on being released by the test's teardown."""


class StubServer(ThreadingHTTPServer):
    """An OpenAI-compatible chat endpoint that records each request and answers as ``mode`` says."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.mode = "ok"
        self.requests: list[dict] = []
        self.release = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class StubHandler(BaseHTTPRequestHandler):
    server: StubServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        mode = self.server.mode
        if mode == "stall":
            self.server.release.wait(STALL_LIMIT_S)
        if mode == "error":
            self.answer(500, b'{"error": "model exploded"}')
        elif mode == "not_json":
            self.answer(200, b"<html>gateway page</html>")
        elif mode == "no_choices":
            self.answer(200, json.dumps({"choices": []}).encode())
        else:
            reply = {"choices": [{"message": {"role": "assistant", "content": "  요약: 욕설 한 번.  "}}]}
            self.answer(200, json.dumps(reply, ensure_ascii=False).encode())

    def answer(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up first (the timeout test)
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def no_llm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings under test are the ones each test passes, whatever the shell exports."""
    for name in ("URL", "MODEL", "API_KEY", "TIMEOUT_S"):
        monkeypatch.delenv(f"SUMMARY_LLM_{name}", raising=False)
        monkeypatch.delenv(f"JOBS_SUMMARY_LLM_{name}", raising=False)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def settings(url: str | None, model: str | None = "tiny-llm", api_key: str | None = SECRET,
             timeout_s: float = 5.0) -> JobSettings:
    return JobSettings(summary_llm_url=url, summary_llm_model=model, summary_llm_api_key=api_key,
                       summary_llm_timeout_s=timeout_s)


def run_summary(job_settings: JobSettings, client: httpx.AsyncClient | None = None) -> LlmSummary | None:
    return asyncio.run(summarize(job_settings, MESSAGES, client))


def test_success_returns_the_content_after_posting_model_messages_and_the_bearer_key(stub):
    summary = run_summary(settings(stub.base_url + "/"))
    assert summary == LlmSummary(model="tiny-llm", text="요약: 욕설 한 번.")
    [request] = stub.requests
    assert request["path"] == "/v1/chat/completions"  # the trailing "/" of the base URL is not doubled
    assert request["json"] == {"model": "tiny-llm", "messages": MESSAGES, "temperature": 0}
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_no_api_key_sends_no_authorization_and_a_given_client_stays_open(stub):
    async def with_client() -> tuple[LlmSummary | None, bool]:
        async with httpx.AsyncClient() as client:
            summary = await summarize(settings(stub.base_url, api_key=None), MESSAGES, client)
            return summary, client.is_closed

    summary, closed = asyncio.run(with_client())
    assert summary is not None and summary.text == "요약: 욕설 한 번." and summary.error is None
    assert not closed
    assert "Authorization" not in stub.requests[0]["headers"]


@pytest.mark.parametrize(("mode", "reason"), [
    ("error", "HTTP 500 from the LLM endpoint: {\"error\": \"model exploded\"}"),
    ("not_json", "malformed response: the body is not JSON"),
    ("no_choices", "malformed response: no choices[0].message.content"),
])
def test_a_bad_answer_is_an_error_in_the_summary_and_a_warning(stub, caplog, mode, reason):
    stub.mode = mode
    with caplog.at_level(logging.WARNING, logger="jobs.llm"):
        summary = run_summary(settings(stub.base_url))
    assert summary == LlmSummary(model="tiny-llm", error=reason)
    assert reason in caplog.text and SECRET not in caplog.text
    assert len(stub.requests) == 1


def test_a_server_slower_than_the_timeout_is_an_error_on_time(stub):
    stub.mode = "stall"
    started = time.monotonic()
    summary = run_summary(settings(stub.base_url, timeout_s=0.3))
    elapsed = time.monotonic() - started
    assert summary == LlmSummary(model="tiny-llm", error="no answer within 0.3 s (SUMMARY_LLM_TIMEOUT_S)")
    assert 0.25 <= elapsed < STALL_LIMIT_S / 2  # the deadline cut it, not the stalled handler giving up
    assert len(stub.requests) == 1


def test_a_refused_connection_is_an_error(caplog):
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="jobs.llm"):
        summary = run_summary(settings(f"http://127.0.0.1:{port}/v1"))
    assert summary is not None and summary.text is None and summary.model == "tiny-llm"
    assert summary.error is not None and summary.error.startswith("cannot connect to the LLM endpoint")
    assert "cannot connect" in caplog.text


def test_a_url_that_is_no_http_url_is_an_error():
    summary = run_summary(settings("localhost:11434/v1"))
    assert summary is not None and summary.error is not None and summary.error.startswith("request failed")


def test_no_url_means_no_summary_and_no_model_is_a_clear_error(stub):
    assert run_summary(settings(None)) is None
    assert run_summary(settings("")) is None
    summary = run_summary(settings(stub.base_url, model=None))
    assert summary == LlmSummary(model="", error="SUMMARY_LLM_MODEL is not set")
    assert stub.requests == []
