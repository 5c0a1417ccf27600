"""Long-form windows without Triton or weights: how a recording's segments are packed into
windows and mapped back (jobs/windows.py), how a timestamped token sequence splits into Whisper's
segments and their words (whisper_ct2), and a job's run on long-form windows with a fake pool."""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest

from jobs.models import JobEvent, JobInfo, JobOptions, JobState
from jobs.pipeline import JobRun, Resume
from jobs.settings import JobSettings
from jobs.windows import MAX_GAP_S, SPLIT_SILENCE_S, Windower, split_at_silences
from moderation.events import SAMPLE_RATE
from moderation.triton import Priority
from moderation.vad import Segment
from moderation.verdict import LexiconMatch, LongForm, ModelFacts, ModelWord, Moderation, WindowSegment
from scripts.cli import MODEL_REPOSITORY
from scripts.speech import DIALOGUE_WAV
from tests.unit.fakes import FakePool
from tests.unit.test_job_pipeline import MemoryStore

sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
from whisper_contract import Piece, Word  # noqa: E402
from whisper_ct2 import assign_words, split_timestamps  # noqa: E402

BEGIN, EOT = 1000, 500
"""Token ids in the sequences below: timestamps from BEGIN (0.02 s each), text below EOT."""


def segment(start_s: float, seconds: float, value: float = 0.1) -> Segment:
    return Segment(np.full(int(seconds * SAMPLE_RATE), value, np.float32), start_s, start_s + seconds, 0.0)


def ts(seconds: float) -> int:
    return BEGIN + round(seconds / 0.02)


def test_segments_pack_into_windows_of_at_most_the_window_length_with_short_gaps():
    windower = Windower(10.0)
    segments = [segment(0.0, 4.0), segment(4.1, 3.0), segment(20.0, 2.5), segment(23.0, 2.0)]
    windows = [w for s in segments for w in windower.feed(s)] + list(windower.flush())
    assert [len(w.chunks) for w in windows] == [3, 1]
    first = windows[0]
    # a 0.1 s gap is kept as it was; the 12.9 s silence before the third segment shrinks to MAX_GAP_S
    assert [c.window_s for c in first.chunks] == pytest.approx([0.0, 4.1, 7.1 + MAX_GAP_S])
    assert first.duration_s == pytest.approx(9.5 + 0.1 + MAX_GAP_S) and first.duration_s <= 10.0
    assert np.count_nonzero(first.audio == 0) == round((0.1 + MAX_GAP_S) * SAMPLE_RATE)
    assert (windows[1].start_s, windows[1].end_s) == (23.0, 25.0)


def test_window_times_map_back_to_the_recording_and_gaps_to_their_edges():
    windower = Windower(30.0)
    for s in (segment(5.0, 2.0), segment(60.0, 3.0)):
        list(windower.feed(s))
    window = next(windower.flush())
    gap_end = 2.0 + MAX_GAP_S
    assert window.to_recording(1.5, start=True) == pytest.approx(6.5)
    assert window.to_recording(gap_end + 1.0, start=False) == pytest.approx(61.0)
    # a time inside the gap: a start belongs to the next segment, an end to the previous one
    assert window.to_recording(2.1, start=True) == pytest.approx(60.0)
    assert window.to_recording(2.1, start=False) == pytest.approx(7.0)
    assert window.to_recording(99.0, start=False) == pytest.approx(63.0)


def test_the_rest_of_a_window_keeps_its_recording_times():
    windower = Windower(30.0)
    for s in (segment(0.0, 4.0), segment(10.0, 4.0)):
        list(windower.feed(s))
    window = next(windower.flush())
    rest = window.after(3.0)
    assert rest is not None and rest.duration_s == pytest.approx(window.duration_s - 3.0)
    assert rest.to_recording(0.5, start=True) == pytest.approx(3.5)
    assert rest.to_recording(1.0 + MAX_GAP_S + 2.0, start=True) == pytest.approx(12.0)
    assert window.after(window.duration_s) is None


