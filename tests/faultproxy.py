"""A loopback TCP proxy that injects network faults between asyncmig and PostgreSQL.

The proxy runs its own event loop in a daemon thread, so in-process (async) tests and
tests that drive subprocesses use it alike; every control method is thread-safe and
returns once the fault is in place. It stops by itself after ``lifetime`` seconds.

Faults, per proxied connection (:class:`Link`) or for all of them (:class:`FaultProxy`):

* ``reset()``       — abort both sockets with an RST (a crashed peer, a dropped route);
* ``blackhole()``   — stop forwarding in both directions but keep every socket open
  (a partition: no FIN, no RST, nothing); ``FaultProxy.blackhole()`` also swallows
  connections opened afterwards;
* ``delay(s)``      — hold every chunk ``s`` seconds before forwarding it;
* ``cut_after_commit()`` — forward the next query that is (or ends with) ``COMMIT``, then
  abort both sockets before any reply reaches the client (an in-doubt commit).

The client-to-server stream is parsed into protocol messages (startup packet, then
type byte + length), so each link knows its ``application_name`` and the SQL text of
the simple and extended-protocol queries it carried (``queries``). The proxy tells
PostgreSQL clients to skip TLS (:meth:`FaultProxy.dsn` adds ``sslmode=disable``) so the
stream stays readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy", "Link"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
# A query that is a COMMIT, or a message of several whose last statement is one (a
# batched migration ends with its COMMIT).
_COMMIT = re.compile(r"(?:^|;)\s*(?:COMMIT|END)\s*;?\s*$", re.IGNORECASE)


@dataclass(eq=False)
class Link:
    """One client connection through the proxy (and its upstream connection)."""

    proxy: FaultProxy
    number: int
    application_name: str = ""
    cancel_request: bool = False
    queries: list[str] = field(default_factory=list)
    closed: bool = False
    _delay: float = 0.0
    _flowing: asyncio.Event | None = None
    _commit_cut: bool = False
    _discard: bool = False  # cut: the server's replies are dropped
    _server_done: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    # -- controls (any thread) ---------------------------------------------------------

    def reset(self) -> None:
        """Abort both sockets with an RST."""
        self.proxy._call(self._abort)

    def blackhole(self) -> None:
        """Stop forwarding both ways; keep the sockets open."""
        self.proxy._call(self._stop_flow)

    def heal(self) -> None:
        """Forward again (what was held back is delivered)."""
        self.proxy._call(self._start_flow)

    def delay(self, seconds: float) -> None:
        self._delay = seconds

    def cut_after_commit(self) -> None:
        """Cut the link right after the next COMMIT/END has been forwarded."""
        self._commit_cut = True

    # -- inside the proxy's loop -------------------------------------------------------

    def _stop_flow(self) -> None:
        assert self._flowing is not None
        self._flowing.clear()

    def _start_flow(self) -> None:
        assert self._flowing is not None
        self._flowing.set()

    def _abort(self) -> None:
        for writer in self._writers:
            _rst(writer)
        self.closed = True

    def _cut(self) -> None:
        """RST to the client at once; to the server, only a FIN after what was forwarded,
        while its replies are read and dropped: it reads and runs all of it (a notice it
        sends on the way does not fail for a closed socket) and its reply never reaches
        the client."""
        self._discard = True
        _rst(self._writers[0])
        for writer in self._writers[1:]:
            if writer.can_write_eof():
                writer.write_eof()
        self.closed = True


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``with FaultProxy(host, port) as proxy: connect to proxy.dsn(dsn)``."""

    def __init__(self, target_host: str, target_port: int, *, lifetime: float = 300.0) -> None:
        self.target = (target_host, target_port)
        self.lifetime = lifetime
        self.port = 0
        self.links: list[Link] = []
        self._lock = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._swallow = False
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def for_dsn(cls, dsn: str, **kwargs: float) -> FaultProxy:
        parts = urlsplit(dsn)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432, **kwargs)

    def dsn(self, dsn: str) -> str:
        """``dsn`` pointed at the proxy (TLS off, so the stream can be read)."""
        parts = urlsplit(dsn)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{self.port}"
        query = "&".join(q for q in (parts.query, "sslmode=disable") if q)
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FaultProxy:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- controls (any thread) ---------------------------------------------------------

    def blackhole(self) -> None:
        """Partition: every link stops forwarding, and new connections are swallowed."""
        self._swallow = True
        for link in list(self.links):
            link.blackhole()

    def reset_all(self) -> None:
        for link in list(self.links):
            link.reset()

    def wait_for(self, predicate: Callable[[Link], bool], timeout: float = 20.0) -> Link:
        """The first link satisfying ``predicate`` (re-checked as traffic flows)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for link in self.links:
                    if predicate(link):
                        return link
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no proxied connection matched within the timeout")
                self._lock.wait(remaining)

    def wait_for_query(self, pattern: str, timeout: float = 20.0) -> Link:
        """The link that has forwarded a query whose text contains ``pattern``."""
        return self.wait_for(lambda link: any(pattern in q for q in link.queries), timeout)

    def _call(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        if threading.current_thread() is self._thread:
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    # -- the proxy's own thread --------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lifetime)
        finally:
            server.close()
            for link in list(self.links):
                link._abort()
            # A connection accepted just now has a handler task that has not run yet:
            # let it start (and register), then cancel every task but this one.
            await asyncio.sleep(0)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            # Black holes keep their sockets open while the proxy lives; it no longer does.
            for link in list(self.links):
                for writer in link._writers:
                    writer.close()
                link.closed = True
            await asyncio.sleep(0)  # let the transports finish closing on this loop

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = Link(self, len(self.links) + 1, _flowing=asyncio.Event())
        link._writers.append(c_writer)
        assert link._flowing is not None
        if not self._swallow:
            link._flowing.set()
        with self._lock:
            self.links.append(link)
            self._lock.notify_all()
        try:
            await link._flowing.wait()  # a swallowed connection never reaches the server
            s_reader, s_writer = await asyncio.open_connection(*self.target)
            link._writers.append(s_writer)
            up = asyncio.ensure_future(self._client_to_server(link, c_reader, s_writer))
            down = asyncio.ensure_future(self._pump(link, s_reader, c_writer))
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (up, down):
                    t.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancelled: the proxy is stopping (asyncio's stream callback logs otherwise)
        finally:
            if link._flowing.is_set():  # a black hole keeps its sockets open
                for writer in link._writers:
                    writer.close()
                link.closed = True
            self._tasks.discard(task)
            with self._lock:
                self._lock.notify_all()

    async def _forward(self, link: Link, writer: asyncio.StreamWriter, data: bytes) -> None:
        assert link._flowing is not None
        await link._flowing.wait()
        if link._delay:
            await asyncio.sleep(link._delay)
            await link._flowing.wait()
        writer.write(data)
        await writer.drain()

    async def _pump(
        self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while data := await reader.read(65536):
            if not link._discard:
                await self._forward(link, writer, data)
        link._server_done.set()
        await self._hold_if_blackholed(link)

    async def _hold_if_blackholed(self, link: Link) -> None:
        assert link._flowing is not None
        await link._flowing.wait()  # EOF does not cross a black hole either

    async def _client_to_server(
        self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward message by message, noting startup parameters and query texts."""
        startup = True
        while True:
            if startup:
                head = await _read_or_eof(reader, 4)
                if head is None:
                    break
                (length,) = struct.unpack("!i", head)
                body = await reader.readexactly(length - 4)
                code = struct.unpack("!i", body[:4])[0] if len(body) >= 4 else 0
                if code == _CANCEL_REQUEST:
                    link.cancel_request = True
                elif code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    startup = False
                    link.application_name = _startup_param(body[4:], "application_name")
                await self._forward(link, writer, head + body)
                continue
            head = await _read_or_eof(reader, 5)
            if head is None:
                break
            kind = head[:1]
            (length,) = struct.unpack("!i", head[1:])
            body = await reader.readexactly(length - 4)
            text = _query_text(kind, body)
            if text is not None:
                with self._lock:
                    link.queries.append(text)
                    self._lock.notify_all()
            await self._forward(link, writer, head + body)
            if text is not None and link._commit_cut and _COMMIT.search(text):
                link._commit_cut = False
                link._cut()
                with contextlib.suppress(TimeoutError):  # the server ran it, and closed
                    await asyncio.wait_for(link._server_done.wait(), 10)
                return
        await self._hold_if_blackholed(link)


async def _read_or_eof(reader: asyncio.StreamReader, n: int) -> bytes | None:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None


def _startup_param(payload: bytes, name: str) -> str:
    parts = payload.split(b"\0")
    for key, value in zip(parts[::2], parts[1::2], strict=False):
        if key.decode(errors="replace") == name:
            return value.decode(errors="replace")
    return ""


def _query_text(kind: bytes, body: bytes) -> str | None:
    if kind == b"Q":  # simple query: text\0
        return body.rstrip(b"\0").decode(errors="replace")
    if kind == b"P":  # parse: statement name\0, text\0, ...
        parts = body.split(b"\0", 2)
        return parts[1].decode(errors="replace") if len(parts) > 1 else None
    return None
