"""The checks of ``spinach doctor`` against live Redis servers.

Each check reads a server with plain redis-py calls (INFO, CONFIG GET, TIME,
SCAN, TTL, ZRANGE, ZCARD, GET) and returns a :class:`~spinach.doctor.Check`. A
command the server refuses (a restricted ACL user, a managed Redis that renames
CONFIG) makes its check ``unknown``, saying why; a lost connection propagates.

:func:`run_checks` takes the :class:`Server` list of the target: one server,
the current master of a Sentinel service, or every master of a Redis Cluster.
The checks of a server run on each one and name its node; the key-space
checks put the keys of every server together.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import attrs
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._doctor_keyspace import (
    _FIX_WORKERS,
    check_failed_jobs,
    check_namespaces,
    check_workers,
)
from ._doctor_report import Check, Server, Status, _refused, _text
from .brokers.redis.keys import Keys

if TYPE_CHECKING:
    from .clock import Clock

__all__ = ["SCAN_LIMIT", "Check", "Server", "Status", "run_checks"]

#: Most keys SCAN reads on each server, so that the doctor stays cheap on a big one.
SCAN_LIMIT = 10_000
_SCAN_COUNT = 1_000
_MIN_VERSION = (6, 2)
_MAX_CLOCK_OFFSET = 1.0
_MIN_PASSWORD_LENGTH = 16
_EXAMPLES = 3

_FIX_PERSISTENCE = (
    "set `appendonly yes` and `appendfsync everysec` in redis.conf "
    "(or `always`, at the cost of a disk sync per write)"
)
_FIX_EVICTION = "set `maxmemory-policy noeviction` in redis.conf, with enough memory for the jobs"
_FIX_AUTH = (
    "require a password: `requirepass <long random password>` in redis.conf (or an ACL user "
    "with one, and `ACL SETUSER default off`), and put it in the URL"
)
_FIX_DEDICATED = "give Spinach a Redis server of its own; keep caches and other data elsewhere"
_FIX_FAILED_UNREAD = "allow this user `ZCARD`, `ZRANGE` and `GET` on the keys of the namespace"


def _config(client: redis.Redis, *names: str) -> dict[str, str]:
    """CONFIG GET of each name (one call each: several names in one call need Redis 7)."""
    values: dict[str, str] = {}
    for name in names:
        reply = client.config_get(name)
        for key, value in reply.items():
            values[_text(key)] = _text(value)
        if name not in values:
            raise redis.ResponseError(f"CONFIG GET {name} returned nothing")
    return values


def check_persistence(client: redis.Redis) -> Check:
    name = "persistence"
    try:
        config = _config(client, "appendonly", "appendfsync", "save")
    except redis.ResponseError as e:
        return Check(
            name,
            "unknown",
            _refused("CONFIG GET", e),
            "check in the provider's settings that AOF is on with `appendfsync everysec`, "
            "or allow this user `CONFIG GET`",
        )
    fsync = config["appendfsync"]
    if config["appendonly"] != "yes":
        if config["save"].strip():
            detail = f"AOF is off (RDB snapshots only, save {config['save']!r})"
            why = "a crash loses every job accepted since the last snapshot"
        else:
            detail, why = "AOF is off and so are RDB snapshots", "a restart loses every job"
        return Check(name, "fail", f"{detail}: {why}", _FIX_PERSISTENCE)
    if fsync == "everysec":
        return Check(name, "pass", "AOF on, appendfsync everysec (a crash loses up to ~1 s)")
    if fsync == "always":
        return Check(name, "pass", "AOF on, appendfsync always (each write waits for the disk)")
    return Check(
        name,
        "warn",
        f"AOF on, but appendfsync {fsync}: the OS decides when writes reach the disk, "
        "and a crash of the host may lose tens of seconds of jobs",
        "set `appendfsync everysec` (or `always`) in redis.conf",
    )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def check_eviction(client: redis.Redis) -> Check:
    name = "eviction"
    try:
        config = _config(client, "maxmemory", "maxmemory-policy")
    except redis.ResponseError as e:
        return Check(
            name,
            "unknown",
            _refused("CONFIG GET", e),
            "check in the provider's settings that the eviction policy is `noeviction`, "
            "or allow this user `CONFIG GET`",
        )
    policy, limit = config["maxmemory-policy"], int(config["maxmemory"])
    if policy == "noeviction":
        where = f"maxmemory {_size(limit)}" if limit else "no maxmemory"
        return Check(name, "pass", f"maxmemory-policy noeviction ({where}): no job is evicted")
    if not limit:
        return Check(
            name,
            "warn",
            f"no maxmemory, so nothing is evicted now, but maxmemory-policy is {policy}: "
            "setting maxmemory later would make Redis delete jobs",
            _FIX_EVICTION,
        )
    return Check(
        name,
        "fail",
        f"maxmemory {_size(limit)} with maxmemory-policy {policy}: once memory is full, "
        "Redis deletes keys, and with them jobs, silently",
        _FIX_EVICTION,
    )


def _probe_kwargs(client: redis.Redis) -> dict[str, Any]:
    kept = {"host", "port", "path", "socket_timeout", "socket_connect_timeout", "protocol"}
    return {
        k: v
        for k, v in client.connection_pool.connection_kwargs.items()
        if k in kept or k.startswith("ssl_")
    }


def check_authentication(client: redis.Redis) -> Check:
    """Connect again without credentials: the only test that needs no ACL permission."""
    name = "authentication"
    pool = client.connection_pool
    probe = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class,
            retry=Retry(NoBackoff(), 0),
            **_probe_kwargs(client),
        )
    )
    try:
        probe.ping()
    except redis.AuthenticationError:
        pass
    except redis.ResponseError as e:
        if not str(e).startswith(("NOAUTH", "Authentication required")):
            return Check(name, "unknown", f"a connection without a password got: {e}", _FIX_AUTH)
    except redis.RedisError as e:
        return Check(
            name, "unknown", f"could not connect without a password to compare: {e}", _FIX_AUTH
        )
    else:
        return Check(
            name,
            "fail",
            "the default user needs no password: anyone who reaches the server can read, "
            "change and delete jobs",
            _FIX_AUTH,
        )
    finally:
        probe.close()
        probe.connection_pool.disconnect()  # a client given its pool leaves it open
    user = pool.connection_kwargs.get("username") or "default"
    password = pool.connection_kwargs.get("password")
    if isinstance(password, str) and len(password) < _MIN_PASSWORD_LENGTH:
        return Check(
            name,
            "warn",
            f"a password is required, but the one of user {user!r} has only "
            f"{len(password)} characters",
            f"use a random password of {_MIN_PASSWORD_LENGTH} characters or more "
            "(`openssl rand -hex 24`)",
        )
    return Check(name, "pass", f"a password is required (connected as user {user!r})")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, unresolved) is this machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_tls(client: redis.Redis) -> Check:
    name = "tls"
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        return Check(name, "pass", f"unix socket {kwargs.get('path')}: no network traffic")
    host = str(kwargs.get("host", "localhost"))
    if issubclass(pool.connection_class, redis.SSLConnection):
        if kwargs.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
            return Check(
                name,
                "warn",
                f"TLS to {host}, but without checking the server's certificate",
                "drop `ssl_cert_reqs=none` and pass `ssl_ca_certs` with the server's CA",
            )
        return Check(name, "pass", f"TLS to {host}")
    if is_loopback(host):
        return Check(name, "pass", f"no TLS, but {host} is a loopback address")
    return Check(
        name,
        "warn",
        f"no TLS to {host}, which is not a loopback address: the password and the jobs "
        "cross the network in clear text",
        "use a rediss:// URL (TLS) unless every network between the hosts is trusted",
    )


def check_version(client: redis.Redis) -> Check:
    name = "redis-version"
    try:
        info = client.info("server")
    except redis.ResponseError as e:
        return Check(name, "unknown", _refused("INFO", e), "check that Redis is 6.2 or later")
    version = _text(info.get("redis_version", "0"))
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    label = f"Redis {version}"
    if "valkey_version" in info:
        label = f"Valkey {_text(info['valkey_version'])} (as Redis {version})"
    wanted = ".".join(map(str, _MIN_VERSION))
    if numbers < _MIN_VERSION:
        return Check(
            name,
            "fail",
            f"{label}: Spinach supports Redis {wanted} or later",
            f"upgrade Redis to {wanted} or later",
        )
    return Check(name, "pass", f"{label} (supported: {wanted} or later)")


def check_clock(client: redis.Redis, clock: Clock) -> tuple[Check, float]:
    """The clock check, and the server's time (this host's when TIME is refused)."""
    name = "clock"
    before = clock.time()
    try:
        seconds, microseconds = client.time()
    except redis.ResponseError as e:
        return Check(name, "unknown", _refused("TIME", e), "run NTP on every host"), before
    after = clock.time()
    server = seconds + microseconds / 1e6
    offset = server - (before + after) / 2
    side = "behind" if offset > 0 else "ahead of"
    detail = (
        f"this host's clock is {abs(offset):.3f} s {side} the Redis server's "
        f"(measured to +/- {(after - before) / 2:.4f} s)"
    )
    if abs(offset) > _MAX_CLOCK_OFFSET:
        return Check(
            name,
            "warn",
            f"{detail}; the broker corrects it, but times given to schedule_at and "
            "Job.should_start use this host's clock",
            "run NTP (chrony or systemd-timesyncd) on this host and on the Redis server",
        ), server
    return Check(name, "pass", detail), server


@attrs.define
class _Sample:
    """What SCAN saw of the keys of one server's database."""

    scanned: int = 0
    total: int = 0
    namespaces: dict[str, int] = attrs.Factory(dict)
    foreign: list[str] = attrs.Factory(list)
    with_ttl: list[str] = attrs.Factory(list)
    unreadable_ttl: int = 0


