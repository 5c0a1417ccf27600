"""Prometheus metrics of one edge app, on their own registry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from edge.outage import OutageWait
    from moderation.triton import ModerationPool

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Segment-latency histogram buckets, dense around the 3 s SLA and below."""


class PoolCollector:
    """The pool's per-replica state and retries, read when Prometheus scrapes (replicas come and
    go with discovery, so they are not pre-declared label sets)."""

    def __init__(self, pool: ModerationPool):
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily("edge_triton_replica_ready", "1 while the replica has the model ready",
                                  labels=["replica"])
        in_flight = GaugeMetricFamily("edge_triton_replica_in_flight", "Calls of this edge in the replica now",
                                      labels=["replica"])
        calls = CounterMetricFamily("edge_triton_replica_calls", "Calls this edge sent the replica",
                                    labels=["replica"])
        for replica in self.pool.replicas():
            ready.add_metric([replica.address], 1.0 if replica.ready else 0.0)
            in_flight.add_metric([replica.address], float(replica.in_flight))
            calls.add_metric([replica.address], float(replica.calls))
        retries = CounterMetricFamily("edge_triton_retries", "Segments retried on another replica, by the "
                                      "reason their first call failed", labels=["reason"])
        for reason, count in sorted(self.pool.retries.items()):
            retries.add_metric([reason], float(count))
        yield from (ready, in_flight, calls, retries)


class OutageCollector:
    """Segments waiting for a Triton server through an outage, and how their waits ended."""

    def __init__(self, outage: OutageWait):
        self.outage = outage

    def collect(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily("edge_outage_waiting_segments", "Segments waiting for a Triton server now")
        waiting.add_metric([], float(self.outage.waiting))
        ended = CounterMetricFamily("edge_outage_segments", "Segments that waited for a Triton server: late (sent "
                                    "again and answered) or gave_up (no server in time, or no place to wait)",
                                    labels=["outcome"])
        ended.add_metric(["late"], float(self.outage.late))
        ended.add_metric(["gave_up"], float(self.outage.gave_up))
        yield from (waiting, ended)


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
        self.incidents = Counter(
            "edge_incidents", "Incidents by outcome: written (to PostgreSQL), dropped (the queue was full, "
            "EDGE_INCIDENT_QUEUE_MAX)", ["outcome"], registry=self.registry)
        self.incident_webhooks = Counter(
            "edge_incident_webhooks", "Incident webhook attempts by outcome: sent (2xx), retry (failed, tried "
            "again later), failed (failed for good after EDGE_INCIDENT_WEBHOOK_MAX_ATTEMPTS)", ["outcome"],
            registry=self.registry)
        self.interim_calls = Counter(
            "edge_interim_calls", "Interim calls by outcome: sent (an interim event followed), silent (no new "
            "stable span), skipped (the edge had EDGE_INTERIM_MAX_CALLS calls in flight), failed",
            ["outcome"], registry=self.registry)
        self.interim_spans = Counter("edge_interim_spans", "Harmful spans sent in interim events, and those their "
                                     "final result did not confirm", ["outcome"], registry=self.registry)
        self.session_timeouts = Counter(
            "edge_session_timeouts", "Sessions the edge ended by reason: first_frame_timeout, idle_timeout, "
            "max_duration", ["reason"], registry=self.registry)

    def watch_pool(self, pool: ModerationPool) -> None:
        """Export the pool's replicas and retries with the edge's metrics."""
        self.registry.register(PoolCollector(pool))

    def watch_outage(self, outage: OutageWait) -> None:
        self.registry.register(OutageCollector(outage))


def labelled_totals(metric: Counter | Gauge) -> dict[str, float]:
    """A metric's current value per label value (its one label), or under "" when unlabelled;
    counters' ``_created`` samples are left out."""
    totals: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            label = next(iter(sample.labels.values()), "")
            totals[label] = totals.get(label, 0.0) + sample.value
    return totals


def histogram_buckets(histogram: Histogram) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of each bucket, +Inf last."""
    return [(float(sample.labels["le"]), sample.value) for family in histogram.collect()
            for sample in family.samples if sample.name.endswith("_bucket")]


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile (0..1) estimated from cumulative buckets as Prometheus's
    ``histogram_quantile`` does: linear within the bucket it falls in, the highest finite bound
    when it falls in +Inf. None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
