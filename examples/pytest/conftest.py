"""Which model each target runs: a microcontroller runs the model built into its
firmware (None); every other target the shipped tiny MLP."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def model(edge_target: Any) -> str | None:
    return None if edge_target.kind == "mcu" else "tiny-mlp"
