"""Counters of one consumer process: periodic key=value log lines and Prometheus metrics.

Each ``ConsumerMetrics`` has its own Prometheus registry, so several consumers in one
process (as in tests) never register the same metric twice. The HTTP endpoint is
optional and binds 127.0.0.1 unless a host is given.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

log = logging.getLogger(__name__)

DEFAULT_METRICS_HOST = "127.0.0.1"


@dataclass
class CounterSnapshot:
    """Totals since the consumer started, and the lag at the last measurement."""

    consumed: int = 0
    written: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0
    lag: int | None = None

    def line(self) -> str:
        lag = "unknown" if self.lag is None else str(self.lag)
        return (
            f"consumed={self.consumed} written={self.written} skipped={self.skipped} "
            f"dead_lettered={self.dead_lettered} retries={self.retries} "
            f"batches={self.batches} lag={lag}"
        )


class ConsumerMetrics:
    """Record counters of one consumer, kept in memory and exported to Prometheus."""

    def __init__(self, consumer_name: str) -> None:
        self.name = consumer_name
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["consumer"]
        self._consumed = Counter(
            "confluence_consumer_records_consumed",
            "Kafka records received from the subscribed topics.",
            labels,
            registry=self.registry,
        )
        self._written = Counter(
            "confluence_consumer_records_written",
            "Records the handler wrote to its store.",
            labels,
            registry=self.registry,
        )
        self._skipped = Counter(
            "confluence_consumer_records_skipped",
            "Records the handler did not need to write, for example older versions.",
            labels,
            registry=self.registry,
        )
        self._dead_lettered = Counter(
            "confluence_consumer_records_dead_lettered",
            "Poison records sent to a dead-letter topic.",
            labels,
            registry=self.registry,
        )
        self._retries = Counter(
            "confluence_consumer_batch_retries",
            "Batches retried after a transient failure.",
            labels,
            registry=self.registry,
        )
        self._batches = Counter(
            "confluence_consumer_batches",
            "Batches handled successfully.",
            labels,
            registry=self.registry,
        )
        self._lag = Gauge(
            "confluence_consumer_lag_records",
            "Records between the consumer position and the high watermark, per partition.",
            ["consumer", "topic", "partition"],
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._totals = CounterSnapshot()
        self._server: WSGIServer | None = None
        self._server_thread: threading.Thread | None = None

    def add(
        self,
        *,
        consumed: int = 0,
        written: int = 0,
        skipped: int = 0,
        dead_lettered: int = 0,
        retries: int = 0,
        batches: int = 0,
    ) -> None:
        """Add to the counters."""
        with self._lock:
            self._totals.consumed += consumed
            self._totals.written += written
            self._totals.skipped += skipped
            self._totals.dead_lettered += dead_lettered
            self._totals.retries += retries
            self._totals.batches += batches
        for counter, amount in (
            (self._consumed, consumed),
            (self._written, written),
            (self._skipped, skipped),
            (self._dead_lettered, dead_lettered),
            (self._retries, retries),
            (self._batches, batches),
        ):
            if amount:
                counter.labels(self.name).inc(amount)

    def set_lag(self, lag_by_partition: Mapping[tuple[str, int], int]) -> None:
        """Store the lag of each assigned partition; the logged lag is their sum."""
        for (topic, partition), lag in lag_by_partition.items():
            self._lag.labels(self.name, topic, str(partition)).set(lag)
        with self._lock:
            self._totals.lag = sum(lag_by_partition.values()) if lag_by_partition else None

    def snapshot(self) -> CounterSnapshot:
        """Return a copy of the totals."""
        with self._lock:
            totals = self._totals
            return CounterSnapshot(
                consumed=totals.consumed,
                written=totals.written,
                skipped=totals.skipped,
                dead_lettered=totals.dead_lettered,
                retries=totals.retries,
                batches=totals.batches,
                lag=totals.lag,
            )

    def serve(self, port: int, host: str = DEFAULT_METRICS_HOST) -> int:
        """Start the Prometheus HTTP endpoint in a daemon thread; return the bound port.

        Port 0 binds a free port.
        """
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self._server_thread = thread
        bound_port = int(server.server_port)
        log.info(
            "metrics endpoint started consumer=%s host=%s port=%d", self.name, host, bound_port
        )
        return bound_port

    def close(self) -> None:
        """Stop the HTTP endpoint, if one was started."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
            self._server_thread = None


class PeriodicLogger:
    """Log the counters as one key=value line every ``interval_s`` seconds.

    A daemon thread writes the line, so it keeps coming while one batch waits long on
    MongoDB; a silent log would look like a stopped consumer.
    """

    def __init__(self, metrics: ConsumerMetrics, interval_s: float) -> None:
        self._metrics = metrics
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start logging in a daemon thread; a second call does nothing."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"{self._metrics.name}-counters", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and log the counters one last time."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.log()

    def log(self) -> None:
        log.info(
            "consumer counters consumer=%s %s", self._metrics.name, self._metrics.snapshot().line()
        )

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.log()
