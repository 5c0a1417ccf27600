"""The training loop of the classifier: progress a person can follow, and a stop that can be resumed.

Progress: every ``log_every_s`` seconds a line with the epoch, the step, the mean loss since the
last line, the time spent and the time left. Stopping: the first SIGINT (Ctrl-C) or SIGTERM lets
the current step finish, saves a checkpoint and exits with EXIT_STOPPED; ``--resume`` goes on
from it. A checkpoint is also saved every ``checkpoint_every`` steps, so a killed run loses at
most that much. The order of the rows is drawn per epoch from the seed and the RNG states are
saved, so a resumed run trains exactly as an uninterrupted one (on the same machine and threads).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
EXIT_STOPPED = 130
"""Exit code of a run stopped by a signal after saving its checkpoint (as a shell reports Ctrl-C)."""


class Stopped(Exception):
    """The run was asked to stop; its checkpoint holds everything needed to resume it."""


@dataclass
class LoopState:
    """Where a run is: what a checkpoint saves besides the model and optimizer."""

    epoch: int = 1
    step_in_epoch: int = 0
    """Batches of ``epoch`` already trained."""
    steps_done: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    """Mean training loss of each finished epoch."""
    loss_sum: float = 0.0
    rows_seen: int = 0
    """Of the current epoch, for its mean loss."""
    fingerprint: dict = field(default_factory=dict)
    """What the run trains on and with: a checkpoint resumes only the run it came from."""


@dataclass
class Progress:
    """Logs a progress line every ``every_s`` seconds."""

    total_steps: int
    every_s: float
    started_at: float = field(default_factory=time.monotonic)
    first_step: int = 0
    _last_at: float = field(default_factory=time.monotonic)
    _losses: list[float] = field(default_factory=list)

    def step(self, state: LoopState, loss: float, epochs: int) -> None:
        self._losses.append(loss)
        now = time.monotonic()
        if now - self._last_at < self.every_s and state.steps_done < self.total_steps:
            return
        done = state.steps_done - self.first_step
        left_s = (now - self.started_at) / done * (self.total_steps - state.steps_done) if done else 0.0
        logger.info("epoch %d/%d step %d/%d: loss %.4f, %s spent, %s left", state.epoch, epochs, state.steps_done,
                    self.total_steps, sum(self._losses) / len(self._losses), clock(now - self.started_at),
                    clock(left_s))
        self._last_at, self._losses = now, []


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


@contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """While inside: SIGINT and SIGTERM only set a flag (read by the returned function), so the
    loop stops at a step boundary; a second signal stops at once."""
    asked = []

    def handler(signum, _frame) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        logger.warning("stop requested (%s): finishing this step, then saving a checkpoint",
                       signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(asked)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def save_checkpoint(path: Path, model, optimizer, scheduler, state: LoopState) -> None:
    """Everything to go on from here, written atomically (a kill mid-write keeps the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "state": state.__dict__, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()},
               partial)
    os.replace(partial, path)


def load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint: dict) -> LoopState:
    """The state saved at ``path``, loaded into model, optimizer and scheduler; ValueError when it
    belongs to another run (other data or parameters)."""
    saved = torch.load(path, weights_only=False)
    state = LoopState(**saved["state"])
    if state.fingerprint != fingerprint:
        raise ValueError(f"{path} is the checkpoint of another run (trained on {state.fingerprint.get('train')} "
                         f"with {state.fingerprint.get('parameters')}); remove it or drop --resume")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    random.setstate(saved["python_rng"])
    return state


def epoch_order(rows: int, seed: int, epoch: int, batch_size: int) -> list[torch.Tensor]:
    """The batches of one epoch: a permutation drawn from (seed, epoch) alone, so a resumed run
    draws the same ones."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return list(torch.randperm(rows, generator=generator).split(batch_size))
