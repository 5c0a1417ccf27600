"""What every Whisper engine of the whisper model promises, whichever runs the network: the limits,
the silence and repetition rules, and the result types (no Triton, torch or CTranslate2 imports).

The torch engine (whisper_batch) and the CTranslate2 engine (whisper_ct2) both follow it, so a
client cannot tell them apart by anything but speed and the last digits of a probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from whisper.audio import N_SAMPLES, SAMPLE_RATE
from whisper.tokenizer import LANGUAGES, Tokenizer, get_tokenizer

MAX_AUDIO_SECONDS = N_SAMPLES / SAMPLE_RATE
"""Whisper sees one 30 s window; longer requests are rejected, not silently truncated."""
TOKENS_PER_SECOND = 25
"""Decode-length bound per second of audio; generous for Korean, whose syllables take 1-3 tokens."""
MIN_TOKEN_BUDGET = 16
"""Tokens allowed even for very short audio."""
NO_SPEECH_THRESHOLD = 0.6
"""Whisper's own rule: above this no-speech probability, with a low average log-probability ..."""
LOGPROB_THRESHOLD = -1.0
"""... (below this), the window is treated as silence and the transcript is empty."""
NO_SPEECH_MAX = 0.7
"""Above this no-speech probability the transcript is empty whatever the log-probability. Whisper
writes confident phrases for loud non-speech that its own rule lets through: on white noise,
modulated pink noise and mains hum that passed the VAD, Korean sessions got "이 영상은 영상에서"
at no-speech 0.75-0.80 and log-probability -0.26 to -0.39 (scripts/bench/noise.py,
docs/PERFORMANCE.md), while real speech stayed below: at most 0.31 in that probe, 0.56 for a
lone espeak-ng "안녕하세요" (tests/integration/test_whisper_words.py). On digital silence it
writes "you" the same way."""
HALLUCINATION_NO_SPEECH = 0.4
"""Above this no-speech probability, a transcript that is one of Whisper's known phrases for
non-speech is emptied too: the noise probe's "이 영상은 영상에서" and "I" came at 0.6-0.7 through
the edge on Intel CPUs (AVX-512) and at 0.49 on an AMD one (AVX2: CTranslate2's int8 kernels
differ), where a lone real word (0.56) can also be; the phrase tells them apart. Real speech
measured at most 0.31 in that probe."""
HALLUCINATED_PHRASES = frozenset({
    "i", "you", "thank you", "thanks for watching", "thank you for watching", "bye",
    "시청해주셔서 감사합니다", "구독과 좋아요 부탁드립니다", "이 영상은 영상에서", "이 영상은 영상이",
})
"""Whole transcripts Whisper writes for noise and silence (lower-cased, punctuation dropped)."""
HALLUCINATED_PREFIXES = ("이 영상은 ", "이 노래는 ")
"""Openings of the Korean ones ("this video is ...", "this song is ..."), alone or followed by
more: video-caption phrases learnt from subtitles, not speech in a voice chat."""
REPEAT_MIN_TOKENS, REPEAT_MAX_TOKENS = 2, 32
"""A block of this many tokens produced three times in a row is a decoding loop (Whisper's
classic failure, common on clipped speech): decoding stops and keeps the first copy."""
AUTO_LANGUAGE = "auto"
"""The LANGUAGE value that asks for the language to be detected from the request's audio."""


@dataclass
class Word:
    """One word, spelt as Whisper wrote it; seconds from the start of the request's audio."""

    word: str
    start: float
    end: float
    probability: float
    """Mean probability of the word's tokens, as openai-whisper reports it."""


@dataclass
class Transcription:
    text: str
    no_speech_prob: float
    avg_logprob: float
    words: list[Word] = field(default_factory=list)
    """Filled only for requests that asked for word timestamps and have text."""
    words_error: str | None = None
    """Why the alignment pass failed, for the requests that asked for words; the transcript stands."""
    language: str = ""
    """The language code the clip was transcribed in: the requested one, or the detected one."""


def token_budget(samples: int, max_tokens: int) -> int:
    """Most tokens a clip of ``samples`` 16 kHz samples may decode to."""
    return min(max_tokens, MIN_TOKEN_BUDGET + int(TOKENS_PER_SECOND * samples / SAMPLE_RATE))


def is_silent(no_speech_prob: float, avg_logprob: float) -> bool:
    """Whisper's no-speech rule, plus the bound that catches its confident hallucinations (NO_SPEECH_MAX)."""
    return no_speech_prob > NO_SPEECH_MAX or (no_speech_prob > NO_SPEECH_THRESHOLD
                                              and avg_logprob < LOGPROB_THRESHOLD)


def is_hallucination(text: str, no_speech_prob: float) -> bool:
    """A known non-speech phrase (HALLUCINATED_PHRASES, HALLUCINATED_PREFIXES) written where
    Whisper itself doubted there was speech (HALLUCINATION_NO_SPEECH)."""
    if no_speech_prob <= HALLUCINATION_NO_SPEECH:
        return False
    words = " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())
    return words in HALLUCINATED_PHRASES or any(f"{words} ".startswith(p) for p in HALLUCINATED_PREFIXES)


