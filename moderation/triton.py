"""Shared asyncio gRPC clients to Triton replicas.

One client per replica per process; the replicas are what the configured addresses resolve to
(moderation/discovery.py), followed as they come and go. A background task tracks which have the
ensemble ready; a segment goes to the ready replica with the fewest calls of this edge in flight
(to any replica if none is known ready, so the real error surfaces). Every call carries a
deadline. A call whose replica cannot be reached, or dies under it, is retried once on another
ready replica within the segment's deadline: the client gets one result, or one typed error.

A server that is not ready gets a fresh client (gRPC channel) for its next probe: a channel that
failed to connect waits ever longer (gRPC's reconnect backoff, up to minutes) before it tries
again, which would keep a restarted Triton out of use long after it is back. The replaced client
is closed once calls still running on it have reached their deadline.

What the model is (its default language, and which harmful-speech signals it runs) is read
from the ensemble's config parameters, rendered there at export, so the edge never keeps a
second copy that could disagree.

No call is ever cancelled mid-flight: tritonserver 2.51 can crash (SIGSEGV) on a gRPC
cancellation racing its response, and computes a cancelled request anyway. A caller that is
cancelled (a client gone, a job that failed) stops waiting; its call runs on to its end or its
deadline, held by the pool (``InFlightCalls``), and ``close`` waits for such calls before it
closes the channels (closing a channel cancels its calls).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from pydantic import TypeAdapter, ValidationError
from tritonclient.grpc import InferInput
from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from moderation.discovery import Discovery, Resolver, Target, system_resolver
from moderation.events import Signal, TritonErrorCode
from moderation.settings import ModerationSettings
from moderation.verdict import MATCHES, WORDS, LongForm, ModelFacts, Moderation

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Priority(IntEnum):
    """Triton request priority (1 is served first); the model configs declare three levels, and a
    request that names none gets the last."""

    REALTIME = 1
    """Final results of real-time sessions."""
    INTERIM = 2
    """Interim results of real-time sessions (edge/interim.py): optional work, after finals."""
    BULK = 3
    """Sessions ahead of real time, and batch jobs."""


MAX_RETIRED_CLIENTS = 8
"""Replaced clients of lost servers kept open (see TritonPool._reconnect); older ones are closed."""
MIN_REFRESH_INTERVAL_S = 0.25
"""Readiness requests closer together than this share one probe round."""
HEALTH_CALL_TIMEOUT_S = 2.0
"""Deadline of one readiness probe."""
CANCEL_MARGIN_S = 5.0
"""The gRPC deadline of a call is its Triton request timeout plus this: a request still queued at
its deadline is rejected by Triton itself, before gRPC would cancel the call (tritonserver 2.51
can crash on a cancellation; docs/OPERATIONS.md)."""


def longest_call_s(timeout_s: float) -> float:
    """How long a call with Triton deadline ``timeout_s`` can last at most: its gRPC deadline."""
    return timeout_s + CANCEL_MARGIN_S


MIN_RETRY_BUDGET_S = 0.5
"""A failed call is retried on another replica only if at least this much of its deadline is left."""
RETRY_REASONS = ("unavailable",)
"""Failures retried on another replica: the replica was unreachable or died during the call. A
timeout is not retried (its deadline is spent), nor an error the model itself returned."""


@dataclass(frozen=True)
class ReplicaState:
    """One replica as the pool sees it (for metrics and /readyz)."""

    address: str
    ready: bool
    in_flight: int
    calls: int
    """Calls this edge has sent the replica so far."""


def new_client(url: str) -> grpcclient.InferenceServerClient:
    """A client with tritonclient's default channel options and its own subchannel pool: by
    default gRPC shares subchannels (and their reconnect backoff) between channels to the same
    address, which would make a fresh client inherit the old one's backoff."""
    keepalive = KeepAliveOptions()
    return grpcclient.InferenceServerClient(url, channel_args=[
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.use_local_subchannel_pool", 1),
    ])


