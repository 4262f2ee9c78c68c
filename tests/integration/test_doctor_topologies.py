"""``spinach doctor`` on every URL form: a real 3-master Redis Cluster and a real
Sentinel service (a master, a replica, three sentinels), started by the tests."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from spinach import Engine
from spinach.brokers.redis import RedisBroker
from spinach.brokers.redis.keys import Keys
from spinach.brokers.redis.url import SCHEMES
from spinach.cli import load_target
from spinach.doctor import Report, TargetError, diagnose
from spinach.exc import ConfigurationError
from spinach.testing.redis_server import RedisServer, free_port

from .test_cluster import (
    _cluster_port,
    namespaces_on_every_master,
    need_redis_server,
    running_cluster,
)
from .test_doctor import PASSWORD, doctor, line_of
from .test_sentinel import Sentinels, running_sentinels

pytestmark = pytest.mark.timeout(180)

SENTINEL_PASSWORD = "sentinel-secret-4b1d9e2a7c"
#: The production checklist, set on a running server with CONFIG SET.
HARDENED = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "maxmemory": "100mb",
    "maxmemory-policy": "noeviction",
}
SERVER_CHECKS = ("persistence", "eviction", "authentication", "tls", "redis-version", "clock")


def configure(port: int, password: str | None, settings: dict[str, str]) -> None:
    client = redis.Redis(port=port, password=password, socket_timeout=10)
    try:
        for name, value in settings.items():
            client.config_set(name, value)
    finally:
        client.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisServer]]:
    """A 3-master Redis Cluster set up per the production checklist, with a password."""
    for servers in running_cluster():
        for server in servers:
            # A node stalled by a loaded machine must not be declared failed mid-test.
            settings = {**HARDENED, "requirepass": PASSWORD, "cluster-node-timeout": "60000"}
            configure(server.port, None, settings)
        yield servers


@pytest.fixture(scope="module")
def sentinels() -> Iterator[Sentinels]:
    """A master with AOF and a replica wanting a password, and three sentinels wanting another."""
    for deployment in running_sentinels(PASSWORD, SENTINEL_PASSWORD):
        for server in (deployment.master, deployment.replica):
            configure(server.port, PASSWORD, HARDENED)
        # A master stalled by a loaded machine must not be failed over mid-test.
        for port in deployment.sentinel_ports:
            sentinel = redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=10)
            try:
                sentinel.sentinel_set("m", "down-after-milliseconds", 60000)
            finally:
                sentinel.close()
        yield deployment


def cluster_url(servers: list[RedisServer]) -> str:
    return f"redis+cluster://:{PASSWORD}@127.0.0.1:{servers[0].port}"


def masters(servers: list[RedisServer]) -> set[str]:
    return {f"127.0.0.1:{server.port}" for server in servers}


def by_check(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for check in report["checks"]:
        found.setdefault(check["name"], []).append(check)
    return found


@contextlib.contextmanager
def setting(server: RedisServer, name: str, value: str) -> Iterator[None]:
    """Change one setting of a server for the block, then put the checklist's back."""
    client = redis.Redis(port=server.port, password=PASSWORD, socket_timeout=10)
    before = client.config_get(name)[name]
    try:
        client.config_set(name, value)
        yield
    finally:
        # The same connection, still logged in when the password was taken away.
        client.config_set(name, before)
        client.close()


def test_cli_passes_on_a_hardened_cluster_checking_every_master(
    cluster: list[RedisServer], tmp_path: Path
) -> None:
    """On a cluster set up per the checklist, the CLI checks every master and exits 0."""
    result = doctor(cluster_url(cluster), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] is False
    assert report["target"] == f"redis+cluster://127.0.0.1:{cluster[0].port}"
    checks = by_check(report)
    [info] = checks["cluster"]
    assert info["status"] == "info"
    assert "Redis Cluster of 3 master(s)" in info["detail"]
    for name in (*SERVER_CHECKS, "dedicated-server"):
        assert {c["node"] for c in checks[name]} == masters(cluster), name
        assert {c["status"] for c in checks[name]} == {"pass"}, checks[name]
    assert report["counts"]["fail"] == 0
    assert report["counts"]["info"] == 1
    assert PASSWORD not in result.stdout