def _scan(client: redis.Redis) -> _Sample:
    sample = _Sample(total=int(client.dbsize()))
    to_time: list[str] = []
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, count=_SCAN_COUNT)
        for key in keys[: SCAN_LIMIT - sample.scanned]:
            text = _text(key)
            sample.scanned += 1
            parsed = Keys.parse(text)
            if parsed is None:
                sample.foreign.append(text)
                to_time.append(text)
                continue
            namespace, rest = parsed
            sample.namespaces[namespace] = sample.namespaces.get(namespace, 0) + 1
            if not Keys.expires_by_design(rest):
                to_time.append(text)
        if cursor == 0 or sample.scanned >= SCAN_LIMIT:
            break
    for start in range(0, len(to_time), _SCAN_COUNT):
        chunk = to_time[start : start + _SCAN_COUNT]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.ttl(key)
        for key, ttl in zip(chunk, pipe.execute(raise_on_error=False)):
            if isinstance(ttl, Exception):
                sample.unreadable_ttl += 1
            elif int(ttl) >= 0:
                sample.with_ttl.append(key)
    return sample


def _examples(keys: list[str]) -> str:
    shown = ", ".join(repr(k[:60]) for k in keys[:_EXAMPLES])
    return shown + (", ..." if len(keys) > _EXAMPLES else "")


