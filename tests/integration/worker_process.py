"""A worker process for the multi-process tests: ``python worker_process.py URL NS OPTIONS``.

Its tasks record what they do in Redis lists prefixed by the namespace, so the
test reads the outcome from the same server. OPTIONS is JSON: ``threads``,
``dead_worker_timeout``, ``periodic`` (register the periodic task), ``asyncio``
(run asyncio workers on the queue ``aio``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import timedelta
from typing import Any

import redis

from spinach import AsyncioWorkers, Engine, Tasks, ThreadWorkers, signals
from spinach.brokers.redis import RedisBroker
from spinach.job import Job

url, namespace, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
r = redis.Redis.from_url(url)
tasks = Tasks()


def key(name: str) -> str:
    return f"test:{namespace}:{name}"


@tasks.task(name="record", max_retries=3)
def record(i: int) -> None:
    r.rpush(key("runs"), i)


@tasks.task(name="limited", max_retries=1, max_concurrency=2)
def limited(i: int) -> None:
    r.rpush(key("samples"), r.incr(key("running")))
    time.sleep(0.005)  # the job's work, so that jobs overlap
    r.decr(key("running"))
    r.rpush(key("runs"), i)


def hold(kind: str, i: int) -> None:
    r.rpush(key("started"), f"{kind}:{i}:{os.getpid()}")
    # Work until the test says stop (or it kills this process).
    r.blpop([key(f"release:{i}")], timeout=60)
    r.rpush(key("done"), f"{kind}:{i}:{os.getpid()}")


@tasks.task(name="hold_least", max_retries=2)
def hold_least(i: int) -> None:
    hold("least", i)


@tasks.task(name="hold_most", max_retries=0)
def hold_most(i: int) -> None:
    hold("most", i)


@tasks.task(name="square", keep_result=timedelta(hours=1))
def square(i: int) -> int:
    if i < 0:
        raise ValueError(f"no square of {i} here")
    return i * i


@tasks.task(name="hold_kept", keep_result=timedelta(hours=1))
def hold_kept(i: int) -> dict[str, Any]:
    hold("kept", i)
    return {"held": i, "pid": os.getpid()}


@tasks.task(name="spin_limited", time_limit=timedelta(seconds=1))
def spin_limited(i: int) -> None:
    r.rpush(key("started"), f"spin:{i}:{os.getpid()}")
    turns = 0
    while True:  # pure Python, for ever: only the time limit stops it
        turns += 1


@tasks.task(name="rated", rate_limit=(50, timedelta(seconds=1)))
def rated(i: int) -> None:
    r.rpush(key("rated"), time.time())


@tasks.task(name="sleeper", max_retries=2)
def sleeper(i: int) -> None:
    r.rpush(key("started"), f"sleeper:{i}:{os.getpid()}")
    while True:  # sleeps, waking up now and then: only a cancel stops it
        time.sleep(0.05)


@tasks.task(name="aio_sleeper", queue="aio", max_retries=2)
async def aio_sleeper(i: int) -> None:
    r.rpush(key("started"), f"aio_sleeper:{i}:{os.getpid()}")
    await asyncio.sleep(3600)


@tasks.task(name="aio_record", queue="aio")
async def aio_record(i: int) -> None:
    r.rpush(key("runs"), i)


if options.get("periodic"):

    @tasks.task(name="tick", periodicity=timedelta(seconds=1))
    def tick() -> None:
        pass


def on_started(sender: str, job: Job) -> None:
    if job.task_name == "tick":
        r.rpush(key("ticks"), f"{job.id} {job.at.timestamp()}")


def on_failed(sender: str, job: Job, err: BaseException) -> None:
    r.rpush(key("failed"), f"{job.task_name}:{job.task_args[0]}:{type(err).__name__}")


def on_finished(sender: str, job: Job) -> None:
    if job.status.name == "CANCELLED":
        r.rpush(key("cancelled"), f"{job.task_name}:{job.task_args[0]}")


def on_worker_started(sender: str, worker_name: str) -> None:
    r.rpush(key("workers"), f"{os.getpid()}:{worker_name}")


receivers: list[Any] = [on_started, on_failed, on_finished, on_worker_started]
signals.job_finished.connect(on_finished, sender=namespace)
signals.job_started.connect(on_started, sender=namespace)
signals.job_failed.connect(on_failed, sender=namespace)
signals.worker_started.connect(on_worker_started, sender=namespace)

engine = Engine(
    RedisBroker.from_url(url),
    namespace,
    heartbeat_interval=0.2,
    dead_worker_timeout=options.get("dead_worker_timeout", 10.0),
)
engine.attach_tasks(tasks)
engine.start_workers(
    number=options.get("threads", 4),
    queue="aio" if options.get("asyncio") else "spinach",
    workers_class=AsyncioWorkers if options.get("asyncio") else ThreadWorkers,
    block=True,
)
r.rpush(key("exited"), os.getpid())
