"""Run every ```python block of README.md and docs/*.md as a test, with Sybil.

Each Markdown file is one test module. Its blocks run in order in one
namespace (Sybil's namespace per document), so a block uses what the blocks
above it defined. Two kinds of HTML comments, which the site does not show,
steer them:

- ``<!-- invisible-code-block: python ... -->`` runs code that the reader
  does not see: the imports and objects that a fragment assumes. Two helpers
  are there for it: ``stop_after_job(engine_name, task_name)``, so that the
  workers of a block that runs them "until SIGINT or SIGTERM" stop once a
  job ran, and ``fake_module("myapp.tasks", spin=...)``, for a block that
  imports the reader's application.
- ``<!-- skip: next "why" -->`` skips the next block, saying why.

A block that is not Python but signatures (``Engine(broker, *, ...)``) is
compared with the code's signatures instead.

Redis: the docs write the URLs a reader would (``redis://localhost:6379/0``).
Before a block runs, each URL of :data:`_PLACEHOLDERS` in its text is replaced
with the URL of a throwaway ``redis-server`` started for the document, the
first time one of its blocks needs it, and stopped after its last block. The
text is rewritten, rather than an environment variable set, because the docs
hard-code their URLs as an application would; this way the page keeps them,
and no test touches a Redis that the machine runs. The server is set up as
docs/production.md asks (AOF on, a password), so ``spinach doctor`` passes on
it. Without ``redis-server``, the blocks from the first that needs it on are
skipped (failed when ``CI`` is set).

After a document, this file stops the engines and closes the brokers that
its namespace still holds, disconnects its signal receivers, and restores
the logging configuration and ``sys.modules``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import types
from typing import Any, Callable

import blinker
import pytest
import redis
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from spinach import Engine, RedisBroker, signals
from spinach.job import Job
from spinach.testing import wait_for
from spinach.testing.redis_server import RedisServer, free_port

_STATE = "_docs_state"


class _DocumentState:
    """What one document started or changed, undone after its last block."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.skip_reason = ""
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._servers: dict[str, tuple[RedisServer, dict[str, Any]]] = {}
        self._receivers: list[Callable[..., None]] = []
        self._modules: list[str] = []
        self._root_handlers = logging.root.handlers[:]
        self._levels = {name: logging.getLogger(name).level for name in ("", "spinach")}

    def _server(self, kind: str) -> dict[str, Any]:
        """Where the document's server of this kind listens; started now if needed."""
        if kind not in self._servers:
            if shutil.which("redis-server") is None:
                self.skip_reason = "redis-server is not installed: the docs' Redis blocks need one"
                if os.environ.get("CI"):
                    pytest.fail(self.skip_reason)
                pytest.skip(self.skip_reason)
            if self._directory is None:
                self._directory = tempfile.TemporaryDirectory(prefix="spinach-docs-")
            directory = os.path.join(self._directory.name, kind)
            os.mkdir(directory)
            self._servers[kind] = _START[kind](directory)
        return self._servers[kind][1]

    def rewrite(self, source: str) -> str:
        for placeholder, (kind, template) in _PLACEHOLDERS.items():
            if placeholder in source:
                fields = self._server(kind) if kind else {}
                source = source.replace(placeholder, template.format(**fields))
        return source

    def stop_after_job(self, engine: str, task: str) -> None:
        """Stop the workers of the engine named ``engine`` once a job of ``task`` ran.

        For blocks that run workers until SIGINT or SIGTERM. The receiver runs
        in the worker's thread, where ``stop_workers`` returns at once.
        """

        def receiver(sender: str, job: Job, **kwargs: Any) -> None:
            if job.task_name == task:
                signals.job_finished.disconnect(receiver)
                self.namespace[engine].stop_workers()

        signals.job_finished.connect(receiver, weak=False)
        self._receivers.append(receiver)

    def fake_module(self, name: str, **attributes: Any) -> None:
        """Make ``import name`` give a module of these attributes (``myapp.tasks``...)."""
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        parent, _, child = name.rpartition(".")
        if parent and parent not in sys.modules:
            self.fake_module(parent)
        if parent:
            setattr(sys.modules[parent], child, module)
        sys.modules[name] = module
        self._modules.append(name)

    def close(self) -> None:
        try:
            self._close_engines()
        finally:
            self._undo()

    def _close_engines(self) -> None:
        # type(), not isinstance(): the namespace may hold proxies (Flask's
        # current_app) that raise when asked for their class.
        values = list(self.namespace.values())
        engines = [v for v in values if issubclass(type(v), Engine)]
        for engine in engines:
            engine.stop_workers()
        for broker in {id(b): b for b in [*values, *(e.broker for e in engines)]}.values():
            if issubclass(type(broker), RedisBroker):
                broker.close()

    def _undo(self) -> None:
        defined_here = [
            v
            for v in self.namespace.values()
            if type(v) is types.FunctionType and v.__globals__ is self.namespace
        ]
        for server, _ in self._servers.values():
            server.stop()
        if self._directory is not None:
            self._directory.cleanup()
        for signal in vars(signals).values():
            if isinstance(signal, blinker.Signal):
                for receiver in [*defined_here, *self._receivers]:
                    signal.disconnect(receiver)
        for name in reversed(self._modules):
            sys.modules.pop(name, None)
        for handler in logging.root.handlers[:]:
            if handler not in self._root_handlers:
                logging.root.removeHandler(handler)
                handler.close()
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)


