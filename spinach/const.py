"""Default values shared by the whole package."""

from __future__ import annotations

from datetime import timedelta

from ._version import __version__

__all__ = [
    "DEFAULT_DEAD_WORKER_TIMEOUT",
    "DEFAULT_ENQUEUE_JOB_RETRIES",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_KEEP_FAILED",
    "DEFAULT_MAX_FAILED",
    "DEFAULT_MAX_JOB_SIZE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_NAMESPACE",
    "DEFAULT_QUEUE",
    "DEFAULT_WORKER_NUMBER",
    "MIN_PERIODICITY",
    "VERSION",
]

#: The version of Spinach, as in 0.0.25.
VERSION = __version__

DEFAULT_QUEUE = "spinach"
DEFAULT_NAMESPACE = "spinach"
DEFAULT_MAX_RETRIES = 0
DEFAULT_WORKER_NUMBER = 5
#: Times scheduling retries when Redis cannot be reached (RedisBroker's default).
DEFAULT_ENQUEUE_JOB_RETRIES = 4

#: Seconds between two heartbeats of a running engine.
DEFAULT_HEARTBEAT_INTERVAL = 1.0
#: Seconds without a heartbeat after which a worker is declared dead.
DEFAULT_DEAD_WORKER_TIMEOUT = 10.0
#: Largest serialized job scheduling accepts by default, in bytes.
DEFAULT_MAX_JOB_SIZE = 512 * 1024
#: Shortest periodicity a periodic task may have, in seconds.
MIN_PERIODICITY = 1.0
#: How long a job that failed for good stays in the failed store by default.
DEFAULT_KEEP_FAILED = timedelta(days=7)
#: Most jobs the failed store holds by default; the oldest are dropped first.
DEFAULT_MAX_FAILED = 10_000
