"""The pytest plugin, through pytester: the user suite of examples/pytest run on `local`."""

from __future__ import annotations

import importlib.metadata
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytest_plugins = ["pytester"]

EXAMPLE = REPO / "examples" / "pytest"


def _plugin_args() -> list[str]:
    """-p loads the plugin unless an installed edgetool already declares the entry point
    (loading it twice is an error)."""
    installed = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    return [] if "edgetool" in installed else ["-p", "edgetool.pytest_plugin"]


def run_suite(pytester: pytest.Pytester, *args: str) -> tuple[Any, dict[str, dict[str, str]]]:
    """Run the example suite with ARGS; the outcome and each test case's properties."""
    for path in EXAMPLE.glob("*.py"):
        pytester.makepyfile(**{path.stem: path.read_text(encoding="utf-8")})
    pytester.makeini((EXAMPLE / "pytest.ini").read_text(encoding="utf-8"))
    junit = pytester.path / f"junit-{len(list(pytester.path.glob('junit-*.xml')))}.xml"
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "-p", "no:cacheprovider", f"--junitxml={junit}", "-rA", *args
    )
    properties: dict[str, dict[str, str]] = {}
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
            properties[case.get("name", "")] = props
    return result, properties


def test_entry_point_is_declared() -> None:
    from edgetool.config import read_toml

    project = read_toml(REPO / "pyproject.toml", "pyproject")
    assert project["project"]["entry-points"]["pytest11"] == {"edgetool": "edgetool.pytest_plugin"}


def test_without_edge_options_it_adds_only_its_options(pytester: pytest.Pytester) -> None:
    result, _ = run_suite(pytester)
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*no --edge-target given*"])
    assert "edgetool runs" not in result.stdout.str()
    helped = pytester.runpytest_subprocess(*_plugin_args(), "--help")
    helped.stdout.fnmatch_lines(["*--edge-target=NAME*", "*--edge-place=TAG*"])


def test_suite_on_local_records_runs_and_fails_the_broken_budget(
    pytester: pytest.Pytester, home: Path
) -> None:
    results = home / "results" / "session-1"
    result, props = run_suite(pytester, "--edge-target", "local", f"--edge-results={results}")
    # within budget passes; under a microsecond fails; mcu-only is skipped by its marker;
    # no baseline is an xfail, not a silent pass
    result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1)
    out = result.stdout.str()
    assert "edge marker: kinds mcu, not linux" in out
    assert "no baseline to compare with" in out
    result.stdout.fnmatch_lines(["*assert run.latency_p50 < 1 * us*", "*where*= Run(*p50*ms)*"])
    assert "PytestWarning" not in out  # junit_family xunit1: properties per test case
    budget = props["test_p50_within_budget[local]"]
    assert budget["edge_target"] == "local"
    assert (results / budget["edge_run_id"] / "summary.json").is_file()
    low, high = (float(v) for v in budget["edge_p50_ci_ms"].split(".."))
    assert low <= float(budget["edge_p50_ms"]) <= high
    assert "edge_energy_mj" not in budget  # no meter: no figure, not a zero
    # the terminal summary names every run of the session, all under one directory
    result.stdout.fnmatch_lines(["*edgetool runs*", "*test_p50_within_budget*local*p50*ms*"])
    result.stdout.fnmatch_lines([f"3 run(s) under {results}"])
    assert len([d for d in results.iterdir() if (d / "manifest.json").is_file()]) == 3

    # a second session against the latest earlier one: compared, never silently passed
    again, _ = run_suite(
        pytester,
        "--edge-target=local",
        f"--edge-results={home / 'results' / 'session-2'}",
        "--edge-baseline=latest",
        "-k",
        "regression",
    )
    outcomes = again.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("xfailed", 0) == 1, outcomes
    if outcomes.get("xfailed"):
        again.stdout.fnmatch_lines(["*inconclusive*"])


def test_marker_selects_targets(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.edge(targets=["loopback"])
        def test_loopback_only(edge_target):
            raise AssertionError("must not run on local")

        def test_any(edge_target):
            assert edge_target.name == "local"
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "--edge-target=local", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*edge marker: targets loopback, not local*"])


def test_inconclusive_can_be_a_failure(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        from edgetool.pytest_plugin import assert_no_regression

        def test_gate(edge_target):
            assert_no_regression(None, None)
        """
    )
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "--edge-target=local", "--edge-inconclusive=fail"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no baseline to compare with*"])


def test_unknown_target_is_one_clear_error(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile("def test_x(edge_target):\n    pass\n")
    result = pytester.runpytest_subprocess(*_plugin_args(), "--edge-target=nope")
    # refused before collection, as pytest refuses a bad option: no fixture error per test
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "ERROR: edgetool: unknown target 'nope' (known: " in err
    assert "Add targets/NAME.toml or pass --targets-dir." in err
    assert [ln for ln in err.splitlines() if ln.strip()] == [err.strip()]
    assert "Traceback" not in err + result.stdout.str()
    assert "test_x" not in result.stdout.str()


def test_malformed_place_is_one_clear_error(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile("def test_x(edge_target):\n    pass\n")
    result = pytester.runpytest_subprocess(*_plugin_args(), "--edge-place=board=pi,fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str().strip()
    assert err.startswith("ERROR: edgetool: --edge-place 'board=pi,fast': 'fast' is not key=value")
    assert "\n" not in err


def test_unreachable_device_fails_its_tests_in_one_line(
    pytester: pytest.Pytester, home: Path
) -> None:
    """A target that exists but cannot be reached: each test that needs it fails with
    edgetool's message, not a traceback through the fixture."""
    targets = home / "targets"
    targets.mkdir()
    (targets / "gone.toml").write_text(
        'kind = "linux"\nruntimes = ["onnxruntime"]\n'
        '[transport]\ntype = "ssh"\nhost = "127.0.0.1"\nport = 9\n'
        "use_ssh_config = false\nconnect_timeout = 2\n"
    )
    pytester.makepyfile("def test_x(edge_target):\n    pass\n")
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "--edge-target=gone", f"--edge-targets-dir={targets}"
    )
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "Traceback" not in out and "def edge_target" not in out
    assert "During handling" not in out
    result.stdout.fnmatch_lines(["*edgetool: *127.0.0.1*"])


def test_a_place_addresses_one_target() -> None:
    """Its `edgetool` tag names the target, else its own name, else the only one; with
    several targets and none named, the user is told how to say which."""
    from edgetool.errors import UsageError
    from edgetool.pytest_plugin import _place_target

    assert _place_target("bench-3", {"edgetool": "rpi4"}, ["local", "rpi4"]) == "rpi4"
    assert _place_target("rpi4", {}, ["local", "rpi4"]) == "rpi4"
    assert _place_target("bench-3", {}, ["rpi4"]) == "rpi4"
    with pytest.raises(UsageError, match="bench-3 is for none of the --edge-targets"):
        _place_target("bench-3", {"board": "pi"}, ["local", "rpi4"])