def transcript(text: str, no_speech_prob: float, avg_logprob: float) -> str:
    """What an engine returns for a decoded clip: empty for silence and for noise's phrases."""
    if is_silent(no_speech_prob, avg_logprob) or is_hallucination(text, no_speech_prob):
        return ""
    return text


def loop_cut(tokens: list[int]) -> int | None:
    """Where a decoding loop's first copy ends: the length to keep, the first time (scanning as a
    greedy decoder would, token by token) the last block of 2-32 tokens is there three times in a
    row; None if the tokens never loop."""
    found = loop_found(tokens)
    return None if found is None else found[0]


def loop_found(tokens: list[int]) -> tuple[int, int] | None:
    """(tokens to keep, tokens decoded when the loop was seen): what ``loop_cut`` keeps, and where
    a greedy decoder that checks after every token stops; None if the tokens never loop."""
    for filled in range(3 * REPEAT_MIN_TOKENS, len(tokens) + 1):
        for k in range(REPEAT_MIN_TOKENS, min(REPEAT_MAX_TOKENS, filled // 3) + 1):
            a, b, c = (tokens[filled - i * k:filled - (i - 1) * k] for i in (1, 2, 3))
            if a == b == c:
                return filled - 2 * k, filled
    return None


def vocabulary_languages(n_vocab: int) -> tuple[bool, int]:
    """(multilingual, number of languages) of a Whisper vocabulary size, as openai-whisper reads it."""
    multilingual = n_vocab >= 51865
    return multilingual, n_vocab - 51765 - int(multilingual)


class Languages:
    """A model's tokenizer, and its language codes and their tokens (a model may lack some codes)."""

    def __init__(self, multilingual: bool, num_languages: int):
        self.multilingual, self.num_languages = multilingual, num_languages
        self.tokenizer = get_tokenizer(multilingual, num_languages=num_languages, task="transcribe")
        self._codes = dict(zip(self.tokenizer.all_language_tokens, self.tokenizer.all_language_codes, strict=True))

    def token(self, language: str) -> int:
        """Token id of a language code such as 'ko'; ValueError for codes this model lacks."""
        code = language.strip().lower()
        if code not in LANGUAGES or code not in self.tokenizer.all_language_codes:
            raise ValueError(f"unsupported language {language!r}; use a Whisper code such as 'ko' or 'en'")
        return self.tokenizer.to_language_token(code)

    def requested(self, language: str) -> int | None:
        """The language token a request asks for; None for AUTO_LANGUAGE (detect it from the audio).
        ValueError for codes this model lacks, and for AUTO_LANGUAGE on an English-only model."""
        if language.strip().lower() == AUTO_LANGUAGE:
            if not self.multilingual:
                raise ValueError(f"{AUTO_LANGUAGE!r}: this Whisper model knows one language; send 'en'")
            return None
        try:
            return self.token(language)
        except ValueError as exc:  # a request, unlike the default, may also ask for detection
            raise ValueError(f"{exc}, or {AUTO_LANGUAGE!r} to detect it") from None

    def code(self, token: int) -> str:
        """The code ('ko', 'en', ...) of a language token."""
        return self._codes[token]

    def word_tokenizer(self, token: int) -> Tokenizer:
        """The tokenizer of a language: zh/ja/th/… split words on unicode, others on spaces."""
        return get_tokenizer(self.multilingual, num_languages=self.num_languages, language=self.code(token),
                             task="transcribe")


@dataclass
class Piece:
    """One of Whisper's own segments of a long-form window, between two of its timestamps;
    seconds from the start of the request's audio."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class LongTranscription:
    """A long-form window: Whisper's segments, in order, with their times and words."""

    pieces: list[Piece]
    transcribed_to: float
    """Seconds of the window the pieces cover: all of it, or up to the last complete segment when
    decoding stopped early (the token limit, a loop): the caller sends the rest again."""
    no_speech_prob: float
    avg_logprob: float
    language: str = ""
    words_error: str | None = None


class Engine:
    """What model.py calls, whichever engine it loaded: the languages, and ``transcribe``."""

    languages: Languages
    long_form: bool = False
    """Whether the engine has ``transcribe_long`` (timestamped decoding of 30 s windows)."""

    def language_token(self, language: str) -> int:
        return self.languages.token(language)

    def requested_language(self, language: str) -> int | None:
        return self.languages.requested(language)

    def transcribe(self, clips: list, language_tokens: list[int | None],
                   word_timestamps: list[bool] | None = None, fit: bool = False) -> list[Transcription]:
        """One result per float32 16 kHz clip (each ≤ 30 s), in order; a None language token
        means: detect that clip's language. Clips flagged in ``word_timestamps`` also get words.
        ``fit``: the encoder sees the longest clip plus a margin, not Whisper's 30 s window."""
        raise NotImplementedError

    def transcribe_long(self, clips: list, language_tokens: list[int | None], prompts: list[str],
                        word_timestamps: list[bool]) -> list[LongTranscription]:
        """One long-form result per clip (each ≤ 30 s): timestamped decoding, each clip conditioned
        on its prompt (the text before it; "" for none)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the engine holds beyond its weights (threads); the model unloads."""