@pytest.mark.parametrize(
    ("name", "value", "check", "reason"),
    [
        ("appendonly", "no", "persistence", "AOF is off"),
        ("maxmemory-policy", "allkeys-lru", "eviction", "maxmemory-policy allkeys-lru"),
        ("requirepass", "", "authentication", "the default user needs no password"),
    ],
)
def test_cli_fails_on_a_cluster_naming_the_master_with_a_bad_setting(
    cluster: list[RedisServer], tmp_path: Path, name: str, value: str, check: str, reason: str
) -> None:
    """One master with a bad setting fails the report, on a line naming that master and the fix."""
    bad = cluster[1]
    with setting(bad, name, value):
        result = doctor(cluster_url(cluster), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("[FAIL]")]
    assert failed == [line_of(result.stdout, f"{check} on 127.0.0.1:{bad.port}")]
    assert reason in failed[0]
    assert " -> fix: " in failed[0]
    for server in cluster:
        if server is not bad:
            assert line_of(result.stdout, f"{check} on 127.0.0.1:{server.port}").startswith(
                "[PASS]"
            )
    assert result.stdout.rstrip().endswith("passed")


def test_keys_of_every_master_are_read(cluster: list[RedisServer]) -> None:
    """Namespaces, workers and foreign keys are found on whichever master holds them."""
    client = redis.RedisCluster(host="127.0.0.1", port=cluster[0].port, password=PASSWORD)
    namespaces = namespaces_on_every_master(client)
    foreign = f"cache:{uuid.uuid4().hex[:6]}"
    holders = {ns: client.get_node_from_key(Keys.of(ns).workers) for ns in namespaces}
    try:
        for namespace in namespaces:
            seconds, _ = client.get_redis_connection(holders[namespace]).time()
            client.zadd(Keys.of(namespace).workers, {"worker": seconds})
        client.set(foreign, "cached")
        holder = client.get_node_from_key(foreign).name
        report = diagnose(cluster_url(cluster))
    finally:
        client.delete(foreign, *(Keys.of(namespace).workers for namespace in namespaces))
        client.close()
    checks = {(c.name, c.node): c for c in report.checks}
    for node in masters(cluster):
        dedicated = checks["dedicated-server", node]
        assert dedicated.status == ("warn" if node == holder else "pass"), dedicated.detail
    assert repr(foreign) in checks["dedicated-server", holder].detail
    namespaces_check = checks["namespaces", None]
    workers = checks["workers", None]
    assert workers.status == "pass", workers.detail
    assert f"{len(namespaces)} namespace(s)" in namespaces_check.detail
    assert len(namespaces) == len(cluster)
    for namespace in namespaces:
        node = holders[namespace].name
        assert f"{namespace!r} (1 keys on {node})" in namespaces_check.detail
        assert f"{namespace!r} on {node}: 1 live worker process(es)" in workers.detail


def test_an_engine_on_a_cluster_is_checked_on_every_master(cluster: list[RedisServer]) -> None:
    """diagnose(engine) with a cluster broker checks every master and finds its namespace's node."""
    broker = RedisBroker.from_url(cluster_url(cluster))
    engine = Engine(broker, f"cl-{uuid.uuid4().hex[:6]}")
    try:
        report = diagnose(engine)
    finally:
        broker.close()
    assert not report.failed
    assert report.target.startswith("redis+cluster://127.0.0.1:")
    assert {c.node for c in report.checks if c.name == "persistence"} == masters(cluster)
    [workers] = [c for c in report.checks if c.name == "workers"]
    assert workers.status == "warn"
    assert "this namespace has no live worker" in workers.detail


def test_a_single_server_url_to_a_cluster_node_warns(cluster: list[RedisServer]) -> None:
    """A redis:// URL to a cluster node warns that only it was checked, naming the URL to use."""
    port = cluster[0].port
    report = diagnose(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    [check] = [c for c in report.checks if c.name == "cluster"]
    assert check.status == "warn"
    assert "MOVED" in check.detail
    assert check.fix is not None
    assert f"redis+cluster://127.0.0.1:{port}" in check.fix


def test_a_slot_without_a_master_is_a_warning(tmp_path: Path) -> None:
    """A cluster whose state is not ok warns, and a namespace in an unserved slot has no worker.

    From a URL, the cluster client refuses the cluster, and the CLI says what to do.
    """
    need_redis_server()
    namespace = "orphan"
    missing = key_slot(Keys.of(namespace).workers.encode())
    server = RedisServer(str(tmp_path), port=_cluster_port())
    server.start(
        "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf")
    )  # fmt: skip
    try:
        client = redis.Redis(port=server.port)
        client.execute_command("CLUSTER ADDSLOTS", *(s for s in range(16384) if s != missing))
        client.close()
        url = f"redis+cluster://127.0.0.1:{server.port}"
        result = doctor(url, cwd=tmp_path)
        broker = RedisBroker.from_url(url, require_full_coverage=False)
        try:
            report = diagnose(Engine(broker, namespace))
        finally:
            broker.close()
    finally:
        server.stop()
    assert result.returncode == 2
    assert "16383 of 16384 covered" in result.stderr
    assert "Some hash slots have no master" in result.stderr
    checks = {c.name: c for c in report.checks}
    assert checks["cluster"].status == "warn"
    assert f"cluster_state is fail on 127.0.0.1:{server.port}" in checks["cluster"].detail
    assert checks["cluster"].fix is not None
    assert "redis-cli --cluster check" in checks["cluster"].fix
    assert checks["workers"].status == "warn"
    assert "'orphan': no master serves its hash slot" in checks["workers"].detail


