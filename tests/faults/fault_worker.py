"""A worker process for the fault scenarios: ``python fault_worker.py URL NS LOG_DIR OPTIONS``.

Every run and outcome is appended to ``LOG_DIR/<pid>.log`` and fsynced before
the job goes on, so the record survives the process being killed:
``start <job id> <time>`` (from the task's first line), ``ok <job id>``,
``fail <job id> <error type> <time>``.
OPTIONS is JSON: ``threads``, ``queue``, ``heartbeat_interval``,
``dead_worker_timeout``, ``socket_timeout``, ``skew`` (seconds added to this
process' clock), ``work_ms`` (range of a job's duration), ``grace_period``.
The task ``limited`` spins in pure Python for its duration, under a time limit
of ``time_limit_ms`` (200 by default).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from spinach import Engine, Tasks, signals
from spinach.brokers.redis import RedisBroker
from spinach.clock import Clock
from spinach.job import Job, JobStatus

url, namespace, log_dir, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
log = os.open(os.path.join(log_dir, f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
low_ms, high_ms = options.get("work_ms", [5, 50])


def record(line: str) -> None:
    os.write(log, (line + "\n").encode())
    os.fsync(log)


#: The job each worker thread runs, set by job_started in that thread.
current = threading.local()


def work(i: int) -> None:
    # A start is the task's first line: what a worker must never reach for a
    # job that is no longer its own.
    record(f"start {current.job_id} {time.time()}")
    time.sleep(random.uniform(low_ms, high_ms) / 1000)  # the job's work


def spin_work(i: int) -> None:
    record(f"start {current.job_id} {time.time()}")
    end = time.monotonic() + random.uniform(low_ms, high_ms) / 1000
    while time.monotonic() < end:  # pure Python: a time limit or a cancel stops it
        pass


tasks = Tasks()
tasks.add(work, "least", max_retries=3)
tasks.add(work, "most", max_retries=0)
limit = timedelta(milliseconds=options.get("time_limit_ms", 200))
tasks.add(spin_work, "limited", max_retries=1, time_limit=limit)
tasks.add(work, "rated", max_retries=3, rate_limit=(50, timedelta(seconds=1)))


def on_started(sender: str, job: Job) -> None:
    current.job_id = job.id


def on_finished(sender: str, job: Job) -> None:
    if job.status is JobStatus.SUCCEEDED:
        record(f"ok {job.id}")


def on_failed(sender: str, job: Job, err: BaseException) -> None:
    record(f"fail {job.id} {type(err).__name__} {time.time()}")


def on_worker_started(sender: str, worker_name: str) -> None:
    if worker_name.endswith("-worker-1"):
        record("ready")  # the workers run: start-up went through


receivers: list[Any] = [on_started, on_finished, on_failed, on_worker_started]
signals.worker_started.connect(on_worker_started, sender=namespace)
signals.job_started.connect(on_started, sender=namespace)
signals.job_finished.connect(on_finished, sender=namespace)
signals.job_failed.connect(on_failed, sender=namespace)


class SkewedClock(Clock):
    def time(self) -> float:
        return time.time() + options.get("skew", 0.0)


engine = Engine(
    RedisBroker.from_url(url, clock=SkewedClock(), socket_timeout=options.get("socket_timeout", 2)),
    namespace,
    heartbeat_interval=options.get("heartbeat_interval", 0.2),
    dead_worker_timeout=options.get("dead_worker_timeout", 2.0),
)
engine.attach_tasks(tasks)
engine.start_workers(
    number=options.get("threads", 4),
    queue=options.get("queue", "spinach"),
    block=True,
    grace_period=options.get("grace_period"),
)
record("exited")
