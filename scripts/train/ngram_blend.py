"""Blend a character n-gram model into the fine-tuned classifier's harmful score, and calibrate it.

    .venv/bin/python -m scripts.train.ngram_blend --classifier .cache/classifier/finetuned \\
        --train ../shared/data/korean-hate-speech/labeled/train.tsv ../shared/data/kmhas/kmhas_valid.txt \\
        --eval ../shared/data/korean-hate-speech/labeled/dev.tsv --calibration-fraction 0.1 \\
        --target-precision 0.8 --out .cache/classifier/blended

Offline, KoELECTRA starts from random weights, and a character 1-4-gram model trained on the same
rows scores Korean comments better than it does (docs/MODERATION.md); their mean is better than
either. The n-gram model is NB-LR: TF-IDF features scaled by their naive-Bayes log-count ratio,
then logistic regression (Wang & Manning, 2012), folded into one plain scikit-learn pipeline so
the Triton model needs nothing but scikit-learn to run it. It trains on exactly the rows the
classifier trained on (the same held-out splits, read the same way), takes seconds, and the
threshold of the blend, ``(1 - weight) * classifier + weight * ngram``, is calibrated on the same
held-out splits as the classifier's was.

Writes ``<out>/ngram.joblib`` and ``<out>/blend.json`` (weight, threshold, every eval set's
metrics for the classifier, the n-gram model and the blend), which
``scripts/export/export_koelectra.py --blend <out>`` serves.
Exit codes: 0 done, 2 bad arguments or bad data.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts.cli import parser, setup_logging
from scripts.train import fraction, loop, read_training_marker, share
from scripts.train.datasets import CATEGORIES, DEV_FRACTION, FORMATS, Labelled
from scripts.train.metrics import (
    DEFAULT_TARGET_PRECISION,
    Scores,
    at_threshold,
    calibrate,
    calibration_line,
    category_recall,
)

logger = logging.getLogger(__name__)

NGRAM_FILE = "ngram.joblib"
BLEND_FILE = "blend.json"
DEFAULT_WEIGHT = 0.5
"""Share of the n-gram model in the blend (0.3-0.7 measured within a point of each other)."""
DEFAULT_CATEGORY_WEIGHT = 1.0
"""Share of the n-gram model in each category's score: KoELECTRA's category heads, trained on
K-MHaS's 7,000 rows from random weights, recall almost none of them (docs/MODERATION.md)."""
NGRAM_RANGE = (1, 4)
"""Character n-grams within words (scikit-learn's ``char_wb``), as the TF-IDF reference."""
MIN_DF = 2
C = 4.0
"""Inverse regularisation of the logistic regression (2-30 measured; 4 was best on K-MHaS dev)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--classifier", type=Path, required=True, help="the fine-tuning tool's --out directory")
    p.add_argument("--train", type=Path, nargs="+", required=True, help="the classifier's --train files")
    p.add_argument("--eval", type=Path, nargs="+", required=True, help="held-out files, measured")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto")
    p.add_argument("--kmhas-dev-fraction", type=fraction, default=DEV_FRACTION,
                   help="as the classifier's: the K-MHaS share held out")
    p.add_argument("--calibration-fraction", type=fraction, default=0.0,
                   help="as the classifier's: the share of the other --train files held out")
    p.add_argument("--target-precision", type=fraction, default=DEFAULT_TARGET_PRECISION)
    p.add_argument("--weight", type=fraction, default=DEFAULT_WEIGHT, help="the n-gram model's share of the blend")
    p.add_argument("--category-weight", type=share, default=DEFAULT_CATEGORY_WEIGHT,
                   help="its share of each category's score (1: the n-gram model's alone)")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def fit_ngram(data: Labelled) -> dict:
    """NB-LR per head on ``data``: one TF-IDF vectorizer over every text, and a logistic regression
    per head (``harmful`` on every row, each category on the rows that carry categories, where any
    has one). The naive-Bayes ratio scales each feature, so it is folded into each regression's
    weights: the result is plain scikit-learn objects, ``{"vectorizer", "regressions"}``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(set(data.harmful)) < 2:
        raise ValueError(f"{data.name}: the n-gram model needs harmful and normal rows")
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAM_RANGE, min_df=MIN_DF, sublinear_tf=True)
    features = vectorizer.fit_transform(data.texts).tocsr()
    regressions = {"harmful": _nb_lr(features, np.asarray(data.harmful))}
    known = np.array([c is not None for c in data.categories])
    for i, name in enumerate(CATEGORIES):
        labels = np.array([c[i] if c is not None else 0 for c in data.categories])[known]
        if 0 < labels.sum() < len(labels):
            regressions[name] = _nb_lr(features[known], labels)
    return {"vectorizer": vectorizer, "regressions": regressions}


