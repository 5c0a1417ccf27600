"""Prometheus metrics of a job worker process (``JOBS_METRICS_PORT``), on their own registry."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

PROCESSING_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
"""Job processing-time buckets: from a clip to a long match recording."""
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
"""Real-time factor (processing / audio) buckets; below 1 is faster than real time."""


class JobMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.running = Gauge("jobs_running", "Jobs this worker runs now", registry=self.registry)
        self.finished = Counter("jobs_finished", "Jobs that ended here, by final state and error code "
                                "(empty for completed jobs)", ["state", "code"], registry=self.registry)
        self.handovers = Counter("jobs_handovers", "Jobs handed back to the queue because the worker stopped",
                                 registry=self.registry)
        self.segments = Counter("jobs_segments", "Segments moderated, by verdict", ["outcome"],
                                registry=self.registry)
        self.incidents = Counter("jobs_incidents", "Incidents by outcome: written (to PostgreSQL), dropped "
                                 "(the queue was full)", ["outcome"], registry=self.registry)
        self.audio_seconds = Counter("jobs_audio_seconds", "Seconds of recordings completed", registry=self.registry)
        self.triton_retries = Counter("jobs_triton_retries", "Segment calls tried again, by the reason the "
                                      "previous one failed", ["reason"], registry=self.registry)
        self.processing = Histogram("jobs_processing_seconds", "Wall time from a job's start to its report",
                                    buckets=PROCESSING_BUCKETS_S, registry=self.registry)
        self.real_time_factor = Histogram("jobs_real_time_factor", "Processing time over audio duration",
                                          buckets=RTF_BUCKETS, registry=self.registry)

    def serve(self, port: int) -> None:
        """Serves /metrics on ``port`` (all interfaces, for Prometheus); 0 serves nothing. A port in
        use costs the metrics, not the worker."""
        if not port:
            return
        try:
            start_http_server(port, registry=self.registry)
        except OSError as exc:
            logger.error("worker metrics not served: port %d: %s (set JOBS_METRICS_PORT)", port, exc)
