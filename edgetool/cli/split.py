"""`edgetool split`: cut a model between a device and a server and measure what the user
waits for over a real, shaped link."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgetool import paths
from edgetool.cli.common import (
    console,
    emit_json,
    get_target,
    json_option,
    print_whole,
    writable_dir,
)
from edgetool.cli.deploy import (
    DeployView,
    InputShape,
    _raise_interrupt,
    idle_seconds_option,
    target_option,
)
from edgetool.cli.split_view import render
from edgetool.split.settings import SPLIT_DEFAULTS, SplitObserver

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS_HELP = ", ".join(SPLIT_DEFAULTS.codecs)


class SplitView(DeployView, SplitObserver):
    """Progress on stderr: stages, pushes, one bar over every inference of the run."""

    def stage(self, text: str) -> None:
        self.say(f"[bold]·[/bold] {text}")

    def measured(self, done: int, total: int, label: str) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._progress = Progress(
                "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=self.err, transient=True,
            )  # fmt: skip
            self._task = self._progress.add_task("measuring", total=total)
            self._progress.start()
        self._progress.update(self._task, completed=done, description=label)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _points_table(out: Any, cuts: list[Any]) -> None:
    from rich.table import Table

    table = Table()
    for column in ("tensor", "after", "shape", "fp32 B", "fp16 B", "int8 B", "4-bit B"):
        table.add_column(column, justify="right" if column.endswith(" B") else "left")
    for cut in cuts:
        table.add_row(
            cut.tensor, cut.after, "x".join(str(d) for d in cut.shape),
            *(str(cut.raw_bytes(bits)) for bits in (32, 16, 8, 4)),
        )  # fmt: skip
    print_whole(out, table)


def _count(*flags_and_help: str, minimum: int = 1) -> Callable[[F], F]:
    """An integer option whose default is SplitSettings' field of the same name."""
    *flags, help_text = flags_and_help
    field = flags[-1].lstrip("-")
    return click.option(
        *flags,
        type=click.IntRange(min=minimum),
        default=getattr(SPLIT_DEFAULTS, field),
        show_default=True,
        help=help_text,
    )


