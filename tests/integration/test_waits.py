"""Jobs handed straight to a waiting worker (spinach/brokers/redis/waits.py), on a real Redis.

The broker contract (WaitForJobsContract) checks that no job is lost or handed
out twice whichever way it goes; these tests check the hand-out itself and its
guards: a wait lives while its worker waits and not after it died, ends on a
wake-up, and leaves nothing behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

import spinach.brokers.redis.broker as broker_module
from spinach.brokers.redis import RedisBroker
from spinach.brokers.redis.keys import Keys
from spinach.brokers.redis.scripts import lua_dir
from spinach.clock import ManualClock
from spinach.job import Job
from spinach.task import Task
from spinach.testing import wait_for

EPOCH = 1_790_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(EPOCH)


@pytest.fixture
def long_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits of a minute: a test that needs a wait to end otherwise does not
    pass by its running out."""
    monkeypatch.setattr(broker_module, "WAIT_SECONDS", 60.0)


def make(url: str, namespace: str, clock: ManualClock, **client: object) -> RedisBroker:
    broker = RedisBroker(redis.Redis.from_url(url, **client), clock=clock, sync_clock=False)
    broker.namespace = namespace
    return broker


@pytest.fixture
def brokers(redis_url: str, namespace: str, clock: ManualClock) -> Iterator[list[RedisBroker]]:
    """A waiting worker (no read timeout: it blocks for long) and a producer."""
    made = [
        make(redis_url, namespace, clock, socket_timeout=None),
        make(redis_url, namespace, clock),
    ]
    yield made
    made[1].flush()
    for broker in made:
        broker.close()


def waits(broker: RedisBroker, queue: str = "q") -> list[str]:
    members = broker.redis.zrange(Keys.of(broker.namespace).waiting(queue), 0, -1)
    return [m.decode() for m in members]


def wait_in_thread(broker: RedisBroker) -> tuple[threading.Thread, list[list[Job]]]:
    returned: list[list[Job]] = []
    thread = threading.Thread(target=lambda: returned.append(broker.wait_for_jobs("q", 4, 60)))
    thread.start()
    return thread, returned


@pytest.mark.usefixtures("long_waits")
def test_the_job_comes_with_the_end_of_the_wait(
    brokers: list[RedisBroker], clock: ManualClock
) -> None:
    """Stored while a worker waits, a job is handed out to it, in the reply
    that ends its wait: its next fetch has nothing left to return."""
    worker, producer = brokers
    thread, returned = wait_in_thread(worker)
    wait_for(lambda: waits(worker))
    job = Job("task", "q", clock.now(), 0)
    producer.enqueue_jobs([job])
    thread.join(30)
    (got,) = returned[0]
    assert got.id == job.id
    assert got.handout_token is not None
    assert got.handout_token.startswith(worker.worker_id)
    assert waits(worker) == []
    assert worker.get_jobs_from_queue("q", 4) == []
    assert producer.get_job(str(job.id)) is not None


@pytest.mark.usefixtures("long_waits")
def test_wake_up_ends_a_long_wait(brokers: list[RedisBroker]) -> None:
    """wake_up() ends a wait that would last a minute, with no job."""
    worker, _ = brokers
    thread, returned = wait_in_thread(worker)
    wait_for(lambda: waits(worker))
    worker.wake_up()
    thread.join(30)
    assert not thread.is_alive(), "wake_up() did not end the wait"
    assert returned == [[]]


def test_no_wait_while_jobs_are_in_line(brokers: list[RedisBroker], clock: ManualClock) -> None:
    """A worker with jobs in line does not wait: the call returns at once, to fetch them."""
    worker, producer = brokers
    producer.enqueue_jobs([Job("task", "q", clock.now(), 0)])
    assert worker.wait_for_jobs("q", 4, 60) == []
    assert waits(worker) == []
    assert len(worker.get_jobs_from_queue("q", 4)) == 1


