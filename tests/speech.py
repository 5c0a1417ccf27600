"""Test audio: speech synthesised with espeak-ng and resampled to 16 kHz mono with sox."""

from __future__ import annotations

import re
import subprocess
import wave
from pathlib import Path

import jiwer
import numpy as np

SAMPLE_RATE = 16000


def synthesize(text: str, path: Path, voice: str = "en-us", words_per_minute: int = 140) -> Path:
    """Speak text into a 16 kHz mono 16-bit WAV file."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path)], check=True)
    raw.unlink()
    return path


def read_wav(path: Path) -> np.ndarray:
    """float32 samples in [-1, 1] of a 16-bit mono WAV."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))
