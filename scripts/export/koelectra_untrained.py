"""Build a small, randomly initialised KoELECTRA-architecture classifier for offline use.

It is UNTRAINED: its harmful-speech probabilities are noise. It exists so that the serving
path (tokenizer, ONNX export, Triton batching) runs and is tested where no hub is reachable.
"""

from __future__ import annotations

import logging
import math
import string
from pathlib import Path

import torch
from transformers import ElectraConfig, ElectraForSequenceClassification, ElectraTokenizerFast

logger = logging.getLogger(__name__)

UNTRAINED_NAME = "koelectra-small-untrained"
"""Directory and model name; 'untrained' must show wherever this model does."""
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3
"""All 11,172 precomposed Hangul syllables."""
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SEED = 1234
"""Fixed so that the offline model, and so the tests, are reproducible."""
HARMFUL_PRIOR = 0.05
"""Prior harmful rate built into the classifier bias. With random weights and no prior the model
says ~0.5 for every text, which at the usual 0.5 threshold would flag everything; with it the
untrained model rarely flags anything. Its scores remain noise either way."""


def build_vocab() -> list[str]:
    """Specials, printable ASCII and Hangul syllables, each also as a '##' word-piece continuation."""
    chars = [c for c in string.printable if not c.isspace()]
    chars += [chr(cp) for cp in range(HANGUL_FIRST, HANGUL_LAST + 1)]
    return SPECIAL_TOKENS + chars + ["##" + c for c in chars]


def char_tokenizer() -> ElectraTokenizerFast:
    """One token per character (build_vocab): no training needed, and no Hangul word is unknown."""
    vocab = build_vocab()
    return ElectraTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=False, tokenize_chinese_chars=False
    )


def small_config(vocab_size: int, **overrides) -> ElectraConfig:
    """The small ELECTRA every offline base here shares: ELECTRA-small's widths, 4 layers (a CPU
    trains and serves it in real time)."""
    config = {"vocab_size": vocab_size, "embedding_size": 128, "hidden_size": 256, "num_hidden_layers": 4,
              "num_attention_heads": 4, "intermediate_size": 1024, "max_position_embeddings": 512, **overrides}
    return ElectraConfig(**config)


def build_untrained(output_dir: Path) -> Path:
    """Write an untrained ElectraForSequenceClassification checkpoint and tokenizer; returns its dir."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = char_tokenizer()
    torch.manual_seed(SEED)
    config = small_config(len(tokenizer), num_labels=2, id2label={0: "normal", 1: "harmful"},
                          label2id={"normal": 0, "harmful": 1})
    model = ElectraForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.out_proj.bias.copy_(torch.tensor([0.0, math.log(HARMFUL_PRIOR / (1 - HARMFUL_PRIOR))]))
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    logger.warning("built UNTRAINED KoELECTRA-architecture model %s (random weights, %d-token vocab) at %s",
                   UNTRAINED_NAME, len(tokenizer), output_dir)
    return output_dir
