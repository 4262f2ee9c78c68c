"""Redis URLs: the clients they make and the errors they raise, with no server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from spinach.brokers.redis import RedisBroker
from spinach.brokers.redis.url import SCHEMES, client_from_url
from spinach.exc import ConfigurationError


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    """The clients a test made, closed at its end."""
    made: list[Any] = []
    yield made
    for client in made:
        client.close()


def make(clients: list[Any], url: str, **kwargs: Any) -> Any:
    client = client_from_url(url, **kwargs)
    clients.append(client)
    return client


def sentinel_kwargs(client: redis.Redis) -> list[dict[str, Any]]:
    manager = client.connection_pool.sentinel_manager  # type: ignore[attr-defined]
    return [s.connection_pool.connection_kwargs for s in manager.sentinels]


# -- the clients ---------------------------------------------------------------


def test_plain_urls_are_redis_py_s(clients: list[Any]) -> None:
    client = make(
        clients, "redis://user:pw@example.com:6380/3?socket_timeout=2", socket_keepalive=True
    )
    assert type(client) is redis.Redis
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("example.com", 6380, 3)
    assert (kwargs["username"], kwargs["password"]) == ("user", "pw")
    assert kwargs["socket_timeout"] == 2
    assert kwargs["socket_keepalive"] is True
    tls = make(clients, "rediss://example.com")
    assert tls.connection_pool.connection_class is SSLConnection
    unix = make(clients, "unix:///run/redis.sock?db=2")
    assert unix.connection_pool.connection_class is UnixDomainSocketConnection
    assert unix.connection_pool.connection_kwargs["path"] == "/run/redis.sock"


def test_sentinel_url(clients: list[Any]) -> None:
    """Sentinels with default ports or not, IPv6 ones, the service, the database and the
    master's credentials; the socket options reach the sentinels too."""
    client = make(
        clients,
        "redis+sentinel://app:p%40ss@s1,s2:26380,[::1]:26381/mymaster/2?socket_timeout=2",
        socket_connect_timeout=3,
        health_check_interval=30,
    )
    pool = client.connection_pool
    assert pool.service_name == "mymaster"
    assert pool.connection_class is SentinelManagedConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "p@ss", 2)
    assert kwargs["socket_timeout"] == 2
    assert kwargs["health_check_interval"] == 30
    sentinels = sentinel_kwargs(client)
    assert [(s["host"], s["port"]) for s in sentinels] == [
        ("s1", 26379),
        ("s2", 26380),
        ("::1", 26381),
    ]
    for s in sentinels:
        # The master's password is not the sentinels'.
        assert s["password"] is None
        assert (s["socket_timeout"], s["socket_connect_timeout"]) == (2, 3)


def test_sentinel_url_with_the_sentinels_credentials(clients: list[Any]) -> None:
    client = make(
        clients,
        "redis+sentinel://:master@s1/m?sentinel_username=watch&sentinel_password=guard",
    )
    assert client.connection_pool.connection_kwargs["password"] == "master"
    assert client.connection_pool.connection_kwargs.get("db", 0) == 0
    for s in sentinel_kwargs(client):
        assert (s["username"], s["password"]) == ("watch", "guard")


def test_tls_sentinel_url(clients: list[Any]) -> None:
    """TLS to the master and to the sentinels, with the same CA; or to the master alone."""
    client = make(clients, "rediss+sentinel://s1,s2/m", ssl_ca_certs="/etc/ca.pem")
    assert client.connection_pool.connection_class is SentinelManagedSSLConnection
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    manager = client.connection_pool.sentinel_manager
    for sentinel in manager.sentinels:
        assert sentinel.connection_pool.connection_class is SSLConnection
        assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    plain = make(clients, "rediss+sentinel://s1/m?sentinel_ssl=false")
    assert plain.connection_pool.connection_class is SentinelManagedSSLConnection
    sentinel = plain.connection_pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_class is not SSLConnection


