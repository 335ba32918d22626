"""One night of a plan: execute the jobs, compare with a baseline, write every output.

The CLI only parses options and prints; this is what `farm run` does, usable from code.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from edgetool.errors import (
    EdgetoolError,
    Interrupted,
    JobsFailed,
    Regression,
    ResultsError,
)
from edgetool.farm import outputs
from edgetool.farm.execute import RELEASE_GRACE, Executor, JobResult
from edgetool.farm.execute import Observer as ExecutorObserver
from edgetool.farm.places import PlaceProvider
from edgetool.farm.plan import Job, Plan
from edgetool.files import write_json_atomic


@dataclass
class Night:
    """What a night left: its summary (as written), the outputs, and the error that sets
    the exit code (None: all passed)."""

    directory: Path
    summary: dict[str, Any]
    results: list[JobResult]
    report: Path | None
    error: EdgetoolError | None
    notes: list[str] = field(default_factory=list)


def baseline_nights(
    value: str | None, plan: Plan, night: Path, count: int
) -> tuple[list[Path], str | None]:
    """(baseline night dirs, oldest first; note): `latest` is the newest earlier night
    beside this one, or the newest `count` of them."""
    value = value or plan.regression.baseline
    if value is None:
        return [], None
    if value == "latest":
        found = outputs.latest_nights(night.parent, plan, exclude=night, count=count)
        return (found, None) if found else ([], "no earlier night of this plan: no comparison")
    path = Path(value).expanduser()
    if not outputs.night_runs(path):
        raise ResultsError(f"baseline {path} has no runs (expected a night directory)")
    return [path], None


REPEAT_WINDOW = 1.0
"""Seconds within which a repeated SIGINT/SIGTERM counts as the same stop request: a
wrapper relaying one Ctrl-C (or a terminal and a CI runner both signalling) sends several."""
STOP_GRACE = 30.0
"""Seconds stopped jobs get to close their runs (SIGTERM) before they are killed."""


class _StopRequests:
    """SIGINT/SIGTERM as counted requests, never as an exception: a KeyboardInterrupt can
    land anywhere (between starting a job and recording it), a flag is read where we choose."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.urgent = False
        """A request came REPEAT_WINDOW s or more after the first: stop now."""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        elif now - self.first >= REPEAT_WINDOW:
            self.urgent = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # library use from a thread: signals are the caller's business
            return
        saved = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def _execute(executor: Executor, stops: _StopRequests, say: Callable[[str], None]) -> bool:
    """Run the jobs until done or stopped; True when stopped. A stop first asks running jobs
    to end (SIGTERM: they keep partial runs); a later request, or STOP_GRACE, kills them.
    Either way the farm waits until every job it started is gone, so no job outlives the
    report that calls it finished, and its place is given back only after it."""
    executor.start()
    killed_at: float | None = None
    while not executor.wait(0.2):
        if stops.first is None:
            continue
        if not executor.stop.is_set():
            say("interrupted: stopping running jobs, releasing places …")
            executor.stop.set()
        now = time.monotonic()
        if killed_at is None and (stops.urgent or now - stops.first >= STOP_GRACE):
            say("stopping now: killing running jobs …")
            executor.kill_running()
            killed_at = now
        if killed_at is not None and executor.live() == 0 and now - killed_at >= RELEASE_GRACE:
            break  # only workers still waiting for a place (they start nothing now)
    executor.mark_unfinished()
    return stops.first is not None