def test_a_cluster_with_a_wrong_password_exits_2(
    cluster: list[RedisServer], tmp_path: Path
) -> None:
    """A cluster URL with a wrong password exits 2, saying so without showing it."""
    result = doctor(f"redis+cluster://:wrong-password@127.0.0.1:{cluster[0].port}", cwd=tmp_path)
    assert result.returncode == 2
    assert "Cannot use the Redis Cluster at redis+cluster://127.0.0.1:" in result.stderr
    assert "invalid username-password pair" in result.stderr
    assert "wrong-password" not in result.stderr


def test_cli_checks_the_master_of_a_sentinel_service(sentinels: Sentinels, tmp_path: Path) -> None:
    """Through the sentinels, the CLI checks the master and counts sentinels and replicas."""
    result = doctor(sentinels.url(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    master = f"127.0.0.1:{sentinels.master.port}"
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinels.sentinel_ports)
    assert result.stdout.startswith(f"spinach doctor: redis+sentinel://{hosts}/m/0\n")
    info = line_of(result.stdout, "sentinel")
    assert info.startswith(f"[INFO] sentinel: service 'm', master {master}: 3 of the 3 ")
    assert "they know 3 in all, quorum 2" in info
    assert "the master has 1 replica(s)" in info
    for name in SERVER_CHECKS:
        assert line_of(result.stdout, f"{name} on {master}").startswith("[PASS]"), name
    assert PASSWORD not in result.stdout
    assert SENTINEL_PASSWORD not in result.stdout


def test_a_master_with_a_bad_setting_fails_through_the_sentinels(sentinels: Sentinels) -> None:
    """A master the sentinels name fails the report when its AOF is off, naming it."""
    with setting(sentinels.master, "appendonly", "no"):
        report = diagnose(sentinels.url())
    assert report.failed
    [persistence] = [c for c in report.checks if c.name == "persistence"]
    assert persistence.status == "fail"
    assert persistence.node == f"127.0.0.1:{sentinels.master.port}"
    assert json.loads(report.to_json())["checks"][1]["node"] == persistence.node


def test_fewer_than_three_sentinels_is_a_warning(sentinels: Sentinels) -> None:
    """A URL naming one of the three sentinels warns, and says to list every one."""
    url = (
        f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinels.sentinel_ports[0]}/m/0"
        f"?sentinel_password={SENTINEL_PASSWORD}"
    )
    report = diagnose(url)
    [check] = [c for c in report.checks if c.name == "sentinel"]
    assert check.status == "warn"
    assert "1 of the 1 sentinel(s) of the target answered (they know 3 in all" in check.detail
    assert "fewer than 3 sentinels answered" in check.detail
    assert check.fix is not None
    assert "list every sentinel in the URL (they know 3)" in check.fix
    assert not report.failed


