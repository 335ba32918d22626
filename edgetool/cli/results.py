"""`edgetool results`: look at runs already measured (complete or partial)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgetool import paths
from edgetool.cli.common import (
    console,
    emit_json,
    json_option,
    no_short_o,
    old_name,
    print_whole,
    results_dir_option,
)
from edgetool.errors import ResultsError
from edgetool.results.compare import (
    DETERMINISTIC_PREFIX,
    METRICS,
    PairComparison,
    SetComparison,
)
from edgetool.results.manifest import (
    EnergyFigure,
    EnergySummary,
    InputInfo,
    LatencySummary,
    RepetitionSummary,
    RunManifest,
    Summary,
    TargetInfo,
)
from edgetool.results.op_profile import OpProfile, OpRow, read_op_profile, top
from edgetool.results.store import Run, find_run, iter_run_dirs, load_run
from edgetool.units import human_bytes, latency_unit

F = TypeVar("F", bound=Callable[..., Any])


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def instruction_counts(target: TargetInfo) -> bool:
    """The run's times are emulated instruction counts (QEMU -icount), not time."""
    return (target.time_base or "").startswith(DETERMINISTIC_PREFIX)


def _latency_cell(value_ms: float | None, instructions: bool) -> str:
    """`0.412 ms`, or `64.42 k instr` on an instruction time base."""
    if value_ms is None:
        return "—"
    name, scale = latency_unit(value_ms, instructions)
    return f"{_num(value_ms * scale)} {name}"


def _mj(figure: EnergyFigure | None, what: str) -> str:
    """`0.73 mJ/inference dynamic [0.71, 0.75]`: the mean, what it is, its CI."""
    if not figure:
        return f"— {what}"
    ci = figure.ci
    interval = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
    return f"{figure.mean:.4g} {what}{interval}"


def energy_lines(energy: EnergySummary | None) -> list[str]:
    """`energy  0.73 mJ/inference dynamic (1.98 mJ total), idle 2.71 W — meter: ...`"""
    if energy is None:
        return []
    if energy.error is not None:
        return [f"  energy  [red]not measured[/red]: {energy.error} — meter: {energy.meter}"]
    kind = "[yellow]ESTIMATE[/yellow] " if energy.estimate else ""
    idle = f", idle {energy.idle_w:.3g} W" if energy.idle_w is not None else ""
    lines = [
        f"  energy  {kind}{_mj(energy.dynamic_mj, 'mJ/inference dynamic')} "
        f"({_mj(energy.total_mj, 'mJ total')}){idle} — meter: {energy.meter}"
    ]
    alignment = energy.alignment
    if alignment is not None and alignment.method == "round-trip":
        drift = alignment.drift_ns
        lines.append(
            f"  clock   device→meter offset ±{(alignment.uncertainty_ns or 0) / 1e3:.0f} µs"
            + (f", drift {drift / 1e3:+.0f} µs over the run" if drift is not None else "")
        )
    if energy.note:
        lines.append(f"  [dim]note: {energy.note}[/dim]")
    return lines


def _tail_note(beyond: float | None) -> str:
    """How many samples stand beyond a tail percentile, when too few to trust it."""
    if beyond is None or beyond >= 10:
        return ""
    if beyond < 1:
        return (
            f"  [dim](n too small: {beyond:g} samples beyond; the largest values, not a tail)[/dim]"
        )
    return f"  [dim](~{beyond:g} samples beyond it)[/dim]"


