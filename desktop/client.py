"""The desktop client's engine, the same in the window and headless: a capture thread feeds the
stream (and the delay line), an event-loop thread runs the stream and acts on each harmful span,
an output thread plays beeps and the delayed sound. A ``View`` is told everything, from any of
those threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from desktop.actions import DelayLine, Ducker, beep
from desktop.audio import (
    CAPTURE_RATE,
    CHANNELS,
    OUTPUT_LATENCY_S,
    AudioSystem,
    Capture,
    DeviceLost,
    Output,
    ToEdge,
    level_dbfs,
)
from desktop.settings import BleepSound, DesktopSettings, Mode
from desktop.stream import BYTES_PER_S, Backlog, LinkState, LiveStream, StreamConfig
from desktop.volume import Volume, VolumeError, open_volume
from moderation.protocol import AnyServerEvent, ErrorEvent, InterimEvent, SegmentEvent, SummaryEvent

logger = logging.getLogger(__name__)

DEVICE_RETRY_S = 1.0
"""While the capture device is gone, the client looks for it again this often."""
LEVEL_EVERY_BLOCKS = 5
"""The meter is told every 5th block's level (10 a second)."""
OUTPUT_QUEUE_BLOCKS = 500
"""Blocks (10 s) that may wait for the output device before the oldest are dropped."""
STOP_WAIT_S = 20.0
"""How long ``stop`` waits for the stream's last results."""
CAPTURE_STOP_WAIT_S = 1.0
"""On stop, the stream ends once the capture has handed on its last block, or after this long
if the capture device does not answer."""


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    text: str
    category: str


@dataclass(frozen=True)
class Line:
    """A transcript line the view shows: a final segment, or an interim flag."""

    kind: str
    """``segment`` or ``interim``."""
    start_s: float
    end_s: float
    text: str
    harmful: bool
    spans: list[Span]
    categories: dict[str, float]
    late: bool = False
    unconfirmed: list[Span] = field(default_factory=list)
    at: float = field(default_factory=time.time)
    """When it came (the wall clock): a stream's times restart with each start."""


@dataclass
class Counters:
    segments: int = 0
    harmful_segments: int = 0
    interim_flags: int = 0
    actions: int = 0
    """Beeps played, ducks begun, spans bleeped."""
    late_flags: int = 0
    """Bleep mode: flags that came after their sound had played (the delay is too short)."""
    device_lost: int = 0
    sessions: int = 0


class View(Protocol):
    def link(self, state: LinkState, detail: str) -> None: ...

    def line(self, line: Line) -> None: ...

    def level(self, dbfs: float) -> None: ...

    def warning(self, code: str, message: str) -> None: ...

    def action(self, mode: Mode, span: Span) -> None: ...


def _spans(spans, offset_s: float) -> list[Span]:
    return [Span(offset_s + h.start_s, offset_s + h.end_s, h.text, h.category) for h in spans]


