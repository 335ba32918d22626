"""The `edgetool` command. Subcommands load lazily so `--help` imports nothing heavy."""

from __future__ import annotations

import importlib
import logging
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
    "split": (
        "edgetool.cli.split",
        "Cut a model between a device and a server; measure each cut over a shaped link.",
    ),
    "results": ("edgetool.cli.results", "List, show, compare and export runs."),
    "trace": ("edgetool.cli.report:trace", "Write a Perfetto trace of a run."),
    "report": ("edgetool.cli.report:report", "Write an HTML report with plots."),
    "emulate": ("edgetool.cli.emulate", "Start and stop emulated devices."),
    "farm": ("edgetool.cli.farm", "Run nightly plans over many devices."),
}

_EPILOG = (
    "\b\nExit codes:\n"
    + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    + '\n\nWith --json a failure also prints {"error": {"message", "exit_code", "kind"}} on '
    "stdout. Output piped into a reader that stops early (`| head -1`) ends quietly, exit 0. "
    "Piped or redirected output keeps every name and run id whole."
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

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Caught here because click's own handler turns it into a silent exit 1.
            _quiet_stdout()
            raise click.exceptions.Exit(0) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class State:
    verbose = False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the moment (a progress display or a test
    runner may have swapped it since the handler was made), never to stdout: `--json`
    output stays clean."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _Format(logging.Formatter):
    """One line a record. Without -v only edgetool's warnings show, as `warning: ...` like
    the CLI's own lines; with -v each line says who speaks (`edgetool.transport.ssh: run
    ...`). Other libraries' records never get a level prefix (an `error:` line is never
    theirs)."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not _is_ours(record.name):
            return f"{record.name}: {text}" if self.verbosity else text
        if self.verbosity:
            text = f"{record.name}: {text}"
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text


def _is_ours(name: str) -> bool:
    return name == "edgetool" or name.startswith("edgetool.")


def _threshold(name: str, verbosity: int) -> int:
    """The least level shown for a logger: ours follow -v. Without -v no library speaks:
    what went wrong reaches the user as edgetool's one `error:` line (a cut connection
    also made paramiko's thread log "Socket exception: Connection reset by peer" at
    ERROR). Their warnings join at -v, paramiko's connection story (algorithms,
    authentication) at -vv, other libraries' debug chatter at -vvv."""
    if _is_ours(name):
        return {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity == 0:
        return logging.CRITICAL + 1
    if verbosity >= 3:
        return logging.DEBUG
    if verbosity == 2 and (name == "paramiko" or name.startswith("paramiko.")):
        return logging.INFO
    return logging.WARNING


_handler: logging.Handler | None = None


def setup_logging(verbosity: int) -> None:
    """Configure logging once per invocation (again when tests invoke the CLI in one
    process); library code only ever calls `logging.getLogger(__name__)`."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = _StderrHandler()
    _handler.setFormatter(_Format(verbosity))
    _handler.addFilter(lambda record: record.levelno >= _threshold(record.name, verbosity))
    root.addHandler(_handler)
    logging.getLogger("edgetool").setLevel(_threshold("edgetool", verbosity))
    if verbosity >= 2:
        logging.getLogger("paramiko").setLevel(_threshold("paramiko", verbosity))
    if verbosity >= 3:
        root.setLevel(logging.DEBUG)


@click.group(
    cls=LazyGroup, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="edgetool")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="-v: tracebacks, and what is sent to devices (commands, uploads, protocol "
    "commands) on stderr; -vv: also every protocol line and SSH/ADB stream detail.",
)
@click.option(
    "--targets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    multiple=True,
    help="Extra directory of target TOML files (also EDGETOOL_TARGETS, ':'-separated).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, targets_dir: tuple[Path, ...]) -> None:
    """Deploy ML models to edge devices and measure latency and energy."""
    State.verbose = verbose > 0
    setup_logging(verbose)
    ctx.obj = {"targets_dirs": list(targets_dir)}


def _json_failure(message: str, exit_code: int, kind: str, run_dir: Path | None) -> None:
    """With --json, a failure is also one JSON object on stdout (scripts parse stdout, not
    stderr), unless the command already printed its document (a verdict exiting 10/11)."""
    from edgetool.cli.common import json_emitted, json_requested, json_text

    # The command line too: an unknown option fails before any option is looked at.
    options = _ARGS[: _ARGS.index("--")] if "--" in _ARGS else _ARGS
    if not (json_requested() or "--json" in options) or json_emitted():
        return
    error: dict[str, Any] = {"message": message, "exit_code": exit_code, "kind": kind}
    if run_dir is not None:
        error["run_dir"] = str(run_dir)
    try:
        sys.stdout.write(json_text({"error": error}) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()


def _quiet_stdout() -> None:
    """stdout's reader is gone: send what is left (and Python's exit flush) nowhere."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


_ARGS: list[str] = []


def _fail(message: str, exit_code: int, kind: str, run_dir: Path | None = None) -> None:
    """The one way a failure leaves: `error: ...` on stderr, JSON on stdout with --json."""
    click.echo(f"error: {message}", err=True)
    if run_dir is not None:
        click.echo(f"what was measured is kept in {run_dir}", err=True)
    _json_failure(message, exit_code, kind, run_dir)
    sys.exit(exit_code)


def main(argv: list[str] | None = None) -> Any:
    from edgetool.cli.common import reset_json_state

    reset_json_state()
    _ARGS[:] = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="edgetool", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit flush
    except click.exceptions.Abort:
        _fail("aborted", 130, "Interrupted")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # One `error:` line like every other failure, not click's three-line usage block.
        context = getattr(exc, "ctx", None)
        where = f" (see `{context.command_path} --help`)" if context is not None else ""
        click.echo(f"error: {exc.format_message()}{where}", err=True)
        _json_failure(exc.format_message(), exc.exit_code, type(exc).__name__, None)
        sys.exit(exc.exit_code)
    except EdgetoolError as exc:
        if State.verbose:
            traceback.print_exc()
        _fail(str(exc), exc.exit_code, type(exc).__name__, exc.run_dir)
    except KeyboardInterrupt:
        _fail("interrupted", 130, "Interrupted")
    except BrokenPipeError:
        # stdout closed early (`edgetool ... | head -1`): the reader has what it wanted.
        # Exit 0, not 141 or 1: `set -o pipefail` scripts should not fail on `| head`.
        _quiet_stdout()
        sys.exit(0)
    except Exception as exc:
        if State.verbose:
            traceback.print_exc()
        click.echo(
            f"error: internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)",
            err=True,
        )
        _json_failure(f"internal error: {type(exc).__name__}: {exc}", 1, "InternalError", None)
        sys.exit(1)
    sys.exit(0)