def repetition_lines(
    reps: RepetitionSummary | None, unit: str = "latency (ms)", scale: float = 1.0
) -> list[str]:
    """The run-level estimate: what a rerun would see, with its uncertainty (values in ms,
    times SCALE: the unit's factor from ms)."""
    if reps is None:
        return [
            "\n  [dim]one repetition (a run from before repetitions): uncertainty unknown[/dim]"
        ]
    kind = "fresh processes" if reps.kind == "process" else "measurement windows"
    count = reps.count
    ci = reps.ci
    if ci:
        spread = (
            f"  [{ci[0] * scale:.4g}, {ci[1] * scale:.4g}] "
            f"{round(100 * (reps.confidence or 0))}% CI"
        )
    else:
        spread = "  uncertainty: unknown (one repetition)"
    medians = ", ".join(f"{m * scale:.4g}" for m in reps.medians_ms or [])
    estimate = float("nan") if reps.estimate_ms is None else reps.estimate_ms * scale
    return [
        f"\n  {unit}, run estimate over {count} repetition{'s' if count != 1 else ''} ({kind})",
        f"  median {estimate:10.4g}{spread}",
        f"  [dim]repetition medians: {medians} — {reps.method}[/dim]",
    ]


def print_summary(manifest: RunManifest, summary: Summary | None) -> None:
    """The latency table a user reads after a run (shared by deploy and results show)."""
    out = console()
    status = manifest.status or "?"
    target = manifest.target_info
    if target.emulated:
        out.print("[yellow]emulated device: times are emulator times, not device times[/yellow]")
    if target.synthetic:
        out.print(
            "[yellow]SYNTHETIC: a test peer answered, not a device; not real figures[/yellow]"
        )
    if target.time_base:
        out.print(f"time base: {target.time_base}")
    parity = summary.parity if summary else None
    if parity:
        verdict = "ok" if parity.ok else "[red]MISMATCH[/red]"
        out.print(f"parity vs {parity.reference}: {verdict}, max abs {parity.max_abs}")
        if parity.top1_agreement is not None:
            out.print(f"  top-1 agreement with the reference: {parity.top1_agreement:.0%}")
    top1 = summary.top1 if summary else None
    if top1 and top1.label is not None:
        out.print(
            f"top-1  class {top1.label} (score {top1.score:.4g}) in {top1.agreement or 0:.0%} of "
            f"{top1.count} inferences · {top1.classes} scores each (the device's m-results)"
        )
    if status != "complete":
        reason = f" ({manifest.error})" if manifest.error else ""
        out.print(f"[yellow]status: {status}{reason}[/yellow]")
    if not summary:
        out.print("no samples were recorded")
        return
    lat = summary.latency_info
    gen = summary.generation
    if gen:
        out.print(
            f"\n  generation ({gen.generations}×, {gen.prompt_tokens}-token prompt, "
            f"{gen.new_tokens} new tokens, greedy)"
        )
        out.print(f"  time to first token  {gen.ttft_ms:10.2f} ms")
        if gen.prefill_tokens_per_s is not None:
            out.print(f"  prefill              {gen.prefill_tokens_per_s:10.1f} tokens/s")
        if gen.decode_tokens_per_s is not None:
            out.print(f"  decode               {gen.decode_tokens_per_s:10.1f} tokens/s")
    instructions = instruction_counts(target)
    name, scale = latency_unit(lat.p50, instructions)

    def fmt(value: float | None) -> str:
        return _fmt(None if value is None else value * scale)

    unit = f"decode step latency ({name})" if gen else f"latency ({name})"
    for line in repetition_lines(summary.repetitions, unit, scale):
        out.print(line)
    # A runner that reports aggregates only (benchmark_model) has no percentiles: say so
    # plainly rather than printing blanks.
    aggregate = lat.aggregate_only
    note = f"  [dim]{lat.source}: aggregates only, no percentiles[/dim]" if aggregate else ""
    out.print(f"\n                 per inference, n={lat.count}{note}")
    if not aggregate:
        support = lat.tail_support or {}
        out.print(f"  p50   {fmt(lat.p50):>10}")
        for key, value in (
            ("p90", lat.p90),
            ("p95", lat.p95),
            ("p99", lat.p99),
            ("p999", lat.p999),
        ):
            out.print(f"  {key:<5} {fmt(value):>10}{_tail_note(support.get(key))}")
    out.print(f"  min   {fmt(lat.min):>10}")
    out.print(f"  max   {fmt(lat.max):>10}")
    out.print(f"  mean  {fmt(lat.mean):>10} ± {fmt(lat.std)}")
    if summary.throughput_per_s and not instructions:  # a rate per second of what clock?
        out.print(f"  rate  {summary.throughput_per_s:>10.1f} inferences/s")
    if summary.first_inference_ms is not None:
        out.print(f"  first {fmt(summary.first_inference_ms):>10}  (cold, not in stats)")
    if aggregate and summary.load_ms is not None:
        out.print(f"  init  {_fmt(summary.load_ms):>10}  (interpreter set-up)")
    if summary.peak_rss:
        what = "footprint (benchmark_model's estimate)" if aggregate else "peak"
        out.print(f"  rss   {human_bytes(summary.peak_rss):>10}  {what}")
    for line in energy_lines(summary.energy):
        out.print(line)
    before, after = manifest.env_before or {}, manifest.env_after or {}
    if before.get("temp_c") is not None and after.get("temp_c") is not None:
        throttle = after.get("throttled")
        out.print(
            f"  temp  {before['temp_c']:.1f} → {after['temp_c']:.1f} °C"
            + (f", throttled={throttle}" if throttle else "")
        )
    for warning in lat.unstable or []:
        out.print(f"[yellow]  unstable: {warning}[/yellow]")


