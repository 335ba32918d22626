"""TCP proxies on 127.0.0.1 that break a link mid-stream, for tests and benchmarks of what
a transfer does when its connection dies (SSH uploads above all).

Each proxy listens on 127.0.0.1 (an ephemeral port, `proxy.address`), forwards every
connection to `127.0.0.1:port`, counts the bytes going client -> server, and once
`cut_after` of them went through it breaks the link:

* `CuttingProxy(port, cut_after, reset=False)`: closes both sides (FIN), the far end
  sees an orderly end of stream;
* `CuttingProxy(port, cut_after, reset=True)`: closes both sides with SO_LINGER 0, so the
  kernel sends a TCP reset (RST): "Connection reset by peer";
* `BlackholeProxy(port, cut_after)`: stops forwarding in both directions and closes
  nothing, a cable pulled somewhere between the two: only a timeout can notice.

`proxy.cut_at` is the monotonic time of the cut (None while the link is whole);
`proxy.close()` stops it and closes every socket it holds. Only 127.0.0.1 is ever
contacted:

    proxy = CuttingProxy(sshd_port, cut_after=4 << 20, reset=True)
    # point the client at 127.0.0.1:proxy.address[1] ...
    proxy.close()
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

LOOPBACK = "127.0.0.1"


class BlackholeProxy:
    """Forwards to 127.0.0.1:`port` until `cut_after` bytes went upstream, then goes
    silent in both directions without closing anything."""

    def __init__(self, port: int, cut_after: int) -> None:
        self.port = port
        self.cut_after = cut_after
        self.sent = 0
        self.cut_at: float | None = None
        self.listener = socket.create_server((LOOPBACK, 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.sockets: list[socket.socket] = [self.listener]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((LOOPBACK, self.port))
            except OSError:
                client.close()
                continue
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        while not self.stop.is_set():
            if self.cut_at is not None:
                time.sleep(0.05)  # the hole: read nothing, send nothing, close nothing
                continue
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if upstream:
                self.sent += len(data)
                if self.sent >= self.cut_after and self.cut_at is None:
                    self.cut_at = time.monotonic()
                    continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        """Stop forwarding and close every socket; never raises."""
        self.stop.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


class CuttingProxy(BlackholeProxy):
    """Forwards to 127.0.0.1:`port` until `cut_after` bytes went upstream, then ends the
    connection: a TCP reset with `reset`, else a plain close (FIN)."""

    def __init__(self, port: int, cut_after: int, reset: bool) -> None:
        self.reset = reset
        super().__init__(port, cut_after)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        while not self.stop.is_set():
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if upstream:
                self.sent += len(data)
                if self.sent >= self.cut_after and self.cut_at is None:
                    self.cut_at = time.monotonic()
                    for sock in (src, dst):
                        if self.reset:
                            linger = struct.pack("ii", 1, 0)
                            with contextlib.suppress(OSError):
                                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                        with contextlib.suppress(OSError):
                            sock.close()
                    return
            try:
                dst.sendall(data)
            except OSError:
                return
