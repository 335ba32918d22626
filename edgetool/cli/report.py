"""`edgetool trace` and `edgetool report`: turn runs into files people can look at.

Separate commands (not `results` subcommands) because they are what a user reaches for
after a deploy: "show me the timeline" and "give me something to attach to the PR".
"""

from __future__ import annotations

from pathlib import Path

import click

from edgetool import paths
from edgetool.cli.common import emit_json, json_option
from edgetool.errors import ResultsError
from edgetool.results.store import Run, find_run

results_dir_option = click.option(
    "--results-dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where runs are looked up [./results or EDGETOOL_RESULTS].",
)


def _load(refs: tuple[str, ...], root: Path | None) -> list[Run]:
    base = root or paths.results_dir()
    return [find_run(ref, base) for ref in refs]


def _write_error(path: Path, exc: OSError) -> ResultsError:
    reason = exc.strerror or str(exc)
    return ResultsError(f"cannot write {path}: {reason}")


@click.command("trace")
@click.argument("run")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trace file to write [RUN_ID.trace.json in the current directory].",
)
@results_dir_option
@json_option
def trace(run: str, output: Path | None, root: Path | None, as_json: bool) -> None:
    """Write a Perfetto/Chrome trace of one run.

    RUN is a run id, a unique id prefix, a run directory, or `latest`. The trace has one
    slice per inference on the device clock, power as a counter aligned to it, the meter's
    idle/measure windows, log lines and temperature/frequency. A split run (`edgetool
    split`) has one process per link with device, encode, link and server slices of each
    inference on the host's timeline. Open it in
    https://ui.perfetto.dev (Open trace file) or chrome://tracing; nothing is uploaded.
    """
    from edgetool.results.trace import trace_metadata, write_trace

    loaded = _load((run,), root)[0]
    dest = output or Path(f"{Path(loaded.run_id).name}.trace.json")
    try:
        events = write_trace(loaded, dest)
    except OSError as exc:
        raise _write_error(dest, exc) from exc
    if as_json:
        emit_json({"path": str(dest.resolve()), "run_id": loaded.run_id, "events": events})
        return
    inferences = trace_metadata(loaded)["inferences"]
    click.echo(f"wrote {dest} ({events} events, {inferences} inferences)")
    click.echo("open it in https://ui.perfetto.dev (Open trace file; it stays in your browser)")


@click.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN...]")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="HTML file to write.",
)
@click.option("--title", help="Report title [derived from the runs].")
@results_dir_option
@json_option
def report(
    runs: tuple[str, ...], output: Path, title: str | None, root: Path | None, as_json: bool
) -> None:
    """Write a self-contained HTML report of one or more runs.

    Each RUN is a run id, a unique id prefix, a run directory, or `latest`. The report has
    a summary table (percentiles with CIs, throughput, energy per inference), latency
    histogram and CDF (overlaid across runs), latency over time with temperature, power with
    the measurement windows, and energy per inference. It is one file with inline SVG and
    CSS: no scripts, no network, fine to attach to a CI job or an email.
    """
    from edgetool.results.report import write_report

    loaded = _load(runs, root)
    try:
        write_report(loaded, output, title)
    except OSError as exc:
        raise _write_error(output, exc) from exc
    if as_json:
        emit_json({"path": str(output.resolve()), "runs": [r.run_id for r in loaded]})
        return
    click.echo(f"wrote {output} ({len(loaded)} run{'s' if len(loaded) != 1 else ''})")
    click.echo(f"open it in a browser: file://{output.resolve()}")