@click.group()
def command() -> None:
    """List, show and export runs."""


@command.command("list")
@results_dir_option
@no_short_o
@json_option
def list_runs(root: Path | None, as_json: bool) -> None:
    """List runs, newest last."""
    base = root or paths.results_dir()
    rows: list[dict[str, Any]] = []
    for run_dir in iter_run_dirs(base):
        run = load_run(run_dir)
        lat = run.summary.latency_info if run.summary else LatencySummary()
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "status": run.status,
            "target": run.manifest.target_info.name,
            "model": run.manifest.artifact_info.name,
            "count": len(run.samples_ns),
            "p50_ms": lat.p50,
            "instructions": instruction_counts(run.manifest.target_info),
            "dir": str(run_dir),
        }
        if run.manifest.split is not None:
            row.update(_split_list_fields(run))
        rows.append(row)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no runs under {base}")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    # Run ids and names are copied into the next command: never cut with "…".
    for column in ("run", "status", "target", "model"):
        table.add_column(column, no_wrap=True)
    for column in ("n", "p50"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["run_id"],
            row["status"],
            str(row["target"]),
            str(row["model"]),
            str(row["count"]),
            _best_e2e_cell(row)
            if row.get("kind") == "split"
            else _latency_cell(row["p50_ms"], row["instructions"]),
        )
    print_whole(console(), table)


def _split_list_fields(run: Run) -> dict[str, Any]:
    """A split run in `results list`: marked as one, its inferences counted from its
    journal (samples.jsonl is empty) and its best end-to-end p50 over every link."""
    from edgetool.results.split import SPLIT_JOURNAL, read_journal

    figures = (run.summary.split if run.summary else None) or {}
    best = [
        b["e2e"]["estimate_ms"]
        for b in (figures.get("best") or {}).values()
        if isinstance((b.get("e2e") or {}).get("estimate_ms"), (int, float))
    ]
    return {
        "kind": "split",
        "count": len(read_journal(run.dir / SPLIT_JOURNAL)),
        "best_e2e_ms": min(best) if best else None,
    }


def _best_e2e_cell(row: dict[str, Any]) -> str:
    return f"split, best e2e {_latency_cell(row.get('best_e2e_ms'), False)}"


def _hertz(value: Any) -> str:
    try:
        hz = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit, scale in (("GHz", 1e9), ("MHz", 1e6), ("kHz", 1e3)):
        if hz >= scale:
            return f"{hz / scale:g} {unit}"
    return f"{hz:g} Hz"


