"""Serve an ASGI app with uvicorn, reporting each step of its event loop that
held the loop: one that ran ``--slow`` seconds of CPU, or that waited
``--wait`` seconds for something outside the loop (a blocking call: a socket
read, a sleep).

    python asgi_server.py MODULE:APP PORT [--slow S] [--wait S] [--blocking-route]

Each such step is a line "held the loop: ..." on stderr; at the end a line
"loop steps: ..." tells how many steps ran and the longest.

asyncio's debug mode logs the steps longer than ``slow_callback_duration``,
but it also records a traceback at the creation of every future and handle:
that alone takes tens of milliseconds of a request through FastAPI's deep
stacks, more than the 10 ms to check. And time spent runnable but not running
(another process on the CPU) is the machine's load, not the code's doing. So
the steps are timed here (Linux only), with the thread's CPU time and its
voluntary context switches: a step waited when it spent ``--wait`` seconds
off the CPU having given it up itself. On a loaded machine a thread also gives
up the CPU to wait for the GIL, for up to a few timeslices (10 to 20 ms seen)
when the thread holding it is descheduled: so a wait counts from ``--wait``,
which the test sets to half a round trip to its slowed-down Redis. The garbage
collector's pauses (a full collection of this process takes about 50 ms, in
whichever thread triggers it) are counted apart, and told in the summary.

With ``--blocking-route``, the app also gets ``POST /blocking-orders/{order}``,
which schedules with the blocking ``Engine.schedule`` of ``MODULE:spin`` inside
a coroutine: the mistake the check is there to catch.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.events
import gc
import importlib
import resource
import sys
import threading
import time
from typing import Any

import uvicorn


class StepTimer:
    """Times each step (``Handle._run``) of the event loops of this process."""

    def __init__(self, slow: float, wait: float) -> None:
        self.slow = slow
        self.wait = wait
        self.steps = 0
        self.longest = (0.0, 0.0)  # wall and CPU seconds of the longest step
        # Wall seconds of garbage collection in any thread, and CPU seconds of
        # it in each thread (a collection can be preempted on a loaded machine).
        self.gc_total = 0.0
        self.gc_cpu_by_thread: dict[int, float] = {}
        self.gc_longest = 0.0
        self._gc_started = (0.0, 0.0)

    def install(self) -> None:
        run = asyncio.events.Handle._run
        timer = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            thread = threading.get_ident()
            started = (
                time.perf_counter(),
                time.thread_time(),
                resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw,
                timer.gc_total,
                timer.gc_cpu_by_thread.get(thread, 0.0),
            )
            try:
                run(handle)
            finally:
                timer.record(handle, thread, *started)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # The collector holds the GIL: it runs in one thread at a time.
        if phase == "start":
            self._gc_started = (time.perf_counter(), time.thread_time())
            return
        took = time.perf_counter() - self._gc_started[0]
        cpu = time.thread_time() - self._gc_started[1]
        thread = threading.get_ident()
        self.gc_total += took
        self.gc_cpu_by_thread[thread] = self.gc_cpu_by_thread.get(thread, 0.0) + cpu
        self.gc_longest = max(self.gc_longest, took)

    def record(
        self,
        handle: Any,
        thread: int,
        wall: float,
        cpu: float,
        waits: int,
        gc_all: float,
        gc_here: float,
    ) -> None:
        wall = time.perf_counter() - wall
        cpu = time.thread_time() - cpu
        self.steps += 1
        if wall > self.longest[0]:
            self.longest = (wall, cpu)
        if wall < min(self.slow, self.wait):
            return
        waits = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - waits
        gc_all = self.gc_total - gc_all
        gc_cpu_here = self.gc_cpu_by_thread.get(thread, 0.0) - gc_here
        own_cpu = cpu - gc_cpu_here
        # Off the CPU outside every collection (here or in another thread).
        off_cpu = wall - gc_all - own_cpu
        if own_cpu >= self.slow or (off_cpu >= self.wait and waits > 0):
            print(
                f"held the loop: {wall * 1000:.1f} ms, {cpu * 1000:.1f} ms of CPU, "
                f"{gc_all * 1000:.1f} ms of garbage collection, {waits} waits: "
                f"{handle!r:.300}{where_next(handle)}",
                file=sys.stderr,
                flush=True,
            )

    def summary(self) -> str:
        wall, cpu = self.longest
        return (
            f"loop steps: {self.steps}, the longest {wall * 1000:.1f} ms "
            f"({cpu * 1000:.1f} ms of CPU); garbage collection: {self.gc_total * 1000:.0f} ms "
            f"in all, the longest pause {self.gc_longest * 1000:.1f} ms"
        )


def where_next(handle: Any) -> str:
    """Where the task that a step ran stopped next (its innermost frames)."""
    task = getattr(getattr(handle, "_callback", None), "__self__", None)
    if not isinstance(task, asyncio.Task):
        return ""
    frames = [f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in task.get_stack()]
    return "".join(f"\n    {frame}" for frame in frames[-8:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("port", type=int)
    parser.add_argument("--slow", type=float, default=0.01)
    parser.add_argument("--wait", type=float, default=0.01)
    parser.add_argument("--blocking-route", action="store_true")
    options = parser.parse_args()
    module_name, _, app_name = options.target.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, app_name)
    if options.blocking_route:

        async def blocking_order(order: int, amount: float) -> dict[str, str]:
            job = module.spin.schedule("charge", order, amount)  # blocks the loop
            return {"job_id": str(job.id)}

        app.add_api_route("/blocking-orders/{order}", blocking_order, methods=["POST"])

    config = uvicorn.Config(
        app, host="127.0.0.1", port=options.port, loop="asyncio", log_level="warning"
    )
    timer = StepTimer(options.slow, options.wait)
    timer.install()
    try:
        asyncio.run(uvicorn.Server(config).serve())
    except KeyboardInterrupt:
        pass  # uvicorn stopped gracefully on SIGINT, then raised it again
    finally:
        print(timer.summary(), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
