"""A TCP proxy on 127.0.0.1 that simulates outages of the server behind it.

A test points its client at ``OutageProxy.address`` instead of the real server. The proxy
forwards bytes both ways until the test switches it to an outage mode:

- ``reset()`` aborts every open connection with a TCP reset (RST) and keeps listening, but
  resets each new connection as soon as its first request bytes arrive. Clients see
  "connection reset by peer", as when a server crashes in the middle of a request.
- ``refuse()`` aborts every open connection with a TCP reset and stops listening, so new
  connections are refused (ECONNREFUSED), as when the server process is down.
- ``restore()`` listens again on the same port and forwards again.

The proxy runs an asyncio event loop in a daemon thread, and every socket is closed on
that thread. Linux sends RST instead of FIN for a socket closed with ``SO_LINGER`` set to
zero, but only when that close releases the socket. A call blocked on the socket in
another thread would keep it alive, which is why no thread here blocks on a socket.
The listening socket is handled the same way, because ``asyncio.Server`` on Python 3.11
fails an assertion when a connection arrives in the loop iteration that closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Mode = Literal["forward", "reset", "refuse"]

# Upper bound of one control call (start, reset, refuse, restore, close) on the event loop.
CONTROL_TIMEOUT_SECONDS = 30.0
# In reset mode, a new connection that sends nothing is reset after this wait anyway.
FIRST_REQUEST_TIMEOUT_SECONDS = 5.0
CHUNK_BYTES = 65536
# struct linger {l_onoff = 1, l_linger = 0}: close() then sends RST and drops unsent data.
LINGER_ZERO = struct.pack("ii", 1, 0)


class OutageProxy:
    """TCP proxy from ``address`` to ``target_host:target_port`` with outage modes."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode: Mode = "forward"
        # Client connections that this proxy closed with a TCP reset.
        self.resets = 0
        # Client connections accepted while the mode was "reset".
        self.accepted_in_reset_mode = 0
        self._listener: socket.socket | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._upstreams: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="outage-proxy", daemon=True
        )

    @property
    def address(self) -> str:
        """Return ``127.0.0.1:PORT``, the address clients connect to."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> OutageProxy:
        """Start the event loop and listen on a free port."""
        self._thread.start()
        self._call(self._listen())
        return self

    def reset(self) -> None:
        """Reset every open connection and every new one after its first request bytes."""
        self._call(self._reset())

    def refuse(self) -> None:
        """Reset every open connection and stop listening, so connections are refused."""
        self._call(self._refuse())

    def restore(self) -> None:
        """Listen on the same port again, if needed, and forward new connections."""
        self._call(self._restore())

    def close(self) -> None:
        """Stop listening, reset every connection and stop the event loop."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CONTROL_TIMEOUT_SECONDS)
            if not self._thread.is_alive():
                self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(CONTROL_TIMEOUT_SECONDS)

    # The methods below run on the event loop's thread.

    async def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._loop.add_reader(listener.fileno(), self._accept_ready, listener)

    async def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._loop.remove_reader(listener.fileno())
            # Nothing else uses the socket now, so the port stops listening at once.
            listener.close()

    def _accept_ready(self, listener: socket.socket) -> None:
        # Accepting here keeps every accepted socket owned by a handler task, because a
        # cancelled loop.sock_accept() can drop a socket that it has already accepted.
        while True:
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ECONNABORTED and the like concern one connection that the client already
                # gave up. The selector calls back for the next pending connection.
                return
            client.setblocking(False)
            handler = self._loop.create_task(self._serve(client))
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)

    async def _reset(self) -> None:
        self.mode = "reset"
        self._abort_all()
        if self._listener is None:
            await self._listen()

    async def _refuse(self) -> None:
        self.mode = "refuse"
        await self._stop_listening()
        self._abort_all()

    async def _restore(self) -> None:
        self.mode = "forward"
        if self._listener is None:
            await self._listen()

    async def _shutdown(self) -> None:
        await self._stop_listening()
        self._abort_all()
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=CONTROL_TIMEOUT_SECONDS)

    async def _serve(self, client: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=client)
        except OSError:
            client.close()
            return
        self._clients.add(writer)
        try:
            if self.mode == "refuse":
                # Accepted in the loop iteration that stopped listening.
                self._abort(writer)
            elif self.mode == "reset":
                self.accepted_in_reset_mode += 1
                await self._reset_after_first_request(reader, writer)
            else:
                await self._forward(reader, writer)
        finally:
            self._clients.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _reset_after_first_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(reader.read(CHUNK_BYTES), FIRST_REQUEST_TIMEOUT_SECONDS)
        if not writer.is_closing():
            self._abort(writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._abort(writer)
            return
        self._upstreams.add(upstream_writer)
        try:
            await asyncio.gather(
                _pipe(reader, upstream_writer),
                _pipe(upstream_reader, writer),
            )
        finally:
            self._upstreams.discard(upstream_writer)
            upstream_writer.close()

    def _abort_all(self) -> None:
        for writer in list(self._clients):
            if not writer.is_closing():
                self._abort(writer)
        # The server only loses a client, so a normal close is enough there.
        for upstream in list(self._upstreams):
            upstream.close()

    def _abort(self, writer: asyncio.StreamWriter) -> None:
        """Close the client connection of ``writer`` with a TCP reset."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        writer.transport.abort()
        self.resets += 1


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until end of stream, then close ``writer``."""
    try:
        while data := await reader.read(CHUNK_BYTES):
            if writer.is_closing():
                return
            writer.write(data)
            await writer.drain()
    except OSError:
        # ConnectionResetError or another OSError: one side aborted the connection.
        pass
    finally:
        if not writer.is_closing():
            writer.close()
