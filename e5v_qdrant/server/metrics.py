"""Prometheus metrics of one server: requests, inputs, batch sizes, latencies and errors by kind."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "size_class", "SIZE_CLASSES"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: Request size classes of the queue-wait metric: upper bounds in tokens (a short query, a few passages, a long
#: document or a few images, a batch of long documents) and their labels.
SIZE_CLASSES = ((512, "<=512"), (4096, "<=4k"), (32768, "<=32k"))


def size_class(tokens: int) -> str:
    """The ``size`` label of a request of ``tokens`` tokens."""
    return next((label for bound, label in SIZE_CLASSES if tokens <= bound), ">32k")


class Metrics:
    """The server's metrics in their own registry (so several apps in one process never collide)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("e5v_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram(
            "e5v_request_seconds", "HTTP request latency by route", ["route"], buckets=_SECONDS_BUCKETS, registry=r
        )
        self.items = Counter("e5v_embedded_inputs", "inputs embedded, by kind", ["kind"], registry=r)
        self.batch_items = Histogram(
            "e5v_batch_inputs", "inputs per coalesced encoder call", ["kind"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "e5v_batch_seconds", "seconds per coalesced encoder call", ["kind"], buckets=_SECONDS_BUCKETS, registry=r
        )
        self.errors = Counter("e5v_errors", "error responses by kind", ["kind"], registry=r)
        self.queue = Gauge("e5v_waiting_inputs", "inputs queued for the model", registry=r)
        self.queue_wait = Histogram(
            "e5v_queue_wait_seconds",
            "seconds from a request's arrival at the batcher to its first input reaching the model, by request size "
            "in tokens",
            ["size"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )

        # ingestion by the server (watched folders, ingest jobs): not counted in e5v_embedded_inputs
        self.ingest_events = Counter("e5v_ingest_events", "file-system events seen in watched folders", registry=r)
        self.ingest_embedded = Counter(
            "e5v_ingest_embedded_items", "items embedded by the model for ingestion (not for requests)", registry=r
        )
        self.ingest_rekeyed = Counter(
            "e5v_ingest_rekeyed_items",
            "items written with the vector of a stored point of the same content (renames, moves): no model run",
            registry=r,
        )
        self.ingest_renames = Counter(
            "e5v_ingest_renamed_files", "files written without a model run, every item carried over", registry=r
        )
        self.ingest_deleted = Counter("e5v_ingest_deleted_points", "points deleted by ingestion", registry=r)
        self.ingest_failed = Counter("e5v_ingest_failed_files", "files ingestion could not ingest", registry=r)
        self.ingest_pending = Gauge("e5v_ingest_pending_paths", "changed paths waiting for a sync", registry=r)
        self.ingest_active = Gauge("e5v_ingest_ingesting_files", "files of the sync in progress", registry=r)

    def track_live(self, pending: Callable[[], float], ingesting: Callable[[], float]) -> None:
        """Report the watched folders' queue lengths at each scrape."""
        self.ingest_pending.set_function(pending)
        self.ingest_active.set_function(ingesting)

    def observe_sync(self, counts) -> None:
        """Count one sync of a watched folder (a ``live.SyncCounts``)."""
        self.ingest_embedded.inc(counts.embedded)
        self.ingest_rekeyed.inc(counts.rekeyed)
        self.ingest_renames.inc(counts.files_rekeyed)
        self.ingest_deleted.inc(counts.points_deleted)
        self.ingest_failed.inc(counts.files_failed)

    def track_queue(self, read: Callable[[], float]) -> None:
        """Report ``read()`` as the queue depth at each scrape."""
        self.queue.set_function(read)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, kind: str, n_items: int, seconds: float) -> None:
        self.batch_items.labels(kind).observe(n_items)
        self.batch_seconds.labels(kind).observe(seconds)

    def observe_wait(self, tokens: int, seconds: float) -> None:
        self.queue_wait.labels(size_class(tokens)).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
