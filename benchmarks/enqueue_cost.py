"""What scheduling one job at a time costs, against the raw round trips that bound it.

In one process, in turns, for ROUNDS rounds of JOBS calls each:

- ``RPUSH`` round trips of a 150-byte value (redis-py);
- ``EVALSHA`` round trips of a script doing that ``RPUSH``: the floor of an
  atomic enqueue written as a script;
- ``Engine.schedule`` of a no-op task on a ``RedisBroker``.

For each: calls per second, this process's CPU per call, and the Redis time
per call (``INFO commandstats``). Then Spinach's own CPU per ``schedule``
with Redis left out (the script call answered at once, in the process).
With ``--base DIR`` the Spinach of the checkout DIR is measured too, in
turns, in a process of its own like this checkout's. The target of the
performance issue is printed last: scheduling at 0.9x the EVALSHA round
trip or more.

    python benchmarks/enqueue_cost.py [--base DIR] [--rounds 5] [--jobs 5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

from _server import measure_with, redis_url

HERE = os.path.dirname(os.path.abspath(__file__))
VALUE = b"x" * 150
PUSH_SCRIPT = "return redis.call('RPUSH', KEYS[1], ARGV[1])"


def timed(client: Any, jobs: int, call: Callable[[], Any], command: str) -> dict[str, float]:
    """Calls per second, client CPU and Redis time per call (µs) of ``jobs`` calls."""
    client.config_resetstat()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(jobs):
        call()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = client.info("commandstats")[f"cmdstat_{command}"]
    return {
        "per_s": jobs / elapsed,
        "client_us": 1e6 * cpu / jobs,
        "redis_us": int(stats["usec"]) / int(stats["calls"]),
    }


def measure(url: str, jobs: int, what: str) -> dict[str, float]:
    """One round of ``what`` (rpush, evalsha or schedule), with the spinach on sys.path."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    if what == "rpush":
        return timed(client, jobs, lambda: client.rpush("bench:raw", VALUE), "rpush")
    if what == "evalsha":
        push = client.register_script(PUSH_SCRIPT)
        push(keys=["bench:raw"], args=[VALUE])
        return timed(client, jobs, lambda: push(keys=["bench:raw"], args=[VALUE]), "evalsha")
    from spinach import Engine, RedisBroker

    broker = RedisBroker(redis.Redis.from_url(url))
    engine = Engine(broker, "bench-enqueue")
    engine.task(lambda: None, name="noop")
    for _ in range(200):  # warm up: scripts loaded, clock offset measured
        engine.schedule("noop")
    if what == "own":
        # Every script call answered at once: what Spinach itself costs.
        from spinach.brokers.redis import broker as broker_module

        if hasattr(broker_module, "evalsha"):  # sent on a pooled connection (direct.py)
            broker_module.evalsha = lambda *args: 1  # type: ignore[attr-defined]
        broker.redis.evalsha = lambda *args, **kwargs: 1  # type: ignore[method-assign]
        broker.redis._evalsha = broker.redis.evalsha  # type: ignore[attr-defined]
        started = time.process_time()
        for _ in range(jobs * 5):
            engine.schedule("noop")
        broker.close()
        return {"client_us": 1e6 * (time.process_time() - started) / (jobs * 5)}
    result = timed(client, jobs, lambda: engine.schedule("noop"), "evalsha")
    broker.flush()
    broker.close()
    return result


def run(package: str, url: str, jobs: int, what: str) -> dict[str, float]:
    result: dict[str, float] = measure_with(package, "enqueue_cost", url, jobs, what)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="also measure the Spinach of this checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    checkout = os.path.dirname(HERE)
    variants = {"RPUSH": (checkout, "rpush"), "EVALSHA": (checkout, "evalsha")}
    variants["schedule"] = (checkout, "schedule")
    variants["own"] = (checkout, "own")
    if args.base:
        variants["schedule (base)"] = (os.path.abspath(args.base), "schedule")
        variants["own (base)"] = (os.path.abspath(args.base), "own")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with redis_url() as url:
        for round_ in range(args.rounds):
            names = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in names:
                package, what = variants[name]
                results[name].append(run(package, url, args.jobs, what))
    print(f"one call per job, {args.jobs} calls, {args.rounds} rounds (medians):")
    medians = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in results.items()
    }
    for name, m in medians.items():
        if name.startswith("own"):
            continue
        print(
            f"  {name:16s} {m['per_s']:9,.0f}/s  client CPU {m['client_us']:5.1f} us  "
            f"Redis {m['redis_us']:5.1f} us per call"
        )
    for name in [n for n in medians if n.startswith("own")]:
        label = "Spinach's own CPU per schedule, Redis left out" + name[3:]
        print(f"  {label}: {medians[name]['client_us']:.1f} us")
    ratio = medians["schedule"]["per_s"] / medians["EVALSHA"]["per_s"]
    print(f"  schedule / EVALSHA round trip: {ratio:.2f} (target: 0.90 or more)")
    if args.base:
        base = medians["schedule"]["per_s"] / medians["schedule (base)"]["per_s"]
        print(f"  schedule, this checkout / base: {base:.3f}")


if __name__ == "__main__":
    main()
