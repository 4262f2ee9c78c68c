"""What the job lifecycle costs: draining with kept results, and Redis memory per kept job.

Drains no-op jobs as ``run.py``'s ``drain_threads_8`` does (the spinach
adapter's worker process with 8 threads, the clock running from its first
fetch to its queue being empty, polled from the producer side), for:

- ``no results``: jobs of a task keeping nothing (``echo(n)``, returning n);
- ``results``: the same function in a task with ``keep_result=timedelta(hours=1)``;
- ``base`` (with ``--base DIR``): ``no results`` on the Spinach imported from
  ``DIR`` (a checkout of the commit before the job lifecycle work).

Every drain is a process of its own (with ``PYTHONPATH`` set for ``base``),
on one throwaway redis-server; the variants take turns, ``--rounds`` times,
in an order reversed every other round, after one unmeasured warm-up drain
each. The table gives each variant's median (min to max), and the median of
the ratios of the drains of one round.

Then, on the same server, the ``used_memory`` that ``--memory-jobs`` jobs
leave once they all ran: kept results returning their number (a small int),
then a 1 KB string, and jobs failing for good (each a record in the failed
store, traceback included), net of what jobs keeping nothing leave.

Usage::

    .venv/bin/python benchmarks/lifecycle.py [--jobs 20000] [--rounds 3]
        [--memory-jobs 10000] [--base DIR] [--package-path DIR]

``--package-path DIR`` runs everything on the Spinach of ``DIR``; the
scenarios that keep results are left out when that Spinach has no
``keep_result``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTERS = os.path.join(HERE, "adapters")
QUEUE = "q"


def _import_path(package_path: str) -> None:
    """Import spinach from ``package_path`` (before the installed one), and the adapter."""
    if package_path:
        sys.path.insert(0, os.path.abspath(package_path))
    sys.path.insert(0, ADAPTERS)


def _env(package_path: str) -> dict[str, str]:
    env = dict(os.environ)
    if package_path:
        path = os.path.abspath(package_path)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    return env


def drain_one(url: str, task: str, jobs: int) -> dict[str, Any]:
    """One drain of ``jobs`` jobs of ``task`` (run in a process of its own)."""
    import redis
    import spinach_queue as adapter
    from _common import Worker, drain

    import spinach

    client = redis.Redis.from_url(url)
    broker = spinach.RedisBroker(redis.Redis.from_url(url))
    producer = adapter.engine(broker)
    broker.flush()
    server: dict[str, float] = {}

    def enqueue(count: int) -> None:
        adapter.batches(producer, task, count, numbered=True)
        client.config_resetstat()  # the server's figures cover the drain only
        cpu = client.info("cpu")
        server["cpu"] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    measured = drain(
        jobs,
        enqueue,
        lambda: Worker(adapter.worker_argv(url, "threads", 8)),
        lambda: adapter.ready_length(client, broker, QUEUE),
    )
    cpu = client.info("cpu")
    stats = client.info("commandstats")
    broker.flush()
    scripts = stats.get("cmdstat_evalsha", {})
    finished = max(1, int(measured["finished"]))
    redis_cpu = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]) - server["cpu"]
    measured.update(
        spinach=os.path.dirname(spinach.__file__),
        # Server CPU from the worker's start to its stop (a little more than the drain).
        redis_cpu_ms_per_job=round(1000 * redis_cpu / finished, 4),
        # Time spent running scripts (fetch and record_outcomes, heartbeats), per job.
        script_us_per_job=round(float(scripts.get("usec", 0)) / finished, 2),
        script_calls=int(scripts.get("calls", 0)),
    )
    return measured


def _run_drain(url: str, task: str, jobs: int, package_path: str) -> dict[str, Any]:
    argv = [sys.executable, os.path.abspath(__file__), "--drain-one", task, "--url", url]
    argv += ["--jobs", str(jobs)]
    if package_path:
        argv += ["--package-path", package_path]
    done = subprocess.run(
        argv, stdout=subprocess.PIPE, text=True, env=_env(package_path), timeout=600, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float], digits: int = 0) -> str:
    median = statistics.median(values)
    if digits:
        return f"{median:.{digits}f} ({min(values):.{digits}f} to {max(values):.{digits}f})"
    return f"{median:,.0f} ({min(values):,.0f} to {max(values):,.0f})"


def throughput(url: str, options: argparse.Namespace, keeps_results: bool) -> None:
    variants: list[tuple[str, str, str]] = []  # name, task, package path
    if options.base:
        variants.append(("base", "echo", options.base))
    variants.append(("no results", "echo", options.package_path))
    if keeps_results:
        variants.append(("results", "echo_kept", options.package_path))
    for name, task, path in variants:
        found = _run_drain(url, task, max(1000, options.jobs // 4), path)
        print(f"warm-up {name}: {found['jobs_per_s']:,.0f} jobs/s, spinach from {found['spinach']}")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    print()
    print(
        "| round | variant | jobs/s | worker CPU ms/job | Redis CPU ms/job | script µs/job "
        "| script calls |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for round_number in range(1, options.rounds + 1):
        order = variants if round_number % 2 else variants[::-1]
        for name, task, path in order:
            found = _run_drain(url, task, options.jobs, path)
            if found.get("timed_out"):
                print(f"warning: {name} timed out in round {round_number}", file=sys.stderr)
            runs[name].append(found)
            print(
                f"| {round_number} | {name} | {found['jobs_per_s']:,.0f} | "
                f"{found['cpu_ms_per_job']:.4f} | {found['redis_cpu_ms_per_job']:.4f} | "
                f"{found['script_us_per_job']:.1f} | {found['script_calls']:,} |",
                flush=True,
            )
    print()
    print(f"{options.jobs:,} jobs per drain, {options.rounds} rounds: median (min to max)")
    print()
    print("| variant | jobs/s | worker CPU ms/job | Redis CPU ms/job | script µs/job |")
    print("| --- | --- | --- | --- | --- |")
    for name, _, _ in variants:
        drains = runs[name]
        print(
            f"| {name} | {_spread([r['jobs_per_s'] for r in drains])} | "
            f"{_spread([r['cpu_ms_per_job'] for r in drains], 4)} | "
            f"{_spread([r['redis_cpu_ms_per_job'] for r in drains], 4)} | "
            f"{_spread([r['script_us_per_job'] for r in drains], 1)} |"
        )
    print()

    def ratio(a: str, b: str, target: str) -> None:
        if a not in runs or b not in runs:
            return
        pairs = [x["jobs_per_s"] / y["jobs_per_s"] for x, y in zip(runs[a], runs[b])]
        medians = statistics.median(r["jobs_per_s"] for r in runs[a]) / statistics.median(
            r["jobs_per_s"] for r in runs[b]
        )
        print(
            f"{a} / {b}: {statistics.median(pairs):.3f} median of the rounds' ratios "
            f"({min(pairs):.3f} to {max(pairs):.3f}), {medians:.3f} of the medians; target {target}"
        )

    ratio("no results", "base", ">= 0.95")
    ratio("results", "no results", ">= 0.60")


def engine_side(url: str) -> None:
    """The engine's own cost of keeping a result, per job, timed in this process.

    Python only, no Redis call: a fetch's worth of jobs (72), each settled as
    the worker thread does after its run (``keep_result``: the JSON check and
    text of the value; ``settle``), then the arguments of the record_outcomes
    script (``_record_arguments``, which builds each outcome with
    ``outcome_of``) and their encoding by redis-py (``pack_command``).
    """
    import timeit
    from datetime import datetime, timezone

    import redis
    import spinach_queue as adapter
    from redis.connection import Connection

    from spinach import RedisBroker
    from spinach._ended import outcome_of
    from spinach._outcome import keep_result, settle
    from spinach.brokers.redis.broker import _outcome_kinds
    from spinach.job import JobStatus

    broker = RedisBroker(redis.Redis.from_url(url), sync_clock=False)
    producer = adapter.engine(broker)
    now = datetime.now(timezone.utc)
    per_fetch = 72
    connection = Connection()

    def micros(call: Any, jobs: int = 1) -> float:
        number = 2000
        return 1e6 * timeit.timeit(call, number=number) / number / jobs

    def row(label: str, task: str, keep: float | None) -> str:
        jobs = [producer._build_job(task, None, (i,), {}, now) for i in range(per_fetch)]
        for job in jobs:
            # As the engine hands it to a worker thread, and as that thread ends it.
            job.keep_result, job.status, job.handout_token = keep, JobStatus.RUNNING, "w:1"
            keep_result(job, 5)
            settle(adapter.NS, job, 0.001, None, now)
        kinds = _outcome_kinds(jobs, [False] * per_fetch)
        keys, args = broker._record_arguments(jobs, kinds)

        def pack() -> Any:
            return connection.pack_command("EVALSHA", "0" * 40, len(keys), *keys, *args)

        sent = sum(len(part) for part in pack()) / per_fetch
        return (
            f"| {label} | {micros(lambda: keep_result(jobs[0], 5)):.1f} | "
            f"{micros(lambda: outcome_of(jobs[0])):.1f} | "
            f"{micros(lambda: broker._record_arguments(jobs, kinds), per_fetch):.1f} | "
            f"{micros(pack, per_fetch):.1f} | {sent:.0f} |"
        )

    print()
    print("Engine side, per job, in this process (µs; no Redis call)")
    print()
    print("| | keep_result | outcome_of | script arguments | their encoding | bytes sent |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(row("no results", "echo", None))
    print(row("results", "echo_kept", adapter.KEPT_FOR.total_seconds()))
    broker.redis.close()


def memory(url: str, options: argparse.Namespace) -> None:
    import spinach_queue as adapter

    count = options.memory_jobs
    adapter.left_in_redis(url, "echo", 1000)  # a warm-up: the server's first allocations
    baseline = adapter.left_in_redis(url, "echo", count)
    print()
    print(
        f"Redis memory left by {count:,} jobs once they all ran "
        "(used_memory growth, less the clients' buffers)"
    )
    print()
    print(
        "| jobs | records | left in Redis | per job, net | MEMORY USAGE per record | record size |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| keeping nothing | 0 | {baseline['bytes']:,} B | - | - | - |")
    for label, task in (
        ("keeping a small int", "echo_kept"),
        ("keeping a 1 KB string", "kilobyte_kept"),
        ("failed for good", "fail"),
    ):
        found = adapter.memory_per_record(url, task, count, baseline)
        note = f", {found['dropped']:,} dropped" if found["dropped"] else ""
        print(
            f"| {label} | {found['records']:,}{note} | {found['bytes']:,} B | "
            f"{found['bytes_per_job']:,.0f} B | {found['usage_bytes']:,.0f} B | "
            f"{found['record_bytes']:,.0f} B |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain")
    parser.add_argument("--rounds", type=int, default=3, help="drains of each variant")
    parser.add_argument(
        "--memory-jobs",
        type=int,
        default=10_000,
        help="jobs per memory measurement (at most 10,000: the failed store's default bound)",
    )
    parser.add_argument("--base", default="", help="also drain with the Spinach of this checkout")
    parser.add_argument("--package-path", default="", help="import spinach from this checkout")
    parser.add_argument("--no-memory", action="store_true", help="throughput only")
    parser.add_argument("--drain-one", default="", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    options = parser.parse_args()
    _import_path(options.package_path)
    if options.drain_one:
        print(json.dumps(drain_one(options.url, options.drain_one, options.jobs)))
        return
    if options.memory_jobs > 10_000:
        parser.error("--memory-jobs: at most 10,000 (the failed store's default bound)")
    import spinach_queue as adapter
    from _server import redis_url

    import spinach

    print(f"spinach from {os.path.dirname(spinach.__file__)}")
    if options.base:
        print(f"base: spinach from {os.path.abspath(options.base)}")
    if not adapter.KEEPS_RESULTS:
        print("this Spinach keeps no results: only the drain keeping nothing runs")
    with redis_url() as url:
        throughput(url, options, adapter.KEEPS_RESULTS)
        if adapter.KEEPS_RESULTS:
            engine_side(url)
        if adapter.KEEPS_RESULTS and not options.no_memory:
            memory(url, options)


if __name__ == "__main__":
    main()
