"""The character n-gram model blended into the classifier's score: NB-LR folded into one plain
scikit-learn pipeline, the blend, and its calibration on the held-out rows."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from scripts.export import export_koelectra
from scripts.train import ngram_blend
from scripts.train.datasets import CATEGORIES, Labelled
from scripts.train.metrics import Scores

INSULTS = ("멍청이", "바보같은놈", "꺼져라", "쓰레기같은", "한심한놈")
PLAIN = ("오늘 날씨", "점심 메뉴", "게임 재밌다", "주말 계획", "영화 추천")


def toy(seed: int, rows: int = 120) -> Labelled:
    rng = random.Random(seed)
    data = Labelled(f"toy {seed}")
    for i in range(rows):
        harmful = i % 2
        words = [rng.choice(PLAIN), rng.choice(PLAIN)] + ([rng.choice(INSULTS)] if harmful else [])
        rng.shuffle(words)
        data.add(" ".join(words), harmful)
    return data


def test_the_folded_pipeline_scores_as_nb_lr_on_scaled_features():
    from sklearn.linear_model import LogisticRegression

    data = toy(1)
    model = ngram_blend.fit_ngram(data)
    features = model["vectorizer"].transform(data.texts)
    labels = np.asarray(data.harmful)
    ratio = np.log(ngram_blend._feature_rate(features, labels == 1) / ngram_blend._feature_rate(features, labels == 0))
    unfolded = LogisticRegression(C=ngram_blend.C, max_iter=3000).fit(features.multiply(ratio).tocsr(), labels)
    held_out = model["vectorizer"].transform(toy(2, 40).texts)
    np.testing.assert_allclose(model["regressions"]["harmful"].predict_proba(held_out),
                               unfolded.predict_proba(held_out.multiply(ratio).tocsr()), atol=1e-9)


def test_the_ngram_model_learns_held_out_insults():
    model = ngram_blend.fit_ngram(toy(1))
    held_out = toy(3, 60)
    predicted = [int(s >= 0.5) for s in ngram_blend.ngram_scores(model, held_out.texts).harmful]
    assert sum(p == y for p, y in zip(predicted, held_out.harmful, strict=True)) >= 55


def test_categories_are_learnt_from_the_rows_that_carry_them_and_absent_ones_score_0():
    data = toy(1)
    # a K-MHaS-like half: the insult "바보같은놈" is category 3 (profanity); the other rows have none known
    for text, harmful in zip(list(data.texts), list(data.harmful), strict=True):
        data.add(text, harmful, tuple(int(i == 3 and "바보같은놈" in text) for i in range(len(CATEGORIES))))
    model = ngram_blend.fit_ngram(data)
    assert set(model["regressions"]) == {"harmful", "profanity"}  # no other category has a positive row
    scores = ngram_blend.ngram_scores(model, ["야 바보같은놈 게임 재밌다", "오늘 날씨 좋다"])
    profanity = CATEGORIES.index("profanity")
    assert scores.categories[0][profanity] > 0.5 > scores.categories[1][profanity]
    assert all(scores.categories[row][i] == 0.0 for row in (0, 1) for i in range(len(CATEGORIES)) if i != profanity)


def test_one_class_is_a_data_error():
    data = Labelled("normal only", ["안녕", "반가워"], [0, 0], [None, None])
    with pytest.raises(ValueError, match="normal only: the n-gram model needs harmful and normal rows"):
        ngram_blend.fit_ngram(data)


def test_the_blend_is_calibrated_on_the_calibration_rows():
    rows = Labelled("calibration", ["a", "b", "c", "d"], [1, 1, 0, 0], [None] * 4)
    scored = ngram_blend.Scored(rows, Scores([0.9, 0.2, 0.6, 0.1], [[]] * 4), Scores([0.9, 0.8, 0.2, 0.1], [[]] * 4))
    blended = ngram_blend.blend(scored.classifier.harmful, scored.ngram.harmful, 0.5)
    assert blended == pytest.approx([0.9, 0.5, 0.4, 0.1])
    result = ngram_blend.report([scored], scored, weight=0.5, category_weight=1.0, target_precision=1.0)
    # the lowest threshold at precision 1.0 on the blend (0.5); each alone would need 0.8 or 0.9
    assert result["threshold"]["threshold"] == pytest.approx(0.5) and result["threshold"]["reached"]
    assert result["evals"][0]["blend"]["recall"] == 1.0
    assert result["evals"][0]["classifier"]["recall"] == 0.5  # at 0.5: the blend catches what each misses


@pytest.mark.parametrize("blend, error", [
    ({"weight": 0.5}, "no readable blend.json"),
    ({"weight": 1.5, "category_weight": 1.0, "threshold": {"threshold": 0.7}}, "a weight in [0, 1)"),
])
def test_a_bad_blend_stops_the_export_with_exit_2(tmp_path, blend, error, caplog):
    source = tmp_path / "finetuned"
    source.mkdir()
    (source / "moderation_training.json").write_text(json.dumps({"trained": True}), encoding="utf-8")
    (tmp_path / "blend").mkdir()
    (tmp_path / "blend" / "blend.json").write_text(json.dumps(blend), encoding="utf-8")
    (tmp_path / "blend" / "ngram.joblib").write_bytes(b"x")
    repository = tmp_path / "repository"
    code = export_koelectra.main(["--source", str(source), "--blend", str(tmp_path / "blend"),
                                  "--repository", str(repository)])
    assert code == 2 and error in caplog.text and not repository.exists()
