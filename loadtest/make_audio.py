"""Regenerate loadtest/audio/dialogue_en.wav and its sidecar dialogue_en.json: three English
sentences with 1 s pauses (espeak-ng, sox).

    python -m loadtest.make_audio
"""

from __future__ import annotations

from scripts.speech import DIALOGUE, DIALOGUE_WAV, write_dialogue


def main() -> None:
    write_dialogue(DIALOGUE, DIALOGUE_WAV)
    print(f"wrote {DIALOGUE_WAV} and {DIALOGUE_WAV.with_suffix('.json')}")


if __name__ == "__main__":
    main()
