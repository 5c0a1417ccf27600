"""The desktop client for real: a PulseAudio daemon of the test's own, ``paplay`` into a null sink
("game") whose monitor the client captures, a second null sink ("speakers") where what the user
hears ends up, recorded with ``parec``; the real edge and tritonserver. Duck, the bleep delay line,
the window under Xvfb, and the faults (the edge restarting, a wrong token, the device gone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import correlate, resample_poly

from edge.auth import key_line, new_api_key
from scripts.cli import REPO_ROOT
from scripts.service.launch import free_port, running_edge
from scripts.speech import (
    KOREAN_SPEECH,
    KOREAN_VOICE,
    KOREAN_WPM,
    PAUSE_S,
    SAMPLE_RATE,
    join_words,
    synthesize,
    write_wav,
)
from tests.integration.desktop_env import PULSE_RATE, Pulse, pulse_daemon, recorded, xvfb

pytestmark = pytest.mark.integration

PROFANE = ["stop camping in the corner you little", "shit",
           "and the rest of the team waits at the bridge for the next round"]
"""The profane utterance; "shit" because espeak-ng's "bitch" is heard as "witch" on some CPUs
(CTranslate2 int8 on AVX2)."""
CLEAN = ["the rest of the team waits at the bridge for the next round to begin"]
GAP_S = 0.08
WAIT_S = 60.0
WORD_TOLERANCE_S = 0.15
"""Whisper's word times against the synthesised word's (the issue's ± 0.15 s)."""
FRAME_S = 0.05
BLEEP_DELAY_S = 4.0
"""The delay line's delay here: above the worst flag lag seen on 2 busy cores (3.3 s; the 2.5 s
default missed a flag once in CI), so these tests judge the delay line, not the flag lag."""


@pytest.fixture(scope="module")
def profane(tmp_path_factory):
    samples, times = join_words(PROFANE, [GAP_S, GAP_S, PAUSE_S])
    return write_wav(tmp_path_factory.mktemp("desktop") / "profane.wav", samples), times[1]


@pytest.fixture(scope="module")
def profane_then_clean(tmp_path_factory):
    """The profane utterance, a pause, a clean one: a duck lands on speech whether an interim
    result or only the final flags the word, and the end of the clean one is heard restored."""
    samples, times = join_words(PROFANE + CLEAN, [GAP_S, GAP_S, PAUSE_S, PAUSE_S])
    return write_wav(tmp_path_factory.mktemp("desktop") / "profane_then_clean.wav", samples), times[1]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    samples, _ = join_words(CLEAN, [PAUSE_S])
    return write_wav(tmp_path_factory.mktemp("desktop") / "clean.wav", samples)


DAEMONS: list[subprocess.Popen] = []


@pytest.fixture
def pulse():
    with pulse_daemon("speakers", "game") as daemon:
        DAEMONS.append(daemon.process)
        yield daemon


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind():
    yield
    for process in STARTED:  # a test that failed midway leaves its client to this
        if process.poll() is None:
            process.terminate()
            process.wait(WAIT_S)
    assert all(p.returncode is not None for p in STARTED + DAEMONS)


STARTED: list[subprocess.Popen] = []
"""Every client process the tests start: none may outlive them."""


class Desktop:
    """``python -m desktop`` as a user runs it, its JSON lines collected as they come."""

    def __init__(self, pulse: Pulse, tmp_path: Path, *args: str, headless: bool = True, env: dict | None = None):
        command = [sys.executable, "-m", "desktop", "--settings", str(tmp_path / "desktop.json"), *args]
        if headless:
            command.insert(3, "--headless")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env={**pulse.env, **(env or {})},
                                        stdout=subprocess.PIPE, stderr=open(tmp_path / "desktop.log", "wb"),
                                        text=True)
        STARTED.append(self.process)
        self.lines: list[dict] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for text in self.process.stdout:
            with self._changed:
                self.lines.append(json.loads(text))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate, timeout: float = WAIT_S) -> dict:
        """The first line for which ``predicate`` holds, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if predicate(line)), None)
                if found is not None:
                    return found
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"the client exited with {self.process.returncode}: {self.lines[-5:]}")
                if not self._changed.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() > deadline:
                    raise TimeoutError(f"no such line within {timeout} s: {self.lines[-5:]}")

    def live(self, after: int = 0) -> dict:
        return self.wait_for(lambda line: line["type"] == "link" and line["state"] == "live"
                             and self.lines.index(line) >= after)

    def stop(self) -> tuple[int, dict | None]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(WAIT_S)
        self._reader.join(10)
        summaries = [line for line in self.lines if line["type"] == "summary"]
        return code, summaries[-1] if summaries else None

    def of(self, kind: str) -> list[dict]:
        return [line for line in self.lines if line["type"] == kind]


def played(pulse: Pulse, wav: Path, sink: str = "game") -> None:
    player = pulse.play(wav, sink)
    if player.wait(WAIT_S) != 0:
        raise RuntimeError(f"paplay failed with {player.returncode}")


def input_at_pulse_rate(wav: Path) -> np.ndarray:
    from scripts.speech import read_wav

    return resample_poly(read_wav(wav), PULSE_RATE, SAMPLE_RATE).astype(np.float32)


def lag_s(signal_: np.ndarray, reference: np.ndarray) -> float:
    """Where ``reference`` starts in ``signal_`` (cross-correlation), in seconds."""
    scores = correlate(signal_, reference, mode="valid", method="fft")
    return int(np.argmax(scores)) / PULSE_RATE


def frames(samples: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    return samples[max(0, round(start_s * PULSE_RATE)):max(0, round(end_s * PULSE_RATE))]


WINDOW = round(0.1 * PULSE_RATE)
SEARCH = round(0.02 * PULSE_RATE)
"""Each 100 ms window is aligned on its own within ± 20 ms: the two sinks' clocks, the output's
buffer and the loopback's latency wander by a few ms."""


