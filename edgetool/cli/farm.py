"""`edgetool farm`: run a nightly plan (models × targets) over many devices.

`show` expands the matrix without touching a device, so a lab can review a plan change
in a PR; `run` executes it with one worker per place and leaves a night directory that
CI uploads (runs, summary.json, JUnit XML, HTML report).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgetool import paths
from edgetool.cli.common import emit_json, json_option, targets_dirs

if TYPE_CHECKING:
    from edgetool.farm.execute import Attempt, JobResult
    from edgetool.farm.places import PlaceProvider
    from edgetool.farm.plan import Job, Plan

coordinator_option = click.option(
    "--coordinator",
    metavar="HOST:PORT",
    default=lambda: os.environ.get("EDGETOOL_COORDINATOR") or None,
    show_default="$EDGETOOL_COORDINATOR; without one: local locks on this host",
    help="labgrid coordinator that hands out places.",
)


@click.group("farm")
def command() -> None:
    """Run nightly plans over many devices.

    \b
    A plan (TOML) is a matrix of models (formats, quantizations) × targets (by name or
    by labgrid tags), with run settings, retries and regression thresholds:
      edgetool farm show examples/nightly-local.toml
      edgetool farm run examples/nightly-local.toml --junit out.xml
    """


def _load(path: Path, ctx: click.Context) -> Plan:
    from edgetool.farm.plan import check_targets, load_plan

    plan = load_plan(path)
    check_targets(plan, targets_dirs(ctx))
    return plan


def _provider(coordinator: str | None) -> PlaceProvider:
    from edgetool.farm.places import open_places

    return open_places(coordinator)


def _emulated(target: str, ctx: click.Context) -> bool:
    from edgetool.errors import ConfigError
    from edgetool.targets import load_target

    try:
        return load_target(target, targets_dirs(ctx)).emulator is not None
    except ConfigError:
        return False


@command.command("show")
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False, path_type=Path))
@coordinator_option
@json_option
@click.pass_context
def show(ctx: click.Context, plan_file: Path, coordinator: str | None, as_json: bool) -> None:
    """Expand PLAN into jobs and say which run where, without running anything.

    Tag targets are resolved through the places provider (labgrid with --coordinator);
    named targets need no coordinator.
    """
    from edgetool.farm.plan import expand, slots, unmatched_tags

    plan = _load(plan_file, ctx)
    provider = _provider(coordinator) if any(t.tags for t in plan.targets) else None
    jobs = expand(plan, provider)
    warnings = unmatched_tags(plan, provider)
    grouped = slots(jobs)
    if as_json:
        emit_json(
            {
                "plan": plan.name,
                "plan_file": str(plan.source),
                "description": plan.description,
                "places": provider.description if provider else "by target name",
                "run": {
                    "iterations": plan.run.iterations,
                    "duration": plan.run.duration,
                    "energy": plan.run.energy,
                    "repeat": plan.run.repeat,
                    "timeout": plan.run.timeout,
                    "priority": plan.priority,
                    "place_timeout": plan.place_timeout,
                },
                "retry": {
                    "retries": plan.retry.retries,
                    "on": list(plan.retry.on),
                    "recover": list(plan.retry.recover),
                    "backoff": plan.retry.backoff,
                },
                "regression": {
                    "threshold": plan.regression.threshold,
                    "alpha": plan.regression.alpha,
                    "metric": plan.regression.metric,
                    "baseline": plan.regression.baseline,
                    "baseline_nights": plan.regression.baseline_nights,
                    "correction": plan.regression.correction,
                },
                "jobs": len(jobs),
                "workers": [
                    {
                        "slot": slot,
                        "target": group[0].target,
                        "place": group[0].place,
                        "emulated": _emulated(group[0].target, ctx),
                        "jobs": [
                            {"id": j.id, "model": j.model, "argv": ["edgetool", *j.argv()]}
                            for j in group
                        ],
                    }
                    for slot, group in grouped.items()
                ],
                "warnings": warnings,
            }
        )
        return
    head = f"plan {plan.name}  ({plan.source})"
    click.echo(head + (f"\n  {plan.description}" if plan.description else ""))
    click.echo(
        f"{len(jobs)} job{'s' if len(jobs) != 1 else ''} on {len(grouped)} "
        f"worker{'s' if len(grouped) != 1 else ''} (in parallel; one job at a time per place)"
    )
    r = plan.retry
    click.echo(
        f"each job: {plan.run.describe()}; retries {r.retries} on {', '.join(r.on) or 'nothing'}"
        f" (power-cycle/restart after {', '.join(r.recover) or 'nothing'})"
    )
    reg = plan.regression
    nights = f" (last {reg.baseline_nights} nights pooled)" if reg.baseline_nights > 1 else ""
    click.echo(
        f"regression: repetition medians beyond {100 * reg.threshold:g} % at alpha {reg.alpha:g}"
        f" ({reg.correction} over the night's pairs)"
        f" vs {reg.baseline or 'no baseline (give --baseline)'}{nights}"
    )
    for group in grouped.values():
        first = group[0]
        where = f"place {first.place} as target {first.target}" if first.place else first.target
        emu = "  (emulated)" if _emulated(first.target, ctx) else ""
        click.echo(f"\n{where}{emu}")
        for job in group:
            override = f"  [{job.run.describe()}]" if job.run != plan.run else ""
            click.echo(f"  {job.index + 1:>3}. {job.model}{override}")
    for warning in warnings:
        click.echo(f"\nwarning: {warning}", err=True)


class LineProgress:
    """Progress lines on stderr: readable live and in a CI log (no cursor tricks)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def _say(self, mark: str, slot: str, model: str, text: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.t0
        with self.lock:
            click.echo(
                f"{elapsed:6.1f}s [{self.done}/{self.total}] {mark} {slot:<14} {model:<22} {text}",
                err=True,
            )

    def health(self, slot: str, target: str, ok: bool, detail: str) -> None:
        if not ok:
            self._say("!", slot, "", f"unhealthy: {detail}")

    def started(self, job: Job, place: str, attempt: int) -> None:
        where = f" on place {place}" if place and place != job.slot else ""
        self._say("▶", job.slot, job.model, f"started (attempt {attempt}){where}")

    def retrying(self, job: Job, attempt: Attempt, recovery: str | None) -> None:
        then = f"; {recovery}" if recovery else ""
        self._say("↻", job.slot, job.model, f"retrying: {attempt.error}{then}")

    def finished(self, result: JobResult) -> None:
        with self.lock:
            self.done += 1
        job = result.job
        if result.status == "passed":
            p50 = f"p50 {result.p50_ms:.4g} ms  " if result.p50_ms is not None else ""
            self._say("✓", job.slot, job.model, f"passed  {p50}{result.seconds:.1f} s")
        elif result.status == "skipped":
            self._say("–", job.slot, job.model, f"skipped: {result.reason}")
        else:
            tries = len(result.attempts)
            self._say(
                "✗",
                job.slot,
                job.model,
                f"failed after {tries} attempt{'s' if tries != 1 else ''}: {result.error}",
            )


@command.command("run")
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False, path_type=Path))
@coordinator_option
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Night directory [<results>/nights/<plan>-<UTC time>/].",
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write JUnit XML here (always written as junit.xml in the night directory).",
)
@click.option(
    "--baseline",
    metavar="DIR|latest",
    help="Night to compare against [plan's regression.baseline]; `latest`: the newest "
    "earlier night of this plan beside this one.",
)
@click.option(
    "--baseline-nights",
    type=click.IntRange(min=1),
    default=None,
    help="With --baseline latest: pool each pair's runs from the newest K earlier nights "
    "[plan's regression.baseline_nights, 1].",
)
@click.option(
    "--allow-skipped",
    is_flag=True,
    help="Jobs skipped on an unhealthy device do not fail the night (they do by default).",
)
@click.option("--strict", is_flag=True, hidden=True, help="The default now; kept for old scripts.")
@json_option
@click.pass_context
def run(
    ctx: click.Context,
    plan_file: Path,
    coordinator: str | None,
    out: Path | None,
    junit: Path | None,
    baseline: str | None,
    baseline_nights: int | None,
    allow_skipped: bool,
    strict: bool,
    as_json: bool,
) -> None:
    """Run every job of PLAN: places in parallel, jobs on a place one after another.

    Each job is an `edgetool deploy ... --json` process with the place's environment;
    its run directory lands in NIGHT/runs/. A device is health-checked (`targets check`)
    before its first job; an unhealthy one is power-cycled (an emulator that runs is
    restarted) and checked again, and if still unhealthy its jobs are skipped with the
    reason. A job
    that hangs is killed at the plan's timeout, the device power-cycled (an emulated one
    restarted) and the job retried as the plan says. One failure never stops the rest.
    Ctrl-C stops running jobs (a second one, a second later, kills them), waits until they
    are gone, releases the places and still writes the outputs. A farm that was killed
    cannot free a board before its job is gone: the job holds the place's lock and ends
    when the farm dies; with a coordinator, the next night releases what it left acquired.

    \b
    With a baseline, each pair is compared as `results compare` does (repetition medians,
    Holm's correction over the night's pairs) and gets a verdict: regression, improvement,
    no change, inconclusive or not comparable. Only a regression fails the night.

    \b
    Writes NIGHT/summary.json, NIGHT/junit.xml, NIGHT/report.html (and comparison.json
    with a baseline). Exit 0: all passed; 10: a regression against the baseline;
    12: a job failed or could not run (skipped; not with --allow-skipped); 130:
    interrupted; 5: bad plan.
    """
    from edgetool.farm import outputs
    from edgetool.farm.night import run_night
    from edgetool.farm.plan import expand, unmatched_tags

    plan = _load(plan_file, ctx)
    provider = _provider(coordinator)
    jobs = expand(plan, provider)
    night = (
        out or paths.results_dir() / "nights" / outputs.night_name(plan, time.time())
    ).absolute()
    if (night / outputs.SUMMARY).exists():
        raise click.UsageError(f"{night} already holds a night (summary.json); pick another --out")
    if not as_json:
        click.echo(
            f"night {plan.name}: {len(jobs)} jobs → {night}/  (places: {provider.description})",
            err=True,
        )
        for warning in unmatched_tags(plan, provider):
            click.echo(f"warning: {warning}", err=True)
    done = run_night(
        plan,
        jobs,
        provider,
        night,
        baseline=baseline,
        baseline_count=baseline_nights,
        allow_skipped=allow_skipped and not strict,
        observer=LineProgress(len(jobs), enabled=not as_json),
        targets_dirs=targets_dirs(ctx),
        say=(lambda text: None) if as_json else (lambda text: click.echo(text, err=True)),
    )
    if not as_json:
        for note in done.notes:
            click.echo(f"note: {note}", err=True)
    if junit is not None:
        outputs.write_junit(plan, done.results, junit)
    if as_json:
        emit_json(done.summary)
    else:
        _print_night(done.summary, night, junit, done.report)
    if done.error is not None:
        raise done.error


