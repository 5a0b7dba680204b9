"""A TCP proxy that can stall: hold every byte, both ways, and deliver it all later.

    with StallingProxy("127.0.0.1", 5432) as proxy:
        proxy.stall()   # connections stay open, new ones are accepted; nothing is forwarded
        proxy.flow()    # everything held is delivered, in order, and forwarding goes on

Unlike `TcpProxy.hang()`, which swallows what it holds (the connection is dead for good), a
stall loses nothing: it is a network that stops for a while (a switch failing over, a
congested link) and comes back, as the peers' TCP stacks would see it.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tcp_proxy import TcpProxy


class StallingProxy(TcpProxy):
    """`TcpProxy` with `stall()` and `flow()`."""

    def __init__(self, host: str, port: int, *, listen: int = 0) -> None:
        # Set before the accepting thread starts (in the base class's constructor).
        self.flowing = threading.Event()
        self.flowing.set()
        super().__init__(host, port, listen=listen)

    def stall(self) -> None:
        """Hold every byte from now on, without closing or refusing anything."""
        self.flowing.clear()

    def flow(self) -> None:
        """Deliver what was held and forward again."""
        self.flowing.set()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                # Reset (or closed under us): so is the other side, as over one TCP
                # connection. Left open, a server would keep the session of a client that is
                # gone (and whatever its transaction holds) until a timeout of its own.
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sink.close()
                return
            # Held here while stalled: this direction reads nothing more meanwhile, so the
            # sender's socket buffers fill up as on a link that stopped moving.
            while not self.flowing.wait(0.5):
                if self.closed.is_set():
                    return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            try:
                sink.sendall(data)
            except OSError:
                with contextlib.suppress(OSError):
                    source.shutdown(socket.SHUT_RDWR)
                return
