"""Prometheus metrics of one API instance (its own registry, so several apps in one process don't clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "fusionrec_request_latency_seconds",
            "Time spent answering, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "fusionrec_requests", "Answered requests", ["endpoint", "arm", "status"], registry=r
        )
        self.fallbacks = Counter(
            "fusionrec_fallbacks", "Answers served by a fallback path, by reason", ["reason"], registry=r
        )
        self.cold_starts = Counter(
            "fusionrec_cold_starts", "Answers for users the model does not know", registry=r
        )
        self.cache_hits = Counter("fusionrec_cache_hits", "In-process cache hits", ["cache"], registry=r)
        self.cache_misses = Counter(
            "fusionrec_cache_misses", "In-process cache misses", ["cache"], registry=r
        )
        self.feedback = Counter(
            "fusionrec_feedback_events", "Feedback events accepted", ["event_type", "arm"], registry=r
        )
        self.live_version = Gauge(
            "fusionrec_live_version_info",
            "1 for the version this instance last served",
            ["version"],
            registry=r,
        )
        self._live: str | None = None
        # Pre-bound children: labels() costs a dict lookup per call, too much for the hot path.
        self.recommend_latency = self.latency.labels("recommendations")

    def saw_version(self, version: str) -> None:
        if version != self._live:
            if self._live is not None:
                self.live_version.labels(self._live).set(0)
            self.live_version.labels(version).set(1)
            self._live = version