def windows(out: np.ndarray, source: np.ndarray, start_s: float, end_s: float, delay_s: float):
    """(window of speech in ``source`` over [start_s, end_s), the stretch of ``out`` ``delay_s``
    later where it is looked for, ± SEARCH)."""
    for at in range(round(start_s * PULSE_RATE), round(end_s * PULSE_RATE) - WINDOW, WINDOW):
        reference = source[at:at + WINDOW]
        if rms(reference) >= 0.02:
            lo = at + round(delay_s * PULSE_RATE) - SEARCH
            yield reference, out[max(0, lo):lo + WINDOW + 2 * SEARCH]


def similarity(out: np.ndarray, heard: np.ndarray, start_s: float, end_s: float, delay_s: float) -> list[float]:
    """Per window of speech in ``heard``: the best correlation coefficient with ``out``."""
    scores = []
    for reference, seg in windows(out, heard, start_s, end_s, delay_s):
        if len(seg) < WINDOW + 2 * SEARCH:
            scores.append(0.0)
            continue
        dots = correlate(seg, reference, mode="valid")
        energy = np.sqrt(np.convolve(np.square(seg, dtype=np.float64), np.ones(WINDOW), mode="valid"))
        scores.append(float(np.max(dots / (energy * np.linalg.norm(reference) + 1e-12))))
    return scores


def unchanged(scores: list[float]) -> bool:
    return bool(scores) and float(np.median(scores)) > 0.95 and np.mean(np.array(scores) > 0.8) > 0.9


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


# -- duck -------------------------------------------------------------------------------------------

