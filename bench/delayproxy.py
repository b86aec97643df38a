"""A TCP proxy that holds every chunk for a fixed time in each direction: a slow link in user
space, for machines whose kernel has no netem. It also counts the connections it carried.

    with DelayProxy(upstream=("127.0.0.1", 5000), one_way_ms=50) as proxy:
        ...  # connect to 127.0.0.1:proxy.port: every round trip now takes at least 100 ms
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any


class DelayProxy:
    def __init__(self, upstream: tuple[str, int], one_way_ms: float, host: str = "127.0.0.1"):
        self.upstream = upstream
        self.delay = one_way_ms / 1000.0
        self.host = host
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delay proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:

            async def shutdown() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                loop.stop()

            asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(5)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        # the SYN/SYN-ACK of a real link: connecting takes one round trip
        await asyncio.sleep(2 * self.delay)
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((time.monotonic() + self.delay, data))
                if not data:
                    break
        except ConnectionError:
            await queue.put((time.monotonic(), b""))
        await sender
