"""The Redis keys of a namespace; every one carries the hash tag ``{namespace}``."""

from __future__ import annotations

import attrs

from ...exc import ConfigurationError

__all__ = ["Keys"]

# Every key of a namespace starts with _HEAD + namespace + _TAIL.
_HEAD = "spinach:{"
_TAIL = "}:"


@attrs.frozen
class Keys:
    """The Redis keys of one namespace."""

    namespace: str
    prefix: str

    @classmethod
    def of(cls, namespace: str) -> Keys:
        if "{" in namespace or "}" in namespace:
            raise ConfigurationError(
                f"Namespace {namespace!r} cannot be used with Redis: braces are reserved "
                "for the Redis Cluster hash tag; choose a name without '{' or '}'"
            )
        return cls(namespace, f"{_HEAD}{namespace}{_TAIL}")

    @staticmethod
    def parse(key: str) -> tuple[str, str] | None:
        """The namespace of a key of :meth:`of`'s layout, and the rest of the key
        after its prefix (``"queue:default"``); None for a key of any other form."""
        if not key.startswith(_HEAD):
            return None
        namespace, tail, rest = key[len(_HEAD) :].partition(_TAIL)
        if not tail or "{" in namespace or "}" in namespace:
            return None
        return namespace, rest

    @staticmethod
    def expires_by_design(rest: str) -> bool:
        """Whether the key of a namespace whose name ends with ``rest`` (as
        :meth:`parse` gives it) has a TTL by design: the markers of scheduling
        calls, kept results, rate logs and workers' inboxes."""
        return rest.startswith(("enqueued:", "result:", "rate:", "inbox:"))

    @property
    def payloads(self) -> str:
        return self.prefix + "payloads"

    @property
    def seq(self) -> str:
        return self.prefix + "seq"

    @property
    def queues(self) -> str:
        return self.prefix + "queues"

    @property
    def running(self) -> str:
        return self.prefix + "running"

    @property
    def limits(self) -> str:
        return self.prefix + "limits"

    @property
    def rate_limits(self) -> str:
        return self.prefix + "rate_limits"

    @property
    def rate_wake(self) -> str:
        return self.prefix + "rate_wake"

    @property
    def in_flight(self) -> str:
        return self.prefix + "in_flight"

    @property
    def failed(self) -> str:
        return self.prefix + "failed"

    @property
    def failed_jobs(self) -> str:
        return self.prefix + "failed_jobs"

    @property
    def failed_index(self) -> str:
        return self.prefix + "failed_index"

    @property
    def failed_dropped(self) -> str:
        return self.prefix + "failed_dropped"

    @property
    def unique(self) -> str:
        return self.prefix + "unique"

    @property
    def future(self) -> str:
        return self.prefix + "future"

    @property
    def periodic(self) -> str:
        return self.prefix + "periodic"

    @property
    def periodic_next(self) -> str:
        return self.prefix + "periodic_next"

    @property
    def calls(self) -> str:
        return self.prefix + "calls"

    @property
    def workers(self) -> str:
        return self.prefix + "workers"

    @property
    def future_counts(self) -> str:
        """Queue -> its jobs in the future set (lua/include/future_count.lua)."""
        return self.prefix + "future_counts"

    @property
    def activity(self) -> str:
        """Jobs started and failed per minute, the last hour (lua/include/activity.lua)."""
        return self.prefix + "activity"

    @property
    def workers_info(self) -> str:
        """What each worker tells of itself: host and process id (lua/heartbeat.lua)."""
        return self.prefix + "workers_info"

    @property
    def channel(self) -> str:
        return self.prefix + "events"

    @property
    def ended_channel(self) -> str:
        return self.prefix + "ended"

    def enqueue_marker(self, call_id: str) -> str:
        return f"{self.prefix}enqueued:{call_id}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}result:{job_id}"

    def rate_log(self, task_name: str) -> str:
        """The starts of a rate-limited task within its period (lua/include/rate_limit.lua)."""
        return f"{self.prefix}rate:{task_name}"

    def ready(self, queue: str) -> str:
        return f"{self.prefix}queue:{queue}"

    def parked(self, queue: str) -> str:
        return f"{self.prefix}parked:{queue}"

    def cancelled(self, queue: str) -> str:
        return f"{self.prefix}cancelled:{queue}"

    def waiting(self, queue: str) -> str:
        """The waits of workers for jobs of ``queue`` (lua/wait_for_jobs.lua)."""
        return f"{self.prefix}waiting:{queue}"

    def inbox(self, worker_id: str) -> str:
        """Where jobs handed out to a waiting worker go (lua/wait_for_jobs.lua)."""
        return f"{self.prefix}inbox:{worker_id}"
