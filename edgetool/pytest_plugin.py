"""pytest plugin: measure models on devices from a team's own test suite.

Registered through the `pytest11` entry point and inactive until asked for, like labgrid's
`--lg-env`: without an `--edge-*` option it adds only its options and the `edge` marker,
and its fixtures skip with a reason. With them:

    pytest --edge-target local --edge-target loopback --edge-results results/ci

- `edge_target` (session scope): the connected, checked Target; tests that use it run once
  per `--edge-target` (an emulated target's emulator is started for the session first).
- `edge_emulator`: the running emulator's state for this target (None for hardware).
- `edge_deploy(model, **options)`: `edgetool.api.deploy` on the target; returns the API's
  Run and records its id, p50 with its interval, and energy as JUnit properties and in the
  terminal summary. Every run of the session goes under one results directory.
- `@pytest.mark.edge(targets=[...], kinds=[...])`: run a test only on these targets/kinds.
- `assert_no_regression(run, baseline)`: `results compare`'s verdict; an inconclusive one is
  an xfail (or a skip, or a failure: `--edge-inconclusive`), never a silent pass.
- `--edge-place TAG`: hold a labgrid place (by name, or `key=value` tags) through the
  coordinator for the whole session, and give it back however the session ends.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgetool.api import Comparison, Run, compare, deploy, mJ, ms, s, uJ, us

__all__ = ["EdgeSession", "assert_no_regression", "mJ", "ms", "s", "uJ", "us"]

_OPTIONS = (
    "edge_target",
    "edge_targets_dir",
    "edge_results",
    "edge_baseline",
    "edge_place",
)
INCONCLUSIVE = ("xfail", "skip", "fail")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgetool", "edgetool: models measured on devices")
    group.addoption(
        "--edge-target",
        action="append",
        default=[],
        metavar="NAME",
        help="Target to run edge tests on (repeat: tests are parametrised over them).",
    )
    group.addoption(
        "--edge-targets-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="Extra directory of target TOMLs (as edgetool's --targets-dir).",
    )
    group.addoption(
        "--edge-results",
        metavar="DIR",
        help="Directory this session's runs go under [results/pytest-<time>].",
    )
    group.addoption(
        "--edge-baseline",
        metavar="DIR|latest",
        help="Runs to compare against: a directory of runs, or `latest` (the newest "
        "earlier session beside this one's).",
    )
    group.addoption(
        "--edge-place",
        metavar="TAG",
        help="Hold this labgrid place (a name, or key=value[,key=value] tags) through "
        "the coordinator ($EDGETOOL_COORDINATOR) for the session; always released.",
    )
    group.addoption(
        "--edge-inconclusive",
        choices=INCONCLUSIVE,
        default="xfail",
        help="What an inconclusive assert_no_regression does [xfail].",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "edge(targets=[...], kinds=[...]): run only on these edgetool targets or kinds",
    )
    if any(config.getoption(name) for name in _OPTIONS):
        edge = EdgeSession.from_config(config)
        if not config.getoption("help", False):
            from edgetool.errors import EdgetoolError

            try:
                edge.check()
            except EdgetoolError as exc:
                # Before collection: one line and pytest's usage exit, not an error per test.
                raise pytest.UsageError(f"edgetool: {_one_line(exc)}") from None
        config.stash[_KEY] = edge


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _session(config: pytest.Config) -> EdgeSession | None:
    return config.stash.get(_KEY, None)


@dataclass
class _Record:
    nodeid: str
    run: Run


@dataclass
class EdgeSession:
    """What one pytest session holds: targets, emulators it started, a place, its runs."""

    targets: list[str]
    targets_dirs: list[Path]
    results: Path
    baseline: str | None
    place: str | None
    inconclusive: str
    records: list[_Record] = field(default_factory=list)
    _kinds: dict[str, str] = field(default_factory=dict)
    _loaded: dict[str, Any] = field(default_factory=dict)
    _emulators: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _env: dict[str, str | None] = field(default_factory=dict)
    _held: str | None = None
    _place_error: Exception | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> EdgeSession:
        from edgetool import paths

        given = config.getoption("edge_results")
        if given:
            results = Path(given)
        else:
            results = paths.results_dir() / time.strftime("pytest-%Y-%m-%dT%H-%M-%S")
        return cls(
            targets=list(dict.fromkeys(config.getoption("edge_target"))) or ["local"],
            targets_dirs=[Path(d) for d in config.getoption("edge_targets_dir")],
            results=results,
            baseline=config.getoption("edge_baseline"),
            place=config.getoption("edge_place"),
            inconclusive=config.getoption("edge_inconclusive"),
        )

    def check(self) -> None:
        """Refuse what is wrong on the command line before any test runs: unknown targets,
        a malformed --edge-place."""
        for name in self.targets:
            self.kind(name)
        _place_tags(self.place)

    def kind(self, name: str) -> str:
        """The target's kind, read from its TOML (no connection: used at collection)."""
        if name not in self._kinds:
            from edgetool.targets import load_target

            self._kinds[name] = load_target(name, self.targets_dirs).kind
        return self._kinds[name]

    def hold_place(self) -> None:
        """Hold --edge-place for the session (once), its resources as EDGETOOL_<T>_*."""
        if self.place is None or self._held is not None:
            return
        if self._place_error is not None:
            # Once failed, every later test fails the same way: none may silently run on
            # whatever the TOML points at instead of the place.
            raise self._place_error
        try:
            self._hold_place(self.place)
        except Exception as exc:
            self._place_error = exc
            raise

    def _hold_place(self, spec: str) -> None:
        from edgetool.errors import ConfigError
        from edgetool.farm.places import LabgridPlaces, open_places, resources_env

        provider = open_places(None)
        if not isinstance(provider, LabgridPlaces):
            raise ConfigError(
                "--edge-place needs a labgrid coordinator",
                hint="set EDGETOOL_COORDINATOR=HOST:PORT",
            )
        name = spec
        tags = _place_tags(spec)
        known = provider.places()
        if tags:
            found = [
                place
                for place, info in sorted(known.items())
                if all({**info.tags, "name": place}.get(k) == v for k, v in tags.items())
            ]
            if not found:
                raise ConfigError(f"no labgrid place carries {spec}")
            name = found[0]
        info = known.get(name)
        target = _place_target(name, info.tags if info else {}, self.targets)
        # One hold for the session (a second reservation of the same place would wait for
        # ourselves); its resources address the one target it is for, never `local` too.
        held = self._stack.enter_context(provider.hold(target, timeout=600.0, place=name))
        self._held = name
        for key, value in resources_env(target, held.resources).items():
            self._env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def emulator(self, name: str) -> dict[str, Any] | None:
        """Start NAME's emulator if it has one and is not running; stopped at the end."""
        if name in self._emulators:
            return self._emulators[name]
        from edgetool.emulate import open_emulator
        from edgetool.targets import load_target

        target = load_target(name, self.targets_dirs)
        state: dict[str, Any] | None = None
        if target.emulator is not None:
            emulator = open_emulator(target)
            state = emulator.state()
            if state is None:
                state = emulator.start()
                self._stack.callback(emulator.stop)
        self._emulators[name] = state
        return state

    def target(self, name: str) -> Any:
        """The target, its emulator up and its device checked (`targets check`)."""
        if name not in self._loaded:
            from edgetool.flows import facts
            from edgetool.targets import load_target

            self.hold_place()
            self.emulator(name)
            target = load_target(name, self.targets_dirs)
            found = facts(target)
            if found.problem is not None:
                raise found.problem
            self._loaded[name] = target
        return self._loaded[name]

    def close(self) -> None:
        """Stop what this session started and give back the place, whatever happened."""
        try:
            self._stack.close()
        finally:
            for key, value in self._env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def baseline_dir(self) -> Path | None:
        if self.baseline is None:
            return None
        if self.baseline != "latest":
            return Path(self.baseline)
        parent = self.results.resolve().parent
        earlier = sorted(
            (d for d in parent.iterdir() if d.is_dir() and d.resolve() != self.results.resolve()),
            key=lambda d: d.stat().st_mtime,
        )
        from edgetool.results.store import iter_run_dirs

        with_runs = [d for d in earlier if any(iter_run_dirs(d))]
        return with_runs[-1] if with_runs else None


