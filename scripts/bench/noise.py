"""What Whisper makes of loud non-speech that passes the VAD, beside real speech: the statistics a
"no text from noise" rule is chosen by.

    python -m scripts.bench.noise [--seconds 15]

Each of scripts/speech.py's NOISES (15 s each) and the speech clips (the English dialogue, the
long English utterances, Korean sentences by espeak-ng's Korean voice) is cut into segments by
the edge's own VAD (moderation/vad.py, default limits) and each segment transcribed in-process by
the exported whisper model's engine in Korean and in English, as a session of that language
would. Every segment's no-speech probability, average log-probability and text (as the engine
returns it, after whisper_contract.transcript's rule) are printed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from scripts.cli import MODEL_REPOSITORY, machine, parser, setup_logging
from scripts.export import triton_config
from scripts.export.triton_config import WhisperValues
from scripts.speech import (
    DIALOGUE_WAV,
    KOREAN_SPEECH,
    LONG_UTTERANCES,
    NOISES,
    SAMPLE_RATE,
    noise,
    read_wav,
    synthesize,
)


def engine(repository: Path):
    """The exported whisper model's engine, in-process, as its Triton model builds it."""
    values = triton_config.read(repository / "whisper", WhisperValues)
    sys.path.insert(0, str(repository / "whisper" / "1"))
    checkpoint = repository / "whisper" / "1" / values.checkpoint
    if values.engine == "ctranslate2":
        from whisper_ct2 import WhisperCT2

        return WhisperCT2(str(checkpoint), device="cpu", device_index=0, compute_type="int8",
                          intra_threads=0, inter_threads=1)
    from whisper_batch import WhisperBatch

    return WhisperBatch(str(checkpoint), device="cpu")


def segments_of(audio: np.ndarray) -> list[np.ndarray]:
    from moderation.vad import Segmenter, SegmenterLimits

    segmenter = Segmenter(SegmenterLimits())
    out = []
    for start in range(0, len(audio), 320):
        out += segmenter.feed(audio[start:start + 320], received_at=0.0)
    return [s.audio for s in out + segmenter.flush(received_at=0.0)]


def clips(seconds: float, folder: Path) -> dict[str, np.ndarray]:
    found = {kind: noise(kind, seconds, seed=i) for i, kind in enumerate(NOISES)}
    found["speech: English dialogue"] = read_wav(DIALOGUE_WAV)
    found["speech: long English utterances"] = np.concatenate(
        [read_wav(synthesize(text, folder / f"en{i}.wav")) for i, text in enumerate(LONG_UTTERANCES)])
    found["speech: Korean (espeak-ng)"] = np.concatenate(
        [np.concatenate([read_wav(synthesize(text, folder / f"ko{i}.wav", voice="ko", words_per_minute=120)),
                         np.zeros(SAMPLE_RATE, np.float32)]) for i, text in enumerate(KOREAN_SPEECH)])
    return found


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of each noise")
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    args = p.parse_args(argv)
    model = engine(args.repository)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio in clips(args.seconds, Path(tmp)).items():
            pieces = segments_of(audio)
            for language in ("ko", "en"):
                token = model.language_token(language)
                for result in model.transcribe(pieces, [token] * len(pieces), [False] * len(pieces)):
                    rows.append({"clip": name, "language": language, "no_speech_prob": result.no_speech_prob,
                                 "avg_logprob": result.avg_logprob, "text": result.text})
    print(f"{machine()}\n")
    print("| clip | session language | segments | with text | max no-speech probability |\n|---|---|---:|---:|---:|")
    for name in dict.fromkeys(r["clip"] for r in rows):
        for language in ("ko", "en"):
            mine = [r for r in rows if r["clip"] == name and r["language"] == language]
            print(f"| {name} | {language} | {len(mine)} | {sum(bool(r['text']) for r in mine)} | "
                  f"{max((r['no_speech_prob'] for r in mine), default=0):.2f} |")
    print("\n" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows if r["text"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
