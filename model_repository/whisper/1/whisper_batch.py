"""Batched Whisper inference: one encoder pass and one greedy decoding loop per batch.

Kept free of Triton imports so it can be unit-tested and benchmarked on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import whisper
from whisper.audio import HOP_LENGTH, N_FFT, N_SAMPLES, SAMPLE_RATE, mel_filters
from whisper.tokenizer import LANGUAGES, get_tokenizer

logger = logging.getLogger(__name__)

MAX_AUDIO_SECONDS = N_SAMPLES / SAMPLE_RATE
"""Whisper sees one 30 s window; longer requests are rejected, not silently truncated."""
TOKENS_PER_SECOND = 25
"""Decode-length bound per second of audio; generous for Korean, whose syllables take 1-3 tokens."""
MIN_TOKEN_BUDGET = 16
"""Tokens allowed even for very short audio."""
NO_SPEECH_THRESHOLD = 0.6
"""Whisper's own rule: above this no-speech probability, with a low average log-probability ..."""
LOGPROB_THRESHOLD = -1.0
"""... (below this), the window is treated as silence and the transcript is empty."""
CONTEXT_MARGIN_FRAMES = 100
"""With encoder_context 'fit', the encoder sees the longest clip of the batch plus this much
(1 s of mel frames) of trailing silence ..."""
CONTEXT_GRANULARITY_FRAMES = 100
"""... rounded up to a whole second (an even frame count, as the stride-2 conv needs)."""
REPEAT_MIN_TOKENS, REPEAT_MAX_TOKENS = 2, 32
"""A block of this many tokens produced three times in a row is a decoding loop (Whisper's
classic failure, common on clipped speech): decoding stops and keeps the first copy."""
NO_SPEECH_CERTAIN = 0.8
"""Above this no-speech probability the transcript is empty whatever the log-probability: on digital
silence Whisper confidently hallucinates short words ("you") that the rule above lets through."""


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
class Transcription:
    text: str
    no_speech_prob: float
    avg_logprob: float


class WhisperBatch:
    """Holds one Whisper model on one device and transcribes batches of 16 kHz clips."""

    def __init__(self, checkpoint: str, device: str = "cpu", fp16: bool = False, encoder_context: str = "full",
                 cpu_int8: bool = False):
        if encoder_context not in ("fit", "full"):
            raise ValueError("encoder_context must be 'fit' or 'full'")
        self.fit_context = encoder_context == "fit"
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.model = whisper.load_model(checkpoint, device=self.device).to(self.dtype).eval()
        if cpu_int8 and self.device.type == "cpu":
            self.model = _quantize_linear_int8(self.model)
        dims = self.model.dims
        self.tokenizer = get_tokenizer(
            dims.n_vocab >= 51865, num_languages=dims.n_vocab - 51765 - int(dims.n_vocab >= 51865), task="transcribe"
        )
        self.max_tokens = dims.n_text_ctx // 2
        self._filters = mel_filters(self.device, dims.n_mels)
        self._window = torch.hann_window(N_FFT, device=self.device)
        self._suppress = self._suppress_mask(dims.n_vocab)
        logger.info("loaded whisper %s on %s (%s)", checkpoint, self.device, self.dtype)

    def language_token(self, language: str) -> int:
        """Token id of a language code such as 'ko'; ValueError for codes this model lacks."""
        code = language.strip().lower()
        if code not in LANGUAGES or code not in self.tokenizer.all_language_codes:
            raise ValueError(f"unsupported language {language!r}; use a Whisper code such as 'ko' or 'en'")
        return self.tokenizer.to_language_token(code)

    def _suppress_mask(self, n_vocab: int) -> torch.Tensor:
        # Without timestamps every special token after EOT is illegal, as are Whisper's non-speech symbols.
        mask = torch.zeros(n_vocab, dtype=torch.bool, device=self.device)
        mask[self.tokenizer.eot + 1:] = True
        mask[list(self.tokenizer.non_speech_tokens)] = True
        return mask

    def context_frames(self, clips: list[np.ndarray]) -> int:
        """Mel frames the encoder sees: 30 s ('full', as Whisper was trained) or just enough ('fit')."""
        full = self.model.dims.n_audio_ctx * 2
        if not self.fit_context:
            return full
        needed = max(len(c) for c in clips) // HOP_LENGTH + CONTEXT_MARGIN_FRAMES
        return min(full, -(-needed // CONTEXT_GRANULARITY_FRAMES) * CONTEXT_GRANULARITY_FRAMES)

    def log_mel(self, clips: list[np.ndarray], frames: int) -> torch.Tensor:
        """Batched log-mel of zero-padded clips, ``frames`` long; per-clip dynamic range as in whisper."""
        audio = torch.zeros(len(clips), frames * HOP_LENGTH, device=self.device)
        for row, clip in enumerate(clips):
            audio[row, : len(clip)] = torch.from_numpy(clip)
        stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=self._window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(self._filters @ power, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return ((log_spec + 4.0) / 4.0).to(self.dtype)

    @torch.inference_mode()
    def transcribe(self, clips: list[np.ndarray], language_tokens: list[int]) -> list[Transcription]:
        """Transcribe float32 16 kHz clips (each ≤ 30 s) in one encoder pass and one decode loop."""
        audio_features = self.encode(self.log_mel(clips, self.context_frames(clips)))
        budgets = torch.tensor(
            [min(self.max_tokens, MIN_TOKEN_BUDGET + int(TOKENS_PER_SECOND * len(c) / SAMPLE_RATE)) for c in clips],
            device=self.device,
        )
        tokens, no_speech, logprob_sum, lengths = self._greedy(audio_features, language_tokens, budgets)
        return self._results(tokens, no_speech, logprob_sum, lengths)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Whisper's encoder, but accepting fewer than 3000 mel frames (positions sliced to fit)."""
        enc = self.model.encoder
        x = torch.nn.functional.gelu(enc.conv1(mel))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = (x + enc.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in enc.blocks:
            x = block(x)
        return enc.ln_post(x)

    def _prompt(self, language_tokens: list[int]) -> torch.Tensor:
        t = self.tokenizer
        rows = [[t.sot, lang, t.transcribe, t.no_timestamps] for lang in language_tokens]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _greedy(self, audio_features, language_tokens, budgets):
        batch = audio_features.shape[0]
        eot = self.tokenizer.eot
        tokens = self._prompt(language_tokens)
        cache, hooks = self.model.install_kv_cache_hooks()
        try:
            logits = self.model.decoder(tokens, audio_features, kv_cache=cache)
            no_speech = logits[:, 0].float().softmax(-1)[:, self.tokenizer.no_speech]
            step_logits = logits[:, -1]
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
        return generated, no_speech, logprob_sum, lengths

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

    def _results(self, tokens, no_speech, logprob_sum, lengths) -> list[Transcription]:
        out = []
        for row in range(tokens.shape[0]):
            n = int(lengths[row])
            avg = float(logprob_sum[row]) / (n + 1)  # +1 counts the EOT, as whisper does
            prob = float(no_speech[row])
            silent = prob > NO_SPEECH_CERTAIN or (prob > NO_SPEECH_THRESHOLD and avg < LOGPROB_THRESHOLD)
            text = "" if silent else self.tokenizer.decode(tokens[row, :n].tolist()).strip()
            out.append(Transcription(text=text, no_speech_prob=prob, avg_logprob=avg))
        return out