def check_dedicated(client: redis.Redis, sample: _Sample) -> Check:
    name = "dedicated-server"
    db = int(client.connection_pool.connection_kwargs.get("db", 0))
    findings = []
    if sample.with_ttl:
        findings.append(f"{len(sample.with_ttl)} key(s) with a TTL ({_examples(sample.with_ttl)})")
    timed = set(sample.with_ttl)
    foreign_without_ttl = [k for k in sample.foreign if k not in timed]
    if foreign_without_ttl:
        findings.append(
            f"{len(foreign_without_ttl)} other key(s) that are not Spinach's "
            f"({_examples(foreign_without_ttl)})"
        )
    try:
        keyspace = client.info("keyspace")
    except redis.ResponseError:
        keyspace = {}
    for other, stats in sorted(keyspace.items()):
        if other != f"db{db}" and isinstance(stats, dict) and stats.get("keys"):
            findings.append(
                f"db {other[2:]} holds {stats['keys']} key(s), {stats.get('expires', 0)} with a TTL"
            )
    scope = f"{sample.scanned} key(s) scanned in db {db}" if sample.scanned else f"db {db} is empty"
    if sample.scanned < sample.total:
        scope = f"the first {sample.scanned} of {sample.total} keys of db {db} scanned"
    if sample.unreadable_ttl:
        scope += f"; the TTL of {sample.unreadable_ttl} key(s) could not be read"
    if findings:
        return Check(
            name,
            "warn",
            f"{'; '.join(findings)} ({scope}): the server seems to serve more than Spinach, "
            "maybe as a cache",
            _FIX_DEDICATED,
        )
    return Check(name, "pass", f"only Spinach keys ({scope})")


