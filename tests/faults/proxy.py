"""A TCP proxy for the fault scenarios: adds latency, and cuts connections at random moments."""

from __future__ import annotations

import asyncio
import random
import threading

from spinach.testing.redis_server import free_port


class ChaosProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_port``, in a thread of its own.

    Args:
        upstream_port: the port of the server behind the proxy.
        latency: the most seconds added to each chunk forwarded (uniformly drawn).
        cut_every: the mean seconds between two cuts of a random open connection.
    """

    def __init__(self, upstream_port: int, latency: float, cut_every: float) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.latency = latency
        self.cut_every = cut_every
        self.cuts = 0
        self._connections: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        chaos = asyncio.ensure_future(self._chaos())
        self._started.set()
        await self._stopping.wait()
        chaos.cancel()
        server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await server.wait_closed()

    async def _chaos(self) -> None:
        while True:
            await asyncio.sleep(random.expovariate(1 / self.cut_every))
            if self._connections:
                victim = random.choice(sorted(self._connections, key=id))
                victim.transport.abort()
                self.cuts += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._connections.update((writer, up_writer))
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
        for w in (writer, up_writer):
            self._connections.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await asyncio.sleep(random.uniform(0, self.latency))
            writer.write(data)
            await writer.drain()