def _place_target(place: str, tags: dict[str, str], targets: list[str]) -> str:
    """The --edge-target a place's resources address: the one its `edgetool` tag names
    (as the farm reads it), else the one named like the place, else the only one."""
    from edgetool.errors import UsageError

    for wanted in (tags.get("edgetool"), place):
        if wanted in targets:
            return wanted
    if len(targets) == 1:
        return targets[0]
    raise UsageError(
        f"--edge-place: labgrid place {place} is for none of the --edge-targets "
        f"({', '.join(targets)})",
        hint=f"tag it edgetool=TARGET (labgrid-client -p {place} set-tags edgetool=TARGET)",
    )


def _place_tags(spec: str | None) -> dict[str, str]:
    """`key=value[,key=value]` as a dict; a plain place name has none."""
    if spec is None or "=" not in spec:
        return {}
    tags: dict[str, str] = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            from edgetool.errors import UsageError

            raise UsageError(
                f"--edge-place {spec!r}: {item!r} is not key=value",
                hint="give a place name, or tags as key=value[,key=value]",
            )
        tags[key.strip()] = value.strip()
    return tags


_KEY = pytest.StashKey[EdgeSession]()


def pytest_unconfigure(config: pytest.Config) -> None:
    edge = _session(config)
    if edge is not None:
        from edgetool.errors import EdgetoolError

        try:
            edge.close()
        except EdgetoolError as exc:  # a place not given back: say how, once, no traceback
            import sys

            sys.stderr.write(f"edgetool: {_one_line(exc)}\n")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per --edge-target; a target the `edge` marker excludes is a visible skip."""
    edge = _session(metafunc.config)
    if edge is None or "edge_target" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("edge")
    wanted_targets = list(marker.kwargs.get("targets", [])) if marker else []
    wanted_kinds = list(marker.kwargs.get("kinds", [])) if marker else []
    params = []
    for name in edge.targets:
        reason = None
        if wanted_targets and name not in wanted_targets:
            reason = f"edge marker: targets {', '.join(wanted_targets)}, not {name}"
        elif wanted_kinds and edge.kind(name) not in wanted_kinds:
            reason = f"edge marker: kinds {', '.join(wanted_kinds)}, not {edge.kind(name)}"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    metafunc.parametrize("edge_target", params, indirect=True, scope="session")


def _require(request: pytest.FixtureRequest) -> EdgeSession:
    edge = _session(request.config)
    if edge is None:
        pytest.skip("edgetool: no --edge-target given (this test measures on a device)")
    return edge


def _name(request: pytest.FixtureRequest, edge: EdgeSession) -> str:
    param = getattr(request, "param", None)
    return str(param) if param is not None else edge.targets[0]


@pytest.fixture(scope="session")
def edge_emulator(request: pytest.FixtureRequest) -> dict[str, Any] | None:
    """The emulator state of the first --edge-target (see `edge_target` for the others)."""
    edge = _require(request)
    return edge.emulator(edge.targets[0])


@pytest.fixture(scope="session")
def edge_target(request: pytest.FixtureRequest) -> Any:
    """A connected, checked Target: one per --edge-target, for the whole session."""
    edge = _require(request)
    from edgetool.errors import EdgetoolError

    try:
        return edge.target(_name(request, edge))
    except EdgetoolError as exc:
        problem = _one_line(exc)
    # The device or the place is the problem, not the test: one line (outside the except,
    # so no "during handling of the above exception" chain is printed).
    pytest.fail(f"edgetool: {problem}", pytrace=False)


def _record(run: Run, record_property: Callable[[str, object], None]) -> None:
    record_property("edge_run_id", run.run_id)
    record_property("edge_target", run.target)
    record_property("edge_p50_ms", f"{run.latency_p50 / ms:.6g}")
    ci = run.latency_ci
    if ci is not None:
        record_property("edge_p50_ci_ms", f"{ci[0] / ms:.6g}..{ci[1] / ms:.6g}")
    record_property("edge_time_base", run.time_base)
    if run.energy_total is not None:
        record_property("edge_energy_mj", f"{run.energy_total / mJ:.6g}")


@pytest.fixture
def edge_deploy(
    request: pytest.FixtureRequest,
    edge_target: Any,
    record_property: Callable[[str, object], None],
) -> Callable[..., Run]:
    """`edge_deploy(model, **options) -> Run`: edgetool.api.deploy on this test's target,
    into the session's results directory, recorded in the JUnit XML and the summary."""
    edge = _require(request)

    def run_model(model: str | Path | None, **options: Any) -> Run:
        run = deploy(
            model,
            edge_target,
            results_dir=edge.results,
            targets_dirs=edge.targets_dirs,
            **options,
        )
        edge.records.append(_Record(request.node.nodeid, run))
        _record(run, record_property)
        return run

    return run_model


