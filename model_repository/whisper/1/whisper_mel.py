"""Whisper's log-mel input, batched on the engine's device (torch; no Triton imports).

Both engines compute it here, so they see the same features for the same clip.
"""

from __future__ import annotations

import numpy as np
import torch
from whisper.audio import HOP_LENGTH, N_FFT, mel_filters


class LogMel:
    """Batched log-mel of 16 kHz clips in Whisper's window, with whisper's per-clip dynamic range.

    ``pad_in_mel``: the frames after a clip's own audio are 0 in the normalised log-mel, as
    openai-whisper's ``transcribe`` and faster-whisper pad a segment (``pad_or_trim`` of the
    log-mel), instead of the log-mel of silent audio (what ``decode`` on zero-padded audio sees).
    On 51 espeak-ng English segments it takes the CTranslate2 engine's WER from 0.029 to 0.007
    (faster-whisper's 0.004) and the torch engine's from 0.046 to 0.013, but costs the torch engine
    the Korean greeting its tests hear, so only the CTranslate2 engine pads so
    (docs/PERFORMANCE.md)."""

    def __init__(self, n_mels: int, device: torch.device, dtype: torch.dtype = torch.float32,
                 pad_in_mel: bool = False):
        self.device, self.dtype, self.pad_in_mel = device, dtype, pad_in_mel
        self._filters = mel_filters(device, n_mels)
        self._window = torch.hann_window(N_FFT, device=device)

    def __call__(self, clips: list[np.ndarray], frames: int) -> torch.Tensor:
        """batch x n_mels x ``frames``: each clip zero-padded (or cut) to ``frames`` mel frames."""
        audio = torch.zeros(len(clips), frames * HOP_LENGTH, device=self.device)
        for row, clip in enumerate(clips):
            audio[row, : len(clip)] = torch.from_numpy(clip[: frames * HOP_LENGTH])
        stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=self._window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(self._filters @ power, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
        if self.pad_in_mel:
            for row, clip in enumerate(clips):
                log_spec[row, :, len(clip) // HOP_LENGTH:] = 0.0
        return log_spec.to(self.dtype)
