"""Script calls on a connection of the client's pool (spinach.brokers.redis.direct):
taken for a plain client, not for an instrumented one, and as safe as the client's."""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections.abc import Iterator
from typing import Any, Callable
from urllib.parse import urlparse

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from spinach import Engine
from spinach.brokers.redis import RedisBroker


def _engine(client: redis.Redis, namespace: str) -> Engine:
    engine = Engine(RedisBroker(client), namespace)
    engine.task(lambda: None, name="noop")
    return engine


def _loaded(engine: Engine) -> None:
    """Schedule and fetch once: the scripts are loaded (a script Redis lacks is
    loaded through the client, whatever the path)."""
    engine.schedule("noop")
    engine.broker.get_jobs_from_queue("spinach", 10)
    engine.broker.flush()  # the namespace's keys; Redis keeps the scripts


@pytest.fixture
def evalsha_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The calls of redis.Redis.evalsha, which only the execute_command path makes
    (the direct path sends EVALSHA on the connection)."""
    seen: list[Any] = []
    own = redis.Redis.evalsha

    def spy(self: redis.Redis, *args: Any) -> Any:
        seen.append(args[0])
        return own(self, *args)

    monkeypatch.setattr(redis.Redis, "evalsha", spy)
    return seen


def test_a_plain_client_runs_scripts_without_its_execute_command(
    redis_client: redis.Redis, namespace: str, evalsha_calls: list[Any]
) -> None:
    """The scripts go straight to a pooled connection; replies read the same."""
    engine = _engine(redis_client, namespace)
    _loaded(engine)
    evalsha_calls.clear()
    job = engine.schedule("noop")
    (got,) = engine.broker.get_jobs_from_queue("spinach", 10)
    assert got.id == job.id
    assert got.task_name == "noop"
    assert evalsha_calls == []
    engine.broker.flush()


def _recording(seen: list[Any], own: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(own)
    def wrapper(*args: Any, **options: Any) -> Any:
        seen.append(next(a for a in args if isinstance(a, str)))
        return own(*args, **options)

    return wrapper


def _assert_both_scripts_seen(client: redis.Redis, namespace: str, seen: list[Any]) -> None:
    """A schedule and a fetch (the scripts loaded first) go through the recorder."""
    engine = _engine(client, namespace)
    _loaded(engine)
    seen.clear()
    engine.schedule("noop")
    engine.broker.get_jobs_from_queue("spinach", 10)
    assert seen.count("EVALSHA") == 2
    engine.broker.flush()
    client.close()


def test_a_client_instrumented_on_its_class_keeps_its_spans(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's execute_command wrapped in place (as OpenTelemetry's and
    Datadog's instrumentations do): every script call goes through it."""
    seen: list[Any] = []
    monkeypatch.setattr(
        redis.Redis, "execute_command", _recording(seen, redis.Redis.execute_command)
    )
    client = redis.Redis.from_url(redis_url)
    _assert_both_scripts_seen(client, namespace, seen)


def test_a_client_instrumented_by_itself_keeps_its_spans(redis_url: str, namespace: str) -> None:
    """execute_command wrapped on the client object (OpenTelemetry's
    instrument_client does that): every script call goes through it."""
    seen: list[Any] = []
    client = redis.Redis.from_url(redis_url)
    client.execute_command = _recording(seen, client.execute_command)  # type: ignore[method-assign]
    _assert_both_scripts_seen(client, namespace, seen)


