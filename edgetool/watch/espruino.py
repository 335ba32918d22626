"""An Espruino REPL driver over any byte port (a NUS link, a serial line).

Espruino echoes input, prints `=result` and `>` prompts, and prints `Uncaught ...` for
errors (src/jsinteractive.c: jsiHandleNewLine, jsiCheckErrors). We send every line with a
leading DLE (0x10), which turns echo off for that line, and wrap each answer in a marker
that the sent text never contains (it is built by string concatenation on the watch), so
echoes, prompts and output left over from earlier never pass for an answer.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from edgetool.errors import DeviceError
from edgetool.mcu.protocol import READY, BenchClient
from edgetool.transport.base import BytePort

log = logging.getLogger(__name__)

DLE = b"\x10"
CTRL_C = b"\x03"
STALL_HINT = "Is the watch in range and awake? Long-press the button to reset it, then retry."


def clean(line: str) -> str:
    """What remains of a console line once prompt redraws (`\\r`, `>`) are dropped."""
    return line.rpartition("\r")[2].lstrip(">").strip()


class EspruinoConsole(BenchClient):
    """The watch's REPL; bench-protocol commands go to a JS dispatcher on the watch, so
    the bench client's parsing (infer, xinfer, xresults) is reused unchanged."""

    def __init__(
        self, port: BytePort, description: str, timeout: float = 10.0, dispatcher: str = "ET.c"
    ) -> None:
        super().__init__(port, description, timeout)
        self.dispatcher = dispatcher
        self._tag = secrets.token_hex(3)
        self._count = 0

    def reset_line(self) -> None:
        """Ctrl-C clears a half-typed line (and interrupts a running command)."""
        log.info("> Ctrl-C (reset the console line)")
        self._write(CTRL_C)
        time.sleep(0.05)
        self._write(b"\n")
        self.drain(0.2, 2.0)

    def send_line(self, js: str) -> None:
        if "\n" in js or "\r" in js:
            raise ValueError("one JS statement per line")
        # Uploads send long base64 and array lines: the log keeps the start of each.
        log.debug("> %s", js if len(js) <= 200 else f"{js[:160]}... ({len(js)} characters)")
        self._write(DLE + js.encode("ascii") + b"\n")

    def _marker(self) -> tuple[str, str]:
        """(the JS that prints the marker, the marker as it is printed)."""
        self._count += 1
        mark = f"@ET{self._tag}.{self._count}#"
        return f'"{mark[:3]}"+"{mark[3:]}"', mark

    def _stalled(self, what: str, timeout: float) -> DeviceError:
        return DeviceError(
            f"{self.description}: the watch stopped answering (nothing for `{what[:40]}` "
            f"within {timeout:g} s)",
            hint=STALL_HINT,
        )

    def _wait(self, mark: str, what: str, timeout: float, lines: list[str]) -> str:
        """Lines until the one with the marker (returned: what follows the marker)."""
        deadline = time.monotonic() + timeout
        while True:
            raw = self.read_line(deadline)
            if raw is None:
                raise self._stalled(what, timeout)
            line = clean(raw)
            at = line.find(mark)
            if at >= 0:
                return line[at + len(mark) :]
            if line.startswith("Uncaught"):
                raise DeviceError(f"{self.description}: `{what[:60]}` failed: {line[:160]}")
            if line:
                lines.append(line)

    def evaluate(self, expr: str, timeout: float | None = None) -> Any:
        """The JSON value of a JS expression on the watch (undefined -> None)."""
        js_mark, mark = self._marker()
        self.send_line(f"print({js_mark}+JSON.stringify({expr}))")
        text = self._wait(mark, expr, timeout or self.timeout, [])
        if text in ("", "undefined"):
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DeviceError(f"{self.description}: unreadable reply to `{expr[:40]}`") from exc

    def execute(self, statement: str, timeout: float | None = None) -> list[str]:
        """Run statements; returns the lines they printed (an exception -> DeviceError)."""
        js_mark, mark = self._marker()
        self.send_line(f"{statement};print({js_mark})")
        lines: list[str] = []
        self._wait(mark, statement, timeout or self.timeout, lines)
        return lines

    def command(self, text: str, timeout: float | None = None) -> list[str]:
        """A bench command via the JS dispatcher: reply lines up to `m-ready`."""
        log.info("> %s (bench command)", text)
        self.send_line(f"{self.dispatcher}({json.dumps(text)})")
        wait = timeout or self.timeout
        deadline = time.monotonic() + wait
        lines: list[str] = []
        while True:
            raw = self.read_line(deadline)
            if raw is None:
                raise self._stalled(text, wait)
            line = clean(raw)
            if line == READY:
                return lines
            if line.startswith("Uncaught"):
                raise DeviceError(f"{self.description}: `{text}` failed: {line[:160]}")
            if line:
                lines.append(line)
