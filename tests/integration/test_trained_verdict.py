"""A fine-tuned KoELECTRA, exported as trained, takes part in the verdict on the real tritonserver
and edge: the ensemble publishes it, the ready event lists it, and a segment it scores harmful
carries the classifier among its reasons."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import shutil
import subprocess
import sys

import httpx
import pytest

from edge.client import stream
from moderation.protocol import ReadyEvent, SegmentEvent
from scripts.cli import REPO_ROOT
from scripts.export import export_ensemble, export_koelectra, triton_config
from scripts.export.triton_config import LexiconValues, WhisperValues
from scripts.service.launch import free_port, running_edge
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import write_words
from scripts.train import TRAINING_MARKER
from tests.integration.test_finetune_koelectra import FINETUNE_TIMEOUT_S, TRAINING_FLAGS, write_csv

SUBJECTS = ["this game", "that round", "your team", "the map", "my mouse", "this server", "the match", "our squad"]
CLEAN = ["great", "fun", "good", "fine", "nice", "awesome", "cool", "okay"]
HARMFUL = ["shit", "fucking trash", "crap", "bullshit"]
PROFANE, CLEAN_TWIN = ["this", "game", "is", "shit"], ["this", "game", "is", "great"]


def english_lines(seed: int = 3) -> list[tuple[str, int]]:
    """Short English chat lines, harmful exactly when they hold a swear word, some capitalised and
    punctuated as Whisper writes them."""
    rng = random.Random(seed)
    rows = [(f"{s} {v} {w}", label) for s, v in itertools.product(SUBJECTS, ("is", "was"))
            for words, label in ((CLEAN, 0), (HARMFUL, 1)) for w in words]
    rows = [(text.capitalize() + "." if rng.random() < 0.5 else text, label) for text, label in rows]
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def trained_repository(model_repository, tmp_path_factory):
    """The exported whisper and lexicon (shared version dirs), a KoELECTRA fine-tuned here and
    exported as trained, and the ensemble over them."""
    tmp = tmp_path_factory.mktemp("trained")
    rows = english_lines()
    train, held_out = write_csv(tmp / "train.csv", rows[16:]), write_csv(tmp / "eval.csv", rows[:16])
    base = REPO_ROOT / ".cache" / "koelectra-small-untrained"
    command = [sys.executable, "-m", "scripts.train.finetune_koelectra", "--train", str(train), "--eval",
               str(held_out), "--base", str(base), "--out", str(tmp / "finetuned"), *TRAINING_FLAGS]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=FINETUNE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    repo = tmp / "repo"
    assert export_koelectra.main(["--source", str(tmp / "finetuned"), "--repository", str(repo)]) == 0
    for model, values in (("whisper", WhisperValues), ("lexicon", LexiconValues)):
        triton_config.write_variant(model_repository / model, repo, triton_config.read(model_repository / model,
                                                                                       values))
    shutil.copy2(model_repository / "lexicon" / "overrides.txt", repo / "lexicon" / "overrides.txt")
    export_ensemble.export(repo)
    return repo


@pytest.fixture(scope="module")
def trained_edge(trained_repository, tmp_path_factory):
    logs = tmp_path_factory.mktemp("trained-logs")
    ports = Ports(free_port(), free_port(), free_port())
    with open(logs / "triton.log", "wb") as triton_log, TritonServer(trained_repository, ports, log_file=triton_log), \
            open(logs / "edge.log", "wb") as edge_log, \
            running_edge(free_port(), f"127.0.0.1:{ports.grpc}", edge_log, triton_timeout_s=60) as edge:
        yield edge.address


def test_a_trained_classifier_joins_the_verdict(trained_edge, tmp_path):
    results = {}
    for name, words in (("profane", PROFANE), ("clean", CLEAN_TWIN)):
        write_words(words, tmp_path / f"{name}.wav")
        results[name] = asyncio.run(stream(tmp_path / f"{name}.wav", f"ws://{trained_edge}/ws/audio", language="en"))
    ready = results["profane"].events[0]
    assert isinstance(ready, ReadyEvent) and ready.signals == ["lexicon", "classifier"]
    (profane,) = results["profane"].of_type(SegmentEvent)
    (clean,) = results["clean"].of_type(SegmentEvent)
    assert profane.reasons == ["lexicon", "classifier"] and profane.harmful_prob >= 0.5, profane
    assert {span.source for span in profane.harmful_spans} == {"lexicon", "classifier"}
    assert not clean.is_harmful and clean.harmful_prob < 0.5 and clean.confidence == round(1 - clean.harmful_prob, 4)


def test_readyz_reports_the_classifier_and_the_threshold_its_training_calibrated(trained_edge, trained_repository):
    info = json.loads((trained_repository / "koelectra" / "1" / "model_info.json").read_text(encoding="utf-8"))
    calibrated = info["training"]["threshold"]["threshold"]
    assert info["training"] == json.loads((trained_repository.parent / "finetuned" / TRAINING_MARKER).read_text())
    ready = httpx.get(f"http://{trained_edge}/readyz", timeout=10).json()
    assert ready["signals"] == ["lexicon", "classifier"] and ready["classifier_threshold"] == calibrated


def test_text_moderation_runs_the_same_models_and_verdict_as_a_segment(trained_edge):
    texts = [" ".join(PROFANE), " ".join(CLEAN_TWIN), "Your team was crap."]
    response = httpx.post(f"http://{trained_edge}/v1/moderations", json={"input": texts}, timeout=60)
    assert response.status_code == 200, response.text
    profane, clean, unseen = response.json()["results"]
    assert profane["flagged"] and profane["reasons"] == ["lexicon", "classifier"]
    assert {span["source"] for span in profane["spans"]} == {"lexicon", "classifier"}
    assert profane["spans"][0]["text"] == "shit" and profane["spans"][0]["start"] == texts[0].index("shit")
    assert not clean["flagged"] and clean["category_scores"]["harmful"] < 0.5
    assert unseen["flagged"]  # "crap" is listed, and the classifier learned it
    too_many = httpx.post(f"http://{trained_edge}/v1/moderations", json={"input": []}, timeout=60)
    assert too_many.status_code == 400 and too_many.json()["detail"]["code"] == "empty_input"
