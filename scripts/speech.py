"""Speech for tests, benchmarks and the load test: reference sentences, espeak-ng synthesis
(resampled to 16 kHz mono with sox), WAV I/O, and word error rate.

The committed ``loadtest/audio/dialogue_en.wav`` is ``DIALOGUE`` spoken with 1 s pauses; its
sidecar ``dialogue_en.json`` holds where each sentence's speech lies, so it can be used without
espeak-ng (``python -m loadtest.make_audio`` regenerates both).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import wave
from pathlib import Path

import jiwer
import numpy as np

from scripts.cli import REPO_ROOT

SAMPLE_RATE = 16000

ENGLISH_SENTENCE = "Please keep the voice chat friendly and respectful for everyone."
"""One sentence that Whisper base transcribes exactly."""
DIALOGUE = [
    "Good morning everyone, welcome to the game.",
    "Please keep the voice chat friendly.",
    "See you in the next round.",
]
"""Three English sentences, spoken with PAUSE_S pauses: three VAD segments."""
BENCH_SENTENCES = [
    "My internet connection is very slow today.",
    "Can somebody cover the left side please?",
    "I think we should wait for the others before we start the next round.",
    "Please keep the voice chat friendly and respectful for everyone, thank you very much.",
]
"""Spoken by espeak-ng: about 1.5, 2.5, 4 and 6 seconds, the lengths of VAD segments."""
RECORDING_SENTENCES = [
    "Good morning everyone and welcome to the match.",
    "Please keep the voice chat friendly.",
    "The blue team starts on the left side.",
    "You played like shit this round.",
    "See you in the next round.",
    "Watch out for the sniper on the roof.",
    "Meet me at the red tower.",
    "I need more ammunition over here.",
    "My internet connection is very slow today.",
    "Thank you all for playing tonight.",
]
"""Ten sentences (one profane) spoken with PAUSE_S pauses: a recorded match's voice chat, ten VAD
segments (the batch job tests and benchmark)."""
GAME_CHAT_SENTENCES = [
    "Can you help me with the boss please?",
    "I am going back to the base.",
    "Let us push together this time.",
    "Wait for me at the gate.",
    "They are coming from the north side.",
    "Drop some armor for me please.",
    "Well played everyone, that was fun.",
    "I will take the flag this round.",
    "Stay behind the rocks and cover me.",
    "The enemy team is waiting on the hill.",
    "Follow me to the blue gate.",
    "Please do not run across the field.",
    "We need somebody to defend the base.",
    "Thank you for the help back there.",
    "I have no more health left.",
    "Who wants to play again tomorrow?",
    "Check the corner before you go in.",
    "My sound was broken for a minute.",
    "Tell me when everybody is ready.",
    "Throw a smoke grenade through the window.",
    "We nearly won the last round.",
    "Keep an eye on the river.",
    "The last player is hiding in the house.",
    "Can we change the map after this game?",
    "Have fun and enjoy the match everyone.",
    "Cover me while I reload my weapon.",
    "Everyone meet at the bridge.",
    "That was a really close fight.",
    "The bridge is the fastest way to their base.",
    "Somebody should guard the flag.",
    "I will wait for you near the river.",
    "Look at the map before you move.",
    "Please stop shouting into the microphone, it is too loud.",
    "If you need help with the controls, just ask in the chat.",
    "The server will restart soon, so finish your match first.",
    "We lost because nobody was watching the back door.",
    "Remember to pick up the medical kit before the last fight.",
]
"""Thirty-seven plain game-chat sentences (no numbers, names, contractions or profanity), 1.5 to 4 s
of espeak-ng speech each, so the VAD cuts one segment per sentence, and each transcribed exactly
by Whisper base when spoken alone (the batch benchmark's long recording, loadtest/batch_bench.py)."""
LONG_UTTERANCES = [
    "we were camping behind the big red house near the bridge when the storm came over the hills and "
    "everyone ran back to the cars with their bags",
    "my brother says the new game is much better than the old one because the maps are bigger and the "
    "players can build their own towers",
    "after the meeting we walked along the river to the little market and bought fresh bread and cheese "
    "for the long drive home",
    "the teacher asked every student to read one page out loud and then write a short story about "
    "their favourite summer holiday",
    "on saturday morning the whole team met at the station and took the early train to the coast to "
    "watch the final match of the season",
    "if you turn left at the second corner you will see a small blue door next to the bakery where my "
    "aunt has lived for twenty years",
    "the old radio in the kitchen still plays music every evening while my grandmother cooks soup and "
    "tells us stories about the war",
    "nobody expected the quiet boy from the back row to win the chess tournament but he beat every "
    "player in less than an hour",
]
"""Continuous speech without a pause long enough to end a segment: each is 10-12 s at espeak-ng's
140 words a minute, longer than the default maximum segment (5 s), so it is cut."""
DIALOGUE_WAV = REPO_ROOT / "loadtest" / "audio" / "dialogue_en.wav"
"""DIALOGUE as a committed 16 kHz mono 16-bit WAV, with its sidecar JSON."""

PAUSE_S = 1.0
"""Silence between dialogue sentences."""
LEAD_S = 0.5
"""Silence before the first sentence."""
WORD_GAP_S = 0.35
"""Silence between separately synthesised words: long enough that a word's true time is exact."""
SILENCE_LEVEL = 0.01
"""Amplitude below which espeak-ng's leading and trailing padding counts as silence."""


def synthesize(text: str, path: Path, voice: str = "en-us", words_per_minute: int = 140) -> Path:
    """Speak text into a 16 kHz mono 16-bit WAV file (needs espeak-ng and sox)."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text], check=True)
    # -D: no dither, so the same text is the same samples every time (dither is random noise, and
    # borderline clips such as espeak-ng's Korean greeting flip between transcripts with it).
    subprocess.run(["sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path)], check=True)
    raw.unlink()
    return path


def read_wav(path: Path) -> np.ndarray:
    """float32 samples in [-1, 1] of a 16-bit mono WAV."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def pcm16(samples: np.ndarray) -> bytes:
    """Little-endian 16-bit PCM bytes, as a desktop client sends them."""
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def write_dialogue(sentences: list[str], path: Path) -> Path:
    """Sentences separated by PAUSE_S of silence into ``path``, plus the sidecar ``path.json``."""
    parts, times, cursor = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)], [], LEAD_S
    for sentence in sentences:
        with tempfile.TemporaryDirectory() as tmp:
            speech = read_wav(synthesize(sentence, Path(tmp) / "sentence.wav"))
        parts += [speech, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)]
        times.append([round(cursor, 3), round(cursor + len(speech) / SAMPLE_RATE, 3)])
        cursor += len(speech) / SAMPLE_RATE + PAUSE_S
    sidecar = {"sentences": sentences, "speech_s": times}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return write_wav(path, np.concatenate(parts))