def run_night(
    plan: Plan,
    jobs: list[Job],
    provider: PlaceProvider,
    night: Path,
    *,
    baseline: str | None = None,
    baseline_count: int | None = None,
    allow_skipped: bool = False,
    observer: ExecutorObserver | None = None,
    targets_dirs: Sequence[Path] = (),
    say: Callable[[str], None] = lambda text: None,
) -> Night:
    """Run every job (places in parallel), then compare and write summary.json, JUnit XML
    and the HTML report. Ctrl-C (or SIGTERM) stops running jobs and still writes them."""
    started = time.time()
    base_nights, base_note = baseline_nights(
        baseline, plan, night, baseline_count or plan.regression.baseline_nights
    )
    night.mkdir(parents=True, exist_ok=True)
    executor = Executor(plan, jobs, provider, night, observer=observer, targets_dirs=targets_dirs)
    notes = [base_note] if base_note else []
    stops = _StopRequests()
    with stops.installed():  # until the outputs are written: they are what a stop keeps
        for text in _release_stale(provider):
            say(text)
            notes.append(text)
        interrupted = _execute(executor, stops, say)
        executed = time.time()
        results = executor.ordered()
        return _finish(
            plan, results, provider, night, started, executed, base_nights, notes,
            interrupted=interrupted, allow_skipped=allow_skipped,
        )  # fmt: skip


def _release_stale(provider: PlaceProvider) -> list[str]:
    """What an earlier, killed farm of ours left held, given back (a bad coordinator is
    reported by the first job that needs it, not here)."""
    try:
        return provider.release_stale()
    except EdgetoolError as exc:
        return [f"could not look for stale holds: {exc}"]


def _finish(
    plan: Plan,
    results: list[JobResult],
    provider: PlaceProvider,
    night: Path,
    started: float,
    executed: float,
    base_nights: list[Path],
    notes: list[str],
    *,
    interrupted: bool,
    allow_skipped: bool,
) -> Night:
    """Compare, then write summary.json, the JUnit XML and the HTML report."""
    base_dir = base_nights[-1] if base_nights else None
    if base_dir is not None:
        try:  # a bad baseline must not cost the night's own outputs
            comparison = outputs.apply_baseline(results, base_dir, plan, base_nights[:-1])
            write_json_atomic(night / "comparison.json", comparison)
        except EdgetoolError as exc:
            notes.append(f"no comparison with {base_dir}: {exc}")
    report = None
    try:
        report = outputs.write_night_report(plan, results, night / "report.html")
    except (EdgetoolError, OSError) as exc:
        notes.append(f"no HTML report: {exc}")
    error = _verdict(plan, results, night, base_dir, interrupted, allow_skipped)
    data = outputs.summary(
        plan,
        results,
        night,
        started=started,
        executed=executed,
        finished=time.time(),
        provider=provider.description,
        baseline=str(base_dir) if base_dir else None,
        exit_code=error.exit_code if error else 0,
        interrupted=interrupted,
        report=report,
        notes=notes,
    )
    outputs.write_summary(night, data)
    outputs.write_junit(plan, results, night / "junit.xml")
    return Night(night, data, results, report, error, notes)


def _verdict(
    plan: Plan,
    results: list[JobResult],
    night: Path,
    base_dir: Path | None,
    interrupted: bool,
    allow_skipped: bool,
) -> EdgetoolError | None:
    """The error the night ends with: interrupted, a regression, jobs that failed or could
    not run (skipped: an unhealthy device), or none. A night that did not run its jobs is
    not green: skipped jobs fail it unless `allow_skipped`."""
    c = outputs.counts(results)
    skipped = 0 if allow_skipped else c["skipped"]
    if interrupted:
        return Interrupted(f"interrupted: outputs for the finished jobs are in {night}")
    if c["regressed"]:
        names = [f"{r.job.model} on {r.job.slot}" for r in results if r.status == "regressed"]
        more = f" (and {c['failed']} failed)" if c["failed"] else ""
        return Regression(
            f"{c['regressed']} regression(s) beyond {100 * plan.regression.threshold:g} % "
            f"against {base_dir}: {'; '.join(names[:3])}{more}"
        )
    if c["failed"] or skipped:
        parts = [f"{c['failed']} of {c['total']} jobs failed"] if c["failed"] else []
        if skipped:
            parts.append(f"{skipped} of {c['total']} jobs could not run (skipped)")
        return JobsFailed(f"{', '.join(parts)}; see {night / outputs.SUMMARY}")
    return None
