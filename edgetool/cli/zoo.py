"""`edgetool models / train / export / verify`: the model zoo's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgetool.cli.common import console, emit_json, json_option, print_whole
from edgetool.units import human_bytes


def _metrics(recipe_dir: Path) -> dict[str, Any]:
    path = recipe_dir / "metrics.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@click.group("models")
def models() -> None:
    """List and inspect the model zoo (models/NAME/recipe.toml)."""


@models.command("list")
@json_option
def models_list(as_json: bool) -> None:
    """List zoo models with their family, input and headline metric."""
    from edgetool.zoo.recipe import load_recipe, recipe_names

    rows: list[dict[str, Any]] = []
    for name in recipe_names():
        recipe = load_recipe(name)
        metrics = _metrics(recipe.dir)
        rows.append(
            {
                "name": name,
                "family": recipe.family,
                "input": [list(s.shape) for s in recipe.inputs],
                "trained": recipe.weights_path.exists(),
                "metrics": metrics,
                "description": recipe.description,
            }
        )
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    out = console()
    table = Table(box=None, pad_edge=False)
    # A name is what a user types next: never cut (print_whole).
    for column in ("name", "family", "input", "trained", "metric"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    # Only a terminal gets a shortened description; a pipe or a file gets all of it.
    table.add_column(
        "description",
        no_wrap=True,
        overflow="ellipsis",
        max_width=40 if out.is_terminal else None,
    )
    for row in rows:
        m = row["metrics"]
        if "test_top1" in m:
            metric = f"top1 {m['test_top1']:.3f}"
        elif "psnr" in m:
            metric = f"PSNR {m['psnr']:.2f} dB (bicubic {m.get('psnr_bicubic', float('nan')):.2f})"
        elif "heldout_perplexity" in m:
            metric = f"perplexity {m['heldout_perplexity']:.1f}"
        else:
            metric = ""
        shapes = " ".join(shape_text(shape) for shape in row["input"])
        table.add_row(
            row["name"],
            row["family"],
            shapes,
            "yes" if row["trained"] else "no",
            metric,
            row["description"],
        )
    print_whole(out, table)


@models.command("show")
@click.argument("name")
@json_option
def models_show(name: str, as_json: bool) -> None:
    """Show a recipe, its trained metrics and its cached exports."""
    from dataclasses import asdict

    from edgetool.zoo.recipe import load_recipe

    recipe = load_recipe(name)
    data = asdict(recipe)
    data["dir"] = str(recipe.dir)
    data["recipe_hash"] = recipe.content_hash()
    data["trained"] = recipe.weights_path.exists()
    data["metrics"] = _metrics(recipe.dir)
    if as_json:
        emit_json(data)
        return
    from rich.markup import escape

    out = console()
    out.print(f"[bold]{recipe.name}[/bold]  ({recipe.family})  {escape(recipe.description)}")
    for spec in recipe.inputs:
        out.print(f"  input    {spec.name}  {shape_text(spec.shape)}  {spec.dtype}")
    out.print(f"  outputs  {', '.join(recipe.outputs)}")
    for key in ("arch", "data", "train", "export", "licence"):
        out.print(f"  {key:<8} {escape(readable(data[key]))}")
    if recipe.split_cuts:
        out.print(f"  split    cut={escape(', '.join(recipe.split_cuts))}")
    out.print(f"  weights  {recipe.weights_path} ({'present' if data['trained'] else 'missing'})")
    metrics = data["metrics"]
    width = max((len(key) for key in metrics), default=0)
    for key, value in metrics.items():
        out.print(f"  {key:<{width}}  {escape(readable(value))}")


def shape_text(shape: Any) -> str:
    """`1x3x32x32`, as --input-shape takes it; a symbolic dim keeps its name."""
    return "x".join(str(dim) for dim in shape) if shape else "scalar"


def readable(value: Any) -> str:
    """A recipe or metrics value as a person reads it: `lr=0.003, epochs=100`, numbers at
    4 significant figures, no Python quotes, tuples or braces."""
    if isinstance(value, dict):
        return ", ".join(f"{key}={readable(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(readable(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _parse_sets(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    from edgetool.config import tomllib

    overrides: dict[str, dict[str, Any]] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not dot or section not in ("arch", "data", "train"):
            raise click.BadParameter(f"'{item}': expected SECTION.KEY=VALUE (train.epochs=3)")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        overrides.setdefault(section, {})[field] = value
    return overrides


@click.command("train")
@click.argument("name")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a recipe value, e.g. --set train.epochs=2 (repeatable).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write weights and metrics here instead of models/NAME/.",
)
@json_option
def train(name: str, sets: tuple[str, ...], out: Path | None, as_json: bool) -> None:
    """Train a zoo model from its recipe on offline data (seeded, reproducible)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgetool.zoo.family import get_family
    from edgetool.zoo.recipe import load_recipe

    recipe = load_recipe(name).with_overrides(_parse_sets(sets))
    family = get_family(recipe.family)
    target = out or recipe.dir
    target.mkdir(parents=True, exist_ok=True)
    bar = Progress(
        TextColumn(f"train {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console(stderr=True),
        disable=as_json,
    )
    with bar:
        task = bar.add_task("", total=None)

        def progress(step: int, total: int, status: str) -> None:
            bar.update(task, completed=step, total=total, description=status)

        metrics = family.train(recipe, target, progress)
    if as_json:
        emit_json({"model": name, "out": str(target), "metrics": metrics})
        return
    out_console = console()
    out_console.print(f"trained {name} → {target}")
    for key, value in metrics.items():
        out_console.print(f"  {key:<24} {value}")


def _parse_shape(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(d) for d in value.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or not all(d > 0 for d in shape):
        raise click.BadParameter(f"'{value}': expected positive integers, e.g. 1,1,16,16")
    return shape


@click.command("export")
@click.argument("name")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["onnx", "tflite", "c"]),
    help="Artifact format [recipe default, usually onnx].",
)
@click.option(
    "-q",
    "--quant",
    type=click.Choice(["fp32", "fp16", "int8", "int4", "w4a8"]),
    help="Quantization [recipe default, usually fp32]; int4 and w4a8 are for LLMs.",
)
@click.option(
    "--hf-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With NAME 'llm': export this Hugging Face model directory (LLaMA family; "
    "config, safetensors, tokenizer.json) instead of a zoo model. Works offline.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also copy the artifact (and its .manifest.json) here.",
)
@click.option(
    "--input-shape",
    callback=_parse_shape,
    metavar="D,D,...",
    help="Export for this input shape instead of the recipe's (single-input models), "
    "e.g. 1,1,16,16 for a microcontroller-sized image; cached separately.",
)
@click.option("--force", is_flag=True, help="Rebuild even when a cached export exists.")
@json_option
def export(
    name: str,
    fmt: str | None,
    quant: str | None,
    hf_dir: Path | None,
    out: Path | None,
    input_shape: tuple[int, ...] | None,
    force: bool,
    as_json: bool,
) -> None:
    """Export a zoo model to ONNX, TFLite or C: an artifact file plus a manifest.

    Exports are cached by content (recipe + weights + format + quantization), so a
    second export of an unchanged model is instant.

    \b
    Examples:
      edgetool export cbnet --format tflite --quant int8
      edgetool export tiny-llama --quant w4a8
      edgetool export llm --hf-dir ~/models/TinyLlama-1.1B --quant int4
      edgetool export tinylut-s-x4 --format c --quant int8 --input-shape 1,1,16,16
    """
    from edgetool import api

    if (name == "llm") != (hf_dir is not None):
        raise click.UsageError("use NAME 'llm' together with --hf-dir PATH")
    err = console(stderr=True)
    artifact = api.export(
        name,
        fmt,
        quant,
        input_shape=input_shape,
        force=force,
        out=out,
        hf_dir=hf_dir,
        progress=None if as_json else lambda msg: err.print(msg),
    )
    path = artifact.path
    if as_json:
        emit_json({"path": str(path), "manifest": artifact.manifest})
        return
    m = artifact.manifest
    console().print(f"{path}")
    click.echo(
        f"  {m.get('format')} {m.get('quant')}  {human_bytes(artifact.size)}  sha256 "
        f"{artifact.sha256[:12]}…  params {m.get('params', '?')}  MACs {m.get('macs', '?'):,}"
        if isinstance(m.get("macs"), int)
        else f"  sha256 {artifact.sha256[:12]}…"
    )
    for tensor in m.get("inputs", []) + m.get("outputs", []):
        click.echo(f"  {tensor['name']:<20} {shape_text(tensor['shape'])} {tensor['dtype']}")


