"""What a night leaves behind: summary.json, JUnit XML, the HTML report, the comparison.

The statistics are `results.compare`'s (the same rules as `edgetool results compare`);
this module only maps its verdicts onto jobs and writes files CI systems understand.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetool.errors import ResultsError
from edgetool.farm.execute import JobResult
from edgetool.farm.plan import Plan
from edgetool.files import write_json_atomic
from edgetool.results.store import MANIFEST, Run, iter_run_dirs, load_run

if TYPE_CHECKING:  # the report module imports matplotlib: only a night's end pays for it
    from edgetool.results.report import JobRow

STATUSES = ("passed", "failed", "skipped", "regressed")
SUMMARY = "summary.json"


def night_name(plan: Plan, when: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(when))
    return f"{plan.name}-{stamp}"


def night_runs(night: Path) -> list[Path]:
    """Run directories of a night (`DIR/runs/*`), or of a plain directory of runs."""
    if (night / MANIFEST).is_file():
        return [night]
    found = list(iter_run_dirs(night / "runs")) or list(iter_run_dirs(night))
    return found


def latest_nights(
    nights_root: Path, plan: Plan, exclude: Path | None = None, count: int = 1
) -> list[Path]:
    """The newest `count` earlier nights of this plan that finished (have a summary),
    oldest first."""
    if not nights_root.is_dir():
        return []
    candidates = sorted(
        d
        for d in nights_root.glob(f"{plan.name}-*")
        if (d / SUMMARY).is_file() and (exclude is None or d.resolve() != exclude.resolve())
    )
    return candidates[-count:]


def latest_night(nights_root: Path, plan: Plan, exclude: Path | None = None) -> Path | None:
    """The newest earlier night of this plan that finished (has a summary)."""
    found = latest_nights(nights_root, plan, exclude)
    return found[-1] if found else None


def apply_baseline(
    results: Sequence[JobResult], baseline: Path, plan: Plan, older: Sequence[Path] = ()
) -> dict[str, Any]:
    """Compare this night's passed runs against the baseline night (pooled with `older`
    nights, when the plan asks for several); record each pair's verdict, mark regressions.

    Pairs by (artifact name, format, quant, target) exactly like `results compare`, with
    the same statistics: repetitions, and Holm's correction over the night's pairs.
    """
    from edgetool.results.compare import CompareSettings, compare_sets

    dirs = night_runs(baseline)
    if not dirs:
        raise ResultsError(f"no runs in baseline {baseline}")
    base_runs = [load_run(d) for d in dirs]
    older_runs = [[load_run(d) for d in night_runs(night)] for night in older]
    by_dir: dict[str, JobResult] = {}
    new_runs: list[Run] = []
    for result in results:
        if result.status == "passed" and result.run_dir:
            run = load_run(Path(result.run_dir))
            new_runs.append(run)
            by_dir[str(run.dir)] = result
    reg = plan.regression
    settings = CompareSettings(
        threshold=reg.threshold, alpha=reg.alpha, metric=reg.metric, correction=reg.correction
    )
    comparison = compare_sets(base_runs, new_runs, settings, older_runs)
    for pair in comparison.pairs:
        matched = by_dir.get(pair.new_dir)
        if matched is None:
            continue
        result = matched
        result.comparison = pair.to_dict()
        result.verdict = pair.verdict
        result.regressions = list(pair.regressions)
        if pair.regressions:
            result.status = "regressed"
    return {
        "baseline": str(baseline),
        "baseline_nights": [str(n) for n in (*older, baseline)],
        **comparison.to_dict(),
    }


def counts(results: Sequence[JobResult]) -> dict[str, int]:
    out = {status: 0 for status in STATUSES}
    for result in results:
        out[result.status] = out.get(result.status, 0) + 1
    out["total"] = len(results)
    return out


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def job_dict(result: JobResult) -> dict[str, Any]:
    job = result.job
    return {
        "id": job.id,
        "index": job.index,
        "target": job.target,
        "place": result.place or job.place,
        "model": job.model,
        "status": result.status,
        "attempts": len(result.attempts),
        "attempt_log": [a.to_dict() for a in result.attempts],
        "started": _iso(result.started),
        "finished": _iso(result.finished),
        "duration_s": round(result.seconds, 3),
        "place_wait_s": round(result.place_wait, 3),
        "health_check_s": result.health_s,
        "run_id": result.run_id,
        "run_dir": result.run_dir,
        "p50_ms": result.p50_ms,
        "error": result.error,
        "failure": result.failure,
        "reason": result.reason,
        "regressions": result.regressions,
        "verdict": result.verdict,
        "comparison": result.comparison,
        "argv": ["edgetool", *job.argv()],
    }


def summary(
    plan: Plan,
    results: Sequence[JobResult],
    night: Path,
    *,
    started: float,
    executed: float,
    finished: float,
    provider: str,
    baseline: str | None,
    exit_code: int,
    interrupted: bool,
    report: Path | None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "schema": 1,
        "plan": plan.name,
        "plan_file": str(plan.source),
        "description": plan.description,
        "night_dir": str(night),
        "started": _iso(started),
        "finished": _iso(finished),
        "duration_s": round(finished - started, 3),
        "execute_s": round(executed - started, 3),
        "places": provider,
        "baseline": baseline,
        "regression": {
            "threshold": plan.regression.threshold,
            "alpha": plan.regression.alpha,
            "metric": plan.regression.metric,
        },
        "interrupted": interrupted,
        "counts": counts(results),
        "exit_code": exit_code,
        "report": str(report) if report else None,
        "notes": list(notes),
        "jobs": [job_dict(r) for r in results],
    }


def write_summary(night: Path, data: dict[str, Any]) -> Path:
    path = night / SUMMARY
    write_json_atomic(path, data)
    return path


def change_text(result: JobResult) -> str:
    """The latency change as a percentage with its CI: `+2.2 % [+0.8, +3.6] 95% CI`
    (from the comparison's effect; its ratio CI turned into percentages), else `—`."""
    comparison = result.comparison or {}
    effect = comparison.get("effect") or {}
    change = effect.get("change")
    if change is None:
        change = (comparison.get("latency") or {}).get("change")
    if not isinstance(change, (int, float)):
        return "—"
    text = f"{100 * change:+.1f} %"
    ci = effect.get("ci")
    if isinstance(ci, list) and len(ci) == 2:
        lo, hi = (100 * (v - 1) for v in ci)
        confidence = effect.get("confidence")
        level = f" {100 * confidence:g}% CI" if isinstance(confidence, (int, float)) else " CI"
        text += f" [{lo:+.1f}, {hi:+.1f}]{level}"
    return text


def log_paths(result: JobResult) -> list[Path]:
    """The last attempt's captured stderr and stdout (what a reader opens first)."""
    if not result.attempts or not result.attempts[-1].log:
        return []
    log = Path(result.attempts[-1].log)
    return [path for path in (log.with_suffix(".err"), log.with_suffix(".out")) if path.exists()]


def junit_xml(
    plan: Plan, results: Sequence[JobResult], when: float | None = None
) -> ET.ElementTree[ET.Element]:
    """One testcase per job: classname = target (or place), name = model spec; the junit-10
    dialect Jenkins and GitLab validate against (tests/fixtures/junit-10.xsd).

    A job that could not run (device error, timeout, crash) is an <error>; a regression
    beyond the threshold against the baseline is a <failure>; a job on an unhealthy
    device (or never started after Ctrl-C) is <skipped>. CI test views count them apart.
    junit-10 allows properties only on the suite and `skipped` only on <testsuite>, so each
    job's facts (run, verdict, change, its log) go into its <system-out>.
    """
    c = counts(results)
    total = sum(r.seconds for r in results)
    attrs = {
        "name": plan.name,
        "tests": str(c["total"]),
        "failures": str(c["regressed"]),
        "errors": str(c["failed"]),
        "time": f"{total:.3f}",
    }
    root = ET.Element("testsuites", attrs)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() if when is None else when))
    suite = ET.SubElement(
        root, "testsuite", {**attrs, "skipped": str(c["skipped"]), "timestamp": stamp}
    )
    props = ET.SubElement(suite, "properties")
    reg = plan.regression
    for name, value in (
        ("plan", str(plan.source)),
        ("regression_threshold", f"{100 * reg.threshold:g} %"),
        ("regression_metric", reg.metric),
        ("regression_alpha", f"{reg.alpha:g}"),
    ):
        ET.SubElement(props, "property", {"name": name, "value": str(value)})
    for result in results:
        _testcase(suite, plan, result)
    ET.indent(root)
    return ET.ElementTree(root)