@pytest.fixture
def edge_baseline(request: pytest.FixtureRequest) -> Path | None:
    """--edge-baseline as a directory of runs (None without one)."""
    return _require(request).baseline_dir()


def assert_no_regression(
    run: Run,
    baseline: Run | str | Path | None,
    *,
    threshold: float = 0.05,
    alpha: float = 0.05,
    inconclusive: str | None = None,
) -> Comparison:
    """Fail when RUN regressed against BASELINE (a run, or a directory of runs paired by
    model and target) by `results compare`'s rules. An undecided comparison (or no
    baseline) is `inconclusive`: "xfail" (default, or --edge-inconclusive), "skip" or
    "fail", with the reason; never a silent pass."""
    how = inconclusive or _inconclusive_default()
    if how not in INCONCLUSIVE:
        raise ValueError(f"inconclusive must be one of {', '.join(INCONCLUSIVE)}")
    if baseline is None:
        _undecided(how, "no baseline to compare with (--edge-baseline DIR|latest)")
    assert baseline is not None
    result = compare(baseline, run, threshold=threshold, alpha=alpha)
    ratio = f"{result.ratio:.3f}" if result.ratio is not None else "?"
    ci = f" [{result.ci[0]:.3f}, {result.ci[1]:.3f}]" if result.ci else ""
    if result.verdict == "regression":
        pytest.fail(
            f"regression beyond {100 * threshold:g} %: {run.run_id} vs baseline, "
            f"ratio {ratio}{ci} ({result.reason})",
            pytrace=False,
        )
    if result.verdict in ("inconclusive", "not comparable"):
        _undecided(how, f"{result.verdict}: ratio {ratio}{ci}: {result.reason}")
    return result


class _Defaults:
    inconclusive = "xfail"


def _inconclusive_default() -> str:
    return _Defaults.inconclusive


def _undecided(how: str, reason: str) -> None:
    if how == "xfail":
        pytest.xfail(reason)
    if how == "skip":
        pytest.skip(reason)
    pytest.fail(reason, pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    edge = _session(session.config)
    if edge is not None:
        _Defaults.inconclusive = edge.inconclusive


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    edge = _session(config)
    if edge is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("edgetool runs")
    for record in edge.records:
        run = record.run
        ci = run.latency_ci
        interval = f" [{ci[0] / ms:.4g}, {ci[1] / ms:.4g}]" if ci else ""
        energy = (
            f"  energy {run.energy_total / mJ:.4g} mJ/inf" if run.energy_total is not None else ""
        )
        unit = "ms" if run.time_base == "device" else f"ms ({run.time_base})"
        write(
            f"{record.nodeid}  {run.target}  p50 {run.latency_p50 / ms:.4g}{interval} "
            f"{unit}{energy}  run {run.run_id}"
        )
    write(f"{len(edge.records)} run(s) under {edge.results}")
