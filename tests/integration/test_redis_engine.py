"""The RedisBroker under an engine: notifications, clocks, bad input, outages, URLs."""

from __future__ import annotations

import logging
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from spinach import Batch, Engine
from spinach.brokers.base import JobCounts, RunningJobState
from spinach.brokers.redis import RedisBroker
from spinach.brokers.redis import broker as redis_broker
from spinach.clock import Clock
from spinach.exc import BrokerConnectionError, ConfigurationError
from spinach.job import Job, JobStatus
from spinach.task import Task
from spinach.testing import wait_for
from spinach.testing.redis_server import RedisServer, free_port

from .conftest import make_engine


class SkewedClock(Clock):
    """This host's clock, off by a fixed number of seconds."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew


def test_jobs_run_end_to_end(redis_client: redis.Redis, namespace: str) -> None:
    """Jobs scheduled on Redis run once each, with a client decoding responses or not."""
    runs: list[int] = []
    engine = make_engine(RedisBroker(redis_client), namespace, runs)
    for i in range(30):
        engine.schedule("record", i)
    engine.start_workers(number=4, stop_when_queue_empty=True)
    assert sorted(runs) == list(range(30))
    engine._broker.flush()


def test_idle_worker_is_notified_of_new_jobs(
    redis_url: str, namespace: str, from_url: Callable[..., RedisBroker]
) -> None:
    """A broker waiting for work is woken up by a job enqueued from another process."""
    waiting = from_url(redis_url)
    waiting.namespace = namespace
    producer = make_engine(from_url(redis_url), namespace, [])
    waiting.start()
    try:
        # The first wake-up comes once the subscription is in place.
        assert waiting.wait_for_event(10)
        producer.schedule("record", 1)
        assert waiting.wait_for_event(10)
        # A future job too: it may be due before the idle engine's next look.
        producer.schedule_at("record", producer.broker.now() + timedelta(seconds=30), 2)
        assert waiting.wait_for_event(10)
    finally:
        waiting.stop()
        waiting.flush()


@pytest.mark.parametrize("skew", [-600.0, 600.0])
def test_skewed_worker_clock_follows_the_server(
    redis_url: str, namespace: str, skew: float, from_url: Callable[..., RedisBroker]
) -> None:
    """A worker 10 minutes off runs nothing early or late and is not declared dead."""
    honest = from_url(redis_url)
    honest.namespace = namespace
    skewed = from_url(redis_url, clock=SkewedClock(skew))
    skewed.namespace = namespace
    assert abs(skewed.now().timestamp() - time.time()) < 1
    producer = make_engine(honest, namespace, [])
    producer.schedule_at("record", honest.now() + timedelta(seconds=30), 1)
    delay = skewed.move_future_jobs()
    assert delay is not None
    assert 29 < delay < 31
    assert skewed.get_jobs_from_queue("spinach", 10) == []
    producer.schedule("record", 2)
    assert len(skewed.get_jobs_from_queue("spinach", 10)) == 1
    skewed.heartbeat()
    assert honest.adopt_jobs_of_dead_workers(honest.heartbeat().at - 5) == []
    honest.flush()


def test_clock_offset_is_not_measured_through_a_stall(own_server: RedisServer) -> None:
    """A reading of the server's clock held up by a stall leaves the offset as it was."""
    import signal
    import threading

    from spinach.brokers.redis.clock import ServerClock

    own_server.start()
    client = redis.Redis(port=own_server.port)
    clock = ServerClock(SkewedClock(-600.0), client)
    assert clock.sync()
    offset = clock._offset
    assert 599 < offset < 601
    assert own_server.process is not None
    own_server.process.send_signal(signal.SIGSTOP)
    resume = threading.Timer(1.0, own_server.process.send_signal, (signal.SIGCONT,))
    resume.start()
    try:
        assert not clock.sync()  # took about 1 s: not kept
    finally:
        resume.join()
    assert clock._offset == offset
    assert clock.sync()
    client.close()


