"""What ``spinach doctor`` reports: one :class:`Check` per finding, about a :class:`Server`."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import redis

__all__ = ["Check", "Server", "Status"]

#: ``"info"`` describes the deployment (a cluster's masters, a Sentinel
#: service's sentinels) and is no verdict.
Status = Literal["pass", "warn", "fail", "unknown", "info"]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _refused(command: str, error: redis.ResponseError) -> str:
    return f"the server refused {command}: {error}"


@attrs.frozen
class Check:
    """The outcome of one check.

    Attributes:
        name: what is checked, a stable identifier such as ``"persistence"``.
        status: ``"pass"``, ``"warn"``, ``"fail"``, ``"unknown"`` when the
            server would not say (``detail`` then says why), or ``"info"`` for
            a description of the deployment, which is no verdict.
        detail: what was found, in one sentence.
        fix: what to do about it; None for a check that passes.
        node: the ``host:port`` of the server checked, when the target has
            several (a cluster's masters) or names none (a Sentinel service);
            None for the server the target names, and for the checks of the
            whole deployment.
    """

    name: str
    status: Status
    detail: str
    fix: str | None = None
    node: str | None = None


@attrs.frozen
class Server:
    """A Redis server to check, and the node its findings name (see :attr:`Check.node`)."""

    client: redis.Redis
    node: str | None = None
