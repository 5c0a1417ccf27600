"""Measure the verdict on real labelled comments: the lexicon alone, the classifier alone, and both
(what the service decides: harmful when the lexicon matches or the classifier's score reaches the
threshold), with each category's recall.

    D=../shared/data
    python -m scripts.bench.verdict --classifier ./koelectra-finetuned \\
        --data $D/korean-hate-speech/labeled/dev.tsv --kmhas-dev $D/kmhas/kmhas_valid.txt

``--data`` files are measured whole; ``--kmhas-dev`` files are cut into the same fixed-seed dev
split the fine-tuning tool holds out of training (give the fraction it used), and only that split
is measured. With ``--reference-train`` (the classifier's training files), a character 1-4-gram
TF-IDF and logistic regression trained on the same rows (K-MHaS files less their dev split) is
measured beside it, as the plain baseline the classifier has to beat. The lexicon is the
exported one (model_repository/lexicon), run in-process; the classifier is a fine-tuned
checkpoint directory, run in-process with PyTorch, at the threshold its training calibrated
(``--threshold`` overrides); with ``--blend`` (scripts/train/ngram_blend.py's output, as
``make classifier`` serves it) the classifier's score is the blend, at the blend's threshold, and
KoELECTRA and the n-gram model alone are measured beside it. Prints Markdown for docs/MODERATION.md.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from scripts.cli import MODEL_REPOSITORY, machine, parser, setup_logging
from scripts.export import export_lexicon
from scripts.train import ngram_blend, read_training_marker
from scripts.train.datasets import (
    CATEGORIES,
    DEV_FRACTION,
    DatasetError,
    Labelled,
    concat,
    dev_split,
    hold_out_dev,
    read_labelled,
)
from scripts.train.finetune_koelectra import score_checkpoint
from scripts.train.metrics import Scores, at_threshold, binary_metrics, category_recall


def lexicon_flags(texts: list[str]) -> list[int]:
    """1 where the served lexicon (its export and overrides) matches anything."""
    match = export_lexicon.lexicon_match()
    lexicon = match.load(MODEL_REPOSITORY / "lexicon" / "1" / "lexicon.json",
                         MODEL_REPOSITORY / "lexicon" / "overrides.txt")
    return [int(bool(lexicon.match(text))) for text in texts]


def reference_model(paths: list[Path], fraction: float, calibration_fraction: float):
    """Character 1-4-gram TF-IDF + logistic regression on the rows the classifier trained on."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    parts, _ = hold_out_dev([read_labelled(path) for path in paths], fraction, calibration_fraction)
    train = concat("reference", parts)
    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=2000, C=4.0))
    return model.fit(train.texts, train.harmful)


def row(name: str, metrics: dict) -> str:
    return f"| {name} | {metrics['precision']:.2f} | {metrics['recall']:.2f} | {metrics['f1']:.2f} |"


def blended(scores: Scores, data: Labelled, blend: dict | None) -> tuple[Scores, list[str]]:
    """The served scores (the blend, with --blend) and table rows for its two parts at 0.5."""
    if blend is None:
        return scores, []
    ngram = ngram_blend.ngram_scores(blend["model"], data.texts)
    parts = [row("KoELECTRA alone (0.5)", at_threshold(data.harmful, scores.harmful, 0.5)),
             row("character n-gram NB-LR alone (0.5)", at_threshold(data.harmful, ngram.harmful, 0.5))]
    return Scores(ngram_blend.blend(scores.harmful, ngram.harmful, blend["weight"]),
                  ngram_blend.blend_categories(scores.categories, ngram.categories, blend["category_weight"])), parts


@dataclass(frozen=True)
class Served:
    """A set's labels, the classifier's served harmful scores and the lexicon's flags."""

    name: str
    labels: list[int]
    scores: list[float]
    lexicon: list[int]

    def at(self, threshold: float) -> dict:
        flags = [int(lex or s >= threshold) for s, lex in zip(self.scores, self.lexicon, strict=True)]
        return binary_metrics(self.labels, flags)


def lowest_threshold(sets: list[Served], precision: float) -> float | None:
    """The lowest threshold at which the served verdict reaches ``precision`` on every set."""
    candidates = sorted({s for served in sets for s in served.scores})
    return next((t for t in candidates if all(served.at(t)["precision"] >= precision for served in sets)), None)


