"""The RedisBroker on a Sentinel-managed master, through a failover under load."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.sentinel import Sentinel

from spinach import Engine, Tasks
from spinach.brokers.redis import RedisBroker
from spinach.testing import wait_for
from spinach.testing.redis_server import RedisServer, free_port


def need_redis_server() -> None:
    """Fail in CI, skip elsewhere, when redis-server or redis-cli is missing."""
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    message = "redis-server and redis-cli are needed for the cluster and Sentinel tests"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Sentinels:
    """A master, a replica and three sentinels watching them under the name ``m``."""

    def __init__(self, directory: str) -> None:
        os.mkdir(os.path.join(directory, "master"))
        os.mkdir(os.path.join(directory, "replica"))
        self.master = RedisServer(os.path.join(directory, "master"))
        self.replica = RedisServer(os.path.join(directory, "replica"))
        self.directory = directory
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.master.start()
        self.replica.start("--replicaof", "127.0.0.1", str(self.master.port))
        for i, port in enumerate(self.sentinel_ports):
            conf = os.path.join(self.directory, f"sentinel-{i}.conf")
            with open(conf, "w") as f:
                f.write(
                    f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                    f"sentinel monitor m 127.0.0.1 {self.master.port} 2\n"
                    "sentinel down-after-milliseconds m 1000\n"
                    "sentinel failover-timeout m 5000\n"
                )
            self.sentinels.append(
                subprocess.Popen(
                    ["redis-server", conf, "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_for(self._ready, timeout=30, interval=0.05)

    def _ready(self) -> bool:
        """Every sentinel knows the replica and the other sentinels, and the replica is in sync."""
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=2)
            try:
                state = client.sentinel_master("m")
                if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        client = redis.Redis(port=self.replica.port, socket_timeout=2)
        try:
            return client.info("replication")["master_link_status"] == "up"
        finally:
            client.close()

    def stop(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait()
        self.master.stop()
        self.replica.stop()


def running_sentinels() -> Iterator[Sentinels]:
    """Start a master, its replica and three sentinels; yield them."""
    need_redis_server()
    with tempfile.TemporaryDirectory() as directory:
        deployment = Sentinels(directory)
        try:
            deployment.start()
            yield deployment
        finally:
            deployment.stop()


@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    """A fresh master, replica and three sentinels: the test kills the master."""
    yield from running_sentinels()


@pytest.mark.timeout(120)
def test_workers_survive_a_failover(sentinels: Sentinels) -> None:
    """Workers follow the promoted replica and run every job acknowledged before the master died."""
    sentinel = Sentinel([("127.0.0.1", p) for p in sentinels.sentinel_ports], socket_timeout=1)
    client = sentinel.master_for("m", socket_timeout=2, socket_connect_timeout=1)
    runs: set[int] = set()
    lock = threading.Lock()
    started = threading.Event()
    released = threading.Event()

    def record(i: int) -> None:
        # The jobs after the first 50 wait for the master to die while running.
        if i >= 50:
            started.set()
            released.wait(30)
        with lock:
            runs.add(i)

    tasks = Tasks()
    tasks.add(record, "record", max_retries=5)
    namespace = f"sentinel-{uuid.uuid4().hex[:6]}"
    engine = Engine(RedisBroker(client), namespace, heartbeat_interval=0.1, dead_worker_timeout=5)
    engine.attach_tasks(tasks)
    jobs = 500
    for i in range(jobs):
        engine.schedule("record", i)
    # Acknowledged writes are safe once a replica has them.
    assert client.execute_command("WAIT", 1, 5000) == 1
    engine.start_workers(number=4, block=False)
    try:
        assert started.wait(10)
        sentinels.master.stop()
        released.set()
        wait_for(lambda: len(runs) == jobs, timeout=60)
        address = sentinel.discover_master("m")
        assert address == ("127.0.0.1", sentinels.replica.port)
    finally:
        released.set()
        engine.stop_workers()
        client.close()
    assert runs == set(range(jobs))
