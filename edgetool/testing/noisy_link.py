"""A TCP proxy that flips bits: a serial link with a known bit error rate, for tests and
benchmarks of the upload protocols (QEMU's UART itself never corrupts a byte).

Only the host -> device direction is corrupted by default: that is where uploads travel,
and it keeps the device's replies (ACK/NAK, text) readable so the effect measured is the
upload's. `both=True` corrupts the replies too.

    python -m edgetool.testing.noisy_link 127.0.0.1:4321 --ber 1e-4
    {"url": "socket://127.0.0.1:40123"}

The proxy serves until killed or until its stdin closes, like the meter peers.
In-process: `proxy = BitFlipProxy(("127.0.0.1", 4321), ber=1e-4)`; `proxy.url`;
`proxy.close()`. For a deterministic fault, `flip_line=("m-xlap-ticks-", 3, 0x01)` XORs
the first character after the prefix of the 4th reply line starting with it (a digit
stays a digit: the damage a checksum, not a parser, has to catch).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import sys
import threading
from collections.abc import Sequence


class BitFlipProxy:
    """Listen on 127.0.0.1:port; forward to upstream with bits flipped at `ber`."""

    def __init__(
        self,
        upstream: tuple[str, int],
        ber: float,
        seed: int = 0,
        both: bool = False,
        flip_line: tuple[str, int, int] | None = None,
    ):
        self.upstream = upstream
        self.flip_line = flip_line
        self.lines_flipped = 0
        self._line = bytearray()
        self._matches = 0
        self.ber = ber
        self.both = both
        self.rng = random.Random(seed)
        self.flipped = 0
        self.bytes = 0
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(1)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _corrupt(self, data: bytes) -> bytes:
        if self.ber <= 0:
            return data
        out = bytearray(data)
        with self._lock:
            self.bytes += len(out)
            for i in range(len(out)):
                for bit in range(8):
                    if self.rng.random() < self.ber:
                        out[i] ^= 1 << bit
                        self.flipped += 1
        return bytes(out)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pumps = ((client, upstream, True, False), (upstream, client, self.both, True))
            for src, dst, noisy, reply in pumps:
                thread = threading.Thread(
                    target=self._pump, args=(src, dst, noisy, reply), daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _flip_chosen(self, data: bytes) -> bytes:
        """Apply `flip_line` to the device's bytes, a line at a time across chunks."""
        if self.flip_line is None:
            return data
        prefix, nth, mask = self.flip_line
        out = bytearray(data)
        for i, byte in enumerate(out):
            if byte == 0x0A:
                self._line.clear()
                continue
            if byte < 0x20:  # ACK/NAK bytes of the binary upload and \r are not line text
                continue
            if len(self._line) == len(prefix) and self._line == prefix.encode():
                if self._matches == nth:
                    out[i] ^= mask
                    self.lines_flipped += 1
                self._matches += 1
            self._line.append(byte)
        return bytes(out)

    def _pump(self, src: socket.socket, dst: socket.socket, noisy: bool, reply: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if reply:
                    data = self._flip_chosen(data)
                dst.sendall(self._corrupt(data) if noisy else data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def _address(text: str) -> tuple[str, int]:
    """ "HOST:PORT" -> (host, port), for argparse (which turns a ValueError into a usage error)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(text)
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgetool.testing.noisy_link",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("upstream", type=_address, help="HOST:PORT of the device's TCP UART")
    parser.add_argument("--ber", type=float, required=True, help="bit error rate, e.g. 1e-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--both", action="store_true", help="corrupt the replies too")
    args = parser.parse_args(argv)
    proxy = BitFlipProxy(args.upstream, args.ber, seed=args.seed, both=args.both)
    try:
        print(json.dumps({"url": proxy.url}), flush=True)
        while sys.stdin.buffer.read(4096):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        proxy.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
