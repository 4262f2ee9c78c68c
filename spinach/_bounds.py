"""What a job's arguments may hold, checked without recursion.

A job's arguments are JSON types: ``None``, ``bool``, ``int``, finite
``float``, ``str``, ``list`` (a ``tuple`` is read back as a list) and ``dict``
with ``str`` keys. Two bounds keep every stored job readable by every worker,
whatever its stack depth or interpreter settings:

* containers nested at most :data:`MAX_DEPTH` deep (a list holding itself is
  nested without end);
* integers of at most :data:`MAX_INT_DIGITS` decimal digits, the default limit
  of Python's ``int`` and ``str`` conversions, which JSON goes through.

Scheduling checks them (:func:`check_arguments`), and workers check what they
read back (:func:`check_stored`): a job over the bounds is refused when it is
scheduled, and a stored one that a bug or a hand edit put over them is failed
instead of breaking the worker that reads it. The walk keeps its own stack, so
no value, however deep, can make it hit the interpreter's recursion limit.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterator
from typing import Any, NoReturn

from .exc import InvalidJobArgumentError, InvalidJobResultError

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "check_arguments",
    "check_result",
    "check_stored",
    "short_repr",
]

#: Deepest nesting of lists and dicts in one argument.
MAX_DEPTH = 100
#: Most decimal digits of an integer argument.
MAX_INT_DIGITS = 4300
_INT_LIMIT = 10**MAX_INT_DIGITS


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if abs(x) < _INT_LIMIT:
            return super().repr_int(x, level)
        # repr() itself refuses such an integer.
        return f"<int of about {int(x.bit_length() * math.log10(2)):,} digits>"


_short = _ShortRepr()
_short.maxstring = 100
_short.maxother = 100
_short.maxlist = _short.maxdict = _short.maxtuple = 10


def short_repr(value: Any) -> str:
    """A repr of ``value`` cut short, safe for values nested without end."""
    return _short.repr(value)


class _Rejected(Exception):
    """A value outside the bounds; ``path`` leads to it from the argument."""

    def __init__(self, value: Any, why: str, path: str) -> None:
        super().__init__(why)
        self.value, self.why, self.path = value, why, path


def _path(keys: list[Any]) -> str:
    return "".join(f"[{key!r}]" for key in keys)


def _json_bound(value: Any) -> int:
    """An upper bound of the length of ``value`` as JSON text (ASCII, escaped).

    Subclasses (str enums, SafeString, OrderedDict...) are accepted: they are
    stored as their JSON type and read back as the plain base type.

    Raises:
        _Rejected: ``value`` is not JSON, is over the bounds, or does not come
            back unchanged.
    """
    if not isinstance(value, (list, tuple, dict)):
        return _scalar_bound(value, [])
    total = 0
    # The containers being walked, outermost first: the iterator of their
    # (index or key, item) pairs, the container and whether it is a dict;
    # ``on_path`` holds their ids (to find a container holding itself),
    # ``keys`` the index or key of the item walked in each.
    frames: list[tuple[Iterator[tuple[Any, Any]], Any, bool]] = []
    on_path: set[int] = set()
    keys: list[Any] = []
    item = value
    while True:
        if isinstance(item, (list, tuple, dict)):
            if id(item) in on_path:
                raise _Rejected(item, "it contains itself", _path(keys))
            if len(frames) == MAX_DEPTH:
                why = f"lists and dicts nested more than {MAX_DEPTH} deep"
                raise _Rejected(item, why, _path(keys))
            is_dict = isinstance(item, dict)
            total += (2 if is_dict else 1) * len(item) + 2
            pairs = iter(item.items()) if isinstance(item, dict) else enumerate(item)
            frames.append((pairs, item, is_dict))
            on_path.add(id(item))
            keys.append(None)
        else:
            total += _scalar_bound(item, keys)
        # The next item to account for: the next one of the innermost
        # container that has one left.
        while frames:
            pairs, container, is_dict = frames[-1]
            following = next(pairs, None)
            if following is None:
                frames.pop()
                on_path.discard(id(container))
                keys.pop()
                continue
            key, item = following
            if is_dict:
                if not isinstance(key, str):
                    why = f"key {short_repr(key)} is not a str, as JSON keys must be"
                    raise _Rejected(container, why, _path(keys[:-1]))
                total += 12 * len(key) + 2
            keys[-1] = key
            break
        else:
            return total


def _scalar_bound(value: Any, keys: list[Any]) -> int:
    """:func:`_json_bound` of a value that is not a list, tuple or dict."""
    if isinstance(value, str):
        return 12 * len(value) + 2  # a character outside the BMP is escaped as 12
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        if abs(value) >= _INT_LIMIT:
            why = f"an integer of more than {MAX_INT_DIGITS:,} digits"
            raise _Rejected(value, why, _path(keys))
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Rejected(value, "NaN and infinities are not JSON", _path(keys))
        return 25
    raise _Rejected(value, f"{type(value).__name__} is not a JSON type", _path(keys))


def check_arguments(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Check that a job's arguments survive a JSON round trip unchanged, within the bounds.

    Returns:
        An upper bound of the size of the arguments once serialized, in bytes.

    Raises:
        InvalidJobArgumentError: naming the task and the argument at fault.
    """
    total = 4
    for i, value in enumerate(args):
        try:
            total += _json_bound(value) + 1
        except _Rejected as e:
            _reject(task_name, f"args[{i}]{e.path}", e)
    for key, value in kwargs.items():
        try:
            total += _json_bound(value) + 12 * len(key) + 4
        except _Rejected as e:
            _reject(task_name, f"kwargs[{key!r}]{e.path}", e)
    return total


def check_result(task_name: str, value: Any) -> None:
    """Check that a task's return value survives a JSON round trip unchanged,
    within the bounds that arguments have.

    Raises:
        InvalidJobResultError: naming the task and the value at fault.
    """
    try:
        _json_bound(value)
    except _Rejected as e:
        raise InvalidJobResultError(
            f"Task {task_name!r} keeps its result, but its return value{e.path} = "
            f"{short_repr(e.value)} cannot be stored ({e.why}). {_JSON_RULE}: return an id, "
            "an ISO date string or a plain dict instead, or stop keeping the result"
        ) from None


_JSON_RULE = (
    "Values must be JSON types (str, int, float, bool, None, list, dict with str keys), "
    f"nested at most {MAX_DEPTH} deep, with integers of at most {MAX_INT_DIGITS:,} digits"
)


def _reject(task_name: str, path: str, rejected: _Rejected) -> NoReturn:
    raise InvalidJobArgumentError(
        f"Task {task_name!r}: argument {path} = {short_repr(rejected.value)} cannot be stored "
        f"({rejected.why}). {_JSON_RULE}: pass an id, an ISO date string or a plain dict instead."
    ) from None


def check_stored(args: list[Any], kwargs: dict[str, Any]) -> None:
    """Check arguments read back from storage against the bounds scheduling enforces.

    Raises:
        ValueError: an argument is over the bounds, saying which and why.
    """
    for where, values in (("args", enumerate(args)), ("kwargs", kwargs.items())):
        for key, value in values:
            # Most arguments are short strings and small numbers: skip the walk.
            kind = type(value)
            if kind is str or kind is float or kind is bool or value is None:
                continue
            if kind is int and -_INT_LIMIT < value < _INT_LIMIT:
                continue
            try:
                _json_bound(value)
            except _Rejected as e:
                raise ValueError(f"argument {where}[{key!r}]{e.path}: {e.why}") from None
