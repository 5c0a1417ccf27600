"""What Whisper makes of Korean swear words spoken alone by espeak-ng, and whether the lexicon
flags its transcript: the honest limit of testing Korean speech without a Korean voice.

    python -m scripts.bench.spoken_words [--words 씨발 개새끼 …] [--language ko]

Each word is synthesised with espeak-ng's Korean voice, transcribed by the exported whisper
model in-process (one batch, as Triton would run it), and matched by the exported lexicon with
its overrides. Prints a Markdown table for docs/MODERATION.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from scripts.cli import MODEL_REPOSITORY, parser
from scripts.export import export_lexicon
from scripts.export.whisper_sources import torch_checkpoint_file
from scripts.speech import KOREAN_WPM, read_wav, synthesize

SPOKEN = ["씨발", "시발", "개새끼", "병신", "미친놈", "좆같다", "지랄", "꺼져", "닥쳐", "새끼", "존나", "엿먹어",
          "안녕하세요", "감사합니다"]
"""Swear words a moderator expects caught, then two greetings as the control."""


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--words", nargs="+", default=SPOKEN)
    p.add_argument("--language", default="ko")
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.repository / "whisper" / "1"))
    from whisper_batch import WhisperBatch

    lexicon = export_lexicon.lexicon_match().load(args.repository / "lexicon" / "1" / "lexicon.json",
                                                  args.repository / "lexicon" / "overrides.txt")
    with tempfile.TemporaryDirectory() as tmp:
        clips = [read_wav(synthesize(w, Path(tmp) / f"{i}.wav", voice=args.language, words_per_minute=KOREAN_WPM))
                 for i, w in enumerate(args.words)]
    with tempfile.TemporaryDirectory() as tmp:
        model = WhisperBatch(str(torch_checkpoint_file(args.repository / "whisper", Path(tmp))))
    language = model.language_token(args.language)
    results = model.transcribe(clips, [language] * len(clips))
    print("| spoken (espeak-ng) | Whisper base heard | transcript exact | lexicon flags the word "
          "| flags the transcript |")
    print("|---|---|:---:|:---:|:---:|")
    for word, result in zip(args.words, results, strict=True):
        print(f"| {word} | {result.text or '(nothing)'} | {'yes' if result.text.strip(' .') == word else 'no'} | "
              f"{'yes' if lexicon.match(word) else 'no'} | {'yes' if lexicon.match(result.text) else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
