"""The errors of the Redis broker: what went wrong, in words that say what to do."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator, Sequence

import redis as redis_py
from redis.exceptions import RedisClusterException

from ...exc import BrokerConnectionError, BrokerFullError
from ...job import Job

#: What a cluster client raises when it reaches no node (redis-py 5.0.1 lacks it).
_UNREACHABLE: tuple[type[Exception], ...] = tuple(
    kind
    for kind in [getattr(redis_py.exceptions, "RedisClusterUnreachableError", None)]
    if kind is not None
)

__all__ = [
    "ENQUEUE_WINDOW",
    "full",
    "is_full",
    "refused_clearly",
    "too_late",
    "translated",
    "unreachable",
]

#: Seconds during which a call storing at-most-once jobs may be sent again (after a
#: lost reply, by redis-py or by our retries) and is recognised: it leaves a marker
#: that lives a little longer than that, and the script refuses a run that comes later
#: (by the server's clock), so markers cost the calls of about a minute, not more.
ENQUEUE_WINDOW = 60


@contextlib.contextmanager
def refused_clearly() -> Iterator[None]:
    """Turn the errors no retry can mend (credentials, certificate) into clear ones,
    and a cluster client reaching no node into the ConnectionError of an outage."""
    try:
        yield
    except (redis_py.ConnectionError, RedisClusterException) as e:
        better = translated(e)
        if better is None:
            raise
        raise better from e


def translated(error: Exception) -> Exception | None:
    """What to raise instead of a connection error of redis-py, or None to raise
    it as it is (an outage that a retry may mend):

    - a clear :class:`BrokerConnectionError` when no retry can mend it: Redis
      refused the credentials, or the TLS certificate could not be verified;
    - a ``redis.ConnectionError`` for a cluster client that reached no node
      (``RedisClusterException`` is no ConnectionError), so that it counts as
      an outage; any other ``RedisClusterException`` (a node that is not in
      cluster mode, say) as it is.
    """
    if caused_by(error, redis_py.AuthenticationError):
        return BrokerConnectionError(
            f"Redis refused the credentials of the broker: {str(error).rstrip('.')}. "
            "Check the user and password in the Redis URL"
        )
    if caused_by(error, ssl.SSLCertVerificationError):
        return BrokerConnectionError(
            f"The TLS certificate of the Redis server could not be verified: {error}. Pass the "
            "CA that signed it (RedisBroker.from_url(url, ssl_ca_certs=...)) and use a host "
            "name that the certificate names"
        )
    if isinstance(error, RedisClusterException) and _cluster_outage(error):
        return redis_py.ConnectionError(f"no node of the Redis Cluster answered: {error}")
    return None


def _cluster_outage(error: RedisClusterException) -> bool:
    """Whether a cluster client's error means that no node could serve the call."""
    if isinstance(error, redis_py.exceptions.SlotNotCoveredError):
        return True
    if _UNREACHABLE:
        # redis-py says so itself; it raises a plain RedisClusterException for
        # what a retry cannot mend (a refused ACL permission, say).
        return isinstance(error, _UNREACHABLE)
    # redis-py before RedisClusterUnreachableError: a connection error inside.
    return caused_by(
        error, (redis_py.ConnectionError, redis_py.TimeoutError, OSError)
    ) and not caused_by(error, redis_py.exceptions.AuthorizationError)


def caused_by(
    error: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_full(error: redis_py.ResponseError) -> bool:
    """Whether Redis refused a command for want of memory (maxmemory, noeviction).

    Redis 7 answers a script's refused command with the OOM error itself;
    Redis 6.2 wraps it in a script error.
    """
    return isinstance(error, redis_py.exceptions.OutOfMemoryError) or (
        "OOM command not allowed" in str(error)
    )


def what(jobs: Sequence[Job]) -> str:
    """The jobs of a scheduling call, for an error: their number and tasks."""
    names = ", ".join(repr(name) for name in dict.fromkeys(job.task_name for job in jobs))
    if len(jobs) == 1:
        return f"the job of task {names}"
    return f"{len(jobs)} jobs of tasks {names}"


def full(jobs: Sequence[Job]) -> BrokerFullError:
    """Scheduling ``jobs`` found Redis full."""
    return BrokerFullError(
        f"Could not schedule {what(jobs)}: Redis is full (maxmemory, noeviction) "
        "and refuses new data; nothing was stored. Workers keep draining the "
        "queues, which frees memory: schedule again later, or raise the Redis "
        "server's maxmemory"
    )


def unreachable(jobs: Sequence[Job], tries: int, error: Exception) -> BrokerConnectionError:
    """Scheduling ``jobs`` could not reach Redis in ``tries`` tries."""
    return BrokerConnectionError(
        f"Could not store {what(jobs)} in Redis after {tries} tries: "
        f"{str(error).rstrip('.')}. Check that the Redis server is running "
        "and reachable at the URL the broker was given"
    )


def too_late(jobs: Sequence[Job], when: str) -> BrokerConnectionError:
    """Scheduling ``jobs`` was answered, or could be sent again, only after its window."""
    return BrokerConnectionError(
        f"Could not schedule {what(jobs)} within {ENQUEUE_WINDOW} s: Redis could "
        f"not be reached for that long, and {when} only after that, when a call sent "
        "again can no longer be told apart from a new one (or this host's clock is "
        f"over {ENQUEUE_WINDOW} s behind the Redis server's, even after measuring it "
        "again). Its jobs were stored once or not at all, never twice: "
        "look for them before scheduling them again, and check that the Redis server "
        "is running and reachable and that the clocks agree"
    )
