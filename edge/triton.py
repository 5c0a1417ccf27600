"""Shared asyncio gRPC clients to one or more Triton servers.

One client per server per process. A background task tracks which servers have the ensemble
ready; segments go round-robin to those (to any server if none is known ready, so the real
error surfaces). Every call carries a deadline.

The model's default language is read from the ensemble's config (its ``default_language``
parameter, copied there from the whisper export), so the edge never keeps a default of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from edge.protocol import ErrorCode

logger = logging.getLogger(__name__)

HEALTH_CALL_TIMEOUT_S = 2.0
"""Deadline of one readiness probe."""


@dataclass
class Moderation:
    transcript: str
    harmful_prob: float
    no_speech_prob: float


class TritonCallError(Exception):
    """A failed segment call; ``reason`` is the metrics label."""

    def __init__(self, code: ErrorCode, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason = code, reason


class ModerationPool(Protocol):
    """What the edge needs from its inference back end (TritonPool, or a fake in unit tests)."""

    model: str
    """Name of the model segments are sent to."""

    @property
    def servers(self) -> list[str]:
        """Every configured server address."""

    @property
    def default_language(self) -> str | None:
        """The model's language for requests that name none; None until a server reported it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def refresh(self) -> set[str]:
        """Probe the servers now; returns the ready ones."""

    async def moderate(self, audio: np.ndarray, language: str | None) -> Moderation:
        """One segment through the model; raises TritonCallError."""


def ensemble_inputs(audio: np.ndarray, language: str | None) -> list[InferInput]:
    """AUDIO [1, n] and, unless None (server default), LANGUAGE [1, 1]."""
    audio = np.asarray(audio, dtype=np.float32).reshape(1, -1)
    inputs = [InferInput("AUDIO", list(audio.shape), "FP32")]
    inputs[0].set_data_from_numpy(audio)
    if language is not None:
        lang_in = InferInput("LANGUAGE", [1, 1], "BYTES")
        lang_in.set_data_from_numpy(np.array([[language.encode()]], dtype=np.object_))
        inputs.append(lang_in)
    return inputs


def _output(result, name: str) -> np.ndarray:
    values = result.as_numpy(name)
    if values is None or values.size < 1:
        raise TritonCallError(ErrorCode.TRITON_ERROR, "bad_response", f"Triton's response has no {name} output")
    return values.reshape(-1)


def parse_moderation(result) -> Moderation:
    """The ensemble's three outputs of a one-segment response; TritonCallError when one is missing."""
    return Moderation(
        transcript=_output(result, "TRANSCRIPT")[0].decode("utf-8", errors="replace"),
        harmful_prob=float(_output(result, "HARMFUL_PROB")[0]),
        no_speech_prob=float(_output(result, "NO_SPEECH_PROB")[0]),
    )


def _classify(exc: InferenceServerException) -> TritonCallError:
    status = str(exc.status() or "")
    if "DEADLINE_EXCEEDED" in status:
        return TritonCallError(ErrorCode.TRITON_TIMEOUT, "timeout", "Triton did not answer in time")
    if "UNAVAILABLE" in status:
        return TritonCallError(ErrorCode.TRITON_UNAVAILABLE, "unavailable", f"Triton unreachable: {exc.message()}")
    return TritonCallError(ErrorCode.TRITON_ERROR, "server_error", exc.message() or str(exc))


class TritonPool:
    def __init__(self, urls: list[str], model: str, timeout_s: float, health_interval_s: float):
        if not urls:
            raise ValueError("no Triton URL configured")
        self.model, self.timeout_s, self.health_interval_s = model, timeout_s, health_interval_s
        self.urls = urls
        # Created in start(): grpc.aio channels belong to the event loop they are made in.
        self.clients: dict[str, grpcclient.InferenceServerClient] = {}
        self.ready: set[str] = set()
        self._default_language: str | None = None
        self._round_robin = itertools.count()
        self._health_task: asyncio.Task | None = None

    @property
    def servers(self) -> list[str]:
        return list(self.urls)

    @property
    def default_language(self) -> str | None:
        return self._default_language

    async def start(self) -> None:
        self.clients = {url: grpcclient.InferenceServerClient(url) for url in self.urls}
        await self.refresh()
        self._health_task = asyncio.create_task(self._health_loop())

    async def close(self) -> None:
        if self._health_task:
            self._health_task.cancel()
        for client in self.clients.values():
            await client.close()

    async def _probe(self, url: str) -> bool:
        try:
            return bool(await asyncio.wait_for(self.clients[url].is_model_ready(self.model), HEALTH_CALL_TIMEOUT_S))
        except (InferenceServerException, TimeoutError, grpc.RpcError, OSError):
            return False

    async def refresh(self) -> set[str]:
        """Probe every server now; returns (and remembers) the ready ones."""
        results = await asyncio.gather(*(self._probe(url) for url in self.clients))
        self.ready = {url for url, ok in zip(self.clients, results, strict=True) if ok}
        if self.ready and self._default_language is None:
            self._default_language = await self._read_default_language(min(self.ready))
        return self.ready

    async def _read_default_language(self, url: str) -> str | None:
        """The ``default_language`` parameter of the model's config on one server."""
        try:
            config = await asyncio.wait_for(self.clients[url].get_model_config(self.model, as_json=True),
                                            HEALTH_CALL_TIMEOUT_S)
        except (InferenceServerException, TimeoutError, grpc.RpcError, OSError):
            return None
        language = config["config"].get("parameters", {}).get("default_language", {}).get("string_value")
        if language:
            logger.info("model %s on %s transcribes %r when a client names no language", self.model, url, language)
        else:
            logger.warning("model %s on %s has no default_language parameter", self.model, url)
        return language or None

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)  # periodic probe interval
            before = set(self.ready)
            if await self.refresh() != before:
                logger.info("ready Triton servers: %s", sorted(self.ready) or "none")

    def _pick(self) -> str:
        candidates = sorted(self.ready) or list(self.clients)
        return candidates[next(self._round_robin) % len(candidates)]

    async def moderate(self, audio: np.ndarray, language: str | None) -> Moderation:
        """Run one segment through the ensemble; raises TritonCallError."""
        url = self._pick()
        try:
            result = await self.clients[url].infer(self.model, ensemble_inputs(audio, language),
                                                   client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            error = _classify(exc)
            if error.code != ErrorCode.TRITON_ERROR:
                self.ready.discard(url)
            raise error from exc
        return parse_moderation(result)
