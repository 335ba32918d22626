"""A Bangle.js 2 stand-in behind a TCP NUS bridge, for tests: it enforces the transport
contract and plays the Espruino REPL closely enough for what edgetool sends.

Wire: each packet is 1 length byte + payload. Host->watch packets are GATT writes: one
longer than `write_limit` (20) is a violation, recorded, and the connection is dropped as
a real central's refused write would end the session. Watch->host packets are
notifications of at most 20 bytes.

REPL: input lines are echoed unless they start with DLE (0x10); echoed lines get a `=...`
result and a `>` prompt; Ctrl-C (0x03) clears the line. Statements are matched against
the shapes edgetool sends; anything else gets `Uncaught SyntaxError: ...` as Espruino
prints it. `require("tensorflow")` is the real TFLite Micro interpreter (tflite_micro) on
the stored bytes, so outputs are genuine TFLM outputs; timings are host time (the peer
says `process.env.EDGETOOL_SYNTHETIC = true`, so results are labelled synthetic).

Run standalone: `python -m edgetool.testing.nus_peer [--port N]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import socket
import threading
import time
import zlib
from types import TracebackType
from typing import Any

import numpy as np

DEFAULT_ENV: dict[str, Any] = {
    "VERSION": "2v25",
    "BOARD": "BANGLEJS2",
    "MODULES": "Flash,Storage,heatshrink,tensorflow,locale",
    "EDGETOOL_SYNTHETIC": True,
}
DEFAULT_MEMORY = {"free": 11000, "usage": 1000, "total": 12000, "history": 0, "blocksize": 14}
"""BANGLEJS2.py: 12000 variables; jsutils.h: 14-byte JsVars above 8191 variables."""

_PRINT_EXPR = re.compile(r'^print\("(.{3})"\+"([^"]*)"\+JSON\.stringify\((.*)\)\)$', re.S)
_EXEC = re.compile(r'^(.*);print\("(.{3})"\+"([^"]*)"\)$', re.S)
_CALL = re.compile(r'^ET\.c\("([^"]*)"\)$')
_CRC = re.compile(
    r"^\(function\(f\)\{return f===undefined\?null:\[f\.length,E\.CRC32\(f\)\]\}\)"
    r'\(require\("Storage"\)\.read\("([^"]+)"\)\)$'
)
_WRITE = re.compile(
    r'^require\("Storage"\)\.write\("([^"]+)",atob\("([^"]*)"\),(\d+)(?:,(\d+))?\)$'
)
_ERASE = re.compile(r'^require\("Storage"\)\.erase\("([^"]+)"\)$')
_LOAD = re.compile(
    r"^var ET=\{m:new Uint8Array\((\d+)\)\};"
    r'ET\.m\.set\(new Uint8Array\(require\("Storage"\)\.readArrayBuffer\("([^"]+)"\)\)\);'
    r'ET\.tf=require\("tensorflow"\)\.create\((\d+),ET\.m\.buffer\)$'
)
_SET_INPUT = re.compile(r"^(ET\.tf\.getInput\(\)|ET\.w)\.set\(\[([-0-9.e+,]*)\],(\d+)\)$")
_WINDOW = re.compile(r"^ET\.w=new Float32Array\((\d+)\)$")
_STEPPED = re.compile(
    r"^ET\.z=new Float32Array\((\d+)\);ET\.i=ET\.tf\.getInput\(\);ET\.o=ET\.tf\.getOutput\(\);"
    r"ET\.run=function\(\)\{var t;ET\.i\.set\(ET\.z\);for\(t=0;t<(\d+);t\+\+\)\{"
    r"ET\.i\.set\(ET\.w\.subarray\(t\*(\d+),t\*\d+\+\d+\)\);ET\.tf\.invoke\(\);"
    r"ET\.i\.set\(ET\.o,(\d+)\);\}\};ET\.r=function\(\)\{return ET\.o\.subarray\((\d+)\)\}$"
)
"""A stepped model's window loop (edgetool.flows.bangle.stepped_program): zero the state,
then per row set x_t, invoke, copy the output into the input after x_t."""


class JsError(Exception):
    """Printed as `Uncaught <message>`."""


class NusPeer:
    """The TCP NUS bridge server (thread; context manager)."""

    def __init__(
        self,
        *,
        env: dict[str, Any] | None = None,
        memory: dict[str, int] | None = None,
        corrupt_storage: bool = False,
        go_silent_after: int | None = None,
        write_limit: int = 20,
        notify_interval: float = 0.0,
        port: int = 0,
    ) -> None:
        """go_silent_after: stop answering (mid-run) once that many `m-xlap-ticks` lines
        have been printed; notify_interval: seconds between notifications."""
        self.env = {**DEFAULT_ENV, **(env or {})}
        self.memory = {**DEFAULT_MEMORY, **(memory or {})}
        self.corrupt_storage = corrupt_storage
        self.go_silent_after = go_silent_after
        self.write_limit = write_limit
        self.notify_interval = notify_interval
        self.storage: dict[str, bytearray] = {}
        self.write_sizes: list[int] = []
        self.notify_sizes: list[int] = []
        self.violations: list[str] = []
        self.statements: list[str] = []
        self.laps_printed = 0
        self.silent = False
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(4)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def model_bytes_received(self) -> int:
        """Bytes of model data that arrived through Storage.write."""
        return sum(len(v) for v in self.storage.values())

    # --- server ---------------------------------------------------------------------------

    def start(self) -> NusPeer:
        thread = threading.Thread(target=self._accept, name="nus-peer", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> NusPeer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        session = _Session(self, conn)
        with conn:
            buf = bytearray()
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while buf and len(buf) >= 1 + buf[0]:
                    size = buf[0]
                    packet = bytes(buf[1 : 1 + size])
                    del buf[: 1 + size]
                    with self._lock:
                        self.write_sizes.append(size)
                    if size > self.write_limit:
                        self.violations.append(f"GATT write of {size} bytes")
                        return
                    session.feed(packet)


class _Session:
    """One connection's REPL state (the watch's RAM: cleared on reconnect here)."""

    def __init__(self, peer: NusPeer, conn: socket.socket) -> None:
        self.peer = peer
        self.conn = conn
        self.line = bytearray()
        self.interpreter: Any = None
        self.input: np.ndarray | None = None
        self.dispatcher = False
        self.window: np.ndarray | None = None
        self.stepped: tuple[int, int, int, int] | None = None  # steps, channels, into, tail
        self.step_dispatch = False

    # --- output ----------------------------------------------------------------------------

    def send(self, text: str) -> None:
        if self.peer.silent:
            return
        data = text.encode("utf-8")
        for start in range(0, len(data), 20):
            packet = data[start : start + 20]
            self.peer.notify_sizes.append(len(packet))
            try:
                self.conn.sendall(bytes([len(packet)]) + packet)
            except OSError:
                return
            if self.peer.notify_interval:
                time.sleep(self.peer.notify_interval)

    def println(self, text: str) -> None:
        if text.startswith("m-xlap-ticks-"):
            self.peer.laps_printed += 1
            limit = self.peer.go_silent_after
            if limit is not None and self.peer.laps_printed > limit:
                self.peer.silent = True
        self.send(text + "\r\n")

    # --- input -----------------------------------------------------------------------------

    def feed(self, packet: bytes) -> None:
        for byte in packet:
            if byte == 3:  # Ctrl-C: drop the line (Espruino handles it in an IRQ)
                self.line.clear()
            elif byte in (10, 13):
                if byte == 10:
                    self.handle(bytes(self.line))
                    self.line.clear()
            else:
                self.line.append(byte)

    def handle(self, raw: bytes) -> None:
        echo = not raw.startswith(b"\x10")
        text = raw.lstrip(b"\x10").decode("ascii", "replace").strip()
        if echo:
            self.send(text + "\r\n")
        if not text:
            if echo:
                self.send(">")
            return
        if self.peer.silent:
            return
        self.peer.statements.append(text)
        try:
            result = self.run(text)
            if echo:
                self.send(f"={json.dumps(result) if result is not None else 'undefined'}\r\n")
        except JsError as exc:
            self.println(f"Uncaught {exc}")
        if echo:
            self.send(">")

    def run(self, text: str) -> Any:
        found = _PRINT_EXPR.match(text)
        if found:
            value = self.evaluate(found.group(3))
            self.println(found.group(1) + found.group(2) + json.dumps(value, separators=(",", ":")))
            return None
        found = _EXEC.match(text)
        if found:
            self.execute(found.group(1))
            self.println(found.group(2) + found.group(3))
            return None
        found = _CALL.match(text)
        if found and self.dispatcher:
            self.bench(found.group(1))
            return None
        raise JsError(f"SyntaxError: Got '{text[:1]}' expected EOF")

    # --- the JS edgetool sends ---------------------------------------------------------------

    def evaluate(self, expr: str) -> Any:
        if expr.startswith("{v:process.env.VERSION"):
            env = self.peer.env
            return {
                "v": env.get("VERSION"),
                "b": env.get("BOARD"),
                "m": self.peer.memory,
                "s": 8_000_000 - self.peer.model_bytes_received,
                "t": "tensorflow" in str(env.get("MODULES", "")).split(","),
                "x": env.get("EDGETOOL_SYNTHETIC"),
            }
        found = _CRC.match(expr)
        if found:
            data = self.peer.storage.get(found.group(1))
            return None if data is None else [len(data), zlib.crc32(bytes(data))]
        found = _WRITE.match(expr)
        if found:
            return self.storage_write(found)
        raise JsError(f"SyntaxError: Got '{expr[:1]}' expected EOF")

    def storage_write(self, found: re.Match[str]) -> bool:
        name, offset = found.group(1), int(found.group(3))
        if len(name) > 28:
            raise JsError("Error: File name too long")
        data = bytearray(base64.b64decode(found.group(2)))
        storage = self.peer.storage
        if offset == 0:
            size = int(found.group(4) or len(data))
            storage[name] = bytearray(b"\xff" * size)
            if self.peer.corrupt_storage and data:
                data[len(data) // 2] ^= 0x40
        file = storage.get(name)
        if file is None or offset + len(data) > len(file):
            return False
        if any(b != 0xFF for b in file[offset : offset + len(data)]):
            return False  # flash: no overwriting what was written
        file[offset : offset + len(data)] = data
        return True

    def execute(self, statement: str) -> None:
        found = _ERASE.match(statement)
        if found:
            self.peer.storage.pop(found.group(1), None)
            return
        found = _LOAD.match(statement)
        if found:
            self.load(int(found.group(1)), found.group(2), int(found.group(3)))
            return
        found = _SET_INPUT.match(statement)
        into = self.window if found and found.group(1) == "ET.w" else self.input
        if found and into is not None:
            values = [float(v) for v in found.group(2).split(",") if v]
            start = int(found.group(3))
            flat = into.reshape(-1)
            if start + len(values) > flat.size:
                raise JsError("RangeError: Array too large")
            flat[start : start + len(values)] = values  # typed-array conversion
            return
        found = _WINDOW.match(statement)
        if found and self.interpreter is not None:
            self.window = np.zeros(int(found.group(1)), dtype=np.float32)
            return
        found = _STEPPED.match(statement)
        if found and self.input is not None and self.window is not None:
            size, steps, channels, into_at, tail = (int(g) for g in found.groups())
            if size != self.input.size or into_at != channels:
                raise JsError("RangeError: Array too large")
            self.stepped = (steps, channels, into_at, tail)
            return
        if statement.startswith("ET.c=function(s){"):
            self.dispatcher = True
            self.step_dispatch = "ET.run()" in statement
            return
        raise JsError(f"SyntaxError: Got '{statement[:1]}' expected EOF")

    def load(self, size: int, name: str, arena: int) -> None:
        data = self.peer.storage.get(name)
        if data is None:
            raise JsError("TypeError: Expecting an ArrayBuffer, got undefined")
        free = self.peer.memory["free"] * self.peer.memory["blocksize"]
        if size + arena > free:
            raise JsError("Error: Unable to allocate enough RAM for TensorFlow")
        from tflite_micro.python.tflite_micro import runtime

        try:
            self.interpreter = runtime.Interpreter.from_bytes(bytes(data[:size]), arena_size=arena)
        except (RuntimeError, ValueError) as exc:
            raise JsError("Error: MicroInterpreter creation failed") from exc
        details = self.interpreter.get_input_details(0)
        self.input = np.zeros(details["shape"], dtype=details["dtype"])

    def invoke(self) -> None:
        if not self.step_dispatch:
            self.interpreter.set_input(self.input, 0)
            self.interpreter.invoke()
            return
        if self.stepped is None or self.window is None or self.input is None:
            raise JsError("TypeError: ET.run is not a function")
        steps, channels, into_at, _ = self.stepped
        flat = self.input.reshape(-1)
        flat[:] = 0
        for t in range(steps):
            flat[:channels] = self.window[t * channels : t * channels + channels]
            self.interpreter.set_input(self.input, 0)
            self.interpreter.invoke()
            out = np.asarray(self.interpreter.get_output(0)).reshape(-1)
            flat[into_at : into_at + out.size] = out

    def output(self) -> np.ndarray:
        """What the dispatcher reads: the output tensor, or a stepped model's `ET.r()`."""
        out = np.asarray(self.interpreter.get_output(0)).reshape(-1)
        if self.step_dispatch and self.stepped is not None:
            return out[self.stepped[3] :]
        return out

    def bench(self, command: str) -> None:
        words = command.split(" ")
        n = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
        if words[0] == "infer":
            for _ in range(int(words[2]) if len(words) > 2 else 0):
                self.invoke()
            start = time.perf_counter()
            for _ in range(n):
                self.invoke()
            lap = round((time.perf_counter() - start) * 1e6)
            self.println("m-lap-us-0")
            self.println(f"m-lap-us-{lap}")
            self.println("m-infer-done")
            self.println("m-results-[" + ",".join(f"{v:g}" for v in self.output()) + "]")
        elif words[0] == "xinfer":
            laps = []
            for _ in range(n):
                start = time.perf_counter()
                self.invoke()
                laps.append(round((time.perf_counter() - start) * 1e6))
            for lap in laps:
                self.println(f"m-xlap-ticks-{lap}")
        elif words[0] == "xresults":
            out = self.output()
            hexed = out.astype(out.dtype.newbyteorder("<")).tobytes().hex()
            self.println(f"m-xresults-[{hexed}]")
        else:
            self.println(f"e-[Unknown command: {command}]")
        self.println("m-ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with NusPeer(port=args.port) as peer:
        print(f"NUS bridge peer on {peer.address}", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
