"""The key-space checks of ``spinach doctor``: the namespaces, their workers and failed jobs.

They put together the keys of every server of the target; the keys of one
namespace are on the server that :func:`locate` names (on a cluster, the
master of the namespace's hash slot).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ._doctor_report import Check, Server
from .brokers.redis.keys import Keys

if TYPE_CHECKING:
    from redis.client import Pipeline

__all__ = ["check_failed_jobs", "check_namespaces", "check_workers"]

_FIX_WORKERS = (
    "start workers for the namespace (engine.start_workers) under systemd, supervisord "
    "or an orchestrator"
)
_FIX_FAILED = (
    "failed jobs were dropped to keep the store within max_failed: look at "
    "engine.failed_jobs(), requeue or purge them (engine.requeue_failed(), "
    "engine.purge_failed()), or raise Engine(max_failed=...); the count can be reset "
    "with `DEL spinach:{ns}:failed_dropped`"
)
_FIX_UNSERVED = "bring back a master for the namespace's hash slot (see the `cluster` check)"


def _read(
    namespaces: list[str],
    locate: Callable[[str], Server | None],
    queue: Callable[[Pipeline, Keys], object],
) -> dict[str, tuple[Server, list[Any]]]:
    """Run the commands ``queue`` adds for each namespace, on the server holding
    its keys, one pipeline per server; the server and replies by namespace.

    A namespace that no server serves is left out.
    """
    groups: dict[str | None, tuple[Server, list[str]]] = {}
    for namespace in namespaces:
        # Every key of a namespace is in the slot of its hash tag: any one locates them all.
        server = locate(Keys.of(namespace).workers)
        if server is not None:
            groups.setdefault(server.node, (server, []))[1].append(namespace)
    read: dict[str, tuple[Server, list[Any]]] = {}
    for server, names in groups.values():
        pipe = server.client.pipeline(transaction=False)
        counts = []
        for namespace in names:
            before = len(pipe)
            queue(pipe, Keys.of(namespace))
            counts.append(len(pipe) - before)
        replies = pipe.execute()
        start = 0
        for namespace, count in zip(names, counts):
            read[namespace] = (server, replies[start : start + count])
            start += count
    return read


def check_namespaces(
    found: dict[str, dict[str | None, int]], namespace: str | None, several: bool
) -> Check:
    """List the namespaces ``found``: key counts by namespace, then by node.

    With ``several`` servers, each namespace names the nodes holding its keys.
    """
    name = "namespaces"
    keys = {ns: sum(by_node.values()) for ns, by_node in found.items()}

    def on(ns: str) -> str:
        return f" on {', '.join(str(node) for node in found[ns])}" if several else ""

    if namespace is None:
        if not found:
            where = "on any master" if several else "in this database"
            return Check(name, "pass", f"no Spinach namespace {where}")
        listed = ", ".join(f"{ns!r} ({keys[ns]} keys{on(ns)})" for ns in sorted(found))
        return Check(name, "pass", f"{len(found)} namespace(s): {listed}")
    others = sorted(ns for ns in found if ns != namespace)
    own = (
        f"namespace {namespace!r} holds {keys[namespace]} key(s){on(namespace)}"
        if namespace in found
        else f"namespace {namespace!r} holds no key yet"
    )
    shared = f"shared with {', '.join(map(repr, others))}" if others else "no other namespace"
    return Check(name, "pass", f"{own}; {shared}")


def check_workers(
    namespaces: list[str],
    locate: Callable[[str], Server | None],
    server_times: dict[str | None, float],
    timeout: float,
    one_namespace: bool,
    several: bool,
) -> Check:
    """Count the live workers of each namespace, on the server that holds its keys.

    Args:
        locate: the server holding a key; None when no server serves it.
        server_times: the time of each server, by node.
        several: whether the target has several servers, to name them.
    """
    name = "workers"
    if not namespaces:
        return Check(name, "warn", "no Spinach namespace, so no live worker", _FIX_WORKERS)
    beats = {
        namespace: (server, [float(score) for _, score in reply])
        for namespace, (server, (reply,)) in _read(
            namespaces, locate, lambda pipe, keys: pipe.zrange(keys.workers, 0, -1, withscores=True)
        ).items()
    }
    idle = []
    parts = []
    for namespace in namespaces:
        if namespace not in beats:
            parts.append(f"{namespace!r}: no master serves its hash slot, so no live worker")
            idle.append(namespace)
            continue
        server, scores = beats[namespace]
        now = server_times[server.node]
        live = sum(score >= now - timeout for score in scores)
        where = f" on {server.node}" if several else ""
        part = f"{namespace!r}{where}: {live} live worker process(es)"
        if len(scores) > live:
            part += f", {len(scores) - live} silent (the oldest for {now - min(scores):.0f} s)"
        parts.append(part)
        if not live:
            idle.append(namespace)
    detail = f"{'; '.join(parts)} (live: a heartbeat in the last {timeout:g} s)"
    if idle:
        who = "this namespace has" if one_namespace else f"{len(idle)} namespace(s) have"
        return Check(name, "warn", f"{who} no live worker: {detail}", _FIX_WORKERS)
    return Check(name, "pass", detail)


def _age(seconds: float) -> str:
    """A duration in its largest unit that gives at least 2, rounded down: ``"90 s"``,
    ``"3 min"``, ``"5 h"``, ``"2 d"``."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"


