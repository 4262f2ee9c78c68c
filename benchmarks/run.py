"""Run every benchmark, print a table, write results/latest.json and results/throughput.png.

    .venv/bin/python benchmarks/run.py [--jobs N] [--only spinach,...] [--quick]

Starts a throwaway redis-server on a free loopback port and a 2 ms round-trip
delay proxy in front of it; creates one virtualenv per other queue under
benchmarks/.venvs/ (pinned versions, from the package registry) and runs each
queue's adapter (benchmarks/adapters/) inside it, one after the other.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Any

import redis
from blocked_fetch import measure as measure_blocked_fetch
from report import table, targets

from spinach.testing.delay_proxy import DelayProxy
from spinach.testing.redis_server import RedisServer

HERE = os.path.dirname(os.path.abspath(__file__))
VENVS = os.path.join(HERE, ".venvs")
RESULTS = os.path.join(HERE, "results")
# name: (adapter, pip requirements); "spinach" is this project, run from its own interpreter.
QUEUES: dict[str, tuple[str, list[str]]] = {
    "spinach": ("spinach_queue.py", []),
    "spinach-0.0.25": ("spinach_queue.py", ["spinach==0.0.25", "redis==8.1.0", "hiredis"]),
    "dramatiq": ("dramatiq_queue.py", ["dramatiq[redis]==2.2.1", "redis==8.1.0", "hiredis"]),
    "huey": ("huey_queue.py", ["huey==3.5.4", "redis==8.1.0", "hiredis"]),
    "rq": ("rq_queue.py", ["rq==3.0.0", "redis==8.1.0", "hiredis"]),
    # Not a queue: plain RPUSH round trips, the floor of enqueueing and latency.
    "redis-py": ("raw_redis.py", []),
}
#: Virtualenvs that are not queues: the chart's, when this interpreter has no matplotlib.
TOOLS: dict[str, list[str]] = {"chart": ["matplotlib==3.11.2"]}


def python_for(name: str) -> str:
    """The interpreter of ``name``'s virtualenv, created and installed on first use."""
    requirements = TOOLS[name] if name in TOOLS else QUEUES[name][1]
    if not requirements:
        return sys.executable
    venv = os.path.join(VENVS, name)
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, "requirements.txt")
    wanted = "\n".join(requirements)
    if os.path.exists(marker):
        with open(marker) as f:
            if f.read() == wanted:
                return python
    print(f"installing {' '.join(requirements)} into {venv}", file=sys.stderr, flush=True)
    subprocess.run(["python3", "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *requirements], check=True)
    with open(marker, "w") as f:
        f.write(wanted)
    return python


def run_adapter(name: str, url: str, proxy_url: str, settings: dict[str, Any]) -> dict[str, Any]:
    adapter = os.path.join(HERE, "adapters", QUEUES[name][0])
    argv = [python_for(name), adapter, "bench", "--url", url, "--proxy-url", proxy_url]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    print(f"== {name}", file=sys.stderr, flush=True)
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=3600, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return {"queue": name, "error": f"adapter exited with {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["queue"] = name
    return result


def draw_chart(results_json: str, png: str) -> str:
    """Draw the chart of a run; its path, or "" if matplotlib could not be had."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        python = python_for("chart")
    else:
        python = sys.executable
    script = os.path.join(HERE, "report.py")
    done = subprocess.run([python, script, "chart", results_json, png], check=False)
    return png if done.returncode == 0 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per throughput scenario")
    parser.add_argument("--only", default="", help="comma-separated queues: " + ",".join(QUEUES))
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(QUEUES)
    if unknown := set(names) - set(QUEUES):
        parser.error(f"unknown queues: {', '.join(sorted(unknown))}")
    jobs = min(args.jobs, 2000) if args.quick else args.jobs
    settings = {
        "jobs": jobs,
        "proxy_jobs": min(jobs, 300 if args.quick else 2000),
        "memory_jobs": 10_000 if args.quick else 100_000,
        "latency_samples": 50 if args.quick else 1000,
        "concurrency": "1,8" if args.quick else "1,8,32",
    }
    try:
        import hiredis  # noqa: F401
    except ImportError:
        print(
            "warning: hiredis is not installed here, unlike in the other queues' virtualenvs: "
            "install it with `pip install --group bench` for comparable figures",
            file=sys.stderr,
        )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as directory, RedisServer(directory) as server:
        client = redis.Redis.from_url(server.url)
        redis_version = client.info("server")["redis_version"]
        with DelayProxy(server.port, delay=0.001) as proxy:
            for name in names:
                client.flushall()
                results[name] = run_adapter(name, server.url, proxy.url, settings)
                if name == "spinach":
                    client.flushall()
                    blocked = 10_000 if args.quick else 100_000
                    print("  blocked fetch...", file=sys.stderr, flush=True)
                    for limit, row in (("concurrency", "blocked_fetch"), ("rate", "rate_fetch")):
                        client.flushall()
                        results[name][f"{row}_{blocked}"] = measure_blocked_fetch(
                            server.url, blocked, 100 if args.quick else 300, True, limit
                        )
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.platform()}",
        "python": platform.python_version(),
        "redis_server": redis_version,
        "settings": settings,
        "quick": args.quick,
        "versions": {n: r.get("version", "?") for n, r in results.items()},
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "latest.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    text = table(results) + "\n\n" + targets(results)
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write(text + "\n")
    png = draw_chart(os.path.join(RESULTS, "latest.json"), os.path.join(RESULTS, "throughput.png"))
    print(json.dumps(meta, indent=2))
    print(text)
    print(f"wrote {os.path.join(RESULTS, 'latest.json')}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
