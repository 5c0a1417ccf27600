"""A private sound server and display for the desktop client's tests: a real PulseAudio daemon
(user mode, its own runtime folder, no D-Bus) with null sinks, recordings of a sink's monitor
with ``parec``, playback with ``paplay``, and an Xvfb display. Every process is the test's own
child and is gone when its context ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PULSE_RATE = 48000
START_TIMEOUT_S = 20.0


@dataclass
class Pulse:
    env: dict[str, str]
    """The environment that reaches this daemon (XDG_RUNTIME_DIR, HOME, PULSE_SERVER)."""
    process: subprocess.Popen

    def run(self, *args: str, timeout: float = 20) -> str:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=True).stdout

    def load_null_sink(self, name: str) -> int:
        return int(self.run("pactl", "load-module", "module-null-sink", f"sink_name={name}",
                            f"sink_properties=device.description={name}", f"rate={PULSE_RATE}").strip())

    def unload(self, module: int) -> None:
        self.run("pactl", "unload-module", str(module))

    def play(self, wav: Path, sink: str) -> subprocess.Popen:
        return subprocess.Popen(["paplay", f"--device={sink}", str(wav)], env=self.env)

    @contextlib.contextmanager
    def recording(self, source: str, path: Path) -> Iterator[Path]:
        """Record ``source`` (48 kHz mono float32) to ``path`` while the block runs."""
        with open(path, "wb") as out:
            parec = subprocess.Popen(["parec", f"--device={source}", "--format=float32le", f"--rate={PULSE_RATE}",
                                      "--channels=1", "--raw", "--latency-msec=20"], env=self.env, stdout=out)
            try:
                yield path
            finally:
                parec.terminate()
                parec.wait(10)

    def pulsectl(self):
        import pulsectl

        return pulsectl.Pulse("desktop-test", server=self.env["PULSE_SERVER"])


def recorded(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<f4")


@contextlib.contextmanager
def pulse_daemon(*sinks: str) -> Iterator[Pulse]:
    """PulseAudio with a null sink per name (the first is the default), and only those."""
    if shutil.which("pulseaudio") is None:
        raise RuntimeError("pulseaudio is missing: make system-deps installs it")
    with tempfile.TemporaryDirectory() as root:
        runtime, home = Path(root) / "runtime", Path(root) / "home"
        runtime.mkdir(mode=0o700)
        home.mkdir(mode=0o700)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(home),
               "PULSE_SERVER": f"unix:{runtime}/pulse/native"}
        env.pop("DISPLAY", None)
        args = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--use-pid-file=no",
                "--log-target=stderr", "--log-level=error", "--load=module-native-protocol-unix"]
        args += [f"--load=module-null-sink sink_name={name} sink_properties=device.description={name} "
                 f"rate={PULSE_RATE}" for name in sinks]
        process = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
        pulse = Pulse(env, process)
        try:
            _wait_for_server(pulse)
            if sinks:
                pulse.run("pactl", "set-default-sink", sinks[0])
            yield pulse
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _wait_for_server(pulse: Pulse) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:  # polling the daemon's startup, with a deadline
        if pulse.process.poll() is not None:
            raise RuntimeError(f"pulseaudio exited with {pulse.process.returncode}")
        done = subprocess.run(["pactl", "info"], env=pulse.env, capture_output=True, timeout=10)
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError("pulseaudio did not start")


@contextlib.contextmanager
def xvfb() -> Iterator[str]:
    """An X display (Xvfb) for the window; yields its DISPLAY."""
    if shutil.which("Xvfb") is None:
        raise RuntimeError("Xvfb is missing: make system-deps installs it")
    read, write = os.pipe()
    process = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
                               pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with os.fdopen(read) as displayfd:
            number = displayfd.readline().strip()  # Xvfb writes its display number once it is ready
        if not number:
            raise RuntimeError("Xvfb did not start")
        yield f":{number}"
    finally:
        process.terminate()
        process.wait(10)
