"""A job's transcript formats (JSON, SubRip, WebVTT, text), its moderation report and the LLM prompt."""

from __future__ import annotations

import json

import pytest

from jobs.models import FinalSummary, JobInfo, JobOptions, JobState
from jobs.report import MAX_PROMPT_CHARS, WORST_MOMENTS, build_report, llm_prompt, severity
from jobs.transcripts import MEDIA_TYPES, TranscriptFormat, download_name, render, timestamp
from moderation.events import HarmfulSpan, SegmentEvent, WordTime


def segment(seq: int, start_s: float, end_s: float, text: str, categories: tuple[str, ...] = (),
            confidence: float | None = None, words: list[WordTime] | None = None) -> SegmentEvent:
    """A segment, harmful with one lexicon span per category when categories are given."""
    spans = [HarmfulSpan(start_s=start_s, end_s=end_s, text=text, category=c, source="lexicon") for c in categories]
    return SegmentEvent(seq=seq, start_s=start_s, end_s=end_s, text=text, is_harmful=bool(spans),
                        reasons=["lexicon"] if spans else [], confidence=confidence,
                        harmful_prob=0.9 if spans else 0.1, no_speech_prob=0.01, harmful_spans=spans, words=words)


def job(**changes) -> JobInfo:
    info = JobInfo(id="job-1", state=JobState.COMPLETED, filename="meeting.mp3", size_bytes=1234,
                   options=JobOptions(), created_at=0.0, duration_s=3730.0, language="ko")
    return info.model_copy(update=changes)


SEGMENTS = [
    segment(0, 0.0, 2.5, " 안녕하세요 여러분"),
    segment(1, 3.0, 4.0, ""),
    segment(2, 61.25, 65.0, "  "),
    segment(3, 3725.5, 3729.004, "line one\n\nline two <b> & --> end"),
]


def test_srt_numbers_spoken_cues_from_one_with_comma_times_past_an_hour():
    body, media_type = render(TranscriptFormat.SRT, SEGMENTS, job())
    assert body == ("1\n00:00:00,000 --> 00:00:02,500\n안녕하세요 여러분\n\n"
                    "2\n01:02:05,500 --> 01:02:09,004\nline one line two <b> & --> end\n\n")
    assert media_type == "application/x-subrip; charset=utf-8"


def test_vtt_has_its_header_dot_times_and_escaped_markup():
    body, media_type = render(TranscriptFormat.VTT, SEGMENTS, job())
    assert body == ("WEBVTT\n\n"
                    "00:00:00.000 --> 00:00:02.500\n안녕하세요 여러분\n\n"
                    "01:02:05.500 --> 01:02:09.004\nline one line two &lt;b&gt; &amp; --&gt; end\n\n")
    assert media_type == "text/vtt; charset=utf-8"


def test_txt_is_one_line_per_spoken_segment_with_its_start():
    body, media_type = render(TranscriptFormat.TXT, SEGMENTS, job())
    assert body == "[00:00:00] 안녕하세요 여러분\n[01:02:05] line one line two <b> & --> end\n"
    assert media_type == "text/plain; charset=utf-8"


def test_a_transcript_without_speech_makes_no_empty_cue():
    silent = [segment(0, 0.0, 1.0, ""), segment(1, 2.0, 3.0, " \n ")]
    assert render(TranscriptFormat.SRT, silent, job())[0] == ""
    assert render(TranscriptFormat.VTT, silent, job())[0] == "WEBVTT\n\n"
    assert render(TranscriptFormat.TXT, silent, job())[0] == ""


@pytest.mark.parametrize(("seconds", "srt"), [
    (0.0, "00:00:00,000"), (59.9996, "00:01:00,000"), (3599.999, "00:59:59,999"), (3600.0, "01:00:00,000"),
    (36_000.0 + 61.5, "10:01:01,500"), (-0.2, "00:00:00,000"),
])
def test_timestamps_round_to_the_millisecond_and_carry_into_hours(seconds, srt):
    assert timestamp(seconds, ",") == srt
    assert timestamp(seconds) == srt.replace(",", ".")


def test_json_carries_the_job_and_every_segment_which_read_back_as_segment_events():
    words = [WordTime(word="안녕하세요", start_s=0.0, end_s=1.2, probability=0.98)]
    segments = [segment(0, 0.0, 2.5, "안녕하세요 여러분", words=words), *SEGMENTS[1:],
                segment(4, 3730.0, 3731.0, "욕설", ("profanity",), confidence=1.0)]
    body, media_type = render(TranscriptFormat("json"), segments, job())
    document = json.loads(body)
    assert media_type == "application/json"
    assert {k: document[k] for k in ("job_id", "filename", "language", "duration_s")} == {
        "job_id": "job-1", "filename": "meeting.mp3", "language": "ko", "duration_s": 3730.0}
    assert [SegmentEvent.model_validate(s) for s in document["segments"]] == segments
    assert "안녕하세요" in body  # unescaped UTF-8, readable as it is


def test_every_format_has_a_media_type_and_a_download_name():
    assert set(MEDIA_TYPES) == set(TranscriptFormat)
    assert download_name(job(), TranscriptFormat.SRT) == "meeting.srt"
    assert download_name(job(filename="C:\\rec\\call.final.wav"), TranscriptFormat.VTT) == "call.final.vtt"
    assert download_name(job(filename=""), TranscriptFormat.TXT) == "job-1.txt"
    with pytest.raises(ValueError):
        render("docx", SEGMENTS, job())  # type: ignore[arg-type]


