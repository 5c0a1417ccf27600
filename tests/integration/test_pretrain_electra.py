"""Pretraining the small ELECTRA with its own WordPiece vocabulary, then fine-tuning and exporting
it: the base the pretraining tool writes is one the fine-tuning tool and the exporter take as is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tokenizers import Tokenizer

from scripts.cli import REPO_ROOT
from scripts.export import export_koelectra
from scripts.train import pretrain_electra
from tests.integration.test_finetune_koelectra import (
    DATA_SEED,
    FINETUNE_TIMEOUT_S,
    TRAINING_FLAGS,
    chat_lines,
    write_csv,
)

CORPUS_LINES = 200
"""Distinct lines: the generator has 120 clean ones, and every other line is clean."""
ROWS, TRAIN_ROWS = 200, 150
VOCAB = 400


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    corpus = tmp / "comments.txt"
    corpus.write_text("\n".join(text for text, _ in chat_lines(CORPUS_LINES, DATA_SEED + 1)) + "\n", encoding="utf-8")
    out = tmp / "base"
    command = [sys.executable, "-m", "scripts.train.pretrain_electra", "--text", str(corpus), "--out", str(out),
               "--epochs", "2", "--batch-size", "32", "--vocab-size", str(VOCAB), "--threads", "1", "--seed", "5"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=FINETUNE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_pretraining_lowers_the_masked_lm_loss_and_saves_a_wordpiece_base(pretrained):
    report = json.loads((pretrained / pretrain_electra.REPORT_NAME).read_text(encoding="utf-8"))
    first, last = report["train_loss"]
    assert last < first, report["train_loss"]
    assert report["tokenizer"] == "wordpiece" and report["vocab_size"] <= VOCAB
    assert report["corpus"]["comments"] == CORPUS_LINES
    tokenizer = Tokenizer.from_file(str(pretrained / "tokenizer.json"))
    tokens = tokenizer.encode("오늘 정글 정말 잘한다").tokens
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "[UNK]" not in tokens
    assert "정말" in tokens  # a frequent word is one token, not its syllables


def test_the_pretrained_base_fine_tunes_and_exports_as_trained(pretrained, tmp_path):
    rows = chat_lines(ROWS, DATA_SEED)
    train, held_out = write_csv(tmp_path / "train.csv", rows[:TRAIN_ROWS]), write_csv(tmp_path / "eval.csv",
                                                                                     rows[TRAIN_ROWS:])
    out = tmp_path / "finetuned"
    command = [sys.executable, "-m", "scripts.train.finetune_koelectra", "--train", str(train), "--eval",
               str(held_out), "--base", str(pretrained), "--out", str(out), *TRAINING_FLAGS]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=FINETUNE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    after = json.loads((out / "training_metrics.json").read_text(encoding="utf-8"))["after"]
    assert after["accuracy"] >= 0.9, after
    repo = tmp_path / "repo"
    assert export_koelectra.main(["--source", str(out), "--repository", str(repo)]) == 0  # ONNX parity included
    assert (repo / "koelectra" / "1" / "tokenizer.json").read_bytes() != b""
