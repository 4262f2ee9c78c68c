"""An asyncio app scheduling jobs and awaiting their results never holds its
event loop, even with Redis 100 ms away: the FastAPI example served by uvicorn
in a process of its own that reports every step of its loop running 10 ms of
CPU, or waiting off the CPU for half a round trip to Redis (see
asgi_server.py), under 200 requests at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the loop check reads Linux's per-thread counters", allow_module_level=True)

from spinach import Engine, RedisBroker
from spinach.testing import wait_for
from spinach.testing.delay_proxy import DelayProxy
from spinach.testing.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).with_name("asgi_server.py")
APP = "examples.fastapi_app"
#: Requests sent at once, then as many waits for results.
AT_ONCE = 200
#: Seconds added to each direction between the app and Redis: a blocking Redis
#: call waits twice that, which the loop check flags from half of it.
DELAY = 0.05


@pytest.fixture
def slow_redis_url(redis_url: str) -> Iterator[str]:
    """The test server's URL through a proxy adding DELAY each way."""
    parts = urlsplit(redis_url)
    assert parts.port is not None
    with DelayProxy(parts.port, delay=DELAY) as proxy:
        yield parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    broker = RedisBroker.from_url(redis_url)
    Engine(broker, "fastapi-example").broker.flush()
    broker.close()


@contextlib.contextmanager
def process(args: list[str], redis_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process of ``args`` run from the checkout with SPINACH_REDIS_URL set, its
    output written to ``log``, stopped with SIGINT (a graceful stop) at the end."""
    env = {**os.environ, "SPINACH_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve(
    slow_redis_url: str, log: Path, *options: str
) -> tuple[contextlib.AbstractContextManager[subprocess.Popen[bytes]], str]:
    """The app server's process (not started yet), and its base URL."""
    port = free_port()
    checks = ["--slow", "0.01", "--wait", str(DELAY)]
    args = [sys.executable, str(SERVER), f"{APP}:app", str(port), *checks, *options]
    return process(args, slow_redis_url, log), f"http://127.0.0.1:{port}"


def wait_until_serving(base_url: str, server: subprocess.Popen[bytes], log: Path) -> int:
    """Wait for the app server to answer, then warm it up: the first request to
    each route costs FastAPI tens of milliseconds of CPU, once (it builds the
    route's parameter checks). Return where the log stands once warm."""

    def answers() -> bool:
        assert server.poll() is None, f"the app server exited: {log.read_text()}"
        try:
            return httpx2.get(f"{base_url}/openapi.json", timeout=1).status_code == 200
        except httpx2.TransportError:
            return False

    wait_for(answers, timeout=30, interval=0.05)
    job_id = httpx2.post(f"{base_url}/orders/0", params={"amount": 0}).json()["job_id"]
    httpx2.get(f"{base_url}/jobs/{job_id}/result", params={"timeout": 0})
    # Each step of the loop ends (and reports itself) before the next begins:
    # once this answer is in, the warm-up's steps are all in the log.
    httpx2.get(f"{base_url}/openapi.json")
    return log.stat().st_size


def warm_output(log: Path, start: int) -> str:
    with log.open("rb") as f:
        f.seek(start)
        return f.read().decode()


def slow_steps(output: str) -> list[str]:
    """The lines of the app server about a step that held its loop."""
    return [line for line in output.splitlines() if line.startswith("held the loop:")]


def test_two_hundred_requests_at_once_never_hold_the_loop(
    redis_url: str, slow_redis_url: str, tmp_path: Path
) -> None:
    worker = [sys.executable, "-m", "spinach", "worker", f"{APP}:spin", "--threads", "8"]
    log = tmp_path / "server.log"
    served, base_url = serve(slow_redis_url, log)
    with process(worker, redis_url, tmp_path / "worker.log"), served as server:
        warm = wait_until_serving(base_url, server, log)

        async def requests() -> list[str]:
            limits = httpx2.Limits(max_connections=AT_ONCE)
            async with httpx2.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
                created = await asyncio.gather(
                    *(client.post(f"/orders/{n}", params={"amount": n}) for n in range(AT_ONCE))
                )
                assert {r.status_code for r in created} == {200}
                ids = [r.json()["job_id"] for r in created]
                results = await asyncio.gather(
                    *(client.get(f"/jobs/{i}/result", params={"timeout": 30}) for i in ids)
                )
            assert {r.status_code for r in results} == {200}, [
                r.text for r in results if r.status_code != 200
            ][:3]
            return [r.json()["result"] for r in results]

        results = asyncio.run(requests())
        assert results == [f"order {n}: charged {n:.2f} EUR" for n in range(AT_ONCE)]
    output = warm_output(log, warm)
    assert server.returncode == 0, log.read_text()
    assert slow_steps(output) == [], output
    print(output.splitlines()[-1])  # loop steps: how many, the longest


def test_the_check_sees_a_schedule_that_blocks_the_loop(
    slow_redis_url: str, tmp_path: Path
) -> None:
    """The same server, with a route calling the blocking Engine.schedule in its
    coroutine: each such request holds the loop for a Redis round trip, and is seen."""
    log = tmp_path / "server.log"
    served, base_url = serve(slow_redis_url, log, "--blocking-route")
    with served as server:
        warm = wait_until_serving(base_url, server, log)
        for n in range(3):
            response = httpx2.post(f"{base_url}/blocking-orders/{n}", params={"amount": 1})
            assert response.status_code == 200
    assert len(slow_steps(warm_output(log, warm))) >= 3, log.read_text()
