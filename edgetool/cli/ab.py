"""`edgetool ab`: two models on one device in alternating repetitions, then compared.

Back-to-back runs see the device drift between them (warming up, a cron job starting);
alternating A and B repetition by repetition in one session puts the drift on both sides.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgetool import paths
from edgetool.cli.common import console, emit_json, get_target, json_option
from edgetool.cli.deploy import (
    DELEGATE_HELP,
    EP_HELP,
    DeployView,
    ProviderName,
    _raise_interrupt,
    describe_artifact,
    measure_options,
    target_option,
)
from edgetool.cli.results import gate_options

if TYPE_CHECKING:
    pass


class ABView(DeployView):
    """One bar over both runs' repetitions; the per-run measure bars would fight."""

    def __init__(self, enabled: bool) -> None:
        super().__init__(enabled)
        self.labels: dict[str, str] = {}
        self._done = 0

    def measuring(self, expected: int, duration: float) -> None:
        pass

    def progress(self, count: int) -> None:
        pass

    def repetition(self, run_id: str, index: int, total: int) -> None:
        # Block 0 runs A first, so the first run seen is A.
        label = self.labels.setdefault(run_id, "AB"[len(self.labels) % 2])
        if not self.enabled:
            return
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._progress = Progress(
                "{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.err,
            )
            self._progress.start()
            self._task = self._progress.add_task("repetitions", total=2 * total)
        self._progress.update(
            self._task,
            completed=self._done,
            description=f"repetition {index + 1}/{total}: {label}",
        )
        self._done += 1

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self._done, description="repetitions")
        super().stop()


def _per_side(flag: str, values: tuple[str, ...]) -> tuple[str, str]:
    """(A's, B's) from an option given never, once (both) or twice (A, then B)."""
    if len(values) > 2:
        raise click.UsageError(f"give {flag} once (both sides) or twice (A, then B)")
    if not values:
        return "", ""
    return values[0], values[-1]


@click.command()
@target_option("Target name or path to a target TOML (a Linux-class device).")
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Give it twice: A (the baseline), then B. A file or NAME[:FORMAT[:QUANT]]. Once "
    "when --ep or --delegate is given twice: one model under two of them.",
)
@click.option(
    "--ep",
    "eps",
    type=ProviderName(),
    multiple=True,
    help=EP_HELP + " Once: both sides; twice: A's, then B's.",
)
@click.option(
    "--delegate",
    "delegates",
    type=click.Choice(["xnnpack", "none"]),
    multiple=True,
    help=DELEGATE_HELP + " Once: both sides; twice: A's, then B's.",
)
@measure_options
@gate_options
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    target_name: str,
    models: tuple[str, ...],
    eps: tuple[str, ...],
    delegates: tuple[str, ...],
    repeat: int,
    iterations: int | None,
    duration: float | None,
    warmup: int,
    warmup_seconds: float,
    threads: int,
    runtime: str,
    input_path: Path | None,
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...],
    seed: int,
    save_outputs: bool,
    out: Path | None,
    threshold: float,
    alpha: float,
    as_json: bool,
) -> None:
    """Run models A and B in alternating repetitions on one device, then compare B to A.

    One connection, both models pushed once, then repetitions in blocks AB, BA, AB, …:
    each pair of blocks cancels a linear drift (warming up, background load), which
    back-to-back deploys cannot. Each repetition is a fresh runner process. Both runs are
    stored as usual (results/<run-id>/, each naming the other) and compared exactly as
    `edgetool results compare A B` does.

    One model under two execution providers or delegates: give --model once and --ep or
    --delegate twice (A's, then B's). Given once, --ep and --delegate apply to both sides.
    Each run records the provider or delegate it really used.

    \b
    Exit 0: no change or improvement; 10: B regressed; 13: inconclusive.

    \b
    Examples:
      edgetool ab -m cbnet:onnx:fp32 -m cbnet:onnx:int8 --repeat 10
      edgetool ab --target rpi4 -m old.tflite -m new.tflite -n 200
      edgetool ab -m fsrcnn-x4:tflite --delegate none --delegate xnnpack   # XNNPACK off/on
      edgetool ab -m model.onnx --ep cpu --ep xnnpack
    """
    from edgetool import api
    from edgetool.cli.results import _print_comparison

    ep_a, ep_b = _per_side("--ep", eps)
    delegate_a, delegate_b = _per_side("--delegate", delegates)
    per_side = (ep_a, delegate_a) != (ep_b, delegate_b)
    if len(models) == 1 and per_side:
        models = (models[0], models[0])
    if len(models) != 2:
        once = " (once with --ep or --delegate given twice)" if len(models) == 1 else ""
        raise click.UsageError(f"give --model exactly twice (A, then B){once}, got {len(models)}")
    if iterations and duration:
        raise click.UsageError("give --iterations or --duration, not both")
    if repeat < 2:
        raise click.UsageError("--repeat must be at least 2 to alternate A and B")
    target = get_target(ctx, target_name)
    ui = ABView(enabled=not as_json)
    original = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = api.ab(
            models[0],
            models[1],
            target,
            repeat=repeat,
            iterations=iterations,
            duration=duration,
            warmup=warmup,
            warmup_seconds=warmup_seconds,
            threads=threads,
            runtime=runtime,
            input=input_path,
            input_shapes=input_shapes,
            seed=seed,
            save_outputs=save_outputs,
            ep=(ep_a, ep_b),
            delegate=(delegate_a, delegate_b),
            threshold=threshold,
            alpha=alpha,
            results_dir=out or paths.results_dir(),
            observer=ui,
            progress=ui.say,
            on_artifact=lambda artifact, role: describe_artifact(artifact, ui, f"{role}  "),
        )
    finally:
        ui.stop()
        signal.signal(signal.SIGTERM, original)
    comparison = result.comparison
    if as_json:
        emit_json(
            {
                "a": {"run_dir": str(result.a.dir), "summary": result.a.summary.to_dict()},
                "b": {"run_dir": str(result.b.dir), "summary": result.b.summary.to_dict()},
                "order": "alternating blocks: AB, BA, AB, ...",
                **comparison.result.to_dict(),
            }
        )
    else:
        out_console = console()
        for role, run in (("A", result.a), ("B", result.b)):
            out_console.print(f"{role}  run {run.run_id}  →  {run.dir}/")
        _print_comparison(comparison.result)
    comparison.raise_for_verdict()
    if not as_json:
        console().print(f"no change beyond {100 * threshold:g} % (or an improvement)")