def _nb_lr(features, labels: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    ratio = np.log(_feature_rate(features, labels == 1) / _feature_rate(features, labels == 0))
    regression = LogisticRegression(C=C, max_iter=3000).fit(features.multiply(ratio).tocsr(), labels)
    regression.coef_ = regression.coef_ * ratio  # x·(r∘w) == (x∘r)·w: the same model on the plain features
    return regression


def _feature_rate(features, rows: np.ndarray) -> np.ndarray:
    """Each feature's smoothed mean over ``rows`` (NB-LR's p and q)."""
    return (np.asarray(features[rows].sum(axis=0)).ravel() + 1.0) / (rows.sum() + 1.0)


def ngram_scores(model: dict, texts: list[str]) -> Scores:
    """Each head's probability per text; a category without a regression scores 0.0."""
    features = model["vectorizer"].transform(texts)
    heads = {name: r.predict_proba(features)[:, 1].tolist() for name, r in model["regressions"].items()}
    absent = [0.0] * len(texts)
    columns = [heads.get(name, absent) for name in CATEGORIES]
    return Scores(heads["harmful"], [list(row) for row in zip(*columns, strict=True)])


def blend(classifier: list[float], ngram: list[float], weight: float) -> list[float]:
    """The served harmful score: ``(1 - weight) * classifier + weight * ngram``, per row."""
    return [(1.0 - weight) * a + weight * b for a, b in zip(classifier, ngram, strict=True)]


def blend_categories(classifier: list[list[float]], ngram: list[list[float]], weight: float) -> list[list[float]]:
    return [blend(a, b, weight) for a, b in zip(classifier, ngram, strict=True)]


@dataclass(frozen=True)
class Scored:
    data: Labelled
    classifier: Scores
    ngram: Scores


def report(scored: list[Scored], calibration_set: Scored, weight: float, category_weight: float,
           target_precision: float) -> dict:
    """The blend's calibrated threshold and every set's metrics for the three harmful scores at it,
    and the categories' recall, KoELECTRA's and served, where the set has categories."""
    served = blend(calibration_set.classifier.harmful, calibration_set.ngram.harmful, weight)
    calibration = calibrate(calibration_set.data.harmful, served, target_precision, calibration_set.data.name)
    evals = []
    for s in scored:
        data = s.data
        evaluated = {**data.describe(),
                     "blend": at_threshold(data.harmful, blend(s.classifier.harmful, s.ngram.harmful, weight),
                                           calibration.threshold),
                     "classifier": at_threshold(data.harmful, s.classifier.harmful, 0.5),
                     "ngram": at_threshold(data.harmful, s.ngram.harmful, 0.5)}
        if data.has_categories:
            evaluated["categories"] = {
                "classifier": category_recall(data.categories, s.classifier.categories, CATEGORIES),
                "blend": category_recall(data.categories, blend_categories(
                    s.classifier.categories, s.ngram.categories, category_weight), CATEGORIES)}
        evals.append(evaluated)
    return {"weight": weight, "category_weight": category_weight, "threshold": calibration.as_dict(), "evals": evals,
            "ngram": {"analyzer": "char_wb", "ngram_range": list(NGRAM_RANGE), "min_df": MIN_DF, "C": C}}


def run(args: argparse.Namespace) -> dict:
    import joblib

    from scripts.train.finetune_koelectra import read_data, score_checkpoint

    if read_training_marker(args.classifier) is None:
        raise ValueError(f"{args.classifier} is not a fine-tuned classifier (no training marker)")
    data = read_data(args)
    started = time.monotonic()
    model = fit_ngram(data.train)
    logger.info("n-gram model fitted on %d rows in %.0f s", len(data.train), time.monotonic() - started)
    scored = [Scored(d, c, ngram_scores(model, d.texts))
              for d, c in zip(data.evals, score_checkpoint(args.classifier, data.evals), strict=True)]
    result = report(scored, scored[data.evals.index(data.calibration)], args.weight, args.category_weight,
                    args.target_precision)
    args.out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.out / NGRAM_FILE)
    (args.out / BLEND_FILE).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


def print_summary(result: dict) -> None:
    threshold = result["threshold"]
    for evaluated in result["evals"]:
        print(f"{evaluated['name']} ({evaluated['rows']} rows): " + ", ".join(
            f"{kind} P {evaluated[kind]['precision']:.2f} R {evaluated[kind]['recall']:.2f} "
            f"F1 {evaluated[kind]['f1']:.2f}" for kind in ("classifier", "ngram", "blend")))
    print(f"blend {calibration_line(threshold)}")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    return loop.run_tool(lambda: run(args), print_summary)


if __name__ == "__main__":
    sys.exit(main())
