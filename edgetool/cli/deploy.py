"""`edgetool deploy`: the main job — push a model to a device, time it, keep every sample."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from edgetool import events, paths
from edgetool.api import RUN_DEFAULTS
from edgetool.cli.common import console, emit_json, get_target, json_option, writable_dir
from edgetool.flows.base import Observer
from edgetool.units import human_bytes

if TYPE_CHECKING:
    from edgetool.export.artifact import Artifact
from edgetool.transport.base import Progress, PutResult

F = TypeVar("F", bound=Callable[..., Any])


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses nan and inf: `--duration nan` would measure forever and
    `--duration inf` overflow the runner's deadline."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return number


def idle_seconds_option(default: float) -> Callable[[F], F]:
    """--idle-seconds, for each command with --energy (deploy, split)."""
    return click.option(
        "--idle-seconds",
        type=FiniteFloatRange(min=0.2),
        default=default,
        show_default=True,
        help="With --energy: how long the idle device is measured before the run.",
    )


if TYPE_CHECKING:
    _ShapeType = click.ParamType[tuple[str, tuple[int, ...]]]
    _NameType = click.ParamType[str]
else:  # click before 8.2 has no generic ParamType at run time
    _ShapeType = _NameType = click.ParamType


class InputShape(_ShapeType):
    """`NAME=1x3x640x640`, or `1x3x640x640` for a model with one input."""

    name = "[NAME=]DIMS"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, tuple[int, ...]]:
        if isinstance(value, tuple):
            return value
        from edgetool.runner.device_runner import parse_shape_arg

        try:
            name, dims = parse_shape_arg(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return name, tuple(dims)


class ProviderName(_NameType):
    """An onnxruntime execution provider, by its name or a short one (`cuda`, `xnnpack`):
    a name onnxruntime does not know is a usage error here, before anything connects.
    Whether the device's build has it is for the runner there to say."""

    name = "PROVIDER"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        import difflib

        import onnxruntime

        from edgetool.runner.device_runner import match_provider

        known = list(onnxruntime.get_all_providers())
        provider = match_provider(str(value), known)
        if provider is None:
            by_short = {k.lower().removesuffix("executionprovider"): k for k in known}
            wanted = str(value).lower().removesuffix("executionprovider")
            close = [
                by_short[c] for c in difflib.get_close_matches(wanted, by_short, n=3, cutoff=0.6)
            ]
            maybe = f" (did you mean {' or '.join(close)}?)" if close else ""
            self.fail(
                f"{value!r} is not an onnxruntime execution provider{maybe}; "
                "`edgetool targets check` lists the ones available on the device",
                param,
                ctx,
            )
        return provider


EP_HELP = (
    "ONNX models: the onnxruntime execution provider, e.g. CPUExecutionProvider, "
    "XnnpackExecutionProvider or a short name (xnnpack, cuda); `targets check` lists the "
    "device's. One the device lacks, or that onnxruntime drops at start-up (it would run "
    "on CPU), is refused, never replaced. Default: CPU."
)
DELEGATE_HELP = (
    "TFLite models on ai-edge-litert: xnnpack (its default delegate) or none (the builtin "
    "kernels only). The delegate the run really used is recorded. Default: the runtime's."
)