def test_duck_lowers_only_what_the_speakers_play_by_the_chosen_db_and_restores_it_exactly(
        edge, pulse, profane_then_clean, tmp_path):
    wav, _ = profane_then_clean
    client = Desktop(pulse, tmp_path, "--url", f"ws://{edge}/ws/audio", "--language", "en", "--device", "game",
                     "--output", "speakers", "--mode", "duck", "--duck-db", "20", "--duck-margin", "0.6")
    client.live()
    control = pulse.pulsectl()
    loopback = next(s for s in control.sink_input_list() if "loopback" in s.proplist.get("media.name", "").lower()
                    or s.owner_module is not None and control.module_info(s.owner_module).name == "module-loopback")
    volumes: list[float] = []
    game_inputs: list[float] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            volumes.append(control.volume_get_all_chans(control.sink_input_info(loopback.index)))
            game_inputs.extend(control.volume_get_all_chans(s) for s in control.sink_input_list()
                               if s.sink == control.get_sink_by_name("game").index)
            sampling.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with pulse.recording("speakers.monitor", tmp_path / "speakers.raw") as speakers_raw, \
            pulse.recording("game.monitor", tmp_path / "game.raw") as game_raw:
        played(pulse, wav)
        client.wait_for(lambda line: line["type"] == "action" and PROFANE[1] in line["text"].lower())
        client.wait_for(lambda line: line["type"] == "line" and line["kind"] == "segment" and "begin" in line["text"])
        time.sleep(1.0)  # the duck's margin runs out: what the restore is measured on, not a race fix
    sampling.set()
    sampler.join(5)
    code, summary = client.stop()
    original, ducked = volumes[0], min(volumes)
    assert ducked == pytest.approx(original * 10 ** (-20 / 60), rel=0.01)  # PulseAudio's cubic volume, read back
    assert volumes[-1] == original and summary["actions"] >= 1 and code == 0
    assert set(game_inputs) == {1.0} and control.get_sink_by_name("game").volume.value_flat == 1.0  # ASR input as is
    speakers, game = recorded(speakers_raw), recorded(game_raw)
    gains = level_changes(speakers, game)
    assert sum(-21 <= g <= -19 for g in gains) >= 3, str(gains)  # measured on the speakers' monitor
    # before the word and at the end of the clean utterance: as played (a window across a speech
    # onset may be off by a few dB, hence the median)
    assert abs(np.median(gains[:8])) < 1 and abs(np.median(gains[-10:])) < 1, str(gains)
    control.close()


def test_the_device_and_application_duck_targets_read_back_what_they_set(pulse, clean):
    from desktop.volume import PulseVolume, VolumeError

    os.environ["PULSE_SERVER"] = pulse.env["PULSE_SERVER"]  # pulsectl in this process reaches the test's daemon
    try:
        device = PulseVolume("device", None, "speakers")
        device.set(device.lowered(device.get(), 12))
        assert device.get() == pytest.approx(10 ** (-12 / 60), rel=0.01)
        assert pulse.pulsectl().get_sink_by_name("speakers").volume.value_flat == pytest.approx(device.get())
        device.set(1.0)
        device.close()
        player = pulse.play(clean, "game")
        app = PulseVolume("app:paplay", None, None)
        deadline = time.monotonic() + 10
        while True:  # until paplay's stream exists, with a deadline
            try:
                app.set(app.lowered(app.get(), 30))
                break
            except VolumeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert app.get() == pytest.approx(10 ** (-30 / 60), rel=0.01)
        app.close()
        player.wait(WAIT_S)
        with pytest.raises(VolumeError, match="into itself"):
            PulseVolume("loopback", "speakers", "speakers")
    finally:
        os.environ.pop("PULSE_SERVER", None)


def level_changes(out: np.ndarray, source: np.ndarray) -> list[float]:
    """dB of ``out`` over ``source`` per window of speech, each window aligned on its own."""
    speech = np.flatnonzero(np.abs(source) > 0.02)
    start, end = speech[0] / PULSE_RATE, speech[-1] / PULSE_RATE
    shift = lag_s(out, frames(source, start, start + 2.0)) - start
    gains = []
    for reference, seg in windows(out, source, start, end, shift):
        best = int(np.argmax(correlate(seg, reference, mode="valid"))) if len(seg) > WINDOW else 0
        gains.append(round(20 * np.log10(max(rms(seg[best:best + WINDOW]), 1e-6) / rms(reference)), 1))
    return gains


# -- beep -------------------------------------------------------------------------------------------

def tone_times(samples: np.ndarray, hz: float = 1000.0) -> np.ndarray:
    """Starts (s) of the 20 ms frames whose energy is mostly at ``hz``."""
    size, starts = round(0.02 * PULSE_RATE), []
    for at in range(0, len(samples) - size, size):
        spectrum = np.abs(np.fft.rfft(samples[at:at + size] * np.hanning(size)))
        band = spectrum[round(hz * size / PULSE_RATE) - 2:round(hz * size / PULSE_RATE) + 3].sum()
        if spectrum.sum() > 1.0 and band > 0.6 * spectrum.sum():
            starts.append(at / PULSE_RATE)
    return np.array(starts)