def threshold_table(sets: list[Served], precision: float) -> list[str]:
    """Each set's own best threshold for ``precision``, and the one threshold that gives it on all."""
    lines = [f"### One threshold for every set, at precision >= {precision:.2f} (served verdict)", "",
             "| threshold chosen for | threshold | " + " | ".join(f"F1 on {s.name}" for s in sets) + " |",
             "|---|---:|" + "---:|" * len(sets)]
    for chosen_for in [[s] for s in sets] + [sets]:
        threshold = lowest_threshold(chosen_for, precision)
        name = "all of them" if len(chosen_for) > 1 else chosen_for[0].name
        if threshold is None:
            lines.append(f"| {name} | none reaches it |" + " |" * len(sets))
            continue
        lines.append(f"| {name} | {threshold:.3f} | " + " | ".join(
            f"{s.at(threshold)['f1']:.2f} (P {s.at(threshold)['precision']:.2f})" for s in sets) + " |")
    return [*lines, ""]


def report(data: Labelled, checkpoint: Path, threshold: float, reference=None,
           blend=None) -> tuple[list[str], Served]:
    lexicon = lexicon_flags(data.texts)
    (scores,) = score_checkpoint(checkpoint, [data])
    scores, parts = blended(scores, data, blend)
    classifier = [int(s >= threshold) for s in scores.harmful]
    both = [max(a, b) for a, b in zip(lexicon, classifier, strict=True)]
    name = "classifier (KoELECTRA + n-gram blend)" if blend else "classifier"
    lines = [f"### {data.name} ({len(data)} rows, {data.harmful_rows} harmful)", "",
             "| verdict | precision | recall | F1 |", "|---|---:|---:|---:|",
             row("lexicon alone", binary_metrics(data.harmful, lexicon)), *parts,
             row(f"{name} alone (threshold {threshold:.3f})", binary_metrics(data.harmful, classifier)),
             row("served: lexicon or classifier", binary_metrics(data.harmful, both))]
    if reference is not None:
        predicted = [int(p >= 0.5) for p in reference.predict_proba(data.texts)[:, 1]]
        lines.append(row("reference: char 1-4-gram TF-IDF + logistic regression (0.5)",
                         binary_metrics(data.harmful, predicted)))
    lines.append("")
    if data.has_categories:
        recall = category_recall(data.categories, scores.categories, CATEGORIES)
        lines += ["| category | rows | recall | precision |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {r['rows']} | {r['recall']:.2f} | {r['precision']:.2f} |" for name, r in recall.items()]
        lines.append("")
    return lines, Served(data.name, data.harmful, scores.harmful, lexicon)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--classifier", type=Path, required=True, help="fine-tuned checkpoint directory")
    p.add_argument("--data", type=Path, nargs="*", default=[], help="labelled files measured whole")
    p.add_argument("--kmhas-dev", type=Path, nargs="*", default=[], help="K-MHaS files: only their dev split")
    p.add_argument("--kmhas-dev-fraction", type=float, default=DEV_FRACTION)
    p.add_argument("--calibration-fraction", type=float, default=0.0,
                   help="as the fine-tuning tool's: the share of the other --reference-train files held out")
    p.add_argument("--threshold", type=float, help="default: the one the training (or the blend) calibrated")
    p.add_argument("--blend", type=Path, help="scripts/train/ngram_blend.py's --out: measure the served blend")
    p.add_argument("--precision", type=float, default=0.80,
                   help="the precision the threshold table (with several sets) is drawn for")
    p.add_argument("--reference-train", type=Path, nargs="*", default=[],
                   help="the classifier's --train files: also measure a TF-IDF reference trained on them")
    args = p.parse_args(argv)
    marker = read_training_marker(args.classifier) or {}
    blend, calibrated = None, marker.get("threshold", {})
    if args.blend is not None:
        import joblib

        settings = json.loads((args.blend / ngram_blend.BLEND_FILE).read_text(encoding="utf-8"))
        blend = {"model": joblib.load(args.blend / ngram_blend.NGRAM_FILE), "weight": settings["weight"],
                 "category_weight": settings["category_weight"]}
        calibrated = settings["threshold"]
    threshold = args.threshold if args.threshold is not None else calibrated.get("threshold", 0.5)
    try:
        sets = [read_labelled(path) for path in args.data]
        sets += [dev_split(read_labelled(path), args.kmhas_dev_fraction)[1] for path in args.kmhas_dev]
        reference = None
        if args.reference_train:
            reference = reference_model(args.reference_train, args.kmhas_dev_fraction, args.calibration_fraction)
    except DatasetError as exc:
        print(exc, file=sys.stderr)
        return 2
    started = time.monotonic()
    print(f"Measured {date.today()} on {machine()}: `python -m scripts.bench.verdict "
          f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    served = []
    for data in sets:
        lines, scored = report(data, args.classifier, threshold, reference, blend)
        print("\n".join(lines))
        served.append(scored)
    if len(served) > 1:
        print("\n".join(threshold_table(served, args.precision)))
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