_MEASURE_OPTIONS = [
    click.option(
        "-r",
        "--repeat",
        type=click.IntRange(min=1),
        default=RUN_DEFAULTS.repeat,
        show_default=True,
        help="Repetitions: each a fresh runner process (load, warm up, measure) on the same "
        "connection; a separate window after its own warm-up on boards and Bangle.js. The "
        "run's estimate and its CI come from the spread of repetition medians.",
    ),
    click.option(
        "-n",
        "--iterations",
        type=click.IntRange(min=1),
        help="Timed inferences per repetition [default: 100, and at least 1 s in all].",
    ),
    click.option(
        "-d",
        "--duration",
        type=FiniteFloatRange(min=0, min_open=True),
        help="Measure each repetition for this many seconds instead of a count.",
    ),
    click.option(
        "--warmup",
        type=click.IntRange(min=0),
        default=RUN_DEFAULTS.warmup,
        show_default=True,
        help="Untimed inferences first.",
    ),
    click.option(
        "--warmup-seconds",
        type=FiniteFloatRange(min=0),
        default=RUN_DEFAULTS.warmup_seconds,
        show_default=True,
        help="…and warm up at least this long.",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=0),
        default=RUN_DEFAULTS.threads,
        show_default=True,
        help="Runtime threads (0 = runtime default).",
    ),
    click.option(
        "--runtime",
        type=click.Choice(["auto", "onnxruntime", "litert"]),
        default=RUN_DEFAULTS.runtime,
        show_default=True,
        help="Force a runtime (auto picks by file type).",
    ),
    click.option(
        "--input",
        "input_path",
        type=click.Path(path_type=Path),
        help="Input values: .npy (one input) or .npz (one array per input name, of the "
        "input's dtype). Default: random floats, zeros for integer inputs.",
    ),
    click.option(
        "--input-shape",
        "input_shapes",
        type=InputShape(),
        multiple=True,
        help="Shape for an input with symbolic dims, e.g. x=1x3x640x640 (NAME= may be left "
        "out for a model with one input); repeat per input. A leading batch dim left open "
        "is 1 (said and recorded); any other open dim must be given.",
    ),
    click.option(
        "--save-outputs",
        is_flag=True,
        help="Keep the first inference's outputs as outputs.npz in the run directory.",
    ),
    click.option(
        "--seed",
        type=click.IntRange(min=0),
        default=RUN_DEFAULTS.seed,
        show_default=True,
        help="Seed for random inputs.",
    ),
    click.option(
        "-o",
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        callback=writable_dir,
        help="Output directory the run directory is written under [./results or "
        "EDGETOOL_RESULTS]; checked before connecting.",
    ),
]


def measure_options(command: F) -> F:
    """The options that say how a model is measured: deploy and ab share them."""
    for option in reversed(_MEASURE_OPTIONS):
        command = option(command)
    return command


def target_option(
    help_text: str = "Target name or path to a target TOML.",
) -> Callable[[F], F]:
    """-t/--target, defaulting to $EDGETOOL_TARGET or `local`."""
    return click.option(
        "-t",
        "--target",
        "target_name",
        default=lambda: os.environ.get("EDGETOOL_TARGET", "local"),
        show_default="local, or $EDGETOOL_TARGET",
        help=help_text,
    )


