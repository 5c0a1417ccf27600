"""Triton python-backend model: batched Whisper speech-to-text, with optional word timestamps.

LONG_FORM (CTranslate2 engine only) decodes a window of up to 30 s of a recording with timestamps,
after PROMPT (the text before it), and returns Whisper's own segments in SEGMENTS: the batch jobs'
path, where one window holds several utterances.

Every request of a batch goes through one encoder pass and one greedy decoding loop, on the engine
the export chose (the ``engine`` parameter): ``whisper_batch.WhisperBatch`` (openai-whisper on
torch) or ``whisper_ct2.WhisperCT2`` (CTranslate2); both keep whisper_contract's promises. The
requests that set WORD_TIMESTAMPS also share one alignment pass. LANGUAGE "auto" has the request's
language detected from its audio within that same pass; LANGUAGE_CODE reports the language each
request was transcribed in. Bad requests get their own error response; the rest of the batch still
runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))
from whisper_contract import MAX_AUDIO_SECONDS, Engine, LongTranscription  # noqa: E402

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""AUDIO is 16 kHz mono float32 in [-1, 1]."""


class RequestError(ValueError):
    """A problem with one request, reported to that request's client only."""


@dataclass
class Request:
    audio: np.ndarray
    language_token: int | None
    """None: LANGUAGE was "auto", the language is detected from the audio."""
    word_timestamps: bool
    """WORD_TIMESTAMPS was sent and true: only then does the request pay for the alignment pass."""
    fit: bool = False
    """ENCODER_FIT was sent and true: the request is encoded with its own length, not 30 s."""
    long_form: bool = False
    """LONG_FORM was sent and true: timestamped decoding, Whisper's segments in SEGMENTS."""
    prompt: str = ""
    """PROMPT: the text before the window (long-form only)."""

    @property
    def group(self) -> tuple[bool, bool]:
        """Requests of one group share an encoder pass and a decoding mode."""
        return self.long_form, self.fit


def _words_json(words) -> bytes:
    """The WORDS output: a UTF-8 JSON array of {word, start, end, probability}."""
    return json.dumps([asdict(w) for w in words], ensure_ascii=False).encode("utf-8")


def _segments_json(result) -> bytes:
    """The SEGMENTS output of a long-form request: a UTF-8 JSON object {"segments": [{start, end,
    text, words}], "transcribed_to"}; empty for other requests."""
    if result is None:
        return b""
    return json.dumps({"segments": [asdict(p) for p in result.pieces], "transcribed_to": result.transcribed_to},
                      ensure_ascii=False).encode("utf-8")


def _text(request, name: str) -> str | None:
    """An optional TYPE_STRING [1] input; None when absent or empty."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    raw = tensor.as_numpy().reshape(-1)
    if not raw.size or not raw[0]:
        return None
    return raw[0].decode("utf-8", errors="replace") if isinstance(raw[0], bytes) else str(raw[0])


def _flag(request, name: str) -> bool:
    """An optional TYPE_BOOL [1] input; absent means false."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return False
    raw = tensor.as_numpy().reshape(-1)
    return bool(raw[0]) if raw.size else False