def device_text(device: dict[str, Any], board: str | None = None) -> str:
    """What the device said it is, unknowns left out: `aarch64 · 4× Cortex-A72 · Debian`
    for a Linux-class device, `board nucleo-l476rg · firmware edgetool-nucleo · timer
    dwt-cycles at 80 MHz` for a board (which has no arch, cores or OS to report)."""
    parts: list[str] = []
    cores, cpu = device.get("cores"), device.get("cpu_model")
    cpu_text = f"{cores}× {cpu}" if cores and cpu else (f"{cores} cores" if cores else cpu)
    for value in (device.get("arch"), cpu_text, device.get("os")):
        if value:
            parts.append(str(value))
    known_board = board or device.get("board")
    if known_board and known_board != "?":
        parts.append(f"board {known_board}")
    name, profile = device.get("name"), device.get("profile")
    if name and (profile or "board" in device):  # a board's firmware names itself
        parts.append(f"firmware {name}" + (f" ({profile})" if profile and profile != name else ""))
    timer, tick = device.get("timer"), device.get("tick-hz")
    if timer or tick:
        at = f"at {_hertz(tick)}" if tick else None
        parts.append(" ".join(filter(None, ("timer", timer, at))))
    return " · ".join(parts)


def _profile_of(run: Run) -> OpProfile | None:
    return read_op_profile(run.dir, run.summary.ops if run.summary else None)


def op_profile_json(run: Run, profile: OpProfile, count: int) -> dict[str, Any]:
    """The profile's top rows (`--top`) without the trace's node slices."""
    data = profile.to_dict()
    data.pop("slices", None)
    data["op_types"] = [row.to_dict() for row in top(profile.op_types, count)]
    data["nodes"] = [row.to_dict() for row in top(profile.nodes, count)]
    return {"run_id": run.run_id, "run_dir": str(run.dir), **data}


def print_op_profile(profile: OpProfile, count: int, nodes: bool = True) -> None:
    """Top-`count` tables per op type and per node, with what the times are of."""
    from rich.table import Table

    out = console()
    share = "% of inference" if profile.percent_of == "inference" else "% of op time"
    runs = f"{profile.inferences} profiled inferences" if profile.inferences else "profiled runs"
    out.print(f"\n  per-operator profile: {profile.source}, {runs}")
    out.print(f"  [dim]{profile.note}[/dim]")
    if profile.inference_ms is not None:
        out.print(f"  profiled inference  {_fmt(profile.inference_ms)} ms (mean)")
    tables: list[tuple[str, list[OpRow]]] = [("op type", profile.op_types)]
    if nodes:
        tables.append(("node", profile.nodes))
    for what, rows in tables:
        if not rows:
            continue
        shown = top(rows, count)
        table = Table(box=None, pad_edge=False, title_justify="left")
        table.add_column(what, no_wrap=True)
        if what == "node":
            table.add_column("op type", no_wrap=True)
        else:
            table.add_column("nodes", justify="right")
        for column in ("calls", "ms/inference", share):
            table.add_column(column, justify="right", no_wrap=True)
        for row in shown:
            second = row.op_type if what == "node" else str(row.nodes if row.nodes else "—")
            table.add_row(
                row.label,
                second,
                str(row.calls) if row.calls is not None else "—",
                _fmt(row.mean_ms, 4),
                _fmt(row.percent, 1),
            )
        left = len(rows) - len(shown)
        out.print(
            f"\n  top {len(shown)} of {len(rows)} by {what}" + (f" ({left} more)" if left else "")
        )
        print_whole(out, table)


