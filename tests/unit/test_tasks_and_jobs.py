"""Task definitions, the job model, and the checks made before anything is stored."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

import spinach
from spinach import Batch, Engine, MemoryBroker, Tasks, const
from spinach.exc import (
    BrokerInUseError,
    InvalidJobArgumentError,
    InvalidJobSignatureError,
    InvalidTaskError,
    NotAttachedError,
    SpinachError,
    UnknownTask,
)
from spinach.job import Job, JobStatus
from spinach.task import Task
from spinach.utils import exponential_backoff, human_duration


def noop(*args: Any, **kwargs: Any) -> None:
    """Stands for a task."""


@pytest.fixture
def engine() -> Engine:
    engine = Engine(MemoryBroker(), namespace="tests")
    engine.task(noop, name="noop")

    @engine.task(name="pair")
    def pair(a: int, b: int = 0) -> None:
        """A task with a signature to check."""

    return engine


def stored(engine: Engine) -> int:
    counts = engine._broker.count_jobs()
    return sum(counts.queued.values()) + counts.future + counts.running


class TestPackage:
    def test_exports(self) -> None:
        """The package exports the names of Spinach 0.0.25, and a version."""
        for name in [
            "Engine",
            "Tasks",
            "Batch",
            "RetryException",
            "AbortException",
            "MemoryBroker",
            "ThreadWorkers",
            "AsyncioWorkers",
        ]:
            assert name in spinach.__all__
            assert getattr(spinach, name)
        assert spinach.__version__ == spinach.VERSION

    def test_constants(self) -> None:
        """The defaults are those of Spinach 0.0.25."""
        assert const.DEFAULT_QUEUE == "spinach"
        assert const.DEFAULT_NAMESPACE == "spinach"
        assert const.DEFAULT_MAX_RETRIES == 0
        assert const.DEFAULT_WORKER_NUMBER == 5


class TestTaskDefinitions:
    def test_decorator_returns_the_function(self) -> None:
        """@tasks.task leaves the function callable and marks it with its name."""
        tasks = Tasks()

        @tasks.task(name="double")
        def double(x: int) -> int:
            return 2 * x

        assert double(4) == 8
        assert double.task_name == "double"  # type: ignore[attr-defined]
        assert tasks.get(double) is tasks.get("double") is tasks.get(tasks.get("double"))
        assert tasks.names == ["double"]

    def test_defaults_come_from_argument_then_registry_then_constants(self) -> None:
        """Queue and max_retries: argument, else registry default, else 'spinach' and 0."""
        plain, custom = Tasks(), Tasks(queue="q", max_retries=3)
        plain.add(noop, "a")
        custom.add(noop, "b")
        custom.add(noop, "c", queue="other", max_retries=1)
        assert (plain.get("a").queue, plain.get("a").max_retries) == ("spinach", 0)
        assert (custom.get("b").queue, custom.get("b").max_retries) == ("q", 3)
        assert (custom.get("c").queue, custom.get("c").max_retries) == ("other", 1)

    def test_task_equality_is_by_value(self) -> None:
        """Two tasks with the same settings are equal."""
        assert Task(noop, "a", "q", 1, None) == Task(noop, "a", "q", 1, None)
        assert Task(noop, "a", "q", 1, None) != Task(noop, "a", "q", 2, None)
        assert Task(noop, "a", "q", 1, None).task_name == "a"

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"name": None}, "has no name"),
            ({"name": "x", "queue": "_private"}, "reserved"),
            ({"name": "x", "max_concurrency": 2}, "max_retries must be set if max_concurrency"),
            ({"name": "x", "max_retries": 1, "max_concurrency": 0}, "greater than zero"),
            ({"name": "x", "periodicity": timedelta(milliseconds=500)}, "under the minimum"),
            ({"name": "x", "max_retries": -1}, "max_retries must be"),
            ({"name": "x", "max_retries": True}, "max_retries must be an int >= 0, got True"),
            ({"name": "x", "max_retries": 1, "max_concurrency": True}, "must be an int, got True"),
        ],
    )
    def test_invalid_definitions_are_value_errors(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        """A definition that cannot work is a ValueError saying what is wrong."""
        with pytest.raises(ValueError, match=message) as raised:
            Tasks().add(noop, **kwargs)
        assert isinstance(raised.value, InvalidTaskError)

    def test_get_finds_added_functions_by_identity(self) -> None:
        """get() finds a function registered with add(), and never another task by name."""
        tasks = Tasks()

        def plain() -> None:
            """Registered under another name."""

        def impostor() -> None:
            """Not a registered task, though it bears the name of one."""

        impostor.__qualname__ = "noop"
        tasks.add(plain, "renamed")
        tasks.add(noop, "noop")
        assert tasks.get(plain).name == "renamed"
        assert tasks.get(noop).func is noop
        with pytest.raises(UnknownTask, match=r"function 'noop'"):
            tasks.get(impostor)

    def test_duplicate_name(self) -> None:
        """Registering a second task under a taken name is a ValueError."""
        tasks = Tasks()
        tasks.add(noop, "x")
        with pytest.raises(ValueError, match="'x' is already registered"):
            tasks.add(noop, "x")

    def test_unknown_task_names_the_known_ones(self) -> None:
        """Asking for a task nobody registered lists the registered ones."""
        tasks = Tasks()
        tasks.add(noop, "known")
        with pytest.raises(UnknownTask, match=r"'missing'.*'known'"):
            tasks.get("missing")

    def test_registry_without_engine(self) -> None:
        """Scheduling through a registry attached to no engine is a RuntimeError."""
        tasks = Tasks()
        tasks.add(noop, "x")
        with pytest.raises(RuntimeError, match="attach_tasks") as raised:
            tasks.schedule("x")
        assert isinstance(raised.value, NotAttachedError)

    def test_attach_to_a_second_engine_warns(self, caplog: pytest.LogCaptureFixture) -> None:
        """A registry moved from one engine to another is logged."""
        tasks = Tasks()
        tasks.add(noop, "x")
        Engine(MemoryBroker(), "one").attach_tasks(tasks)
        with caplog.at_level(logging.WARNING, "spinach"):
            Engine(MemoryBroker(), "two").attach_tasks(tasks)
        assert "'one'" in caplog.text
        assert "'two'" in caplog.text

    def test_one_broker_one_engine(self) -> None:
        """A broker given to a second engine is refused."""
        broker = MemoryBroker()
        Engine(broker, "one")
        with pytest.raises(BrokerInUseError, match="broker of its own"):
            Engine(broker, "two")


class TestScheduleChecks:
    @pytest.mark.parametrize(
        ("value", "path"),
        [
            (datetime(2020, 1, 1), r"args\[0\]"),
            ({1, 2}, r"args\[0\]"),
            (object(), r"args\[0\]"),
            ([1, {"a": date(2020, 1, 1)}], r"args\[0\]\[1\]\['a'\]"),
            ({1: "int key"}, r"args\[0\]"),
            (float("nan"), r"args\[0\]"),
            (b"bytes", r"args\[0\]"),
        ],
        ids=["datetime", "set", "object", "nested-date", "int-key", "nan", "bytes"],
    )
    def test_non_json_argument(self, engine: Engine, value: Any, path: str) -> None:
        """A non-JSON argument fails at schedule time naming task and argument, storing nothing."""
        with pytest.raises(InvalidJobArgumentError, match=rf"'noop'.*{path}") as raised:
            engine.schedule("noop", value)
        assert isinstance(raised.value, TypeError)
        with pytest.raises(InvalidJobArgumentError, match=r"kwargs\['when'\]"):
            engine.schedule_at("noop", datetime.now(timezone.utc), when=value)
        assert stored(engine) == 0

    @pytest.mark.parametrize("depth", [101, 990, 10_000])
    def test_arguments_nested_too_deep(self, engine: Engine, depth: int) -> None:
        """Arguments nested over 100 deep fail naming the task and the bound, not recursing."""
        value: Any = []
        for _ in range(depth):
            value = [value]
        with pytest.raises(
            InvalidJobArgumentError, match=r"'noop'.*args\[0\](\[0\])+ .*more than 100 deep"
        ):
            engine.schedule("noop", value)
        with pytest.raises(
            InvalidJobArgumentError, match=r"'noop'.*kwargs\['deep'\].*more than 100 deep"
        ):
            engine.schedule("noop", deep={"a": value})
        assert stored(engine) == 0

    def test_arguments_nested_100_deep_round_trip(self, engine: Engine) -> None:
        """Arguments nested exactly 100 deep are stored and read back unchanged."""
        value: Any = [1]
        for _ in range(99):
            value = [value]
        engine.schedule("noop", value, d={"k": [[]]})
        (job,) = engine._broker.get_jobs_from_queue("spinach", 1)
        assert job.task_args == (value,)
        assert job.task_kwargs == {"d": {"k": [[]]}}

    def test_bound_checked_without_recursion(self, engine: Engine) -> None:
        """The check walks 100 levels even where the stack has room for only a few more calls."""
        import sys

        value: Any = []
        for _ in range(99):
            value = [value]
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(60)
        try:
            from spinach.job import check_arguments

            assert check_arguments("noop", (value,), {}) > 0
        finally:
            sys.setrecursionlimit(limit)

    @pytest.mark.parametrize("kind", ["list", "dict"])
    def test_arguments_containing_themselves(self, engine: Engine, kind: str) -> None:
        """A list or dict that contains itself fails naming the task, never a RecursionError."""
        value: Any
        if kind == "list":
            value = [1, 2]
            value.append([value] * 1000)
        else:
            value = {"a": 1}
            value["self"] = value
        with pytest.raises(InvalidJobArgumentError, match=r"'noop'.*args\[0\].*contains itself"):
            engine.schedule("noop", value)
        assert stored(engine) == 0

    def test_integers_of_more_than_4300_digits(self, engine: Engine) -> None:
        """An integer of 4,301 digits fails naming the task; 4,300 digits round trip."""
        largest = 10**4300 - 1
        engine.schedule("noop", largest, -largest)
        (job,) = engine._broker.get_jobs_from_queue("spinach", 1)
        assert job.task_args == (largest, -largest)
        for value in (10**4300, -(10**4300), 10**100_000):
            with pytest.raises(
                InvalidJobArgumentError, match=r"'noop'.*args\[1\]\['n'\].*4,300 digits"
            ):
                engine.schedule("noop", 1, {"n": value})

    def test_signature_error_of_deep_arguments(self, engine: Engine) -> None:
        """Deep arguments that do not bind fail with the signature error, shortened."""
        value: Any = []
        for _ in range(5000):
            value = [value]
        with pytest.raises((InvalidJobSignatureError, InvalidJobArgumentError), match="'pair'"):
            engine.schedule("pair", value, value, value)

    def test_subclasses_of_json_types_are_read_back_as_plain_types(self, engine: Engine) -> None:
        """A str enum, a str subclass or an OrderedDict is accepted and comes back plain."""
        import collections
        import enum

        class Color(str, enum.Enum):
            RED = "red"

        class Safe(str):
            pass

        engine.schedule("noop", Color.RED, Safe("<b>"), collections.OrderedDict(a=1), tag=Safe("x"))
        (job,) = engine._broker.get_jobs_from_queue("spinach", 1)
        assert job.task_args == ("red", "<b>", {"a": 1})
        assert [type(a) for a in job.task_args] == [str, str, dict]
        assert job.task_kwargs == {"tag": "x"}

    def test_arguments_not_matching_the_signature(self, engine: Engine) -> None:
        """Arguments that do not bind to the function fail before anything is stored."""
        for args, kwargs in [((), {}), ((1, 2, 3), {}), ((1,), {"c": 2})]:
            with pytest.raises(InvalidJobSignatureError, match="'pair'"):
                engine.schedule("pair", *args, **kwargs)
        engine.schedule("pair", 1, b=2)
        assert stored(engine) == 1

    def test_job_over_the_size_limit(self) -> None:
        """A job over max_job_size fails at schedule time naming the task and the size."""
        from spinach.exc import JobTooLargeError

        engine = Engine(MemoryBroker(), "sizes", max_job_size=1000)
        engine.task(noop, name="noop")
        engine.schedule("noop", "x" * 800)
        batch = Batch()
        batch.schedule("noop", "x" * 2000)
        for schedule in (
            lambda: engine.schedule("noop", "x" * 2000),
            lambda: engine.schedule_batch(batch),
        ):
            with pytest.raises(JobTooLargeError, match=r"'noop'.*2,\d{3} bytes.*1,000 bytes"):
                schedule()
        assert stored(engine) == 1

    def test_default_size_limit_is_512_kib(self, engine: Engine) -> None:
        """By default 100 KB arguments pass and 600 KB ones do not."""
        from spinach.exc import JobTooLargeError

        engine.schedule("noop", "x" * 100_000)
        with pytest.raises(JobTooLargeError, match="524,288 bytes"):
            engine.schedule("noop", "x" * 600_000)

    def test_unknown_task(self, engine: Engine) -> None:
        """Scheduling a task nobody registered fails naming it."""
        with pytest.raises(UnknownTask, match="'nope'"):
            engine.schedule("nope")

    def test_bad_batch_stores_nothing(self, engine: Engine) -> None:
        """One bad job in a batch stops the whole batch before anything is stored."""
        batch = Batch()
        batch.schedule("noop", 1)
        batch.schedule("noop", {2, 3})
        with pytest.raises(InvalidJobArgumentError):
            engine.schedule_batch(batch)
        assert stored(engine) == 0

    def test_batch_stores_all(self, engine: Engine) -> None:
        """A batch stores its ready and future jobs, in order."""
        batch = Batch()
        batch.schedule("noop", 1)
        batch.schedule_at("noop", datetime.now(timezone.utc) + timedelta(hours=1), 2)
        batch.schedule("pair", 3)
        jobs = engine.schedule_batch(batch)
        assert [j.task_args for j in jobs] == [(1,), (2,), (3,)]
        assert [j.status for j in jobs] == [JobStatus.QUEUED, JobStatus.WAITING, JobStatus.QUEUED]
        counts = engine._broker.count_jobs()
        assert (counts.queued, counts.future) == ({"spinach": 2}, 1)

    def test_execute_runs_now(self, engine: Engine) -> None:
        """execute() calls the task function in this thread and returns its result."""

        @engine.task(name="answer")
        def answer(x: int) -> int:
            return x + 1

        assert engine.execute("answer", 41) == 42
        assert stored(engine) == 0

    def test_errors_share_a_root(self) -> None:
        """Every error of the package is a SpinachError."""
        for error in [UnknownTask, InvalidJobSignatureError, InvalidJobArgumentError]:
            assert issubclass(error, SpinachError)


class TestJob:
    def test_naive_at_is_utc(self) -> None:
        """A naive datetime is taken as UTC; an aware one is converted to UTC."""
        naive = Job("t", "q", datetime(2030, 1, 1, 12), 0)
        assert naive.at == datetime(2030, 1, 1, 12, tzinfo=timezone.utc)
        paris = timezone(timedelta(hours=1))
        aware = Job("t", "q", datetime(2030, 1, 1, 13, tzinfo=paris), 0)
        assert aware.at == naive.at
        assert aware.at.tzinfo is timezone.utc

    def test_defaults_and_properties(self) -> None:
        """A new job has an id, no status, no retries, and empty arguments."""
        job = Job("t", "q", datetime(2000, 1, 1), 2)
        assert isinstance(job.id, uuid.UUID)
        assert (job.status, job.retries, job.task_args, job.task_kwargs) == (
            JobStatus.NOT_SET,
            0,
            (),
            {},
        )
        assert job.should_retry
        assert job.should_start
        job.retries = 2
        assert not job.should_retry
        assert job.at_timestamp == datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()
        job.at = datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=timezone.utc)
        assert job.at_timestamp == 1893456001
        assert isinstance(job.at_timestamp, int)
        assert repr(job) == f"Job <t NOT_SET {job.id}>"

    def test_serialize_round_trip(self) -> None:
        """serialize() gives JSON text that deserialize() turns back into an equal job."""
        job = Job("t", "q", datetime(2030, 1, 1, 0, 0, 0, 123456), 3, (1, [2]), {"k": {"a": []}})
        job.retries, job.status = 2, JobStatus.WAITING
        text = job.serialize()
        assert json.loads(text)["task_name"] == "t"
        back = Job.deserialize(text)
        assert back == job
        assert back.task_args == (1, [2])
        assert back.at == job.at

    def test_assigned_naive_at_is_utc(self) -> None:
        """Assigning a naive datetime to ``at`` (as a RetryException's may be) means UTC."""
        job = Job("t", "q", datetime(2030, 1, 1), 0)
        job.at = datetime(2031, 6, 1, 8)
        assert job.at == datetime(2031, 6, 1, 8, tzinfo=timezone.utc)
        with pytest.raises(TypeError, match="must be a datetime"):
            job.at = "tomorrow"  # type: ignore[assignment]

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [
            ((), {}),
            (("é" * 50, "\U0001f600" * 10, '"\\\n\x00'), {"ключ": "\t" * 9}),
            ((2**200, -(2**63), 0, -1, 1 / 3, -1e-300, 1.7976931348623157e308), {}),
            (([[[]]], {"a": {"b": [None, True, False]}}), {"k": [1.5, {}]}),
        ],
        ids=["empty", "escaped-text", "numbers", "nested"],
    )
    def test_size_bound_is_never_below_the_size(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """check_arguments bounds the serialized size, so that most jobs skip the size check."""
        from spinach.engine import _job_size_bound
        from spinach.job import check_arguments

        task = Task(noop, "t\u00e9", queue="q\U0001f600", max_retries=0, periodicity=None)
        job = Job(task.name, task.queue, datetime(2030, 1, 1), 2**40, args, kwargs)
        job.retries = 2**40
        bound = check_arguments(task.name, args, kwargs) + _job_size_bound(task)
        assert len(job.serialize()) <= bound

    def test_deserialize_garbage(self) -> None:
        """Text that is not a job is a ValueError quoting it."""
        for text in ["not json", "[]", '{"task_name": "t"}']:
            with pytest.raises(ValueError, match="not a serialized Spinach job"):
                Job.deserialize(text)

    @pytest.mark.parametrize(
        ("args", "why"),
        [
            ("[" * 150 + "]" * 150, "more than 100 deep"),
            ("[" * 100_000 + "]" * 100_000, "RecursionError"),
            ("[" + "9" * 5000 + "]", "digits"),
        ],
        ids=["150-deep", "100000-deep", "5000-digits"],
    )
    def test_deserialize_over_the_bounds(self, args: str, why: str) -> None:
        """A stored job over the bounds is a ValueError saying why, never a RecursionError."""
        job = Job("t", "q", datetime(2030, 1, 1), 0)
        text = job.serialize().replace('"task_args":[]', f'"task_args":{args}')
        with pytest.raises(ValueError, match=why):
            Job.deserialize(text)

    def test_deserialize_names_a_field_of_the_wrong_type(self) -> None:
        """A stored max_retries of true is refused, naming the field."""
        text = Job("t", "q", datetime(2030, 1, 1), 1).serialize()
        with pytest.raises(ValueError, match="max_retries is bool True, not int"):
            Job.deserialize(text.replace('"max_retries":1', '"max_retries":true'))


class TestUtils:
    def test_exponential_backoff_bounds(self) -> None:
        """Retry n waits between t / 2 and t seconds, t = min(3 * 2**n, cap)."""
        for attempt in range(15):
            top = min(3 * 2**attempt, 1200)
            for _ in range(50):
                delay = exponential_backoff(attempt).total_seconds()
                assert top / 2 <= delay <= top
        assert 3 <= exponential_backoff(1).total_seconds() <= 6
        assert exponential_backoff(10_000).total_seconds() <= 1200
        assert exponential_backoff(20, cap=10).total_seconds() <= 10

    def test_human_duration(self) -> None:
        """Durations read as ms below a second, as s above."""
        assert human_duration(0.0001) == "0 ms"
        assert human_duration(0.25) == "250 ms"
        assert human_duration(3.7) == "3 s"


class TestEdgeDefinitions:
    def test_task_max_retries_none_is_zero(self) -> None:
        """Task(max_retries=None) means no retry, and cannot carry a concurrency limit."""
        assert Task(noop, "a", "q", None, None).max_retries == 0  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_retries must be set if max_concurrency is set"):
            Task(noop, "a", "q", None, None, max_concurrency=1)  # type: ignore[arg-type]

    def test_max_concurrency_must_be_an_int(self) -> None:
        """A limit of the wrong type is an InvalidTaskError, not a raw TypeError."""
        with pytest.raises(InvalidTaskError, match="max_concurrency must be an int"):
            Task(noop, "a", "q", 1, None, max_concurrency="2")  # type: ignore[arg-type]

    def test_builtin_cannot_be_decorated(self) -> None:
        """Decorating a builtin fails clearly and leaves no half-registered task."""
        tasks = Tasks()
        with pytest.raises(InvalidTaskError, match=r"tasks\.add"):
            tasks.task(print, name="print")
        assert tasks.names == []
        tasks.add(print, "print")
        assert tasks.names == ["print"]

    def test_retry_exception_at_must_be_a_datetime(self) -> None:
        """RetryException(at=<not a datetime>) is a TypeError where it is raised."""
        from spinach import RetryException

        with pytest.raises(TypeError, match="must be a datetime"):
            RetryException("x", at=12345)  # type: ignore[arg-type]

    def test_empty_namespace(self) -> None:
        """An empty namespace is refused with a ConfigurationError."""
        from spinach.exc import ConfigurationError

        with pytest.raises(ConfigurationError, match="non-empty"):
            Engine(MemoryBroker(), "")
