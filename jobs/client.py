"""Reference client of the batch job API: upload a recording, follow its events, print the report.

    python -m jobs.client match.mp3 --language auto          # against http://127.0.0.1:8000
    python -m jobs.client clip.ogg --url https://mod.example --token KEY --srt clip.srt

The event stream is Server-Sent Events; a dropped connection is resumed with ``Last-Event-ID``,
so no event is missed or seen twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from jobs.models import FINAL_EVENTS, JobEvent

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
UPLOAD_TIMEOUT_S = 300.0
"""Uploading a long recording over a slow link takes a while."""
RECONNECT_DELAY_S = 1.0
"""Wait before reconnecting a dropped event stream (SSE's own default retry is in this range)."""
MAX_RECONNECTS = 30


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: dict


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Events of a text/event-stream (comments and pings skipped)."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield Event(fields.get("id", [None])[-1], fields.get("event", ["message"])[-1],
                            json.loads("\n".join(fields["data"])))
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))


class JobClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30.0, read=None))

    def close(self) -> None:
        self.http.close()

    def submit(self, path: Path, **options: object) -> dict:
        """Uploads ``path``; the 202 body (the job, with its links). httpx.HTTPStatusError on refusal."""
        fields = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items() if v is not None}
        with open(path, "rb") as f:
            response = self.http.post("/v1/jobs", files={"file": (path.name, f)}, data=fields,
                                      timeout=UPLOAD_TIMEOUT_S)
        response.raise_for_status()
        return response.json()

    def job(self, job_id: str) -> dict:
        response = self.http.get(f"/v1/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    def stream(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """One connection's events after ``last_event_id``, until the job's last event or a drop."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
            response.raise_for_status()
            yield from parse_sse(response.iter_lines())

    def follow(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """Every event of the job from ``last_event_id`` on, until its last one, reconnecting after
        drops, server errors and streams that end early; httpx.HTTPStatusError for a 4xx (404:
        the job is gone)."""
        for _attempt in range(MAX_RECONNECTS):
            try:
                for event in self.stream(job_id, last_event_id):
                    last_event_id = event.id or last_event_id
                    yield event
                    if event.event in FINAL_EVENTS:
                        return
                if self.job(job_id)["state"] in ("completed", "failed"):
                    return  # nothing follows last_event_id: it was the job's last event already
                logger.info("event stream ended early; reconnecting after %s", last_event_id)
            except httpx.TransportError as exc:
                logger.warning("event stream dropped (%s); reconnecting after %s", exc, last_event_id)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code < 500:
                    raise
                logger.warning("event stream refused (%s); reconnecting", exc.response.status_code)
            time.sleep(RECONNECT_DELAY_S)  # pause between reconnects, as an EventSource does
        raise ConnectionError(f"gave up on the event stream of job {job_id} after {MAX_RECONNECTS} reconnects")

    def transcript(self, job_id: str, fmt: str) -> str:
        response = self.http.get(f"/v1/jobs/{job_id}/transcript.{fmt}")
        response.raise_for_status()
        return response.text


def _print(event: Event) -> None:
    if event.event == JobEvent.TRANSCRIPT_SEGMENT:
        d = event.data
        flag = " HARMFUL" if d["is_harmful"] else ""
        print(f"[{d['start_s']:8.2f}-{d['end_s']:8.2f}]{flag} {d['text']}", flush=True)
    elif event.event == JobEvent.PROGRESS:
        fraction = event.data["fraction"]
        print(f"progress {fraction:.0%}" if fraction is not None else f"at {event.data['position_s']} s", flush=True)
    else:
        print(json.dumps({"event": event.event, **event.data}, ensure_ascii=False, indent=2), flush=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the results
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path)
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--token", help="API key or JWT, when the service requires one")
    p.add_argument("--language", help="a Whisper code such as ko or en, or auto; default: the model's")
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--srt", type=Path, help="write the transcript as SRT here")
    args = p.parse_args(argv)
    client = JobClient(args.url, args.token)
    try:
        job = client.submit(args.file, language=args.language, word_timestamps=args.word_timestamps or None)
        print(f"job {job['id']} queued", flush=True)
        last = None
        for event in client.follow(job["id"]):
            _print(event)
            last = event
        if args.srt and last is not None and last.event == JobEvent.FINAL_SUMMARY:
            args.srt.write_text(client.transcript(job["id"], "srt"), encoding="utf-8")
        return 0 if last is not None and last.event == JobEvent.FINAL_SUMMARY else 1
    except httpx.HTTPStatusError as exc:
        print(f"refused: {exc.response.status_code} {exc.response.text}", file=sys.stderr)
        return 2
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
