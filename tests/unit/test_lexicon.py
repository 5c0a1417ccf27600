"""The harmful-word lexicon in-process: exact spans, obfuscations, traps, overrides, the measured
targets on the evaluation set, and the exporter's lexicon.json from the installed packages."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from scripts.bench import lexicon as eval_lexicon
from scripts.export import export_lexicon

match = export_lexicon.lexicon_match()

PRECISION_TARGET = 0.95
RECALL_TARGET = 0.90


@pytest.fixture(scope="module")
def document() -> dict:
    """lexicon.json of the shipped sources, assembled from the installed packages."""
    return export_lexicon.assemble(export_lexicon.DEFAULT_SOURCES)


@pytest.fixture(scope="module")
def overrides():
    return match.parse_overrides(eval_lexicon.OVERRIDES.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shipped(document, overrides):
    """The lexicon as the model serves it: shipped sources, committed overrides, default rules."""
    return match.build(document, overrides)


def small(overrides_text: str = "", terms: tuple[str, ...] = ("씨발", "개새끼", "fuck")):
    data = {"format": match.LEXICON_FORMAT,
            "terms": [{"term": t, "category": "profanity", "sources": ["test"]} for t in terms]}
    return match.build(data, match.parse_overrides(overrides_text))


def spans(lexicon, text: str) -> list[tuple[int, int, str]]:
    found = lexicon.match(text)
    for m in found:
        assert text[m.start:m.end] == m.text
    return [(m.start, m.end, m.text) for m in found]


def test_korean_spans_are_exact_character_offsets(shipped):
    text = "야 이 개새끼야, 아 씨 발 진짜 ㅅㅂ"
    found = shipped.match(text)
    assert [(m.start, m.end, m.text, m.term) for m in found] == [
        (4, 7, "개새끼", "개새끼"), (12, 15, "씨 발", "씨발"), (19, 21, "ㅅㅂ", "ㅅㅂ")]
    assert all(m.category and m.sources for m in found)


@pytest.mark.parametrize("text, expected", [
    ("시1발 진짜 왜 이래", "시1발"), ("ㅅㅂ 또 졌네", "ㅅㅂ"), ("씨 발 뭐하냐", "씨 발"),
    ("씨.발 렉 걸렸어", "씨.발"), ("ㅄ 인증하네", "ㅄ"), ("씨\u200b발", "씨\u200b발"),
    ("개 새 끼 야", "개 새 끼"), ("ｓｈｉｔ happens", "ｓｈｉｔ"), ("what an a$$hole", "a$$hole"),
    ("sh1t, I missed", "sh1t"),
])
def test_obfuscations_are_flagged_with_their_original_characters(shipped, text, expected):
    assert expected in [t for _, _, t in spans(shipped, text)]


@pytest.mark.parametrize("text", [
    "여기가 우리 여행의 시발점이야", "수박씨 발라 먹어야 돼", "이 역이 첫차 시발역이에요", "저 개발자 지망생이에요",
    "개인 정보는 채팅에 올리지 마세요", "다섯 시 발표 준비 다 했어?", "아저씨 발 냄새", "이미 친구 추가했어",
    "Our class will assess it", "I grew up near Scunthorpe", "The assassin is strong", "",
])
def test_innocent_words_that_contain_terms_are_not_flagged(shipped, text):
    assert shipped.match(text) == []


def test_a_single_syllable_term_matches_only_a_whole_word():
    lexicon = small("add 썅 | profanity")
    assert spans(lexicon, "썅 또 졌어") == [(0, 1, "썅")]
    assert lexicon.match("썅년아") == [] and lexicon.match("아썅") == []


def test_english_terms_match_whole_words_only():
    lexicon = small()
    assert spans(lexicon, "Shut the FUCK up") == [(9, 13, "FUCK")]
    assert lexicon.match("fuckwit") == [] and lexicon.match("mcfuck") == []


def test_overrides_add_remove_and_allow_use_the_same_normalisation():
    lexicon = small("add 개 . 같 은 | insult\nremove 씨 1 발\nallow 수박 씨발라")
    assert [(m.text, m.term, m.category, m.sources) for m in lexicon.match("개1같은 소리")] == [
        ("개1같은", "개같은", "insult", ("overrides",))]
    assert lexicon.match("아 씨발") == []
    assert lexicon.match("개새끼 수박씨 발라") and spans(lexicon, "수박씨 발라 개새끼") == [(7, 10, "개새끼")]


def test_an_added_term_a_source_has_keeps_both_sources():
    (found,) = small("add 개새끼 | insult").match("개새끼")
    assert (found.category, found.sources) == ("insult", ("overrides", "test"))


def test_a_match_reaching_beyond_an_allowed_word_still_counts():
    lexicon = small("add 시발점 | profanity\nallow 시발")
    assert spans(lexicon, "시발점") == [(0, 3, "시발점")]


def test_a_lexicon_json_of_another_format_is_refused():
    with pytest.raises(ValueError, match="re-export"):
        match.build({"format": match.LEXICON_FORMAT + 1, "terms": []})


@pytest.mark.parametrize("line, message", [
    ("ban 씨발", "unknown directive"), ("add", "needs a term"), ("remove 씨발 | insult", "only add"),
    ("add 씨발 | Bad Category", "snake_case"),
])
def test_a_bad_overrides_line_is_refused_with_its_line_number(line, message):
    with pytest.raises(ValueError, match=rf"overrides.txt:3: .*{message}"):
        match.parse_overrides(f"# comment\n\n{line}\n", "overrides.txt")


def test_the_committed_overrides_file_parses_and_allows_the_required_traps(overrides):
    assert {"시발점", "수박씨발라"} <= overrides.allow
    assert "kill" in overrides.remove


def test_the_shipped_combination_meets_the_targets_on_the_evaluation_set(document, overrides):
    samples = eval_lexicon.read_samples()
    assert len(samples) >= 300 and {s.kind for s in samples} == set(eval_lexicon.KINDS)
    result = eval_lexicon.lexicon_score(document, export_lexicon.DEFAULT_SOURCES, samples, overrides, repeats=0)
    precision, recall, _ = result.prf(samples)
    assert precision >= PRECISION_TARGET and recall >= RECALL_TARGET, (precision, recall)


def test_the_exporter_assembles_lexicon_json_from_the_installed_packages(tmp_path):
    assert export_lexicon.main(["--repository", str(tmp_path), "--sources", *export_lexicon.SOURCES]) == 0
    model_dir = tmp_path / "lexicon"
    data = json.loads((model_dir / "1" / "lexicon.json").read_text(encoding="utf-8"))
    assert set(data["sources"]) == set(export_lexicon.SOURCES)
    assert all(info["terms"] > 100 and info["version"] and info["licence"] for info in data["sources"].values())
    by_term = {t["term"]: t for t in data["terms"]}
    assert {"badwords-ko", "koslang"} <= set(by_term["씨발"]["sources"]) and "korcen" in by_term["ㅅㅂ"]["sources"]
    assert by_term["fuck"]["sources"] == ["better-profanity"] and "시발점" in {a["word"] for a in data["allowed"]}
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.backend, [i.name for i in config.input], [o.name for o in config.output]) == (
        "lexicon", "python", ["TEXT"], ["MATCHES"])
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "lexicon": "lexicon.json", "overrides": "overrides.txt"}
    assert {p.name for p in (model_dir / "1").glob("*.py")} == {"model.py", "lexicon_match.py"}
    served = match.load(model_dir / "1" / "lexicon.json", model_dir / "overrides.txt")
    assert served.match("시발점") == [] and served.match("시1발")
