"""Fine-tuning KoELECTRA on a labelled CSV, and exporting the result as a *trained* classifier.

The base is the offline untrained small KoELECTRA; the data are synthetic Korean chat lines in
which the harmful ones, and only they, carry a swear word, so a few CPU epochs learn them.
"""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys

import pytest

from scripts.cli import REPO_ROOT
from scripts.export import export_koelectra, triton_config
from scripts.train import TRAINING_MARKER
from scripts.train import finetune_koelectra as finetune
from scripts.train.datasets import CATEGORIES, HEADS

SUBJECTS = ["너", "저 사람", "우리 팀", "상대 팀", "그 친구", "오늘 정글", "미드 라이너", "서포터", "방장", "형"]
CLEAN_PHRASES = ["정말 잘한다", "오늘 컨디션 좋네요", "같이 게임해요", "수고하셨습니다", "다음 판도 화이팅",
                 "덕분에 이겼어요", "고마워요 정말", "천천히 해도 괜찮아", "재미있게 합시다", "좋은 하루 보내세요",
                 "한 판 더 할까요", "실수해도 괜찮아요"]
SWEAR_WORDS = ["씨발", "개새끼", "병신", "존나", "미친놈아", "좆같네", "꺼져", "닥쳐"]
ROWS, TRAIN_ROWS = 200, 150
"""Half harmful; the first TRAIN_ROWS (shuffled) train, the rest are held out."""
DATA_SEED = 7
TRAINING_FLAGS = ["--epochs", "10", "--batch-size", "8", "--lr", "3e-4", "--seed", "1", "--threads", "1"]
"""A randomly initialised encoder needs a higher rate and more epochs than a pretrained one: measured
at 0.96-1.00 held-out accuracy over seeds 1-6, ~16 s. One thread: beside the integration tier's
servers on a small machine, PyTorch's default of one per core runs many times slower."""
MIN_GAIN = 0.2
"""Held-out accuracy the fine-tuned model must gain over the untrained one (which says 'normal' to all)."""
FINETUNE_TIMEOUT_S = 300


def chat_lines(count: int, seed: int) -> list[tuple[str, int]]:
    """Distinct lines (so no held-out line was seen in training), subject + phrase; every other one
    gets a swear word at a random place and label 1."""
    rng = random.Random(seed)
    rows: dict[str, int] = {}
    while len(rows) < count:
        words = [rng.choice(SUBJECTS), rng.choice(CLEAN_PHRASES)]
        harmful = len(rows) % 2
        if harmful:
            words.insert(rng.randrange(len(words) + 1), rng.choice(SWEAR_WORDS))
        rows.setdefault(" ".join(words), harmful)
    lines = list(rows.items())
    rng.shuffle(lines)
    return lines


def write_csv(path, rows, header=("text", "label")):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def finetuned(untrained_base, tmp_path_factory):
    """The CLI run in its own process (its --threads must not change this one); returns its --out."""
    tmp = tmp_path_factory.mktemp("finetune")
    rows = chat_lines(ROWS, DATA_SEED)
    train_csv = write_csv(tmp / "train.csv", rows[:TRAIN_ROWS])
    eval_csv = write_csv(tmp / "eval.csv", rows[TRAIN_ROWS:])
    out = tmp / "koelectra-finetuned"
    command = [sys.executable, "-m", "scripts.train.finetune_koelectra", "--train", str(train_csv),
               "--eval", str(eval_csv), "--base", str(untrained_base), "--out", str(out), *TRAINING_FLAGS]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=FINETUNE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "before training" in done.stdout and "after training" in done.stdout
    return out


def test_finetuning_beats_the_untrained_model_on_held_out_rows(finetuned, untrained_base):
    metrics = json.loads((finetuned / finetune.METRICS_NAME).read_text(encoding="utf-8"))
    before, after = metrics["before"]["accuracy"], metrics["after"]["accuracy"]
    assert after >= before + MIN_GAIN, f"held-out accuracy {before:.3f} -> {after:.3f}"
    assert metrics["base"] == str(untrained_base)
    assert (metrics["train"]["rows"], metrics["eval"]["rows"]) == (TRAIN_ROWS, ROWS - TRAIN_ROWS)
    assert metrics["eval"]["name"].endswith("eval.csv")
    assert metrics["parameters"]["epochs"] == 10 and metrics["parameters"]["lr"] == 3e-4
    assert set(metrics["after"]) >= {"accuracy", "precision", "recall", "f1"}
    marker = json.loads((finetuned / TRAINING_MARKER).read_text(encoding="utf-8"))
    assert marker == {"trained": True, "base": str(untrained_base), "metrics": metrics["after"],
                      "heads": ["harmful"], "threshold": metrics["threshold"]}  # a CSV teaches no categories
    assert metrics["threshold"]["calibrated_on"].endswith("eval.csv")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in finetuned.iterdir()}


