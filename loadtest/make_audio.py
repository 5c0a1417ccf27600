"""Regenerate loadtest/audio/dialogue_en.wav: three English sentences, 1 s pauses (espeak-ng, sox).

    python -m loadtest.make_audio
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.conftest import DIALOGUE
from tests.speech import write_dialogue

TARGET = Path(__file__).parent / "audio" / "dialogue_en.wav"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(write_dialogue(DIALOGUE, Path(tmp)), TARGET)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
