"""Script calls sent on a connection of the client's pool, without the client's
per-command machinery.

``Redis.execute_command`` takes a connection from the pool, sends the command,
reads the reply and gives the connection back, with the connection's retry
policy; around that it dispatches events, records its own metrics and looks
up a reply callback. For the broker's ``EVALSHA`` calls that machinery cost
12 µs of a ``schedule``'s 134 µs of CPU (``benchmarks/enqueue_cost.py``), and
about 30 µs of a fetch on an idle engine. :func:`evalsha` does the same steps
through the connection's own public methods, for the clients where it can:

- a plain or Sentinel ``redis.Redis`` using its pool (not a single
  connection client);
- whose ``execute_command`` is redis-py's own, not wrapped: instrumentation
  (OpenTelemetry's, Datadog's) wraps it, and its calls keep their spans.

Every other client goes through ``execute_command``, as before.
"""

from __future__ import annotations

import inspect
from typing import Any

import redis as redis_py

__all__ = ["evalsha"]

_OWN_EXECUTE = redis_py.Redis.execute_command
#: Pool classes whose get_connection takes the command name (redis-py before 5.3).
_NAMED: dict[type, bool] = {}


def evalsha(client: Any, sha: str, keys: Any, args: Any) -> Any:
    """``client.evalsha(sha, len(keys), *keys, *args)``, on a connection of its
    pool when the client allows it (see the module's docstring).

    Raises what ``execute_command`` raises: a reply error (``NoScriptError``...),
    or the connection's error once its retry policy gave up.
    """
    execute = type(client).execute_command
    if (
        execute is not _OWN_EXECUTE
        or hasattr(execute, "__wrapped__")
        or not isinstance(client, redis_py.Redis)
        or client.connection is not None
    ):
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
        packed = conn.pack_command("EVALSHA", sha, len(keys), *keys, *args)

        def send() -> Any:
            conn.send_packed_command(packed)
            return conn.read_response()

        return conn.retry.call_with_retry(send, lambda _error: conn.disconnect())
    finally:
        pool.release(conn)
