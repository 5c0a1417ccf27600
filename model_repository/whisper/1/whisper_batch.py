"""Batched Whisper inference: one encoder pass and one greedy decoding loop per batch, plus, for the
requests that ask for word timestamps, one alignment pass (cross-attention DTW, as openai-whisper's
``word_timestamps``) over those rows together.

Kept free of Triton imports so it can be unit-tested and benchmarked on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import whisper
from whisper.audio import HOP_LENGTH
from whisper.model import ModelDimensions, Whisper, disable_sdpa
from whisper.timing import dtw, median_filter
from whisper.tokenizer import Tokenizer
from whisper_contract import (
    REPEAT_MAX_TOKENS,
    REPEAT_MIN_TOKENS,
    Engine,
    Languages,
    Transcription,
    Word,
    token_budget,
    transcript,
    vocabulary_languages,
)
from whisper_mel import LogMel
from whisper_words import FRAME_SAMPLES, MEDIAN_FILTER_WIDTH, PROMPT_TOKENS, checkpoint_alignment_heads, path_words

logger = logging.getLogger(__name__)

CONTEXT_MARGIN_FRAMES = 100
"""With encoder_context 'fit', the encoder sees the longest clip of the batch plus this much
(1 s of mel frames) of trailing silence ..."""
CONTEXT_GRANULARITY_FRAMES = 100
"""... rounded up to a whole second (an even frame count, as the stride-2 conv needs)."""
LANGUAGE_POSITION = 1
"""Index of the language token in the prompt [SOT, language, transcribe, no-timestamps]."""


def detect_languages(sot_logits: torch.Tensor, language_tokens: torch.Tensor) -> torch.Tensor:
    """The most likely language token of each row: argmax of the decoder's logits at the SOT
    position over the model's language tokens only, as openai-whisper's ``detect_language`` (which
    masks every other token), but on logits the prompt pass computes anyway, so detection costs
    no second encoder pass."""
    return language_tokens[sot_logits[:, language_tokens].argmax(-1)]


def _quantize_linear_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every Linear (weights int8, activations quantised per batch)."""
    from torch.ao.quantization import quantize_dynamic

    # openai-whisper subclasses nn.Linear (only to cast dtypes); the quantiser wants the plain class.
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, whisper.model.Linear):
                plain = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain)
    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


@dataclass
class Decoded:
    """What the greedy loop leaves for the results and the alignment pass."""

    tokens: torch.Tensor
    """batch x max_tokens; a row's text is its first ``lengths[row]`` tokens."""
    no_speech: torch.Tensor
    logprob_sum: torch.Tensor
    lengths: torch.Tensor
    cross_kv: dict
    """The cross-attention keys and values of the audio, per projection module (kv-cache layout)."""
    language_tokens: list[int]
    """The language token each row was decoded with: requested, or detected where none was."""


