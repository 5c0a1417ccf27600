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

from scripts.train import EXIT_BAD_INPUT

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
EXIT_STOPPED = 130
"""Exit code of a run stopped by a signal after saving its checkpoint (as a shell reports Ctrl-C)."""
DEFAULT_CHECKPOINT_EVERY = 200
"""Steps between two checkpoints (a few minutes of CPU training at the defaults)."""
DEFAULT_LOG_EVERY_S = 30.0
WARMUP_RATIO = 0.1
"""Share of the optimizer steps over which the rate climbs from 0: the first updates, driven by
a freshly initialised head, must not wreck the encoder."""
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
"""Gradient clipping; keeps a single odd batch from throwing the weights far."""


class Stopped(Exception):
    """The run was asked to stop; its checkpoint holds everything needed to resume it."""


def run_tool(run: Callable[[], dict], summarise: Callable[[dict], None]) -> int:
    """A training tool's exit code: ``run`` it, then ``summarise`` its report (0); bad data or
    arguments (ValueError, DatasetError among them) EXIT_BAD_INPUT; a requested stop EXIT_STOPPED."""
    try:
        report = run()
    except ValueError as exc:
        logger.error("%s", exc)
        return EXIT_BAD_INPUT
    except Stopped as exc:
        logger.warning("%s; run again with --resume to go on", exc)
        return EXIT_STOPPED
    summarise(report)
    return 0


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


BUCKET_BATCHES = 50
"""Batches whose rows are drawn together and sorted by length before they are cut: each batch
then pads to about its own rows' length (comments run from 2 to 300 characters), which makes an
epoch about twice as fast on a CPU, while the batches themselves still come in random order."""


def epoch_order(rows: int, seed: int, epoch: int, batch_size: int,
                lengths: list[int] | None = None) -> list[torch.Tensor]:
    """The batches of one epoch, drawn from (seed, epoch) alone, so a resumed run draws the same
    ones. With ``lengths``, rows of similar length share a batch (see BUCKET_BATCHES)."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(rows, generator=generator)
    if lengths is None:
        return list(order.split(batch_size))
    batches: list[torch.Tensor] = []
    for chunk in order.split(batch_size * BUCKET_BATCHES):
        by_length = torch.argsort(torch.tensor([lengths[i] for i in chunk.tolist()]), stable=True)
        batches += list(chunk[by_length].split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@dataclass(frozen=True)
class TrainingParams:
    """What shaped a training run, recorded with its metrics and in its checkpoint's fingerprint."""

    epochs: int
    batch_size: int
    lr: float
    max_length: int
    seed: int
    warmup_ratio: float = WARMUP_RATIO
    weight_decay: float = WEIGHT_DECAY
    max_grad_norm: float = MAX_GRAD_NORM


@dataclass(frozen=True)
class RunOptions:
    """How the loop reports and keeps its work (not what it learns)."""

    checkpoint: Path
    resume: bool = False
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    log_every_s: float = DEFAULT_LOG_EVERY_S


def make_optimizer(model, params: TrainingParams, total_steps: int):
    """AdamW without decay on biases and LayerNorms (as BERT/ELECTRA were trained), and a linear
    warm-up then linear decay to 0 over ``total_steps``."""
    from transformers import get_linear_schedule_with_warmup

    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": params.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=params.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(params.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


@dataclass
class Trainer:
    """One training run over ``lengths`` rows: the model, its optimizer, and where the loop is.
    ``loss_of`` gives the loss of a batch of row indices; the rest (order, clipping, schedule,
    progress, checkpoints, stop and resume) is the same for every tool."""

    model: torch.nn.Module
    loss_of: Callable[[list[int]], torch.Tensor]
    lengths: list[int]
    params: TrainingParams
    options: RunOptions
    state: LoopState

    def __post_init__(self) -> None:
        self.total_steps = self.params.epochs * -(-len(self.lengths) // self.params.batch_size)
        self.optimizer, self.scheduler = make_optimizer(self.model, self.params, self.total_steps)
        if self.options.resume and self.options.checkpoint.is_file():
            self.state = load_checkpoint(self.options.checkpoint, self.model, self.optimizer, self.scheduler,
                                         self.state.fingerprint)
            logger.info("resuming from %s: epoch %d, step %d of %d", self.options.checkpoint, self.state.epoch,
                        self.state.steps_done, self.total_steps)
        self.progress = Progress(self.total_steps, self.options.log_every_s, first_step=self.state.steps_done)

    def run(self) -> list[float]:
        """Train to the last epoch; the mean training loss of each. Stopped (after saving a
        checkpoint) when a stop was requested."""
        with stop_requests() as stop_requested:
            while self.state.epoch <= self.params.epochs:
                self.model.train()
                batches = epoch_order(len(self.lengths), self.params.seed, self.state.epoch,
                                      self.params.batch_size, self.lengths)
                for indices in batches[self.state.step_in_epoch:]:
                    self.step(indices.tolist())
                    self.keep(stop_requested())
                self.end_epoch()
        return self.state.epoch_losses

    def step(self, indices: list[int]) -> None:
        loss = self.loss_of(indices)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.params.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        state = self.state
        state.step_in_epoch, state.steps_done = state.step_in_epoch + 1, state.steps_done + 1
        state.loss_sum, state.rows_seen = state.loss_sum + loss.item() * len(indices), state.rows_seen + len(indices)
        self.progress.step(state, loss.item(), self.params.epochs)

    def keep(self, stop: bool) -> None:
        """Save a checkpoint when one is due or a stop was requested; then stop if asked to."""
        if stop or self.state.steps_done % self.options.checkpoint_every == 0:
            save_checkpoint(self.options.checkpoint, self.model, self.optimizer, self.scheduler, self.state)
        if stop:
            raise Stopped(f"stopped at step {self.state.steps_done} of {self.total_steps}; "
                          f"checkpoint {self.options.checkpoint}")

    def end_epoch(self) -> None:
        state = self.state
        state.epoch_losses.append(state.loss_sum / state.rows_seen if state.rows_seen else 0.0)
        logger.info("epoch %d/%d: mean training loss %.4f", state.epoch, self.params.epochs, state.epoch_losses[-1])
        state.epoch, state.step_in_epoch, state.loss_sum, state.rows_seen = state.epoch + 1, 0, 0.0, 0
