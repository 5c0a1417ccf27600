"""POST /v1/moderations in-process (fake pool): OpenAI's shape, the segment's verdict, typed errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from edge.auth import key_line, new_api_key
from edge.routers.moderations import MAX_INPUT_CHARS, MAX_INPUTS
from edge.settings import EdgeSettings
from moderation.events import TritonErrorCode
from moderation.triton import TritonCallError
from moderation.verdict import LexiconMatch, ModelFacts, Moderation
from tests.unit.fakes import FakePool

TRAINED = ModelFacts("ko", ("lexicon", "classifier"), classifier_threshold=0.7, categories=("origin", "profanity"),
                     classifier_model="koelectra", lexicon_model="lexicon")


def scored(text: str) -> Moderation:
    """A lexicon match on 꺼져; the classifier's score is the text's share of ! (for a test to steer)."""
    matches = [LexiconMatch(start=text.index("꺼져"), end=text.index("꺼져") + 2, text="꺼져", term="꺼져",
                            category="insult", sources=["test"])] if "꺼져" in text else []
    harmful = text.count("!") / len(text)
    return Moderation(text, harmful, 0.0, matches=matches, category_probs=[harmful, 0.2])


def client(pool: FakePool, **settings) -> TestClient:
    return TestClient(create_app(EdgeSettings(**settings), pool=pool))


def test_each_text_gets_the_segments_verdict_in_openais_shape():
    pool = FakePool(TRAINED, text_respond=scored)
    with client(pool) as app:
        response = app.post("/v1/moderations", json={"input": ["좋은 아침이에요", "야 꺼져", "!!!!!!!!!?"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("modr-") and body["model"] == "koelectra"
    clean, lexicon, classifier = body["results"]
    assert pool.text_batches == [["좋은 아침이에요", "야 꺼져", "!!!!!!!!!?"]]  # one batch
    assert not clean["flagged"] and clean["reasons"] == [] and clean["categories"]["harmful"] is False
    assert clean["category_scores"] == {"harmful": 0.0, "origin": 0.0, "profanity": 0.2}
    assert lexicon["flagged"] and lexicon["reasons"] == ["lexicon"] and lexicon["category_scores"]["harmful"] == 1.0
    assert lexicon["spans"] == [{"start": 2, "end": 4, "text": "꺼져", "category": "insult", "source": "lexicon"}]
    assert classifier["flagged"] and classifier["reasons"] == ["classifier"]  # 0.9 reaches the calibrated 0.7
    assert classifier["categories"] == {"harmful": True, "origin": True, "profanity": False}
    assert classifier["spans"][0]["source"] == "classifier" and classifier["spans"][0]["end"] == 10


def test_a_single_string_is_one_input_and_the_operators_threshold_wins():
    with client(FakePool(TRAINED, text_respond=scored), harmful_threshold=0.95) as app:
        body = app.post("/v1/moderations", json={"input": "!!!!!!!!!?"}).json()
    assert len(body["results"]) == 1 and not body["results"][0]["flagged"]  # 0.9 is below 0.95


def test_severity_follows_the_operators_category_weights():
    texts = ["야 꺼져", "!!!!!!!!!?"]
    with client(FakePool(TRAINED, text_respond=scored)) as app:
        plain = [r["severity"] for r in app.post("/v1/moderations", json={"input": texts}).json()["results"]]
    weights = {"insult": 0.4, "harmful": 0.5, "origin": 0.2}
    with client(FakePool(TRAINED, text_respond=scored), category_weights=weights) as app:
        weighted = [r["severity"] for r in app.post("/v1/moderations", json={"input": texts}).json()["results"]]
    assert plain == [1.0, 0.9] and weighted == [0.4, 0.45]  # the lexicon's insult; the classifier's 0.9 halved


def test_an_untrained_classifier_decides_and_scores_nothing():
    untrained = ModelFacts("ko", ("lexicon",), categories=("origin",), classifier_model="koelectra")
    with client(FakePool(untrained, text_respond=scored)) as app:
        (result,) = app.post("/v1/moderations", json={"input": "!!!!!!!!!?"}).json()["results"]
    assert not result["flagged"] and result["category_scores"] == {"harmful": 0.0} and result["severity"] == 0.0


@pytest.mark.parametrize(("body", "code"), [
    ({"input": []}, "empty_input"),
    ({"input": ["ok"] * (MAX_INPUTS + 1)}, "too_many_inputs"),
    ({"input": "가" * (MAX_INPUT_CHARS + 1)}, "input_too_long"),
    ({"input": ["ok", 3]}, "not_text"),
    ({"input": {"text": "ok"}}, "not_text"),
    ({"input": "  "}, "empty_text"),
    ({"text": "ok"}, "no_input"),
    (["ok"], "no_input"),
])
def test_bad_input_gets_400_with_a_typed_code(body, code):
    pool = FakePool(TRAINED)
    with client(pool) as app:
        response = app.post("/v1/moderations", json=body)
    assert response.status_code == 400 and response.json()["detail"]["code"] == code, response.text
    assert pool.text_batches == []


def test_a_body_that_is_not_json_gets_400():
    with client(FakePool(TRAINED)) as app:
        response = app.post("/v1/moderations", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["detail"]["code"] == "bad_json"


def test_triton_failures_are_typed_503_and_502():
    unavailable = TritonCallError(TritonErrorCode.TRITON_UNAVAILABLE, "unavailable", "Triton unreachable")
    broken = TritonCallError(TritonErrorCode.TRITON_ERROR, "bad_response", "no HARMFUL_PROB")
    for error, status in ((unavailable, 503), (broken, 502)):
        with client(FakePool(TRAINED, error=error)) as app:
            response = app.post("/v1/moderations", json={"input": "ok"})
        assert response.status_code == status and response.json()["detail"]["code"] == error.code.value


def test_it_needs_the_same_credentials_as_the_other_endpoints():
    key = new_api_key()
    with client(FakePool(TRAINED), auth="required", api_key_hashes=key_line("mod", key)) as app:
        assert app.post("/v1/moderations", json={"input": "ok"}).status_code == 401
        allowed = app.post("/v1/moderations", json={"input": "ok"}, headers={"Authorization": f"Bearer {key}"})
    assert allowed.status_code == 200
