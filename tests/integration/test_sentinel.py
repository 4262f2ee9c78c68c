"""The RedisBroker on a Sentinel-managed master, through a failover under load."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.sentinel import Sentinel

from spinach import Engine, Tasks
from spinach.brokers.redis import RedisBroker
from spinach.testing import wait_for
from spinach.testing.redis_server import RedisServer, free_port

from .conftest import make_engine


def need_redis_server() -> None:
    """Fail in CI, skip elsewhere, when redis-server or redis-cli is missing."""
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    message = "redis-server and redis-cli are needed for the cluster and Sentinel tests"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Sentinels:
    """A master, a replica and three sentinels watching them under the name ``m``.

    With ``password``, the master and the replica want it; with
    ``sentinel_password``, the sentinels want that one.
    """

    #: The sentinels' down-after-milliseconds: how long the master must be
    #: silent before they start a failover.
    down_after_ms = 1000

    def __init__(
        self, directory: str, password: str | None = None, sentinel_password: str | None = None
    ) -> None:
        os.mkdir(os.path.join(directory, "master"))
        os.mkdir(os.path.join(directory, "replica"))
        self.master = RedisServer(os.path.join(directory, "master"))
        self.replica = RedisServer(os.path.join(directory, "replica"))
        self.directory = directory
        self.password = password
        self.sentinel_password = sentinel_password
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def url(self, scheme: str = "redis+sentinel", query: str = "") -> str:
        """The ``redis+sentinel://`` URL of the master, with the passwords."""
        userinfo = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        options = [query] if query else []
        if self.sentinel_password:
            options.append(f"sentinel_password={self.sentinel_password}")
        return f"{scheme}://{userinfo}{hosts}/m/0" + ("?" + "&".join(options) if options else "")

    def start(self, *, quorum: bool = True) -> None:
        """Start every process; with ``quorum``, return once the sentinels could fail over."""
        # A replica's first sync starts at once, not after the default 5 s delay.
        options = ["--repl-diskless-sync-delay", "0"]
        if self.password:
            options += ["--requirepass", self.password, "--masterauth", self.password]
        self.master.start(*options)
        self.replica.start("--replicaof", "127.0.0.1", str(self.master.port), *options)
        for i, port in enumerate(self.sentinel_ports):
            conf = os.path.join(self.directory, f"sentinel-{i}.conf")
            with open(conf, "w") as f:
                f.write(
                    f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                    f"sentinel monitor m 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds m {self.down_after_ms}\n"
                    "sentinel failover-timeout m 5000\n"
                )
                if self.password:
                    f.write(f"sentinel auth-pass m {self.password}\n")
                if self.sentinel_password:
                    f.write(f"requirepass {self.sentinel_password}\n")
                    f.write(f"sentinel sentinel-pass {self.sentinel_password}\n")
            self.sentinels.append(
                subprocess.Popen(
                    ["redis-server", conf, "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_for(lambda: self._ready(quorum), timeout=30, interval=0.05)

    def _ready(self, quorum: bool) -> bool:
        """Every sentinel knows the master (and, for a ``quorum``, the replica and the
        other sentinels), and the replica is in sync."""
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=2, password=self.sentinel_password)
            try:
                state = client.sentinel_master("m")
                if quorum and (state["num-slaves"] < 1 or state["num-other-sentinels"] < 2):
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        client = redis.Redis(port=self.replica.port, socket_timeout=2, password=self.password)
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


def running_sentinels(
    password: str | None = None, sentinel_password: str | None = None, *, quorum: bool = True
) -> Iterator[Sentinels]:
    """Start a master, its replica and three sentinels; yield them."""
    need_redis_server()
    with tempfile.TemporaryDirectory() as directory:
        deployment = Sentinels(directory, password, sentinel_password)
        try:
            deployment.start(quorum=quorum)
            yield deployment
        finally:
            deployment.stop()


@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    """A fresh master, replica and three sentinels: the test kills the master."""
    yield from running_sentinels()


@pytest.fixture
def guarded_sentinels() -> Iterator[Sentinels]:
    """A master and a replica wanting a password, and sentinels wanting another one."""
    yield from running_sentinels(
        password="master-secret", sentinel_password="sentinel-secret", quorum=False
    )


def _unfinished_jobs(broker: RedisBroker) -> int:
    """The jobs a server still holds (queued, future or running), as the broker counts them."""
    try:
        counts = broker.count_jobs()
    except redis.RedisError:
        return -1
    return sum(counts.queued.values()) + counts.future + counts.running


def _role(broker: RedisBroker) -> str:
    try:
        role = broker.redis.execute_command("ROLE")[0]
    except redis.RedisError:
        return "unknown"
    return role.decode() if isinstance(role, bytes) else str(role)


def _seconds(duration: float | None) -> str:
    return "-" if duration is None else f"{duration:.2f}"


@pytest.mark.timeout(120)
def test_workers_survive_a_failover(sentinels: Sentinels) -> None:
    """Workers follow the promoted replica and run every job acknowledged before the master died.

    It prints how long the master's loss stopped the jobs: from its SIGKILL
    until the sentinels promoted the replica (promoted_s), and until a job's
    end was recorded on it (failover_s).
    """
    sentinel = Sentinel([("127.0.0.1", p) for p in sentinels.sentinel_ports], socket_timeout=1)
    client = sentinel.master_for("m", socket_timeout=2, socket_connect_timeout=1)
    runs: set[int] = set()
    executions = 0
    lock = threading.Lock()
    started = threading.Event()
    released = threading.Event()

    def record(i: int) -> None:
        nonlocal executions
        # The jobs after the first 50 wait for the master to die while running.
        if i >= 50:
            started.set()
            released.wait(30)
        with lock:
            runs.add(i)
            executions += 1

    tasks = Tasks()
    tasks.add(record, "record", max_retries=5)
    namespace = f"sentinel-{uuid.uuid4().hex[:6]}"
    engine = Engine(RedisBroker(client), namespace, heartbeat_interval=0.1, dead_worker_timeout=5)
    engine.attach_tasks(tasks)
    # Counts the jobs the replica holds, before and after its promotion.
    replica = RedisBroker(redis.Redis(port=sentinels.replica.port, socket_timeout=2))
    replica.namespace = namespace
    jobs = 500
    for i in range(jobs):
        engine.schedule("record", i)
    # Acknowledged writes are safe once a replica has them.
    assert client.execute_command("WAIT", 1, 5000) == 1
    engine.start_workers(number=4, block=False)
    promoted: float | None = None
    failover: float | None = None
    try:
        assert started.wait(30)
        # The first 50 jobs are over and recorded on the replica too; no other job
        # can end before the kill.
        wait_for(lambda: len(runs) == 50 and _unfinished_jobs(replica) == jobs - 50, timeout=30)
        killed = time.monotonic()
        sentinels.master.stop()
        released.set()
        wait_for(lambda: _role(replica) == "master", timeout=60, interval=0.01)
        promoted = time.monotonic() - killed
        # Only the promoted replica can record the end of a job now.
        wait_for(lambda: 0 <= _unfinished_jobs(replica) < jobs - 50, timeout=60, interval=0.01)
        failover = time.monotonic() - killed
        wait_for(lambda: len(runs) == jobs, timeout=60)
        address = sentinel.discover_master("m")
        assert address == ("127.0.0.1", sentinels.replica.port)
    finally:
        released.set()
        engine.stop_workers()
        client.close()
        replica.close()
        for sentinel_client in sentinel.sentinels:
            sentinel_client.close()
        print(
            f"sentinel-failover: down_after_ms={sentinels.down_after_ms} "
            f"promoted_s={_seconds(promoted)} failover_s={_seconds(failover)} accepted={jobs} "
            f"succeeded={len(runs)} lost={jobs - len(runs)} ran_again={executions - len(runs)}"
        )
    assert runs == set(range(jobs))


def test_broker_from_a_sentinel_url(
    guarded_sentinels: Sentinels, namespace: str, from_url: Callable[..., RedisBroker]
) -> None:
    """A broker made from a redis+sentinel:// URL finds the master through sentinels
    wanting a password of their own, and runs jobs on it; so does its asyncio side."""
    broker = from_url(guarded_sentinels.url(query="socket_timeout=2"))
    runs: list[int] = []
    engine = make_engine(broker, namespace, runs)
    for i in range(10):
        engine.schedule("record", i)

    async def schedule_the_others() -> None:
        try:
            for i in range(10, 20):
                await engine.schedule_async("record", i)
        finally:
            await broker.close_async()

    asyncio.run(schedule_the_others())
    engine.start_workers(number=2, block=False)
    try:
        wait_for(lambda: len(runs) == 20, timeout=30)
    finally:
        engine.stop_workers()
    assert sorted(runs) == list(range(20))
    assert _unfinished_jobs(broker) == 0
    # The sentinels (with their password) named the master (with its own).
    pool = broker.redis.connection_pool
    assert pool.get_master_address() == ("127.0.0.1", guarded_sentinels.master.port)  # type: ignore[attr-defined]
