"""python -m desktop: the desktop client (a window; ``--headless`` for scripts).

    python -m desktop [--headless] [--url ws://HOST:8000/ws/audio] [--language en]
        [--source loopback|microphone] [--device ID] [--output ID]
        [--mode off|beep|duck|bleep] [--duck-db 20] [--duck-target loopback|device|app:NAME]
        [--bleep-delay 2.5] [--bleep-sound tone|mute] [--no-interim] [--duration S] [--list-devices]

Flags override the remembered settings for this run (the window remembers what is changed in
it). The credential comes from ``EDGE_TOKEN`` or ``--token`` and is never written to disk.
Headless, every state change, transcript line, action and warning is a JSON line on stdout, and
the last line is the run's counters. Exit status: 0 stopped, 2 bad settings or no device,
3 the edge refused the credential, 4 another error retrying cannot mend.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from pydantic import ValidationError

from desktop import settings as stored
from desktop.audio import DeviceLost, open_system
from desktop.client import DesktopClient, Line, Span
from desktop.settings import BleepSound, DesktopSettings, Mode, Source
from desktop.stream import LinkState
from desktop.volume import VolumeError

logger = logging.getLogger(__name__)

EXIT_CODES = {LinkState.STOPPED: 0, LinkState.AUTH_FAILED: 3, LinkState.FAILED: 4}
FLAGS = {"url": "url", "language": "language", "source": "source", "device": "device", "output": "output",
         "mode": "mode", "duck_db": "duck_db", "duck_margin": "duck_margin_s", "duck_target": "duck_target",
         "bleep_delay": "bleep_delay_s", "bleep_sound": "bleep_sound", "bleep_pad": "bleep_pad_s"}
"""argparse destination → settings field."""


class JsonLines:
    """The headless view: one JSON object a line on stdout, flushed at once."""

    def __init__(self, out=sys.stdout):
        self.out, self._lock = out, threading.Lock()

    def _print(self, **fields) -> None:
        with self._lock:
            self.out.write(json.dumps(fields, ensure_ascii=False) + "\n")
            self.out.flush()

    def link(self, state: LinkState, detail: str) -> None:
        self._print(type="link", state=state.value, detail=detail)

    def line(self, line: Line) -> None:
        self._print(type="line", **asdict(line))

    def level(self, dbfs: float) -> None:
        pass  # ten a second would drown the rest

    def warning(self, code: str, message: str) -> None:
        self._print(type="warning", code=code, message=message)

    def action(self, mode: Mode, span: Span) -> None:
        self._print(type="action", mode=mode.value, **asdict(span))

    def done(self, summary: dict) -> None:
        self._print(type="summary", **summary)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m desktop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--headless", action="store_true", help="no window: JSON lines on stdout")
    p.add_argument("--settings", type=Path, default=stored.default_path(), help="the remembered settings' file")
    p.add_argument("--token", default=os.environ.get("EDGE_TOKEN"), help="API key or JWT (default: $EDGE_TOKEN)")
    p.add_argument("--url")
    p.add_argument("--language")
    p.add_argument("--no-interim", action="store_true", help="final results only (flags come 2-5 s later)")
    p.add_argument("--source", choices=[s.value for s in Source])
    p.add_argument("--device", help="capture device id or name (default: the system's default output, or microphone)")
    p.add_argument("--output", help="output device id or name for beeps, the delay line and the loopback")
    p.add_argument("--mode", choices=[m.value for m in Mode])
    p.add_argument("--duck-db", type=float)
    p.add_argument("--duck-margin", type=float)
    p.add_argument("--duck-target", help="loopback, device or app:NAME")
    p.add_argument("--bleep-delay", type=float, help="seconds the delay line holds the sound back")
    p.add_argument("--bleep-sound", choices=[s.value for s in BleepSound])
    p.add_argument("--bleep-pad", type=float)
    p.add_argument("--duration", type=float,
                   help="stop after this many seconds (the window: start at once, then quit)")
    p.add_argument("--screenshot", type=Path, help="with --duration, the window saves a screenshot before it stops")
    p.add_argument("--json", action="store_true", help="the window also writes its events as JSON lines on stdout")
    p.add_argument("--list-devices", action="store_true", help="print the audio devices and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def effective_settings(args: argparse.Namespace) -> DesktopSettings:
    """The remembered settings with this run's flags over them; ValidationError if a flag is bad."""
    values = stored.load(args.settings).model_dump()
    values.update({field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None})
    if args.no_interim:
        values["interim"] = False
    return DesktopSettings(**values)


def run_headless(settings: DesktopSettings, token: str | None, duration: float | None) -> int:
    view = JsonLines()
    try:
        client = DesktopClient(settings, token, open_system(), view)
        client.start()
    except (VolumeError, DeviceLost) as exc:
        view.warning("device", str(exc))
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: client.request_stop())
    if not client.wait(duration):
        client.request_stop()
    client.stop()
    view.done(client.summary())
    return EXIT_CODES.get(client.outcome, 4)


def list_devices() -> int:
    try:
        devices = open_system().devices()
    except DeviceLost as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, found in (("output (loopback capture, beeps)", devices.outputs), ("microphone", devices.microphones)):
        print(f"{kind}:")
        for device_id, name in found:
            print(f"  {device_id}\t{name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.list_devices:
        return list_devices()
    try:
        settings = effective_settings(args)
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    if args.headless:
        return run_headless(settings, args.token, args.duration)
    from desktop.window import run_window  # PySide6 only for the window

    return run_window(settings, args.token, args.settings, duration=args.duration, screenshot=args.screenshot,
                      echo=args.json)


if __name__ == "__main__":
    sys.exit(main())
