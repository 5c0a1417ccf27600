"""How many words the maximum-segment cut splits: at the exact limit against in the quietest
100 ms of the last second (``EDGE_CUT_SEARCH_MS``), on long utterances through the real edge.

    python -m scripts.bench.segment_cuts [--utterances 4]

Each utterance is one of scripts/speech.py's LONG_UTTERANCES spoken by espeak-ng: 10-12 s of
continuous speech, no pause long enough to end a segment. One tritonserver serves
three edges: the default limit of 5 s cut at the limit (``cut_search_ms`` 0), the same with the
quiet-point cut (1000, the default), and a 30 s limit that hears each utterance whole, whose
Whisper word times say where the words are. A cut splits a word when it falls inside one (more
than 30 ms from both its ends). Prints a Markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

from edge.client import stream
from moderation.protocol import SegmentEvent
from scripts.cli import MODEL_REPOSITORY, machine, parser, setup_logging
from scripts.service.launch import free_port, running_edge
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import LONG_UTTERANCES, synthesize, wer

INSIDE_MARGIN_S = 0.03
"""A cut this close to a word's edge is between words (Whisper's word times are that exact)."""
VARIANTS = {"cut at the 5 s limit": {"cut_search_ms": 0}, "cut in the quietest 100 ms of the last second": {},
            "whole (30 s limit)": {"max_segment_s": 30}}


def utterances(count: int, folder: Path) -> list[tuple[str, Path]]:
    return [(text, synthesize(text, folder / f"utterance{i}.wav")) for i, text in enumerate(LONG_UTTERANCES[:count])]


def split_words(cuts: list[float], words: list) -> int:
    return sum(any(w.start_s + INSIDE_MARGIN_S < cut < w.end_s - INSIDE_MARGIN_S for w in words) for cut in cuts)


async def measure(edges: dict[str, str], spoken: list[tuple[str, Path]]) -> dict[str, dict]:
    rows = {name: {"cuts": 0, "split": 0, "wer": []} for name in edges}
    for text, path in spoken:
        results = {name: (await stream(path, f"ws://{url}/ws/audio", language="en",
                                       word_timestamps=True)).of_type(SegmentEvent) for name, url in edges.items()}
        words = [w for s in results["whole (30 s limit)"] for w in s.words or []]
        for name, segments in results.items():
            cuts = [a.end_s for a, b in zip(segments, segments[1:], strict=False) if abs(b.start_s - a.end_s) < 1e-6]
            rows[name]["cuts"] += len(cuts)
            rows[name]["split"] += split_words(cuts, words)
            rows[name]["wer"].append(wer(text, " ".join(s.text for s in segments)))
    return rows


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--utterances", type=int, default=len(LONG_UTTERANCES))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        spoken = utterances(args.utterances, tmp)
        ports = Ports(free_port(), free_port(), free_port())
        stack.enter_context(TritonServer(MODEL_REPOSITORY, ports, log_file=stack.enter_context(
            open(tmp / "triton.log", "wb"))))
        edges = {}
        for name, settings in VARIANTS.items():
            log = stack.enter_context(open(tmp / f"edge{len(edges)}.log", "wb"))
            edges[name] = stack.enter_context(running_edge(free_port(), f"127.0.0.1:{ports.grpc}", log,
                                                           **settings)).address
        rows = asyncio.run(measure(edges, spoken))
    print(f"{len(spoken)} utterances, {machine()}\n")
    print("| segments | cuts | cuts inside a word | WER of the joined transcripts | WER per utterance |")
    print("|---|---:|---:|---:|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['cuts']} | {r['split']} | {sum(r['wer']) / len(r['wer']):.3f} | "
              f"{' '.join(f'{w:.2f}' for w in r['wer'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
