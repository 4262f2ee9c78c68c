"""Enqueue-to-start latency of three ways to hand a job to an idle engine, in
bare redis-py: what a redesign of the hand-out could buy, before building it.

Each way has a producer (the main thread) and a consumer made of the threads
an engine has: an arbiter that gets jobs from Redis, and a worker thread that
"starts" a job by stamping the time. The scripts do the least each way needs
(a job is a short string; the running record is one ``HSET``):

- ``notify``, Spinach's way today: the producer's script pushes the job and
  publishes; a listener thread hears it and wakes the arbiter, whose fetch
  script pops the job and records it running.
- ``claim``: the producer's script is the same; the arbiter blocks in
  ``BLMOVE`` from the ready list to a list of its own; once it returns, its
  fetch script takes the job from there and records it running. No listener
  hop; a fetch round trip.
- ``push``: the arbiter registers as idle and blocks in ``BLPOP`` on an inbox
  of its own; the producer's script, finding it registered, records the job
  running and pushes it to that inbox. No listener hop, no fetch.

Prints, for each, the median and p99 from ``schedule`` returning and from the
call, over SAMPLES jobs, one at a time, with the consumer idle in between.

    python benchmarks/handout_paths.py [--samples 1000]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time
from typing import Any, Callable

import redis
from _server import percentile, redis_url

NOTIFY_PUSH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], 'stored')
return 1
"""
FETCH = """
local job = redis.call('LPOP', KEYS[1])
if job then redis.call('HSET', KEYS[2], job, ARGV[1]) end
return job
"""
FETCH_OR_WAIT = """
local job = redis.call('LPOP', KEYS[1])
if job then
    redis.call('HSET', KEYS[2], job, ARGV[1])
    return job
end
redis.call('RPUSH', KEYS[3], ARGV[2])
return false
"""
PUSH_OR_HAND_OUT = """
local idle = redis.call('LPOP', KEYS[2])
if not idle then
    redis.call('RPUSH', KEYS[1], ARGV[1])
    return 0
end
redis.call('HSET', KEYS[3], ARGV[1], idle)
redis.call('RPUSH', KEYS[4] .. idle, ARGV[1])
return 1
"""


class Consumer:
    """An arbiter thread handing jobs to a worker thread, which stamps each start."""

    def __init__(self, get_job: Callable[[], Any]) -> None:
        self.starts: queue.SimpleQueue[float] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._get_job = get_job
        self.stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._arbiter, daemon=True),
            threading.Thread(target=self._worker, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _arbiter(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self._get_job()
            except redis.ConnectionError:
                if self.stopping.is_set():
                    return  # the server was stopped after the measure
                raise
            if job is not None:
                self._jobs.put(job)
                time.sleep(0)  # as the engine does: let the worker take the GIL

    def _worker(self) -> None:
        while True:
            self._jobs.get()
            self.starts.put(time.perf_counter())


def notify_way(url: str) -> tuple[Callable[[], None], Consumer]:
    client = redis.Redis.from_url(url)
    push = client.register_script(NOTIFY_PUSH)
    fetch = client.register_script(FETCH)
    woken = threading.Event()
    pubsub = client.pubsub()
    pubsub.subscribe("events")

    def listen() -> None:
        try:
            while True:
                message = pubsub.get_message(timeout=0.5)
                if message is not None and message["type"] == "message":
                    woken.set()
        except redis.ConnectionError:
            pass  # the server was stopped after the measure

    threading.Thread(target=listen, daemon=True).start()

    def get_job() -> Any:
        job = fetch(keys=["ready", "running"], args=["token"])
        if job is None:
            woken.wait(0.5)
            woken.clear()
        return job

    return lambda: push(keys=["ready", "events"], args=["job"]), Consumer(get_job)


def claim_way(url: str) -> tuple[Callable[[], None], Consumer]:
    client = redis.Redis.from_url(url)
    blocking = redis.Redis.from_url(url, socket_timeout=5)
    push = client.register_script(NOTIFY_PUSH)  # the producer's script as today's
    fetch = client.register_script(FETCH)

    def get_job() -> Any:
        job = fetch(keys=["claimed", "running"], args=["token"])
        if job is None:
            blocking.blmove("ready", "claimed", 0.5, "LEFT", "RIGHT")
        return job

    return lambda: push(keys=["ready", "events"], args=["job"]), Consumer(get_job)


def push_way(url: str) -> tuple[Callable[[], None], Consumer]:
    client = redis.Redis.from_url(url)
    blocking = redis.Redis.from_url(url, socket_timeout=5)
    hand_out = client.register_script(PUSH_OR_HAND_OUT)
    fetch_or_wait = client.register_script(FETCH_OR_WAIT)

    def get_job() -> Any:
        # Registered as idle in the same script that found the queue empty: a
        # job stored in between is fetched, never left waiting.
        job = fetch_or_wait(keys=["ready", "running", "idle"], args=["token", "w1"])
        if job is not None:
            return job
        got = blocking.blpop(["inbox:w1"], 0.5)
        if got is None:
            # Not handed anything: no longer waiting (the producer's script removed
            # the registration of a hand-out). A job handed out meanwhile waits in
            # the inbox for the next BLPOP.
            client.lrem("idle", 0, "w1")
            return None
        return got[1]

    def schedule() -> None:
        hand_out(keys=["ready", "idle", "running", "inbox:"], args=["job"])

    return schedule, Consumer(get_job)


def measure(way: Callable[[str], tuple[Callable[[], None], Consumer]], samples: int) -> str:
    with redis_url() as url:
        schedule, consumer = way(url)
        from_return, from_call = [], []
        for i in range(samples + 50):
            time.sleep(0.002)  # the consumer idles: this measures an idle engine
            called = time.perf_counter()
            schedule()
            returned = time.perf_counter()
            started = consumer.starts.get(timeout=10)
            if i >= 50:  # warm-up
                from_return.append(1000 * (started - returned))
                from_call.append(1000 * (started - called))
        consumer.stopping.set()
    return (
        f"from the return: median {statistics.median(from_return):.3f} ms, "
        f"p99 {percentile(from_return, 0.99):.3f}; from the call: median "
        f"{statistics.median(from_call):.3f} ms, p99 {percentile(from_call, 0.99):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    for name, way in (("notify", notify_way), ("claim", claim_way), ("push", push_way)):
        print(f"{name:7s} {measure(way, args.samples)}")


if __name__ == "__main__":
    main()
