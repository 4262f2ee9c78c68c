"""Brokers store jobs and hand them out atomically."""

from __future__ import annotations

from .base import Broker, RunningJobState
from .memory import MemoryBroker, MemoryStore
from .redis import RedisBroker

__all__ = ["Broker", "MemoryBroker", "MemoryStore", "RedisBroker", "RunningJobState"]