def test_beep_plays_a_tone_on_the_output_soon_after_the_profane_word(edge, pulse, profane, tmp_path):
    wav, (_, word_end) = profane
    client = Desktop(pulse, tmp_path, "--url", f"ws://{edge}/ws/audio", "--language", "en", "--device", "game",
                     "--output", "speakers", "--mode", "beep")
    client.live()
    with pulse.recording("speakers.monitor", tmp_path / "speakers.raw") as speakers_raw, \
            pulse.recording("game.monitor", tmp_path / "game.raw") as game_raw:
        played(pulse, wav)
        client.wait_for(lambda line: line["type"] == "line" and line["kind"] == "segment" and "bridge" in line["text"])
    code, summary = client.stop()
    speakers, game = recorded(speakers_raw), recorded(game_raw)
    tones = tone_times(speakers)
    assert code == 0 and summary["actions"] == 1 and len(tones) >= 7, tones  # one beep, at least 0.15 s long
    heard_end = lag_s(game, input_at_pulse_rate(wav)) + word_end
    assert 0 < tones[0] - heard_end < BLEEP_DELAY_S  # the flag lag (its worst on busy cores) plus the output's
    assert not tone_times(game).size  # the beep is not in what the client captures


# -- bleep (the delay line) -------------------------------------------------------------------------

def bleeped(pulse: Pulse, edge: str, tmp_path: Path, wav: Path, wait_for: str) -> tuple[np.ndarray, np.ndarray, dict]:
    client = Desktop(pulse, tmp_path, "--url", f"ws://{edge}/ws/audio", "--language", "en", "--device", "game",
                     "--output", "speakers", "--mode", "bleep", "--bleep-delay", str(BLEEP_DELAY_S),
                     "--bleep-sound", "mute")
    client.live()
    with pulse.recording("speakers.monitor", tmp_path / "speakers.raw") as speakers_raw, \
            pulse.recording("game.monitor", tmp_path / "game.raw") as game_raw:
        played(pulse, wav)
        client.wait_for(lambda line: line["type"] == "line" and line["kind"] == "segment" and wait_for in line["text"])
        time.sleep(BLEEP_DELAY_S + 0.5)  # the delay line plays its last seconds out: measured, not a race fix
    code, summary = client.stop()
    assert code == 0, client.lines[-5:]
    return recorded(speakers_raw), recorded(game_raw), summary


def test_bleep_plays_the_input_late_by_the_delay_muted_over_the_profane_word_only(edge, pulse, profane, tmp_path):
    wav, (word_start, word_end) = profane
    speakers, game, summary = bleeped(pulse, edge, tmp_path, wav, "bridge")
    source = input_at_pulse_rate(wav)
    in_game = lag_s(game, source)  # where the file starts in the capture
    delay = lag_s(speakers, frames(game, in_game, in_game + 2.0)) - in_game
    assert delay == pytest.approx(BLEEP_DELAY_S, abs=0.1)
    start, end = in_game + word_start, in_game + word_end
    word_out = frames(speakers, start + delay + WORD_TOLERANCE_S, end + delay - WORD_TOLERANCE_S)
    assert rms(word_out) < 1e-3 < rms(frames(game, start, end)) and summary["late_flags"] == 0
    margin = WORD_TOLERANCE_S + 0.3
    for a, b in ((in_game, start - margin), (end + margin, in_game + len(source) / PULSE_RATE)):
        scores = similarity(speakers, game, a, b, delay)
        assert unchanged(scores), scores  # the rest unchanged


def test_a_clean_recording_passes_the_delay_line_unchanged(edge, pulse, clean, tmp_path):
    speakers, game, summary = bleeped(pulse, edge, tmp_path, clean, "bridge")
    source = input_at_pulse_rate(clean)
    in_game = lag_s(game, source)
    delay = lag_s(speakers, frames(game, in_game, in_game + 2.0)) - in_game
    scores = similarity(speakers, game, in_game, in_game + len(source) / PULSE_RATE, delay)
    assert delay == pytest.approx(BLEEP_DELAY_S, abs=0.1) and unchanged(scores), (delay, scores)
    assert summary["actions"] == 0


# -- faults -----------------------------------------------------------------------------------------

