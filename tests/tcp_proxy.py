"""A TCP proxy a test starts in front of a real server and then breaks on purpose.

    with TcpProxy("127.0.0.1", 5432) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        ...
        proxy.cut()    # every connection closed, new ones refused: the server is "gone"
        proxy.hang()   # connections stay open, new ones accepted, no byte is forwarded

Threads and blocking sockets, so it works whatever event loop the test runs; the server
itself is never touched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self


class TcpProxy:
    """Forwards loopback connections to `host:port` until cut or hung."""

    def __init__(self, host: str, port: int, *, listen: int = 0) -> None:
        self.target = (host, port)
        # `listen`: a port to listen on (a proxy started again where a cut one was).
        self.listener = socket.create_server(("127.0.0.1", listen))
        self.port: int = self.listener.getsockname()[1]
        self.hanging = threading.Event()
        self.closed = threading.Event()
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cut()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed: cut
            self.accepted += 1
            self._keep(client)
            if self.hanging.is_set():
                continue  # accepted, held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._keep(upstream)
            for source, sink, from_server in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, sink, from_server), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if not self._passes(data, from_server):
                continue
            try:
                sink.sendall(data)
            except OSError:
                return
            self._passed(data, from_server)

    def _passes(self, data: bytes, from_server: bool) -> bool:
        """Whether a chunk read goes on to the other side (a subclass may drop or watch it)."""
        return not self.hanging.is_set()  # hung: neither side hears from the other again

    def _passed(self, data: bytes, from_server: bool) -> None:
        """Called once a chunk was passed on."""

    def hang(self) -> None:
        """Stop forwarding: open connections go silent, new ones are accepted and ignored."""
        self.hanging.set()

    def cut(self) -> None:
        """Close every connection and the listener: connects are refused from now on."""
        self.closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
