"""The RedisBroker's asyncio side: scheduling and reading jobs with redis.asyncio,
holding no thread, and failing as the blocking calls do."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from spinach import Batch, Engine, RedisBroker
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


def test_schedule_and_wait_without_a_thread(
    redis_url: str, namespace: str, from_url: Callable[..., RedisBroker]
) -> None:
    """Every async engine method goes to Redis from the loop itself: the loop's
    default executor is never given anything, from the first call (which
    measures the clock offset) to the results."""
    engine = Engine(from_url(redis_url), namespace)
    engine.task(lambda n: n * 2, name="double", keep_result=timedelta(minutes=1))
    executor = CountingExecutor()

    async def main() -> list[int]:
        asyncio.get_running_loop().set_default_executor(executor)
        try:
            jobs = [await engine.schedule_async("double", n) for n in range(3)]
            batch = Batch()
            batch.schedule("double", 10)
            jobs += await engine.schedule_batch_async(batch)
            jobs.append(await engine.schedule_at_async("double", engine.broker.now(), 20))
            info = await engine.get_job_async(jobs[0])
            assert info is not None
            assert info.status.name == "QUEUED"
            engine.start_workers(number=2, block=False)
            try:
                return list(await asyncio.gather(*(engine.get_result_async(j, 10) for j in jobs)))
            finally:
                engine.stop_workers()
        finally:
            await engine.broker.close_async()

    assert asyncio.run(main()) == [0, 2, 4, 20, 40]
    assert executor.calls == []
    executor.shutdown()


def test_an_unreachable_redis_fails_as_the_blocking_call(namespace: str) -> None:
    """With nothing listening, schedule_async tries again with backoff, then raises
    the BrokerConnectionError that schedule raises."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    broker = RedisBroker.from_url(url, enqueue_job_max_retries=1, socket_connect_timeout=1)
    engine = Engine(broker, namespace)
    engine.task(lambda n: n, name="print")

    async def main() -> None:
        try:
            await engine.schedule_async("print", 1)
        finally:
            await broker.close_async()

    with pytest.raises(
        BrokerConnectionError, match=r"the job of task 'print' in Redis after 2 tries"
    ):
        asyncio.run(main())
    with pytest.raises(
        BrokerConnectionError, match=r"the job of task 'print' in Redis after 2 tries"
    ):
        engine.schedule("print", 1)
    broker.close()
