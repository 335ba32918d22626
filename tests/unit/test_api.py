"""edgetool.api: the typed functions the CLI is a layer over, with the CLI's defaults."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from edgetool import api
from edgetool.errors import ConfigError, EdgetoolError, ResultsError, UsageError
from edgetool.flows.base import DeployOutcome, Observer, RunSettings
from edgetool.results.compare import VERDICTS
from tests.conftest import TINY_ONNX

FAST: dict[str, Any] = {"iterations": 20, "repeat": 3, "warmup": 1, "warmup_seconds": 0.0}


def _plain(default: Any) -> Any:
    """click 8.3 says "not given" with a sentinel, older clicks with None."""
    return None if type(default).__name__ == "Sentinel" else default


def _cli_options(command: click.Command) -> dict[str, Any]:
    ctx = click.Context(command)
    return {
        p.name: _plain(p.get_default(ctx, call=False))
        for p in command.params
        if isinstance(p, click.Option) and p.name
    }


# The CLI spells two parameters differently; None means "not given" on both sides.
_CLI_NAME = {"input": "input_path", "model": "model_spec", "target": "target_name"}


@pytest.mark.parametrize("name", ["deploy", "ab"])
def test_cli_and_api_defaults_are_identical(name: str) -> None:
    from edgetool.cli.ab import command as ab_command
    from edgetool.cli.deploy import command as deploy_command

    command = {"deploy": deploy_command, "ab": ab_command}[name]
    options = _cli_options(command)
    signature = inspect.signature(getattr(api, name))
    compared = 0
    for param in signature.parameters.values():
        cli_name = _CLI_NAME.get(param.name, param.name)
        if cli_name not in options or param.default is inspect.Parameter.empty:
            continue
        cli_default = options[cli_name]
        if name == "ab" and cli_name in ("threshold",):
            cli_default = 0.05  # "5%", parsed by its callback
        if param.name == "input_shapes":
            assert cli_default in ((), None) and not param.default
        elif param.name in ("ep", "delegate"):
            # Not given: the target's [run] default, else the runtime's own; "" in the API.
            assert cli_default in ((), None) and param.default == ""
        elif callable(cli_default):
            assert param.default == "local"  # -t: $EDGETOOL_TARGET or local
        else:
            assert cli_default == param.default, (param.name, cli_default, param.default)
        compared += 1
    assert compared >= 10
    # ... and both are RunSettings's own field defaults
    defaults = RunSettings()
    for field in ("repeat", "warmup", "warmup_seconds", "threads", "runtime", "seed"):
        assert options[field] == getattr(defaults, field), field
        assert signature.parameters[field].default == getattr(defaults, field), field


def test_cli_and_api_make_the_same_settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[RunSettings] = []

    def capture(
        target: Any, artifact: Any, settings: RunSettings, root: Path, observer: Any = None
    ) -> DeployOutcome:
        seen.append(settings)
        raise ConfigError("captured")

    monkeypatch.setattr("edgetool.flows.deploy", capture)
    from edgetool.cli import cli

    result = CliRunner().invoke(cli, ["deploy", "--model", str(TINY_ONNX)])
    assert isinstance(result.exception, ConfigError), result.output
    with pytest.raises(ConfigError):
        api.deploy(TINY_ONNX)
    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert seen[0].warmup_seconds == 0.5 and seen[0].min_duration == pytest.approx(0.2)


def test_deploy_returns_a_typed_run_in_seconds(home: Path) -> None:
    run = api.deploy(TINY_ONNX, "local", **FAST)
    assert run.dir.is_dir() and run.dir.parent == home / "results"
    assert run.status == "complete" and run.target == "local"
    reps = run.summary.repetitions
    assert reps is not None and reps.estimate_ms is not None
    assert run.latency_p50 == pytest.approx(reps.estimate_ms * api.ms)
    assert run.latency_ci is not None
    low, high = run.latency_ci
    assert low <= run.latency_p50 <= high
    assert 0 < run.latency_p50 < 1.0  # seconds, not ms
    assert run.count == 60
    assert run.energy_total is None  # no meter read
    again = api.load_run(run.run_id)
    assert again.run_id == run.run_id and again.latency_p50 == pytest.approx(run.latency_p50)


def test_deploy_refuses_what_the_target_would_ignore_before_connecting(home: Path) -> None:
    with pytest.raises(UsageError, match="--threads") as caught:
        api.deploy(None, "mcu-m4-qemu", threads=2)
    assert caught.value.exit_code == 2
    assert not (home / "results").exists()


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"iterations": 5, "duration": 1.0}, "not both"),
        ({"repeat": 0}, "--repeat"),
        ({"duration": float("nan")}, "--duration"),
        ({"runtime": "tensorrt"}, "--runtime"),
        ({"input_shapes": [("x", (1, 2)), ("x", (1, 3))]}, "twice"),
    ],
)
def test_bad_settings_are_usage_errors(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        api.run_settings(**options)


def test_errors_are_the_documented_tree(home: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        api.deploy(TINY_ONNX, "no-such-target")
    assert isinstance(caught.value, EdgetoolError) and caught.value.exit_code == 5
    with pytest.raises(ResultsError):
        api.load_run("no-such-run")
    with pytest.raises(UsageError):
        api.verify(TINY_ONNX, samples=0)


def test_compare_two_runs_gives_a_verdict_ratio_and_interval(home: Path) -> None:
    class Counting(Observer):
        repetitions = 0

        def repetition(self, run_id: str, index: int, total: int) -> None:
            self.repetitions += 1

    heard = Counting()
    base = api.deploy(TINY_ONNX, **FAST, observer=heard)
    new = api.deploy(TINY_ONNX, **FAST)
    assert heard.repetitions == 3
    result = api.compare(base, new)
    assert result.verdict in VERDICTS
    assert result.ratio is not None and 0.1 < result.ratio < 10
    assert result.ci is not None and result.ci[0] <= result.ratio <= result.ci[1]
    same = api.compare(str(base.dir), new.run_id)
    assert same.ratio == pytest.approx(result.ratio)
    if result.verdict in ("inconclusive", "not comparable"):
        with pytest.raises(EdgetoolError) as caught:
            result.raise_for_verdict()
        assert caught.value.exit_code == 13


def test_run_and_comparison_are_frozen(home: Path) -> None:
    assert dataclasses.is_dataclass(api.Run) and dataclasses.is_dataclass(api.Comparison)
    assert api.Run.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert api.Comparison.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_import_is_light() -> None:
    code = (
        "import sys, edgetool.api; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "edgetool" in loaded
    assert not {"torch", "onnx", "onnxruntime", "matplotlib", "tensorflow"} & loaded
