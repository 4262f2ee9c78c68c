"""redis-py clients from URLs: a single server, a Redis Cluster or a Sentinel-managed master.

The forms (see ``docs/scaling.md``)::

    redis://[[user]:password@]host[:port][/db][?option=value...]      one server
    rediss://...                                                      the same over TLS
    unix://[[user]:password@]/path/to/socket[?db=N&...]               a Unix socket
    redis+cluster://[[user]:password@]host[:port][?option=value...]   a Redis Cluster
    rediss+cluster://...                                              the same over TLS
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?...]
    rediss+sentinel://...                                             the same over TLS

The plain forms are read by redis-py's ``Redis.from_url``. A cluster URL
names one node, which serves to discover the others. A Sentinel URL names
the sentinels (port 26379 by default) and the service name the sentinels
monitor; the user and password of the URL are those of the master (and of
its replicas), ``sentinel_username`` and ``sentinel_password`` in the query
are those of the sentinels. With ``rediss+sentinel://`` the sentinels are
reached over TLS too, unless the query says ``sentinel_ssl=false``. Other
query options (``socket_timeout=2``...) are redis-py's URL options, applied
to the master's connections and, for the ``socket_*`` ones, to the sentinels'.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis as redis_py
import redis.asyncio as redis_asyncio
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.connection import parse_url as _redis_parse_url
from redis.sentinel import Sentinel

from ...exc import ConfigurationError

__all__ = ["CLIENT_DEFAULTS", "SCHEMES", "async_client_from_url", "client_from_url"]

#: Options of every client a RedisBroker makes, unless its caller sets them: TCP
#: keepalive, so that a dead peer is noticed; bounded connect and read times, so
#: that no call hangs for good; and a check of idle connections before reuse.
CLIENT_DEFAULTS: dict[str, Any] = {
    "socket_keepalive": True,
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
    "health_check_interval": 30,
}
try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py before 7: no maintenance notifications
    pass
else:
    # redis-py 8 tries CLIENT MAINT_NOTIFICATIONS on each new connection; a server
    # without it (Redis before 8) answers with an error, which now and then came
    # back as the reply of the next command (seen as a failed TIME over TLS).
    CLIENT_DEFAULTS["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)

#: Most connections of the asyncio client that a RedisBroker makes from a URL
#: (see async_client_from_url), unless its caller sets ``max_connections``.
ASYNC_MAX_CONNECTIONS = 50

_PLAIN = ("redis", "rediss", "unix")
#: Options of TCP connections that a Unix socket connection does not take.
_TCP_ONLY = frozenset(("socket_keepalive", "socket_keepalive_options"))
_CLUSTER = ("redis+cluster", "rediss+cluster")
_SENTINEL = ("redis+sentinel", "rediss+sentinel")
#: Every URL scheme :func:`client_from_url` accepts.
SCHEMES = (*_PLAIN, *_CLUSTER, *_SENTINEL)

_SENTINEL_PORT = 26379
#: Query options of a Sentinel URL that are about the sentinels, not the master.
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", "sentinel_ssl")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

_SENTINEL_FORM = (
    "redis+sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379/<service name>[/db]"
)


class _ClusterClient(redis_py.RedisCluster):
    """A cluster client whose ``close()`` closes the connections to every node.

    The nodes of a ``RedisCluster.from_url`` client get connection pools that
    their ``Redis`` clients do not own (redis-py 8.1 builds them with
    ``Redis(connection_pool=...)``), so ``RedisCluster.close()`` leaves their
    sockets open until the garbage collector finds them.
    """

    def close(self) -> None:
        try:
            self.disconnect_connection_pools()  # type: ignore[no-untyped-call,unused-ignore]
        finally:
            super().close()


class _SentinelMasterClient(redis_py.Redis):
    """The master's client of a Sentinel made for it alone: ``close()`` closes both."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            for sentinel in getattr(manager, "sentinels", ()):
                sentinel.close()


