"""Operations written once as steps, carried out by a blocking or an asyncio caller.

An operation that may call Redis several times, wait between its tries and
measure the clock again (storing jobs, see ``RedisBroker.enqueue_jobs``) is a
generator of steps. It decides everything: what to send, whether to try again
and what to raise. A driver only carries each step out, in a blocking way
(:func:`drive`) or awaiting (:func:`drive_async`), and sends back the reply
of a :class:`Call` or throws in its error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import Any, Callable, NamedTuple, TypeVar, Union

import attrs

__all__ = ["Call", "Pause", "Resync", "Steps", "drive", "drive_async"]

_T = TypeVar("_T")


class Call(NamedTuple):
    """Run a script: the step is sent its reply, or thrown its error."""

    keys: list[bytes]
    args: list[Any]


@attrs.frozen
class Pause:
    """Wait that many seconds."""

    seconds: float


@attrs.frozen
class Resync:
    """Measure the offset of the Redis server's clock again."""


Step = Union[Call, Pause, Resync]
#: An operation as steps, returning a ``_T`` once done.
Steps = Generator[Step, Any, _T]


def drive(steps: Steps[_T], carry_out: Callable[[Step], Any]) -> _T:
    """Carry out each of ``steps`` with ``carry_out``, blocking; return what they return."""
    reply: Any = None
    error: Exception | None = None
    while True:
        done, step = _resume(steps, reply, error)
        if done:
            return step  # type: ignore[no-any-return]  # what the steps returned
        try:
            reply, error = carry_out(step), None
        except Exception as e:  # the steps decide what an error means
            reply, error = None, e


async def drive_async(steps: Steps[_T], carry_out: Callable[[Step], Awaitable[Any]]) -> _T:
    """:func:`drive` for asyncio code: ``carry_out`` is awaited."""
    reply: Any = None
    error: Exception | None = None
    while True:
        done, step = _resume(steps, reply, error)
        if done:
            return step  # type: ignore[no-any-return]  # what the steps returned
        try:
            reply, error = await carry_out(step), None
        except Exception as e:  # the steps decide what an error means
            reply, error = None, e


def _resume(steps: Steps[Any], reply: Any, error: Exception | None) -> tuple[bool, Any]:
    """Send ``steps`` the reply of their last step, or throw its error in:
    (False, the next step), or (True, what they returned) once they are done."""
    try:
        return False, steps.send(reply) if error is None else steps.throw(error)
    except StopIteration as finished:
        return True, finished.value