def join_words(words: list[str], gaps_s: list[float], lead_s: float = LEAD_S
               ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Words synthesised one by one, ``lead_s`` of silence before them and each followed by its
    gap, so the truth of every word's time is known; the samples and (start, end) of each word."""
    parts, times, cursor = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)], [], lead_s
    for word, gap_s in zip(words, gaps_s, strict=True):
        with tempfile.TemporaryDirectory() as tmp:
            speech = trim_silence(read_wav(synthesize(word, Path(tmp) / "word.wav")))
        times.append((cursor, cursor + len(speech) / SAMPLE_RATE))
        parts += [speech, np.zeros(int(gap_s * SAMPLE_RATE), np.float32)]
        cursor += len(speech) / SAMPLE_RATE + gap_s
    return np.concatenate(parts), times


def write_words(words: list[str], path: Path, gap_s: float = WORD_GAP_S) -> list[tuple[float, float]]:
    """join_words with ``gap_s`` between words and PAUSE_S after them, written to ``path``;
    returns (start, end) of each word, to the millisecond."""
    samples, times = join_words(words, [gap_s] * len(words))
    write_wav(path, np.concatenate([samples, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)]))
    return [(round(start, 3), round(end, 3)) for start, end in times]


def trim_silence(samples: np.ndarray, threshold: float = SILENCE_LEVEL) -> np.ndarray:
    """The samples between the first and the last one louder than ``threshold`` (espeak-ng pads)."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples[:0]


def speech_times(wav: Path) -> list[tuple[float, float]]:
    """(start, end) in seconds of each sentence of a dialogue written by write_dialogue."""
    return [tuple(span) for span in json.loads(wav.with_suffix(".json").read_text())["speech_s"]]


def normalize(text: str) -> str:
    """Lower-case words (apostrophes kept), single-spaced: punctuation does not count as an error."""
    return " ".join(re.findall(r"[\w']+", text.lower()))


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate, spaces ignored (Korean words: WER would be all or nothing)."""
    return wer(" ".join(reference.replace(" ", "")), " ".join(hypothesis.replace(" ", "")))


KOREAN_SPEECH = ("안녕하세요 오늘 날씨가 정말 좋네요", "게임 같이 하실 분 있나요", "저는 서울에 살고 있습니다",
                 "내일 아침에 다시 만나요")
"""Plain Korean sentences for espeak-ng's Korean voice (robotic: Whisper base gets about 0.6 CER)."""
KOREAN_CHAT = KOREAN_SPEECH + ("우리 팀은 오른쪽으로 갈게요", "잠깐만 기다려 주세요", "지금 바로 시작합시다",
                               "아이템을 같이 나눠 써요", "다음 판에는 꼭 이길 거예요", "수고하셨습니다 또 만나요",
                               "마이크 소리가 너무 작아요", "저쪽에 적이 두 명 있어요")
"""Korean game-chat sentences for a Korean recording (loadtest.batch_bench --language ko)."""
KOREAN_VOICE, KOREAN_WPM = "ko", 120
"""espeak-ng's Korean voice, slowed down: at its default rate Whisper hears even less of it."""

NOISES = ("white_-20dBFS", "white_-10dBFS", "pink_modulated", "mains_hum")
"""Loud non-speech that passes the VAD: white noise at two levels, pink noise whose loudness
swells and fades at a syllable's rate (3 Hz), and 50 Hz mains hum with its harmonics."""


def noise(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """``seconds`` of one of NOISES as float32 16 kHz samples (the same seed, the same samples)."""
    rng, n = np.random.default_rng(seed), int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    if kind.startswith("white_"):
        rms = 10 ** (float(kind.split("_")[1].removesuffix("dBFS")) / 20)
        samples = rng.standard_normal(n) * rms
    elif kind == "pink_modulated":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))  # 1/f power
        pink = np.fft.irfft(spectrum, n)
        samples = pink / np.sqrt(np.mean(pink ** 2)) * 0.2 * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t))
    elif kind == "mains_hum":
        samples = sum(0.12 / k * np.sin(2 * np.pi * 50 * k * t + k) for k in range(1, 8))
    else:
        raise ValueError(f"unknown noise {kind!r}: one of {', '.join(NOISES)}")
    return np.clip(samples, -1, 1).astype(np.float32)
