"""The desktop client without sound devices: its backlog and where a new session goes on, the
delay line, ducking and restoring, the Windows volume behind its interface, its settings, and
its stream against the in-process edge that drains and comes back (no audio lost)."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from desktop import settings as stored
from desktop.actions import DelayLine, Ducker, beep
from desktop.audio import ToEdge, level_dbfs
from desktop.client import DesktopClient, Line
from desktop.settings import DesktopSettings, Mode
from desktop.stream import BYTES_PER_S, Backlog, Fatal, LinkState, LiveStream, SessionLog, StreamConfig
from desktop.volume import VolumeError, WindowsAppVolume
from edge.auth import key_line
from moderation.events import HarmfulSpan
from moderation.protocol import InterimEvent, SegmentEvent, SummaryEvent
from scripts.service.launch import free_port
from scripts.speech import DIALOGUE_WAV, pcm16, read_wav
from tests.unit.fakes import FakePool
from tests.unit.test_auth import KEY
from tests.unit.test_drain import FAST_BACKOFF, WAIT_S, ThreadEdge

RATE = 48000


# -- the backlog and resuming ----------------------------------------------------------------------

def test_the_backlog_keeps_what_is_unsent_drops_the_oldest_when_full_and_counts_only_unsent_loss():
    backlog = Backlog(max_s=1.0)
    backlog.append(b"\x01\x00" * 16000)  # 1 s
    backlog.mark_sent(16000)  # half of it sent
    backlog.append(b"\x02\x00" * 8000)  # 0.5 s more: 0.5 s dropped from the front, all of it sent
    assert backlog.first == 16000 and backlog.total == 48000 and backlog.dropped == 0
    backlog.mark_sent(32000)
    backlog.append(b"\x03\x00" * 16000)  # 1 s more: drops 0.5 s sent and 0.5 s unsent
    assert backlog.dropped == 16000 and backlog.first == 48000
    start, data = backlog.read(0, 100)  # asked for dropped audio: the oldest kept comes instead
    assert start == 48000 and len(data) == 100
    backlog.release(60000)
    assert backlog.first == 60000 and backlog.total == 80000


def test_wait_beyond_wakes_when_the_capture_thread_appends():
    backlog = Backlog()

    async def scenario():
        waiting = asyncio.create_task(backlog.wait_beyond(0))
        await asyncio.sleep(0)
        assert not waiting.done()
        threading.Thread(target=backlog.append, args=(b"\x00\x00",)).start()
        await asyncio.wait_for(waiting, WAIT_S)

    asyncio.run(scenario())


def summary(audio_seconds: float) -> SummaryEvent:
    return SummaryEvent(session_id="s", segments=1, harmful_segments=0, failed_segments=0,
                        audio_seconds=audio_seconds, p50_latency_ms=None, p95_latency_ms=None)


def test_a_new_session_goes_on_after_the_summary_after_the_last_result_or_where_the_refused_one_began():
    offset = 10 * BYTES_PER_S
    drained = SessionLog(offset=offset, sent=offset + 5 * BYTES_PER_S, ready=True, summary=summary(4.5))
    assert drained.resume_at() == offset + 45 * BYTES_PER_S // 10
    lost = SessionLog(offset=offset, sent=offset + 8 * BYTES_PER_S, confirmed=offset + 3 * BYTES_PER_S, ready=True)
    assert lost.resume_at() == offset + 3 * BYTES_PER_S  # sent again from the last result on
    long_lost = SessionLog(offset=0, sent=100 * BYTES_PER_S, confirmed=0, ready=True)
    assert long_lost.resume_at() == 40 * BYTES_PER_S  # but from no more than MAX_RESEND_S back
    refused = SessionLog(offset=offset, sent=offset + BYTES_PER_S)
    assert refused.resume_at() == offset


# -- the delay line, beeps and ducking ------------------------------------------------------------

def blocks(signal: np.ndarray, size: int = 960):
    return [signal[i:i + size] for i in range(0, len(signal), size)]


def test_the_delay_line_plays_the_input_exactly_delay_late_and_tones_or_mutes_only_the_padded_span():
    for mute in (False, True):
        played: list[np.ndarray] = []
        line = DelayLine(0.5, RATE, 2, pad_s=0.1, mute=mute, play=played.append)
        signal = np.random.default_rng(0).uniform(-0.5, 0.5, (3 * RATE, 2)).astype(np.float32)
        assert line.add_span(1.0, 1.2)  # known long before its sound is due
        for block in blocks(signal):
            line.push(block)
        out = np.concatenate(played)
        assert len(out) == len(signal) - round(0.5 * RATE)  # the last 0.5 s is still held back
        span = slice(round(0.9 * RATE), round(1.3 * RATE))
        np.testing.assert_array_equal(out[:span.start], signal[:span.start])
        np.testing.assert_array_equal(out[span.stop:], signal[span.stop:len(out)])
        if mute:
            assert not out[span].any()
        else:
            assert np.abs(out[span] - signal[span]).mean() > 0.1 and np.abs(out[span]).max() <= 0.3 + 1e-6


def test_a_span_that_comes_after_its_sound_played_is_late_and_what_is_left_of_it_is_still_censored():
    played: list[np.ndarray] = []
    line = DelayLine(0.2, RATE, 1, pad_s=0.0, mute=True, play=played.append)
    signal = np.ones((RATE, 1), dtype=np.float32)
    for block in blocks(signal[:round(0.7 * RATE)]):
        line.push(block)  # played up to 0.5 s
    assert not line.add_span(0.4, 0.6) and line.late == 1
    assert not line.add_span(0.4, 0.6, count_late=False) and line.late == 1
    for block in blocks(signal[round(0.7 * RATE):]):
        line.push(block)
    out = np.concatenate(played)
    assert out[round(0.45 * RATE)] == 1.0 and not out[round(0.5 * RATE):round(0.6 * RATE)].any()


def test_a_beep_lasts_the_span_within_audible_bounds():
    assert len(beep(0.4, RATE, 2)) == round(0.4 * RATE)
    assert len(beep(0.01, RATE, 2)) == round(0.15 * RATE) and len(beep(9.0, RATE, 2)) == 2 * RATE


class FakeVolume:
    def __init__(self, value: float = 0.8):
        self.value, self.history = value, [value]

    def get(self) -> float:
        return self.value

    def set(self, value: float) -> None:
        self.value = value
        self.history.append(value)

    def lowered(self, value: float, db: float) -> float:
        return value * 10 ** (-db / 60)

    def close(self) -> None:
        pass


def test_ducking_lowers_once_for_overlapping_spans_and_restores_exactly_when_the_last_is_over():
    volume, now = FakeVolume(0.8), [100.0]
    ducker = Ducker(volume, db=30, margin_s=0.3, clock=lambda: now[0])
    assert ducker.duck(0.5) == pytest.approx(100.8)
    now[0] = 100.4
    assert ducker.duck(0.6) == pytest.approx(101.3)  # extends; does not lower again
    assert volume.history == [0.8, pytest.approx(0.8 * 10 ** -0.5)]
    now[0] = 101.0
    assert not ducker.restore_due() and ducker.ducked
    now[0] = 101.3
    assert ducker.restore_due() and volume.value == 0.8 and ducker.ducks == 1


class FakeSession:
    def __init__(self, name: str, level: float):
        self.Process = type("Process", (), {"name": lambda _self: name})()
        self.SimpleAudioVolume = self
        self.level = level

    def GetMasterVolume(self) -> float:  # noqa: N802 (pycaw's names)
        return self.level

    def SetMasterVolume(self, level: float, context) -> None:  # noqa: N802
        self.level = level


def test_the_windows_volume_ducks_every_session_of_the_named_process_in_linear_amplitude():
    sessions = [FakeSession("Discord.exe", 1.0), FakeSession("Discord.exe", 1.0), FakeSession("game.exe", 1.0)]
    utilities = type("Utilities", (), {"GetAllSessions": staticmethod(lambda: sessions)})
    volume = WindowsAppVolume("app:discord", audio_utilities=utilities)
    volume.set(volume.lowered(volume.get(), 20))
    assert [s.level for s in sessions] == [pytest.approx(0.1), pytest.approx(0.1), 1.0]
    with pytest.raises(VolumeError):
        WindowsAppVolume("app:spotify", audio_utilities=utilities).get()


def test_the_edge_format_is_16_khz_mono_s16le_aligned_with_the_capture():
    to_edge = ToEdge()
    t = np.arange(2 * RATE) / RATE
    tone = np.repeat((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None], 2, axis=1)
    pcm = b"".join(to_edge.convert(block) for block in blocks(tone))
    samples = np.frombuffer(pcm, "<i2") / 32767
    assert abs(len(samples) - 2 * 16000) < 200
    reference = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(samples)) / 16000)
    assert np.corrcoef(samples[1000:-1000], reference[1000:-1000])[0, 1] > 0.99  # no delay, no distortion
    assert level_dbfs(tone) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert level_dbfs(np.zeros((960, 2), np.float32)) == -90.0


# -- settings ------------------------------------------------------------------------------------

def test_settings_are_validated_and_remembered_and_a_broken_file_falls_back_to_the_defaults(tmp_path):
    with pytest.raises(ValueError, match="Whisper language"):
        DesktopSettings(language="xx")
    with pytest.raises(ValueError, match="duck_target"):
        DesktopSettings(duck_target="speakers")
    with pytest.raises(ValueError, match="ws://"):
        DesktopSettings(url="http://localhost:8000")
    with pytest.raises(ValueError):
        DesktopSettings(bleep_delay_s=0.1)
    path = tmp_path / "desktop.json"
    stored.save(DesktopSettings(mode=Mode.DUCK, duck_db=12, language="en"), path)
    assert stored.load(path) == DesktopSettings(mode=Mode.DUCK, duck_db=12, language="en")
    assert "token" not in json.loads(path.read_text())
    path.write_text('{"mode": "explode"')
    assert stored.load(path) == DesktopSettings()


# -- acting on events ----------------------------------------------------------------------------

class RecordingView:
    def __init__(self):
        self.links, self.lines, self.warnings, self.actions = [], [], [], []

    def link(self, state, detail):
        self.links.append(state)

    def line(self, line: Line):
        self.lines.append(line)

    def level(self, dbfs):
        pass

    def warning(self, code, message):
        self.warnings.append(code)

    def action(self, mode, span):
        self.actions.append(span)


def harmful(start: float, end: float, text: str = "fuck") -> HarmfulSpan:
    return HarmfulSpan(start_s=start, end_s=end, text=text, category="profanity", source="lexicon")


def test_an_interim_flag_beeps_at_once_and_its_final_does_not_beep_it_again():
    view = RecordingView()
    client = DesktopClient(DesktopSettings(mode=Mode.BEEP), None, audio=None, view=view)
    client.on_event(InterimEvent(start_s=0.0, end_s=1.5, text="oh fuck", harmful_spans=[harmful(0.5, 0.9)]), 10.0)
    final = SegmentEvent(seq=0, start_s=0.0, end_s=2.0, text="oh fuck this", is_harmful=True, reasons=["lexicon"],
                         confidence=1.0, harmful_prob=1.0, no_speech_prob=0.0, harmful_spans=[harmful(0.5, 0.85)])
    client.on_event(final, 10.0)
    assert [(a.start_s, a.end_s) for a in view.actions] == [(10.5, 10.9)]  # in stream time, once
    assert [line.kind for line in view.lines] == ["interim", "segment"] and client.counters.actions == 1
    assert client._out_queue.qsize() == 1  # one tone queued for the output


# -- the live stream against the edge ------------------------------------------------------------

class Listener:
    def __init__(self):
        self.states: list[LinkState] = []
        self.events: list[tuple[object, float]] = []

    def link(self, state, detail):
        self.states.append(state)

    def event(self, event, offset_s):
        self.events.append((event, offset_s))


def test_the_stream_goes_on_after_the_edge_drains_and_returns_and_every_captured_byte_is_read_once():
    port, first_pool, second_pool = free_port(), FakePool(gated=True), FakePool()
    first = ThreadEdge(port, first_pool, drain_grace_s=0, max_pending_segments=1).start()
    pcm = pcm16(read_wav(DIALOGUE_WAV))
    backlog, listener = Backlog(), Listener()
    stream = LiveStream(StreamConfig(f"ws://127.0.0.1:{port}/ws/audio", "ko", False, backoff=FAST_BACKOFF),
                        backlog, listener)

    def capture_then_restart():
        for at in range(0, len(pcm), 6400):  # the whole recording captured while the edge drains
            backlog.append(pcm[at:at + 6400])
        first.call(first_pool.wait_in_flight, 1)
        first.signal_and_wait(first_pool)
        ThreadEdge(port, second_pool).start()

    async def scenario():
        stop = asyncio.Event()
        running = asyncio.create_task(stream.run(stop))
        threading.Thread(target=capture_then_restart, daemon=True).start()
        while not stream.sessions or stream.current.offset == 0 or stream.current.sent < len(pcm):
            await asyncio.sleep(0.05)  # polling the stream's progress, with the deadline below
        stop.set()
        return await running

    assert asyncio.run(asyncio.wait_for(scenario(), WAIT_S * 4)) is LinkState.STOPPED
    first_session, second_session = stream.sessions[0], stream.sessions[-1]
    assert first_session.close_code == 1012 and LinkState.RECONNECTING in listener.states
    assert second_session.offset == first_session.resume_at()  # goes on exactly where the edge stopped reading
    read_s = sum(s.summary.audio_seconds for s in stream.sessions)  # the protocol's milliseconds
    assert read_s == pytest.approx(len(pcm) / BYTES_PER_S, abs=1e-3 * len(stream.sessions)) and backlog.dropped == 0


def test_a_refused_credential_stops_the_stream_without_retrying():
    port, pool = free_port(), FakePool()
    ThreadEdge(port, pool, auth="required", api_key_hashes=key_line("desktop", KEY)).start()
    listener = Listener()
    stream = LiveStream(StreamConfig(f"ws://127.0.0.1:{port}/ws/audio", "ko", True, token="wrong",
                                     backoff=FAST_BACKOFF), Backlog(), listener)
    assert asyncio.run(asyncio.wait_for(stream.run(asyncio.Event()), WAIT_S)) is LinkState.AUTH_FAILED
    assert listener.states == [LinkState.CONNECTING, LinkState.AUTH_FAILED] and not stream.sessions


def test_only_the_clients_own_faults_end_the_stream_and_an_idle_timeout_is_not_one():
    from moderation.protocol import ErrorCode, ErrorEvent

    def judged(code: int, error: ErrorCode | None) -> LinkState | None:
        log = SessionLog(offset=0, ready=True, close_code=code,
                         error=ErrorEvent(code=error, message="m") if error else None)
        try:
            LiveStream._judge(log, asyncio.Event())
        except Fatal as exc:
            return exc.state
        return None

    assert judged(1008, ErrorCode.IDLE_TIMEOUT) is None  # the capture device was gone: go on
    assert judged(1012, ErrorCode.SERVER_SHUTDOWN) is None and judged(1006, None) is None
    assert judged(1008, ErrorCode.BAD_CONFIG) is LinkState.FAILED and judged(1009, None) is LinkState.FAILED
