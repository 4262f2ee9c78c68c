"""The RedisBroker's asyncio side: scheduling and reading jobs with redis.asyncio,
holding no thread, and failing as the blocking calls do."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio

from spinach import Batch, Engine, RedisBroker
from spinach.brokers.redis import clock as redis_clock
from spinach.clock import Clock
from spinach.exc import BrokerConnectionError
from spinach.testing.redis_server import free_port


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor that counts what it is given."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.calls: list[Any] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(fn)
        return super().submit(fn, *args, **kwargs)


class BlockingCalls:
    """The threads that made a blocking call while ``watching``: a command of the
    broker's blocking client, or a measure of the clock offset through it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, broker: RedisBroker) -> None:
        self.threads: list[str] = []
        self.watching = True
        execute, sync = broker.redis.execute_command, broker.clock.sync  # type: ignore[attr-defined]

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            if self.watching:
                self.threads.append(threading.current_thread().name)
            return execute(*args, **kwargs)

        def spied_sync() -> bool:
            if self.watching:
                self.threads.append(threading.current_thread().name)
            return bool(sync())

        monkeypatch.setattr(broker.redis, "execute_command", execute_command)
        monkeypatch.setattr(broker.clock, "sync", spied_sync)


def test_schedule_and_wait_without_a_thread(
    redis_url: str,
    namespace: str,
    from_url: Callable[..., RedisBroker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every async engine method goes to Redis from the loop itself: the loop's
    default executor is never given anything, and the loop's thread never
    calls the blocking client, even with the clock offset due to be measured
    again at every call."""
    monkeypatch.setattr(redis_clock, "_CLOCK_SYNC_INTERVAL", 0.0)
    broker = from_url(redis_url)
    engine = Engine(broker, namespace)
    engine.task(lambda n: n * 2, name="double", keep_result=timedelta(minutes=1))
    executor = CountingExecutor()
    now = broker.now()
    blocking = BlockingCalls(monkeypatch, broker)

    async def main() -> list[int]:
        asyncio.get_running_loop().set_default_executor(executor)
        try:
            jobs = [await engine.schedule_async("double", n) for n in range(3)]
            batch = Batch()
            batch.schedule("double", 10)
            jobs += await engine.schedule_batch_async(batch)
            jobs.append(await engine.schedule_at_async("double", now, 20))
            info = await engine.get_job_async(jobs[0])
            assert info is not None
            assert info.status.name == "QUEUED"
            # Starting and stopping workers are blocking calls, made by this test.
            blocking.watching = False
            engine.start_workers(number=2, block=False)
            blocking.watching = True
            try:
                return list(await asyncio.gather(*(engine.get_result_async(j, 10) for j in jobs)))
            finally:
                blocking.watching = False
                engine.stop_workers()
        finally:
            await engine.broker.close_async()

    assert asyncio.run(main()) == [0, 2, 4, 20, 40]
    assert executor.calls == []
    assert threading.current_thread().name not in blocking.threads
    assert blocking.threads  # the spies see the calls of the workers' threads
    executor.shutdown()


class SkewedClock(Clock):
    """This host's clock, off by a fixed number of seconds."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew


def test_a_stale_clock_offset_is_measured_again_from_the_loop(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host clock 2 minutes behind, with an offset that was not measured: the
    script refuses the call as late, the broker measures the offset again from
    the loop and sends the same call, which stores the job once."""
    broker = RedisBroker.from_url(redis_url, clock=SkewedClock(-120.0))
    engine = Engine(broker, namespace)
    engine.task(lambda: None, name="once")
    clock = broker.clock
    assert isinstance(clock, redis_clock.ServerClock)
    clock.time()
    clock._offset = 0.0  # as if the first measure had failed
    blocking = BlockingCalls(monkeypatch, broker)

    async def main() -> None:
        try:
            await engine.schedule_async("once")
        finally:
            await broker.close_async()

    asyncio.run(main())
    assert blocking.threads == []
    assert broker.count_jobs().queued == {"spinach": 1}
    assert abs(broker.now().timestamp() - time.time()) < 5
    broker.flush()
    broker.close()


#: What scheduling says once it gave up on an unreachable Redis (two tries).
GAVE_UP = r"the job of task 'print' in Redis after 2 tries"


def schedule_in_a_loop(broker: RedisBroker, namespace: str) -> Engine:
    """An engine of ``broker`` whose task ``print`` is scheduled once with
    schedule_async, in an event loop of its own; what it raises is raised."""
    engine = Engine(broker, namespace)
    engine.task(lambda n: n, name="print")

    async def main() -> None:
        try:
            await engine.schedule_async("print", 1)
        finally:
            await broker.close_async()

    asyncio.run(main())
    return engine


def test_an_unreachable_redis_fails_as_the_blocking_call(namespace: str) -> None:
    """With nothing listening, schedule_async tries again with backoff, then raises
    the BrokerConnectionError that schedule raises."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    broker = RedisBroker.from_url(url, enqueue_job_max_retries=1, socket_connect_timeout=1)
    with pytest.raises(BrokerConnectionError, match=GAVE_UP):
        schedule_in_a_loop(broker, namespace)
    engine = Engine(RedisBroker.from_url(url, enqueue_job_max_retries=1), namespace)
    engine.task(lambda n: n, name="print")
    with pytest.raises(BrokerConnectionError, match=GAVE_UP):
        engine.schedule("print", 1)
    broker.close()
    engine.broker.close()  # type: ignore[attr-defined]


def test_an_unreachable_cluster_fails_as_an_unreachable_server(namespace: str) -> None:
    """An asyncio cluster client learns its nodes on its first command: finding
    none is an outage like any other, tried again, then BrokerConnectionError."""
    port = free_port()
    broker = RedisBroker(
        redis.Redis(port=port, socket_connect_timeout=1),
        enqueue_job_max_retries=1,
        async_redis=lambda: redis.asyncio.RedisCluster(
            host="127.0.0.1", port=port, socket_connect_timeout=1
        ),
    )
    with pytest.raises(BrokerConnectionError, match=GAVE_UP) as raised:
        schedule_in_a_loop(broker, namespace)
    assert "no node of the Redis Cluster answered" in str(raised.value)
    broker.close()