class _CuttingProxy:
    """A TCP proxy to Redis that, once armed, forwards the next request holding
    EVALSHA and then closes the client's connection: the reply never reaches it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.armed = threading.Event()
        self.cuts = 0
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(self._upstream)
            cut = threading.Event()
            for source, sink, requests in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, requests, cut), daemon=True
                ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, requests: bool, cut: threading.Event
    ) -> None:
        try:
            while data := source.recv(65536):
                if requests and b"EVALSHA" in data and self.armed.is_set():
                    # Cut before the request goes on: its reply is dropped, never sent.
                    cut.set()
                    self.armed.clear()
                    self.cuts += 1
                    sink.sendall(data)
                    break
                if cut.is_set():
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def cutting_proxy(redis_url: str) -> Iterator[_CuttingProxy]:
    url = urlparse(redis_url)
    proxy = _CuttingProxy((url.hostname or "127.0.0.1", url.port or 6379))
    yield proxy
    proxy.close()


def test_a_reply_lost_is_retried_by_the_connections_policy(
    cutting_proxy: _CuttingProxy, namespace: str, evalsha_calls: list[Any]
) -> None:
    """A fetch whose connection is cut after the request, before the reply, is
    sent again on a new connection as the client's retry policy says (the
    fetch is safe to retry: it hands out the jobs of its first run), the
    connection goes back to the pool of one, and the job is handed out once."""
    pool = redis.BlockingConnectionPool(
        port=cutting_proxy.port,
        max_connections=1,
        timeout=2,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.ConnectionError],
    )
    client = redis.Redis(connection_pool=pool)
    engine = _engine(client, namespace)
    _loaded(engine)
    job = engine.schedule("noop")
    evalsha_calls.clear()
    connections = cutting_proxy.connections
    cutting_proxy.armed.set()
    (got,) = engine.broker.get_jobs_from_queue("spinach", 10)
    assert cutting_proxy.cuts == 1
    assert cutting_proxy.connections == connections + 1  # sent again on a new one
    assert evalsha_calls == []  # the direct path, retrying
    assert got.id == job.id
    assert engine.broker.get_jobs_from_queue("spinach", 10) == []
    assert engine.broker.count_jobs().running == 1
    engine.broker.flush()
    client.close()


def test_without_retries_a_reply_lost_is_raised(
    cutting_proxy: _CuttingProxy, namespace: str, evalsha_calls: list[Any]
) -> None:
    """A client without retries: the cut is raised (as execute_command raises it),
    and the connection still goes back to the pool of one."""
    pool = redis.BlockingConnectionPool(
        port=cutting_proxy.port, max_connections=1, timeout=2, retry=Retry(NoBackoff(), 0)
    )
    client = redis.Redis(connection_pool=pool)
    engine = _engine(client, namespace)
    _loaded(engine)
    engine.schedule("noop")
    evalsha_calls.clear()
    cutting_proxy.armed.set()
    with pytest.raises(redis.ConnectionError):
        engine.broker.get_jobs_from_queue("spinach", 10)
    assert cutting_proxy.cuts == 1
    assert evalsha_calls == []
    # The lost fetch's job is put back first, then handed out again.
    assert len(engine.broker.get_jobs_from_queue("spinach", 10)) == 1
    engine.broker.flush()
    client.close()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: type("Mine", (redis.Redis,), {})(), id="a subclass"),
        pytest.param(lambda: redis.Redis(single_connection_client=True), id="single connection"),
    ],
)
def test_clients_that_keep_execute_command(make: Callable[[], redis.Redis]) -> None:
    from spinach.brokers.redis.direct import _direct

    client = make()
    assert not _direct(client)
    assert _direct(redis.Redis())
    client.close()


def test_a_client_side_cache_keeps_execute_command() -> None:
    from spinach.brokers.redis.direct import _direct

    cache = pytest.importorskip("redis.cache")  # client-side caching: redis-py 5.1 on
    client = redis.Redis(protocol=3, cache_config=cache.CacheConfig())
    assert not _direct(client)
    client.close()


@pytest.mark.parametrize("name", ["execute_command", "parse_response"])
def test_a_method_replaced_on_the_class_keeps_execute_command(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaced by a plain function, not wrapped (as Sentry's integration does)."""
    from spinach.brokers.redis.direct import _direct

    own = getattr(redis.Redis, name)

    def replacement(self: redis.Redis, *args: Any, **options: Any) -> Any:
        return own(self, *args, **options)

    monkeypatch.setattr(redis.Redis, name, replacement)
    assert not _direct(redis.Redis())


def test_a_read_only_replica_is_reported_as_such(tmp_path: Any, namespace: str) -> None:
    """Scheduling on a replica (a master demoted by a failover) raises redis-py's
    ReadOnlyError, which Sentinel clients take as "reconnect to the new master":
    the script's first write keeps the code of its error."""
    from spinach.testing.redis_server import RedisServer

    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    master = RedisServer(str(tmp_path / "master"))
    replica = RedisServer(str(tmp_path / "replica"))
    master.start()
    try:
        replica.start("--replicaof", "127.0.0.1", str(master.port))
        client = redis.Redis.from_url(replica.url)
        engine = _engine(client, namespace)
        with pytest.raises(redis.exceptions.ReadOnlyError):
            engine.schedule("noop")
        client.close()
    finally:
        replica.stop()
        master.stop()