@click.command()
@target_option()
@click.option(
    "-m",
    "--model",
    "model_spec",
    help="An .onnx/.tflite file, or NAME[:FORMAT] of a model in models/ (e.g. tiny-mlp:tflite). "
    "On a microcontroller target: a zoo NAME (built into firmware as C), or omitted to run "
    "the model already in its firmware.",
)
@measure_options
@click.option(
    "--prompt",
    default=None,
    help="LLMs: the prompt text (tokenized on this host). Default: a line of Python.",
)
@click.option(
    "--tokens",
    "new_tokens",
    type=click.IntRange(min=2),
    default=None,
    help="LLMs: new tokens per generation (greedy) [default: 32]. -n counts generations.",
)
@click.option(
    "--energy",
    is_flag=True,
    help="Read the target's [meter] beside the run: idle power first, then energy per "
    "inference (dynamic and total, with CIs).",
)
@idle_seconds_option(RUN_DEFAULTS.idle_seconds)
@click.option("--ep", type=ProviderName(), help=EP_HELP)
@click.option("--delegate", type=click.Choice(["xnnpack", "none"]), help=DELEGATE_HELP)
@click.option(
    "--op-profile",
    is_flag=True,
    help="Per-operator profile (op_profile.json; `results show RUN --ops`): onnxruntime's "
    "profiler in a separate pass after the timed runs on Linux targets, benchmark_model's "
    "--enable_op_profiling on Android. Not for TFLite on Linux (LiteRT's Python API has no "
    "profiler).",
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help="MLPerf Tiny boards: expected scores (.npy, or .npz with `scores` and an optional "
    "`atol`); exit 11 when the board's differ or its top-1 class does.",
)
@json_option
@click.option("-q", "--quiet", is_flag=True, help="Print only the run directory.")
@click.pass_context
def command(
    ctx: click.Context,
    target_name: str,
    model_spec: str | None,
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
    prompt: str | None,
    new_tokens: int | None,
    energy: bool,
    idle_seconds: float,
    ep: str | None,
    delegate: str | None,
    op_profile: bool,
    reference: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Push a model to a device, run it, collect latency (and energy).

    Connects to the target, uploads the runner and the model (verified by sha256; files
    the device already has are not sent again), warms up, times every inference, and
    streams the samples into results/<run-id>/ as they arrive. Ctrl-C keeps what was
    measured (status `partial`). A run is --repeat repetitions (default 5), each a fresh
    runner process: the headline figure is the geometric mean of the repetition medians
    with a Student t interval on their logs, because inferences within one process are
    correlated and the spread between processes is what a rerun sees. --energy and LLM
    generation run as one repetition. With --energy the target's power meter (hwmon, ppk2,
    um25c, rapl, or a declared estimate) is read beside the run and each inference's
    window is integrated after mapping device time onto the meter's clock.

    Watches: a Wear OS watch (kind android) runs LiteRT's benchmark_model, which reports
    aggregates only (count, mean, min, max, std; no percentiles); --energy there reads the
    watch's battery fuel gauge (an estimate). Bangle.js 2 runs the int8 TFLite model under
    TFLite Micro inside its Espruino firmware, over Bluetooth (Nordic UART Service).

    \b
    Examples:
      edgetool deploy --model tiny-mlp
      edgetool deploy --target rpi4 --model model.tflite --duration 10 --threads 4
      edgetool deploy --target rpi4 --model model.tflite --delegate none   # XNNPACK off
      edgetool deploy --model model.onnx --ep xnnpack   # an onnxruntime provider
      edgetool deploy --target mcu-m4-qemu --model cbnet-classifier   # firmware, QEMU M4
      edgetool deploy --target rpi4 --model tiny-llama:onnx:int4 --prompt "def " --tokens 64
      edgetool deploy --target rpi4 --model cbnet --energy --duration 10   # [meter] in its TOML
      edgetool deploy --target watch-wearos --model l2mu -n 200 --energy   # benchmark_model
      edgetool deploy --target bangle2 --model cbnet-classifier -n 50      # TFLM over BLE
      edgetool deploy --target mlperf-tiny-dut --input img.npy --reference scores.npz
    """
    from edgetool import api

    if iterations and duration:
        raise click.UsageError("give --iterations or --duration, not both")
    target = get_target(ctx, target_name)
    ui = DeployView(enabled=not (as_json or quiet))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        outcome = api.deploy(
            model_spec,
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
            energy=energy,
            idle_seconds=idle_seconds,
            op_profile=op_profile,
            reference=reference,
            ep=ep or "",
            delegate=delegate or "",
            prompt=prompt,
            new_tokens=new_tokens,
            results_dir=out or paths.results_dir(),
            observer=ui,
            progress=ui.say,
            on_artifact=lambda artifact: describe_artifact(artifact, ui),
        )
    finally:
        ui.stop()
        signal.signal(signal.SIGTERM, previous)
    text = outcome.generated_text
    if as_json:
        emit_json(
            {
                "run_dir": str(outcome.dir),
                "manifest": outcome.manifest.to_dict(),
                "summary": outcome.summary.to_dict(),
                "pushes": [dataclasses.asdict(p) for p in outcome.pushes],
                **({"generated_text": text} if text is not None else {}),
            }
        )
    elif quiet:
        click.echo(str(outcome.dir))
    else:
        from edgetool.cli.results import print_op_profile, print_summary
        from edgetool.results.op_profile import read_op_profile

        print_summary(outcome.manifest, outcome.summary)
        profile = read_op_profile(outcome.dir)
        if profile is not None and not profile.error:
            print_op_profile(profile, 5, nodes=False)
            console().print(f"  all of it: edgetool results show {outcome.run_id} --ops")
        if text is not None:
            console().print(f"\ngenerated: {text!r}")
        console().print(f"\nrun {outcome.run_id}  →  {outcome.dir}/")


def describe_artifact(artifact: Artifact, ui: DeployView, prefix: str = "") -> None:
    m = artifact.manifest
    label = f"{m['model']}:{m['format']}:{m['quant']}" if m.get("model") else artifact.path.name
    ui.say(
        f"{prefix}[bold]{label}[/bold]  {artifact.format}  sha256 {artifact.sha256[:12]}…  "
        f"{human_bytes(artifact.size)}"
    )


class DeployView(Observer):
    """Renders deploy progress on stderr so stdout stays clean for --json."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.err = console(stderr=True)
        self._progress: Any = None
        self._task: Any = None
        self._push_bar: Any = None
        self._repetition = ""

    def say(self, text: str) -> None:
        if self.enabled:
            self.err.print(text)

    def connected(self, description: str) -> None:
        self.say(f"connected  {description}")

    def note(self, text: str) -> None:
        from rich.markup import escape

        self.say(f"[yellow]note[/yellow]  {escape(text)}")  # '[run]' is text, not markup

    def pushing(self, name: str, size: int) -> Progress | None:
        """A transfer bar for files big enough to take a moment on a slow link."""
        self._stop_push_bar()  # files go one after another; one bar at a time
        if not self.enabled or size < 1_000_000:
            return None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TransferSpeedColumn,
        )

        bar = Progress(
            f"push  {name}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self.err,
            transient=True,
        )
        task = bar.add_task("push", total=size)
        bar.start()
        self._push_bar = bar

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done)

        return update

    def _stop_push_bar(self) -> None:
        if self._push_bar is not None:
            self._push_bar.stop()
            self._push_bar = None

    def pushed(self, name: str, result: PutResult) -> None:
        self._stop_push_bar()
        if result.skipped:
            self.say(f"push  {name} ✓ (unchanged on device)")
        else:
            rate = human_bytes(result.size / result.seconds) + "/s, " if result.seconds else ""
            self.say(
                f"push  {name} ✓ {human_bytes(result.size)} in {result.seconds:.2f} s "
                f"({rate}sha256 verified on device)"
            )

    def event(self, event: events.Event) -> None:
        if isinstance(event, events.Hello) and "hostname" not in event.device:  # firmware
            d = event.device
            self.say(f"device  {d.get('name')}  board {d.get('board')} · model {d.get('model')}")
        elif isinstance(event, events.Hello):
            d = event.device
            board = f" · {d['board']}" if d.get("board") else ""
            self.say(
                f"device  {d.get('hostname')}  {d.get('arch')} · {d.get('cores')}× "
                f"{d.get('cpu_model')}{board} · {d.get('os')} · python {d.get('python')}"
            )
        elif isinstance(event, events.ModelInfo):
            on = f" · {event.ep}" if event.ep else ""
            on += f" · delegate {event.delegate}" if event.delegate else ""
            self.say(
                f"runtime  {event.runtime} {event.runtime_version}{on} · threads "
                f"{event.threads or 'default'} · load {event.load_ms:.1f} ms"
            )
            from edgetool.cli.results import input_texts
            from edgetool.results.manifest import InputInfo

            for text in input_texts([InputInfo.from_dict(f) for f in event.feeds or []]):
                self.say(f"input  {text}")
        elif isinstance(event, events.Warmup):
            self.say(f"warm-up  {event.count} runs / {event.seconds:.2f} s")
        elif isinstance(event, events.Log) and event.text.strip():
            self.say(f"[dim]device: {event.text.strip()}[/dim]")

    def metering(self, meter: str, idle_seconds: float) -> None:
        self.say(f"energy  meter {meter} · idle {idle_seconds:g} s first")

    def measuring(self, expected: int, duration: float) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._progress = Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._measure_label(), total=expected or None)

    def progress(self, count: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=count)

    def repetition(self, run_id: str, index: int, total: int) -> None:
        self._repetition = f"{index + 1}/{total}" if total > 1 else ""
        if self._progress is not None:
            self._progress.update(self._task, description=self._measure_label())

    def _measure_label(self) -> str:
        return f"measure {self._repetition}" if self._repetition else "measure"

    def stop(self) -> None:
        self._stop_push_bar()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