def test_a_sentinel_that_does_not_answer_is_named(sentinels: Sentinels) -> None:
    """A sentinel of the URL that does not answer makes a warning that names it."""
    silent = f"127.0.0.1:{free_port()}"
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinels.sentinel_ports)
    url = f"redis+sentinel://:{PASSWORD}@{hosts},{silent}/m?sentinel_password={SENTINEL_PASSWORD}"
    [check] = [c for c in diagnose(url).checks if c.name == "sentinel"]
    assert check.status == "warn"
    assert "3 of the 4 sentinel(s)" in check.detail
    assert f"sentinel(s) {silent} (" in check.detail
    assert check.fix is not None
    assert "bring back the sentinels that did not answer" in check.fix


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"/m/0": "/nope/0"}, "monitor no service 'nope'"),
        ({SENTINEL_PASSWORD: "wrong-password"}, "No sentinel of redis+sentinel://"),
        ({PASSWORD: "wrong-password"}, "refused the user or password of the URL"),
    ],
    ids=["service", "sentinel-password", "master-password"],
)
def test_a_sentinel_target_that_cannot_be_used_exits_2(
    sentinels: Sentinels, tmp_path: Path, change: dict[str, str], reason: str
) -> None:
    """A wrong service name or password exits 2, saying what to fix, without the passwords."""
    url = sentinels.url()
    for old, new in change.items():
        url = url.replace(old, new)
    result = doctor(url, cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert reason in result.stderr
    for secret in (PASSWORD, SENTINEL_PASSWORD, "wrong-password"):
        assert secret not in result.stderr


def test_a_cluster_url_to_a_single_server_says_what_to_write(tmp_path: Path) -> None:
    """A redis+cluster:// URL to a server that is not a cluster node exits 2, saying why."""
    need_redis_server()
    with RedisServer(str(tmp_path)) as server:
        result = doctor(f"redis+cluster://127.0.0.1:{server.port}", cwd=tmp_path)
    assert result.returncode == 2
    assert "Cluster mode is not enabled" in result.stderr
    assert "use a redis:// URL for a single server" in result.stderr


def test_a_single_server_url_to_a_sentinel_says_what_to_write(sentinels: Sentinels) -> None:
    """A redis:// URL to a sentinel is refused with the redis+sentinel:// URL to use instead."""
    port = sentinels.sentinel_ports[0]
    with pytest.raises(TargetError, match=rf"redis\+sentinel://127.0.0.1:{port}/<service name>"):
        diagnose(f"redis://:{SENTINEL_PASSWORD}@127.0.0.1:{port}/0")


def _example(scheme: str, tmp_path: Path) -> str:
    """A URL of ``scheme`` where nothing answers."""
    port = free_port()
    if scheme == "unix":
        return f"unix://{tmp_path / 'no-redis.sock'}?db=0"
    if scheme.endswith("+sentinel"):
        return f"{scheme}://127.0.0.1:{port}/service/0"
    return f"{scheme}://127.0.0.1:{port}" + ("" if "+" in scheme else "/0")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_url_form_of_the_broker_is_taken(scheme: str, tmp_path: Path) -> None:
    """Every scheme RedisBroker.from_url takes is a URL to the doctor: it fails only to connect."""
    url = _example(scheme, tmp_path)
    assert load_target(url) == url
    try:
        RedisBroker.from_url(url).close()
    except ConfigurationError:
        pytest.fail(f"RedisBroker.from_url refuses the example {url!r}")
    except (redis.RedisError, RedisClusterException):
        pass  # a cluster client connects as it is made
    with pytest.raises(TargetError) as raised:
        diagnose(url)
    message = str(raised.value)
    assert "Unsupported" not in message
    assert "Invalid" not in message
    assert any(
        words in message
        for words in ("Cannot reach Redis", "Cannot use the Redis Cluster", "No sentinel")
    ), message


def test_a_scheme_the_broker_refuses_is_refused_with_its_message() -> None:
    """A URL of a scheme the broker does not take is refused with the broker's own message."""
    with pytest.raises(ConfigurationError) as broker_error:
        RedisBroker.from_url("memcached://127.0.0.1:11211")
    with pytest.raises(TargetError) as doctor_error:
        diagnose("memcached://127.0.0.1:11211")
    assert str(doctor_error.value) == str(broker_error.value)


def test_keys_parse_reads_back_every_key_of_a_namespace() -> None:
    """Keys.parse reads the namespace and rest of every key Keys.of makes; None for others."""
    keys = Keys.of("shop:eu")
    names = [
        keys.payloads, keys.seq, keys.queues, keys.running, keys.limits, keys.in_flight,
        keys.failed, keys.future, keys.periodic, keys.periodic_next, keys.calls,
        keys.workers, keys.channel, keys.enqueue_marker("c1"), keys.ready("q"), keys.parked("q"),
    ]  # fmt: skip
    for key in names:
        assert Keys.parse(key) == ("shop:eu", key[len(keys.prefix) :])
    assert Keys.parse(Keys.of("").seq) == ("", "seq")
    for other in ("cache:1", "spinach:shop:seq", "spinach:{a{b}:seq", "spinach:{a}b}:seq", "x"):
        assert Keys.parse(other) is None, other


def test_report_of_a_single_server_names_no_node(tmp_path: Path) -> None:
    """On a single server the checks name no node, and the text lines keep their form."""
    need_redis_server()
    with RedisServer(str(tmp_path)) as server:
        report: Report = diagnose(server.url)
    assert {c.node for c in report.checks} == {None}
    assert "[FAIL] persistence: AOF is off" in report.to_text()
    assert report.counts()["info"] == 0
