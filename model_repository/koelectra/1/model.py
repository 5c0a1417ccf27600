"""Triton python-backend model: KoELECTRA harmful-text probability with ONNX Runtime.

A batch is tokenized in one call and scored in one ORT run. Empty texts (silence) score 0.0
without touching the model. A multi-label classifier (the fine-tuning tool's) also returns its
category heads' probabilities, CATEGORY_PROBS, in the order of the ``categories`` parameter.
When model_info.json has a ``blend`` (scripts/train/ngram_blend.py), each score is a weighted
mean of KoELECTRA's and a character n-gram model's (``weight`` for HARMFUL_PROB,
``category_weight`` for the categories the n-gram model has).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

HARMFUL_LABEL = 1
"""Index of the 'harmful' logit of a two-label (softmax) classifier; 0 is 'normal'."""


def category_columns(info: dict, names: list[str]) -> list[int]:
    """The logit index of each named category head, in ``names``' order (model_info.json's labels)."""
    index = {label: int(i) for i, label in info.get("labels", {}).items()}
    missing = [name for name in names if name not in index]
    if missing:
        raise ValueError(f"categories {missing} are not heads of this model (labels {sorted(index)})")
    return [index[name] for name in names]


def harmful_probability(logits: np.ndarray, info: dict) -> np.ndarray:
    """P(harmful) per row: the sigmoid of the ``harmful`` head of a multi-label classifier (as
    model_info.json says), else the softmax of a two-label one at HARMFUL_LABEL."""
    if info.get("multi_label"):
        harmful = next(int(i) for i, label in info["labels"].items() if label == "harmful")
        return 1.0 / (1.0 + np.exp(-logits[:, harmful]))
    logits = logits - logits.max(axis=1, keepdims=True)
    return (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))[:, HARMFUL_LABEL]


def _param(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _session(path: str, on_gpu: bool, device_id: int, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    providers: list = ["CPUExecutionProvider"]
    if on_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
    return ort.InferenceSession(path, options, providers=providers)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.session = _session(
            os.path.join(version_dir, _param(config, "onnx", "model.onnx")),
            args["model_instance_kind"] == "GPU", int(args["model_instance_device_id"]),
            int(_param(config, "cpu_threads", "0")),
        )
        self.tokenizer = Tokenizer.from_file(os.path.join(version_dir, _param(config, "tokenizer", "tokenizer.json")))
        self.tokenizer.enable_truncation(int(_param(config, "max_length", "128")))
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("[PAD]") or 0)
        self.info = self._model_info(version_dir)
        self.category_names = [n for n in _param(config, "categories", "").split(",") if n]
        self.categories = category_columns(self.info, self.category_names) if self.category_names else []
        self.ngram = self._ngram(version_dir, self.info)

    @staticmethod
    def _model_info(version_dir: str) -> dict:
        path = os.path.join(version_dir, "model_info.json")
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        if info.get("untrained"):
            logger.warning("koelectra is %s: UNTRAINED random weights, HARMFUL_PROB is noise", info.get("name"))
        return info

    def _ngram(self, version_dir: str, info: dict) -> dict | None:
        """A blended export's n-gram model as one weight matrix, a column per blended output
        (harmful, then each category it has): one sparse product scores them all."""
        blend = info.get("blend")
        if not blend:
            return None
        import joblib  # scikit-learn's own persistence; only a blended export needs it

        # A pickle runs code as it loads: the model repository is as trusted as this file is.
        model = joblib.load(os.path.join(version_dir, blend["ngram"]))
        names = ["harmful", *[n for n in self.category_names if n in model["regressions"]]]
        regressions = [model["regressions"][n] for n in names]
        # C order: a sparse row times a Fortran-ordered matrix would copy the matrix on every call
        weights = np.ascontiguousarray(np.vstack([r.coef_[0] for r in regressions]).T)
        return {"vectorizer": model["vectorizer"], "weights": weights,
                "bias": np.array([r.intercept_[0] for r in regressions]),
                "columns": [self.category_names.index(n) for n in names[1:]],
                "weight": float(blend["weight"]), "category_weight": float(blend["category_weight"])}

    def _blend_in(self, texts: list[str], probs: np.ndarray, categories: np.ndarray) -> None:
        """Mix the n-gram model's scores into KoELECTRA's, in place, as model_info.json's blend says
        (a binary logistic regression's probability is the sigmoid of its decision function)."""
        ngram = self.ngram
        decision = ngram["vectorizer"].transform(texts) @ ngram["weights"] + ngram["bias"]
        scores = 1.0 / (1.0 + np.exp(-np.asarray(decision)))
        probs[:] = (1.0 - ngram["weight"]) * probs + ngram["weight"] * scores[:, 0]
        weight = ngram["category_weight"]
        for i, column in enumerate(ngram["columns"], start=1):
            categories[:, column] = (1.0 - weight) * categories[:, column] + weight * scores[:, i]

    def _texts(self, request) -> list[str]:
        raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
        return [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in raw]

    def _score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(harmful [n], categories [n, k]) per text; one tokenizer call and one ORT run for the
        non-empty ones (an empty text scores 0.0 everywhere)."""
        probs = np.zeros(len(texts), dtype=np.float32)
        categories = np.zeros((len(texts), len(self.categories)), dtype=np.float32)
        live = [i for i, t in enumerate(texts) if t.strip()]
        if not live:
            return probs, categories
        encodings = self.tokenizer.encode_batch([texts[i] for i in live])
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (logits,) = self.session.run(["logits"], feeds)
        logits = logits.astype(np.float64)
        live_probs = harmful_probability(logits, self.info)
        live_categories = 1.0 / (1.0 + np.exp(-logits[:, self.categories]))
        if self.ngram is not None:
            self._blend_in([texts[i] for i in live], live_probs, live_categories)
        probs[live] = live_probs
        if self.categories:
            categories[live] = live_categories
        return probs, categories

    def execute(self, requests):
        texts, owners, responses = [], [], [None] * len(requests)
        for i, request in enumerate(requests):
            request_texts = self._texts(request)
            texts.extend(request_texts)
            owners.append((i, len(request_texts)))
        try:
            probs, categories = self._score(texts)
        except Exception as exc:  # noqa: BLE001 - reported per request, the server keeps serving
            logger.exception("koelectra batch of %d failed", len(texts))
            error = pb_utils.TritonError(f"koelectra failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        start = 0
        for i, count in owners:
            outputs = [pb_utils.Tensor("HARMFUL_PROB", probs[start:start + count].reshape(-1, 1))]
            if self.categories:
                outputs.append(pb_utils.Tensor("CATEGORY_PROBS", categories[start:start + count]))
            responses[i] = pb_utils.InferenceResponse(output_tensors=outputs)
            start += count
        return responses

    def finalize(self):
        self.session = None
