"""The classifier's training data and its measures, without torch: BEEP!, K-MHaS and CSV files,
the dev split, bad files, and the calibrated threshold."""

from __future__ import annotations

import pytest

from scripts.train.datasets import CATEGORIES, DatasetError, concat, dev_split, read_labelled
from scripts.train.metrics import at_threshold, calibrate, category_recall

BEEP = ("comments\tcontain_gender_bias\tbias\thate\n"
        "좋은 하루 \"보내세요\"\tFalse\tnone\tnone\n"
        "꺼져 이 병신아\tFalse\tothers\toffensive\n"
        "여자는 다 그래\tTrue\tgender\thate\n")
KMHAS = "document\tlabel\n좋은 노래네요\t8\n전라도 놈들은\t0\n늙은이 여자가\t4,5\n"


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_each_format_is_told_by_its_header_and_read_with_its_labels(tmp_path):
    beep = read_labelled(write(tmp_path, "train.tsv", BEEP))
    assert beep.texts[0] == '좋은 하루 "보내세요"'  # bare quotes in a TSV are text
    assert beep.harmful == [0, 1, 1] and beep.categories == [None, None, None]
    kmhas = read_labelled(write(tmp_path, "kmhas.txt", KMHAS))
    assert kmhas.harmful == [0, 1, 1]
    assert kmhas.categories[0] == (0,) * len(CATEGORIES)
    assert [CATEGORIES[i] for i, on in enumerate(kmhas.categories[2]) if on] == ["age", "gender"]
    csv = read_labelled(write(tmp_path, "rows.csv", "\ufefftext,label,note\n안녕,0,x\n닥쳐,1,y\n"))
    assert (csv.texts, csv.harmful) == (["안녕", "닥쳐"], [0, 1])


def test_a_format_named_for_a_file_that_is_not_it_names_the_missing_columns(tmp_path):
    with pytest.raises(DatasetError, match=r"missing column\(s\) document, label"):
        read_labelled(write(tmp_path, "train.tsv", BEEP), "kmhas")


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("document\tlabel\n", "has a header but no rows"),
    ("document\tlabels\n좋아\t8\n", "line 1: header 'document|labels' is no known format"),
    ("document\tlabel\n좋아\t9\n", "line 2: label '9' is not a comma list of categories 0-7"),
    ("document\tlabel\n좋아\t8\n싫어\t3,8\n", "line 3: label '3,8'"),
    ("document\tlabel\n좋아\tx\n", "line 2: label 'x'"),
    ("document\tlabel\n \t8\n", "line 2: empty text"),
    ("document\tlabel\n좋아\n", "line 2: too few fields"),
    ("comments\thate\n좋아\tneutral\n", "line 2: hate label 'neutral' is not one of hate, offensive, none"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_line(tmp_path, text, message):
    path = write(tmp_path, "data.tsv", text)
    with pytest.raises(DatasetError) as error:
        read_labelled(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_the_dev_split_is_fixed_disjoint_and_complete(tmp_path):
    rows = "".join(f"문장 {i}\t{i % 9 if i % 9 != 8 else 8}\n" for i in range(200))
    data = read_labelled(write(tmp_path, "kmhas.txt", "document\tlabel\n" + rows))
    train, dev = dev_split(data, 0.2)
    again_train, again_dev = dev_split(read_labelled(tmp_path / "kmhas.txt"), 0.2)
    assert dev.texts == again_dev.texts and train.texts == again_train.texts  # same file, same split
    assert len(dev) == 40 and len(train) == 160 and not set(dev.texts) & set(train.texts)
    assert dev.name.endswith("(dev split)") and dev.has_categories
    both = concat("both", [train, dev])
    assert sorted(both.texts) == sorted(data.texts) and len(both.categories) == len(both)


def test_the_calibrated_threshold_is_the_lowest_that_reaches_the_precision():
    labels = [1, 1, 0, 1, 0, 1, 0, 0]
    scores = [0.95, 0.9, 0.85, 0.8, 0.6, 0.55, 0.3, 0.1]
    chosen = calibrate(labels, scores, 0.75, "dev")
    assert chosen.reached and chosen.threshold == 0.8  # 3 of the 4 rows at or above 0.8 are harmful
    metrics = at_threshold(labels, scores, chosen.threshold)
    assert metrics["precision"] == 0.75 and metrics["recall"] == 0.75
    unreachable = calibrate([0, 1, 0], [0.9, 0.5, 0.4], 0.9, "dev")
    assert not unreachable.reached and unreachable.threshold == 0.5 and unreachable.precision == 0.5


def test_category_recall_leaves_rows_without_categories_out():
    categories = [(1, 0), (1, 0), None, (0, 1)]
    scores = [[0.9, 0.1], [0.2, 0.1], [0.9, 0.9], [0.1, 0.7]]
    report = category_recall(categories, scores, ("origin", "physical"))
    assert report["origin"] == {"rows": 2, "recall": 0.5, "precision": 1.0}
    assert report["physical"] == {"rows": 1, "recall": 1.0, "precision": 1.0}
