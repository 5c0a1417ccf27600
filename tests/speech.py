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


PAUSE_S = 1.0
"""Silence between dialogue sentences."""
LEAD_S = 0.5
"""Silence before the first sentence."""


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def write_dialogue(sentences: list[str], directory: Path) -> Path:
    """Sentences separated by PAUSE_S of silence; also writes speech_times.txt (start end per line)."""
    parts, times, cursor = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)], [], LEAD_S
    for i, sentence in enumerate(sentences):
        speech = read_wav(synthesize(sentence, directory / f"sentence{i}.wav"))
        parts += [speech, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)]
        times.append((cursor, cursor + len(speech) / SAMPLE_RATE))
        cursor += len(speech) / SAMPLE_RATE + PAUSE_S
    (directory / "speech_times.txt").write_text("".join(f"{a:.3f} {b:.3f}\n" for a, b in times))
    return write_wav(directory / "dialogue.wav", np.concatenate(parts))


def speech_times(wav: Path) -> list[tuple[float, float]]:
    lines = (wav.parent / "speech_times.txt").read_text().split("\n")
    return [tuple(map(float, line.split())) for line in lines if line]


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))
