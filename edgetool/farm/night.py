"""One night of a plan: execute the jobs, compare with a baseline, write every output.

The CLI only parses options and prints; this is what `farm run` does, usable from code.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Sequence
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
from edgetool.farm.execute import Executor, JobResult
from edgetool.farm.execute import Observer as ExecutorObserver
from edgetool.farm.places import PlaceProvider
from edgetool.farm.plan import Job, Plan
from edgetool.results.store import write_json_atomic


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


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_night(
    plan: Plan,
    jobs: list[Job],
    provider: PlaceProvider,
    night: Path,
    *,
    baseline: str | None = None,
    baseline_count: int | None = None,
    strict: bool = False,
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
    base_dir = base_nights[-1] if base_nights else None
    night.mkdir(parents=True, exist_ok=True)
    executor = Executor(plan, jobs, provider, night, observer=observer, targets_dirs=targets_dirs)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupted = False
    try:
        executor.start()
        executor.wait()
        executed = time.time()
    except KeyboardInterrupt:
        executed = time.time()
        interrupted = True
        say("interrupted: stopping running jobs, releasing places …")
        with contextlib.suppress(KeyboardInterrupt):  # a 2nd Ctrl-C: write outputs now
            executor.interrupt()
    finally:
        signal.signal(signal.SIGTERM, previous)
    results = executor.ordered()
    for result in results:
        if result.status == "pending":  # a worker still blocked waiting for a place
            result.status, result.reason = "skipped", "interrupted before it ran"
    notes = [base_note] if base_note else []
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
    error = _verdict(plan, results, night, base_dir, interrupted, strict)
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
    strict: bool,
) -> EdgetoolError | None:
    """The error the night ends with: interrupted, a regression, failed jobs, or none."""
    c = outputs.counts(results)
    failed = c["failed"] + (c["skipped"] if strict else 0)
    if interrupted:
        return Interrupted(f"interrupted: outputs for the finished jobs are in {night}")
    if c["regressed"]:
        names = [f"{r.job.model} on {r.job.slot}" for r in results if r.status == "regressed"]
        more = f" (and {c['failed']} failed)" if c["failed"] else ""
        return Regression(
            f"{c['regressed']} regression(s) beyond {100 * plan.regression.threshold:g} % "
            f"against {base_dir}: {'; '.join(names[:3])}{more}"
        )
    if failed:
        what = f"{c['failed']} of {c['total']} jobs failed"
        if strict and c["skipped"]:
            what += f", {c['skipped']} skipped (--strict)"
        return JobsFailed(f"{what}; see {night / outputs.SUMMARY}")
    return None
