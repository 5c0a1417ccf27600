"""Whisper as a CTranslate2 directory, for the whisper model's ctranslate2 engine.

A CTranslate2 source (the offline base included) is copied as it is; a Hugging Face directory goes
through CTranslate2's own converter; an openai-whisper checkpoint (a name, a .pt, or
``random:<name>``) is written through CTranslate2's ``WhisperSpec``: the inverse of the mapping
whisper_sources.load_ct2 reads, so both engines can serve every source.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from scripts.export import triton_config
from scripts.export.whisper_sources import _CT2_LAYER_NAMES, _CT2_TOP_NAMES, load_checkpoint, offline_ct2_dir

logger = logging.getLogger(__name__)

CT2_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt",
             "preprocessor_config.json")
"""What a CTranslate2 Whisper directory may hold; model.bin and config.json are required."""
_LAYER_NORM_PARAMS = {"weight": "gamma", "bias": "beta"}
_FUSED = {"attn.query": ("self_attention/linear_0", 0, 3), "attn.key": ("self_attention/linear_0", 1, 3),
          "attn.value": ("self_attention/linear_0", 2, 3), "cross_attn.key": ("attention/linear_1", 0, 2),
          "cross_attn.value": ("attention/linear_1", 1, 2)}
"""openai-whisper's separate projections -> CTranslate2's fused one (name, slot, slots)."""


def write_ct2_dir(source: str, cache_dir: Path, target: Path) -> None:
    """Fill ``target`` with a CTranslate2 Whisper directory made from ``source``."""
    path = Path(source)
    if source == "offline-base" or (path.is_dir() and (path / "model.bin").exists()):
        _copy_ct2(offline_ct2_dir(cache_dir) if source == "offline-base" else path, target)
    elif path.is_dir() and (path / "config.json").exists():
        import ctranslate2

        ctranslate2.converters.TransformersConverter(str(path)).convert(str(target), force=True)
    else:
        checkpoint_to_ct2(load_checkpoint(source, cache_dir), target)


def _copy_ct2(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in CT2_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def checkpoint_to_ct2(checkpoint: dict, target: Path) -> None:
    """Write an openai-whisper checkpoint dict as a CTranslate2 directory (weights in float16)."""
    from ctranslate2.specs import whisper_spec

    dims = checkpoint["dims"]
    spec = whisper_spec.WhisperSpec(dims["n_audio_layer"], dims["n_audio_head"], dims["n_text_layer"],
                                    dims["n_text_head"])
    for name, value in ct2_variables(checkpoint["model_state_dict"]).items():
        _set(spec, name, value)
    _configure(spec, checkpoint, dims["n_vocab"])
    spec.validate()
    spec.optimize(quantization="float16")
    target.mkdir(parents=True, exist_ok=True)
    spec.save(str(target))


def ct2_variables(state: dict) -> dict[str, np.ndarray]:
    """CTranslate2 variable names and float32 values of an openai-whisper state dict."""
    out: dict[str, np.ndarray] = {}
    layer_names = {v: k for k, v in _CT2_LAYER_NAMES.items()}
    top_names = {v: k for k, v in _CT2_TOP_NAMES.items()}
    for key, tensor in state.items():
        value = tensor.float().numpy()
        module, param = key.rsplit(".", 1)
        if key.endswith("positional_embedding"):
            out[f"{key.split('.')[0]}/position_encodings/encodings"] = value
        elif module in top_names:
            out[f"{top_names[module]}/{_param(top_names[module], param)}"] = value
        else:
            _layer_variable(out, key, value, layer_names)
    out["decoder/projection/weight"] = out["decoder/embeddings/weight"]  # Whisper ties them
    return out


def _param(module: str, param: str) -> str:
    return _LAYER_NORM_PARAMS[param] if module.endswith("layer_norm") else param


def _layer_variable(out: dict, key: str, value: np.ndarray, layer_names: dict) -> None:
    stack, _, index, rest = key.split(".", 3)  # e.g. decoder.blocks.0.cross_attn.key.weight
    module, param = rest.rsplit(".", 1)
    prefix = f"{stack}/layer_{index}"
    if module in _FUSED:
        fused, slot, slots = _FUSED[module]
        name = f"{prefix}/{fused}/{param}"
        if name not in out:
            rows = value.shape[0]
            out[name] = np.zeros((rows * slots, *value.shape[1:]), np.float32)
        out[name][slot * value.shape[0]:(slot + 1) * value.shape[0]] = value
        return
    ct2 = layer_names[module]
    out[f"{prefix}/{ct2}/{_param(ct2, param)}"] = value


def _set(spec, name: str, value: np.ndarray) -> None:
    """spec.<a>.<b>[i]... = value, for a CTranslate2 variable path such as encoder/layer_0/ffn/linear_0/weight."""
    *parents, leaf = name.split("/")
    node = spec
    for part in parents:
        base, _, index = part.rpartition("_")
        node = getattr(node, base)[int(index)] if index.isdigit() and hasattr(node, base) else getattr(node, part)
    setattr(node, leaf, value)


def _configure(spec, checkpoint: dict, n_vocab: int) -> None:
    """Vocabulary and config of the spec, from openai-whisper's tokenizer for this vocabulary size."""
    contract = triton_config.model_code("whisper", "whisper_contract")
    tokenizer = contract.Languages(*contract.vocabulary_languages(n_vocab)).tokenizer
    spec.register_vocabulary(_vocabulary(tokenizer, n_vocab))
    spec.config.suppress_ids = list(tokenizer.non_speech_tokens)  # what a plain client's [-1] expands to
    spec.config.suppress_ids_begin = [220, tokenizer.eot]
    spec.config.lang_ids = list(tokenizer.all_language_tokens)
    from whisper.model import ModelDimensions

    words = triton_config.model_code("whisper", "whisper_words")
    heads, _origin = words.checkpoint_alignment_heads(checkpoint, ModelDimensions(**checkpoint["dims"]))
    spec.config.alignment_heads = [list(pair) for pair in heads]


def _vocabulary(tokenizer, n_vocab: int) -> list[str]:
    """Token strings by id: byte-level BPE strings (as Hugging Face spells them), then the special
    tokens, then the timestamps; the engine works on ids, but language detection names tokens."""
    byte_chars = _byte_characters()
    encoding = tokenizer.encoding
    specials = {token_id: text for text, token_id in tokenizer.special_tokens.items()}
    tokens = []
    for token_id in range(n_vocab):
        if token_id in specials:
            tokens.append(specials[token_id])
        elif token_id >= tokenizer.timestamp_begin:
            tokens.append("<|%.2f|>" % ((token_id - tokenizer.timestamp_begin) * 0.02))
        else:
            tokens.append("".join(byte_chars[b] for b in encoding.decode_single_token_bytes(token_id)))
    return tokens


def _byte_characters() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: printable bytes stand for themselves, the others for the
    code points from 256 up, in order (how Hugging Face's tokenizer.json spells Whisper's tokens)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}
