"""Scheduling and waiting for results from asyncio code."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from spinach import Batch, Engine, MemoryBroker, _lifecycle
from spinach.exc import JobFailedError, UnknownJobError


@pytest.fixture
def engine() -> Engine:
    engine = Engine(MemoryBroker(), "async-apps")
    engine.task(lambda n: n * 2, name="double", keep_result=timedelta(minutes=1))
    engine.task(lambda: 1 / 0, name="bad", max_retries=0, keep_result=timedelta(minutes=1))
    return engine


def test_schedule_and_wait_for_results_without_blocking_the_loop(engine: Engine) -> None:
    async def main() -> tuple[list[int], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        jobs = [await engine.schedule_async("double", n) for n in range(5)]
        batch = Batch()
        batch.schedule("double", 10)
        jobs += await engine.schedule_batch_async(batch)
        later = await engine.schedule_at_async("double", engine.broker.now(), 20)
        info = await engine.get_job_async(later)
        assert info is not None
        assert info.status.name == "QUEUED"
        before = ticks
        engine.start_workers(number=2, block=False)
        try:
            results = await asyncio.gather(*(engine.get_result_async(j, 10) for j in jobs))
            results.append(await engine.get_result_async(later, 10))
        finally:
            engine.stop_workers()
        ticker.cancel()
        return results, ticks - before

    results, ticks = asyncio.run(main())
    assert results == [0, 2, 4, 6, 8, 20, 40]
    assert ticks > 0  # the loop ran other coroutines while the results were awaited


def test_async_waits_say_what_went_wrong(engine: Engine) -> None:
    async def main() -> None:
        bad = await engine.schedule_async("bad")
        pending = await engine.schedule_async("double", 1)
        with pytest.raises(TimeoutError, match=r"had not ended after 0\.05 s"):
            await engine.get_result_async(pending, timeout=0.05)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        with pytest.raises(JobFailedError):
            await engine.get_result_async(bad, 5)
        with pytest.raises(UnknownJobError, match="is not a job id"):
            await engine.get_result_async("nope")
        with pytest.raises(ValueError, match="must be 0 or more"):
            await engine.get_result_async(pending, timeout=-1)

    asyncio.run(main())


def test_waiting_for_a_result_polls_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait ends when the job's end is notified: the waiting coroutine never
    sleeps to look again, and gets the result of a job that a worker thread
    runs meanwhile. Its looks at the job are an hour apart here, so only the
    notification can end the wait within the 10 s this test gives it."""
    monkeypatch.setattr(_lifecycle, "_LOOK_AGAIN", 3600.0)
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def spied_sleep(delay: float, *args: object) -> object:
        slept.append(delay)
        return await real_sleep(delay, *args)

    async def main() -> int:
        job = await engine.schedule_async("double", 21)
        monkeypatch.setattr(asyncio, "sleep", spied_sleep)
        engine.start_workers(number=1, block=False)
        try:
            result: int = await asyncio.wait_for(engine.get_result_async(job), 10)
            return result
        finally:
            engine.stop_workers()

    assert asyncio.run(main()) == 42
    assert slept == []


def test_a_cancelled_wait_for_a_result_ends(engine: Engine) -> None:
    """Cancelling a coroutine waiting for a result cancels it, even as the job's
    end is notified at about the same time."""

    async def main() -> int:
        cancelled = 0
        for steps in range(6):
            job = await engine.schedule_async("double", steps)
            waiting = asyncio.ensure_future(engine.get_result_async(job))
            for _ in range(3):
                await asyncio.sleep(0)  # the wait has begun
            engine.broker._jobs_ended([str(job.id)])  # an end notified (spuriously)
            for _ in range(steps):
                await asyncio.sleep(0)
            waiting.cancel()
            try:
                await asyncio.wait_for(waiting, 10)
            except asyncio.CancelledError:
                cancelled += 1
        return cancelled

    assert asyncio.run(main()) == 6