def _start_redis(directory: str) -> tuple[RedisServer, dict[str, Any]]:
    password = secrets.token_hex(16)
    server = RedisServer(directory)
    server.start("--appendonly", "yes", "--requirepass", password)
    return server, {"url": f"redis://:{password}@127.0.0.1:{server.port}/0"}


def _start_cluster(directory: str) -> tuple[RedisServer, dict[str, Any]]:
    """A Redis Cluster of one master, serving every slot."""
    port = free_port()
    while port + 10000 > 65535:  # the cluster bus port
        port = free_port()
    server = RedisServer(directory, port=port)
    server.start(
        "--cluster-enabled", "yes",
        "--cluster-config-file", os.path.join(directory, "nodes.conf"),
    )  # fmt: skip
    client = redis.Redis(port=port, decode_responses=True)
    try:
        client.execute_command("CLUSTER ADDSLOTS", *range(16384))
        wait_for(lambda: client.execute_command("CLUSTER INFO")["cluster_state"] == "ok")
    except BaseException:
        server.stop()
        raise
    finally:
        client.close()
    return server, {"host": "127.0.0.1", "port": port}


_START: dict[str, Callable[[str], tuple[RedisServer, dict[str, Any]]]] = {
    "redis": _start_redis,
    "cluster": _start_cluster,
}

#: What the docs write, the server that replaces it, and the text that does.
_PLACEHOLDERS: dict[str, tuple[str | None, str]] = {
    "redis://localhost:6379/0": ("redis", "{url}"),
    "redis+cluster://10.0.0.1:7000": ("cluster", "redis+cluster://{host}:{port}"),
    'host="10.0.0.1", port=7000': ("cluster", 'host="{host}", port={port}'),
    # A Sentry DSN that parses, on a port where nothing listens: no event is
    # sent anyway, the client is closed right after (docs/integrations.md).
    'dsn="https://..."': (None, 'dsn="https://public@127.0.0.1:9/1"'),
}


#: Signatures, one or more: ``name(parameters)`` at the start of a line.
_SIGNATURES = re.compile(r"([\w.]+\([^()]*\)\s*)+")


def _check_signatures(source: str, namespace: dict[str, Any]) -> str | None:
    """Compare a block of signatures, which a bare ``*`` keeps from being
    Python, with the code: each must read as ``inspect.signature`` gives it,
    annotations left out. Returns what differs, for Sybil to fail the block."""
    for documented in re.split(r"\n(?=[\w.]+\()", source.strip()):
        documented = re.sub(r"\s+", " ", documented).replace("( ", "(").replace(" )", ")")
        name = documented.partition("(")[0]
        found = inspect.signature(eval(name, namespace))
        parameters = [p.replace(annotation=p.empty) for p in found.parameters.values()]
        actual = name + str(found.replace(parameters=parameters, return_annotation=found.empty))
        if documented != actual:
            return f"documented: {documented}\nin the code: {actual}"
    return None


def _evaluate(example: Example) -> str | None:
    """Run a block like Sybil's PythonEvaluator, after rewriting its URLs.

    Top-level ``await`` is allowed, as in ``python -m asyncio``: a block
    showing a line of a coroutine runs in an event loop of its own. A block
    of signatures is checked against the code instead (see above).
    """
    state: _DocumentState = example.namespace[_STATE]
    if state.skip_reason:
        pytest.skip(state.skip_reason)
    source = state.rewrite(str(example.parsed))
    padding = "\n" * (example.line + example.parsed.line_offset)
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        code = compile(padding + source, example.path, "exec", flags=flags, dont_inherit=True)
    except SyntaxError:
        if not _SIGNATURES.fullmatch(source.strip()):
            raise
        return _check_signatures(source, example.namespace)
    try:
        result = eval(code, example.namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    finally:
        example.namespace.pop("__builtins__", None)
    return None


def _setup(namespace: dict[str, Any]) -> None:
    state = namespace[_STATE] = _DocumentState(namespace)
    namespace["__name__"] = "__main__"  # each document runs as a script would
    namespace["stop_after_job"] = state.stop_after_job
    namespace["fake_module"] = state.fake_module


def _teardown(namespace: dict[str, Any]) -> None:
    try:
        namespace[_STATE].close()
    finally:
        namespace.clear()


pytest_collect_file = Sybil(
    parsers=[CodeBlockParser(language="python", evaluator=_evaluate), SkipParser()],
    # Path.match() matches from the right: "README.md" alone would also take
    # the README.md of every subdirectory, hence the exclude.
    patterns=["README.md", "docs/*.md"],
    excludes=["*/README.md"],
    setup=_setup,
    teardown=_teardown,
).pytest()
