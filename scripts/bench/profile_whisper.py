"""Profile one Whisper batch in-process: where does the time go (mel, encoder, decoding)?

    python -m scripts.bench.profile_whisper [--batch 1 4] [--context full fit] [--int8]
    python -m scripts.bench.profile_whisper --words [--batch 1 4] [--context full]

Times the stages of WhisperBatch.transcribe (best of --repeats) on espeak-ng clips of
VAD-segment length, and the accuracy of each variant, so optimisations target the real bottleneck.
With --words it times whole transcribe calls without word timestamps and, alternating with them on
the same machine, the work word timestamps add (the alignment pass and its DTW) for every clip.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from scripts.cli import MODEL_REPOSITORY, parser
from scripts.export.whisper_sources import torch_checkpoint_file
from scripts.speech import BENCH_SENTENCES, read_wav, synthesize, wer


def stage_times(model, clips, langs) -> dict[str, float]:
    """Wall time per stage, by timing the stages WhisperBatch.transcribe is made of."""
    times = {}
    start = time.perf_counter()
    mel = model.log_mel(clips, model.context_frames(clips))
    times["mel"] = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        features = model.encode(mel)
        times["encoder"] = time.perf_counter() - start
        budgets = torch.full((len(clips),), 64)
        start = time.perf_counter()
        model._greedy(features, langs, budgets)
        times["decode"] = time.perf_counter() - start
    return times


def transcribe_ms(model, clips, langs) -> float:
    start = time.perf_counter()
    model.transcribe(clips, langs)
    return (time.perf_counter() - start) * 1000


def alignment_ms(model, clips, langs) -> float:
    """The extra work of word timestamps: WhisperBatch's alignment pass and DTW for every clip with text."""
    with torch.inference_mode():
        features = model.encode(model.log_mel(clips, model.context_frames(clips)))
        decoded = model._greedy(features, langs, model.budgets(clips))
        results = model._results(decoded)
        rows = [row for row, result in enumerate(results) if result.text]
        start = time.perf_counter()
        model._attach_words(results, rows, decoded, features, clips, langs)
        elapsed = (time.perf_counter() - start) * 1000
    if any(result.words_error for result in results):
        raise RuntimeError(results[0].words_error)
    return elapsed


def profile_words(model_class, checkpoint: str, clips, args) -> None:
    """Best-of-repeats transcribe() without word timestamps, and the alignment they add, measured in
    alternation so that both see the same machine load."""
    print("| context | batch | transcribe ms | + word timestamps ms | extra |")
    print("|---|---:|---:|---:|---:|")
    for context in args.context:
        model = model_class(checkpoint, encoder_context=context)
        en = model.language_token("en")
        for batch in args.batch:
            chosen, langs = [clips[i % len(clips)] for i in range(batch)], [en] * batch
            transcribe_ms(model, chosen, langs)  # warm-up
            runs = [(transcribe_ms(model, chosen, langs), alignment_ms(model, chosen, langs))
                    for _ in range(args.repeats)]
            plain, extra = min(r[0] for r in runs), min(r[1] for r in runs)
            print(f"| {context} | {batch} | {plain:.0f} | {extra:.0f} | {extra / plain:.1%} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--context", nargs="+", default=["full", "fit"])
    p.add_argument("--int8", action="store_true", help="also profile dynamic int8 quantisation of Linear layers")
    p.add_argument("--words", action="store_true", help="time transcribe with and without word timestamps")
    p.add_argument("--checkpoint", type=Path, help="a whisper.pt (default: the exported model's weights)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
    from whisper_batch import WhisperBatch

    with tempfile.TemporaryDirectory() as tmp:
        clips = [read_wav(synthesize(s, Path(tmp) / f"{i}.wav")) for i, s in enumerate(BENCH_SENTENCES)]
        checkpoint = str(args.checkpoint or torch_checkpoint_file(MODEL_REPOSITORY / "whisper", Path(tmp)))
        profile(WhisperBatch, checkpoint, clips, args)


def profile(WhisperBatch, checkpoint: str, clips, args) -> None:  # noqa: N803 - the class, imported late
    if args.words:
        profile_words(WhisperBatch, checkpoint, clips, args)
        return
    print("| context | linear int8 | batch | mel ms | encoder ms | decode ms (to EOT, ≤ 64 tokens) | mean WER |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for context in args.context:
        for int8 in ([False, True] if args.int8 else [False]):
            model = WhisperBatch(checkpoint, encoder_context=context, cpu_int8=int8)
            en = model.language_token("en")
            for batch in args.batch:
                chosen = [clips[i % len(clips)] for i in range(batch)]
                stage_times(model, chosen, [en] * batch)  # warm-up
                runs = [stage_times(model, chosen, [en] * batch) for _ in range(args.repeats)]
                best = {k: min(r[k] for r in runs) * 1000 for k in runs[0]}
                texts = model.transcribe(clips, [en] * len(clips))
                rates = [wer(s, t.text) for s, t in zip(BENCH_SENTENCES, texts, strict=True)]
                mean_wer = sum(rates) / len(rates)
                print(f"| {context} | {'yes' if int8 else 'no'} | {batch} | {best['mel']:.0f} | "
                      f"{best['encoder']:.0f} | {best['decode']:.0f} | {mean_wer:.3f} |", flush=True)


if __name__ == "__main__":
    main()