class InFlightCalls:
    """Calls that run to their end even when their caller is cancelled (see the module's
    docstring): each runs as a task of its own, referenced here until it finishes."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    async def run(self, call: Coroutine[Any, Any, T]) -> T:
        """``call``'s result; a cancelled caller stops waiting, the call goes on."""
        task = asyncio.ensure_future(call)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # an abandoned call's error has no reader: retrieved, not logged as lost

    async def wait(self, timeout_s: float) -> None:
        """Until every call has ended, or ``timeout_s`` (at most one call's gRPC deadline) passed."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


class TritonCallError(Exception):
    """A failed segment call; ``reason`` is the metrics label."""

    def __init__(self, code: TritonErrorCode, reason: str, message: str):
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
    def facts(self) -> ModelFacts:
        """The model's default language and signals; empty until a server reported them."""

    retries: Counter
    """Segments retried on another replica, by the reason their first call failed."""

    def replicas(self) -> list[ReplicaState]:
        """Every known replica, its readiness and this edge's calls in it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def wait_ready(self, timeout_s: float) -> bool:
        """Whether a server is ready, waiting up to ``timeout_s`` for one (probed every health interval)."""
        ...

    async def refresh(self) -> set[str]:
        """Probe the servers now; returns the ready ones."""

    async def moderate(self, audio: np.ndarray, language: str | None, word_timestamps: bool = False,
                       priority: Priority = Priority.REALTIME, fit: bool = False) -> Moderation:
        """One segment through the model; raises TritonCallError. ``fit``: Whisper encodes just the
        clip, not its 30 s window (cheaper, a little less accurate: interim calls). Cancelling the
        caller never cancels the call itself (tritonserver 2.51 can crash on it): it runs on, its
        result dropped."""

    async def moderate_texts(self, texts: list[str], priority: Priority = Priority.REALTIME) -> list[Moderation]:
        """Texts through the model's classifier and lexicon (no Whisper): one Moderation per text,
        its ``transcript`` the text; raises TritonCallError, and never cancels either."""

    async def transcribe_window(self, audio: np.ndarray, language: str | None, prompt: str = "",
                                word_timestamps: bool = False, priority: Priority = Priority.BULK) -> LongForm:
        """A recording's window (≤ 30 s) through the whisper model alone, long-form (only when
        ``facts.long_form``): Whisper's segments with their times; raises TritonCallError, never
        cancels."""


def ensemble_inputs(audio: np.ndarray, language: str | None, word_timestamps: bool = False,
                    fit: bool = False, long_form: bool = False, prompt: str = "") -> list[InferInput]:
    """AUDIO [1, n]; LANGUAGE [1, 1] unless None (the model's default applies), sent as given:
    a Whisper code, or "auto" to have the model detect it (callers validate which they allow);
    WORD_TIMESTAMPS [1, 1] only when asked for (the model's alignment pass is skipped otherwise);
    ENCODER_FIT [1, 1] only when asked for (Whisper's 30 s window otherwise); LONG_FORM [1, 1] and
    PROMPT [1, 1] (the whisper model's own inputs) likewise."""
    audio = np.asarray(audio, dtype=np.float32).reshape(1, -1)
    inputs = [InferInput("AUDIO", list(audio.shape), "FP32")]
    inputs[0].set_data_from_numpy(audio)
    if language is not None:
        lang_in = InferInput("LANGUAGE", [1, 1], "BYTES")
        lang_in.set_data_from_numpy(np.array([[language.encode()]], dtype=np.object_))
        inputs.append(lang_in)
    for name, wanted in (("WORD_TIMESTAMPS", word_timestamps), ("ENCODER_FIT", fit), ("LONG_FORM", long_form)):
        if wanted:
            flag = InferInput(name, [1, 1], "BOOL")
            flag.set_data_from_numpy(np.array([[True]]))
            inputs.append(flag)
    if prompt:
        prompt_in = InferInput("PROMPT", [1, 1], "BYTES")
        prompt_in.set_data_from_numpy(np.array([[prompt.encode("utf-8")]], dtype=np.object_))
        inputs.append(prompt_in)
    return inputs


def text_inputs(texts: list[str]) -> list[InferInput]:
    """TEXT [n, 1] of a text model (the classifier, the lexicon): one batched request."""
    text_in = InferInput("TEXT", [len(texts), 1], "BYTES")
    text_in.set_data_from_numpy(np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_))
    return [text_in]


def _output(result, name: str) -> np.ndarray:
    values = result.as_numpy(name)
    if values is None or values.size < 1:
        raise TritonCallError(TritonErrorCode.TRITON_ERROR, "bad_response", f"Triton's response has no {name} output")
    return values.reshape(-1)


def _parse_json(raw: bytes, name: str, adapter: TypeAdapter) -> list:
    """One element of a JSON output; TritonCallError when it is malformed."""
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        raise TritonCallError(TritonErrorCode.TRITON_ERROR, "bad_response",
                              f"Triton's {name} output is malformed: {exc}") from exc


def _json_output(result, name: str, adapter: TypeAdapter) -> list:
    """A JSON list output; [] when the model has no such output (no lexicon, no word times)."""
    values = result.as_numpy(name)
    if values is None or values.size < 1:
        return []
    return _parse_json(values.reshape(-1)[0], name, adapter)


def _optional_text(result, name: str) -> str | None:
    """A string output that older exports lack: None when the response has no such output."""
    values = result.as_numpy(name)
    if values is None or values.size < 1:
        return None
    return values.reshape(-1)[0].decode("utf-8", errors="replace") or None


def _optional_floats(result, name: str) -> list[float]:
    """A float vector output that only some exports have: [] when the response has none."""
    values = result.as_numpy(name)
    return [] if values is None else [float(v) for v in values.reshape(-1)]


def _rows(result, name: str, count: int, optional: bool = False) -> np.ndarray | None:
    """An output with one row per text (None when ``optional`` and absent); TritonCallError when
    it is missing or has another number of rows."""
    values = result.as_numpy(name)
    if values is None and optional:
        return None
    if values is None or len(values) != count:
        raise TritonCallError(TritonErrorCode.TRITON_ERROR, "bad_response",
                              f"Triton's response has no {name} output of {count} rows")
    return values


def parse_texts(texts: list[str], classifier, lexicon) -> list[Moderation]:
    """One Moderation per text from the classifier's response and the lexicon's (None: no lexicon)."""
    harmful = _rows(classifier, "HARMFUL_PROB", len(texts)).reshape(len(texts), -1)[:, 0]
    categories = _rows(classifier, "CATEGORY_PROBS", len(texts), optional=True)
    matches: list[list] = [[] for _ in texts]
    if lexicon is not None:
        matches = [_parse_json(row.reshape(-1)[0], "MATCHES", MATCHES) for row in _rows(lexicon, "MATCHES", len(texts))]
    return [Moderation(transcript=text, harmful_prob=float(harmful[i]), no_speech_prob=0.0, matches=matches[i],
                       category_probs=[] if categories is None else [float(p) for p in categories[i]])
            for i, text in enumerate(texts)]


def parse_moderation(result) -> Moderation:
    """A one-segment response of the ensemble; TritonCallError when a required output is missing."""
    return Moderation(
        transcript=_output(result, "TRANSCRIPT")[0].decode("utf-8", errors="replace"),
        harmful_prob=float(_output(result, "HARMFUL_PROB")[0]),
        no_speech_prob=float(_output(result, "NO_SPEECH_PROB")[0]),
        words=_json_output(result, "WORDS", WORDS),
        matches=_json_output(result, "MATCHES", MATCHES),
        language=_optional_text(result, "LANGUAGE_CODE"),
        category_probs=_optional_floats(result, "CATEGORY_PROBS"),
    )


LONG_FORM = TypeAdapter(LongForm)


def parse_window(result) -> LongForm:
    """A long-form response of the whisper model; TritonCallError when SEGMENTS is missing or malformed."""
    raw = _output(result, "SEGMENTS")[0]
    if not raw:
        raise TritonCallError(TritonErrorCode.TRITON_ERROR, "bad_response",
                              "Triton's SEGMENTS output is empty: the whisper model did not decode long-form")
    window = _parse_json(raw, "SEGMENTS", LONG_FORM)
    return window.model_copy(update={"no_speech_prob": float(_output(result, "NO_SPEECH_PROB")[0]),
                                     "language": _optional_text(result, "LANGUAGE_CODE")})


def facts_from_parameters(parameters: dict) -> ModelFacts:
    """ModelFacts from a model config's ``parameters`` (as tritonclient's JSON gives them)."""
    def value(key: str) -> str:
        return parameters.get(key, {}).get("string_value", "")

    signals: list[Signal] = []
    if value("lexicon"):
        signals.append("lexicon")
    if value("classifier_trained") == "true":
        signals.append("classifier")
    return ModelFacts(default_language=value("default_language") or None, signals=tuple(signals),
                      classifier_model=value("classifier") or None, lexicon_model=value("lexicon") or None,
                      whisper_model=value("whisper") or None, long_form=value("whisper_long_form") == "true",
                      classifier_threshold=_threshold(value("classifier_threshold")),
                      categories=tuple(name for name in value("classifier_categories").split(",") if name))


def _threshold(text: str) -> float | None:
    """A published threshold; None when empty (not calibrated) or not a probability (logged)."""
    if not text:
        return None
    try:
        threshold = float(text)
    except ValueError:
        threshold = -1.0
    if not 0.0 <= threshold <= 1.0:
        logger.warning("ignoring the ensemble's classifier_threshold %r: not a probability", text)
        return None
    return threshold


QUEUE_TIMEOUT_MESSAGE = "Request timeout expired"
"""Triton's answer (status UNAVAILABLE) to a request still queued at its timeout: the server is fine."""


def _classify(exc: InferenceServerException) -> TritonCallError:
    status = str(exc.status() or "")
    if QUEUE_TIMEOUT_MESSAGE in (exc.message() or ""):
        return TritonCallError(TritonErrorCode.TRITON_TIMEOUT, "expired_in_queue",
                               "Triton was too busy to start the segment within its deadline")
    if "DEADLINE_EXCEEDED" in status:
        return TritonCallError(TritonErrorCode.TRITON_TIMEOUT, "timeout", "Triton did not answer in time")
    if "UNAVAILABLE" in status:
        return TritonCallError(TritonErrorCode.TRITON_UNAVAILABLE, "unavailable",
                               f"Triton unreachable: {exc.message()}")
    return TritonCallError(TritonErrorCode.TRITON_ERROR, "server_error", exc.message() or str(exc))


class TritonPool:
    def __init__(self, urls: list[str], model: str, timeout_s: float, health_interval_s: float,
                 discovery_interval_s: float = 10.0, resolver: Resolver = system_resolver):
        self.discovery = Discovery([Target.parse(url) for url in urls], resolver)
        self.model, self.timeout_s, self.health_interval_s = model, timeout_s, health_interval_s
        self.discovery_interval_s = discovery_interval_s
        # Created in start(): grpc.aio channels belong to the event loop they are made in.
        self.clients: dict[str, grpcclient.InferenceServerClient] = {}
        self.ready: set[str] = set()
        self.in_flight: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = self._discovered_at = float("-inf")
        self._facts: ModelFacts | None = None
        self._round_robin = itertools.count()
        self._health_task: asyncio.Task | None = None
        self._retired: list[grpcclient.InferenceServerClient] = []
        """Replaced clients of lost or vanished replicas, oldest first (see _retire)."""
        self._running = InFlightCalls()
        """Every call this pool has started and that has not ended, its caller gone or not."""
        self._any_ready = asyncio.Event()
        """Set while ``ready`` holds a server (see _set_ready): what wait_ready waits for."""

    @property
    def servers(self) -> list[str]:
        return sorted(self.clients)

    @property
    def facts(self) -> ModelFacts:
        return self._facts or ModelFacts()

    def replicas(self) -> list[ReplicaState]:
        return [ReplicaState(url, url in self.ready, self.in_flight[url], self.calls[url])
                for url in sorted(self.clients)]

    async def start(self) -> None:
        await self.discover()
        await self.refresh()
        self._health_task = asyncio.create_task(self._health_loop())

    async def close(self) -> None:
        """Stop probing; once the calls still running have ended (by their deadline at the latest:
        closing a channel would cancel them), close every channel."""
        if self._health_task:
            self._health_task.cancel()
        await self._running.wait(longest_call_s(self.timeout_s))
        for client in [*self.clients.values(), *self._retired]:
            await client.close()
        self._retired.clear()

    async def discover(self) -> None:
        """Resolve the configured addresses again: clients for new replicas, vanished ones retired."""
        self._discovered_at = asyncio.get_running_loop().time()
        found = await self.discovery.replicas()
        for url in sorted(found - set(self.clients)):
            self.clients[url] = new_client(url)
            logger.info("Triton replica %s added", url)
        for url in sorted(set(self.clients) - found):
            self._retire(self.clients.pop(url))
            self._set_ready(self.ready - {url})
            logger.info("Triton replica %s no longer resolves: dropped", url)

    def _retire(self, client: grpcclient.InferenceServerClient) -> None:
        """Keep a replaced client open (closing a channel cancels its calls, and tritonserver 2.51
        can crash on a cancellation), up to MAX_RETIRED_CLIENTS; see _close_retired."""
        self._retired.append(client)

    def _reconnect(self, url: str) -> None:
        """Give ``url`` a fresh client, so that the next probe connects at once instead of after
        the old channel's reconnect backoff."""
        self._retire(self.clients[url])
        self.clients[url] = new_client(url)

    async def _close_retired(self) -> None:
        """Close the oldest retired clients beyond MAX_RETIRED_CLIENTS (long past any call's deadline)."""
        while len(self._retired) > MAX_RETIRED_CLIENTS:
            await self._retired.pop(0).close()

    async def _probe(self, url: str) -> tuple[bool, bool]:
        """(ready, unreachable): only a server that cannot be reached gets a new channel; a slow
        answer under load or a model not ready yet keeps the channel and its calls."""
        client = self.clients.get(url)
        if client is None:  # dropped by discovery meanwhile
            return False, False
        try:
            ready = await asyncio.wait_for(client.is_model_ready(self.model), HEALTH_CALL_TIMEOUT_S)
            return bool(ready), False
        except InferenceServerException as exc:
            return False, "UNAVAILABLE" in str(exc.status() or "")
        except (TimeoutError, grpc.RpcError, OSError):
            return False, False

    async def refresh(self) -> set[str]:
        """Probe every server now; returns (and remembers) the ready ones. One probe at a time, and
        none within MIN_REFRESH_INTERVAL_S of the last (readiness requests must not multiply
        probes, nor the channels a probe of a lost server recreates)."""
        async with self._refresh_lock:
            loop = asyncio.get_running_loop()
            if loop.time() - self._refreshed_at >= MIN_REFRESH_INTERVAL_S:
                await self._probe_all()
                self._refreshed_at = loop.time()
            return self.ready

    async def _probe_all(self) -> None:
        urls = list(self.clients)  # discovery may change the replicas while the probes run
        results = dict(zip(urls, await asyncio.gather(*(self._probe(url) for url in urls)), strict=True))
        ready = {url for url, (ok, _) in results.items() if ok and url in self.clients}
        for url in [url for url, (_, unreachable) in results.items() if unreachable and url in self.clients]:
            self._reconnect(url)
        await self._close_retired()
        # Re-read on a change of ready servers (a restarted Triton may serve another export),
        # and until a read succeeds; not on every tick.
        if ready and (ready != self.ready or self._facts is None):
            facts = await self._read_facts(min(ready))
            if facts is not None and facts != self._facts:
                self._log_facts(facts, min(ready))
            self._facts = facts or self._facts
        self._set_ready(ready)

    def _set_ready(self, ready: set[str]) -> None:
        self.ready = ready
        if ready:
            self._any_ready.set()
        else:
            self._any_ready.clear()

    async def wait_ready(self, timeout_s: float) -> bool:
        if self.ready:
            return True
        try:
            await asyncio.wait_for(self._any_ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return bool(self.ready)

    async def _read_facts(self, url: str) -> ModelFacts | None:
        """The model's facts from its config's parameters on one server (None: try again later)."""
        try:
            config = await asyncio.wait_for(self.clients[url].get_model_config(self.model, as_json=True),
                                            HEALTH_CALL_TIMEOUT_S)
        except (InferenceServerException, TimeoutError, grpc.RpcError, OSError):
            return None
        return facts_from_parameters(config["config"].get("parameters", {}))

    def _log_facts(self, facts: ModelFacts, url: str) -> None:
        logger.info("model %s on %s: default language %s, signals %s", self.model, url, facts.default_language,
                    list(facts.signals) or "none")
        if facts.default_language is None:
            logger.warning("model %s on %s has no default_language parameter: the edge cannot report the "
                           "language of clients that name none", self.model, url)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)  # periodic probe interval
            before = set(self.ready)
            try:
                if asyncio.get_running_loop().time() - self._discovered_at >= self.discovery_interval_s:
                    await self.discover()
                if await self.refresh() != before:
                    logger.info("ready Triton servers: %s", sorted(self.ready) or "none")
            except Exception:  # noqa: BLE001 - the loop must outlive any one failed probe round
                logger.exception("Triton health probe failed; trying again in %.1f s", self.health_interval_s)

    def _pick(self, exclude: str | None = None) -> str | None:
        """The ready replica (any, if none is ready) with the fewest calls in flight; ties rotate."""
        candidates = sorted(self.ready - {exclude}) or sorted(set(self.clients) - {exclude})
        if not candidates:
            return None
        start = next(self._round_robin) % len(candidates)
        return min(candidates[start:] + candidates[:start], key=lambda url: self.in_flight[url])

    async def moderate(self, audio: np.ndarray, language: str | None, word_timestamps: bool = False,
                       priority: Priority = Priority.REALTIME, fit: bool = False) -> Moderation:
        """Run one segment through the ensemble; raises TritonCallError."""
        return parse_moderation(await self._infer(self.model, ensemble_inputs(audio, language, word_timestamps, fit),
                                                  priority))

    async def moderate_texts(self, texts: list[str], priority: Priority = Priority.REALTIME) -> list[Moderation]:
        """Texts (at most the members' max_batch_size) through the ensemble's classifier and
        lexicon, one batched request each; raises TritonCallError."""
        facts = self.facts
        if facts.classifier_model is None:
            raise TritonCallError(TritonErrorCode.TRITON_UNAVAILABLE, "unavailable",
                                  "no Triton server has reported its models yet")
        calls = [self._infer(facts.classifier_model, text_inputs(texts), priority)]
        if facts.lexicon_model:
            calls.append(self._infer(facts.lexicon_model, text_inputs(texts), priority))
        # A failed call raises here; the other runs on to its end in the pool (never cancelled).
        results = await asyncio.gather(*calls)
        return parse_texts(texts, results[0], results[1] if len(results) > 1 else None)

    async def transcribe_window(self, audio: np.ndarray, language: str | None, prompt: str = "",
                                word_timestamps: bool = False, priority: Priority = Priority.BULK) -> LongForm:
        """One long-form window through the ensemble's whisper member; raises TritonCallError."""
        facts = self.facts
        if not facts.long_form or facts.whisper_model is None:
            raise TritonCallError(TritonErrorCode.TRITON_ERROR, "unsupported",
                                  "the served whisper model does not decode long-form windows")
        inputs = ensemble_inputs(audio, language, word_timestamps, long_form=True, prompt=prompt)
        return parse_window(await self._infer(facts.whisper_model, inputs, priority))

    async def _infer(self, model: str, inputs: list[InferInput], priority: Priority):
        """One request to ``model``; raises TritonCallError. The deadline goes to Triton too (its
        queue drops the request once it has passed), and so does the priority. A call that fails
        for a RETRY_REASONS reason goes once to another ready replica, within the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        url = self._pick()
        try:
            return await self._running.run(self._call(url, model, inputs, priority, self.timeout_s))
        except TritonCallError as error:
            retry = self._pick(exclude=url) if error.reason in RETRY_REASONS else None
            if retry is None or retry not in self.ready or deadline - loop.time() < MIN_RETRY_BUDGET_S:
                raise
            self.retries[error.reason] += 1
            logger.info("Triton replica %s failed (%s); retrying the call on %s", url, error, retry)
            return await self._running.run(self._call(retry, model, inputs, priority, deadline - loop.time()))

    async def _call(self, url: str | None, model: str, inputs: list[InferInput], priority: Priority,
                    timeout_s: float):
        client = self.clients.get(url) if url else None
        if client is None:  # no replica known, or it vanished since it was picked
            raise TritonCallError(TritonErrorCode.TRITON_UNAVAILABLE, "unavailable", "no Triton replica available")
        self.in_flight[url] += 1
        self.calls[url] += 1
        try:
            result = await client.infer(model, inputs, priority=int(priority), timeout=int(timeout_s * 1e6),
                                        client_timeout=longest_call_s(timeout_s))
        except InferenceServerException as exc:
            error = _classify(exc)
            if error.reason in ("timeout", "unavailable"):  # until the next probe finds it ready
                self._set_ready(self.ready - {url})
            raise error from exc
        finally:
            self.in_flight[url] -= 1
        return result


def triton_pool(settings: ModerationSettings) -> TritonPool:
    """The production pool: gRPC clients to the Triton servers of ``settings``."""
    return TritonPool(settings.triton_urls(), settings.triton_model, settings.triton_timeout_s,
                      settings.triton_health_interval_s, settings.triton_discovery_interval_s)
