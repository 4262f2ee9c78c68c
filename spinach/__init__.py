"""Spinach: a Redis task queue for Python."""

from __future__ import annotations

from ._version import __version__
from .brokers.memory import MemoryBroker
from .brokers.redis import RedisBroker
from .engine import Engine
from .exc import AbortException, RetryException
from .job import JobError, JobInfo, JobStatus
from .task import Batch, Tasks
from .worker import AsyncioWorkers, ThreadWorkers

VERSION = __version__

__all__ = [
    "VERSION",
    "AbortException",
    "AsyncioWorkers",
    "Batch",
    "Engine",
    "JobError",
    "JobInfo",
    "JobStatus",
    "MemoryBroker",
    "RedisBroker",
    "RetryException",
    "Tasks",
    "ThreadWorkers",
    "__version__",
]
