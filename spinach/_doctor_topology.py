"""The checks of ``spinach doctor`` that describe a deployment: a Redis Cluster's
masters, a Sentinel service's sentinels and replicas.

They run besides the checks of each server (:mod:`spinach._doctor_checks`),
and give ``info`` lines, or warnings when the deployment itself is at risk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis

from ._doctor_report import Check, Server, _text

__all__ = ["check_cluster", "check_sentinel", "poll_sentinels"]


def check_cluster(masters: Sequence[Server], replicas: int) -> Check:
    """Describe a Redis Cluster; warn when a master says that its state is not ok."""
    name = "cluster"
    nodes = ", ".join(str(m.node) for m in masters)
    detail = (
        f"Redis Cluster of {len(masters)} master(s) ({nodes}) and {replicas} replica(s): "
        "each check of a server runs on every master"
    )
    states = {}
    for master in masters:
        try:
            # redis-py leaves execute_command unannotated.
            info = master.client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call,unused-ignore]
        except redis.ResponseError:
            continue  # an ACL without CLUSTER: the other checks still run
        if isinstance(info, dict):
            states[master.node] = _text(info.get("cluster_state", "unknown"))
    bad = {node: state for node, state in states.items() if state != "ok"}
    if bad:
        said = ", ".join(f"{state} on {node}" for node, state in bad.items())
        return Check(
            name,
            "warn",
            f"cluster_state is {said}: some hash slots have no live master, and the "
            f"namespaces in them can neither take nor hand out jobs ({detail})",
            "find the failed nodes with `redis-cli --cluster check HOST:PORT` and bring them "
            "back, or fail their slots over to a replica",
        )
    return Check(name, "info", detail)


def _address(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def poll_sentinels(
    sentinels: Sequence[redis.Redis], service: str
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Ask each sentinel about ``service``: the ``SENTINEL MASTER`` replies by
    sentinel address, and why the other sentinels gave none."""
    states: dict[str, dict[str, Any]] = {}
    silent: dict[str, str] = {}
    for sentinel in sentinels:
        try:
            states[_address(sentinel)] = cast(dict[str, Any], sentinel.sentinel_master(service))
        except redis.RedisError as e:
            silent[_address(sentinel)] = str(e).rstrip(".") or type(e).__name__
    return states, silent


def _replicas(sentinels: Sequence[redis.Redis], service: str) -> tuple[int, int] | None:
    """How many replicas the sentinels know of the service's master, and how many
    of them are down or out of sync; None if no sentinel says."""
    for sentinel in sentinels:
        try:
            replicas = sentinel.sentinel_slaves(service)
        except redis.RedisError:
            continue
        down = sum(
            bool(r.get("is_sdown") or r.get("is_odown") or r.get("is_disconnected"))
            or _text(r.get("master-link-status", "ok")) != "ok"
            for r in replicas
        )
        return len(replicas), down
    return None


def check_sentinel(sentinels: Sequence[redis.Redis], service: str, master: str) -> Check:
    """Count the sentinels that answer for ``service`` and the replicas of its master.

    Warns below 3 answering sentinels (no majority survives the loss of a
    host), when the sentinels name different masters, and without a replica.
    """
    name = "sentinel"
    states, silent = poll_sentinels(sentinels, service)
    known = max((int(s.get("num-other-sentinels", 0)) + 1 for s in states.values()), default=0)
    quorum = next((s.get("quorum") for s in states.values()), None)
    detail = (
        f"service {service!r}, master {master}: {len(states)} of the {len(sentinels)} "
        f"sentinel(s) of the target answered (they know {known} in all, quorum {quorum})"
    )
    replicas = _replicas([c for c in sentinels if _address(c) in states], service)
    if replicas is None:
        detail += "; no sentinel listed the master's replicas"
    else:
        detail += f"; the master has {replicas[0]} replica(s)"
        if replicas[1]:
            detail += f", {replicas[1]} of them down or out of sync"
    problems, fixes = [], []
    if silent:
        problems.append(
            "sentinel(s) "
            + ", ".join(f"{where} ({why})" for where, why in silent.items())
            + " did not answer"
        )
        fixes.append(
            "bring back the sentinels that did not answer (or drop them from the URL), "
            "and check the sentinels' password (?sentinel_password=...)"
        )
    if len(states) < 3:
        problems.append("fewer than 3 sentinels answered")
        if known < 3:
            fixes.append(
                "run at least 3 sentinels, on hosts that fail independently, and list them "
                "all in the URL: with fewer, the loss of one host can leave no majority to "
                "promote a replica"
            )
        elif len(sentinels) < known:
            fixes.append(
                f"list every sentinel in the URL (they know {known}), so that the client "
                "finds the master while one of them is down"
            )
        # Otherwise the silent sentinels are the cause, and their fix is given above.
    named = {f"{_text(s.get('ip'))}:{s.get('port')}" for s in states.values()}
    if len(named) > 1:
        problems.append(f"the sentinels name different masters ({', '.join(sorted(named))})")
        fixes.append(
            "run the doctor again once the failover is over; if they still disagree, check "
            "that the sentinels reach each other and the master"
        )
    if replicas is not None and replicas[0] == 0:
        problems.append("the master has no replica, so a failover has nothing to promote")
        fixes.append("add a replica (`replicaof <master host> <port>`) for the sentinels to watch")
    if problems:
        return Check(name, "warn", "; ".join([detail, *problems]), "; ".join(fixes))
    return Check(name, "info", detail)