def check_failed_jobs(
    namespaces: list[str],
    locate: Callable[[str], Server | None],
    server_times: dict[str | None, float],
    one_namespace: bool,
    several: bool,
) -> Check:
    """Count the jobs of each namespace's failed store, and those dropped from it.

    Args:
        locate: the server holding a key; None when no server serves it.
        server_times: the time of each server, by node.
        several: whether the target has several servers, to name them.
    """
    name = "failed-jobs"
    if not namespaces:
        return Check(name, "pass", "no Spinach namespace, so no failed job")

    def read(pipe: Pipeline, keys: Keys) -> None:
        pipe.zcard(keys.failed_index)
        pipe.zrange(keys.failed_index, 0, 0, withscores=True)
        pipe.get(keys.failed_dropped)

    stores: dict[str, tuple[Server, int, float | None, int]] = {}
    for namespace, (server, (count, oldest, dropped)) in _read(namespaces, locate, read).items():
        first = float(oldest[0][1]) if oldest else None
        stores[namespace] = (server, int(count), first, int(dropped or 0))
    unserved = []
    dropping = []
    kept = 0
    parts = []
    for namespace in namespaces:
        if namespace not in stores:
            parts.append(
                f"{namespace!r}: no master serves its hash slot, so its failed store cannot be read"
            )
            unserved.append(namespace)
            continue
        server, count, first, dropped = stores[namespace]
        where = f" on {server.node}" if several else ""
        if not count and not dropped:
            parts.append(f"{namespace!r}{where}: no failed job")
            continue
        part = f"{namespace!r}{where}: {count} failed job(s)"
        if dropped:
            part += " kept"
        if first is not None:
            part += f" (the oldest failed {_age(server_times[server.node] - first)} ago)"
        if dropped:
            part += f", {dropped} dropped"
            dropping.append(namespace)
        parts.append(part)
        kept += count
    detail = "; ".join(parts)
    if dropping:
        who = "this namespace has" if one_namespace else f"{len(dropping)} namespace(s) have"
        return Check(name, "warn", f"{who} dropped failed jobs: {detail}", _FIX_FAILED)
    if unserved:
        return Check(name, "unknown", detail, _FIX_UNSERVED)
    if kept:
        detail += (
            "; none dropped: see them with engine.failed_jobs(), run them again with "
            "engine.requeue_failed()"
        )
    return Check(name, "pass", detail)