def _testcase(suite: ET.Element, plan: Plan, result: JobResult) -> None:
    job = result.job
    case = ET.SubElement(
        suite,
        "testcase",
        {"classname": result.place or job.slot, "name": job.model, "time": f"{result.seconds:.3f}"},
    )
    change = change_text(result)
    if result.status == "failed":
        error = ET.SubElement(
            case, "error", {"type": result.failure or "error", "message": result.error or ""}
        )
        error.text = "\n".join(
            f"attempt {a.number}: {a.status}: {a.error or 'ok'}"
            + (f" (then {a.recovery})" if a.recovery else "")
            for a in result.attempts
        )
    elif result.status == "regressed":
        failure = ET.SubElement(
            case,
            "failure",
            {
                "type": "regression",
                "message": f"regression beyond {100 * plan.regression.threshold:g} %: "
                + ", ".join(result.regressions)
                + (f" (latency {change})" if change != "—" else ""),
            },
        )
        comparison = result.comparison or {}
        latency = comparison.get("latency") or {}
        effect = comparison.get("effect") or {}
        before, after = latency.get("before"), latency.get("after")
        figures = (
            f"{before:.4g} -> {after:.4g} {latency.get('unit', '')}"
            if isinstance(before, (int, float)) and isinstance(after, (int, float))
            else "figures unknown"
        )
        failure.text = (
            f"{latency.get('name', 'latency')}: {figures}, change {change}"
            + _p_text("p", effect.get("p"))
            + _p_text("Holm-adjusted p", effect.get("p_adjusted"))
        )
    elif result.status == "skipped":
        ET.SubElement(case, "skipped", {"message": result.reason or "skipped"})
    lines = [f"target: {job.target}", f"place: {result.place or job.place}"]
    if result.run_dir:
        lines.append(f"run: {result.run_dir}")
    if result.p50_ms is not None:
        lines.append(f"p50: {result.p50_ms:.4g} ms")
    if result.verdict:
        reason = (result.comparison or {}).get("reason")
        lines.append(f"comparison: {result.verdict}" + (f" ({reason})" if reason else ""))
    if change != "—":
        lines.append(f"latency change: {change}")
    lines.append(f"attempts: {len(result.attempts)}")
    lines.extend(f"log: {path}" for path in log_paths(result))
    out = ET.SubElement(case, "system-out")
    out.text = "\n".join(lines)