def _guarded(name: str, fix: str | None, run: Callable[..., Check], *args: Any) -> Check:
    try:
        return run(*args)
    except redis.ResponseError as e:
        return Check(name, "unknown", str(e), fix)


def run_checks(
    servers: Sequence[Server],
    namespace: str | None,
    dead_worker_timeout: float,
    clock: Clock,
    locate: Callable[[str], Server | None] | None = None,
) -> list[Check]:
    """Every check, in the order of the production checklist.

    The checks of a server run on each of ``servers`` in turn; the key-space
    checks (``namespaces``, ``workers``, ``failed-jobs``) cover them all.

    Args:
        locate: the server that holds a key (on a cluster, the master of its
            slot), or None if none does; the first server by default.
    """

    def each(name: str, fix: str | None, check: Callable[[redis.Redis], Check]) -> list[Check]:
        return [
            attrs.evolve(_guarded(name, fix, check, server.client), node=server.node)
            for server in servers
        ]

    checks = [
        *each("persistence", _FIX_PERSISTENCE, check_persistence),
        *each("eviction", _FIX_EVICTION, check_eviction),
        *each("authentication", _FIX_AUTH, check_authentication),
        *each("tls", None, check_tls),
        *each("redis-version", None, check_version),
    ]
    server_times: dict[str | None, float] = {}
    for server in servers:
        clock_check, server_times[server.node] = check_clock(server.client, clock)
        checks.append(attrs.evolve(clock_check, node=server.node))
    found: dict[str, dict[str | None, int]] = {}
    refusals = []
    for server in servers:
        try:
            sample = _scan(server.client)
        except redis.ResponseError as e:
            why = _refused("SCAN", e)
            checks.append(Check("dedicated-server", "unknown", why, _FIX_DEDICATED, server.node))
            refusals.append(why if server.node is None else f"{server.node}: {why}")
            continue
        checks.append(attrs.evolve(check_dedicated(server.client, sample), node=server.node))
        for ns, count in sample.namespaces.items():
            found.setdefault(ns, {})[server.node] = count
    several = len(servers) > 1
    if refusals:
        checks.append(Check("namespaces", "unknown", "; ".join(refusals)))
    else:
        checks.append(check_namespaces(found, namespace, several))
    namespaces = sorted(found) if namespace is None else [namespace]
    find = locate if locate is not None else (lambda key: servers[0])
    checks.append(
        _guarded(
            "workers",
            _FIX_WORKERS,
            check_workers,
            namespaces,
            find,
            server_times,
            dead_worker_timeout,
            namespace is not None,
            several,
        )
    )
    checks.append(
        _guarded(
            "failed-jobs",
            _FIX_FAILED_UNREAD,
            check_failed_jobs,
            namespaces,
            find,
            server_times,
            namespace is not None,
            several,
        )
    )
    return checks
