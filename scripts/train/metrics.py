"""Quality of a harmful-speech scorer: precision, recall and F1 at a threshold, the threshold that
reaches a stated precision, and recall per category. Pure Python on lists: no torch, so the
evaluation tools and the tests share it. The default threshold is the service's own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from moderation.verdict import DEFAULT_THRESHOLD

DEFAULT_TARGET_PRECISION = 0.90
"""Precision the calibrated threshold is chosen for, unless the operator names another."""


def binary_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict:
    """Accuracy, and precision/recall/F1 of the harmful class (0.0 where a ratio has no denominator)."""
    tp = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 1 and p == 1)
    fp = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, predictions, strict=True) if y == 1 and p == 0)
    tn = len(labels) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(labels) if labels else 0.0, "precision": precision, "recall": recall,
            "f1": f1, "rows": len(labels), "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def at_threshold(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict:
    """binary_metrics of "harmful when the score is at least ``threshold``" (the edge's rule)."""
    return {**binary_metrics(labels, [int(s >= threshold) for s in scores]), "threshold": threshold}


@dataclass(frozen=True)
class Scores:
    """A model's scores on an eval set: ``harmful`` per row, and the categories' per row."""

    harmful: list[float]
    categories: list[list[float]]


@dataclass(frozen=True)
class Calibration:
    """The threshold chosen on a dev set, and what it gave there."""

    threshold: float
    target_precision: float
    precision: float
    recall: float
    reached: bool
    """False when no threshold reaches the target: the most precise one is taken instead."""
    calibrated_on: str

    def as_dict(self) -> dict:
        return asdict(self)


def calibration_line(calibration: dict) -> str:
    """A Calibration.as_dict() as the training tools print it."""
    return (f"threshold {calibration['threshold']:.3f} for precision {calibration['target_precision']:.2f} on "
            f"{calibration['calibrated_on']}{'' if calibration['reached'] else ' (NOT reached: the most precise one)'}")


def calibrate(labels: Sequence[int], scores: Sequence[float], target_precision: float, name: str) -> Calibration:
    """The lowest threshold (the most recall) whose precision on these rows is at least the target;
    the most precise threshold when none is."""
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: -pair[0])
    positives = sum(labels)
    best: tuple[float, float, float] | None = None  # (threshold, precision, recall)
    most_precise = (1.0, 0.0, 0.0)
    tp = 0
    for rank, (score, label) in enumerate(ranked, start=1):
        tp += label
        if rank < len(ranked) and ranked[rank][0] == score:
            continue  # a threshold takes every row of the same score together
        precision, recall = tp / rank, tp / positives if positives else 0.0
        if precision >= target_precision:
            best = (score, precision, recall)
        if precision > most_precise[1]:
            most_precise = (score, precision, recall)
    chosen = best or most_precise
    return Calibration(round(float(chosen[0]), 6), target_precision, chosen[1], chosen[2], best is not None, name)


def category_recall(categories: Sequence[tuple[int, ...] | None], scores: Sequence[Sequence[float]],
                    names: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> dict[str, dict]:
    """Per category: rows that have it, and the recall and precision of its head at ``threshold``
    (rows whose categories are unknown are left out)."""
    known = [(c, s) for c, s in zip(categories, scores, strict=True) if c is not None]
    report = {}
    for i, name in enumerate(names):
        labels = [c[i] for c, _ in known]
        metrics = binary_metrics(labels, [int(s[i] >= threshold) for _, s in known])
        report[name] = {"rows": sum(labels), "recall": metrics["recall"], "precision": metrics["precision"]}
    return report
