"""The RedisBroker on a real 3-master Redis Cluster, started by the tests on loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest
import redis
import redis.asyncio

from spinach import Engine, Tasks
from spinach.brokers.base import Broker
from spinach.brokers.redis import RedisBroker
from spinach.brokers.redis.keys import Keys
from spinach.clock import ManualClock
from spinach.exc import BrokerConnectionError
from spinach.job import Job
from spinach.testing import wait_for
from spinach.testing.contract import BrokerContract, MakeBroker
from spinach.testing.redis_server import RedisServer, free_port


def need_redis_server() -> None:
    """Fail in CI, skip elsewhere, when redis-server or redis-cli is missing."""
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    message = "redis-server and redis-cli are needed for the cluster and Sentinel tests"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        info = client.execute_command("CLUSTER INFO")
        return bool(info["cluster_state"] == "ok")
    except redis.RedisError:
        return False
    finally:
        client.close()


def _slots_agree(ports: list[int]) -> bool:
    """Every node knows every slot's owner: a client may start on any of them."""
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            if len(client.execute_command("CLUSTER SLOTS")) != len(ports):
                return False
        finally:
            client.close()
    return True


def running_cluster(masters: int = 3) -> Iterator[list[RedisServer]]:
    """Start a Redis Cluster of ``masters`` masters and no replicas; yield its servers."""
    need_redis_server()
    with tempfile.TemporaryDirectory() as directory:
        servers = []
        try:
            for i in range(masters):
                node_dir = os.path.join(directory, str(i))
                os.mkdir(node_dir)
                server = RedisServer(node_dir, port=_cluster_port())
                server.start(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", os.path.join(node_dir, "nodes.conf"),
                    "--cluster-node-timeout", "2000",
                )  # fmt: skip
                servers.append(server)
            subprocess.run(
                [
                    "redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{s.port}" for s in servers),
                    "--cluster-replicas", "0", "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=60,
            )  # fmt: skip
            ports = [s.port for s in servers]
            wait_for(lambda: all(_cluster_ok(p) for p in ports), timeout=30, interval=0.05)
            wait_for(lambda: _slots_agree(ports), timeout=30, interval=0.05)
            yield servers
        finally:
            for server in servers:
                server.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[list[RedisServer]]:
    """A 3-master Redis Cluster shared by the tests of this module."""
    yield from running_cluster()


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
def cluster_client(
    request: pytest.FixtureRequest, cluster: list[RedisServer]
) -> Iterator[redis.RedisCluster]:
    """A cluster client, decoding responses or not."""
    client = redis.RedisCluster(
        host="127.0.0.1", port=cluster[0].port, decode_responses=request.param
    )
    yield client
    client.close()


def namespaces_on_every_master(client: redis.RedisCluster, per_master: int = 1) -> list[str]:
    """Namespaces whose slots are served by every master of the cluster, ``per_master`` each."""
    found: dict[str, list[str]] = {n.name: [] for n in client.get_primaries()}
    while any(len(names) < per_master for names in found.values()):
        namespace = f"cl-{uuid.uuid4().hex[:8]}"
        names = found[client.get_node_from_key(Keys.of(namespace).channel).name]
        if len(names) < per_master:
            names.append(namespace)
    return [n for names in found.values() for n in names]


class TestRedisClusterBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, clock: ManualClock, cluster_client: redis.RedisCluster) -> MakeBroker:
        port, decode = (
            cluster_client.get_default_node().port,
            cluster_client.get_encoder().decode_responses,
        )

        def make(namespace: str) -> Broker:
            broker = RedisBroker(
                cluster_client,
                clock=clock,
                sync_clock=False,
                async_redis=lambda: redis.asyncio.RedisCluster(
                    host="127.0.0.1", port=port, decode_responses=decode
                ),
            )
            broker.namespace = namespace
            return broker

        return make