def test_garbage_in_a_queue_is_moved_aside(
    redis_client: redis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Entries that are not jobs go to the failed list with an error; good jobs still run."""
    runs: list[int] = []
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, runs)
    engine.schedule("record", 1)
    queue_key = f"spinach:{{{namespace}}}:queue:spinach"
    redis_client.rpush(queue_key, "not a job", '{"task_name": "record"}')
    engine.schedule("record", 2)
    with caplog.at_level(logging.ERROR, "spinach"):
        engine.start_workers(number=2, stop_when_queue_empty=True)
    assert sorted(runs) == [1, 2]
    failed = redis_client.lrange(f"spinach:{{{namespace}}}:failed", 0, -1)
    assert sorted(f if isinstance(f, str) else f.decode() for f in failed) == [
        "not a job",
        '{"task_name": "record"}',
    ]
    assert sum("is not a Spinach job" in r.getMessage() for r in caplog.records) == 2
    broker.flush()


@pytest.mark.parametrize(
    "damage",
    [
        ("[1]", "[" + "[" * 990 + "]" * 990 + "]"),  # decoding it recursed without a bound
        ("[1]", "[" + "[" * 150 + "]" * 150 + "]"),  # decodes, but over the nesting bound
        ("[1]", "[" + "9" * 5000 + "]"),
        (",2,0,", ",true,0,"),  # max_retries=True, as a bool passed for an int once wrote it
        ("{}]", "{"),
    ],
    ids=["990-deep", "150-deep", "5000-digits", "bool-max-retries", "truncated"],
)
def test_unreadable_job_fails_and_the_queue_flows(
    redis_client: redis.Redis, namespace: str, damage: tuple[str, str]
) -> None:
    """A stored job that cannot be read is failed with job_failed and goes to the failed
    store with its payload as it was; the jobs queued behind it run."""
    from spinach import signals
    from spinach.exc import UnreadableJobError

    runs: list[int] = []
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, runs)
    poison = engine.schedule("record", 1)
    payloads = f"spinach:{{{namespace}}}:payloads"
    payload = redis_client.hget(payloads, str(poison.id))
    text = payload if isinstance(payload, str) else payload.decode()
    assert damage[0] in text
    redis_client.hset(payloads, str(poison.id), text.replace(damage[0], damage[1], 1))
    for i in range(2, 22):
        engine.schedule("record", i)
    failed: list[tuple[Job, BaseException]] = []

    def on_failed(sender: str, job: Job, err: BaseException) -> None:
        failed.append((job, err))

    with signals.job_failed.connected_to(on_failed, sender=namespace):
        engine.start_workers(number=2, stop_when_queue_empty=True)
    assert sorted(runs) == list(range(2, 22))
    ((job, err),) = failed
    assert (job.id, job.task_name, job.queue) == (poison.id, "record", "spinach")
    assert isinstance(err, UnreadableJobError)
    assert str(poison.id) in str(err)
    assert not redis_client.hexists(payloads, str(poison.id))
    (kept,) = engine.failed_jobs()
    assert (kept.id, kept.task_name, kept.queue) == (poison.id, "record", "spinach")
    assert kept.error is not None
    assert kept.error.type == "spinach.exc.UnreadableJobError"
    record = redis_client.hget(f"spinach:{{{namespace}}}:failed_jobs", str(poison.id))
    damaged = text.replace(damage[0], damage[1], 1)
    assert (record if isinstance(record, str) else record.decode()).endswith("\n" + damaged)
    assert broker.count_jobs().running == 0
    broker.flush()


def test_damaged_place_counter_fails_calls_before_any_write(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A place counter that is not a number fails scheduling, recording and moving,
    saying which key, before anything changed: no job is stranded."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    engine.schedule("record", 1)
    engine.schedule_at("record", broker.now() + timedelta(seconds=1), 2)
    (job,) = broker.get_jobs_from_queue("spinach", 1)
    seq = f"spinach:{{{namespace}}}:seq"
    good = redis_client.get(seq)
    redis_client.set(seq, "not a number")
    job.retries, job.at = 1, broker.now()
    calls: list[Callable[[], object]] = [
        lambda: engine.schedule("record", 3),
        lambda: broker.retry_job(job),
        broker.move_future_jobs,
    ]
    for call in calls:
        with pytest.raises(redis.ResponseError, match=rf"key {re.escape(seq)} is not a counter"):
            call()
    counts = broker.count_jobs()
    assert (counts.queued, counts.future, counts.running) == ({}, 1, 1)
    redis_client.set(seq, good)
    assert broker.retry_job(job) is RunningJobState.RECORDED
    assert broker.count_jobs().queued == {"spinach": 1}
    broker.flush()


def test_wrong_password_is_a_clear_error(
    own_server: RedisServer, from_url: Callable[..., RedisBroker]
) -> None:
    """A wrong password is reported as such, at once, not retried as an outage."""
    own_server.start("--requirepass", "right")
    engine = make_engine(from_url(f"redis://:wrong@127.0.0.1:{own_server.port}/0"), "pw", [])
    with pytest.raises(BrokerConnectionError, match="user and password"):
        engine.schedule("record", 1)


def test_schedule_without_redis_is_a_clear_error(
    namespace: str, from_url: Callable[..., RedisBroker]
) -> None:
    """Scheduling with no Redis to reach fails after the retries, saying what to check."""
    broker = from_url(
        f"redis://127.0.0.1:{free_port()}/0", enqueue_job_max_retries=1, socket_connect_timeout=0.5
    )
    engine = make_engine(broker, namespace, [])
    with pytest.raises(BrokerConnectionError, match=r"after 2 tries.*Check that the Redis server"):
        engine.schedule("record", 1)


def test_namespace_with_braces_is_refused(
    redis_url: str, from_url: Callable[..., RedisBroker]
) -> None:
    """Braces would break the hash tag: an engine with such a namespace is refused at once."""
    with pytest.raises(ConfigurationError, match="hash tag"):
        Engine(from_url(redis_url), "a{b}")


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(directory)
        yield server
        server.stop()


def test_from_url_on_a_unix_socket_runs_jobs(own_server: RedisServer) -> None:
    """A unix:// URL works with the broker's client defaults (no TCP-only option reaches it)."""
    sock = Path(own_server.directory) / "redis.sock"
    own_server.start("--unixsocket", str(sock), "--unixsocketperm", "700")
    runs: list[int] = []
    broker = RedisBroker.from_url(f"unix://{sock}?db=2")
    engine = make_engine(broker, f"unix-{uuid.uuid4().hex[:8]}", runs)
    engine.schedule("record", 7)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    assert runs == [7]
    broker.close()


def test_from_url_with_password_and_database(
    own_server: RedisServer, from_url: Callable[..., RedisBroker]
) -> None:
    """from_url honours the password and the database number of the URL."""
    own_server.start("--requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{own_server.port}/3"
    runs: list[int] = []
    engine = make_engine(from_url(url), "urls", runs)
    engine.schedule("record", 7)
    client = redis.Redis(port=own_server.port, password="s3cret", db=3)
    assert client.exists("spinach:{urls}:payloads")
    client.close()
    engine.start_workers(number=1, stop_when_queue_empty=True)
    assert runs == [7]


def test_workers_survive_a_redis_restart(
    own_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    from_url: Callable[..., RedisBroker],
) -> None:
    """Workers log the outage, reconnect by themselves and run jobs scheduled afterwards."""
    own_server.start()
    runs: list[int] = []
    namespace = f"restart-{uuid.uuid4().hex[:6]}"
    engine = make_engine(from_url(own_server.url), namespace, runs)
    engine.start_workers(number=2, block=False)
    try:
        engine.schedule("record", 1)
        wait_for(lambda: runs == [1])
        own_server.stop()
        wait_for(lambda: any(r.levelno >= logging.WARNING for r in caplog.records))
        own_server.start()
        engine.schedule("record", 2)
        wait_for(lambda: runs == [1, 2], timeout=30)
    finally:
        engine.stop_workers()


def test_jobs_of_a_lost_fetch_reply_are_put_back(redis_client: redis.Redis, namespace: str) -> None:
    """Jobs handed out by a fetch whose reply was lost go back to the head of their queue."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    jobs = [engine.schedule("record", i) for i in range(3)]
    # The fetch script runs, but the reply never reaches the broker.
    lost_prefix = broker._token_prefix()
    broker._scripts["get_jobs_from_queue"](
        keys=broker._fetch_keys("spinach"), args=[2, lost_prefix, broker.now().timestamp()]
    )
    broker._lost_fetches.append(("spinach", lost_prefix, False))
    assert broker.count_jobs().running == 2
    got = broker.get_jobs_from_queue("spinach", 10)
    assert [job.id for job in got] == [job.id for job in jobs]
    assert broker.count_jobs().running == 3
    broker.flush()


def test_record_and_fetch_after_the_server_lost_its_scripts(
    redis_client: redis.Redis, namespace: str
) -> None:
    """After SCRIPT FLUSH (a restart without persistence), the pipelined record and
    fetch load the scripts again and do both, once each."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    first, second = (engine.schedule("record", i) for i in range(2))
    (running,) = broker.get_jobs_from_queue("spinach", 1)
    running.status = JobStatus.SUCCEEDED
    redis_client.script_flush()
    states, fetched = broker.record_outcomes_and_get_jobs([running], "spinach", 5)
    assert states == [RunningJobState.RECORDED]
    assert [job.id for job in fetched] == [second.id]
    counts = broker.count_jobs()
    assert (counts.queued, counts.running) == ({}, 1)
    assert running.id == first.id
    broker.flush()


def test_single_scripts_are_loaded_again_after_the_server_lost_them(
    redis_client: redis.Redis, namespace: str
) -> None:
    """After SCRIPT FLUSH, a call sent as EVALSHA alone (schedule, get_job) loads
    its script again and runs once."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    engine.schedule("record", 1)
    redis_client.script_flush()
    job = engine.schedule("record", 2)
    assert broker.count_jobs().queued == {"spinach": 2}
    redis_client.script_flush()
    info = broker.get_job(str(job.id))
    assert info is not None
    assert info.task_args == (2,)
    broker.flush()


def test_a_batch_too_big_for_one_argument_goes_in_several(
    redis_client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs are packed in parts (whole jobs each) when they exceed one argument's size."""
    monkeypatch.setattr(redis_broker, "_PART_BYTES", 300)
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    batch = Batch()
    for i in range(7):
        batch.schedule("record", ["é" * 40, i])  # about 330 bytes packed: one job per part
    scheduled = engine.schedule_batch(batch)
    _, args = broker._enqueue_arguments(scheduled, "call")
    assert len(args) == 3 + 7  # the numbers, the channel, the queue's name, 7 parts
    got = broker.get_jobs_from_queue("spinach", 10)
    assert [job.id for job in got] == [job.id for job in scheduled]
    assert [job.task_args for job in got] == [(["é" * 40, i],) for i in range(7)]
    broker.flush()


def test_jobs_of_a_lost_adoption_reply_are_adopted_again(
    redis_client: redis.Redis, namespace: str
) -> None:
    """Jobs adopted by a call whose reply was lost are returned by the next adoption."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    job = engine.schedule("record", 1)
    dead = RedisBroker(redis_client)
    dead.namespace = namespace
    dead.get_jobs_from_queue("spinach", 1)
    silent_since = broker.heartbeat().at - 10
    k = broker._keys
    lost_prefix = broker._token_prefix()
    broker._scripts["adopt_jobs_of_dead_workers"](
        keys=[k.workers, k.running, k.payloads, k.calls, k.workers_info],
        args=[silent_since, broker.worker_id, lost_prefix],
    )
    broker._lost_adoptions.append(lost_prefix)
    (adopted,) = broker.adopt_jobs_of_dead_workers(silent_since)
    assert adopted.id == job.id
    assert adopted.handout_token is not None
    assert not adopted.handout_token.startswith(lost_prefix)
    assert broker.adopt_jobs_of_dead_workers(silent_since) == []
    broker.flush()


def test_scripts_run_again_by_the_client_hand_out_nothing_new(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A fetch or adoption re-run with the same token prefix (a client retry) answers the same."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    jobs = [engine.schedule("record", i) for i in range(4)]
    k = broker._keys
    prefix = broker._token_prefix()
    fetch_keys = broker._fetch_keys("spinach")
    args = [2, prefix, broker.now().timestamp()]
    first = broker._scripts["get_jobs_from_queue"](keys=fetch_keys, args=args)
    again = broker._scripts["get_jobs_from_queue"](keys=fetch_keys, args=args)
    assert again == first
    assert broker.count_jobs().running == 2
    assert [job.id for job in broker.get_jobs_from_queue("spinach", 10)] == [
        job.id for job in jobs[2:]
    ]
    dead = RedisBroker(redis_client)
    dead.namespace = namespace
    dead.heartbeat()
    engine.schedule("record", 4)
    dead.get_jobs_from_queue("spinach", 1)
    adopt_keys = [k.workers, k.running, k.payloads, k.calls, k.workers_info]
    adopt_args = [broker.heartbeat().at + 1, broker.worker_id, broker._token_prefix()]
    adopted = broker._scripts["adopt_jobs_of_dead_workers"](keys=adopt_keys, args=adopt_args)
    assert len(adopted) == 3
    assert (
        broker._scripts["adopt_jobs_of_dead_workers"](keys=adopt_keys, args=adopt_args) == adopted
    )
    broker.flush()


def test_enqueue_sent_again_after_the_job_ran_stores_nothing(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A scheduling call sent twice (lost reply) does not store its at-most-once job again."""
    broker = RedisBroker(redis_client)
    broker.namespace = namespace
    job = Job("once", "q", broker.now(), 0)
    k = broker._keys
    keys, args = broker._enqueue_arguments([job], "call-1")
    enqueue = broker._scripts["enqueue_jobs"]
    assert enqueue(keys=keys, args=args) == 1
    (got,) = broker.get_jobs_from_queue("q", 1)
    broker.remove_job_from_running(got)
    assert enqueue(keys=keys, args=args) == 0
    assert broker.count_jobs().queued == {}
    assert 0 < redis_client.ttl(k.enqueue_marker("call-1")) <= 65
    broker.flush()


def _shift_now(args: list[bytes], seconds: float) -> None:
    """Move the time an enqueue_jobs call was built with (the first line of its
    first argument) by ``seconds``."""
    now, rest = args[0].split(b"\n", 1)
    args[0] = repr(float(now) + seconds).encode() + b"\n" + rest


def test_enqueue_run_after_its_window_stores_nothing(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A call of at-most-once jobs run more than 60 s after it was built stores nothing.

    Its marker would not be there any more to tell it apart from a new call.
    """
    broker = RedisBroker(redis_client)
    broker.namespace = namespace
    # Due by either time the call is given, so that the call has places to reserve.
    job = Job("once", "q", broker.now() - timedelta(seconds=120), 0)
    keys, args = broker._enqueue_arguments([job], "call-late")
    _shift_now(args, -61)
    assert broker._scripts["enqueue_jobs"](keys=keys, args=args) == -1
    # Nothing written, not even a place reserved: a late call is refused first.
    assert redis_client.keys(f"*{namespace}*") == []
    _shift_now(args, 2)  # 59 s: still in its window
    assert broker._scripts["enqueue_jobs"](keys=keys, args=args) == 1
    assert broker.count_jobs().queued == {"q": 1}
    broker.flush()


def test_a_clock_offset_gone_stale_is_measured_again_when_a_call_is_refused(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A host clock 2 minutes behind, with an offset that was not measured (Redis was
    down at the time): the script refuses the call as late, the broker measures the
    offset again and sends the same call, which stores the job once."""
    from spinach.brokers.redis.clock import ServerClock

    broker = RedisBroker(redis_client, clock=SkewedClock(-120.0))
    engine = make_engine(broker, namespace, [])
    engine.task(lambda: None, name="once")
    clock = broker.clock
    assert isinstance(clock, ServerClock)
    clock.time()
    clock._offset = 0.0  # as if the first measure had failed
    engine.schedule("once")
    assert broker.count_jobs().queued == {"spinach": 1}
    assert abs(broker.now().timestamp() - time.time()) < 5
    broker.flush()


def test_marker_outlives_every_run_the_script_accepts(
    redis_client: redis.Redis, namespace: str
) -> None:
    """With the caller's clock 30 s ahead, the marker lives until 65 s after the call's own
    time (95 s from now), not 65 s from now: a run accepted at 89 s still finds it. With
    the clock behind, it lives 65 s from now."""
    broker = RedisBroker(redis_client)
    broker.namespace = namespace
    job = Job("once", "q", broker.now(), 0)
    keys, args = broker._enqueue_arguments([job], "call-ahead")
    _shift_now(args, 30)
    assert broker._scripts["enqueue_jobs"](keys=keys, args=args) == 1
    # 95 s, give or take the error of the measured clock offset; 65 s would be unsafe.
    assert 93_000 < redis_client.pttl(broker._keys.enqueue_marker("call-ahead")) < 97_000
    # 30 s behind: never less than 65 s from when it is set.
    keys, args = broker._enqueue_arguments([Job("once", "q", broker.now(), 0)], "call-behind")
    _shift_now(args, -30)
    assert broker._scripts["enqueue_jobs"](keys=keys, args=args) == 1
    assert 63_000 < redis_client.pttl(broker._keys.enqueue_marker("call-behind")) <= 65_000
    broker.flush()


def test_schedule_answered_too_late_is_a_clear_error(
    redis_client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """schedule() says the job was stored once or not at all when Redis ran it too late."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    engine.task(lambda: None, name="once")
    late = broker.now().timestamp() - 120
    monkeypatch.setattr(broker, "_read_now", lambda: late)  # the time a call is built with
    with pytest.raises(BrokerConnectionError, match=r"once or not at all, never twice"):
        engine.schedule("once")
    assert broker.count_jobs().queued == {}
    broker.flush()


def test_only_calls_with_at_most_once_jobs_leave_a_marker(
    redis_client: redis.Redis, namespace: str
) -> None:
    """At-least-once jobs may run twice anyway: scheduling them leaves no marker behind."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    engine.task(lambda: None, name="once")
    pattern = f"spinach:{{{namespace}}}:enqueued:*"
    engine.schedule("record", 1)
    assert redis_client.keys(pattern) == []
    engine.schedule("once")
    assert len(redis_client.keys(pattern)) == 1
    broker.flush()


@pytest.mark.parametrize("cause", ["id already stored", "purged meanwhile"])
def test_requeue_all_leaves_no_failed_job_behind(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch, cause: str
) -> None:
    """requeue_failed() requeues every other job of the failed store, even when a
    job of a chunk leaves the store meanwhile without being requeued."""
    from spinach.brokers.redis import records

    # Chunks of 2 jobs stand for the chunks of 1,000 of a larger failed store.
    monkeypatch.setattr(records, "_FAILED_CHUNK", 2)
    broker = RedisBroker.from_url(redis_url)
    engine = Engine(broker, namespace)

    @engine.task(name="doomed")
    def doomed(i: int) -> None:
        raise ValueError(f"doomed {i}")

    try:
        jobs = [engine.schedule("doomed", i) for i in range(5)]
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert len(engine.failed_jobs()) == 5
        if cause == "id already stored":
            # A failed job stored again under its id: the requeue only takes it out.
            broker.enqueue_jobs([jobs[0]])
        else:
            requeue = broker._requeue
            purged: list[str] = []

            def purged_meanwhile(job_ids: list[str]) -> tuple[int, int]:
                # Another client purges a job of the first chunk between the
                # broker's read of the chunk and its requeue.
                if not purged:
                    purged.append(job_ids[0])
                    broker.purge_failed([job_ids[0]])
                return requeue(job_ids)

            monkeypatch.setattr(broker, "_requeue", purged_meanwhile)
        requeued = engine.requeue_failed()
        assert engine.failed_jobs() == []
        assert requeued == 4
    finally:
        broker.flush()
        broker.close()


def test_requeue_all_drops_index_entries_without_a_record(redis_url: str, namespace: str) -> None:
    """An entry of the failed index whose record is gone (a hand edit, an evicting
    maxmemory-policy) is dropped by requeue_failed(), which then ends."""
    broker = RedisBroker.from_url(redis_url)
    engine = Engine(broker, namespace)

    @engine.task(name="doomed")
    def doomed(i: int) -> None:
        raise ValueError(f"doomed {i}")

    try:
        jobs = [engine.schedule("doomed", i) for i in range(3)]
        engine.start_workers(number=1, stop_when_queue_empty=True)
        broker.redis.hdel(f"spinach:{{{namespace}}}:failed_jobs", str(jobs[0].id))
        assert engine.requeue_failed() == 2
        assert broker.redis.zcard(f"spinach:{{{namespace}}}:failed_index") == 0
    finally:
        broker.flush()
        broker.close()


def test_cancelled_job_whose_payload_cannot_be_read_is_set_aside(
    redis_client: redis.Redis, namespace: str
) -> None:
    """Cancelling a queued job whose stored payload is damaged succeeds; with no
    queue to read, its entry then goes to the failed list when a fetch reaches
    it, like any entry without a payload, and no stray key is left."""
    broker = RedisBroker(redis_client)
    engine = make_engine(broker, namespace, [])
    job = engine.schedule("record", 1)
    k = broker._keys
    redis_client.hset(k.payloads, str(job.id), "{not a job")
    assert engine.cancel(job)
    info = engine.get_job(job.id)
    assert info is not None
    assert info.status is JobStatus.CANCELLED
    assert broker.get_jobs_from_queue("spinach", 10) == []
    assert redis_client.llen(k.failed) == 1
    assert not redis_client.exists(k.cancelled(""), k.cancelled("spinach"))
    broker.flush()


def test_a_longer_rate_period_keeps_the_starts_counted(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A rate log expires a period after its last start; a limit given a longer
    period makes it live that long, so that its starts still count (the
    MemoryBroker keeps them for good)."""
    broker = RedisBroker(redis_client)
    broker.namespace = namespace
    log = f"spinach:{{{namespace}}}:rate:task"
    short = Task(print, "task", "q", 0, None, rate_limit=(1, timedelta(seconds=2)))
    broker.set_rate_limits([short])
    broker.enqueue_jobs([Job("task", "q", broker.now(), 0), Job("task", "q", broker.now(), 0)])
    assert len(broker.get_jobs_from_queue("q", 10)) == 1
    assert 0 < redis_client.pttl(log) <= 3_000
    broker.set_rate_limits([Task(print, "task", "q", 0, None, rate_limit=(1, timedelta(hours=1)))])
    assert redis_client.pttl(log) > 3_600_000
    assert broker.get_jobs_from_queue("q", 10) == []
    broker.flush()


@pytest.mark.parametrize(
    "limit",
    [{"rate_limit": (5, timedelta(seconds=1))}, {"max_concurrency": 2, "max_retries": 1}],
    ids=["rate", "concurrency"],
)
def test_workers_of_limited_tasks_drain_a_full_redis(
    own_server: RedisServer, limit: dict[str, Any]
) -> None:
    """Redis at maxmemory with noeviction: an engine whose only task is rate- or
    concurrency-limited stores its limit, starts, drains its queue and frees its
    slots (every script's first write is a removal), and can still be counted."""
    own_server.start("--maxmemory-policy", "noeviction")
    client = redis.Redis(port=own_server.port)
    broker = RedisBroker.from_url(own_server.url)
    engine = Engine(broker, "full")
    ran: list[int] = []
    engine.task(lambda i: ran.append(i), name="limited", **limit)
    for i in range(7):
        engine.schedule("limited", i)
    for i in range(50):
        client.set(f"junk:{i}", "x" * 100_000)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"] * 0.9))
    engine.start_workers(number=2, stop_when_queue_empty=True)
    assert sorted(ran) == list(range(7))
    assert broker.inspect().queues == {}  # a script that only reads runs on a full Redis
    assert broker.count_jobs() == JobCounts(queued={}, future=0, running=0)  # no MULTI then
    assert client.info("memory")["used_memory"] > int(client.config_get("maxmemory")["maxmemory"])
    broker.close()
    client.close()


def test_a_damaged_rate_limit_strands_no_held_back_job(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A rate_limits value that is not a limit (no Spinach code writes one) limits
    nothing: the jobs it held back are handed out."""
    broker = RedisBroker(redis_client)
    broker.namespace = namespace
    broker.set_rate_limits([Task(print, "task", "q", 0, None, rate_limit=(1, timedelta(hours=1)))])
    broker.enqueue_jobs([Job("task", "q", broker.now(), 0) for _ in range(2)])
    assert len(broker.get_jobs_from_queue("q", 10)) == 1
    assert broker.get_jobs_from_queue("q", 10) == []
    redis_client.hset(f"spinach:{{{namespace}}}:rate_limits", "task", "a lot")
    assert len(broker.get_jobs_from_queue("q", 10)) == 1
    broker.flush()
