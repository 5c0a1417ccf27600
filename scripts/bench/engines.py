"""Per-segment compute and WER of the whisper model's engines, in-process, in one run.

    python -m scripts.bench.engines [--repeats 3] [--batch 1 4 8]

Each engine variant (torch: fp32 / dynamic int8 / ``fit`` context; CTranslate2: int8 / float32 /
int8_float32, and int8 with the ``fit`` context interim calls ask for) transcribes the same
espeak-ng English segments (VAD-segment lengths), and so does faster-whisper int8 (the engine a
user would run in-process, as a reference). Reported: ms of
compute per segment at each batch size (mean of --repeats after a warm-up; a batch of n is n
different segments) and the mean WER at batch 1. With --threads it also times the CTranslate2
batch split over ``inter_threads`` workers against one worker with all the threads.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser
from scripts.speech import BENCH_SENTENCES, GAME_CHAT_SENTENCES, RECORDING_SENTENCES, read_wav, synthesize, wer

SENTENCES = BENCH_SENTENCES + GAME_CHAT_SENTENCES[:4]
"""Eight English segments of 1.5-6 s."""
ALL_SENTENCES = BENCH_SENTENCES + GAME_CHAT_SENTENCES + RECORDING_SENTENCES
"""Every English reference sentence (51): a WER with more than one word at stake per engine."""
Transcribe = Callable[[list[np.ndarray]], list[str]]


def engine_variants(ct2_dir: Path, checkpoint: Path) -> dict[str, Callable[[], Transcribe]]:
    """Name -> loader of a batch transcriber (loaded one at a time, so memory holds one model)."""
    sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))

    def torch_engine(**kwargs) -> Callable[[], Transcribe]:
        def load() -> Transcribe:
            from whisper_batch import WhisperBatch
            model = WhisperBatch(str(checkpoint), **kwargs)
            en = model.language_token("en")
            return lambda clips: [r.text for r in model.transcribe(clips, [en] * len(clips))]
        return load

    def ct2_engine(compute_type: str, intra: int = 0, fit: bool = False) -> Callable[[], Transcribe]:
        def load() -> Transcribe:
            from whisper_ct2 import WhisperCT2
            model = WhisperCT2(str(ct2_dir), compute_type=compute_type, intra_threads=intra)
            en = model.language_token("en")
            return lambda clips: [r.text for r in model.transcribe(clips, [en] * len(clips), fit=fit)]
        return load

    return {
        "torch fp32 (full 30 s window)": torch_engine(),
        "torch dynamic int8 (full)": torch_engine(cpu_int8=True),
        "torch fp32, fit context": torch_engine(encoder_context="fit"),
        "torch dynamic int8, fit context (compare's (f))": torch_engine(encoder_context="fit", cpu_int8=True),
        "ctranslate2 int8": ct2_engine("int8"),
        "ctranslate2 int8, fit context (interim calls)": ct2_engine("int8", fit=True),
        "ctranslate2 int8_float32": ct2_engine("int8_float32"),
        "ctranslate2 float32": ct2_engine("float32"),
        "faster-whisper int8 (reference, in-process)": lambda: faster_whisper(ct2_dir),
    }


def faster_whisper(ct2_dir: Path) -> Transcribe:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8")

    def run(clips: list[np.ndarray]) -> list[str]:
        out = []
        for clip in clips:  # faster-whisper transcribes one clip per call
            segments, _ = model.transcribe(clip, language="en", beam_size=1, without_timestamps=True,
                                           condition_on_previous_text=False)
            out.append(" ".join(s.text.strip() for s in segments))
        return out
    return run


def time_batches(run: Transcribe, clips: list[np.ndarray], batch: int, repeats: int) -> float:
    """Mean ms per segment of ``repeats`` calls on ``batch`` different segments."""
    chosen = [clips[i % len(clips)] for i in range(batch)]
    run(chosen)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(chosen)
        times.append((time.perf_counter() - start) * 1000 / batch)
    return statistics.mean(times)


def bench(name: str, run: Transcribe, clips: list[np.ndarray], sentences: list[str], batches: list[int],
          repeats: int) -> str:
    texts = [run([clip])[0] for clip in clips]
    mean_wer = statistics.mean(wer(s, t) for s, t in zip(sentences, texts, strict=True))
    costs = " | ".join(f"{time_batches(run, clips, b, repeats):.0f}" for b in batches)
    return f"| {name} | {costs} | {mean_wer:.3f} |"


THREADS = ((2, 1), (1, 2), (2, 2))
"""(intra_threads, inter_threads) of the CTranslate2 engine: one call per batch on both cores, or
the batch in two parts at once (whisper_ct2 splits it) on one core each, or on two threads each."""


def thread_rows(ct2_dir: Path, clips: list[np.ndarray], batches: list[int], repeats: int) -> list[str]:
    """ms per segment of the CTranslate2 engine (int8) at each threads setting and batch size."""
    from whisper_ct2 import WhisperCT2

    rows = []
    for intra, inter in THREADS:
        model = WhisperCT2(str(ct2_dir), compute_type="int8", intra_threads=intra, inter_threads=inter)
        en = model.language_token("en")

        def run(chosen, model=model, en=en) -> list[str]:
            return [r.text for r in model.transcribe(chosen, [en] * len(chosen))]
        costs = " | ".join(f"{time_batches(run, clips, b, repeats):.0f}" for b in batches)
        rows.append(f"| intra {intra}, inter {inter} | {costs} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--threads", action="store_true", help="also time inter_threads against intra_threads")
    p.add_argument("--only", nargs="*", help="variants whose name contains one of these words")
    p.add_argument("--all-sentences", action="store_true", help=f"all {len(ALL_SENTENCES)} English sentences")
    args = p.parse_args(argv)
    from scripts.export.whisper_sources import offline_ct2_dir

    ct2_dir = offline_ct2_dir(REPO_ROOT / ".cache")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "whisper.pt"
        _torch_checkpoint(checkpoint)
        sentences = ALL_SENTENCES if args.all_sentences else SENTENCES
        clips = [read_wav(synthesize(s, Path(tmp) / f"{i}.wav")) for i, s in enumerate(sentences)]
        print(f"{len(clips)} segments, mean {statistics.mean(len(c) for c in clips) / 16000:.1f} s\n")
        print("| engine | " + " | ".join(f"ms/segment, batch {b}" for b in args.batch) + " | mean WER |")
        print("|---|" + "---:|" * (len(args.batch) + 1))
        for name, load in engine_variants(ct2_dir, checkpoint).items():
            if not args.only or any(word in name for word in args.only):
                print(bench(name, load(), clips, sentences, args.batch, args.repeats), flush=True)
        if args.threads:
            print("\n| CTranslate2 int8 threads | " + " | ".join(f"ms/segment, batch {b}" for b in args.batch)
                  + " |\n|---|" + "---:|" * len(args.batch))
            for row in thread_rows(ct2_dir, clips, args.batch, args.repeats):
                print(row, flush=True)


def _torch_checkpoint(path: Path) -> None:
    """The torch engine's checkpoint of the offline base (whichever engine the repository serves)."""
    import torch

    from scripts.export.whisper_sources import load_checkpoint

    torch.save(load_checkpoint("offline-base", REPO_ROOT / ".cache"), path)


if __name__ == "__main__":
    main()
