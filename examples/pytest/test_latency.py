"""A team's own latency tests, run on whatever targets the command line names:

    pytest examples/pytest --edge-target local --edge-target loopback
"""

from __future__ import annotations

from typing import Any

import pytest

from edgetool.pytest_plugin import assert_no_regression, s, us

FAST = {"iterations": 20, "repeat": 3, "warmup": 2, "warmup_seconds": 0.0}


def test_p50_within_budget(edge_deploy: Any, model: str | None) -> None:
    run = edge_deploy(model, **FAST)
    assert run.latency_p50 < 1 * s


def test_p50_under_a_microsecond(edge_deploy: Any, model: str | None) -> None:
    """Fails on purpose: how a latency budget that is not met reads."""
    run = edge_deploy(model, **FAST)
    assert run.latency_p50 < 1 * us


@pytest.mark.edge(kinds=["mcu"])
def test_only_on_microcontrollers(edge_deploy: Any, model: str | None) -> None:
    run = edge_deploy(model, **FAST)
    assert run.emulated or run.time_base == "device"


def test_no_regression(edge_deploy: Any, edge_baseline: Any, model: str | None) -> None:
    """Against --edge-baseline: at most twice as slow; undecided is an xfail."""
    run = edge_deploy(model, **FAST)
    assert_no_regression(run, edge_baseline, threshold=1.0)
