"""An interrupt that lands while a batch is being journaled: the run's summary counts
exactly what samples.jsonl holds (it used to be one batch, 256 samples, short)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgetool.errors import Interrupted
from edgetool.export.build import resolve_model
from edgetool.flows import deploy
from edgetool.flows.base import RunSettings
from edgetool.results.store import RunWriter, load_run
from edgetool.targets import load_target


def test_interrupt_inside_append_samples_keeps_counts_equal(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RunWriter.append_samples
    calls = {"n": 0}

    def append_then_interrupt(self: RunWriter, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)  # the batch is on disk (written and fsynced) ...
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # ... and Ctrl-C arrives before it was counted

    monkeypatch.setattr(RunWriter, "append_samples", append_then_interrupt)
    settings = RunSettings(duration=5.0, warmup=2, repeat=2)
    with pytest.raises(Interrupted) as info:
        deploy(load_target("local"), resolve_model("tiny-mlp"), settings, home / "results")
    run_dir = info.value.run_dir
    assert run_dir is not None
    on_disk = sum(
        len(json.loads(line)["ns"]) for line in (run_dir / "samples.jsonl").read_text().splitlines()
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["count"] == on_disk > 0
    assert summary["complete"] is False
    assert load_run(run_dir).status == "partial"
