"""wscat, the client of the original spec, against the real edge (text side of the protocol)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess

import pytest

from scripts.cli import REPO_ROOT

WSCAT = REPO_ROOT / "node_modules" / ".bin" / "wscat"


def wscat(url: str, *messages: str, wait_s: int = 5) -> list[dict]:
    """Run wscat under a pseudo-terminal (it prints only to a TTY) and parse the JSON it received."""
    if not WSCAT.exists():
        pytest.fail("wscat is not installed: run `npm ci` (make install does)")
    if shutil.which("script") is None:
        pytest.fail("`script` (util-linux) is needed to give wscat a terminal")
    args = [str(WSCAT), "-c", url, "-w", str(wait_s)] + [a for m in messages for a in ("-x", m)]
    out = subprocess.run(["script", "-qc", shlex.join(args), "/dev/null"], capture_output=True, text=True,
                         timeout=wait_s + 30, stdin=subprocess.DEVNULL).stdout
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out)
    return [json.loads(m) for m in re.findall(r"(\{.*?\})\s*(?:\r|\n|$)", plain)]


def test_wscat_session_with_config_and_end(edge):
    events = wscat(f"ws://{edge}/ws/audio", '{"type":"config","language":"en"}', '{"type":"end"}')
    assert [e["type"] for e in events] == ["ready", "config", "summary"], events
    assert events[1]["language"] == "en"
    assert events[2]["segments"] == 0 and events[2]["audio_seconds"] == 0


def test_wscat_typing_garbage_gets_an_error_not_a_disconnect(edge):
    events = wscat(f"ws://{edge}/ws/audio", "hello there", '{"type":"end"}')
    assert [e["type"] for e in events] == ["ready", "error", "summary"], events
    assert events[1]["code"] == "bad_json"


def test_wscat_unknown_language_is_a_client_error_and_the_session_goes_on(edge):
    events = wscat(f"ws://{edge}/ws/audio", '{"type":"config","language":"xx"}', '{"type":"config","language":"en"}',
                   '{"type":"end"}')
    assert [e["type"] for e in events] == ["ready", "error", "config", "summary"], events
    assert events[1]["code"] == "bad_config" and "language" in events[1]["message"]
    assert events[2]["language"] == "en"