def test_a_wait_over_gets_no_job(brokers: list[RedisBroker], clock: ManualClock) -> None:
    """Once its time is over, a wait is handed nothing: the job stays in line."""
    worker, producer = brokers
    assert worker.wait_for_jobs("q", 4, 0.01) == []
    assert len(waits(worker)) == 1
    clock.advance(1)
    producer.enqueue_jobs([Job("task", "q", clock.now(), 0)])
    assert producer.inspect().queues["q"].ready == 1
    assert producer.count_jobs().running == 0
    assert waits(worker) == []  # the producer dropped the waits over


def test_a_worker_that_fetched_since_its_wait_is_handed_nothing(
    brokers: list[RedisBroker], clock: ManualClock
) -> None:
    """A wait whose worker fetched since (its record in calls replaced) gets no
    job, though its time is not over: the job stays in line for any worker."""
    worker, producer = brokers
    assert worker.wait_for_jobs("q", 4, 0.01) == []
    assert worker.get_jobs_from_queue("q", 4) == []
    assert len(waits(worker)) == 1  # left for the next wait to remove
    job = Job("task", "q", clock.now(), 0)
    producer.enqueue_jobs([job])
    assert producer.inspect().queues["q"].ready == 1
    assert [j.id for j in worker.get_jobs_from_queue("q", 4)] == [job.id]


def test_a_worker_that_died_waiting_has_its_jobs_taken_over(
    brokers: list[RedisBroker], redis_url: str, namespace: str, clock: ManualClock
) -> None:
    """Jobs handed out to the wait of a worker that died then are taken over
    with its other jobs: none is lost."""
    worker, producer = brokers
    worker.heartbeat()
    assert worker.wait_for_jobs("q", 4, 0.01) == []
    job = Job("task", "q", clock.now(), 0)
    producer.enqueue_jobs([job])  # handed out to the wait; the worker dies
    assert producer.count_jobs().running == 1
    clock.advance(120)
    adopter = make(redis_url, namespace, clock)
    try:
        adopter.heartbeat()
        assert [j.id for j in adopter.adopt_jobs_of_dead_workers(clock.now().timestamp() - 60)] == [
            job.id
        ]
    finally:
        adopter.close()


def test_a_worker_taken_for_dead_while_waiting_fetches_under_a_new_prefix(
    brokers: list[RedisBroker], redis_url: str, namespace: str, clock: ManualClock
) -> None:
    """A worker that was taken for dead while it waited, and its jobs taken
    over, fetches under a token prefix of its own again: the tokens of its
    wait's jobs stay in their rate log, and the rate limit holds."""
    worker, producer = brokers
    producer.set_rate_limits(
        [Task(lambda: None, "task", "q", 1, None, rate_limit=(2, timedelta(minutes=1)))]
    )
    worker.heartbeat()
    assert worker.wait_for_jobs("q", 4, 0.01) == []
    producer.enqueue_jobs([Job("task", "q", clock.now(), 0)])  # handed out to the wait
    clock.advance(10)
    adopter = make(redis_url, namespace, clock)
    try:
        adopter.heartbeat()
        assert len(adopter.adopt_jobs_of_dead_workers(clock.now().timestamp() - 5)) == 1
        producer.enqueue_jobs([Job("task", "q", clock.now(), 0)])
        (second,) = worker.get_jobs_from_queue("q", 4)  # the worker was alive after all
        assert second.handout_token is not None
        assert not second.handout_token.startswith(worker._waiter.stale.prefix)  # type: ignore[union-attr]
        producer.enqueue_jobs([Job("task", "q", clock.now(), 0)])
        assert adopter.get_jobs_from_queue("q", 4) == [], "a third start within the minute"
    finally:
        adopter.close()


def test_a_lost_reply_is_fetched_again(brokers: list[RedisBroker], clock: ManualClock) -> None:
    """Jobs of a wait whose reply never reached the worker come with its next fetch."""
    worker, producer = brokers
    assert worker.wait_for_jobs("q", 4, 0.01) == []
    job = Job("task", "q", clock.now(), 0)
    producer.enqueue_jobs([job])
    inbox = Keys.of(worker.namespace).inbox(worker.worker_id)
    assert 0 < worker.redis.pttl(inbox) <= 30_000
    assert worker.redis.lpop(inbox)  # the reply, lost
    assert [j.id for j in worker.get_jobs_from_queue("q", 4)] == [job.id]


