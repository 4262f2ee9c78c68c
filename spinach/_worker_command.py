"""``spinach worker``: run an engine's workers, in this process or in several.

With ``--processes N`` above 1, this process is a supervisor: it starts N
worker processes (``python -m spinach worker ... --processes 1``, each a fresh
interpreter that imports the application), restarts one that dies, with a
back-off when it keeps dying, and stops them on SIGINT or SIGTERM: the first
signal asks them for a graceful stop, a second kills them at once.

Each child is told two pipes: it writes a byte to the first once its workers
started (so that the supervisor tells a child that cannot start from one that
died after running), and reads the second, the lifeline, which the supervisor
holds open: a byte on it asks for a graceful stop, and its end (the
supervisor died) does too. A stop is asked this way rather than by a signal,
so that a child that also got the signal itself (systemd signals every
process of its unit) sees one signal, not two. Children run in their own
session, so that a Ctrl-C in a terminal reaches the supervisor only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import attrs

from . import signals
from .engine import Engine
from .worker import Workers

__all__ = ["EXIT_FORCED", "EXIT_NO_START", "Supervisor", "run_worker"]

logger = logging.getLogger("spinach.worker")

#: Exit status when the worker processes could not start.
EXIT_NO_START = 1
#: Exit status after a second signal stopped the worker processes at once.
EXIT_FORCED = 1
#: A child that ran this long (seconds) and died is restarted at once, not after a back-off.
_HEALTHY_UPTIME = 10.0
#: Starts in a row that fail (the child dies before its workers start) before giving up.
_MAX_FAILED_STARTS = 3
#: Back-off before restarting a child that died early: base, doubled per death, and cap.
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 30.0


def run_worker(
    engine: Engine,
    *,
    threads: int,
    workers_class: type[Workers],
    queue: str,
    stop_when_empty: bool,
    grace_period: float | None,
    ready_fd: int | None = None,
    lifeline_fd: int | None = None,
) -> None:
    """Run ``engine``'s workers in this process until SIGINT or SIGTERM (or an
    empty queue); under a supervisor, tell it once they started, and stop
    gracefully when it asks (a byte on the lifeline) or goes away (its end)."""
    started = threading.Event()
    if ready_fd is not None:
        os.set_inheritable(ready_fd, False)  # no process this one starts holds it
        fd: int | None = ready_fd
        lock = threading.Lock()

        def on_started(sender: str, worker_name: str) -> None:
            # Sent by each worker thread as it starts: the first one tells.
            nonlocal fd
            with lock:
                started.set()
                if fd is not None:
                    os.write(fd, b"1")
                    os.close(fd)
                    fd = None

        signals.worker_started.connect(on_started, sender=engine.namespace, weak=False)
    if lifeline_fd is not None:
        os.set_inheritable(lifeline_fd, False)
        watch = threading.Thread(
            target=_stop_when_told,
            args=(engine, lifeline_fd, started),
            name="supervisor-watch",
            daemon=True,
        )
        watch.start()
    engine.start_workers(
        number=threads,
        queue=queue,
        block=True,
        stop_when_queue_empty=stop_when_empty,
        workers_class=workers_class,
        grace_period=grace_period,
    )


def _stop_when_told(engine: Engine, fd: int, started: threading.Event) -> None:
    """Read the supervisor's lifeline until it asks for a stop (a byte) or is
    gone (the pipe's end), then stop the workers gracefully, once they started
    (a stop asked for earlier would be lost in the start). Not a signal: a
    signal the process got as well (systemd signals every process of its unit)
    would make it a second one, which stops at once."""
    try:
        data = os.read(fd, 1)
    except OSError:
        data = b""
    if data:
        logger.info("The supervisor asks for a stop: stopping gracefully")
    else:
        logger.warning("The supervisor is gone: stopping gracefully")
    started.wait()
    engine.stop_workers()


@attrs.define
class _Child:
    """One slot of the supervisor and the process that fills it."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    ready_read: int | None = None
    lifeline_write: int | None = None
    started_at: float = 0.0
    ready: bool = False
    failed_starts: int = 0
    deaths_in_a_row: int = 0
    restart_at: float | None = None
    done: bool = False


class Supervisor:
    """Runs ``processes`` copies of ``command`` (the argv of a worker process,
    to which it appends ``--supervised READY_FD,LIFELINE_FD``) until told to
    stop; see the module's docstring.

    Args:
        command: the child's argv.
        processes: how many children run at once.
        stop_when_empty: a child that exits with status 0 finished (its queue
            was empty) and is not restarted; the supervisor returns once all did.
    """

    def __init__(self, command: Sequence[str], processes: int, *, stop_when_empty: bool) -> None:
        self._command = list(command)
        self._children = [_Child(i) for i in range(processes)]
        self._stop_when_empty = stop_when_empty
        self._signals = 0
        self._selector = selectors.DefaultSelector()
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)
        self._selector.register(self._wakeup_read, selectors.EVENT_READ, None)

    def run(self) -> int:
        """Supervise until every child ended; return the exit status."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        previous_fd = signal.set_wakeup_fd(self._wakeup_write)
        try:
            return self._supervise()
        finally:
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for child in self._children:
                self._close_pipes(child)
            self._selector.close()
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1

    def _supervise(self) -> int:
        for child in self._children:
            self._spawn(child)
        forwarded = 0
        gave_up = failed_stop = False
        while not all(child.done for child in self._children):
            if self._signals > forwarded:
                forwarded = self._signals
                self._pass_on(forwarded, gave_up)
            self._wait(self._next_timeout())
            now = time.monotonic()
            for child in self._children:
                # A signal taken meanwhile counts: no restart once a stop was asked.
                stopping = self._signals > 0
                if child.process is not None and child.process.poll() is not None:
                    outcome = self._reap(child, now, stopping=stopping)
                    if outcome == "cannot start":
                        gave_up = True
                        self._signals = max(self._signals, 1)  # stop the others
                    failed_stop = failed_stop or outcome == "failed"
                if child.restart_at is not None and now >= child.restart_at and not stopping:
                    self._spawn(child)
        if gave_up:
            return EXIT_NO_START
        return EXIT_FORCED if forwarded > 1 or failed_stop else 0

    def _pass_on(self, signals_received: int, gave_up: bool) -> None:
        """Ask the children for a graceful stop first (on their lifelines),
        then kill them."""
        first = signals_received == 1
        running = sum(1 for c in self._children if c.process is not None)
        if gave_up:
            logger.info("Stopping the other %d worker process(es) gracefully", running)
        elif first:
            logger.info(
                "Stopping %d worker process(es) gracefully; send the signal again to stop "
                "them at once",
                running,
            )
        else:
            logger.warning("Stopping %d worker process(es) at once", running)
        for child in self._children:
            child.restart_at = None
            if child.process is None:
                child.done = True
            elif first:
                if child.lifeline_write is not None:
                    with contextlib.suppress(OSError):  # it is gone: reaped below
                        os.write(child.lifeline_write, b"s")
            elif child.process.poll() is None:
                child.process.kill()

    def _next_timeout(self) -> float:
        """Seconds until the next restart is due, 0.2 at most: children are
        also polled, as their deaths are not events of the selector."""
        now = time.monotonic()
        due = [c.restart_at - now for c in self._children if c.restart_at is not None]
        return max(0.0, min([0.2, *due]))

    def _wait(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            if key.data is None:  # a signal arrived: its byte is read, it is handled
                os.read(self._wakeup_read, 512)
                continue
            child: _Child = key.data
            self._read_ready(child)

    def _read_ready(self, child: _Child) -> None:
        assert child.ready_read is not None
        try:
            data = os.read(child.ready_read, 1)
        except BlockingIOError:
            # Nothing written, and a process the child started holds the pipe:
            # it did not start (a child that dies is read once more, below).
            data = b""
        if data:
            child.ready = True
            child.failed_starts = 0
            assert child.process is not None
            logger.info("Worker process %d started (pid %d)", child.index + 1, child.process.pid)
        self._selector.unregister(child.ready_read)
        os.close(child.ready_read)
        child.ready_read = None

    def _spawn(self, child: _Child) -> None:
        ready_read, ready_write = os.pipe()
        lifeline_read, lifeline_write = os.pipe()
        os.set_blocking(ready_read, False)
        command = [*self._command, "--supervised", f"{ready_write},{lifeline_read}"]
        try:
            child.process = subprocess.Popen(
                command, pass_fds=(ready_write, lifeline_read), start_new_session=True
            )
        except OSError as e:
            # Out of processes or files, for now: try again later.
            os.close(ready_read)
            os.close(lifeline_write)
            child.deaths_in_a_row += 1
            wait = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (child.deaths_in_a_row - 1))
            logger.error(
                "Could not start worker process %d (%s); trying again in %.1f s",
                child.index + 1,
                e,
                wait,
            )
            child.restart_at = time.monotonic() + wait
            return
        finally:
            os.close(ready_write)
            os.close(lifeline_read)
        child.ready_read, child.lifeline_write = ready_read, lifeline_write
        child.started_at, child.ready, child.restart_at = time.monotonic(), False, None
        self._selector.register(ready_read, selectors.EVENT_READ, child)

    def _close_pipes(self, child: _Child) -> None:
        if child.ready_read is not None:
            self._selector.unregister(child.ready_read)
            os.close(child.ready_read)
            child.ready_read = None
        if child.lifeline_write is not None:
            os.close(child.lifeline_write)
            child.lifeline_write = None

    def _reap(self, child: _Child, now: float, *, stopping: bool) -> str:
        """Account for a child that exited: "ended" (it is done), "failed" (done,
        with a non-zero status), "cannot start" (it failed to start too many
        times in a row), or "restart" (it starts again, maybe after a back-off)."""
        assert child.process is not None
        if child.ready_read is not None:
            self._read_ready(child)  # it may have started just before dying
        code = child.process.returncode
        pid = child.process.pid
        child.process = None
        self._close_pipes(child)
        if stopping or (code == 0 and self._stop_when_empty):
            child.done = True
            # A child still starting dies of a SIGTERM sent to every process (systemd).
            if code == 0 or (not child.ready and code == -signal.SIGTERM):
                return "ended"
            logger.warning("Worker process %d (pid %d) exited with %s", child.index + 1, pid, code)
            return "failed"
        if not child.ready:
            child.failed_starts += 1
            if child.failed_starts >= _MAX_FAILED_STARTS:
                logger.error(
                    "Worker process %d exited with %s before its workers started, %d times in "
                    "a row: the worker processes cannot start; see the errors above",
                    child.index + 1,
                    code,
                    child.failed_starts,
                )
                child.done = True
                return "cannot start"
        healthy = child.ready and now - child.started_at >= _HEALTHY_UPTIME
        child.deaths_in_a_row = 0 if healthy else child.deaths_in_a_row + 1
        wait = 0.0
        if child.deaths_in_a_row:
            wait = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (child.deaths_in_a_row - 1))
        logger.warning(
            "Worker process %d (pid %d) exited with %s; starting it again in %.1f s",
            child.index + 1,
            pid,
            code,
            wait,
        )
        child.restart_at = now + wait
        return "restart"


def worker_command(argv: Sequence[str]) -> list[str]:
    """The argv of a worker process: this interpreter running ``spinach``."""
    return [sys.executable, "-m", "spinach", *argv]
