"""The `edgetool` command. Subcommands load lazily so `--help` imports nothing heavy."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from edgetool import __version__
from edgetool.errors import EXIT_CODES, EdgetoolError

_COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("edgetool.cli.zoo:models", "List and inspect the model zoo."),
    "train": ("edgetool.cli.zoo:train", "Train a zoo model on offline data."),
    "export": ("edgetool.cli.zoo:export", "Export a model to ONNX, TFLite or C."),
    "verify": ("edgetool.cli.zoo:verify", "Check an artifact against its reference."),
    "targets": ("edgetool.cli.targets", "List, check and trust devices."),
    "provision": ("edgetool.cli.provision", "Install runtimes on an offline device."),
    "build": ("edgetool.cli.build", "Build microcontroller firmware with a model; fit check."),
    "deploy": (
        "edgetool.cli.deploy",
        "Push a model to a device, run it, collect latency (and energy).",
    ),
    "ab": ("edgetool.cli.ab", "Run two models in alternating repetitions; compare them."),
    "results": ("edgetool.cli.results", "List, show, compare and export runs."),
    "trace": ("edgetool.cli.report:trace", "Write a Perfetto trace of a run."),
    "report": ("edgetool.cli.report:report", "Write an HTML report with plots."),
    "emulate": ("edgetool.cli.emulate", "Start and stop emulated devices."),
    "farm": ("edgetool.cli.farm", "Run nightly plans over many devices."),
}

_EPILOG = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items()
)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)  # the order a newcomer needs them in

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module_name, _, attr = _COMMANDS[cmd_name][0].partition(":")
        module = importlib.import_module(module_name)
        command: click.Command = getattr(module, attr or "command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class State:
    verbose = False


@click.group(
    cls=LazyGroup, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="edgetool")
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks and debug detail.")
@click.option(
    "--targets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    multiple=True,
    help="Extra directory of target TOML files (also EDGETOOL_TARGETS, ':'-separated).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool, targets_dir: tuple[Path, ...]) -> None:
    """Deploy ML models to edge devices and measure latency and energy."""
    State.verbose = verbose
    ctx.obj = {"targets_dirs": list(targets_dir)}


def main(argv: list[str] | None = None) -> Any:
    try:
        cli.main(args=argv, prog_name="edgetool", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgetoolError as exc:
        if State.verbose:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        if exc.run_dir is not None:
            click.echo(f"what was measured is kept in {exc.run_dir}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # stdout closed early (`edgetool ... | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:
        if State.verbose:
            traceback.print_exc()
        click.echo(
            f"error: internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)
