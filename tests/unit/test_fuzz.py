"""Property-based protocol fuzzing of the edge app (TestClient + FakePool): whatever a client sends,
every server frame is a protocol event, the close code is a documented one, nothing is logged as
an exception and the session's slot comes back."""

from __future__ import annotations

import json
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moderation.protocol import MAX_TEXT_FRAME_BYTES, SERVER_EVENTS
from tests.unit.fakes import FakePool
from tests.unit.test_app import client

MAX_FRAME_BYTES = 4096
"""Binary frame limit of the fuzzed edge: small, so oversized frames are cheap to make."""
DOCUMENTED_CLOSE_CODES = {1000, 1008}
"""What the app itself may close a session with here (docs/PROTOCOL.md, section 6)."""
TIMEOUT_S = 0.2
"""First-frame and idle timeouts of the fuzzed edge: a sequence without end is closed by them."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
near_valid_configs = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["config", "dance", 1, None, "end"]),
    "sample_rate": st.sampled_from([16000, 44100, 7999, 48001, -1, "16000", 10**30]),
    "encoding": st.sampled_from(["pcm_s16le", "pcm_f32le", "mp3", ""]),
    "channels": st.sampled_from([1, 2, 0, 6, True]),
    "language": st.sampled_from(["ko", "en", "KO", "xx", "\ud800", None, 5]),
    "word_timestamps": st.sampled_from([True, False, "yes", None]),
    "bitrate": st.integers(),
})
text_frames = st.one_of(
    json_values.map(json.dumps),
    near_valid_configs.map(json.dumps),
    st.text(max_size=100),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: '{"a":' * n + "0" + "}" * n),
    st.binary(max_size=40).map(lambda raw: raw.decode("utf-8", "surrogateescape")),  # invalid UTF-8
    st.integers(MAX_TEXT_FRAME_BYTES - 10, MAX_TEXT_FRAME_BYTES + 10).map(lambda n: '"' + "x" * n + '"'),
).map(lambda text: ("text", text))
binary_frames = st.one_of(
    st.binary(max_size=2000),
    st.integers(MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES + 3).map(lambda n: b"\x01\x02" * (n // 2) + b"\x03" * (n % 2)),
).map(lambda data: ("bytes", data))
endings = st.sampled_from(["end", "disconnect", "silence"])


def send(ws, frame: tuple[str, str | bytes]) -> None:
    kind, payload = frame
    ws.send({"type": "websocket.receive", kind: payload})


def until_close(ws) -> int:
    """Reads to the close: every frame must be valid UTF-8 and a protocol event."""
    while (message := ws.receive())["type"] != "websocket.close":
        SERVER_EVENTS.validate_json(message["text"].encode("utf-8"))
    return message["code"]


def test_any_frame_sequence_gets_protocol_events_and_a_documented_close(caplog):
    caplog.set_level(logging.INFO)
    with client(FakePool(), max_frame_bytes=MAX_FRAME_BYTES, first_frame_timeout_s=TIMEOUT_S,
                idle_timeout_s=TIMEOUT_S) as app:

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])
        @given(frames=st.lists(text_frames | binary_frames, max_size=8), ending=endings)
        def session(frames, ending):
            caplog.clear()
            with app.websocket_connect("/ws/audio") as ws:
                SERVER_EVENTS.validate_json(ws.receive_text())
                for frame in frames:
                    send(ws, frame)
                if ending == "end":
                    ws.send_text('{"type": "end"}')
                if ending != "disconnect":
                    assert until_close(ws) in DOCUMENTED_CLOSE_CODES
            assert "edge_active_sessions 0.0" in app.get("/metrics").text
            assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]

        session()