@command.command("show")
@click.argument("run")
@results_dir_option
@no_short_o
@click.option("--ops", is_flag=True, help="The run's per-operator profile (deploy --op-profile).")
@click.option(
    "--top",
    "top_n",
    type=click.IntRange(min=0),
    default=15,
    show_default=True,
    help="With --ops: rows per table, by time per inference (0: all).",
)
@json_option
def show(run: str, root: Path | None, ops: bool, top_n: int, as_json: bool) -> None:
    """Show one run (by id, unique id prefix, directory, or `latest`)."""
    loaded = find_run(run, root or paths.results_dir())
    if ops:
        profile = _profile_of(loaded)
        if profile is None:
            raise ResultsError(
                f"run {loaded.run_id} has no per-operator profile",
                hint="Deploy with --op-profile (ONNX on Linux targets, TFLite on Android).",
            )
        if profile.error:
            raise ResultsError(f"run {loaded.run_id} has no per-operator profile: {profile.error}")
        if as_json:
            emit_json(op_profile_json(loaded, profile, top_n))
        else:
            console().print(f"[bold]{loaded.run_id}[/bold]  {loaded.dir}")
            print_op_profile(profile, top_n)
        return
    if as_json:
        emit_json(
            {
                "run_dir": str(loaded.dir),
                "manifest": loaded.manifest.to_dict(),
                "summary": loaded.summary.to_dict() if loaded.summary else None,
            }
        )
        return
    m = loaded.manifest
    out = console()
    out.print(f"[bold]{loaded.run_id}[/bold]  {loaded.dir}")
    device = m.device or {}
    runtime = m.runtime
    where = " ".join(str(v) for v in (m.target_info.name, m.target_info.transport) if v)
    out.print(f"  target   {where}")
    shown_device = device_text(device, m.target_info.board)
    if shown_device:
        out.print(f"  device   {shown_device}")
    artifact = m.artifact_info
    out.print(
        f"  model    {artifact.name}  sha256 {str(artifact.sha256)[:12]}…  "
        f"{human_bytes(artifact.size)}"
    )
    if runtime:
        out.print(
            f"  runtime  {runtime.runtime} {runtime.runtime_version}  "
            f"threads {runtime.threads or 'default'}{accelerator_text(m)}"
        )
    for number, text in enumerate(input_texts(m.inputs or [])):
        out.print(f"  {'inputs' if number == 0 else '':<8} {text}")
    if m.split is not None:
        from edgetool.cli.split_view import render

        server = (m.split.get("server") or {}).get("name")
        out.print(f"  split    head on {m.target_info.name}, tail on {server}; status {m.status}\n")
        summary = loaded.summary.to_dict() if loaded.summary else {}
        if summary.get("split"):
            render(out, m.to_dict(), summary)
        else:
            out.print("  no inference was measured")
        return
    print_summary(m, loaded.summary)
    profile = _profile_of(loaded)
    if profile is not None:
        what = f"error: {profile.error}" if profile.error else profile.source
        out.print(f"\n  per-operator profile ({what}): edgetool results show {loaded.run_id} --ops")


def accelerator_text(manifest: RunManifest) -> str:
    """'  on X' (what ran the graph) and whether it was asked for or the default; empty for a run
    from before edgetool recorded it."""
    used = manifest.runtime_info.accelerator
    if used is None:
        return ""
    settings = manifest.settings or {}
    asked = [f"--{key} {settings[key]}" for key in ("ep", "delegate") if settings.get(key)]
    return f"  on {used}" + (f" (asked: {' '.join(asked)})" if asked else " (the default)")


def _format_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """-f is --format everywhere; it was --file here once, so a path says what to use."""
    if value is not None and value != "csv":
        hint = " (write to a file with -o PATH)" if ("." in value or "/" in value) else ""
        raise click.BadParameter(f"'{value}' is not a format: use csv{hint}", ctx, param)
    return value


