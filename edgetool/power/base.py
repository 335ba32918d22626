"""The PowerMeter protocol: what every meter driver gives the session.

A meter is sampled beside the run. Host-side meters (PPK2, UM25C, RAPL) timestamp their
samples with the host's monotonic clock, so the session maps inference windows from the
device clock onto it; device-side meters (hwmon) are read by the runner and share the
device clock with the inferences. An estimate has no samples: it is a declared power model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edgetool.config import TableReader
from edgetool.events import PowerSample

Clock = Literal["host", "device", "none"]


def host_ns() -> int:
    """The host clock every host-side meter and clock probe uses (CLOCK_MONOTONIC on Linux,
    the same clock as the runner's perf_counter_ns when the device is this host)."""
    return time.perf_counter_ns()


@dataclass(frozen=True)
class Capabilities:
    """What a meter can do, declared so the energy maths can say what it relied on."""

    rate_hz: float
    """Nominal sample rate: windows shorter than a few periods are batched."""
    channels: tuple[str, ...]
    """Which of "volts", "amps", "watts" are measured (the rest are derived or absent)."""
    clock: Clock
    trigger_input: bool = False
    estimate: bool = False


class PowerMeter(Protocol):
    """start() begins sampling, stop() ends it, samples() drains what was collected."""

    label: str
    capabilities: Capabilities

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def samples(self) -> list[PowerSample]: ...

    def close(self) -> None: ...


@dataclass
class SampleBuffer:
    """A thread-safe append/drain list: reader threads append, the session drains."""

    _items: list[PowerSample] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def extend(self, items: list[PowerSample]) -> None:
        with self._lock:
            self._items.extend(items)

    def drain(self) -> list[PowerSample]:
        with self._lock:
            items, self._items = self._items, []
        return items


class PollingMeter:
    """A host-side meter read by a background thread: subclasses implement `_read()`.

    The thread starts on start() and stops on stop(); an exception in the reader is kept
    and raised from samples(), so a meter that stops answering fails the run loudly instead
    of silently reporting less energy.
    """

    label = "meter"
    capabilities = Capabilities(rate_hz=1.0, channels=("watts",), clock="host")

    def __init__(self) -> None:
        self._buffer = SampleBuffer()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def _read(self) -> list[PowerSample]:
        """Block for at most about one sample period and return what arrived."""
        raise NotImplementedError

    def _on_start(self) -> None: ...

    def _on_stop(self) -> None: ...

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._buffer.extend(self._read())
        except BaseException as exc:  # kept and re-raised in the session's thread
            self._failure = exc

    def start(self) -> None:
        if self._thread is not None:
            return
        self._on_start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.label, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self._on_stop()

    def samples(self) -> list[PowerSample]:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        return self._buffer.drain()

    def close(self) -> None:
        self.stop()


_EXPECTED = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def meter_options(options: Mapping[str, Any]) -> TableReader:
    """A reader of a meter's `[meter]` options (without `type`): each option the driver
    reads is declared by reading it, and `finish()` rejects the others, naming file and
    `meter.<key>`, together with every other problem of the section."""
    return TableReader.of_options(options, "meter.")


def option(reader: TableReader, key: str, kind: type, default: Any) -> Any:
    """A typed `[meter]` option (a float also takes an integer); a wrong one is recorded
    and DEFAULT stands in until the driver's `reader.finish()` raises."""
    kinds: type | tuple[type, ...] = (int, float) if kind is float else kind
    return reader.get(key, kinds, _EXPECTED[kind], default)
