"""Pretrain the small offline ELECTRA on unlabelled Korean comments: a base for fine-tuning.

    .venv/bin/python -m scripts.train.pretrain_electra \\
        --text ../shared/data/korean-hate-speech/unlabeled/unlabeled_comments_5.txt \\
        --labelled ../shared/data/korean-hate-speech/labeled/train.tsv ../shared/data/kmhas/kmhas_valid.txt \\
        --out .cache/koelectra-small-pretrained

No pretrained Korean encoder can be downloaded offline, and a randomly initialised one must learn
Korean from the few thousand labelled rows alone. This tool first teaches it the language of the
comments by masked-language modelling (BERT's objective: 15 % of the tokens hidden, predicted
from the rest), on ``--text`` files (one comment per line) and the texts of ``--labelled`` files
(their labels unused; a K-MHaS file's dev split is held out exactly as the fine-tuning tool holds
it out, so no dev text is seen).

``--tokenizer wordpiece`` (the default) trains a WordPiece vocabulary on the same corpus with
Hugging Face ``tokenizers``: frequent words and endings become one token, so a comment is about
half as many tokens as with ``char`` (one token per Hangul syllable, the untrained model's
vocabulary), which both trains and serves faster. The result is an ELECTRA checkpoint and its
tokenizer in ``--out``; ``finetune_koelectra --base <out>`` fine-tunes it (a new head is added).
Progress, checkpoints, Ctrl-C and ``--resume`` work as in the fine-tuning tool; a fixed seed
makes a run reproducible on the same machine and threads.
Exit codes: 0 done, 2 bad arguments or bad data, 130 stopped (resume with --resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from scripts.cli import parser, setup_logging
from scripts.export.koelectra_untrained import SPECIAL_TOKENS, char_tokenizer, small_config
from scripts.train import loop, positive
from scripts.train.datasets import DEV_FRACTION, FORMATS, DatasetError, hold_out_dev, read_all
from scripts.train.loop import DEFAULT_CHECKPOINT_EVERY, DEFAULT_LOG_EVERY_S, RunOptions, TrainingParams

logger = logging.getLogger(__name__)

REPORT_NAME = "pretraining.json"
TOKENIZERS = ("wordpiece", "char")
DEFAULT_VOCAB_SIZE = 16000
"""WordPiece vocabulary: about the ~2,500 Hangul syllables of the corpus plus the frequent words
and endings; more would leave many tokens too rare to learn from 50,000 comments."""
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 5e-4
"""ELECTRA-small's pretraining rate (Clark et al., 2020)."""
DEFAULT_MAX_LENGTH = 64
"""Tokens per comment in pretraining: 95 % of the comments are shorter with WordPiece."""
MASK_PROBABILITY = 0.15
DEFAULT_SEED = 42
MODEL_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]
"""What the tokenizer returns: ELECTRA's inputs, as the exporter and the Triton model feed them."""
MIN_TEXTS = 100
"""Fewer comments than this teach nothing; refused as bad input."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--text", type=Path, nargs="*", default=[], help="plain text files, one comment per line")
    p.add_argument("--labelled", type=Path, nargs="*", default=[],
                   help="labelled files (BEEP!, K-MHaS, CSV) whose texts join the corpus, K-MHaS dev split held out")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto", help="format of the --labelled files")
    p.add_argument("--out", type=Path, required=True, help="directory for the pretrained model and tokenizer")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="wordpiece")
    p.add_argument("--vocab-size", type=positive(int), default=DEFAULT_VOCAB_SIZE, help="WordPiece vocabulary size")
    p.add_argument("--epochs", type=positive(int, allow_zero=True), default=DEFAULT_EPOCHS,
                   help="passes over the corpus; 0 saves the tokenizer and the randomly initialised model, the "
                        "from-scratch base to compare a pretrained one with")
    p.add_argument("--batch-size", type=positive(int), default=DEFAULT_BATCH_SIZE)
    p.add_argument("--lr", type=positive(float), default=DEFAULT_LR, help="peak learning rate")
    p.add_argument("--max-length", type=positive(int), default=DEFAULT_MAX_LENGTH)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch; 0 = its default")
    p.add_argument("--checkpoint-every", type=positive(int), default=DEFAULT_CHECKPOINT_EVERY)
    p.add_argument("--log-every-s", type=positive(float), default=DEFAULT_LOG_EVERY_S)
    p.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out")
    args = p.parse_args(argv)
    if not args.text and not args.labelled:
        p.error("give --text or --labelled files to pretrain on")
    return args


def read_text_file(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file; DatasetError naming it when it cannot be read."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read it as UTF-8 text: {exc}") from exc
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise DatasetError(f"{path}: no text in it")
    return texts


def read_corpus(args: argparse.Namespace) -> list[str]:
    """Every distinct comment of --text and --labelled (K-MHaS dev splits held out), in file order."""
    texts = [t for path in args.text for t in read_text_file(path)]
    training, _dev = hold_out_dev(read_all(args.labelled, args.format), DEV_FRACTION)
    texts += [t for part in training for t in part.texts]
    corpus = list(dict.fromkeys(texts))
    if len(corpus) < MIN_TEXTS:
        raise DatasetError(f"only {len(corpus)} distinct comments in the corpus; at least {MIN_TEXTS} are needed")
    return corpus


def train_wordpiece(corpus: list[str], vocab_size: int):
    """A BERT-style WordPiece tokenizer trained on ``corpus``; Hangul kept composed (NFC), no
    lower-casing or accent stripping (either would break syllables into jamo)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2,
                                                                    special_tokens=SPECIAL_TOKENS))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=MODEL_INPUTS)