def _print_night(
    data: dict[str, Any], night: Path, junit: Path | None, report: Path | None
) -> None:
    c = data["counts"]
    click.echo(
        f"\n{c['total']} jobs: {c['passed']} passed, {c['regressed']} regressed, "
        f"{c['failed']} failed, {c['skipped']} skipped  in {data['duration_s']:.1f} s"
    )
    width = max((len(j["place"] or j["target"]) for j in data["jobs"]), default=6)
    for job in data["jobs"]:
        detail = ""
        if job["status"] in ("passed", "regressed") and job["p50_ms"] is not None:
            detail = f"p50 {job['p50_ms']:.4g} ms"
            if job.get("verdict"):
                change = ((job.get("comparison") or {}).get("effect") or {}).get("change")
                detail += f"  {job['verdict']}" + (
                    f" ({100 * change:+.1f} %)" if change is not None else ""
                )
            if job["regressions"]:
                detail += "  ▲ " + ", ".join(job["regressions"])
        elif job["status"] == "failed":
            detail = job["error"] or ""
        elif job["status"] == "skipped":
            detail = job["reason"] or ""
        where = job["place"] or job["target"]
        click.echo(f"  {job['status']:<9} {where:<{width}}  {job['model']:<24} {detail}")
    click.echo(f"\nnight   {night}/")
    click.echo(f"summary {night / 'summary.json'}")
    click.echo(f"junit   {junit or night / 'junit.xml'}")
    if report is not None:
        click.echo(f"report  file://{report}")
