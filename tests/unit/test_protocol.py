"""The protocol models against docs/PROTOCOL.md and against Whisper; the wire format."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from moderation.protocol import (
    SERVER_EVENTS,
    WHISPER_LANGUAGES,
    ClientConfig,
    ErrorCode,
    ErrorEvent,
    SegmentEvent,
    SummaryEvent,
)
from scripts.cli import REPO_ROOT

PROTOCOL_MD = (REPO_ROOT / "docs" / "PROTOCOL.md").read_text()


def documented_examples() -> list[dict]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", PROTOCOL_MD, re.S)]


def table_column(heading: str) -> list[str]:
    """First-column entries (in backticks) of the table under a heading of docs/PROTOCOL.md."""
    section = PROTOCOL_MD.split(heading, 1)[1]
    table = re.search(r"\n(\|.*\|\n)+", section).group(0)
    first_cells = re.findall(r"^\|([^|]*)\|", table, re.M)
    return [name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)]


def test_every_documented_example_is_a_model_with_the_same_fields_in_the_same_order():
    examples = documented_examples()
    assert {e["type"] for e in examples} == {"ready", "config", "segment", "interim", "error", "summary"}
    for example in examples:
        event = SERVER_EVENTS.validate_python(example)
        on_the_wire = json.loads(event.wire())
        assert list(on_the_wire.items()) == list(example.items()), example
        if example["type"] == "config":  # the client's frame has the shape of the server's ack
            assert ClientConfig.model_validate(example).model_dump() == example


def test_documented_error_codes_and_segment_fields_match_the_models():
    assert sorted(table_column("## 6. Errors")) == sorted(code.value for code in ErrorCode)
    assert sorted(table_column("| field | meaning |")) == sorted(f for f in SegmentEvent.model_fields if f != "type")


def test_wire_format_is_plain_json_with_unescaped_text_and_no_empty_error_fields():
    error = ErrorEvent(code=ErrorCode.BAD_JSON, message="텍스트")
    assert error.wire() == '{"type": "error", "code": "bad_json", "message": "텍스트"}'
    summary = SummaryEvent(session_id="s", segments=0, harmful_segments=0, failed_segments=0, audio_seconds=0.0,
                           p50_latency_ms=None, p95_latency_ms=None)
    assert summary.wire().endswith('"p50_latency_ms": null, "p95_latency_ms": null}')
    assert ErrorCode.BAD_CONFIG == "bad_config" and isinstance(ErrorCode.BAD_CONFIG, str)


def test_server_events_reject_unknown_types_and_fields():
    with pytest.raises(ValidationError):
        SERVER_EVENTS.validate_python({"type": "hello"})
    with pytest.raises(ValidationError):
        SERVER_EVENTS.validate_python({"type": "error", "code": "bad_json", "message": "m", "extra": 1})
    with pytest.raises(ValidationError):
        SERVER_EVENTS.validate_python({"type": "error", "code": "no_such_code", "message": "m"})


def test_the_edges_language_codes_are_whispers():
    from whisper.tokenizer import LANGUAGES

    assert WHISPER_LANGUAGES == set(LANGUAGES)


@pytest.mark.parametrize("language", ["xx", "KO", "korean", "", "k"])
def test_a_config_with_a_language_whisper_lacks_is_refused(language):
    with pytest.raises(ValidationError, match="language"):
        ClientConfig.model_validate({"language": language})


def test_a_config_without_language_leaves_it_to_the_model():
    assert ClientConfig().language is None and ClientConfig(language="haw").language == "haw"
