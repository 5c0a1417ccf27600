"""Triton python-backend model: the harmful-word lexicon, matched on each TEXT.

The matching is ``lexicon_match.Lexicon`` (no Triton imports, unit-tested on its own). The
lexicon is the exported ``lexicon.json`` plus the operators' ``overrides.txt``, both read at load
time: reload the model (or restart Triton) to apply an edited overrides file. Each request of a
batch is answered on its own; a bad one (not UTF-8, too long) gets its own error.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))
from lexicon_match import load  # noqa: E402

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 10_000
"""Longest TEXT accepted. A 30 s Whisper segment is a few hundred characters; this bounds the
work one request can cause."""


class RequestError(ValueError):
    """A problem with one request, reported to that request's client only."""


def _error(message: str, invalid_argument: bool = False):
    """A TritonError, with the INVALID_ARG status where this backend version supports codes."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if invalid_argument else None
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _param(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _decode(value) -> str:
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"TEXT is not valid UTF-8 (byte {exc.start})") from exc


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        model_dir = args["model_repository"]
        lexicon_path = os.path.join(model_dir, args["model_version"], _param(config, "lexicon", "lexicon.json"))
        overrides_path = os.path.join(model_dir, _param(config, "overrides", "overrides.txt"))
        self.lexicon = load(lexicon_path, overrides_path)

    def _texts(self, request) -> list[str]:
        tensor = pb_utils.get_input_tensor_by_name(request, "TEXT")
        if tensor is None:
            raise RequestError("TEXT is missing")
        texts = [_decode(value) for value in tensor.as_numpy().reshape(-1)]
        for text in texts:
            if len(text) > MAX_TEXT_CHARS:
                raise RequestError(f"TEXT has {len(text)} characters; the maximum is {MAX_TEXT_CHARS}")
        return texts

    def _respond(self, request):
        try:
            texts = self._texts(request)
        except RequestError as exc:
            return pb_utils.InferenceResponse(error=_error(str(exc), invalid_argument=True))
        try:
            matches = [json.dumps([m.to_json() for m in self.lexicon.match(t)], ensure_ascii=False) for t in texts]
        except Exception as exc:  # noqa: BLE001 - reported per request, the server keeps serving
            logger.exception("lexicon failed on a request of %d texts", len(texts))
            return pb_utils.InferenceResponse(error=_error(f"lexicon failed: {exc}"))
        out = np.array([m.encode("utf-8") for m in matches], dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("MATCHES", out)])

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def finalize(self):
        self.lexicon = None