def _error(message: str, invalid_argument: bool = False):
    """A TritonError, with the INVALID_ARG status where this backend version supports codes."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if invalid_argument else None
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _param(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _engine(config: dict, args: dict) -> Engine:
    """The engine the config names, on this instance's device."""
    checkpoint = os.path.join(args["model_repository"], args["model_version"],
                              _param(config, "checkpoint", "whisper.pt"))
    on_gpu = args["model_instance_kind"] == "GPU"
    threads = int(_param(config, "cpu_threads", "0"))
    engine = _param(config, "engine", "torch")
    if engine == "ctranslate2":
        from whisper_ct2 import WhisperCT2

        return WhisperCT2(checkpoint, device="cuda" if on_gpu else "cpu",
                          device_index=int(args["model_instance_device_id"]) if on_gpu else 0,
                          compute_type=_param(config, "compute_type", "float16" if on_gpu else "int8"),
                          intra_threads=threads, inter_threads=int(_param(config, "inter_threads", "1")))
    if engine != "torch":
        raise ValueError(f"unknown whisper engine {engine!r}: torch or ctranslate2")
    from whisper_batch import WhisperBatch

    if threads > 0 and not on_gpu:
        import torch

        torch.set_num_threads(threads)
    return WhisperBatch(checkpoint, device=f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu",
                        fp16=on_gpu and _param(config, "fp16", "false") == "true",
                        encoder_context=_param(config, "encoder_context", "full"),
                        cpu_int8=not on_gpu and _param(config, "cpu_int8", "false") == "true")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model = _engine(config, args)
        # Rendered from the exporter's --language: no second default here that could disagree.
        self.default_language = _param(config, "default_language", "")
        if not self.default_language:
            raise ValueError("the whisper config has no default_language parameter: export it with scripts/export")
        self.model.language_token(self.default_language)  # fail at load time on a bad default

    def _parse(self, request) -> Request:
        audio_tensor = pb_utils.get_input_tensor_by_name(request, "AUDIO")
        audio = audio_tensor.as_numpy().reshape(-1).astype(np.float32, copy=False)
        if audio.size == 0:
            raise RequestError("AUDIO is empty: send at least one 16 kHz sample")
        if audio.size > MAX_AUDIO_SECONDS * SAMPLE_RATE:
            raise RequestError(
                f"AUDIO is {audio.size / SAMPLE_RATE:.1f} s long; the maximum is {MAX_AUDIO_SECONDS:.0f} s "
                f"of 16 kHz audio per request: split it into shorter segments"
            )
        if not np.isfinite(audio).all():
            raise RequestError("AUDIO contains NaN or infinite samples")
        language = _text(request, "LANGUAGE") or self.default_language
        long_form = _flag(request, "LONG_FORM")
        if long_form and not self.model.long_form:
            raise RequestError("LONG_FORM needs the ctranslate2 engine; this model runs another: "
                               "send segments without it")
        try:
            return Request(audio, self.model.requested_language(language), _flag(request, "WORD_TIMESTAMPS"),
                           _flag(request, "ENCODER_FIT") and not long_form, long_form, _text(request, "PROMPT") or "")
        except ValueError as exc:
            raise RequestError(str(exc)) from exc

    def execute(self, requests):
        responses: list = [None] * len(requests)
        batch, slots = [], []
        for i, request in enumerate(requests):
            try:
                batch.append(self._parse(request))
                slots.append(i)
            except RequestError as exc:
                responses[i] = pb_utils.InferenceResponse(error=_error(str(exc), invalid_argument=True))
        for kind in dict.fromkeys(request.group for request in batch):  # one pass per context length and mode
            group = [(request, slot) for request, slot in zip(batch, slots, strict=True) if request.group == kind]
            self._run([r for r, _ in group], [s for _, s in group], responses)
        return responses

    def _transcribe(self, batch: list[Request]) -> list:
        audio, languages, words = [r.audio for r in batch], [r.language_token for r in batch], \
            [r.word_timestamps for r in batch]
        if batch[0].long_form:
            return self.model.transcribe_long(audio, languages, [r.prompt for r in batch], words)
        return self.model.transcribe(audio, languages, words, fit=batch[0].fit)

    def _run(self, batch, slots, responses) -> None:
        try:
            results = self._transcribe(batch)
        except Exception as exc:  # noqa: BLE001 - reported per request, the server keeps serving
            logger.exception("whisper batch of %d failed", len(batch))
            for i in slots:
                responses[i] = pb_utils.InferenceResponse(error=_error(f"whisper failed: {exc}"))
            return
        for i, result in zip(slots, results, strict=True):
            if result.words_error:  # only requests that asked for words get it
                responses[i] = pb_utils.InferenceResponse(error=_error(result.words_error))
                continue
            long_form = result if isinstance(result, LongTranscription) else None
            text = " ".join(p.text for p in long_form.pieces) if long_form else result.text
            words = [w for p in long_form.pieces for w in p.words] if long_form else result.words
            responses[i] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("TRANSCRIPT", np.array([[text.encode("utf-8")]], dtype=np.object_)),
                pb_utils.Tensor("NO_SPEECH_PROB", np.array([[result.no_speech_prob]], dtype=np.float32)),
                pb_utils.Tensor("WORDS", np.array([[_words_json(words)]], dtype=np.object_)),
                pb_utils.Tensor("LANGUAGE_CODE", np.array([[result.language.encode("utf-8")]], dtype=np.object_)),
                pb_utils.Tensor("SEGMENTS", np.array([[_segments_json(long_form)]], dtype=np.object_)),
            ])

    def finalize(self):
        if self.model is not None:
            self.model.close()
        self.model = None
