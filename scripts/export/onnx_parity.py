"""ONNX export of a sequence classifier and its parity check against PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
"""Largest allowed |logit difference| between ONNX Runtime and PyTorch."""
PARITY_SENTENCES = [
    "안녕하세요, 오늘 게임 같이 하실 분 계신가요?",
    "너 진짜 왜 그렇게 못하냐 바보야",
    "좋은 하루 보내세요!",
    "이번 판은 정말 재미있었어요. 다음에 또 같이 해요. 감사합니다.",
    "ㅋㅋㅋ",
    "GG well played 수고하셨습니다",
    "",
]
"""Korean batch of varied lengths (padding exercised), plus mixed script and an empty text."""
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]


class ParityError(RuntimeError):
    """The ONNX model does not reproduce the PyTorch logits, or cannot be run at all."""


def export_onnx(model: torch.nn.Module, tokenizer, path: Path) -> None:
    """Export with dynamic batch and sequence axes; logits are the only output."""
    sample = tokenizer(PARITY_SENTENCES[:2], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["logits"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, tuple(sample[n] for n in INPUT_NAMES), str(path), input_names=INPUT_NAMES,
        output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False,
    )


def check_parity(model: torch.nn.Module, tokenizer, path: Path, max_length: int) -> float:
    """Compare ONNX Runtime and PyTorch logits on PARITY_SENTENCES; returns the max abs diff."""
    import onnxruntime as ort

    batch = tokenizer(PARITY_SENTENCES, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**{n: batch[n] for n in INPUT_NAMES}).logits.numpy()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (actual,) = session.run(["logits"], {n: batch[n].numpy().astype(np.int64) for n in INPUT_NAMES})
    except Exception as exc:  # noqa: BLE001 - any ORT failure means the artifact is unusable
        raise ParityError(f"ONNX Runtime cannot run {path}: {exc}") from exc
    if actual.shape != expected.shape:
        raise ParityError(f"ONNX logits shape {actual.shape} != PyTorch {expected.shape}")
    diff = float(np.abs(actual - expected).max())
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        raise ParityError(f"ONNX/PyTorch max abs logit diff {diff:.3g} exceeds {PARITY_TOLERANCE:g} on {path}")
    logger.info("ONNX parity ok: max abs logit diff %.3g on %d Korean sentences", diff, len(PARITY_SENTENCES))
    return diff
