"""The classifier `make classifier` builds from real labelled comments (as .ci/run does), served by
the real tritonserver and edge, on real BEEP! dev comments through POST /v1/moderations.

Skipped, saying why, where the data or a trained export is missing (a fresh machine without
../shared); .ci/run builds the classifier and fails without the data, so CI always runs these."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from scripts.train.build_classifier import DATA_FILES, data_files
from scripts.train.datasets import read_labelled
from tests.integration.data import shared_data_dir

ROWS = 200
SAMPLE_SEED = 20261201
BATCH = 32
"""The endpoint's documented maximum of inputs per request (edge/routers/moderations.py)."""
MIN_PRECISION = 0.80
MIN_GAIN = 2.0
"""The served verdict must flag at least this many times the harmful rows the lexicon alone flags."""


@pytest.fixture(scope="module")
def trained_export(model_repository) -> dict:
    info = json.loads((model_repository / "koelectra" / "1" / "model_info.json").read_text(encoding="utf-8"))
    if info.get("trained") is not True:
        pytest.skip("the exported classifier is the untrained offline default: `make classifier DATA=<dir>` "
                    "builds a trained one from BEEP! and K-MHaS (.ci/run does)")
    return info


@pytest.fixture(scope="module")
def beep_dev_sample() -> list[tuple[str, int]]:
    data = shared_data_dir()
    if data is None:
        pytest.skip(f"no labelled comments here ({DATA_FILES['beep_dev']} under ../shared/data or $MODERATION_DATA)")
    rows = read_labelled(data_files(data)["beep_dev"])
    sample = random.Random(SAMPLE_SEED).sample(range(len(rows)), ROWS)
    return [(rows.texts[i], rows.harmful[i]) for i in sample]


def moderate(edge: str, texts: list[str]) -> list[dict]:
    results = []
    for start in range(0, len(texts), BATCH):
        response = httpx.post(f"http://{edge}/v1/moderations", json={"input": texts[start:start + BATCH]},
                              timeout=120)
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    return results


def test_the_served_verdict_flags_twice_the_lexicons_harmful_comments_at_precision_080(
        edge, trained_export, beep_dev_sample):
    results = moderate(edge, [text for text, _ in beep_dev_sample])
    labels = [label for _, label in beep_dev_sample]
    flagged = [r["flagged"] for r in results]
    by_lexicon = ["lexicon" in r["reasons"] for r in results]
    true_positives = sum(f and y for f, y in zip(flagged, labels, strict=True))
    lexicon_hits = sum(f and y for f, y in zip(by_lexicon, labels, strict=True))
    precision = true_positives / max(1, sum(flagged))
    assert true_positives >= MIN_GAIN * lexicon_hits and true_positives > 0, (true_positives, lexicon_hits)
    assert precision >= MIN_PRECISION, (precision, true_positives, sum(flagged))


def test_reasons_say_classifier_exactly_where_its_score_reached_the_threshold(edge, trained_export, beep_dev_sample):
    ready = httpx.get(f"http://{edge}/readyz", timeout=10).json()
    threshold = ready["classifier_threshold"]
    assert ready["signals"] == ["lexicon", "classifier"]
    # the blend's threshold where the build blended in the n-gram model, else the fine-tuning's
    assert threshold == (trained_export.get("blend") or trained_export["training"])["threshold"]["threshold"]
    results = moderate(edge, [text for text, _ in beep_dev_sample[:BATCH]])
    for result in results:
        # lexicon-flagged results report 1.0 as their harmful score: only the others tell the classifier's
        if "lexicon" not in result["reasons"]:
            decided = result["category_scores"]["harmful"] >= threshold
            assert ("classifier" in result["reasons"]) == decided, result
    assert set(results[0]["category_scores"]) >= {"harmful", *trained_export["training"]["heads"][1:]}


def in_process_harmful(version_dir, info: dict, texts: list[str]) -> list[float]:
    """The harmful score model_info.json describes, computed here from the exported files: the
    ONNX model's harmful sigmoid, blended with the n-gram pipeline where there is a blend."""
    import joblib
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    config = json.loads((version_dir.parent / "config.values.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
    tokenizer.enable_truncation(config["max_length"])
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    harmful_head = int(next(i for i, label in info["labels"].items() if label == "harmful"))
    scores = []
    for text in texts:  # one at a time: no padding to reason about
        encoding = tokenizer.encode(text)
        feeds = {name: np.array([values], dtype=np.int64) for name, values in
                 (("input_ids", encoding.ids), ("attention_mask", encoding.attention_mask),
                  ("token_type_ids", encoding.type_ids))}
        (logits,) = session.run(["logits"], feeds)
        scores.append(1.0 / (1.0 + np.exp(-float(logits[0, harmful_head]))))
    blend = info.get("blend")
    if blend:
        ngram = joblib.load(version_dir / blend["ngram"])
        harmful = ngram["regressions"]["harmful"].predict_proba(ngram["vectorizer"].transform(texts))[:, 1]
        scores = [(1 - blend["weight"]) * a + blend["weight"] * float(b) for a, b in zip(scores, harmful, strict=True)]
    return scores


def test_the_served_harmful_score_is_the_exported_blend(edge, model_repository, trained_export, beep_dev_sample):
    texts = [text for text, _ in beep_dev_sample[:BATCH]]
    results = moderate(edge, texts)
    expected = in_process_harmful(model_repository / "koelectra" / "1", trained_export, texts)
    compared = 0
    for result, score in zip(results, expected, strict=True):
        if "lexicon" not in result["reasons"]:  # the lexicon's matches report 1.0
            assert abs(result["category_scores"]["harmful"] - score) < 1e-3, (result, score)
            compared += 1
    assert compared >= BATCH // 2
