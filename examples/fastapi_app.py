"""Spinach in a FastAPI application: an endpoint that schedules a job, and one
that awaits its result, neither blocking the event loop.

It needs FastAPI (``pip install fastapi``). Serve ``app`` with any ASGI server
(``uvicorn examples.fastapi_app:app``) and run workers with ``spinach worker
examples.fastapi_app:spin``. Run as a script (``python examples/fastapi_app.py``)
it starts the workers in this process and sends a few requests through an
in-process client (httpx2's ASGI transport). With ``SPINACH_REDIS_URL`` set it
uses that Redis, else a MemoryBroker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI, HTTPException

from spinach import Engine, MemoryBroker, RedisBroker
from spinach.brokers.base import Broker
from spinach.exc import JobFailedError, UnknownJobError


def make_broker() -> Broker:
    """A RedisBroker when SPINACH_REDIS_URL is set, else a MemoryBroker."""
    url = os.environ.get("SPINACH_REDIS_URL")
    return RedisBroker.from_url(url) if url else MemoryBroker()


spin = Engine(make_broker(), "fastapi-example")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # The broker's connections of this event loop (a RedisBroker talks to Redis
    # with redis.asyncio from the loop, and to the workers' side with threads).
    await spin.broker.close_async()


app = FastAPI(lifespan=lifespan)


@spin.task(name="charge", max_retries=2, keep_result=timedelta(hours=1))
def charge(order: int, amount: float) -> str:
    return f"order {order}: charged {amount:.2f} EUR"


@app.post("/orders/{order}")
async def create_order(order: int, amount: float) -> dict[str, str]:
    job = await spin.schedule_async("charge", order, amount)
    return {"job_id": str(job.id)}


@app.get("/jobs/{job_id}/result")
async def job_result(job_id: str, timeout: float = 10.0) -> dict[str, str]:
    try:
        return {"result": await spin.get_result_async(job_id, timeout)}
    except UnknownJobError as e:
        raise HTTPException(404, str(e)) from None
    except JobFailedError as e:
        raise HTTPException(500, f"the job failed: {e}") from None
    except TimeoutError as e:
        raise HTTPException(504, str(e)) from None


async def demo() -> None:
    import httpx2

    transport = httpx2.ASGITransport(app=app)  # it runs no lifespan: the app's is entered here
    async with (
        lifespan(app),
        httpx2.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        created = await asyncio.gather(
            *(client.post(f"/orders/{n}", params={"amount": 10 * n}) for n in (1, 2, 3))
        )
        ids = [response.json()["job_id"] for response in created]
        results = await asyncio.gather(*(client.get(f"/jobs/{i}/result") for i in ids))
    for response in results:
        print(response.json()["result"])
    print(f"{len(results)} orders charged")


def main() -> None:
    spin.start_workers(number=2, block=False)
    try:
        asyncio.run(demo())
    finally:
        spin.stop_workers()
        spin.broker.flush()


if __name__ == "__main__":
    main()
