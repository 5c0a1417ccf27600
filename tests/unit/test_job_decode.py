"""jobs.decode on files written by tests.audio_formats: every upload format decodes to 16 kHz mono
that matches the reference signal, and each kind of bad file fails with its typed error."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from jobs.decode import DEFAULT_CHUNK_S, DecodeError, decode, probe
from jobs.models import JobErrorCode
from moderation.events import SAMPLE_RATE
from tests.audio_formats import FORMATS, encode, reference_signal, unavailable, video_only

DURATION_S = 3.0
LENGTH_TOLERANCE_S = 0.05
"""Decoded length vs the signal's: AAC pads to whole 1024-sample frames (+19 ms at 44.1 kHz) and
raw ADTS also keeps the encoder's 1024-sample priming (+42 ms in all); the others are exact."""
MAX_LAG_S = 0.03
"""Offset of the decoded signal vs the reference: 0 except raw ADTS (its priming, 23 ms)."""
MIN_CORRELATION = 0.9
"""Normalised correlation with the reference at the best lag (lossless ~1.0, lossy >= 0.94)."""
DECLARED = {"wav": False, "mp3": True, "m4a": True, "ogg": False, "webm": True, "flac": True, "mp4": True,
            "aac": False}
"""Formats whose header or index counts the frames (mp3: the Xing/Info header LAME writes)."""
ESTIMATED = {"aac"}
"""Formats whose duration FFmpeg estimates from the bitrate."""
CODECS = {"wav": "pcm_s16le", "mp3": "mp3", "m4a": "aac", "ogg": "opus", "webm": "opus", "flac": "flac",
          "mp4": "aac", "aac": "aac"}


def rate_of(fmt: str) -> int:
    """48 kHz for Opus (its only full-band rate), CD rate for the rest."""
    return 48000 if FORMATS[fmt].codec == "libopus" else 44100


def write(tmp_path: Path, fmt: str, duration_s: float = DURATION_S, channels: int = 2, rate: int | None = None,
          name: str = "rec", **options: str) -> Path:
    if (reason := unavailable(fmt)) is not None:
        pytest.skip(reason)
    rate = rate or rate_of(fmt)
    return encode(reference_signal(duration_s, rate), rate, tmp_path / f"{name}.{fmt}", fmt, channels,
                  options or None)


def decoded(path: Path, max_duration_s: float = 3600.0, **kwargs) -> np.ndarray:
    return np.concatenate(list(decode(path, max_duration_s, **kwargs)))


def decode_all(path: Path, max_duration_s: float = 3600.0) -> list[np.ndarray]:
    return list(decode(path, max_duration_s))


def failure(call, path: Path) -> DecodeError:
    """The DecodeError of `call(path)` (probe or decode_all), with a message."""
    with pytest.raises(DecodeError) as caught:
        call(path)
    assert str(caught.value) == caught.value.message and caught.value.message
    return caught.value


def best_alignment(signal: np.ndarray, reference: np.ndarray, max_lag: int) -> tuple[float, int]:
    """(normalised correlation, lag in samples) of `signal` vs `reference`, best over +-max_lag."""
    core = reference[max_lag:len(reference) - max_lag]
    scores = []
    for start in range(2 * max_lag + 1):
        window = signal[start:start + len(core)]
        if len(window) < len(core):
            break
        scores.append(float(np.dot(window, core) / (np.linalg.norm(window) * np.linalg.norm(core) + 1e-12)))
    best = int(np.argmax(scores))
    return scores[best], best - max_lag


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_decodes_to_16k_mono_matching_the_reference(tmp_path, fmt):
    path = write(tmp_path, fmt)
    info = probe(path)
    assert (info.codec, info.sample_rate, info.channels) == (CODECS[fmt], rate_of(fmt), 2)
    if fmt not in ESTIMATED:
        assert info.duration_s == pytest.approx(DURATION_S, abs=LENGTH_TOLERANCE_S)
    assert (info.declared_duration_s is not None) == DECLARED[fmt]
    if info.declared_duration_s is not None:
        assert info.declared_duration_s == pytest.approx(DURATION_S, abs=LENGTH_TOLERANCE_S)

    chunks = list(decode(path, 3600.0))
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    audio = np.concatenate(chunks)
    assert len(audio) / SAMPLE_RATE == pytest.approx(DURATION_S, abs=LENGTH_TOLERANCE_S)
    correlation, lag = best_alignment(audio, reference_signal(DURATION_S, SAMPLE_RATE), int(MAX_LAG_S * SAMPLE_RATE))
    assert correlation >= MIN_CORRELATION
    assert abs(lag) <= MAX_LAG_S * SAMPLE_RATE


