"""Check a Redis server, and an engine's tasks, against the production checklist.

:func:`diagnose` runs the checks of ``spinach doctor`` (see ``docs/doctor.md``)
and returns a :class:`Report`::

    from spinach.doctor import diagnose

    report = diagnose(spin)  # an Engine, a RedisBroker or a Redis URL
    print(report.to_text())
    if report.failed:
        ...

A URL is read by :func:`spinach.brokers.redis.url.client_from_url`, as
``RedisBroker.from_url`` reads it, so the doctor takes every form the broker
takes. On a Redis Cluster the checks of a server run on every master, each
finding naming its node; with Sentinel they run on the master the sentinels
name, after a line counting the sentinels and the replicas.

Each check reads the live server with a few plain commands, and SCAN reads
at most 10,000 keys of each server, so running it against a busy one is cheap.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Literal, Union
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import attrs
import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

from . import const
from ._doctor_checks import SCAN_LIMIT, Check, Server, Status, run_checks
from ._doctor_topology import check_cluster, check_sentinel, poll_sentinels
from .brokers.redis import RedisBroker
from .brokers.redis.broker import RedisClient
from .brokers.redis.url import CLIENT_DEFAULTS, client_from_url
from .clock import Clock, SystemClock
from .engine import Engine
from .exc import ConfigurationError, SpinachError

__all__ = ["SCAN_LIMIT", "Check", "Report", "Status", "TargetError", "TaskInfo", "diagnose"]

Delivery = Literal["at-most-once", "at-least-once"]
_STATUSES: tuple[Status, ...] = ("fail", "warn", "unknown", "pass", "info")
_LABELS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "unknown": "UNKNOWN", "info": "INFO"}
_PLAIN_SCHEMES = ("redis", "rediss", "unix")


class TargetError(SpinachError, ValueError):
    """What the doctor was given cannot be checked: a bad URL, an unreachable
    server, refused credentials, or an engine whose broker is not Redis."""


@attrs.frozen
class TaskInfo:
    """How the jobs of one task of the engine are delivered.

    Attributes:
        name: the task's name.
        queue: the queue its jobs go to.
        delivery: ``"at-most-once"`` (no retry) or ``"at-least-once"``.
        max_retries: retries after a failure or a dead worker.
        max_concurrency: most jobs of the task running at once; None for no limit.
        periodicity: seconds between two runs of a periodic task, else None.
    """

    name: str
    queue: str
    delivery: Delivery
    max_retries: int
    max_concurrency: int | None
    periodicity: float | None


@attrs.frozen
class Report:
    """The outcome of :func:`diagnose`.

    Attributes:
        target: the URL of the server, cluster or Sentinel service checked,
            without its passwords.
        namespace: the namespace checked; None for a bare URL, where every
            namespace found is reported.
        checks: the checks, in the order of the production checklist, after
            the ``info`` line of a cluster or a Sentinel service; on a cluster,
            each check of a server once per master.
        tasks: the engine's tasks, by name; empty without an engine.
    """

    target: str
    namespace: str | None
    checks: tuple[Check, ...]
    tasks: tuple[TaskInfo, ...] = ()

    @property
    def failed(self) -> bool:
        """Whether a check failed (warnings and unknowns do not count)."""
        return any(check.status == "fail" for check in self.checks)

    def counts(self) -> dict[Status, int]:
        """How many checks ended with each status (``info`` lines included)."""
        return {s: sum(c.status == s for c in self.checks) for s in _STATUSES}

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types."""
        return {
            "target": self.target,
            "namespace": self.namespace,
            "failed": self.failed,
            "counts": self.counts(),
            "checks": [attrs.asdict(check) for check in self.checks],
            "tasks": [attrs.asdict(task) for task in self.tasks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as a JSON document; see :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_text(self) -> str:
        """The report as a readable checklist, then the tasks, then a summary line
        of the verdicts (``info`` lines are none)."""
        scope = "" if self.namespace is None else f" namespace {self.namespace!r}"
        lines = [f"spinach doctor: {self.target}{scope}"]
        for check in self.checks:
            node = "" if check.node is None else f" on {check.node}"
            line = f"[{_LABELS[check.status]}] {check.name}{node}: {check.detail}"
            if check.fix is not None and check.status != "pass":
                line += f" -> fix: {check.fix}"
            lines.append(line)
        if self.tasks:
            lines += ["", f"Tasks of namespace {self.namespace!r}:", *_task_table(self.tasks)]
        counts = self.counts()
        lines += [
            "",
            f"{counts['fail']} failed, {counts['warn']} warning(s), {counts['unknown']} unknown, "
            f"{counts['pass']} passed",
        ]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _task_table(tasks: tuple[TaskInfo, ...]) -> list[str]:
    rows = [("TASK", "QUEUE", "DELIVERY", "RETRIES", "CONCURRENCY", "PERIODICITY")]
    for t in tasks:
        rows.append(
            (
                t.name,
                t.queue,
                t.delivery,
                str(t.max_retries),
                "-" if t.max_concurrency is None else str(t.max_concurrency),
                "-" if t.periodicity is None else f"every {_duration(t.periodicity)}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


def _task_infos(engine: Engine) -> tuple[TaskInfo, ...]:
    # The engine's registry is private, but this module belongs to the package.
    tasks = engine._tasks.tasks
    return tuple(
        TaskInfo(
            name=task.name,
            queue=task.queue,
            delivery="at-least-once" if task.max_retries else "at-most-once",
            max_retries=task.max_retries,
            max_concurrency=task.max_concurrency,
            periodicity=None if task.periodicity is None else task.periodicity.total_seconds(),
        )
        for _, task in sorted(tasks.items())
    )


def _user(kwargs: dict[str, Any]) -> str:
    user = kwargs.get("username")
    return f"{quote(user, safe='')}@" if user else ""


def _host_port(kwargs: dict[str, Any]) -> str:
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{kwargs.get('port', 6379)}"


def describe(client: RedisClient) -> str:
    """The URL of a client's server, cluster or Sentinel service, with its user
    but without its passwords."""
    if isinstance(client, redis.RedisCluster):
        manager = client.nodes_manager
        kwargs = manager.connection_kwargs
        connection_class = kwargs.get("connection_class", redis.Connection)
        tls = kwargs.get("ssl") or issubclass(connection_class, redis.SSLConnection)
        node = next(iter(manager.startup_nodes), "localhost:6379")
        return f"{'rediss' if tls else 'redis'}+cluster://{_user(kwargs)}{node}"
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        return f"unix://{kwargs.get('path')}?db={db}"
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    if isinstance(pool, SentinelConnectionPool):
        sentinels = pool.sentinel_manager.sentinels
        hosts = ",".join(_host_port(s.connection_pool.connection_kwargs) for s in sentinels)
        service = quote(pool.service_name, safe="")
        return f"{scheme}+sentinel://{_user(kwargs)}{hosts}/{service}/{db}"
    return f"{scheme}://{_user(kwargs)}{_host_port(kwargs)}/{db}"


def _without_password(url: str) -> str:
    """A URL that ``client_from_url`` accepted, without the passwords it may hold."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    query = parse_qsl(parts.query, keep_blank_values=True)
    return urlunsplit(
        parts._replace(
            netloc=f"{user}@{hosts}" if user else hosts,
            query=urlencode([(k, v) for k, v in query if "password" not in k]),
        )
    )


def _client(url: str) -> RedisClient:
    try:
        # No retries: a refused password or a closed port is the answer, not an outage.
        return client_from_url(url, **{**CLIENT_DEFAULTS, "retry": Retry(NoBackoff(), 0)})
    except ConfigurationError as e:
        raise TargetError(str(e)) from None
    except (RedisClusterException, redis.RedisError) as e:
        # Only a cluster client connects as it is made, to learn the cluster's layout.
        reason = str(e).rpartition("reachable node: ")[2].rstrip(".")
        raise TargetError(
            f"Cannot use the Redis Cluster at {_without_password(url)}: {reason}. "
            + _cluster_advice(reason)
        ) from None


def _cluster_advice(reason: str) -> str:
    """What to do when redis-py cannot learn a cluster's layout, for that reason."""
    if "Cluster mode is not enabled" in reason:
        return (
            "The server is not a cluster node: use a redis:// URL for a single server, "
            "or a redis+sentinel:// URL for a Sentinel service"
        )
    if "not covered" in reason:
        return (
            "Some hash slots have no master: find the failed nodes with "
            "`redis-cli --cluster check HOST:PORT` and bring them back"
        )
    return "Check that the node of the URL runs, and the URL's user and password"


_PLAIN_FORM = "redis://user:password@host:port/db"
_CLUSTER_FORM = "redis+cluster://user:password@host:port"
_SENTINEL_FORM = (
    "redis+sentinel://user:password@host:26379,host:26379,host:26379/service/db; the "
    "sentinels' own password goes in ?sentinel_password=..."
)


def _connect(client: redis.Redis, form: str = _PLAIN_FORM) -> None:
    where = describe(client)
    try:
        client.ping()
    except (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError) as e:
        if not client.connection_pool.connection_kwargs.get("password"):
            raise TargetError(
                f"Redis at {where} requires a password: put it in the URL ({form})"
            ) from None
        raise TargetError(
            f"Redis at {where} refused the user or password of the URL: {str(e).rstrip('.')}"
        ) from None
    except redis.ResponseError:
        pass  # any other refusal (an ACL without PING) still proves that the server answers
    except redis.RedisError as e:
        raise TargetError(
            f"Cannot reach Redis at {where}: {str(e).rstrip('.')}. Check that the server "
            "runs and that the URL is right"
        ) from None


def _close(client: redis.Redis) -> None:
    client.close()
    # A client given its pool does not close it.
    client.connection_pool.disconnect()


@attrs.frozen
class _Deployment:
    """The servers a client reaches, and what the doctor says of the whole.

    Attributes:
        servers: the servers to check: one, or every master of a cluster.
        describe: the checks of the deployment itself, run before the others.
        locate: the server that holds a key; None for the first server.
        owned: clients made for the doctor, closed after the checks.
    """

    servers: list[Server]
    describe: Callable[[], list[Check]]
    locate: Callable[[str], Server | None] | None = None
    owned: tuple[redis.Redis, ...] = ()


def _deployment(client: RedisClient, where: str) -> _Deployment:
    """Connect to the servers behind ``client``, saying why if it cannot."""
    if isinstance(client, redis.RedisCluster):
        return _cluster(client)
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return _sentinel(pool, where)
    _connect(client)
    return _Deployment([Server(client)], lambda: _standalone(client, where))


def _standalone(client: redis.Redis, where: str) -> list[Check]:
    """Nothing, unless the target is a single client of a cluster node or of a sentinel."""
    try:
        mode = str(client.info("server").get("redis_mode", ""))
    except redis.ResponseError:
        return []  # the redis-version check says that INFO is refused
    address = _host_port(client.connection_pool.connection_kwargs)
    if mode == "sentinel":
        raise TargetError(
            f"{where} is a Redis Sentinel, not a Redis server: check the master it watches "
            f"with a redis+sentinel://{address}/<service name> URL"
        )
    if mode != "cluster":
        return []
    return [
        Check(
            "cluster",
            "warn",
            "the server is a node of a Redis Cluster, but the target reaches this node alone: "
            "the doctor checked this node only, and a broker on it fails with MOVED errors "
            "for the namespaces of the other masters",
            f"use redis+cluster://{address} (or give RedisBroker a redis.cluster.RedisCluster)",
        )
    ]


def _cluster(client: redis.RedisCluster) -> _Deployment:
    # redis-py leaves the node methods of RedisCluster and SentinelConnectionPool unannotated.
    primaries = client.get_primaries()  # type: ignore[no-untyped-call,unused-ignore]
    nodes = sorted(primaries, key=lambda node: (node.host, node.port))
    masters = [Server(client.get_redis_connection(node), node.name) for node in nodes]
    for master in masters:
        _connect(master.client, _CLUSTER_FORM)
    by_node = {master.node: master for master in masters}

    def locate(key: str) -> Server | None:
        try:
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call,unused-ignore]
            return by_node.get(node.name)
        except RedisClusterException:  # a slot that no master serves
            return None

    replicas = len(client.get_replicas())  # type: ignore[no-untyped-call,unused-ignore]
    return _Deployment(masters, lambda: [check_cluster(masters, replicas)], locate)


#: The options of the master's connections that a plain client of it keeps.
_MASTER_OPTIONS = {
    "username", "password", "db", "client_name", "protocol", "credential_provider",
    "encoding", "encoding_errors", "decode_responses",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
}  # fmt: skip


def _sentinel(pool: SentinelConnectionPool, where: str) -> _Deployment:
    service = pool.service_name
    # Listed now: finding the master moves the sentinel that answered to the front.
    sentinels = list(pool.sentinel_manager.sentinels)
    try:
        # As the broker finds it.
        host, port = pool.get_master_address()  # type: ignore[no-untyped-call,unused-ignore]
    except redis.RedisError:
        states, silent = poll_sentinels(sentinels, service)
        raise TargetError(_no_master(where, service, states, silent)) from None
    # A plain client of the master, so that each check sees its address.
    tls = issubclass(pool.connection_class, redis.SSLConnection)
    options = {
        k: v
        for k, v in pool.connection_kwargs.items()
        if k in _MASTER_OPTIONS or k.startswith("ssl_")
    }
    master = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=redis.SSLConnection if tls else redis.Connection,
            host=host,
            port=port,
            retry=Retry(NoBackoff(), 0),
            **options,
        )
    )
    node = f"{host}:{port}"
    try:
        _connect(master, _SENTINEL_FORM)
    except TargetError:
        _close(master)
        raise
    return _Deployment(
        [Server(master, node)],
        lambda: [check_sentinel(sentinels, service, node)],
        owned=(master,),
    )


def _no_master(
    where: str, service: str, states: dict[str, dict[str, Any]], silent: dict[str, str]
) -> str:
    """Why the sentinels of ``where`` named no master for ``service``, and what to do."""
    if states:
        said = "; ".join(
            f"{sentinel}: {state.get('ip')}:{state.get('port')} ({state.get('flags')})"
            for sentinel, state in states.items()
        )
        return (
            f"The sentinels of {where} name no master of service {service!r} that is up "
            f"({said}): bring the master back, or let the sentinels promote a replica, "
            "then run the doctor again"
        )
    if silent and all(why.startswith("No such master") for why in silent.values()):
        return (
            f"The sentinels of {where} monitor no service {service!r}: put in the URL's "
            "path the name of their `sentinel monitor <name> ...` line"
        )
    reasons = "; ".join(f"{sentinel}: {why}" for sentinel, why in silent.items())
    return (
        f"No sentinel of {where} answered for service {service!r} ({reasons}). Check that "
        "the sentinels run at these addresses, and their password (?sentinel_password=...)"
    )


Target = Union[Engine, RedisBroker, str]


def diagnose(target: Target, *, clock: Clock | None = None) -> Report:
    """Check a Redis server, every master of a Redis Cluster, or the master of a
    Sentinel service for Spinach, and list an engine's tasks.

    Args:
        target: an :class:`~spinach.engine.Engine` with a ``RedisBroker`` (its
            namespace is checked and its tasks listed), a ``RedisBroker`` (its
            namespace is checked), or a Redis URL of any form that
            ``RedisBroker.from_url`` takes (every namespace found is reported).
        clock: this host's clock, compared with the servers'; the system clock
            by default.

    Raises:
        TargetError: the URL is invalid, a server cannot be reached or refuses
            the credentials, the sentinels name no master, or the engine's
            broker is not a ``RedisBroker``.
    """
    clock = clock if clock is not None else SystemClock()
    tasks: tuple[TaskInfo, ...] = ()
    timeout = const.DEFAULT_DEAD_WORKER_TIMEOUT
    namespace: str | None = None
    if isinstance(target, str):
        client = _client(target)
        try:
            plain = target.partition("://")[0] in _PLAIN_SCHEMES
            where = describe(client) if plain else _without_password(target)
            return _run(client, where, None, timeout, tasks, clock)
        finally:
            client.close()
    if isinstance(target, Engine):
        broker = target.broker
        if not isinstance(broker, RedisBroker):
            raise TargetError(
                f"The engine's broker is a {type(broker).__name__}: the doctor checks a "
                "Redis server, so give it an engine with a RedisBroker"
            )
        namespace = target.namespace
        # Live workers are those the engine itself would not declare dead.
        timeout = target._dead_worker_timeout
        tasks = _task_infos(target)
    elif isinstance(target, RedisBroker):
        broker, namespace = target, target.namespace
    else:
        raise TargetError(
            f"Cannot diagnose a {type(target).__name__}: give an Engine, a RedisBroker "
            "or a Redis URL"
        )
    broker_client: RedisClient = broker.redis
    return _run(broker_client, describe(broker_client), namespace, timeout, tasks, clock)


def _run(
    client: RedisClient,
    where: str,
    namespace: str | None,
    timeout: float,
    tasks: tuple[TaskInfo, ...],
    clock: Clock,
) -> Report:
    deployment = _deployment(client, where)
    try:
        checks = [
            *deployment.describe(),
            *run_checks(deployment.servers, namespace, timeout, clock, deployment.locate),
        ]
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise TargetError(f"Lost the connection to Redis at {where}: {e}") from None
    finally:
        for owned in deployment.owned:
            _close(owned)
    return Report(where, namespace, tuple(checks), tasks)