def masked_lm_loss(model, tokenizer, corpus: list[str], max_length: int):
    """The loss of a batch of comments: BERT's masking (of the masked 15 %: 80 % [MASK], 10 % a
    random token, 10 % kept) by transformers' collator, drawn from torch's seeded RNG."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASK_PROBABILITY, return_tensors="pt")

    def loss_of(indices: list[int]) -> torch.Tensor:
        encoded = tokenizer([corpus[i] for i in indices], truncation=True, max_length=max_length)
        batch = collator([{"input_ids": ids} for ids in encoded["input_ids"]])
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss
    return loss_of


def make_tokenizer(args: argparse.Namespace, corpus: list[str]):
    if args.tokenizer == "char":
        return char_tokenizer()
    started = time.monotonic()
    tokenizer = train_wordpiece(corpus, args.vocab_size)
    logger.info("trained a %d-token WordPiece vocabulary in %.1f s", len(tokenizer), time.monotonic() - started)
    return tokenizer


def run(args: argparse.Namespace) -> dict:
    """Read, build the tokenizer, pretrain, save; returns what pretraining.json holds."""
    from transformers import ElectraForMaskedLM

    corpus = read_corpus(args)
    torch.manual_seed(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tokenizer = make_tokenizer(args, corpus)
    lengths = [len(ids) for ids in tokenizer(corpus, truncation=True, max_length=args.max_length)["input_ids"]]
    logger.info("corpus: %d comments, %.1f tokens each on average", len(corpus), sum(lengths) / len(lengths))
    model = ElectraForMaskedLM(small_config(len(tokenizer), pad_token_id=tokenizer.pad_token_id))
    params = TrainingParams(args.epochs, args.batch_size, args.lr, args.max_length, args.seed)
    fingerprint = {"corpus": len(corpus), "tokenizer": args.tokenizer, "vocab": len(tokenizer),
                   "parameters": asdict(params)}
    options = RunOptions(args.out / loop.CHECKPOINT_NAME, args.resume, args.checkpoint_every, args.log_every_s)
    started = time.monotonic()
    losses = loop.Trainer(model, masked_lm_loss(model, tokenizer, corpus, args.max_length), lengths, params, options,
                          loop.LoopState(fingerprint=fingerprint)).run()
    report = {"corpus": {"comments": len(corpus), "mean_tokens": round(sum(lengths) / len(lengths), 1),
                         "text": [str(p) for p in args.text], "labelled": [str(p) for p in args.labelled]},
              "tokenizer": args.tokenizer, "vocab_size": len(tokenizer), "parameters": asdict(params),
              "threads": torch.get_num_threads(), "train_loss": losses,
              "training_seconds": round(time.monotonic() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    options.checkpoint.unlink(missing_ok=True)
    return report


def print_summary(report: dict, out: Path) -> None:
    print(f"pretrained on {report['corpus']['comments']} comments in {report['training_seconds']:.0f} s; "
          f"masked-LM loss by epoch {[round(x, 3) for x in report['train_loss']]}; saved to {out}")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    return loop.run_tool(lambda: run(args), lambda report: print_summary(report, args.out))


if __name__ == "__main__":
    sys.exit(main())
