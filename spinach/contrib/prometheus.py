"""Prometheus metrics of Spinach jobs, with the official ``prometheus_client``.

:class:`SpinachMetrics` counts jobs by task and outcome and times their runs
and their waits, from the signals of the workers of this process; with an
engine, it also reads the queues, the failed store and the workers from the
broker at each scrape (:class:`BrokerCollector`). ``spinach worker
--metrics-port`` serves them; several worker processes report their sums
through prometheus_client's multiprocess mode (see ``docs/observability.md``).

It needs the ``prometheus`` extra: ``pip install 'spinach[prometheus]'``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import signals
from ..job import Job, JobStatus

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["BrokerCollector", "SpinachMetrics", "serve_metrics"]

logger = logging.getLogger(__name__)

#: Bounds of the run time and queue wait histograms, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: The states of a queue's jobs, as ``spinach inspect`` shows them.
_STATES = ("ready", "held_back", "future", "running")


class SpinachMetrics:
    """Job metrics of the workers of this process, in ``registry``.

    - ``spinach_jobs_total{namespace, task, outcome}``: jobs by outcome:
      ``succeeded``, ``failed`` (for good), ``retried`` (a run that failed
      and will run again), ``cancelled``;
    - ``spinach_job_duration_seconds{namespace, task}``: run time of the runs
      of this process;
    - ``spinach_job_queue_wait_seconds{namespace, task}``: from when a job
      could start (its ``at``) to when it started.

    Cancelled jobs are counted by the process whose ``Engine.cancel()``
    cancelled them, once each, whether they were waiting, queued or running.

    Args:
        registry: where the metrics go; prometheus_client's default one unless
            given (your application's own registry, say).
        engine: measure queue waits on its broker's clock (the Redis
            server's) rather than this host's, and, with ``gauges``, register
            a :class:`BrokerCollector` of it.
        gauges: register the :class:`BrokerCollector` of ``engine``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        engine: Engine | None = None,
        gauges: bool = True,
    ) -> None:
        self.jobs = Counter(
            "spinach_jobs",
            "Jobs by task and outcome: succeeded, failed for good, retried, cancelled",
            ["namespace", "task", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "spinach_job_duration_seconds",
            "Run time of the jobs this process ran",
            ["namespace", "task"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "spinach_job_queue_wait_seconds",
            "From when a job could start (its at) to when it started",
            ["namespace", "task"],
            buckets=BUCKETS,
            registry=registry,
        )
        self._registry = registry
        self._now = engine.broker.now if engine is not None else _host_now
        self._collector: BrokerCollector | None = None
        if engine is not None and gauges and registry is not None:
            self._collector = BrokerCollector(engine)
            registry.register(self._collector)
        # The labelled children, once made: labels() costs more than the count.
        self._counts: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self._waits: dict[tuple[str, str], Any] = {}
        # Monotonic start of each running job of this process, by id(job).
        self._starts: dict[int, float] = {}
        self._lock = threading.Lock()
        self._receivers = [
            (signals.job_started, self._on_started),
            (signals.job_finished, self._on_finished),
            (signals.job_failed, self._on_failed),
            (signals.job_schedule_retry, self._on_retry),
            (signals.job_cancelled, self._on_cancelled),
        ]
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)

    def close(self) -> None:
        """Stop counting, and leave the registry as it was before."""
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        if self._registry is not None:
            for collector in (self.jobs, self.duration, self.queue_wait, self._collector):
                if collector is not None:
                    self._registry.unregister(collector)

    def _count(self, namespace: str, task_name: str, outcome: str) -> None:
        key = (namespace, task_name, outcome)
        child = self._counts.get(key)
        if child is None:
            child = self._counts[key] = self.jobs.labels(*key)
        child.inc()

    @staticmethod
    def _child(children: dict[tuple[str, str], Any], metric: Any, key: tuple[str, str]) -> Any:
        child = children.get(key)
        if child is None:
            child = children[key] = metric.labels(*key)
        return child

    def _on_started(self, namespace: str, job: Job, **kwargs: Any) -> None:
        waited = max(0.0, (self._now() - job.at).total_seconds())
        self._child(self._waits, self.queue_wait, (namespace, job.task_name)).observe(waited)
        with self._lock:
            self._starts[id(job)] = time.monotonic()

    def _on_finished(self, namespace: str, job: Job, **kwargs: Any) -> None:
        with self._lock:
            started = self._starts.pop(id(job), None)
        if started is not None:
            duration = self._child(self._durations, self.duration, (namespace, job.task_name))
            duration.observe(time.monotonic() - started)
        if job.status is JobStatus.SUCCEEDED:
            self._count(namespace, job.task_name, "succeeded")

    def _on_failed(self, namespace: str, job: Job, **kwargs: Any) -> None:
        self._count(namespace, job.task_name, "failed")

    def _on_retry(self, namespace: str, job: Job, **kwargs: Any) -> None:
        self._count(namespace, job.task_name, "retried")

    def _on_cancelled(self, namespace: str, job: Job, **kwargs: Any) -> None:
        # Sent once per job by the engine whose cancel() cancelled it: a job taken
        # ahead by a worker is dropped there without any other signal.
        self._count(namespace, job.task_name, "cancelled")


def _host_now() -> datetime:
    return datetime.now(timezone.utc)


class BrokerCollector(Collector):
    """Gauges read from an engine's broker at each scrape (``Broker.inspect``):

    - ``spinach_queue_jobs{namespace, queue, state}``: the jobs of each queue
      by state: ``ready``, ``held_back``, ``future``, ``running``;
    - ``spinach_failed_jobs{namespace}``: the jobs of the failed store;
    - ``spinach_workers{namespace}``: the registered workers;
    - ``spinach_broker_up{namespace}``: 1 when the broker answered, else 0
      (and no other gauge).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def describe(self) -> list[GaugeMetricFamily]:
        """Nothing: registering the collector must not read the broker."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        namespace = self._engine.namespace
        up = GaugeMetricFamily(
            "spinach_broker_up", "Whether the broker answered this scrape", labels=["namespace"]
        )
        try:
            inspection = self._engine.broker.inspect()
        except Exception as e:
            logger.warning("Could not read the broker of namespace %r: %s", namespace, e)
            up.add_metric([namespace], 0)
            yield up
            return
        up.add_metric([namespace], 1)
        yield up
        queues = GaugeMetricFamily(
            "spinach_queue_jobs",
            "Jobs of each queue by state, read from the broker",
            labels=["namespace", "queue", "state"],
        )
        for name, state in sorted(inspection.queues.items()):
            for label in _STATES:
                queues.add_metric([namespace, name, label], getattr(state, label))
        yield queues
        failed = GaugeMetricFamily(
            "spinach_failed_jobs", "Jobs in the failed store", labels=["namespace"]
        )
        failed.add_metric([namespace], inspection.failed)
        yield failed
        workers = GaugeMetricFamily(
            "spinach_workers", "Workers registered in the namespace", labels=["namespace"]
        )
        workers.add_metric([namespace], len(inspection.workers))
        yield workers


def serve_metrics(
    engine: Engine, host: str, port: int, *, multiprocess_dir: str | None = None
) -> Any:
    """Serve the metrics of ``engine`` over HTTP on ``host:port`` (``/metrics``),
    in a daemon thread; return the server (``shutdown()`` stops it).

    Without ``multiprocess_dir``: the metrics of this process's workers, and
    the gauges of the broker. With it: the sums of the worker processes that
    write their metrics there (prometheus_client's multiprocess mode, whose
    ``PROMETHEUS_MULTIPROC_DIR`` they were started with), and the gauges.

    Raises:
        OSError: the address cannot be listened on.
    """
    from prometheus_client import multiprocess, start_http_server

    if multiprocess_dir is None:
        try:
            SpinachMetrics(REGISTRY, engine=engine)
        except ValueError:  # the application made its own already: those are served
            logger.info("Serving the Spinach metrics the application registered")
        registry = REGISTRY
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(BrokerCollector(engine))
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