def test_a_wait_registered_again_keeps_the_jobs_handed_out_to_it(
    brokers: list[RedisBroker], clock: ManualClock
) -> None:
    """The wait's script run a second time, as a client does after a lost
    reply, once jobs were handed out to the wait: the jobs stay the wait's,
    and its next fetch returns them."""
    worker, producer = brokers
    assert worker.wait_for_jobs("q", 4, 0.01) == []
    wait = worker._waiter.pending  # type: ignore[union-attr]
    assert wait is not None
    job = Job("task", "q", clock.now(), 0)
    producer.enqueue_jobs([job])  # handed out to the wait
    k = Keys.of(worker.namespace)
    now = repr(clock.now().timestamp())
    again = worker._run(
        "wait_for_jobs",
        [k.ready("q"), k.waiting("q"), k.calls, k.inbox(worker.worker_id)],
        [wait.prefix, wait.max_jobs, now, now, ""],
    )
    assert int(again) == 1
    assert [j.id for j in worker.get_jobs_from_queue("q", 4)] == [job.id]
    assert worker.get_jobs_from_queue("q", 4) == []


def test_a_client_that_cannot_block_waits_without_redis(
    redis_url: str, namespace: str, clock: ManualClock
) -> None:
    """A client of one connection, or with a short read timeout, does not block
    in Redis: its wait is the plain one, and nothing is handed out to it."""
    for client in ({"single_connection_client": True}, {"socket_timeout": 0.5}):
        worker = make(redis_url, namespace, clock, **client)
        try:
            assert worker.wait_for_jobs("q", 4, 0.01) == []
            assert waits(worker) == []
        finally:
            worker.close()


def test_the_scripts_name_the_keys_as_keys_py(redis_client: redis.Redis, namespace: str) -> None:
    """lua/include/queue_keys.lua makes a queue's keys as Keys does."""
    keys = Keys.of(namespace)
    source = (lua_dir() / "include" / "queue_keys.lua").read_text()
    names = [
        "ready",
        "parked",
        "payloads",
        "running",
        "limits",
        "in_flight",
        "failed",
        "calls",
        "cancelled",
        "unique",
        "rate_limits",
        "rate_wake",
        "activity",
    ]
    fields = ", ".join(f"k.{name}" for name in names)
    script = f"{source}\nlocal k = queue_keys(ARGV[1], ARGV[2])\nreturn {{{fields}}}"
    made = redis_client.eval(script, 0, keys.prefix, "a queue")
    expected = [
        keys.ready("a queue"),
        keys.parked("a queue"),
        keys.payloads,
        keys.running,
        keys.limits,
        keys.in_flight,
        keys.failed,
        keys.calls,
        keys.cancelled("a queue"),
        keys.unique,
        keys.rate_limits,
        keys.rate_wake,
        keys.activity,
    ]
    assert [m.decode() if isinstance(m, bytes) else m for m in made] == expected
    assert Keys.expires_by_design(Keys.parse(keys.inbox("w"))[1])  # type: ignore[index]


def test_flush_leaves_no_wait_behind(brokers: list[RedisBroker], clock: ManualClock) -> None:
    """Waits, on a queue that never held a job too, and inboxes go with a flush."""
    worker, producer = brokers
    assert worker.wait_for_jobs("never used", 4, 0.01) == []
    assert worker.get_jobs_from_queue("never used", 4) == []
    assert worker.wait_for_jobs("q", 4, 0.01) == []
    producer.enqueue_jobs([Job("task", "q", clock.now(), 0)])  # to the wait's inbox
    prefix = Keys.of(worker.namespace).prefix.replace("{", "[{]")
    assert worker.redis.keys(prefix + "waiting:*")
    assert worker.redis.keys(prefix + "inbox:*")
    producer.flush()
    left = [key for key in worker.redis.keys(prefix + "*") if b":enqueued:" not in key]
    assert left == []  # but the marker of the scheduling call, which expires by itself