class DesktopClient:
    def __init__(self, settings: DesktopSettings, token: str | None, audio: AudioSystem, view: View,
                 volume_factory=open_volume):
        self.settings, self.token, self.audio, self.view = settings, token, audio, view
        self.volume_factory = volume_factory
        self.counters = Counters()
        self.backlog = Backlog()
        self.outcome: LinkState | None = None
        self._halt = threading.Event()
        """Every thread stops: the stream ended."""
        self._stop_capture = threading.Event()
        """The user stopped: capture no more; the stream sends what was captured, then ``end``."""
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        """Set on the stream's loop: end the session (it binds to that loop when first awaited)."""
        self._threads: list[threading.Thread] = []
        self._output: Output | None = None
        self._out_queue: queue.Queue[np.ndarray | None] = queue.Queue(OUTPUT_QUEUE_BLOCKS)
        self._volume: Volume | None = None
        self.ducker: Ducker | None = None
        self.delay_line: DelayLine | None = None
        self._acted: list[tuple[float, float]] = []
        self.stream: LiveStream | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Open what the mode needs and start streaming; VolumeError or DeviceLost if it cannot
        (what was opened is closed again)."""
        try:
            self._open_actions()
        except (VolumeError, DeviceLost):
            self.stop()
            raise
        self.stream = LiveStream(StreamConfig(self.settings.url, self.settings.language, self.settings.interim,
                                              self.token), self.backlog, _StreamEvents(self))
        self._spawn(self._capture_loop, "capture")
        self._spawn(self._run_stream, "stream")

    def _open_actions(self) -> None:
        mode = self.settings.mode
        if mode is Mode.DUCK:
            self._volume = self.volume_factory(self.settings.duck_target, self.settings.device, self.settings.output)
            self.ducker = Ducker(self._volume, self.settings.duck_db, self.settings.duck_margin_s)
        if mode in (Mode.BEEP, Mode.BLEEP):
            self._output = self.audio.output(self.settings.output)
            self._spawn(self._play_loop, "output")
        if mode is Mode.BLEEP:
            # The output's own latency is part of the delay: the line holds the sound back by the rest.
            self.delay_line = DelayLine(self.settings.bleep_delay_s - OUTPUT_LATENCY_S, CAPTURE_RATE, CHANNELS,
                                        self.settings.bleep_pad_s, self.settings.bleep_sound is BleepSound.MUTE,
                                        self._queue_output)

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=f"desktop-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _run_stream(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.outcome = self._loop.run_until_complete(self.stream.run(self._stop))
        finally:
            self._halt.set()

    def request_stop(self) -> None:
        """From any thread: stop capturing and end the session cleanly once all that was captured
        is sent (its last results still come)."""
        self._stop_capture.set()
        timer = threading.Timer(CAPTURE_STOP_WAIT_S, self._stop_stream)
        timer.daemon = True
        timer.start()

    def _stop_stream(self) -> None:
        """Queued on the stream's loop, so it works before the loop runs too."""
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to stop
            self._loop.call_soon_threadsafe(self._stop.set)

    def wait(self, timeout: float | None = None) -> bool:
        """Until the stream ended (stopped, or failed for good)."""
        return self._halt.wait(timeout)

    def stop(self) -> None:
        """End the session, wait for its last results, set every volume back, close the devices."""
        self.request_stop()
        for thread in self._threads:
            if thread.name == "desktop-stream":
                thread.join(STOP_WAIT_S)
        self._halt.set()
        with contextlib.suppress(queue.Full):  # an output thread that died no longer drains its queue
            self._out_queue.put(None, timeout=1.0)
        for thread in self._threads:
            thread.join(STOP_WAIT_S)
        if self.ducker is not None:
            self._safely(self.ducker.restore)
        if self._volume is not None:
            self._volume.close()
        if self._output is not None:
            self._output.close()
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.close()

    # -- capture and output threads --------------------------------------------------------------

    def _capture_loop(self) -> None:
        to_edge, capture, blocks = ToEdge(), None, 0
        while not self._halt.is_set() and not self._stop_capture.is_set():
            if capture is None:
                capture = self._open_capture()
                continue
            try:
                block = capture.read()
            except DeviceLost as exc:
                self._device_lost(str(exc))
                capture.close()
                capture = None
                continue
            blocks += 1
            if blocks % LEVEL_EVERY_BLOCKS == 0:
                self.view.level(level_dbfs(block))
            self.backlog.append(to_edge.convert(block))
            if self.delay_line is not None:
                self.delay_line.push(block)
        if capture is not None:
            capture.close()
        self._stop_stream()

    def _open_capture(self) -> Capture | None:
        try:
            capture = self.audio.capture(self.settings.source, self.settings.device)
        except DeviceLost as exc:
            self._device_lost(str(exc))
            self._halt.wait(DEVICE_RETRY_S)
            return None
        self.view.warning("capturing", f"capturing {getattr(capture, 'name', self.settings.device or 'default')}")
        return capture

    def _device_lost(self, message: str) -> None:
        self.counters.device_lost += 1
        if self.counters.device_lost == 1 or self.counters.device_lost % 30 == 0:
            self.view.warning("device_lost", message)

    def _queue_output(self, samples: np.ndarray) -> None:
        try:
            self._out_queue.put_nowait(samples)
        except queue.Full:
            logger.warning("the output device is not keeping up: dropping %d frames", len(samples))

    def _play_loop(self) -> None:
        while True:
            samples = self._out_queue.get()
            if samples is None or self._output is None:
                return
            try:
                self._output.play(samples)
            except DeviceLost as exc:
                self.view.warning("output_lost", str(exc))
                return

    # -- acting on results (the stream's event loop) ---------------------------------------------

    def on_event(self, event: AnyServerEvent, offset_s: float) -> None:
        if isinstance(event, SegmentEvent):
            self._segment(event, offset_s)
        elif isinstance(event, InterimEvent):
            spans = _spans(event.harmful_spans, offset_s)
            self.counters.interim_flags += len(spans)
            self.view.line(Line("interim", offset_s + event.start_s, offset_s + event.end_s, event.text, True,
                                spans, {}))
            for span in spans:
                self._act(span)
        elif isinstance(event, ErrorEvent):
            self.view.warning(str(event.code), event.message)
        elif isinstance(event, SummaryEvent):
            self.counters.sessions += 1

    def _segment(self, event: SegmentEvent, offset_s: float) -> None:
        self.counters.segments += 1
        self.counters.harmful_segments += event.is_harmful
        spans = _spans(event.harmful_spans, offset_s)
        self.view.line(Line("segment", offset_s + event.start_s, offset_s + event.end_s, event.text, event.is_harmful,
                            spans, dict(event.categories), bool(event.late),
                            _spans(event.unconfirmed_interim or [], offset_s)))
        for span in spans:
            self._act(span)

    def _act(self, span: Span) -> None:
        """Beep, duck or bleep a span once: a final's span that an interim one already covered is not repeated."""
        seen = any(span.start_s < end and start < span.end_s for start, end in self._acted)
        self._acted = [s for s in self._acted if s[1] > span.end_s - 60] + [(span.start_s, span.end_s)]
        mode = self.settings.mode
        if mode is Mode.BLEEP and self.delay_line is not None:
            if not self.delay_line.add_span(span.start_s, span.end_s, count_late=not seen) and not seen:
                self.counters.late_flags = self.delay_line.late
                self.view.warning("late_flag", f"the flag for {span.text!r} came after its sound had played: "
                                               f"raise the bleep delay ({self.settings.bleep_delay_s} s)")
        if seen:
            return
        self.counters.actions += 1
        self.view.action(mode, span)
        if mode is Mode.BEEP:
            self._queue_output(beep(span.end_s - span.start_s, CAPTURE_RATE, CHANNELS))
        elif mode is Mode.DUCK and self.ducker is not None:
            self._duck(span)

    def _duck(self, span: Span) -> None:
        if not self._safely(lambda: self.ducker.duck(span.end_s - span.start_s)):
            return
        self._loop.call_later(span.end_s - span.start_s + self.settings.duck_margin_s + 0.02, self._restore)

    def _restore(self) -> None:
        try:
            done = self.ducker.restore_due()
        except VolumeError as exc:
            self.view.warning("volume", str(exc))
            return
        if not done:  # extended by a later span: look again when that one is over
            self._loop.call_later(0.05, self._restore)

    def _safely(self, call) -> bool:
        """Run a volume call; a volume gone (the application stopped playing) is a warning, not a crash."""
        try:
            call()
        except VolumeError as exc:
            self.view.warning("volume", str(exc))
            return False
        return True

    def summary(self) -> dict:
        counters = asdict(self.counters)
        # captured audio dropped because the backlog overflowed while the edge was unreachable
        counters["dropped_s"] = round(self.backlog.dropped / BYTES_PER_S, 3)
        counters["captured_s"] = round(self.backlog.total / BYTES_PER_S, 3)
        counters["sessions_read_s"] = [round(s.summary.audio_seconds, 3) if s.summary else None
                                       for s in (self.stream.sessions if self.stream else [])]
        counters["session_offsets_s"] = [round(s.offset_s, 3) for s in (self.stream.sessions if self.stream else [])]
        return counters


class _StreamEvents:
    """The stream's listener: events to the client, link states to the view."""

    def __init__(self, client: DesktopClient):
        self.client = client

    def link(self, state: LinkState, detail: str) -> None:
        self.client.view.link(state, detail)

    def event(self, event: AnyServerEvent, offset_s: float) -> None:
        self.client.on_event(event, offset_s)