def _p_text(name: str, value: Any) -> str:
    return f", {name} {value:.3g}" if isinstance(value, (int, float)) else ""


def write_junit(plan: Plan, results: Sequence[JobResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_xml(plan, results).write(path, encoding="utf-8", xml_declaration=True)


ORDER = {"regressed": 0, "failed": 1, "skipped": 2}
"""A night's table leads with what needs a person: regressions, failures, skips, then
undecided comparisons, then the rest (each group in plan order)."""


def night_order(results: Sequence[JobResult]) -> list[JobResult]:
    def rank(result: JobResult) -> int:
        if result.status in ORDER:
            return ORDER[result.status]
        return 3 if result.verdict in ("inconclusive", "not comparable") else 4

    return sorted(results, key=rank)


def job_rows(results: Sequence[JobResult], report: Path, run_index: dict[str, int]) -> list[JobRow]:
    """The night's jobs for the report's table, in `night_order`, logs linked relative to
    the report (the night directory travels as one CI artifact)."""
    from edgetool.results.report import JobRow

    rows = []
    for result in night_order(results):
        if result.status == "failed":
            verdict = f"{result.failure or 'error'}: {result.error or ''}".rstrip(": ")
        elif result.status == "skipped":
            verdict = result.reason or "skipped"
        else:
            verdict = _verdict_text(result) if result.verdict else "passed (no comparison)"
        logs = tuple(
            ("stderr" if path.suffix == ".err" else "stdout", _relative(path, report))
            for path in log_paths(result)
        )
        index = run_index.get(str(Path(result.run_dir))) if result.run_dir else None
        rows.append(
            JobRow(
                status=result.status,
                model=result.job.model,
                target=result.place or result.job.slot,
                verdict=verdict,
                change=change_text(result),
                logs=logs,
                run=index,
            )
        )
    return rows


def _relative(path: Path, report: Path) -> str:
    try:
        return os.path.relpath(path, report.parent)
    except ValueError:  # another drive (Windows)
        return path.resolve().as_uri()


def write_night_report(plan: Plan, results: Sequence[JobResult], path: Path) -> Path | None:
    """The night in one HTML file: every job first (regressions, failures and skips on
    top), then the runs (the same report as `edgetool report`)."""
    from edgetool.results.report import write_report

    if not results:
        return None
    runs = [
        load_run(Path(r.run_dir))
        for r in results
        if r.status in ("passed", "regressed") and r.run_dir and Path(r.run_dir).is_dir()
    ]
    verdicts = {str(Path(r.run_dir)): _verdict_text(r) for r in results if r.run_dir and r.verdict}
    run_index = {str(run.dir): i for i, run in enumerate(runs)}
    c = counts(results)
    title = (
        f"edgetool night — {plan.name}: {c['regressed']} regressed, {c['failed']} failed, "
        f"{c['skipped']} skipped, {c['passed']} passed"
    )
    rows = job_rows(results, path, run_index)
    write_report(runs, path, title, verdicts if verdicts else None, rows)
    return path


def _verdict_text(result: JobResult) -> str:
    """`regression +8.1 % [+4.0, +12.3] 95% CI` or `inconclusive (why)`."""
    comparison = result.comparison or {}
    text = str(result.verdict)
    change = change_text(result)
    if change != "—":
        text += f" {change}"
    if result.verdict in ("inconclusive", "not comparable") and comparison.get("reason"):
        text += f" ({comparison['reason']})"
    return text