def load_checkpoint(path: str, device: torch.device) -> tuple[Whisper, list[tuple[int, int]], str]:
    """The model (as whisper.load_model builds it) plus its alignment heads and their origin."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    dims = ModelDimensions(**checkpoint["dims"])
    model = Whisper(dims)
    model.load_state_dict(checkpoint["model_state_dict"])
    heads, origin = checkpoint_alignment_heads(checkpoint, dims)
    return model.to(device), heads, origin


class WhisperBatch(Engine):
    """Holds one Whisper model on one device and transcribes batches of 16 kHz clips."""

    def __init__(self, checkpoint: str, device: str = "cpu", fp16: bool = False, encoder_context: str = "full",
                 cpu_int8: bool = False):
        if encoder_context not in ("fit", "full"):
            raise ValueError("encoder_context must be 'fit' or 'full'")
        self.fit_context = encoder_context == "fit"
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        model, self.alignment_heads, origin = load_checkpoint(checkpoint, self.device)
        self.model = model.to(self.dtype).eval()
        if cpu_int8 and self.device.type == "cpu":
            self.model = _quantize_linear_int8(self.model)
        dims = self.model.dims
        self.languages = Languages(*vocabulary_languages(dims.n_vocab))
        self.tokenizer = self.languages.tokenizer
        self.max_tokens = dims.n_text_ctx // 2
        self.log_mel = LogMel(dims.n_mels, self.device, self.dtype)
        self._suppress = self._suppress_mask(dims.n_vocab)
        self._language_token_ids = torch.tensor(self.tokenizer.all_language_tokens, device=self.device)
        dtw(torch.zeros(2, 2))  # numba compiles the DTW on first use (~1.5 s): at load, not in a request
        logger.info("loaded whisper %s on %s (%s)", checkpoint, self.device, self.dtype)
        logger.info("word alignment heads [layer, head] (%s): %s", origin, [list(h) for h in self.alignment_heads])

    def _suppress_mask(self, n_vocab: int) -> torch.Tensor:
        # Without timestamps every special token after EOT is illegal, as are Whisper's non-speech symbols.
        mask = torch.zeros(n_vocab, dtype=torch.bool, device=self.device)
        mask[self.tokenizer.eot + 1:] = True
        mask[list(self.tokenizer.non_speech_tokens)] = True
        return mask

    def context_frames(self, clips: list[np.ndarray], fit: bool = False) -> int:
        """Mel frames the encoder sees: 30 s ('full', as Whisper was trained) or just enough ('fit',
        exported so, or asked for by the batch)."""
        full = self.model.dims.n_audio_ctx * 2
        if not (self.fit_context or fit):
            return full
        needed = max(len(c) for c in clips) // HOP_LENGTH + CONTEXT_MARGIN_FRAMES
        return min(full, -(-needed // CONTEXT_GRANULARITY_FRAMES) * CONTEXT_GRANULARITY_FRAMES)

    @torch.inference_mode()
    def transcribe(self, clips: list[np.ndarray], language_tokens: list[int | None],
                   word_timestamps: list[bool] | None = None, fit: bool = False) -> list[Transcription]:
        """Transcribe float32 16 kHz clips (each ≤ 30 s) in one encoder pass and one decode loop; a
        None language token means: detect the clip's language first (see ``_prompt_logits``). The
        clips whose ``word_timestamps`` flag is set and that have text also get their words timed,
        together in one alignment pass. ``fit``: as the 'fit' context, for this batch."""
        audio_features = self.encode(self.log_mel(clips, self.context_frames(clips, fit)))
        decoded = self._greedy(audio_features, language_tokens, self.budgets(clips))
        results = self._results(decoded)
        rows = [row for row, result in enumerate(results) if word_timestamps and word_timestamps[row] and result.text]
        if rows:
            self._attach_words(results, rows, decoded, audio_features, clips, decoded.language_tokens)
        return results

    def budgets(self, clips: list[np.ndarray]) -> torch.Tensor:
        """Most tokens each clip may decode to, by its length."""
        return torch.tensor([token_budget(len(c), self.max_tokens) for c in clips], device=self.device)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Whisper's encoder, but accepting fewer than 3000 mel frames (positions sliced to fit)."""
        enc = self.model.encoder
        x = torch.nn.functional.gelu(enc.conv1(mel))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = (x + enc.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in enc.blocks:
            x = block(x)
        return enc.ln_post(x)

    def _prompt(self, language_tokens: list[int | None]) -> torch.Tensor:
        """[SOT, language, transcribe, no-timestamps] per row; a row to detect holds SOT as its
        language until ``_prompt_logits`` puts the detected token there (before it is read)."""
        t = self.tokenizer
        rows = [[t.sot, t.sot if lang is None else lang, t.transcribe, t.no_timestamps] for lang in language_tokens]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _prompt_logits(self, tokens: torch.Tensor, audio_features: torch.Tensor, cache: dict,
                       auto: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the prompt through the decoder, filling ``cache``: the logits at SOT (no-speech, and
        the language of ``auto`` rows, written into ``tokens``) and at the prompt's last position.

        Without auto rows the prompt is one call, as ever. With them, SOT goes first alone (the
        decoder is causal: its logits are what detect_language computes), then the rest one token
        at a time: whisper's kv-cache attention takes several new tokens only from position 0."""
        if not any(auto):
            logits = self.model.decoder(tokens, audio_features, kv_cache=cache)
            return logits[:, 0], logits[:, -1]
        sot_logits = self.model.decoder(tokens[:, :LANGUAGE_POSITION], audio_features, kv_cache=cache)[:, 0]
        rows = torch.tensor(auto, device=self.device)
        tokens[rows, LANGUAGE_POSITION] = detect_languages(sot_logits[rows], self._language_token_ids)
        for position in range(LANGUAGE_POSITION, tokens.shape[1]):
            logits = self.model.decoder(tokens[:, position:position + 1], audio_features, kv_cache=cache)
        return sot_logits, logits[:, -1]

    def _greedy(self, audio_features, language_tokens, budgets) -> Decoded:
        batch = audio_features.shape[0]
        eot = self.tokenizer.eot
        tokens = self._prompt(language_tokens)
        cache, hooks = self.model.install_kv_cache_hooks()
        try:
            sot_logits, step_logits = self._prompt_logits(tokens, audio_features, cache,
                                                          [lang is None for lang in language_tokens])
            no_speech = sot_logits.float().softmax(-1)[:, self.tokenizer.no_speech]
            generated = torch.full((batch, self.max_tokens), eot, dtype=torch.long, device=self.device)
            logprob_sum = torch.zeros(batch, device=self.device)
            lengths = torch.zeros(batch, dtype=torch.long, device=self.device)
            done = torch.zeros(batch, dtype=torch.bool, device=self.device)
            for step in range(int(budgets.max())):
                next_tokens, logprobs = self._pick(step_logits.float(), first=step == 0)
                next_tokens = torch.where(done, eot, next_tokens)
                generated[:, step] = next_tokens
                newly_done = next_tokens == eot
                logprob_sum += torch.where(done, 0.0, logprobs)
                lengths += (~done & ~newly_done).long()
                done |= newly_done | (lengths >= budgets)
                done |= self._stop_loops(generated, step + 1, lengths, done)
                if bool(done.all()):
                    break
                step_logits = self.model.decoder(next_tokens[:, None], audio_features, kv_cache=cache)[:, -1]
        finally:
            for hook in hooks:
                hook.remove()
        return Decoded(generated, no_speech, logprob_sum, lengths, self._cross_kv(cache),
                       tokens[:, LANGUAGE_POSITION].tolist())

    def _cross_kv(self, cache: dict) -> dict:
        """The cache's cross-attention entries: the alignment pass reuses them instead of projecting
        the 1500 audio frames again (12 large matmuls per row for base)."""
        modules = {m for block in self.model.decoder.blocks for m in (block.cross_attn.key, block.cross_attn.value)}
        return {module: value for module, value in cache.items() if module in modules}

    @staticmethod
    def _stop_loops(generated: torch.Tensor, filled: int, lengths: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Rows whose last tokens repeat one block three times: cut them to one copy, mark them done."""
        looping = torch.zeros_like(done)
        for k in range(REPEAT_MIN_TOKENS, min(REPEAT_MAX_TOKENS, filled // 3) + 1):
            a = generated[:, filled - k:filled]
            b = generated[:, filled - 2 * k:filled - k]
            c = generated[:, filled - 3 * k:filled - 2 * k]
            hit = (a == b).all(1) & (b == c).all(1) & ~done & ~looping
            lengths[hit] = filled - 2 * k
            looping |= hit
        return looping

    def _pick(self, logits: torch.Tensor, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.masked_fill(self._suppress, float("-inf"))
        if first:  # whisper's suppress_blank: never start with a space or end before any text
            logits[:, self.tokenizer.encode(" ") + [self.tokenizer.eot]] = float("-inf")
        logprobs = logits.log_softmax(-1)
        next_tokens = logprobs.argmax(-1)
        return next_tokens, logprobs.gather(1, next_tokens[:, None]).squeeze(1)

    def _results(self, decoded: Decoded) -> list[Transcription]:
        out = []
        for row in range(decoded.tokens.shape[0]):
            n = int(decoded.lengths[row])
            avg = float(decoded.logprob_sum[row]) / (n + 1)  # +1 counts the EOT, as whisper does
            prob = float(decoded.no_speech[row])
            text = transcript(self.tokenizer.decode(decoded.tokens[row, :n].tolist()).strip(), prob, avg)
            out.append(Transcription(text=text, no_speech_prob=prob, avg_logprob=avg,
                                     language=self.languages.code(decoded.language_tokens[row])))
        return out

    def _attach_words(self, results, rows, decoded: Decoded, audio_features, clips, language_tokens) -> None:
        """Time the words of ``rows``; a failure is reported to those rows only, their transcripts stand."""
        try:
            sequences = self._alignment_tokens(decoded.tokens, decoded.lengths, rows, language_tokens)
            index = torch.tensor(rows, device=self.device)
            cross_kv = {module: value[index] for module, value in decoded.cross_kv.items()}
            weights, token_probs = self._alignment_pass(audio_features[index], sequences, cross_kv)
            for i, row in enumerate(rows):
                n = int(decoded.lengths[row])
                results[row].words = self._row_words(
                    weights[i], token_probs[i, :n].tolist(), decoded.tokens[row, :n].tolist(), clips[row],
                    self.languages.word_tokenizer(language_tokens[row]))
        except Exception as exc:  # noqa: BLE001 - a word-timing bug must not cost the transcripts
            logger.exception("word alignment of %d rows failed", len(rows))
            for row in rows:
                results[row].words_error = f"word timestamps failed: {exc}"

    def _alignment_tokens(self, tokens, lengths, rows, language_tokens) -> torch.Tensor:
        """[prompt + text tokens + EOT] per row, padded with EOT: the decoder is causal, so padding
        after a row's tokens changes none of its positions."""
        eot = self.tokenizer.eot
        width = int(lengths[rows].max())
        text = tokens[rows, :width].clone()
        beyond = torch.arange(width, device=self.device)[None, :] >= lengths[rows][:, None]
        text[beyond] = eot  # a row cut short by the loop guard keeps tokens after its length
        closing = torch.full((len(rows), 1), eot, dtype=torch.long, device=self.device)
        return torch.cat([self._prompt([language_tokens[r] for r in rows]), text, closing], dim=1)

    def _alignment_pass(self, audio_features, sequences, cross_kv) -> tuple[torch.Tensor, torch.Tensor]:
        """One teacher-forced decoder pass: the alignment heads' cross-attention QK (rows x heads x
        tokens x frames) and each text token's probability among the text tokens."""
        captured: dict[int, torch.Tensor] = {}
        layers = sorted({layer for layer, _ in self.alignment_heads})
        hooks = [self.model.decoder.blocks[layer].cross_attn.register_forward_hook(
            lambda _module, _inputs, outputs, layer=layer: captured.__setitem__(layer, outputs[-1]))
            for layer in layers]
        try:
            # SDPA never materialises the attention weights; the switch is class-wide, which is safe
            # because a Triton python-backend instance runs one batch at a time in its own process.
            with disable_sdpa():
                hidden = self._teacher_forced(sequences, audio_features, cross_kv)
        finally:
            for hook in hooks:
                hook.remove()
        weights = torch.stack([captured[layer][:, head] for layer, head in self.alignment_heads], dim=1)
        # Position i predicts token i + 1: the positions before each text token, and their
        # probabilities among the text tokens (below EOT), as find_alignment. Padding EOTs are
        # clamped into range and never read.
        predicted = sequences[:, PROMPT_TOKENS:-1].clamp(max=self.tokenizer.eot - 1)
        text_embedding = self.model.decoder.token_embedding.weight[: self.tokenizer.eot]
        logits = hidden[:, PROMPT_TOKENS - 1:-2] @ text_embedding.to(hidden.dtype).T
        probs = logits.float().softmax(-1)
        return weights.float().cpu(), probs.gather(-1, predicted[..., None]).squeeze(-1).cpu()

    def _teacher_forced(self, tokens, audio_features, cross_kv) -> torch.Tensor:
        """TextDecoder.forward over whole sequences from position 0, up to the final layer norm (the
        caller projects only the positions it reads), with the audio's cross-attention keys and values
        from ``cross_kv`` (TextDecoder.forward would take its position offset from a cache;
        self-attention, with no cache entry, runs over the sequence as usual)."""
        decoder = self.model.decoder
        x = decoder.token_embedding(tokens) + decoder.positional_embedding[: tokens.shape[1]]
        x = x.to(audio_features.dtype)
        for block in decoder.blocks:
            x = block(x, audio_features, mask=decoder.mask, kv_cache=cross_kv)
        return decoder.ln(x)

    @staticmethod
    def _alignment_matrix(weights: torch.Tensor, n_text: int, n_frames: int) -> torch.Tensor:
        """(text tokens + EOT) x frames cost of one row, from its own tokens and audio frames only, so
        that padding (longer neighbours in the batch) changes nothing; normalised as find_alignment."""
        weights = weights[:, : PROMPT_TOKENS + n_text + 1, :n_frames].softmax(dim=-1)
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        weights = median_filter((weights - mean) / std, MEDIAN_FILTER_WIDTH)
        return weights.mean(dim=0)[PROMPT_TOKENS - 1: PROMPT_TOKENS + n_text]

    def _row_words(self, weights, token_probs: list[float], text_tokens: list[int], clip: np.ndarray,
                   tokenizer: Tokenizer) -> list[Word]:
        """DTW over one row's matrix, then words with their times and mean token probability."""
        n_frames = min(len(clip) // FRAME_SAMPLES, weights.shape[-1])  # the row's own audio frames
        if n_frames < 1:
            return []
        text_indices, time_indices = dtw(-self._alignment_matrix(weights, len(text_tokens), n_frames))
        return path_words(text_indices, time_indices, token_probs, text_tokens, clip, tokenizer)
