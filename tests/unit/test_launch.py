"""The one launcher: waits for health, fails fast on a dead child, kills one that ignores SIGTERM."""

from __future__ import annotations

import signal
import sys
import textwrap

import pytest

from scripts.launch import ManagedProcess, free_port

STUBBORN_SERVER = textwrap.dedent("""
    import http.server, signal, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # like an edge stuck on a leaked session
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
""")


def test_a_child_that_ignores_sigterm_is_killed_after_its_grace_period(tmp_path):
    port = free_port()
    child = ManagedProcess("stubborn", [sys.executable, "-c", STUBBORN_SERVER, str(port)], stop_grace_s=0.5,
                           cwd=tmp_path)
    child.start(f"http://127.0.0.1:{port}/", timeout_s=30)
    assert child.process.poll() is None
    assert child.stop() == -signal.SIGKILL


def test_a_child_that_exits_before_it_is_healthy_fails_fast(tmp_path):
    child = ManagedProcess("broken", [sys.executable, "-c", "raise SystemExit(3)"], cwd=tmp_path)
    with pytest.raises(RuntimeError, match="exited with 3"):
        child.start(f"http://127.0.0.1:{free_port()}/", timeout_s=30)
