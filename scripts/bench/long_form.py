"""What batching buys long-form windows on this machine: the whisper model's CTranslate2 engine
in-process (no Triton), loaded as the exported Triton model loads it, on the windows a batch job
cuts from loadtest.batch_bench's recording, transcribed long-form with word times in batches of
1 to 16; and the same without the engine's window runner (the second copy of the weights with
one thread per core that batches of windows use on CPU), i.e. on the live path's parts.

    python -m scripts.bench.long_form [--minutes 4] [--windows 16]

Each configuration is warmed up on two windows, then transcribes the same ``--windows`` windows
in batches of ``batch``. Prints seconds of compute per window, and the windows' audio over it
(the real-time factor's inverse).
"""

from __future__ import annotations

import sys
import time

from jobs.decode import decode
from jobs.settings import JobSettings
from jobs.windows import Window, Windower
from loadtest.batch_bench import recording
from moderation.vad import Segmenter, SegmenterLimits
from scripts.cli import MODEL_REPOSITORY, machine, parser, setup_logging
from scripts.export import triton_config
from scripts.export.triton_config import WhisperValues

BATCHES = (1, 2, 4, 8, 16)


def windows_of(path, settings: JobSettings) -> list[Window]:
    """The long-form windows a job cuts from the recording at ``path``."""
    segmenter, windower, found = Segmenter(SegmenterLimits.from_settings(settings)), Windower(settings.window_s), []
    for chunk in decode(path, settings.max_duration_s):
        for segment in segmenter.feed(chunk):
            found += windower.feed(segment)
    for segment in segmenter.flush():
        found += windower.feed(segment)
    return found + list(windower.flush())


def measure(engine, clips: list, batch: int) -> float:
    """Seconds of compute per window in batches of ``batch``."""
    english = engine.languages.token("en")
    started = time.perf_counter()
    for first in range(0, len(clips), batch):
        part = clips[first:first + batch]
        engine.transcribe_long(part, [english] * len(part), [""] * len(part), [True] * len(part))
    return (time.perf_counter() - started) / len(clips)


def load(values: WhisperValues, window_runner: bool):
    """The engine as the Triton model builds it on CPU (without its window runner if asked)."""
    sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
    from whisper_ct2 import WhisperCT2

    return WhisperCT2(str(MODEL_REPOSITORY / "whisper" / "1" / values.checkpoint), compute_type=values.compute_type,
                      intra_threads=values.cpu_threads, inter_threads=values.inter_threads, window_runner=window_runner)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--minutes", type=float, default=4.0, help="length of batch_bench's recording")
    p.add_argument("--windows", type=int, default=16, help="windows per configuration")
    args = p.parse_args(argv)
    values = triton_config.read(MODEL_REPOSITORY / "whisper", WhisperValues)
    if values.engine != "ctranslate2":
        print("long-form windows need the ctranslate2 engine; the export runs torch", file=sys.stderr)
        return 2
    windows = windows_of(recording(args.minutes).path, JobSettings())
    clips = [windows[i % len(windows)].audio for i in range(args.windows)]
    seconds = sum(len(c) for c in clips) / 16000 / len(clips)
    print(f"{machine()}; {len(clips)} windows of {seconds:.1f} s on average")
    print("| window runner | batch | s per window | audio s per compute s |\n|---|---:|---:|---:|")
    for window_runner in (True, False):
        engine = load(values, window_runner)
        try:
            measure(engine, clips[:2], 2)  # warm-up
            for batch in BATCHES:
                cost = measure(engine, clips, batch)
                print(f"| {'on' if window_runner else 'off'} | {batch} | {cost:.3f} | {seconds / cost:.1f} |",
                      flush=True)
        finally:
            engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
