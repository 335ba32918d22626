"""Stepped artifacts: a recurrent model exported as ONE time step, for runtimes that give
a program one input and one output tensor (Espruino's TFLite Micro binding).

Layout (the manifest's ``stepped`` entry): the input is ``[x_t (channels) | state]``,
the output is the next ``state``; the last ``result`` values of the state are the model's
answer after the final step. A window is run by zeroing the state, then per step
writing x_t, invoking, and copying the output into the input's state part — on the host
(verify, parity references) by :func:`run_window`, on a watch by the same loop in JS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from edgetool.errors import ModelError


@dataclass(frozen=True)
class StepLayout:
    steps: int
    channels: int
    state: int
    result: int

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> StepLayout | None:
        entry = manifest.get("stepped")
        if not entry:
            return None
        try:
            return cls(**{f.name: int(entry[f.name]) for f in fields(cls)})
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed 'stepped' entry in the manifest: {entry!r}") from exc

    def window(self, value: np.ndarray) -> np.ndarray:
        """`value` as a [steps, channels] float32 window (accepts a leading batch of 1)."""
        window = np.asarray(value, dtype=np.float32)
        if window.ndim == 3 and window.shape[0] == 1:
            window = window[0]
        if window.shape != (self.steps, self.channels):
            raise ModelError(
                f"a window for this stepped model is [1, {self.steps}, {self.channels}]; "
                f"got {list(np.shape(value))}"
            )
        return np.ascontiguousarray(window)


def run_window(
    invoke: Callable[[np.ndarray], np.ndarray], layout: StepLayout, window: np.ndarray
) -> np.ndarray:
    """The answer after stepping `invoke` ([1, channels + state] -> [1, state]) through
    every row of `window`; float32 end to end, as on the device."""
    rows = layout.window(window)
    packed = np.zeros((1, layout.channels + layout.state), dtype=np.float32)
    state = packed[0, layout.channels :]
    for row in rows:
        packed[0, : layout.channels] = row
        state[:] = np.asarray(invoke(packed), dtype=np.float32).reshape(-1)
    return state[layout.state - layout.result :].copy()