def test_a_timestamped_sequence_splits_into_whisper_segments():
    sequence = [ts(0.0), 1, 2, ts(1.5), ts(1.8), 3, ts(3.0), 4, 5, ts(4.2)]
    spans, tokens, covered = split_timestamps(sequence, BEGIN, EOT, 5.0, stopped=False)
    assert spans == [(0.0, 1.5), (1.8, 3.0), (3.0, 4.2)]
    assert tokens == [[1, 2], [3], [4, 5]]
    assert covered == 5.0


def test_text_after_the_last_timestamp_runs_to_the_end_unless_decoding_was_stopped():
    sequence = [ts(0.0), 1, 2, ts(1.5), ts(2.0), 3, 4]
    spans, tokens, covered = split_timestamps(sequence, BEGIN, EOT, 6.0, stopped=False)
    assert spans[-1] == (2.0, 6.0) and tokens[-1] == [3, 4] and covered == 6.0
    spans, tokens, covered = split_timestamps(sequence, BEGIN, EOT, 6.0, stopped=True)
    assert spans == [(0.0, 1.5)] and tokens == [[1, 2]] and covered == 2.0


def test_words_go_to_the_segment_whose_text_holds_them_and_time_it():
    pieces = [Piece(0.0, 1.0, "go go now"), Piece(1.0, 2.0, "go home."), Piece(2.0, 3.0, "bye")]
    words = [Word(w, 0.2 * i + 0.1, 0.2 * i + 0.2, 1.0) for i, w in enumerate(("go", "go", "now", "go", "home."))]
    assign_words(pieces, words)
    assert [[w.word for w in p.words] for p in pieces] == [["go", "go", "now"], ["go", "home."], []]
    assert [(p.start, p.end) for p in pieces] == [(0.1, pytest.approx(0.6)), (pytest.approx(0.7), 1.0), (2.0, 3.0)]


class WindowPool(FakePool):
    """A fake pool whose whisper decodes long-form: each window's answer is one segment per
    second of audio, the first stopping early once (so its rest is sent again)."""

    def __init__(self, stop_first_at: float | None = None):
        super().__init__(ModelFacts("en", ("lexicon",), lexicon_model="lexicon", classifier_model="koelectra",
                                    whisper_model="whisper", long_form=True),
                         text_respond=lambda text: Moderation(text, 0.1, 0.0, matches=self._matches(text)))
        self.windows: list[tuple[int, str, bool, Priority]] = []
        self.stop_first_at = stop_first_at

    @staticmethod
    def _matches(text: str) -> list[LexiconMatch]:
        at = text.find("damn")
        return [] if at < 0 else [LexiconMatch(start=at, end=at + 4, text="damn", term="damn", category="profanity",
                                                sources=["test"])]

    async def transcribe_window(self, audio, language, prompt="", word_timestamps=False,
                                priority=Priority.BULK) -> LongForm:
        self.windows.append((len(audio), prompt, word_timestamps, priority))
        duration = len(audio) / SAMPLE_RATE
        stop = self.stop_first_at if len(self.windows) == 1 else None
        end = stop if stop is not None else duration
        pieces = [WindowSegment(start=t, end=min(end, t + 1.0), text=f"w{len(self.windows)} damn {t:.0f}",
                                words=[ModelWord(word=f"w{len(self.windows)}", start=t, end=t + 0.3, probability=1),
                                       ModelWord(word="damn", start=t + 0.4, end=t + 0.8, probability=1)])
                  for t in np.arange(0.0, end - 0.5, 1.0)]
        return LongForm(segments=pieces, transcribed_to=end)


def run_windows(pool: FakePool, resume: Resume | None = None, window_s: float = 30.0,
                prompt: str | None = None) -> MemoryStore:
    info = JobInfo(id="job", state=JobState.RUNNING, filename=DIALOGUE_WAV.name, size_bytes=1,
                   options=JobOptions(language="en", prompt=prompt), created_at=0.0)
    store = MemoryStore()
    asyncio.run(JobRun(info, DIALOGUE_WAV, "worker", store, pool, JobSettings(window_s=window_s),
                       resume or Resume()).run())
    return store


def segments_of(store: MemoryStore) -> list:
    return [payload for event, payload in store.events if event is JobEvent.TRANSCRIPT_SEGMENT]