@click.command("verify")
@click.argument("artifact")
@click.option(
    "-n",
    "--samples",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Held-out inputs to compare on.",
)
@json_option
def verify(artifact: str, samples: int, as_json: bool) -> None:
    """Check an artifact against its reference; exit 11 when it does not match.

    ARTIFACT is an exported file (with its manifest) or NAME[:FORMAT[:QUANT]].
    """
    from edgetool import api
    from edgetool.errors import VerificationFailed

    err = console(stderr=True)
    report = api.verify(artifact, samples, progress=None if as_json else lambda m: err.print(m))
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report)
    if not report.passed:
        raise VerificationFailed(f"{Path(report.artifact).name}: " + "; ".join(report.failures))


def _print_report(report: Any) -> None:
    out = console()
    verdict = "[green]PASS[/green]" if report.passed else "[red]FAIL[/red]"
    out.print(
        f"{verdict}  {report.model} {report.format} {report.quant} vs {report.reference}, "
        f"{report.samples} held-out inputs"
    )
    out.print(f"  max abs error          {report.max_abs:.3g}")
    out.print(f"  RMSE                   {report.rmse:.3g}")
    out.print(f"  cosine                 {report.cosine:.6f}")
    for key, value in report.agreement.items():
        out.print(f"  {key:<22} {value:.4g}")
    for key in report.metric_artifact:
        out.print(
            f"  {key:<14} {report.metric_artifact[key]:.4g} (reference "
            f"{report.metric_reference.get(key, float('nan')):.4g})"
        )
    from rich.table import Table

    table = Table(box=None, pad_edge=False, title="operators")
    for column in ("op", "onnxruntime", "litert", "tflite-micro"):
        table.add_column(column)
    mark = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "—"}
    for op, support in report.ops.items():
        table.add_row(op, *(mark[support[r]] for r in ("onnxruntime", "litert", "tflite-micro")))
    out.print(table)
