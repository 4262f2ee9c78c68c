"""The table and the chart of a benchmark run, from its results.

Only the standard library, and matplotlib for the chart:

    python benchmarks/report.py chart results/latest.json results/throughput.png

draws the chart of a run (``benchmarks/run.py`` does it itself, in a
virtualenv of its own when its interpreter has no matplotlib).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def figure(result: dict[str, Any], key: str) -> float | None:
    """The headline number of one scenario (jobs/s, ms or bytes), None if not measured."""
    value = result.get(key)
    if isinstance(value, dict):
        for field in ("jobs_per_s", "p99_ms", "median_ms", "fetch_median_ms", "bytes_per_job"):
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
            unit = "ms p99 (median), from the return"
        elif key in ("memory_per_job", "memory_per_future_job"):
            unit = "bytes/job"
        elif key.startswith("memory_per_"):
            unit = "bytes each (record bytes)"
        elif key.startswith(("blocked_fetch", "rate_fetch")):
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
        if "call_p99_ms" in value:
            return (
                f"{value['p99_ms']:.2f} ({value['median_ms']:.2f}); from the call "
                f"{value['call_p99_ms']:.2f} ({value['call_median_ms']:.2f})"
            )
        if "p99_ms" in value:
            return f"{value['p99_ms']:.2f} ({value['median_ms']:.2f})"
        if "fetch_median_ms" in value:
            return f"{value['fetch_median_ms']:.3f} ({value['fetch_p99_ms']:.3f})"
        if "bytes_per_job" in value:
            return f"{value['bytes_per_job']:,.0f} ({value['record_bytes']:,.0f})"
        text = f"{value['jobs_per_s']:,.0f}"
        return text + (" (timed out)" if value.get("timed_out") else "")
    if isinstance(value, (int, float)):
        return f"{value:,.0f}"
    return "-"


def ratio(ours: float | None, theirs: float | None, key: str) -> str:
    if not ours or not theirs:
        return "-"
    lower_is_better = "latency" in key or key.startswith("memory_per") or key.endswith("#cpu")
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


def _value(results: dict[str, dict[str, Any]], queue: str, key: str, field: str) -> float | None:
    value = results.get(queue, {}).get(key)
    if isinstance(value, dict) and isinstance(value.get(field), (int, float)):
        return float(value[field])
    return float(value) if isinstance(value, (int, float)) and field == "" else None


#: The targets of the performance issue: (what, numerator, denominator, bound, at most).
#: A figure is (queue, scenario, field); field "" for a plain number.
TARGETS: list[tuple[str, tuple[str, str, str], tuple[str, str, str], float, bool]] = [
    (
        "enqueue one by one, vs Huey",
        ("spinach", "enqueue_one", ""),
        ("huey", "enqueue_one", ""),
        1.0,
        False,
    ),
    (
        "enqueue one by one, vs a raw EVALSHA round trip",
        ("spinach", "enqueue_one", ""),
        ("redis-py", "enqueue_one_evalsha", ""),
        0.9,
        False,
    ),
    (
        "latency p50, vs Huey's",
        ("spinach", "latency", "median_ms"),
        ("huey", "latency", "median_ms"),
        1.0,
        True,
    ),
    (
        "latency p99, vs Huey's",
        ("spinach", "latency", "p99_ms"),
        ("huey", "latency", "p99_ms"),
        1.0,
        True,
    ),
    (
        "latency p50, vs an RPUSH to BLPOP round trip",
        ("spinach", "latency", "median_ms"),
        ("redis-py", "latency", "call_median_ms"),
        3.0,
        True,
    ),
    (
        "drain (threads 8), vs the bare batched loop",
        ("spinach", "drain_threads_8", "jobs_per_s"),
        ("redis-py", "drain_batched_loop", "jobs_per_s"),
        0.5,
        False,
    ),
    (
        "drain asyncio 8, vs threads 8",
        ("spinach", "drain_asyncio_8", "jobs_per_s"),
        ("spinach", "drain_threads_8", "jobs_per_s"),
        0.9,
        False,
    ),
    (
        "memory per queued job, vs Huey's",
        ("spinach", "memory_per_job", ""),
        ("huey", "memory_per_job", ""),
        1.0,
        True,
    ),
    (
        "memory per future job, vs per queued job",
        ("spinach", "memory_per_future_job", ""),
        ("spinach", "memory_per_job", ""),
        1.0,
        True,
    ),
    (
        "drain with 2 ms more round trip, vs without",
        ("spinach", "drain_proxy_threads_8", "jobs_per_s"),
        ("spinach", "drain_threads_8", "jobs_per_s"),
        0.6,
        False,
    ),
]


def targets(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table of each target's ratio in this run, and whether it is met."""
    lines = ["| target | figures | ratio | bound | met |", "|---|---|---|---|---|"]
    for what, top, bottom, bound, at_most in TARGETS:
        a, b = _value(results, *top), _value(results, *bottom)
        if a is None or b is None:
            lines.append(f"| {what} | not measured | - | - | - |")
            continue
        if b <= 0:  # a latency counted from the return: the job may start before it
            lines.append(f"| {what} | {a:,.2f} / {b:,.2f} | not comparable | - | - |")
            continue
        ratio_ = a / b
        met = ratio_ <= bound if at_most else ratio_ >= bound
        sign = "<=" if at_most else ">="
        lines.append(
            f"| {what} | {a:,.2f} / {b:,.2f} | {ratio_:.2f} | {sign} {bound} | "
            f"{'yes' if met else 'no'} |"
        )
    return "\n".join(lines)


def chart(path: str, results: dict[str, dict[str, Any]]) -> None:
    """Draw a PNG bar chart of the throughput per queue (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


if __name__ == "__main__":
    if sys.argv[1:2] != ["chart"] or len(sys.argv) != 4:
        sys.exit("usage: report.py chart RESULTS.json OUTPUT.png")
    with open(sys.argv[2]) as f:
        chart(sys.argv[3], json.load(f)["results"])
