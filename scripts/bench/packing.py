"""The packing experiment: several VAD segments in one 30 s Whisper window, against plain batching.

    python -m scripts.bench.packing [--per-window 5] [--gap-s 1.0] [--repeats 2]

Plain batching gives each segment its own 30 s window (what the whisper model does). Packing puts
up to --per-window segments into one window, --gap-s of silence between them, decodes with
timestamp tokens, and hands each segment the text whose timestamps fall inside its slot: one
encoder pass for several segments. Both run on the CTranslate2 engine (int8), in-process, on the
same segments: espeak-ng English sentences and espeak-ng Korean words. Reported per set: compute
per segment, mean WER (CER for Korean), attribution errors (a piece of text given to a segment
whose reference holds fewer of its words than another segment's in the same window), and
hallucinations (text whose timestamps lie in a silent gap, dropped).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts.bench.spoken_words import SPOKEN
from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser
from scripts.speech import (
    BENCH_SENTENCES,
    GAME_CHAT_SENTENCES,
    KOREAN_WPM,
    RECORDING_SENTENCES,
    cer,
    read_wav,
    synthesize,
    wer,
)

SAMPLE_RATE = 16000
SECONDS_PER_TIMESTAMP = 0.02
ENGLISH = BENCH_SENTENCES + GAME_CHAT_SENTENCES + RECORDING_SENTENCES
"""English segments of 1-6 s."""


@dataclass
class Piece:
    """Text between two timestamp tokens, seconds from the window's start."""

    text: str
    start: float
    end: float


def pack(clips: list[np.ndarray], gap_s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips end to end with ``gap_s`` of silence between them, and each one's slot (s)."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    parts, slots, t = [], [], 0.0
    for i, clip in enumerate(clips):
        parts += [gap] if i else []
        t += gap_s if i else 0.0
        slots.append((t, t + len(clip) / SAMPLE_RATE))
        parts.append(clip)
        t += len(clip) / SAMPLE_RATE
    return np.concatenate(parts), slots


def pieces(tokens: list[int], tokenizer) -> list[Piece]:
    """Split a timestamped decode into (text, start, end) pieces."""
    out, start, text = [], None, []
    for token in tokens:
        if token >= tokenizer.timestamp_begin:
            t = (token - tokenizer.timestamp_begin) * SECONDS_PER_TIMESTAMP
            if start is None:
                start = t
            else:
                out.append(Piece(tokenizer.decode(text).strip(), start, t))
                start, text = None, []
        elif token < tokenizer.eot:
            text.append(token)
    if text:  # text after the last timestamp: a piece that runs to the window's end
        out.append(Piece(tokenizer.decode(text).strip(), start or 0.0, 30.0))
    return [p for p in out if p.text]


def assign(found: list[Piece], slots: list[tuple[float, float]], gap_s: float) -> tuple[list[list[str]], int]:
    """Each piece to the slot that holds its midpoint (half a gap's tolerance on either side);
    pieces in no slot are counted as hallucinations and dropped."""
    texts: list[list[str]] = [[] for _ in slots]
    hallucinated = 0
    for piece in found:
        middle = (piece.start + piece.end) / 2
        hits = [i for i, (a, b) in enumerate(slots) if a - gap_s / 2 <= middle <= b + gap_s / 2]
        if hits:
            texts[hits[0]].append(piece.text)
        else:
            hallucinated += 1
    return texts, hallucinated


def misattributed(texts: list[list[str]], references: list[str]) -> int:
    """Pieces whose words belong more to another segment of the window than to their own."""
    def overlap(text: str, reference: str) -> int:
        ref = set(reference.lower().replace(".", "").replace(",", "").split()) or set(reference)
        words = text.lower().replace(".", "").replace(",", "").split()
        return sum(w in ref for w in words) if len(ref) > 1 else sum(ch in reference for ch in text)
    wrong = 0
    for slot, slot_texts in enumerate(texts):
        for text in slot_texts:
            scores = [overlap(text, r) for r in references]
            wrong += int(max(scores) > scores[slot])
    return wrong


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--per-window", type=int, default=5)
    p.add_argument("--gap-s", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
    from whisper_ct2 import WhisperCT2

    from scripts.export.whisper_sources import offline_ct2_dir

    model = WhisperCT2(str(offline_ct2_dir(REPO_ROOT / ".cache")), compute_type="int8")
    with tempfile.TemporaryDirectory() as tmp:
        english = [read_wav(synthesize(s, Path(tmp) / f"en{i}.wav")) for i, s in enumerate(ENGLISH)]
        korean = [read_wav(synthesize(w, Path(tmp) / f"ko{i}.wav", voice="ko", words_per_minute=KOREAN_WPM))
                  for i, w in enumerate(SPOKEN)]
    print("| set | method | segments | windows | ms / segment | mean error | attribution errors "
          "| gap hallucinations |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, clips, refs, language, metric in (("English sentences", english, ENGLISH, "en", wer),
                                                ("Korean words", korean, SPOKEN, "ko", cer)):
        print(plain_row(model, name, clips, refs, language, metric, args), flush=True)
        print(packed_row(model, name, clips, refs, language, metric, args), flush=True)


def plain_row(model, name, clips, refs, language, metric, args) -> str:
    token = model.language_token(language)
    batch = args.per_window
    groups = [clips[i:i + batch] for i in range(0, len(clips), batch)]
    model.transcribe(groups[0], [token] * len(groups[0]))  # warm-up
    start = time.perf_counter()
    for _ in range(args.repeats):
        texts = [r.text for g in groups for r in model.transcribe(g, [token] * len(g))]
    ms = (time.perf_counter() - start) * 1000 / args.repeats / len(clips)
    error = statistics.mean(metric(r, t) for r, t in zip(refs, texts, strict=True))
    return (f"| {name} | plain batching ({batch} per batch, a 30 s window each) | {len(clips)} | {len(clips)} "
            f"| {ms:.0f} | {error:.3f} | – | – |")


def packed_row(model, name, clips, refs, language, metric, args) -> str:
    import ctranslate2

    t = model.tokenizer
    groups = [list(range(i, min(i + args.per_window, len(clips)))) for i in range(0, len(clips), args.per_window)]
    windows = [pack([clips[i] for i in g], args.gap_s) for g in groups]
    prompt = [t.sot, model.language_token(language), t.transcribe]

    def decode() -> list[list[int]]:
        mel = model.log_mel([w for w, _ in windows], 3000).numpy()
        encoded = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)))
        results = model.model.generate(encoded, [prompt] * len(windows), beam_size=1, max_length=448,
                                       suppress_blank=True)
        return [list(r.sequences_ids[0]) for r in results]

    decode()  # warm-up
    start = time.perf_counter()
    for _ in range(args.repeats):
        decoded = decode()
    ms = (time.perf_counter() - start) * 1000 / args.repeats / len(clips)
    errors, wrong, hallucinated = [], 0, 0
    for group, (_, slots), tokens in zip(groups, windows, decoded, strict=True):
        texts, gaps = assign(pieces(tokens, t), slots, args.gap_s)
        hallucinated += gaps
        references = [refs[i] for i in group]
        wrong += misattributed(texts, references)
        errors += [metric(r, " ".join(x)) for r, x in zip(references, texts, strict=True)]
    return (f"| {name} | packed ({args.per_window} per window, {args.gap_s:g} s gaps, batched windows) "
            f"| {len(clips)} | {len(windows)} | {ms:.0f} | {statistics.mean(errors):.3f} | {wrong} | {hallucinated} |")


if __name__ == "__main__":
    main()