def test_a_job_on_a_long_form_model_sends_windows_and_judges_each_whisper_segment():
    pool = WindowPool()
    events = segments_of(run_windows(pool))
    assert pool.windows and not pool.calls  # no per-segment ensemble call
    assert all(words and priority is Priority.BULK for _, _, words, priority in pool.windows)
    assert [e.seq for e in events] == list(range(len(events)))
    assert sum(len(b) for b in pool.text_batches) == len(events)
    for event in events:
        assert event.is_harmful and event.start_s <= event.harmful_spans[0].start_s < event.harmful_spans[0].end_s
        assert event.harmful_spans[0].end_s <= event.end_s + 1e-6
    starts = [e.start_s for e in events]
    assert starts == sorted(starts)


def test_the_jobs_prompt_conditions_every_window():
    pool = WindowPool()
    run_windows(pool, window_s=5.0, prompt="Gympulse, Faker")
    assert len(pool.windows) >= 2 and {prompt for _, prompt, _, _ in pool.windows} == {"Gympulse, Faker"}


def test_a_window_whisper_stopped_early_is_sent_again_from_where_it_stopped():
    pool = WindowPool(stop_first_at=2.0)
    run_windows(pool)
    first, second = pool.windows[0][0], pool.windows[1][0]
    assert second == first - 2.0 * SAMPLE_RATE


def test_a_resumed_job_skips_the_windows_already_written_and_numbers_on():
    whole = segments_of(run_windows(WindowPool(), window_s=5.0))
    windows = {e.text.split()[0] for e in whole}
    assert len(windows) >= 2
    done = [e for e in whole if e.text.startswith("w1 ")]
    pool = WindowPool()
    rest = segments_of(run_windows(pool, Resume(segments=done), window_s=5.0))
    assert len(pool.windows) == len(windows) - 1
    assert [e.seq for e in rest] == list(range(len(done), len(whole)))
    assert [(e.start_s, e.end_s) for e in rest] == [(e.start_s, e.end_s) for e in whole[len(done):]]


def test_a_model_without_long_form_keeps_one_call_per_segment():
    pool = FakePool(ModelFacts("en", ("lexicon",)))
    events = segments_of(run_windows(pool))
    assert len(pool.calls) == len(events) >= 2


def test_a_whisper_segment_across_a_long_silence_is_cut_there():
    windower = Windower(30.0)
    for s in (segment(0.0, 2.0), segment(10.0, 2.0)):
        list(windower.feed(s))
    window = next(windower.flush())
    later = 2.0 + MAX_GAP_S
    words = [ModelWord(word=w, start=t, end=t + 0.4, probability=1.0)
             for w, t in (("stop", 0.5), ("it", 1.2), ("you", later + 0.2), ("fool.", later + 0.8))]
    piece = WindowSegment(start=0.0, end=later + 1.5, text="Stop it you fool.", words=words)
    parts = split_at_silences(piece, window)
    assert [p.text for p in parts] == ["Stop it", "you fool."]
    assert [(p.start, p.end) for p in parts] == [(0.5, 1.6), (later + 0.2, pytest.approx(later + 1.2))]
    close = WindowSegment(start=0.0, end=1.6, text="Stop it", words=words[:2])
    assert split_at_silences(close, window) == [close]


@pytest.mark.parametrize(("pause_s", "parts"), [(0.5, 1), (SPLIT_SILENCE_S + 0.2, 2)])
def test_a_pause_between_sentences_cuts_a_segment_and_a_hesitation_does_not(pause_s, parts):
    windower = Windower(30.0)
    for s in (segment(0.0, 2.0), segment(2.0 + pause_s, 2.0)):
        list(windower.feed(s))
    window = next(windower.flush())
    later = 2.0 + min(pause_s, MAX_GAP_S)  # where the second segment lies in the window
    words = [ModelWord(word=w, start=t, end=t + 0.4, probability=1.0)
             for w, t in (("Good", 0.5), ("game.", 1.5), ("See", later), ("you.", later + 0.8))]
    piece = WindowSegment(start=0.0, end=later + 1.5, text="Good game. See you.", words=words)
    assert len(split_at_silences(piece, window)) == parts
