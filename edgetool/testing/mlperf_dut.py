"""An MLPerf Tiny device-under-test on a pty, written from the EEMBC serial protocol's text.

It answers what a board flashed with an MLPerf Tiny reference firmware answers (`name%`,
`profile%`, `db load N%`, `db HEX%`, `db print%`, `infer N W%`, `results%`, `timestamp%`),
holds a fixed model of its own and refuses what such a firmware refuses: a command over 80
characters, a `db` upload bigger than its buffer, hex that does not parse. Its "model" is a
known function of the loaded bytes (`DutModel.scores`), so a test can check the scores
edgetool reports against the exact answer, and `score_format` lets a test make it print
scores as a real firmware may (`%0.3f`, `%e`, `%g`, nan).

    with MlperfDut().serve() as url:   # url: the pty's path, as a board's /dev/ttyACM0
        ...

Nothing here knows edgetool: the driver under test (`edgetool.mcu.protocol`) talks to it
as to hardware, over pyserial.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

MAX_COMMAND = 80
"""EEMBC's command buffer: longer lines are refused."""


@dataclass
class DutModel:
    """The firmware's own model: `classes` scores from the input bytes, deterministic."""

    code: str = "ic01"
    input_bytes: int = 3072
    classes: int = 10

    def scores(self, data: bytes) -> np.ndarray:
        """softmax(W x) with a fixed W: any change of the input moves the scores."""
        x = np.frombuffer(data, dtype=np.int8).astype(np.float64) / 128.0
        weights = np.random.default_rng(1234).standard_normal((self.classes, len(x)))
        logits = weights @ x / max(np.sqrt(len(x)), 1.0)
        exp = np.exp(logits - logits.max())
        result: np.ndarray = exp / exp.sum()
        return result


@dataclass
class MlperfDut:
    """One DUT. `commands` records every command line it received (for tests)."""

    model: DutModel = field(default_factory=DutModel)
    name: str = "reference"
    profile: str = "ulp-mlperf"
    us_per_inference: int = 250
    score_format: str = "{:.3f}"
    nan_scores: bool = False
    """Print `nan` scores, as a firmware whose model diverged does."""
    commands: list[str] = field(default_factory=list)
    noise: Callable[[str], str] = lambda line: line
    """May garble a line it sends (a noisy UART)."""
    drop: Callable[[str], bool] = lambda command: False
    """May ignore a command, as when noise ate its `%`."""

    def __post_init__(self) -> None:
        # A pattern, not zeros: all-zero input gives every class the same score.
        self._buffer = bytearray(i * 37 % 256 for i in range(self.model.input_bytes))
        self._expect = 0
        self._loaded = bytearray()
        self._clock = 0
        self._last: np.ndarray | None = None

    # --- the protocol -----------------------------------------------------------------

    def handle(self, line: str) -> list[str]:
        """The reply lines (without `m-ready`) to one command line (without its `%`)."""
        self.commands.append(line)
        if len(line) + 1 > MAX_COMMAND:
            return [f"e-[Command too long: {len(line) + 1} > {MAX_COMMAND}]"]
        words = line.split()
        if not words:
            return []
        cmd, args = words[0], words[1:]
        if cmd == "name":
            return [f"m-name-dut-[{self.name}]"]
        if cmd == "profile":
            return [f"m-profile-[{self.profile}]", f"m-model-[{self.model.code}]"]
        if cmd == "db":
            return self._db(args)
        if cmd == "infer":
            return self._infer(args)
        if cmd == "results":
            return [self._results_line()]
        if cmd == "timestamp":
            return [f"m-lap-us-{self._clock}"]
        return [f"e-[Unknown command: {line}]"]

    def _db(self, args: list[str]) -> list[str]:
        if args[:1] == ["load"] and len(args) == 2 and args[1].isdigit():
            size = int(args[1])
            if size > len(self._buffer):
                return [f"e-[Specified buffer size is too large: {size} > {len(self._buffer)}]"]
            self._expect, self._loaded = size, bytearray()
            return [f"m-[Expecting {size} bytes]"]
        if args[:1] == ["print"]:
            shown = "-".join(f"{b:02x}" for b in self._buffer[:16])
            return [f"m-buffer-{shown}"]
        if len(args) != 1 or len(args[0]) % 2:
            return ["e-[Malformed db command]"]
        try:
            chunk = bytes.fromhex(args[0])
        except ValueError:
            return ["e-[Malformed hex]"]
        if len(self._loaded) + len(chunk) > self._expect:
            return [f"e-[Too many bytes: more than {self._expect}]"]
        self._loaded += chunk
        if len(self._loaded) == self._expect:
            self._buffer[: self._expect] = self._loaded
            return ["m-load-done"]
        return []

    def _infer(self, args: list[str]) -> list[str]:
        if not args or not all(a.isdigit() for a in args[:2]):
            return ["e-[infer needs N [W]]"]
        count = int(args[0])
        warmup = int(args[1]) if len(args) > 1 else 10
        self._last = self.model.scores(bytes(self._buffer))
        start = self._clock
        self._clock += self.us_per_inference * (count + warmup)
        lines = [f"m-warmup-start-{warmup}", "m-warmup-done", f"m-infer-start-{count}"]
        lines += [f"m-lap-us-{start + self.us_per_inference * warmup}", f"m-lap-us-{self._clock}"]
        return [*lines, "m-infer-done", self._results_line()]

    def _results_line(self) -> str:
        if self._last is None:
            return "m-results-[]"
        shown = ["nan" if self.nan_scores else self.score_format.format(v) for v in self._last]
        return "m-results-[" + ",".join(shown) + "]"

    @property
    def buffer(self) -> bytes:
        """The input buffer as the next `infer` reads it (a pattern until `db` loads one)."""
        return bytes(self._buffer)

    def expected_scores(self, data: bytes) -> np.ndarray:
        """What this DUT reports for an input, as printed (rounded by `score_format`)."""
        return np.array([float(self.score_format.format(v)) for v in self.model.scores(data)])

    # --- the pty ----------------------------------------------------------------------

    def run(self, fd: int, stop: threading.Event) -> None:
        """Answer on `fd` until `stop` (the pty's master side)."""

        def out(*lines: str) -> None:
            os.write(fd, "".join(self.noise(line) + "\r\n" for line in lines).encode())

        out("m-timestamp-mode-performance", "m-init-done", "m-ready")
        pending = b""
        while not stop.is_set():
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            pending += chunk
            while b"%" in pending:
                raw, _, pending = pending.partition(b"%")
                command = raw.decode(errors="replace").strip()
                if not self.drop(command):
                    out(*self.handle(command), "m-ready")

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Run on a new pty; yields the path a serial transport opens."""
        master, slave = os.openpty()
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(master, stop), daemon=True)
        thread.start()
        try:
            yield os.ttyname(slave)
        finally:
            stop.set()
            os.close(slave)
            os.close(master)
            thread.join(timeout=2)
