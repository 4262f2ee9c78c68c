"""Script calls sent on a connection of the client's pool, without the client's
per-command machinery.

``Redis.execute_command`` takes a connection from the pool, sends the command,
reads the reply and gives the connection back, with the connection's retry
policy; around that it dispatches events, records its own metrics and looks
up a reply callback. For the broker's ``EVALSHA`` calls that machinery cost
7 of a ``schedule``'s 133 µs of CPU (``benchmarks/enqueue_cost.py``), and
8 of the 103 µs of a fetch on an idle engine. :func:`evalsha` does the same
steps through the connection's own public methods, for the clients where it
can:

- a plain or Sentinel ``redis.Redis``, not a subclass, using its pool (not a
  single connection client) without a client-side cache;
- whose ``execute_command`` is redis-py's own, not wrapped or replaced on its
  class or on the client itself: instrumentation (OpenTelemetry's, Datadog's,
  Sentry's) wraps it, and its calls keep their spans.

Every other client goes through ``execute_command``, as before. The retries
are the connection's, as redis-py makes them: its retry policy, and before
redis-py 6 only for the errors the connection lists in ``retry_on_error``.
"""

from __future__ import annotations

import inspect
from typing import Any

import redis as redis_py

__all__ = ["evalsha"]

#: Attributes that, set on a client itself, change how it runs commands.
_PER_CLIENT = ("execute_command", "_execute_command", "parse_response", "evalsha")
#: Methods of redis.Redis that execute_command calls (the first not in every version):
#: wrapped or replaced, they too mean an instrumented client.
_BEHIND_EXECUTE = ("_execute_command", "parse_response")
#: redis-py before 6 retries only the errors a connection lists (retry_on_error).
_RETRY_LISTED_ONLY = hasattr(redis_py.Redis, "_disconnect_raise")
#: Pool classes whose get_connection takes the command name (redis-py before 5.3).
_NAMED: dict[type, bool] = {}


def _is_redis_own(function: Any) -> bool:
    """Whether ``function`` is redis-py's ``Redis.execute_command`` itself, by its
    name and module (a replacement has others) and without ``__wrapped__`` (a
    wrapper made with functools.wraps or wrapt has it)."""
    return (
        getattr(function, "__module__", None) == "redis.client"
        and getattr(function, "__qualname__", None) == "Redis.execute_command"
        and not hasattr(function, "__wrapped__")
    )


def _direct(client: Any) -> bool:
    """Whether ``client``'s script calls may skip its execute_command."""
    if type(client) is not redis_py.Redis or client.connection is not None:
        return False
    if not _is_redis_own(redis_py.Redis.execute_command):
        return False
    for name in _BEHIND_EXECUTE:
        function = getattr(redis_py.Redis, name, None)
        if function is not None and (
            hasattr(function, "__wrapped__")
            or getattr(function, "__module__", None) != "redis.client"
        ):
            return False
    own = vars(client)
    if any(name in own for name in _PER_CLIENT):
        return False
    pool = client.connection_pool
    kwargs = getattr(pool, "connection_kwargs", {})
    return (
        getattr(pool, "cache", None) is None
        and kwargs.get("cache") is None
        and kwargs.get("cache_config") is None
    )


def evalsha(client: Any, sha: str, keys: Any, args: Any) -> Any:
    """``client.evalsha(sha, len(keys), *keys, *args)``, on a connection of its
    pool when the client allows it (see the module's docstring).

    Raises what ``execute_command`` raises: a reply error (``NoScriptError``...),
    or the connection's error once its retry policy gave up.
    """
    if not _direct(client):
        return client.evalsha(sha, len(keys), *keys, *args)
    pool = client.connection_pool
    named = _NAMED.get(type(pool))
    if named is None:
        parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
        named = _NAMED[type(pool)] = (
            parameter is not None and parameter.default is inspect.Parameter.empty
        )
    # Any: redis-py leaves its Connection methods unannotated.
    conn: Any = pool.get_connection("EVALSHA") if named else pool.get_connection()
    try:

        def send() -> Any:
            conn.send_command("EVALSHA", sha, len(keys), *keys, *args)
            return conn.read_response()

        def failed(error: Exception) -> None:
            conn.disconnect()
            if _RETRY_LISTED_ONLY and not isinstance(error, tuple(conn.retry_on_error or ())):
                raise error

        return conn.retry.call_with_retry(send, failed)
    finally:
        pool.release(conn)