def test_the_client_reconnects_after_the_edge_restarts_and_loses_no_captured_audio(triton, pulse, profane, tmp_path):
    wav, _ = profane
    port = free_port()
    with open(tmp_path / "edge1.log", "wb") as log, running_edge(port, triton, log, drain_grace_s=0):
        client = Desktop(pulse, tmp_path, "--url", f"ws://127.0.0.1:{port}/ws/audio", "--language", "en",
                         "--device", "game", "--mode", "off")
        client.live()
        player = pulse.play(wav, "game")
        time.sleep(2.0)  # mid-utterance: the edge stops with speech open, not a race fix
    # The edge drained (1012 after its summary); the client retries while nothing listens.
    client.wait_for(lambda line: line["type"] == "link" and line["state"] == "reconnecting")
    with open(tmp_path / "edge2.log", "wb") as log, running_edge(port, triton, log):
        client.live(after=len(client.lines) - 1)
        player.wait(WAIT_S)
        client.wait_for(lambda line: line["type"] == "line" and "bridge" in line["text"])
        code, summary = client.stop()
    assert code == 0 and summary["dropped_s"] == 0 and len(summary["sessions_read_s"]) >= 2
    read = sum(summary["sessions_read_s"])
    assert read == pytest.approx(summary["captured_s"], abs=0.05)  # every captured second was read once
    offsets = summary["session_offsets_s"]
    assert offsets[1] == pytest.approx(summary["sessions_read_s"][0], abs=2e-3)  # went on where the edge stopped


def test_a_wrong_token_shows_the_auth_error_and_does_not_retry(triton, pulse, tmp_path):
    port, key = free_port(), new_api_key()
    with open(tmp_path / "edge.log", "wb") as log, \
            running_edge(port, triton, log, auth="required", api_key_hashes=key_line("desktop", key)):
        client = Desktop(pulse, tmp_path, "--url", f"ws://127.0.0.1:{port}/ws/audio", "--device", "game",
                         "--mode", "off", env={"EDGE_TOKEN": "not-the-key"})
        code, _ = client.stop() if client.process.wait(WAIT_S) is not None else (None, None)
    states = [line["state"] for line in client.of("link")]
    assert code == 3 and states == ["connecting", "auth_failed"], client.lines


def test_the_capture_device_disappearing_is_reported_and_the_client_goes_on_when_it_returns(edge, pulse, tmp_path):
    module = pulse.load_null_sink("headset")
    client = Desktop(pulse, tmp_path, "--url", f"ws://{edge}/ws/audio", "--device", "headset", "--mode", "off")
    client.live()
    client.wait_for(lambda line: line["type"] == "warning" and line["code"] == "capturing")
    pulse.unload(module)
    client.wait_for(lambda line: line["type"] == "warning" and line["code"] == "device_lost")
    assert client.process.poll() is None
    pulse.load_null_sink("headset")
    capturing = len(client.of("warning"))
    client.wait_for(lambda line: line["type"] == "warning" and line["code"] == "capturing"
                    and client.lines.index(line) > 0 and len(client.of("warning")) > capturing)
    code, summary = client.stop()
    assert code == 0 and summary["device_lost"] >= 1


# -- the window -------------------------------------------------------------------------------------

def test_the_window_shows_the_live_transcript_with_the_harmful_word_highlighted(edge, pulse, profane, tmp_path):
    # a sentence, not a lone greeting: Whisper may doubt that one is speech (no-speech 0.56 to 0.7+)
    korean = synthesize(KOREAN_SPEECH[0], tmp_path / "ko.wav", voice=KOREAN_VOICE, words_per_minute=KOREAN_WPM)
    wav, _ = profane
    shot = tmp_path / "desktop.png"
    with xvfb() as display:
        driver = subprocess.run(
            [sys.executable, "-m", "tests.integration.desktop_window_driver", "--url", f"ws://{edge}/ws/audio",
             "--korean", str(korean), "--english", str(wav), "--screenshot", str(shot),
             "--settings", str(tmp_path / "desktop.json")],
            cwd=REPO_ROOT, env={**pulse.env, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"},
            capture_output=True, text=True, timeout=240)
    assert driver.returncode == 0, driver.stderr[-3000:]
    report = json.loads(driver.stdout.strip().splitlines()[-1])
    # espeak-ng's Korean is robotic (Whisper base's CER on it is about 0.6): Hangul, not the words
    hangul = [ch for ch in report["transcript"] if "\uac00" <= ch <= "\ud7a3"]
    assert len(hangul) >= 2 and "bridge" in report["transcript"], report["transcript"]
    assert 'class="harmful"' in report["html"] or "#ffd6d6" in report["html"]
    assert shot.stat().st_size > 10_000
    if os.environ.get("DESKTOP_SCREENSHOT"):  # docs/img/desktop.png is made with this set
        Path(os.environ["DESKTOP_SCREENSHOT"]).write_bytes(shot.read_bytes())
