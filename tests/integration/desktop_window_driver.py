"""Drives the desktop client's real window as a person would, for test_desktop.py: start it in
Korean, play a Korean utterance into the captured sink, switch to English, play an English one
with a profane word, save a screenshot, and print what the window shows as one JSON line.
Run under Xvfb with the test's PulseAudio in the environment."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from desktop.audio import open_system
from desktop.settings import DesktopSettings, Mode
from desktop.stream import LinkState
from desktop.window import MainWindow

STEP_TIMEOUT_S = 60.0
POLL_MS = 100


def steps(window: MainWindow, args):
    """Each yield is a condition the next step waits for."""
    window.language.setCurrentText("ko")
    window.start()
    yield lambda: window.state is LinkState.LIVE
    korean = subprocess.Popen(["paplay", "--device=game", str(args.korean)])
    yield lambda: korean.poll() is not None and any(line.kind == "segment" and line.text for line in window.lines)
    window.stop()
    window.language.setCurrentText("en")
    window.start()
    yield lambda: window.state is LinkState.LIVE
    english = subprocess.Popen(["paplay", "--device=game", str(args.english)])
    yield lambda: english.poll() is not None and any(line.harmful for line in window.lines) and any(
        "bridge" in line.text for line in window.lines if line.kind == "segment")


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("--url", "--korean", "--english", "--screenshot", "--settings"):
        p.add_argument(name, required=True)
    args = p.parse_args()
    app = QApplication(sys.argv[:1])
    settings = DesktopSettings(url=args.url, device="game", output="speakers", mode=Mode.BEEP)
    window = MainWindow(settings, None, Path(args.settings), open_system)
    window.show()
    plan, outcome = steps(window, args), {"code": 1}
    state = {"condition": next(plan), "since": time.monotonic()}

    def tick() -> None:
        if state["condition"]():
            try:
                state["condition"], state["since"] = next(plan), time.monotonic()
            except StopIteration:
                window.grab().save(args.screenshot)
                window.stop()
                print(json.dumps({"transcript": window.transcript.toPlainText(), "html": window.transcript.toHtml()},
                                 ensure_ascii=False), flush=True)
                outcome["code"] = 0
                app.quit()
        elif time.monotonic() - state["since"] > STEP_TIMEOUT_S:
            print(f"a step timed out: {window.transcript.toPlainText()!r}", file=sys.stderr)
            window.stop()
            app.quit()

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(POLL_MS)
    app.exec()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
