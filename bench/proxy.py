"""A loopback TCP proxy for the benchmarks: adds latency and counts round trips.

``DelayProxy(target_port, delay_s=0.0005)`` listens on a free loopback port and forwards
every connection to ``127.0.0.1:target_port``. Each chunk read in either direction is
forwarded ``delay_s`` after it arrived (a latency, not a bandwidth limit: chunks in flight
do not wait for each other), so a request/response round trip costs ``2 * delay_s`` more
than on plain loopback (sleeps overshoot by tens of microseconds; the engine bench
measures and prints what the proxy really adds).

It also reads the client's side of the PostgreSQL wire protocol and counts the messages
that end a round trip: simple ``Query`` (``Q``) and the extended protocol's ``Sync``
(``S``). Start-up, ``SSLRequest``, COPY data (``d``/``c``/``f``) and the rest do not
count. Counts are kept per connection in opening order (asyncmig opens a second
connection for its heartbeat).

Threads, not asyncio: an event loop's timers have millisecond granularity, which would
turn 0.5 ms into 1 ms. The benchmark's own process only waits on children, so the GIL is
free for the proxy's threads.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import struct
import threading
import time

__all__ = ["DelayProxy", "ProtocolCounter"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_SPIN = 0.0002  # seconds before a chunk is due that the writer stops sleeping and spins


class ProtocolCounter:
    """Parses a client→server PostgreSQL byte stream and counts Query and Sync messages."""

    def __init__(self) -> None:
        self.queries = 0
        self.syncs = 0
        self._buf = bytearray()
        self._typed = False  # False until the start-up message has passed
        self._skip = 0  # bytes of the current message's body still to skip

    @property
    def round_trips(self) -> int:
        return self.queries + self.syncs

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            need = 5 if self._typed else 8
            take = min(need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < need:
                return
            if self._typed:
                kind = self._buf[0:1]
                (length,) = struct.unpack("!i", self._buf[1:5])
                if kind == b"Q":
                    self.queries += 1
                elif kind == b"S":
                    self.syncs += 1
                self._skip = length - 4
            else:
                length, code = struct.unpack("!ii", self._buf[:8])
                self._skip = length - 8
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self._typed = True  # StartupMessage (or CancelRequest): typed from here
            self._buf.clear()


class DelayProxy:
    """Forward loopback connections to ``target_port`` with ``delay_s`` each way."""

    def __init__(self, target_port: int, delay_s: float = 0.0005) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.counters: list[ProtocolCounter] = []
        self._closing = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def dsn(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def reset(self) -> None:
        with self._lock:
            self.counters = []

    @property
    def round_trips(self) -> int:
        with self._lock:
            return sum(c.round_trips for c in self.counters)

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            counter = ProtocolCounter()
            with self._lock:
                self.counters.append(counter)
                self._sockets += [client, server]
            done = threading.Semaphore(0)
            self._pipe(client, server, counter, done)
            self._pipe(server, client, None, done)
            threading.Thread(target=self._reap, args=(done, client, server), daemon=True).start()

    def _reap(self, done: threading.Semaphore, *socks: socket.socket) -> None:
        done.acquire()
        done.acquire()
        with self._lock:
            for s in socks:
                s.close()
                self._sockets.remove(s)

    def _pipe(
        self,
        src: socket.socket,
        dst: socket.socket,
        counter: ProtocolCounter | None,
        done: threading.Semaphore,
    ) -> None:
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = threading.Condition()

        def read() -> None:
            while True:
                try:
                    data = src.recv(262144)
                except OSError:
                    data = b""
                with ready:
                    queue.append((time.perf_counter() + self.delay_s, data))
                    ready.notify()
                if not data:
                    return
                if counter is not None:
                    counter.feed(data)

        def write() -> None:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, data = queue.popleft()
                wait = due - time.perf_counter()
                if wait > _SPIN:
                    time.sleep(wait - _SPIN)
                while time.perf_counter() < due:  # the last stretch: sleep overshoots
                    pass
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    done.release()
                    return
                try:
                    dst.sendall(data)
                except OSError:  # the peer is gone: unblock the other direction too
                    with contextlib.suppress(OSError):
                        src.shutdown(socket.SHUT_RDWR)
                    done.release()
                    return

        threading.Thread(target=read, daemon=True, name="proxy-read").start()
        threading.Thread(target=write, daemon=True, name="proxy-write").start()