def test_the_finetuned_checkpoint_exports_as_trained(finetuned, tmp_path):
    repo = tmp_path / "repo"
    assert export_koelectra.main(["--source", str(finetuned), "--repository", str(repo)]) == 0  # parity included
    info = json.loads((repo / "koelectra" / "1" / "model_info.json").read_text(encoding="utf-8"))
    assert info["trained"] is True and info["untrained"] is False
    assert info["training"] == json.loads((finetuned / TRAINING_MARKER).read_text(encoding="utf-8"))
    assert json.loads((repo / "koelectra" / triton_config.VALUES_NAME).read_text())["trained"] is True
    assert triton_config.read(repo / "koelectra", triton_config.KoelectraValues).trained


def test_trained_comes_from_the_marker_or_the_flag_only(finetuned, untrained_base):
    def trained(*flags: str) -> bool:
        return export_koelectra.config_values(export_koelectra.parse_args(list(flags))).trained

    assert trained("--source", str(finetuned))
    assert not trained("--source", str(untrained_base))  # no marker: a random head
    assert trained("--source", str(untrained_base), "--trained")  # fine-tuned elsewhere, on the operator's word
    assert not trained()  # the default hub base: pretrained encoder, random head
    assert not trained("--untrained")


@pytest.mark.parametrize(("train_text", "message"), [
    ("", "is empty"),
    ("text,label\n", "has a header but no rows"),
    ("sentence,label\n안녕하세요,0\n", "missing column(s) text"),
    ("text,labels\n안녕하세요,0\n", "missing column(s) label"),
    ("text,label\n안녕하세요,0\n꺼져,2\n", "line 3: label '2' is not 0 or 1"),
    ("text,label\n꺼져,harmful\n", "line 2: label 'harmful' is not 0 or 1"),
    ("text,label\n안녕하세요\n", "line 2: too few fields"),
    ("text,label\n ,1\n", "line 2: empty text"),
])
def test_a_bad_training_csv_exits_2_naming_the_problem(tmp_path, caplog, train_text, message):
    train_csv = tmp_path / "train.csv"
    train_csv.write_text(train_text, encoding="utf-8")
    eval_csv = write_csv(tmp_path / "eval.csv", [("안녕하세요", 0), ("꺼져", 1)])
    out = tmp_path / "out"
    code = finetune.main(["--train", str(train_csv), "--eval", str(eval_csv), "--base", "never-loaded",
                          "--out", str(out)])
    assert code == 2
    assert message in caplog.text and str(train_csv) in caplog.text
    assert not out.exists()