def harmful_mix() -> list[SegmentEvent]:
    """Eight harmful segments of known severity among clean ones."""
    return [
        segment(0, 0.0, 1.0, "clean"),
        segment(1, 1.0, 2.0, "a", ("insult",), confidence=0.6),                       # 0.6
        segment(2, 2.0, 4.0, "b", ("profanity", "insult", "profanity"), confidence=1.0),  # 3.0
        segment(3, 4.0, 5.0, "c", ("profanity",), confidence=None),                  # 1.0
        segment(4, 5.0, 6.5, "d", ("threat", "insult"), confidence=0.9),             # 1.8
        segment(5, 6.5, 7.0, ""),
        segment(6, 7.0, 8.0, "e", ("profanity",), confidence=1.0),                   # 1.0, after c
        segment(7, 8.0, 9.0, "f", ("slur",), confidence=0.5),                        # 0.5
        segment(8, 9.0, 10.0, "g", ("profanity", "insult"), confidence=0.95),        # 1.9
        segment(9, 10.0, 10.25, "h", ("profanity",), confidence=0.7),                # 0.7
    ]


def test_report_counts_speech_segments_and_harmful_spans_per_category():
    segments = harmful_mix()
    report = build_report(job(), segments, duration_s=20.0, processing_s=5.0, language="ko")
    assert report.speech_s == pytest.approx(10.25)
    assert (report.segments, report.harmful_segments) == (10, 8)
    assert report.categories == {"profanity": 6, "insult": 4, "threat": 1, "slur": 1}
    assert list(report.categories) == ["profanity", "insult", "slur", "threat"]  # most frequent first
    assert [h.seq for h in report.harmful] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert report.harmful[1].categories == ["insult", "profanity"]
    assert report.harmful[1].reasons == ["lexicon"] and len(report.harmful[1].spans) == 3
    assert report.harmful[2].confidence is None
    assert (report.job_id, report.filename, report.language, report.duration_s) == ("job-1", "meeting.mp3", "ko", 20.0)
    assert report.real_time_factor == pytest.approx(0.25)
    assert FinalSummary.model_validate_json(report.model_dump_json()) == report


def test_worst_moments_rank_by_severity_then_start_and_stop_at_the_cap():
    report = build_report(job(), harmful_mix(), duration_s=20.0, processing_s=5.0, language=None)
    assert WORST_MOMENTS == 5
    assert [m.text for m in report.worst_moments] == ["b", "g", "d", "c", "e"]
    assert [m.severity for m in report.worst_moments] == pytest.approx([3.0, 1.9, 1.8, 1.0, 1.0])
    assert report.worst_moments[0].categories == ["insult", "profanity"]
    assert (report.worst_moments[0].start_s, report.worst_moments[0].end_s) == (2.0, 4.0)
    shuffled = build_report(job(), harmful_mix()[::-1], duration_s=20.0, processing_s=5.0, language=None)
    assert shuffled.worst_moments == report.worst_moments  # ties go to the earlier start, not the list order


def test_severity_counts_a_spanless_harmful_segment_once():
    spanless = segment(0, 0.0, 1.0, "x").model_copy(update={"is_harmful": True, "reasons": ["classifier"],
                                                             "confidence": 0.8})
    assert severity(spanless) == pytest.approx(0.8)
    report = build_report(job(), [spanless], duration_s=1.0, processing_s=0.1, language="ko")
    assert report.harmful[0].categories == [] and report.categories == {}
    assert report.worst_moments[0].severity == pytest.approx(0.8)


def test_a_report_of_nothing_has_no_real_time_factor_for_no_duration():
    report = build_report(job(), [], duration_s=0.0, processing_s=0.2, language=None)
    assert (report.speech_s, report.segments, report.harmful_segments) == (0.0, 0, 0)
    assert report.harmful == [] and report.worst_moments == [] and report.real_time_factor is None


def prompt_text(messages: list[dict]) -> str:
    assert [m["role"] for m in messages] == ["system", "user"]
    return "\n".join(m["content"] for m in messages)


def test_prompt_gives_the_figures_and_the_timestamped_transcript_with_verdicts():
    segments = harmful_mix()
    report = build_report(job(), segments, duration_s=20.0, processing_s=5.0, language="ko")
    messages = llm_prompt(report, segments)
    user = messages[1]["content"]
    assert "harmful: 8" in user and "profanity 6" in user
    assert "[00:00:00-00:00:01] ok: clean" in user
    assert "[00:00:02-00:00:04] HARMFUL(insult,profanity; lexicon 1.00): b" in user
    assert "[00:00:04-00:00:05] HARMFUL(profanity; lexicon): c" in user
    assert "00:00:06-00:00:07" not in user  # the empty segment is no line
    assert "left out" not in user


def test_a_long_transcript_loses_its_middle_within_the_budget_and_the_prompt_says_so():
    segments = [segment(i, i * 5.0, i * 5.0 + 4.0, f"문장 {i} " + "가나다라 " * 30) for i in range(2000)]
    segments[1000] = segment(1000, 5000.0, 5004.0, "중간 욕설", ("profanity",), confidence=1.0)
    report = build_report(job(), segments, duration_s=10_000.0, processing_s=100.0, language="ko")
    text = prompt_text(llm_prompt(report, segments))
    assert len(text) <= MAX_PROMPT_CHARS
    assert "문장 0 " in text and "문장 1999 " in text and "문장 1001 " not in text
    assert "segments in the middle left out" in text
    assert "중간 욕설" in text  # a worst moment stays in the header even when its line is cut


def test_one_huge_segment_is_clipped_rather_than_crowding_out_the_rest():
    segments = [segment(0, 0.0, 30.0, "x" * 50_000), segment(1, 30.0, 31.0, "the end")]
    report = build_report(job(), segments, duration_s=31.0, processing_s=1.0, language="en")
    text = prompt_text(llm_prompt(report, segments))
    assert len(text) < 2_000 and "the end" in text and "left out" not in text
