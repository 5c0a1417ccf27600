"""`make classifier`: missing data stops it before any work, and a step is redone only when asked
for with other settings."""

from __future__ import annotations

import logging

from scripts.train import build_classifier, pretrain_electra


def test_missing_data_exits_2_naming_every_missing_file(tmp_path, caplog):
    (tmp_path / "kmhas").mkdir()
    (tmp_path / "kmhas" / "kmhas_valid.txt").write_text("document\tlabel\n안녕\t8\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        code = build_classifier.main(["--data", str(tmp_path), "--work", str(tmp_path / "work")])
    assert code == build_classifier.EXIT_BAD_INPUT
    for relative in ("labeled/train.tsv", "labeled/dev.tsv", "unlabeled_comments_5.txt"):
        assert relative in caplog.text
    assert "kmhas_valid.txt" not in caplog.text.split("missing under")[1]
    assert not (tmp_path / "work").exists()


def test_a_step_is_current_only_when_done_with_the_same_settings(tmp_path):
    settings = {"epochs": 2, "seed": 42}
    assert not build_classifier.current(tmp_path, settings, done=True)  # never recorded
    build_classifier.record(tmp_path, settings)
    assert build_classifier.current(tmp_path, settings, done=True)
    assert not build_classifier.current(tmp_path, settings, done=False)  # e.g. stopped before its marker
    assert not build_classifier.current(tmp_path, {**settings, "epochs": 3}, done=True)


def test_pretraining_refuses_an_empty_or_tiny_corpus_with_exit_2(tmp_path, caplog):
    empty, tiny = tmp_path / "empty.txt", tmp_path / "tiny.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    tiny.write_text("안녕하세요\n반갑습니다\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        assert pretrain_electra.main(["--text", str(empty), "--out", str(tmp_path / "a")]) == 2
        assert pretrain_electra.main(["--text", str(tiny), "--out", str(tmp_path / "b")]) == 2
    assert f"{empty}: no text in it" in caplog.text and "only 2 distinct comments" in caplog.text


def test_a_stopped_step_resumes_only_with_the_same_settings(tmp_path):
    settings = {"epochs": 6}
    assert not build_classifier.resumable(tmp_path, settings, force=False)  # first run: nothing to resume
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"saved")
    assert build_classifier.resumable(tmp_path, settings, force=False) and checkpoint.exists()
    assert not build_classifier.resumable(tmp_path, {"epochs": 8}, force=False)  # another recipe
    assert not checkpoint.exists()  # its checkpoint would be refused, so it is dropped
    build_classifier.record(tmp_path, {"epochs": 8})
    assert not (tmp_path / build_classifier.PENDING).exists()


def test_check_data_only_checks(tmp_path):
    for relative in build_classifier.DATA_FILES.values():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x\n", encoding="utf-8")
    work = tmp_path / "work"
    assert build_classifier.main(["--data", str(tmp_path), "--work", str(work), "--check-data"]) == 0
    assert not work.exists()
    (tmp_path / build_classifier.DATA_FILES["beep_dev"]).unlink()
    assert build_classifier.main(["--data", str(tmp_path), "--work", str(work), "--check-data"]) == 2