class _AsyncSentinelMasterClient(redis_asyncio.Redis):
    """The asyncio client of the master of a Sentinel made for it alone:
    ``aclose()`` closes the sentinels' connections too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            # Its pool is its own: made by master_for for it alone.
            await super().aclose(True if close_connection_pool is None else close_connection_pool)
        finally:
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            for sentinel in getattr(manager, "sentinels", ()):
                await sentinel.aclose()


def client_from_url(url: str, **redis_kwargs: Any) -> redis_py.Redis | redis_py.RedisCluster:
    """A redis-py client for a URL of one of :data:`SCHEMES`.

    ``redis_kwargs`` go to the client's connections (the URL's query options
    win over them, as in redis-py); for a Sentinel URL, its ``socket_*`` and
    (with ``rediss+sentinel://``) ``ssl_*`` ones go to the sentinels' too.
    No connection is made, except to a cluster node to learn the cluster's
    layout.

    Raises:
        ConfigurationError: the URL is not one of these forms, or is
            malformed; the message says what to write instead.
    """
    client = _client_from_url(url, False, redis_kwargs)
    assert isinstance(client, (redis_py.Redis, redis_py.RedisCluster))
    return client


def async_client_from_url(
    url: str, **redis_kwargs: Any
) -> redis_asyncio.Redis | redis_asyncio.RedisCluster:
    """A ``redis.asyncio`` client for a URL of one of :data:`SCHEMES`, as
    :func:`client_from_url` makes a blocking one. No connection is made: a
    cluster client learns the cluster's layout on its first command.

    The client of a single server holds at most :data:`ASYNC_MAX_CONNECTIONS`
    connections unless ``max_connections`` says otherwise; a call finding them
    all busy waits for one (20 s at most) rather than failing.
    """
    client = _client_from_url(url, True, redis_kwargs)
    assert isinstance(client, (redis_asyncio.Redis, redis_asyncio.RedisCluster))
    return client


def _client_from_url(url: str, use_asyncio: bool, redis_kwargs: dict[str, Any]) -> Any:
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme in _PLAIN:
        _check_plain(url)
        if scheme == "unix":
            # TCP keepalive means nothing on a Unix socket, and redis-py's
            # connections to one refuse the options.
            redis_kwargs = {k: v for k, v in redis_kwargs.items() if k not in _TCP_ONLY}
        if use_asyncio:
            return _async_client(url, redis_kwargs)
        return redis_py.Redis.from_url(url, **redis_kwargs)
    if scheme in _CLUSTER:
        return _cluster_client(url, scheme, use_asyncio, redis_kwargs)
    if scheme in _SENTINEL:
        return _sentinel_client(url, scheme, use_asyncio, redis_kwargs)
    expected = ", ".join(f"{s}://" for s in SCHEMES)
    found = f"the scheme {scheme}://" if scheme else "no scheme"
    raise ConfigurationError(
        f"Unsupported Redis URL {_redacted(url)!r}: it has {found}. Write one of {expected}, "
        "for example redis://localhost:6379/0"
    )


def _async_client(url: str, redis_kwargs: dict[str, Any]) -> redis_asyncio.Redis:
    """A ``redis.asyncio`` client whose calls wait for a free connection once it
    holds ``max_connections``, as a blocking client's threads do, instead of
    failing at once with "Too many connections" (redis.asyncio's default pool)."""
    options = {"max_connections": ASYNC_MAX_CONNECTIONS, **redis_kwargs}
    pool = redis_asyncio.BlockingConnectionPool.from_url(url, **options)
    client = redis_asyncio.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # closing the client closes its pool
    return client


def _redacted(url: str) -> str:
    """The URL with its passwords hidden, for error messages (it may be malformed)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, hosts = rest[:cut].rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    tail = rest[cut:]
    path, question, query = tail.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        fields = []
        for field in query.split("&"):
            key, equals, _ = field.partition("=")
            fields.append(f"{key}=***" if equals and "password" in key else field)
        tail = f"{path}?{'&'.join(fields)}{hash_}{fragment}"
    return f"{scheme}{sep}{userinfo}{at}{hosts}{tail}"


def _reason(error: ValueError) -> str:
    return str(error).rstrip(".")


def _parse_url(url: str) -> dict[str, Any]:
    """redis-py's reading of a ``redis://``, ``rediss://`` or ``unix://`` URL; ValueError if bad."""
    # redis-py leaves parse_url unannotated.
    return _redis_parse_url(url)  # type: ignore[no-untyped-call,no-any-return,unused-ignore]


def _check_plain(url: str) -> None:
    """Raise a ConfigurationError for the URLs that redis-py's parser rejects."""
    try:
        _parse_url(url)
    except ValueError as e:
        raise ConfigurationError(
            f"Invalid Redis URL {_redacted(url)!r}: {_reason(e)}. Write "
            "redis://[[user]:password@]host[:port][/db] (rediss:// for TLS) or "
            "unix://[[user]:password@]/path/to/socket[?db=N]"
        ) from e


def _cluster_client(url: str, scheme: str, use_asyncio: bool, redis_kwargs: dict[str, Any]) -> Any:
    form = f"{scheme}://[[user]:password@]host[:port]"
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ConfigurationError(
            f"Invalid Redis Cluster URL {_redacted(url)!r}: {_reason(e)}. Write {form}"
        ) from e
    hosts = parts.netloc.rpartition("@")[2]
    if "," in hosts:
        raise ConfigurationError(
            f"Invalid Redis Cluster URL {_redacted(url)!r}: it names several nodes. Write "
            f"{form}, with one node: the client learns the others from it"
        )
    if not hosts:
        raise ConfigurationError(
            f"Invalid Redis Cluster URL {_redacted(url)!r}: it names no node. Write {form}"
        )
    plain = urlunsplit(parts._replace(scheme=scheme.split("+")[0]))
    try:
        options = _parse_url(plain)
    except ValueError as e:
        raise ConfigurationError(
            f"Invalid Redis Cluster URL {_redacted(url)!r}: {_reason(e)}. Write {form}"
        ) from e
    if options.get("db", 0) != 0 or parts.path.strip("/") not in ("", "0"):
        raise ConfigurationError(
            f"Invalid Redis Cluster URL {_redacted(url)!r}: a cluster has only database 0. "
            f"Write {form} with no path, or /0"
        )
    if use_asyncio:
        return redis_asyncio.RedisCluster.from_url(plain, **redis_kwargs)
    return _ClusterClient.from_url(plain, **redis_kwargs)


def _sentinel_client(url: str, scheme: str, use_asyncio: bool, redis_kwargs: dict[str, Any]) -> Any:
    def invalid(problem: str) -> ConfigurationError:
        form = _SENTINEL_FORM.replace("redis+sentinel", scheme)
        return ConfigurationError(
            f"Invalid Redis Sentinel URL {_redacted(url)!r}: {problem}. Write {form}"
        )

    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise invalid(_reason(e)) from e
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = [_sentinel_address(host, invalid) for host in hosts.split(",")]
    segments = [unquote(s) for s in parts.path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    if not segments or not segments[0]:
        raise invalid("it names no service (the master's name in the sentinels' configuration)")
    if len(segments) > 2:
        raise invalid(f"its path {parts.path!r} has more than a service name and a database")
    service = segments[0]

    query = parse_qsl(parts.query, keep_blank_values=True)
    sentinel_options = {k: v for k, v in query if k in _SENTINEL_OPTIONS}
    master_query = [(k, v) for k, v in query if k not in _SENTINEL_OPTIONS]
    if "db" in dict(master_query) and len(segments) == 2:
        raise invalid("it gives the database twice, in its path and in db=")
    # redis-py's parser reads the user, password, database and options of the master.
    db = f"/{segments[1]}" if len(segments) == 2 else ""
    if db and not segments[1].isdigit():
        raise invalid(f"its database {segments[1]!r} is not a number")
    netloc = f"{userinfo}@sentinel" if userinfo else "sentinel"
    try:
        options = _parse_url(urlunsplit(("redis", netloc, db, urlencode(master_query), "")))
    except ValueError as e:
        raise invalid(_reason(e)) from e
    options.pop("host", None)
    options.pop("port", None)
    kwargs = {**redis_kwargs, **options}

    tls = scheme == "rediss+sentinel"
    sentinel_tls = tls
    if "sentinel_ssl" in sentinel_options:
        value = sentinel_options["sentinel_ssl"].lower()
        if value not in _TRUE + _FALSE:
            raise invalid(f"sentinel_ssl={value!r} is neither true nor false")
        sentinel_tls = value in _TRUE
        if sentinel_tls and not tls:
            raise invalid(
                "sentinel_ssl=true needs TLS to the master too: begin it with rediss+sentinel://"
            )
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if sentinel_tls:
        sentinel_kwargs.update({k: v for k, v in kwargs.items() if k.startswith("ssl_")})
        sentinel_kwargs["ssl"] = True
    if "sentinel_username" in sentinel_options:
        sentinel_kwargs["username"] = sentinel_options["sentinel_username"]
    if "sentinel_password" in sentinel_options:
        sentinel_kwargs["password"] = sentinel_options["sentinel_password"]
    if tls:
        kwargs["ssl"] = True
    if use_asyncio:
        async_sentinel = AsyncSentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
        return async_sentinel.master_for(service, redis_class=_AsyncSentinelMasterClient, **kwargs)
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call,unused-ignore]
    return sentinel.master_for(service, redis_class=_SentinelMasterClient, **kwargs)  # type: ignore[no-untyped-call,unused-ignore]


def _sentinel_address(host: str, invalid: Callable[[str], ConfigurationError]) -> tuple[str, int]:
    """The (host, port) of one sentinel of a Sentinel URL's list."""
    if host.startswith("["):  # an IPv6 address: [::1]:26379
        name, _, rest = host[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise invalid(f"the sentinel address {host!r} is malformed")
        port_text = rest[1:]
    else:
        name, _, port_text = host.partition(":")
    if not name:
        raise invalid(
            "it names no sentinel" if not host else f"the sentinel address {host!r} has no host"
        )
    if not port_text:
        return name, _SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise invalid(f"the port of the sentinel address {host!r} is not a port number")
    return name, int(port_text)