def test_a_bad_or_missing_eval_csv_exits_2(tmp_path, caplog):
    train_csv = write_csv(tmp_path / "train.csv", [("안녕하세요", 0), ("꺼져", 1)])
    bad_eval = write_csv(tmp_path / "eval.csv", [("꺼져", "yes")])
    args = ["--train", str(train_csv), "--base", "never-loaded", "--out", str(tmp_path / "out")]
    assert finetune.main([*args, "--eval", str(bad_eval)]) == 2
    assert "label 'yes' is not 0 or 1" in caplog.text
    assert finetune.main([*args, "--eval", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such file" in caplog.text


def test_non_positive_training_parameters_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        finetune.parse_args(["--train", "t.csv", "--eval", "e.csv", "--base", "b", "--out", "o", "--epochs", "0"])
    assert exc.value.code == 2 and "must be > 0" in capsys.readouterr().err


# --- BEEP!- and K-MHaS-format files, categories, and a run stopped and resumed ------------------

RESUME_FLAGS = ["--epochs", "3", "--batch-size", "8", "--lr", "3e-4", "--seed", "3", "--threads", "1",
                "--log-every-s", "0.01", "--checkpoint-every", "1000", "--kmhas-dev-fraction", "0.25"]


def write_formats(tmp, rows: list[tuple[str, int]]):
    """The rows as a BEEP! TSV (first half: harmful only) and a K-MHaS TSV (second half: a swear
    word is profanity, 3), with a CSV to evaluate on."""
    half = len(rows) // 2
    beep = tmp / "beep.tsv"
    beep.write_text("comments\tcontain_gender_bias\tbias\thate\n" + "".join(
        f"{text}\tFalse\tnone\t{'offensive' if harmful else 'none'}\n" for text, harmful in rows[:half]),
        encoding="utf-8")
    kmhas = tmp / "kmhas.txt"
    kmhas.write_text("document\tlabel\n" + "".join(f"{text}\t{3 if harmful else 8}\n" for text, harmful in rows[half:]),
                     encoding="utf-8")
    return beep, kmhas


def finetune_command(untrained_base, beep, kmhas, eval_csv, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scripts.train.finetune_koelectra", "--train", str(beep), str(kmhas),
            "--eval", str(eval_csv), "--base", str(untrained_base), "--out", str(out), *RESUME_FLAGS, *extra]


def stop_after_a_few_steps(command: list[str]) -> tuple[int, str]:
    """Runs ``command``, sends SIGINT once it logs its third step; (exit code, stderr)."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if " step 3/" in line:
                process.send_signal(signal.SIGINT)
        return process.wait(timeout=FINETUNE_TIMEOUT_S), "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()


def test_real_formats_train_the_categories_and_a_stopped_run_resumes_exactly(untrained_base, tmp_path):
    rows = chat_lines(160, DATA_SEED + 1)
    beep, kmhas = write_formats(tmp_path, rows[:128])
    eval_csv = write_csv(tmp_path / "eval.csv", rows[128:])
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    done = subprocess.run(finetune_command(untrained_base, beep, kmhas, eval_csv, whole), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=FINETUNE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left" in done.stderr and "epoch 3/3 step" in done.stderr  # progress lines

    code, stderr = stop_after_a_few_steps(finetune_command(untrained_base, beep, kmhas, eval_csv, resumed))
    assert code == 130, stderr
    assert (resumed / "checkpoint.pt").is_file() and not (resumed / TRAINING_MARKER).exists()
    done = subprocess.run(finetune_command(untrained_base, beep, kmhas, eval_csv, resumed, "--resume"),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=FINETUNE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stderr and not (resumed / "checkpoint.pt").exists()

    report = json.loads((whole / finetune.METRICS_NAME).read_text(encoding="utf-8"))
    again = json.loads((resumed / finetune.METRICS_NAME).read_text(encoding="utf-8"))
    assert again["train_loss"] == pytest.approx(report["train_loss"], abs=1e-6)  # the same training, resumed
    assert again["after"] == report["after"]
    dev = report["evals"][1]
    assert dev["name"].endswith("kmhas.txt (dev split)") and dev["rows"] == 16  # 25 % of K-MHaS's 64 rows
    assert report["train"]["rows"] == 64 + 48 and report["threshold"]["calibrated_on"] == dev["name"]
    assert set(dev["after"]["categories"]) == set(CATEGORIES) and report["heads"] == list(HEADS)
    assert dev["after"]["categories"]["profanity"]["rows"] == dev["harmful_rows"] > 0
    assert report["train_loss"][-1] < report["train_loss"][0]  # it learns (how well: the test above)


def test_resuming_another_runs_checkpoint_is_refused(untrained_base, tmp_path, caplog):
    rows = chat_lines(48, DATA_SEED + 2)
    beep, kmhas = write_formats(tmp_path, rows[:32])
    eval_csv = write_csv(tmp_path / "eval.csv", rows[32:])
    out = tmp_path / "out"
    code, stderr = stop_after_a_few_steps(finetune_command(untrained_base, beep, kmhas, eval_csv, out))
    assert code == 130, stderr
    argv = finetune_command(untrained_base, beep, kmhas, eval_csv, out, "--resume", "--lr", "1e-4")[3:]
    assert finetune.main(argv) == 2
    assert "is the checkpoint of another run" in caplog.text