@click.command()
@target_option("The device that runs the head (a Linux-class target).")
@click.option(
    "-m", "--model", "model_spec", required=True,
    help="An .onnx file, or a zoo NAME (exported to ONNX).",
)  # fmt: skip
@click.option(
    "--server",
    default="local",
    show_default=True,
    help="The target that runs the tail (local or any Linux-class target).",
)
@click.option(
    "--link",
    "links",
    multiple=True,
    help="Link profile: wifi, lte, ble, a TOML file (bandwidth, rtt_ms, jitter_ms, loss), or "
    "none (plain connection). Repeat to measure several. Shaped links need root: they run "
    "in network namespaces edgetool creates. [default: none]",
)
@click.option(
    "--points",
    default=SPLIT_DEFAULTS.points,
    show_default=True,
    help="Cut points: auto (every candidate), tensor names a,b, or list (print the "
    "candidates and exit).",
)
@click.option(
    "--codec",
    "codecs",
    multiple=True,
    help=f"Codec for the crossing tensor; repeat or comma-separate. [default: {DEFAULTS_HELP}]",
)
@_count("-r", "--repeat", "Repetitions (fresh processes each); the uncertainty comes from these.")
@_count("-n", "--inferences", "Measured inferences per route and repetition.")
@_count("--warmup", "Unmeasured inferences before each route's first.", minimum=0)
@_count("--seed", "Seed for random inputs (models without recipe data).", minimum=0)
@_count("--threads", "Runtime threads on each side (0 = runtime default).", minimum=0)
@click.option(
    "--input-shape",
    "input_shapes",
    type=InputShape(),
    multiple=True,
    help="Shape for an input with symbolic dims, e.g. 1x1x32x32.",
)
@click.option("--no-baselines", is_flag=True, help="Skip the device-only and server-only routes.")
@click.option(
    "--energy",
    is_flag=True,
    help="Read the target's [meter] (ppk2, um25c, rapl, or an estimate) beside the run: "
    "idle power first, then the device's energy per inference on each route, waiting "
    "for the link included.",
)
@idle_seconds_option(SPLIT_DEFAULTS.idle_seconds)
@click.option(
    "-o", "--out", type=click.Path(file_okay=False, path_type=Path), callback=writable_dir,
    help="Directory the run directory is written under [./results or EDGETOOL_RESULTS].",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="Print only the run directory.")
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    target_name: str,
    model_spec: str,
    server: str,
    links: tuple[str, ...],
    points: str,
    codecs: tuple[str, ...],
    repeat: int,
    inferences: int,
    warmup: int,
    seed: int,
    threads: int,
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...],
    no_baselines: bool,
    energy: bool,
    idle_seconds: float,
    out: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Cut MODEL between TARGET (head) and SERVER (tail) and measure each cut point and
    codec end to end: device time, encode, bytes, link, server time.

    \b
    Examples:
      edgetool split -m cbnet --points list
      edgetool split -t local -m cbnet --server local --link none
      sudo edgetool split -t rpi4 -m entropic-student --link wifi --link lte --link ble
      edgetool results show latest      # the tables again; report and trace read it too
    """
    from edgetool.api import split
    from edgetool.split.settings import SplitSettings, settle_settings

    wanted = tuple(c.strip() for spec in codecs for c in spec.split(",") if c.strip())
    settings = SplitSettings(
        points=points,
        codecs=wanted or SPLIT_DEFAULTS.codecs,
        links=links or ("none",),
        repeat=repeat,
        inferences=inferences,
        warmup=warmup,
        seed=seed,
        threads=threads,
        input_shapes=dict(input_shapes),
        baselines=not no_baselines,
        energy=energy,
        idle_seconds=idle_seconds,
    )
    settle_settings(settings)
    view = SplitView(not (quiet or as_json))
    if points.strip() == "list":
        _list_points(get_target(ctx, target_name), model_spec, settings, as_json, view)
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # kept as Ctrl-C keeps
    try:
        outcome = split(
            model_spec, get_target(ctx, target_name), server=get_target(ctx, server),
            settings=settings, results_dir=out or paths.results_dir(), observer=view,
        )  # fmt: skip
    finally:
        view.close()
        signal.signal(signal.SIGTERM, previous)
    manifest = outcome.manifest.to_dict()
    summary = outcome.summary.to_dict()
    if as_json:
        emit_json(
            {"run_id": outcome.run_id, "dir": str(outcome.run_dir), "plan": manifest.get("split"),
             "figures": summary.get("split")}
        )  # fmt: skip
        return
    if quiet:
        click.echo(str(outcome.run_dir))
        return
    render(console(), manifest, summary)
    console().print(f"run {outcome.run_id}  →  {outcome.run_dir}/")


def _artifact(target: Any, model_spec: str, view: SplitView) -> Any:
    from edgetool.api import resolve_for_target, split_spec

    return resolve_for_target(target, split_spec(model_spec), view.say)


def _list_points(
    target: Any, model_spec: str, settings: Any, as_json: bool, view: SplitView
) -> None:
    from edgetool.split.cuts import find_cuts

    artifact = _artifact(target, model_spec, view)
    cuts = find_cuts(artifact.path, dict(settings.input_shapes))
    if as_json:
        emit_json(
            [
                {"tensor": c.tensor, "after": c.after, "shape": list(c.shape), "dtype": c.dtype,
                 "position": c.position, "bytes": {str(b): c.raw_bytes(b) for b in (32, 16, 8, 4)}}
                for c in cuts
            ]
        )  # fmt: skip
        return
    if not cuts:
        console().print(f"{artifact.path.name}: no single-tensor cut points")
        return
    _points_table(console(), cuts)