def test_closing_a_sentinel_client_closes_its_sentinels(monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_from_url("redis+sentinel://s1,s2,s3/m")
    closed = []
    for sentinel in client.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        monkeypatch.setattr(sentinel, "close", lambda s=sentinel: closed.append(s))
    client.close()
    assert len(closed) == 3


def test_broker_from_a_sentinel_url() -> None:
    broker = RedisBroker.from_url("redis+sentinel://s1:26379,s2:26379/m", sync_clock=False)
    try:
        assert broker.redis.connection_pool.service_name == "m"  # type: ignore[attr-defined]
        # from_url's defaults apply to the master and to the sentinels.
        assert broker.redis.connection_pool.connection_kwargs["socket_timeout"] == 10
        for s in sentinel_kwargs(broker.redis):
            assert s["socket_timeout"] == 10
            assert s["socket_keepalive"] is True
    finally:
        broker.close()


# -- the errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "it has no scheme"),
        ("http://localhost", "it has the scheme http://"),
        ("REDIS://localhost", "it has the scheme REDIS://"),
        ("redis://localhost:port", "Port could not be cast"),
        ("redis://localhost?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("redis+cluster://", "it names no node"),
        ("redis+cluster://a:7000,b:7000", "it names several nodes"),
        ("redis+cluster://a:7000/1", "a cluster has only database 0"),
        ("redis+cluster://a:7000?db=2", "a cluster has only database 0"),
        ("redis+cluster://[::1", "Invalid IPv6 URL"),
        ("redis+sentinel://s1:26379", "it names no service"),
        ("redis+sentinel://s1:26379/", "it names no service"),
        ("redis+sentinel:///m", "it names no sentinel"),
        ("redis+sentinel://s1,,s2/m", "it names no sentinel"),
        ("redis+sentinel://:26379/m", "has no host"),
        ("redis+sentinel://s1:port/m", "'s1:port' is not a port number"),
        ("redis+sentinel://s1:70000/m", "'s1:70000' is not a port number"),
        ("redis+sentinel://[::1]x/m", "'[::1]x' is malformed"),
        ("redis+sentinel://s1/m/zero", "its database 'zero' is not a number"),
        ("redis+sentinel://s1/m/0/1", "more than a service name and a database"),
        ("redis+sentinel://s1/m/1?db=2", "it gives the database twice"),
        ("redis+sentinel://s1/m?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("redis+sentinel://s1/m?sentinel_ssl=maybe", "is neither true nor false"),
        ("redis+sentinel://s1/m?sentinel_ssl=yes", "begin it with rediss+sentinel://"),
    ],
)
def test_bad_urls(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        client_from_url(url)
    message = str(raised.value)
    assert says in message
    # What to write instead, and no doubled full stop from redis-py's messages.
    assert "Write " in message
    assert ".." not in message


@pytest.mark.parametrize(
    ("scheme", "form"),
    [
        ("ftp", "redis+sentinel://"),
        ("redis+cluster", "redis+cluster://[[user]:password@]host[:port]"),
        ("rediss+sentinel", "rediss+sentinel://[[user]:password@]host1:26379,host2:26379"),
    ],
)
def test_errors_show_the_form(scheme: str, form: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        client_from_url(f"{scheme}://a,b:x/1/2/3")
    assert form in str(raised.value).partition("Write ")[2]


def test_errors_hide_passwords() -> None:
    for url in (
        "http://user:hunter2@localhost/",
        "redis+sentinel://:hunter2@s1/m/x",
        "redis+sentinel://s1/m/x?sentinel_password=hunter2",
        "redis://:hunter2@localhost:port",
        "redis+sentinel://:hunter2@[::1/m",
    ):
        with pytest.raises(ConfigurationError) as raised:
            client_from_url(url)
        assert "hunter2" not in str(raised.value)
        assert "***" in str(raised.value)


def test_configuration_errors_are_value_errors() -> None:
    """Code catching redis-py's ValueError for a bad URL keeps working."""
    with pytest.raises(ValueError, match="Unsupported Redis URL"):
        RedisBroker.from_url("http://localhost")


def test_every_scheme_is_documented() -> None:
    assert set(SCHEMES) == {
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
        "redis+sentinel",
        "rediss+sentinel",
    }


def _raised_from(error: Exception, cause: Exception) -> Exception:
    """``error`` as raised by ``raise error from cause``."""
    try:
        raise error from cause
    except Exception as e:
        return e


def test_cluster_errors_are_told_apart() -> None:
    """A cluster client wraps what went wrong in RedisClusterException: bad
    credentials are a clear error, no node reached (as redis-py tells it) and a
    slot no node serves are outages, and anything else (a node not in cluster
    mode, a refused ACL permission) stays as it is."""
    from redis.exceptions import (
        AuthenticationError,
        AuthorizationError,
        RedisClusterException,
        RedisClusterUnreachableError,
        SlotNotCoveredError,
    )

    from spinach.brokers.redis.errors import translated
    from spinach.exc import BrokerConnectionError

    refused = _raised_from(RedisClusterException("no node"), AuthenticationError("WRONGPASS"))
    assert isinstance(translated(refused), BrokerConnectionError)
    assert "user and password" in str(translated(refused))
    gone = _raised_from(
        RedisClusterUnreachableError("no node"), ConnectionRefusedError(111, "refused")
    )
    assert type(translated(gone)) is redis.ConnectionError
    assert type(translated(SlotNotCoveredError("slot 12 is not covered"))) is redis.ConnectionError
    forbidden = _raised_from(RedisClusterException("no node"), AuthorizationError("NOPERM"))
    assert translated(forbidden) is None
    assert translated(RedisClusterException("Cluster mode is not enabled on this node")) is None
    assert translated(redis.ConnectionError("reset")) is None  # an outage, raised as it is