def input_texts(inputs: list[InputInfo]) -> list[str]:
    """Each input as fed: `x  float32 1x3x640x640  random (N = 1 by default)`."""
    texts = []
    for spec in inputs:
        shape = "x".join(str(d) for d in spec.shape or []) or "scalar"
        default = f" ({', '.join(spec.defaulted)} = 1 by default)" if spec.defaulted else ""
        texts.append(f"{spec.name}  {spec.dtype} {shape}  {spec.source}{default}")
    return texts


@command.command("export")
@click.argument("run")
@results_dir_option
@click.option(
    "-f",
    "--format",
    "fmt",
    default=None,
    callback=_format_value,
    metavar="csv",
    help="Output format: csv, one row per inference (index, latency_ns, latency_ms; a split "
    "run's journal keys: link, cut, codec, ..., e2e_ns) [default: csv].",
)
@click.option("--csv", "as_csv", is_flag=True, hidden=True, help="The same as -f csv.")
@click.option(
    "-o",
    "--output",
    "dest",
    type=click.Path(path_type=Path),
    help="File to write instead of stdout.",
)
@old_name("--file", "dest", type=click.Path(path_type=Path))
@json_option
def export(
    run: str,
    root: Path | None,
    fmt: str | None,
    as_csv: bool,
    dest: Path | None,
    as_json: bool,
) -> None:
    """Export a run's per-inference samples (for plotting).

    \b
    Examples:
      edgetool results export latest > latest.csv
      edgetool results export latest -o latest.csv --json   # and report what was written
    """
    if dest is not None and dest.is_dir():
        raise click.BadParameter(
            f"{dest} is a directory; -o is the file to write (runs are read from "
            "--results-dir DIR)",
            param_hint="'-o' / '--output'",
        )
    if as_json and dest is None:
        raise click.UsageError("--json reports the written file: give -o PATH as well")
    loaded = find_run(run, root or paths.results_dir())
    header, rows = _export_rows(loaded)
    try:
        handle = dest.open("w", newline="", encoding="utf-8") if dest else sys.stdout
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write {dest}: {exc.strerror or exc}", param_hint="'-o' / '--output'"
        ) from None
    try:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if dest:
            handle.close()
    if as_json:
        emit_json({"path": str(dest), "run_id": loaded.run_id, "format": "csv", "rows": len(rows)})


SPLIT_COLUMNS = (
    "link", "cut", "codec", "rep", "i", "t0_ns", "device_ns", "encode_ns", "bytes", "up_ns",
    "decode_ns", "tail_ns", "server_ns", "down_ns", "reply_bytes", "e2e_ns", "wall_ns",
)  # fmt: skip
"""A split run's CSV columns: its journal's keys, in the order an inference goes."""


