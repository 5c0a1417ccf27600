"""Prometheus metrics of one edge app, on their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Segment-latency histogram buckets, dense around the 3 s SLA and below."""


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active_sessions = Gauge("edge_active_sessions", "Open WebSocket sessions", registry=self.registry)
        self.segments = Counter("edge_segments", "Speech segments by outcome", ["outcome"], registry=self.registry)
        self.segment_priority = Counter(
            "edge_segment_priority", "Segments by the priority they went to Triton at: realtime, or bulk "
            "(sessions ahead of real time)", ["priority"], registry=self.registry)
        self.segment_latency = Histogram(
            "edge_segment_latency_seconds", "From the segment's last audio frame to its result being sent",
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.triton_errors = Counter("edge_triton_errors", "Failed Triton calls by reason", ["reason"],
                                     registry=self.registry)
        self.client_errors = Counter("edge_client_errors", "Bad client input by error code", ["code"],
                                     registry=self.registry)
        self.session_timeouts = Counter(
            "edge_session_timeouts", "Sessions the edge ended by reason: first_frame_timeout, idle_timeout, "
            "max_duration", ["reason"], registry=self.registry)
