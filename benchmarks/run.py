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
from latency_proxy import DelayProxy

from spinach.testing.redis_server import RedisServer

HERE = os.path.dirname(os.path.abspath(__file__))
VENVS = os.path.join(HERE, ".venvs")
RESULTS = os.path.join(HERE, "results")
# name: (adapter, pip requirements); "spinach" is this project, run from its own interpreter.
QUEUES: dict[str, tuple[str, list[str]]] = {
    "spinach": ("spinach_queue.py", []),
    "spinach-0.0.25": ("spinach_queue.py", ["spinach==0.0.25", "redis==8.1.0"]),
    "dramatiq": ("dramatiq_queue.py", ["dramatiq[redis]==2.2.1", "redis==8.1.0"]),
    "huey": ("huey_queue.py", ["huey==3.5.4", "redis==8.1.0"]),
    "rq": ("rq_queue.py", ["rq==3.0.0", "redis==8.1.0"]),
    # Not a queue: plain RPUSH round trips, the floor of enqueueing and latency.
    "redis-py": ("raw_redis.py", []),
}


def python_for(name: str) -> str:
    """The interpreter of ``name``'s virtualenv, created and installed on first use."""
    requirements = QUEUES[name][1]
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


def figure(result: dict[str, Any], key: str) -> float | None:
    """The headline number of one scenario (jobs/s, ms or bytes), None if not measured."""
    value = result.get(key)
    if isinstance(value, dict):
        for field in ("jobs_per_s", "p99_ms", "median_ms", "fetch_median_ms"):
            if field in value:
                return float(value[field])
        return None
    return float(value) if isinstance(value, (int, float)) else None


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(scenario key, label) in display order, for every key some queue measured."""
    keys: list[str] = []
    for result in results.values():
        keys += [k for k in result if k not in ("queue", "version", "error") and k not in keys]
    ordered = [k for k in keys if not k.startswith("memory:")]
    ordered += [k for k in keys if k.startswith("memory:")]
    out = []
    for key in ordered:
        unit = "jobs/s"
        if "latency" in key:
            unit = "ms p99 (median)"
        elif key == "memory_per_job":
            unit = "bytes/job"
        elif key.startswith("blocked_fetch"):
            unit = "ms median (p99)"
        out.append((key, f"{key} ({unit})"))
        if key.startswith(("drain", "memory:drain")):
            out.append((f"{key}#cpu", f"{key} (CPU ms/job)"))
    return out


def cell(result: dict[str, Any], key: str) -> str:
    if key.endswith("#cpu"):
        value = result.get(key[:-4])
        if isinstance(value, dict) and "cpu_ms_per_job" in value:
            return f"{value['cpu_ms_per_job']:.3f}"
        return "-"
    value = result.get(key)
    if isinstance(value, dict):
        if "error" in value:
            return "error"
        if "p99_ms" in value:
            return f"{value['p99_ms']:.2f} ({value['median_ms']:.2f})"
        if "fetch_median_ms" in value:
            return f"{value['fetch_median_ms']:.3f} ({value['fetch_p99_ms']:.3f})"
        text = f"{value['jobs_per_s']:,.0f}"
        return text + (" (timed out)" if value.get("timed_out") else "")
    if isinstance(value, (int, float)):
        return f"{value:,.0f}"
    return "-"


def ratio(ours: float | None, theirs: float | None, key: str) -> str:
    if not ours or not theirs:
        return "-"
    lower_is_better = "latency" in key or "memory_per_job" in key or key.endswith("#cpu")
    return f"{(theirs / ours if lower_is_better else ours / theirs):.2f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table; ratio columns: this project over each other queue (>1: we do better)."""
    names = list(results)
    others = [n for n in names if n != "spinach"]
    header = ["scenario", *names] + ([f"x vs {n}" for n in others] if "spinach" in results else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label in rows(results):
        cells = [cell(results[n], key) for n in names]
        if "spinach" in results:
            for other in others:
                if key.endswith("#cpu"):
                    ours = results["spinach"].get(key[:-4], {})
                    theirs = results[other].get(key[:-4], {})
                    a = ours.get("cpu_ms_per_job") if isinstance(ours, dict) else None
                    b = theirs.get("cpu_ms_per_job") if isinstance(theirs, dict) else None
                else:
                    a, b = figure(results["spinach"], key), figure(results[other], key)
                cells.append(ratio(a, b, key))
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def chart(path: str, results: dict[str, dict[str, Any]]) -> str:
    """A PNG bar chart of drain throughput per queue; its path ("" if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return ""
    scenarios = [
        k for k, _ in rows(results) if k.startswith(("enqueue", "drain")) and not k.endswith("#cpu")
    ]
    names = list(results)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(12, 5))
    for i, name in enumerate(names):
        values = [figure(results[name], k) or 0 for k in scenarios]
        ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(scenarios))])
    ax.set_xticklabels(scenarios, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("jobs per second (Redis, one worker process)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Throughput per queue")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


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
        "latency_samples": 50 if args.quick else 220,
        "concurrency": "1,8" if args.quick else "1,8,32",
    }
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
                    results[name][f"blocked_fetch_{blocked}"] = measure_blocked_fetch(
                        server.url, blocked, 100 if args.quick else 300, quiet=True
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
    text = table(results)
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write(text + "\n")
    png = chart(os.path.join(RESULTS, "throughput.png"), results)
    print(json.dumps(meta, indent=2))
    print(text)
    print(f"wrote {os.path.join(RESULTS, 'latest.json')}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
