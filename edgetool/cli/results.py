"""`edgetool results`: look at runs already measured (complete or partial)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import click

from edgetool import paths
from edgetool.cli.common import console, emit_json, human_bytes, json_option
from edgetool.results.store import find_run, iter_run_dirs, load_run

out_option = click.option(
    "-o",
    "--out",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Results directory [./results or EDGETOOL_RESULTS].",
)


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_summary(manifest: dict[str, Any], summary: dict[str, Any] | None) -> None:
    """The latency table a user reads after a run (shared by deploy and results show)."""
    out = console()
    status = manifest.get("status", "?")
    target = manifest.get("target", {})
    if target.get("emulated"):
        out.print("[yellow]emulated device: times are emulator times, not device times[/yellow]")
    if target.get("time_base"):
        out.print(f"time base: {target['time_base']}")
    parity = (summary or {}).get("parity")
    if parity:
        verdict = "ok" if parity.get("ok") else "[red]MISMATCH[/red]"
        out.print(f"parity vs {parity.get('reference')}: {verdict}, max abs {parity['max_abs']}")
    if status != "complete":
        reason = f" ({manifest['error']})" if manifest.get("error") else ""
        out.print(f"[yellow]status: {status}{reason}[/yellow]")
    if not summary:
        out.print("no samples were recorded")
        return
    lat = summary["latency"]
    gen = summary.get("generation")
    if gen:
        out.print(
            f"\n  generation ({gen['generations']}×, {gen['prompt_tokens']}-token prompt, "
            f"{gen['new_tokens']} new tokens, greedy)"
        )
        out.print(f"  time to first token  {gen['ttft_ms']:10.2f} ms")
        if "prefill_tokens_per_s" in gen:
            out.print(f"  prefill              {gen['prefill_tokens_per_s']:10.1f} tokens/s")
        if "decode_tokens_per_s" in gen:
            out.print(f"  decode               {gen['decode_tokens_per_s']:10.1f} tokens/s")
    ci = lat.get("median_ci")
    ci_text = (
        f"  [{ci[0]:.3f}, {ci[1]:.3f}] {round(100 * lat['confidence'])}% CI"
        if ci
        else "  (too few samples for a CI)"
    )
    unit = "decode step latency (ms)" if gen else "latency (ms)"
    out.print(f"\n                 {unit}, n={lat['count']}")
    out.print(f"  p50   {_fmt(lat['p50']):>10}{ci_text}")
    for key in ("p90", "p95", "p99", "p999"):
        out.print(f"  {key:<5} {_fmt(lat[key]):>10}")
    out.print(f"  min   {_fmt(lat['min']):>10}")
    out.print(f"  max   {_fmt(lat['max']):>10}")
    out.print(f"  mean  {_fmt(lat['mean']):>10} ± {_fmt(lat['std'])}")
    if summary.get("throughput_per_s"):
        out.print(f"  rate  {summary['throughput_per_s']:>10.1f} inferences/s")
    if summary.get("first_inference_ms") is not None:
        out.print(f"  first {_fmt(summary['first_inference_ms']):>10}  (cold, not in stats)")
    if summary.get("peak_rss"):
        out.print(f"  rss   {human_bytes(summary['peak_rss']):>10}  peak")
    before, after = manifest.get("env_before") or {}, manifest.get("env_after") or {}
    if before.get("temp_c") is not None and after.get("temp_c") is not None:
        throttle = after.get("throttled")
        out.print(
            f"  temp  {before['temp_c']:.1f} → {after['temp_c']:.1f} °C"
            + (f", throttled={throttle}" if throttle else "")
        )
    for warning in lat.get("unstable", []):
        out.print(f"[yellow]  unstable: {warning}[/yellow]")


@click.group()
def command() -> None:
    """List, show and export runs."""


@command.command("list")
@out_option
@json_option
def list_runs(root: Path | None, as_json: bool) -> None:
    """List runs, newest last."""
    base = root or paths.results_dir()
    rows = []
    for run_dir in iter_run_dirs(base):
        run = load_run(run_dir)
        lat = (run.summary or {}).get("latency") or {}
        rows.append(
            {
                "run_id": run.run_id,
                "status": run.status,
                "target": run.manifest.get("target", {}).get("name"),
                "model": run.manifest.get("artifact", {}).get("name"),
                "count": len(run.samples_ns),
                "p50_ms": lat.get("p50"),
                "dir": str(run_dir),
            }
        )
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no runs under {base}")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("run", "status", "target", "model", "n", "p50 ms"):
        table.add_column(column, justify="right" if column in ("n", "p50 ms") else "left")
    for row in rows:
        table.add_row(
            row["run_id"],
            row["status"],
            str(row["target"]),
            str(row["model"]),
            str(row["count"]),
            _fmt(row["p50_ms"]),
        )
    console().print(table)


@command.command("show")
@click.argument("run")
@out_option
@json_option
def show(run: str, root: Path | None, as_json: bool) -> None:
    """Show one run (by id, unique id prefix, directory, or `latest`)."""
    loaded = find_run(run, root or paths.results_dir())
    if as_json:
        emit_json(
            {"run_dir": str(loaded.dir), "manifest": loaded.manifest, "summary": loaded.summary}
        )
        return
    m = loaded.manifest
    out = console()
    out.print(f"[bold]{loaded.run_id}[/bold]  {loaded.dir}")
    device = m.get("device") or {}
    runtime = m.get("runtime") or {}
    out.print(
        f"  target   {m.get('target', {}).get('name')}  {m.get('target', {}).get('transport')}"
    )
    if device:
        out.print(
            f"  device   {device.get('arch')} · {device.get('cores')}× "
            f"{device.get('cpu_model')} · {device.get('os')}"
        )
    artifact = m.get("artifact", {})
    out.print(
        f"  model    {artifact.get('name')}  sha256 {str(artifact.get('sha256'))[:12]}…  "
        f"{human_bytes(artifact.get('size'))}"
    )
    if runtime:
        out.print(
            f"  runtime  {runtime.get('runtime')} {runtime.get('runtime_version')}  "
            f"threads {runtime.get('threads') or 'default'}"
        )
    print_summary(m, loaded.summary)


@command.command("export")
@click.argument("run")
@out_option
@click.option(
    "--csv",
    "as_csv",
    is_flag=True,
    required=True,
    help="One row per inference: index, latency_ns, latency_ms.",
)
@click.option(
    "-f",
    "--file",
    "dest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of stdout.",
)
def export(run: str, root: Path | None, as_csv: bool, dest: Path | None) -> None:
    """Export a run's per-inference samples (for plotting)."""
    loaded = find_run(run, root or paths.results_dir())
    handle = dest.open("w", newline="", encoding="utf-8") if dest else sys.stdout
    try:
        writer = csv.writer(handle)
        writer.writerow(["index", "latency_ns", "latency_ms"])
        for index, ns in enumerate(loaded.samples_ns):
            writer.writerow([index, ns, f"{ns / 1e6:.6f}"])
    finally:
        if dest:
            handle.close()