def test_the_audio_of_a_video_and_mono_low_rate_files_decode(tmp_path):
    assert probe(write(tmp_path, "mp4")).codec == "aac"  # the video stream comes first in the file
    for fmt, rate in (("mp3", 16000), ("ogg", 16000), ("wav", 8000), ("m4a", 22050)):
        audio = decoded(write(tmp_path, fmt, channels=1, rate=rate, name=f"mono{rate}"))
        assert len(audio) / SAMPLE_RATE == pytest.approx(DURATION_S, abs=LENGTH_TOLERANCE_S)


def test_16k_mono_float_passes_through_the_resampler(tmp_path):
    """Already the edge's format: PyAV's resampler passes frames through (and flushes [None])."""
    path = tmp_path / "edge_format.wav"
    reference = reference_signal(1.0, SAMPLE_RATE)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_f32le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(reference[None, :], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    np.testing.assert_array_equal(decoded(path), reference)


def test_an_mp3_header_is_found_without_an_id3_tag_before_it(tmp_path):
    assert probe(write(tmp_path, "mp3", 1.0, id3v2_version="0")).declared_duration_s == pytest.approx(1.0, abs=0.1)


def test_chunks_have_a_bounded_size_and_are_not_shared(tmp_path):
    path = write(tmp_path, "wav")
    chunks = list(decode(path, 3600.0, chunk_s=0.25))
    assert [len(c) for c in chunks[:-1]] == [SAMPLE_RATE // 4] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= SAMPLE_RATE // 4
    assert not any(np.shares_memory(a, b) for a, b in zip(chunks, chunks[1:], strict=False))
    assert max(len(c) for c in decode(path, 3600.0)) == round(DEFAULT_CHUNK_S * SAMPLE_RATE)


def test_a_stream_whose_rate_changes_midway_decodes_whole(tmp_path):
    """Concatenated mp3s (44.1 kHz stereo, then 16 kHz mono) without headers: the resampler is
    set up again when the frames change."""
    headerless = {"write_xing": "0", "id3v2_version": "0"}
    first = write(tmp_path, "mp3", 2.0, name="first", **headerless)
    second = write(tmp_path, "mp3", 2.0, channels=1, rate=16000, name="second", **headerless)
    both = tmp_path / "both.mp3"
    both.write_bytes(first.read_bytes() + second.read_bytes())
    assert len(decoded(both)) / SAMPLE_RATE == pytest.approx(4.0, abs=0.15)  # + each part's LAME padding


def test_a_text_file_a_video_without_audio_and_an_empty_file_are_refused(tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all\n" * 100)
    video = video_only(tmp_path / "silent_film.mp4") if unavailable("mp4") is None else None
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for call in (probe, decode_all):
        assert failure(call, text).code == JobErrorCode.NOT_AUDIO
        if video is not None:
            assert failure(call, video).message == "the file has no audio stream"
        assert failure(call, empty).code == JobErrorCode.EMPTY_FILE


def test_an_audio_stream_without_samples_is_no_audio_data(tmp_path):
    path = encode(np.zeros(0, np.float32), 16000, tmp_path / "header_only.wav", "wav")
    assert probe(path).codec == "pcm_s16le"
    assert failure(decode_all, path).code == JobErrorCode.NO_AUDIO_DATA


@pytest.fixture(scope="module")
def ten_second_mp3(tmp_path_factory):
    """(channels, rate) -> a 10 s mp3, encoded once for the module."""
    folder, made = tmp_path_factory.mktemp("mp3"), {}

    def get(channels: int = 2, rate: int = 44100) -> Path:
        if (channels, rate) not in made:
            made[channels, rate] = write(folder, "mp3", 10.0, channels=channels, rate=rate, name=f"{channels}x{rate}")
        return made[channels, rate]
    return get


def cut(path: Path, how: str, folder: Path) -> Path:
    """A copy of `path` cut at half its size, with the tail `how` says."""
    data = path.read_bytes()
    half = len(data) // 2
    tails = {"half": b"", "mid_frame": data[half:half + 101], "garbage_tail": np.random.default_rng(0).bytes(half),
             "zero_tail": bytes(half)}
    out = folder / f"{how}_{path.name}"
    out.write_bytes(data[:half] + tails[how])
    return out


@pytest.mark.parametrize("how", ["half", "mid_frame", "garbage_tail", "zero_tail"])
@pytest.mark.parametrize(("channels", "rate"), [(2, 44100), (1, 16000)])
def test_a_truncated_mp3_is_corrupt(tmp_path, ten_second_mp3, how, channels, rate):
    """PyAV stops early without an error on a cut mp3; the Xing/Info frame count says it is short.
    16 kHz mono is MPEG-2 (576 samples per frame, a shorter side info before the header)."""
    path = cut(ten_second_mp3(channels, rate), how, tmp_path)
    assert probe(path).declared_duration_s == pytest.approx(10.0, abs=0.2)
    error = failure(decode_all, path)
    assert error.code == JobErrorCode.CORRUPT_AUDIO
    if how == "half":
        assert re.fullmatch(r"the audio ends at [45]\.\d s of the 10\.\d s its header declares \(truncated\?\)",
                            error.message)


def test_garbage_in_the_middle_of_an_mp3_is_corrupt(tmp_path, ten_second_mp3):
    data = bytearray(ten_second_mp3().read_bytes())
    data[len(data) // 2:len(data) // 2 + 2000] = np.random.default_rng(1).bytes(2000)
    path = tmp_path / "damaged.mp3"
    path.write_bytes(bytes(data))
    assert failure(decode_all, path).code == JobErrorCode.CORRUPT_AUDIO


@pytest.mark.parametrize(("fmt", "options", "code"), [
    ("webm", {}, JobErrorCode.CORRUPT_AUDIO),  # stops early: the Segment duration says it is short
    ("flac", {}, JobErrorCode.CORRUPT_AUDIO),  # the decoder fails on the cut frame
    ("m4a", {"movflags": "faststart"}, JobErrorCode.CORRUPT_AUDIO),  # index first: the data ends early
    ("m4a", {}, JobErrorCode.NOT_AUDIO),  # index last: cut off, FFmpeg cannot open the file at all
])
def test_truncated_files_of_other_formats_fail(tmp_path, fmt, options, code):
    path = cut(write(tmp_path, fmt, 6.0, **options), "half", tmp_path)
    assert failure(decode_all, path).code == code


@pytest.mark.parametrize(("fmt", "options"), [("mp3", {"write_xing": "0"}), ("ogg", {}), ("wav", {})])
def test_truncations_without_a_frame_count_go_unnoticed(tmp_path, fmt, options):
    """Documented limits: FFmpeg derives these durations from what the cut left (file size,
    last page), so a cut file is just a shorter recording."""
    path = cut(write(tmp_path, fmt, 6.0, **options), "half", tmp_path)
    assert probe(path).declared_duration_s is None
    assert len(decoded(path)) / SAMPLE_RATE == pytest.approx(3.0, abs=0.6)


def test_a_bitrate_estimate_is_not_taken_for_a_declared_duration(tmp_path):
    """Raw ADTS starting with silence: FFmpeg's estimate (from the first frames' low bitrate) is
    many times the real length, and must not fail the file as truncated."""
    rate = 44100
    samples = np.concatenate([np.zeros(2 * rate, np.float32), reference_signal(3.0, rate)])
    path = encode(samples, rate, tmp_path / "quiet_start.aac", "aac")
    info = probe(path)
    assert info.declared_duration_s is None and info.duration_s > 10.0
    assert len(decoded(path)) / SAMPLE_RATE == pytest.approx(5.0, abs=LENGTH_TOLERANCE_S)


def test_a_declared_duration_over_the_limit_fails_before_decoding(tmp_path):
    chunks = decode(write(tmp_path, "flac"), max_duration_s=1.0)
    with pytest.raises(DecodeError) as caught:
        next(chunks)
    assert caught.value.code == JobErrorCode.TOO_LONG


def test_an_undeclared_duration_over_the_limit_fails_once_decoded_past_it(tmp_path):
    path = write(tmp_path, "wav")
    got = []
    with pytest.raises(DecodeError) as caught:
        for chunk in decode(path, max_duration_s=1.0, chunk_s=0.25):
            got.append(chunk)
    assert caught.value.code == JobErrorCode.TOO_LONG
    assert sum(len(c) for c in got) <= 1.0 * SAMPLE_RATE  # stopped at the limit, not at the end
    assert len(decoded(path, max_duration_s=DURATION_S)) == DURATION_S * SAMPLE_RATE  # exactly the limit passes


def test_files_that_name_other_files_are_refused(tmp_path):
    """An upload must not make FFmpeg read other files on the server (another job's upload)."""
    write(tmp_path, "mp3", 1.0, name="other_job")
    playlist = tmp_path / "upload.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nother_job.mp3\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "upload.ffconcat"
    concat.write_text("ffconcat version 1.0\nfile other_job.mp3\n")
    recursive = tmp_path / "self.ffconcat"
    recursive.write_text("ffconcat version 1.0\nfile self.ffconcat\n")
    for path in (playlist, concat, recursive):
        assert failure(probe, path).code == JobErrorCode.NOT_AUDIO
        assert failure(decode_all, path).code == JobErrorCode.NOT_AUDIO


def test_a_missing_file_is_not_the_uploaders_fault(tmp_path):
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "gone.mp3")