def test_namespaces_spread_over_the_masters(cluster: list[RedisServer]) -> None:
    """Engines of namespaces served by different masters each run their own jobs, once each."""
    url = f"redis+cluster://127.0.0.1:{cluster[0].port}"
    probe = redis.RedisCluster(host="127.0.0.1", port=cluster[0].port)
    namespaces = namespaces_on_every_master(probe, per_master=2)
    runs: dict[str, list[int]] = {ns: [] for ns in namespaces}
    engines = []
    try:
        for namespace in namespaces:
            tasks = Tasks()
            tasks.add(runs[namespace].append, "record", max_retries=2)
            engine = Engine(RedisBroker.from_url(url), namespace, heartbeat_interval=0.1)
            engine.attach_tasks(tasks)
            engine.start_workers(number=2, block=False)
            engines.append(engine)
        for engine in engines:
            for i in range(20):
                engine.schedule("record", i)
        wait_for(lambda: all(len(r) == 20 for r in runs.values()), timeout=30)
        assert all(sorted(r) == list(range(20)) for r in runs.values())
        # Each master holds the workers of the namespaces of its slots.
        holders = set()
        for namespace in namespaces:
            slot_node = probe.get_node_from_key(Keys.of(namespace).channel)
            node = redis.Redis(host=slot_node.host, port=slot_node.port)
            assert node.exists(Keys.of(namespace).workers)
            holders.add(slot_node.port)
            node.close()
        assert holders == {s.port for s in cluster}
    finally:
        for engine in engines:
            engine.stop_workers()
            engine._broker.flush()
            engine._broker.close()  # type: ignore[attr-defined]
        probe.close()


def test_idle_worker_is_notified_on_a_cluster(cluster: list[RedisServer]) -> None:
    """A broker waiting on a cluster is woken up by a job enqueued through another node."""
    first, last = cluster[0].port, cluster[-1].port
    probe = redis.RedisCluster(host="127.0.0.1", port=first)
    for namespace in namespaces_on_every_master(probe):
        waiting = RedisBroker.from_url(f"redis+cluster://127.0.0.1:{first}")
        producer = RedisBroker.from_url(f"redis+cluster://127.0.0.1:{last}")
        waiting.namespace = producer.namespace = namespace
        waiting.start()
        try:
            # The first wake-up comes once the subscription is in place.
            assert waiting.wait_for_event(10)
            producer.enqueue_jobs([Job("t", "q", datetime.now(timezone.utc), 0)])
            assert waiting.wait_for_event(10)
        finally:
            waiting.flush()
            waiting.close()
            producer.close()
    probe.close()


def _clients_named(servers: list[RedisServer], name: str) -> int:
    """How many connections the servers hold for clients of that name."""
    count = 0
    for server in servers:
        client = redis.Redis(port=server.port, socket_timeout=2)
        try:
            count += sum(1 for c in client.client_list() if c["name"] == name)
        finally:
            client.close()
    return count


def test_closing_a_broker_closes_its_connections_to_every_node(
    cluster: list[RedisServer], from_url: Callable[..., RedisBroker]
) -> None:
    """Closing a broker from a cluster URL closes its connections to every node at once.

    ``RedisCluster.close()`` of redis-py 8.1 leaves the connections of a
    ``RedisCluster.from_url`` client open, for the garbage collector to find.
    """
    name = f"close-{uuid.uuid4().hex[:8]}"
    broker = from_url(f"redis+cluster://127.0.0.1:{cluster[0].port}", client_name=name)
    probe = redis.RedisCluster(host="127.0.0.1", port=cluster[0].port)
    try:
        namespaces = namespaces_on_every_master(probe)
    finally:
        probe.close()
    for namespace in namespaces:
        broker.namespace = namespace
        assert broker.count_jobs().running == 0
    broker.start()
    assert broker.wait_for_event(10)  # the listener subscribed
    assert _clients_named(cluster, name) >= len(cluster)
    broker.close()
    wait_for(lambda: _clients_named(cluster, name) == 0, timeout=10, interval=0.02)


def test_a_cluster_gone_is_an_outage_for_schedule() -> None:
    """Once every node of its cluster is down, schedule tries again with backoff,
    then raises BrokerConnectionError, as with a single server gone."""
    with contextlib.contextmanager(running_cluster)(masters=3) as servers:
        client = redis.RedisCluster(
            host="127.0.0.1", port=servers[0].port, socket_connect_timeout=1, socket_timeout=1
        )
        broker = RedisBroker(client, enqueue_job_max_retries=1)
        engine = Engine(broker, "gone")
        engine.task(lambda n: n, name="t")
        engine.schedule("t", 1)
        for server in servers:
            server.stop()
        with pytest.raises(BrokerConnectionError, match=r"job of task 't' in Redis after 2 tries"):
            engine.schedule("t", 2)
        client.close()