def _export_rows(run: Run) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): one row per inference; a split run's from its journal (its
    samples.jsonl is empty), with empty cells for keys a record lacks."""
    if run.manifest.split is not None:
        from edgetool.results.split import SPLIT_JOURNAL, read_journal

        records = read_journal(run.dir / SPLIT_JOURNAL)
        return list(SPLIT_COLUMNS), [[r.get(k, "") for k in SPLIT_COLUMNS] for r in records]
    rows: list[list[Any]] = [
        [index, ns, f"{ns / 1e6:.6f}"] for index, ns in enumerate(run.samples_ns)
    ]
    return ["index", "latency_ns", "latency_ms"], rows


def _parse_threshold(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """`5%` or `0.05`; a bare `5` is refused rather than read as 500 %."""
    text = value.strip()
    try:
        number = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a number (use 5% or 0.05)") from None
    if number < 0 or (not text.endswith("%") and number >= 1.0):
        raise click.BadParameter(f"'{value}' is not a fraction (use 5% or 0.05)")
    return number


def _pct(change: float | None) -> str:
    if change is None:
        return "—"
    text = f"{100 * change:+.1f} %"
    if text in ("+0.0 %", "-0.0 %"):
        return "0.0 %"
    return text.replace("-", "−")


def _num(value: float | None) -> str:
    """Three significant figures, the precision a latency table can carry."""
    if value is None:
        return "—"
    return f"{value:#.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _ratio_ci(pair: PairComparison) -> str:
    effect = pair.effect
    if effect is None or effect.ci is None:
        return ""
    lo, hi = (100 * (v - 1.0) for v in effect.ci)
    return f" [{lo:+.1f}, {hi:+.1f}]".replace("-", "−")


def _change_cell(pair: PairComparison) -> str:
    lat = pair.latency
    if lat is None:
        return f"({pair.verdict})"
    text = _pct(lat.change) + _ratio_ci(pair)
    if pair.verdict == "regression":
        return f"[red]{text} ▲[/red]"
    if pair.verdict == "improvement":
        return f"[green]{text} ▼[/green]"
    return text


def _verdict_cell(pair: PairComparison) -> str:
    colour = {
        "regression": "red",
        "improvement": "green",
        "inconclusive": "yellow",
        "not comparable": "yellow",
    }.get(pair.verdict)
    text = pair.verdict + (" (exact)" if pair.exact else "")
    return f"[{colour}]{text}[/{colour}]" if colour else text


def _mdc_cell(pair: PairComparison) -> str:
    effect = pair.effect
    if pair.exact:
        return "exact"
    if effect is None or effect.mdc is None:
        return "—"
    return f"±{100 * effect.mdc:.1f} %"


def _energy_cell(pair: PairComparison) -> str:
    total = next((m for m in pair.energy if m.name == "energy_total_mj"), None)
    if total is None:
        return "—"
    text = f"{_num(total.before)} → {_num(total.after)} mJ"
    return f"[red]{text} ▲[/red]" if total.regression else text


def _notes(pair: PairComparison, threshold: float) -> str:
    notes: list[str] = []
    if pair.reason:
        notes.append(pair.reason)
    if pair.partial:
        notes.append("(partial)")
    for metric in pair.energy:
        if metric.name != "energy_total_mj" and metric.regression:
            notes.append(f"[red]dynamic energy {_pct(metric.change)} ▲[/red]")
    if pair.size and pair.size.change:
        size = (
            f"size {human_bytes(pair.size.before)} → {human_bytes(pair.size.after)} "
            f"{_pct(pair.size.change)}"
        )
        notes.append(f"[red]{size} ▲[/red]" if pair.size.regression else size)
    for metric in pair.info:
        if metric.change is not None and abs(metric.change) > threshold:
            notes.append(f"{metric.name} {_pct(metric.change)}")
    notes.extend(
        f"[yellow]{w}[/yellow]" for w in pair.warnings if not w.endswith(("partial", "failed"))
    )
    notes.extend(pair.notes)
    return "; ".join(notes)


def _print_comparison(result: SetComparison) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    if not out.is_terminal:
        out.width = 1000  # a log or a pipe: one row per line, never wrapped at 80 columns
    confidence = round(100 * result.settings.confidence)
    table = Table(box=None, pad_edge=False)
    for column in ("model", "target", "median before", "median after"):
        table.add_column(column, justify="right" if "median" in column else "left")
    table.add_column(f"change [{confidence}% CI]")
    table.add_column("verdict")
    table.add_column("detectable", justify="right")
    table.add_column("reps", justify="right")
    table.add_column("energy/inf")
    table.add_column("notes")
    for pair in result.pairs:
        lat = pair.latency
        effect = pair.effect
        table.add_row(
            escape(pair.model),
            escape(pair.target),
            _latency_cell(lat.before, pair.exact) if lat else "—",
            _latency_cell(lat.after, pair.exact) if lat else "—",
            _change_cell(pair),
            _verdict_cell(pair),
            _mdc_cell(pair),
            f"{effect.n_base}/{effect.n_new}" if effect else "—",
            _energy_cell(pair),
            _notes(pair, result.settings.threshold),
        )
    if result.pairs:
        out.print(table)
    else:
        out.print("no pairs to compare")
    for label, runs in (("only in base", result.only_base), ("only in new", result.only_new)):
        for run in runs:
            out.print(
                f"[yellow]{label}: {escape(run.model)} on {escape(run.target)} "
                f"({escape(run.run_id)}, {run.status})[/yellow]"
            )
    if any(pair.exact for pair in result.pairs):
        out.print(
            "note: exact = instruction counts on an emulated core: deterministic, compared "
            "without statistics"
        )
    tested = sum(1 for p in result.pairs if p.effect and p.effect.p_adjusted is not None)
    if tested:
        out.print(f"note: p-values Holm-corrected over {tested} pairs")


def gate_options(command: F) -> F:
    """--threshold and --alpha: what `results compare` and `ab` decide with."""
    threshold = click.option(
        "--threshold",
        default="5%",
        show_default=True,
        callback=_parse_threshold,
        help="Smallest relative change that matters (5% or 0.05).",
    )
    alpha = click.option(
        "--alpha",
        type=click.FloatRange(0.0, 0.5, min_open=True),
        default=0.05,
        show_default=True,
        help="Significance level; intervals are at 1 - alpha.",
    )
    return threshold(alpha(command))


@command.command("compare")
@click.argument("base")
@click.argument("new")
@results_dir_option
@no_short_o
@gate_options
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    default="p50",
    show_default=True,
    help="Latency figure compared: each repetition's median.",
)
@click.option(
    "--fail-on-missing",
    is_flag=True,
    help="Exit 9 when a run has no counterpart on the other side.",
)
@json_option
def compare(
    base: str,
    new: str,
    root: Path | None,
    threshold: float,
    alpha: float,
    metric: str,
    fail_on_missing: bool,
    as_json: bool,
) -> None:
    """Compare NEW against BASE: two runs, or two directories of runs (nights).

    \b
    BASE and NEW are run refs (id, prefix, path, `latest`) or directories holding run
    directories; those are paired by model (artifact name, format, quant) and target,
    taking the latest complete run of each pair. Unpaired runs are listed. Comparing by
    model name across new exports is the point ("did my new export regress?"): the row
    says when the artifacts differ.

    \b
    The unit is a repetition (deploy --repeat), not an inference. The change is the
    ratio NEW/BASE of the runs' repetition medians (geometric means) with a Welch t
    interval on their logs, and the verdict is:
      no change     the interval lies inside ±threshold
      regression    significantly slower (p < alpha) and the interval reaches past +threshold
      improvement   the mirror image
      inconclusive  the interval straddles the threshold (the row says how many
                    repetitions would decide it), fewer than 3 repetitions a side, or a
                    partial/failed run
      not comparable  different device (arch, CPU, board, cores) or input shapes
    "detectable" is the smallest change these spreads detect 80 % of the time. Runs
    counted in emulated instructions are compared exactly, without statistics. Over
    several pairs the p-values are Holm-corrected. Energy per inference regresses on
    growth beyond the threshold with separated CIs; artifact size on any growth beyond
    the threshold. Peak RSS is informational. Differences in threads, runtime versions,
    execution providers or delegates, edgetool versions, governors or frequency limits are
    warned about in the notes.

    Exit 0: no change or improvement; 10: a regression; 13: inconclusive or not
    comparable (and no regression); 9: a run missing or unreadable.
    """
    from edgetool import api

    comparison = api.compare(
        base, new, threshold=threshold, alpha=alpha, metric=metric, results_dir=root
    )
    result = comparison.result
    if as_json:
        emit_json({"base": base, "new": new, **result.to_dict()})
    else:
        _print_comparison(result)
    comparison.raise_for_verdict()
    if fail_on_missing and result.missing:
        raise ResultsError(f"{result.missing} run(s) without a counterpart (--fail-on-missing)")
    if not as_json:
        console().print(f"no change beyond {100 * threshold:g} % (or an improvement)")
