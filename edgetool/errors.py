"""One exception root for everything a user can cause or fix.

Each subclass carries the process exit code documented in the README, so scripts
(and the nightly farm) can tell a bad config from a dead device without parsing text.
"""

from __future__ import annotations

from pathlib import Path


class EdgetoolError(Exception):
    """Root of user-facing errors: the message is one line that says what to do."""

    exit_code = 1
    failure_class = "error"
    """How the farm classes a job whose deploy exits with this code (`retry.on`)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.run_dir: Path | None = None
        """Set when the failure happened after a run directory was created (kept, partial)."""

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        # A message listing several problems, one a line, keeps its hint off the last one.
        separator = "\n" if "\n" in self.message else " "
        return f"{self.message}{separator}{self.hint}"


class UsageError(EdgetoolError):
    """An option this target cannot honour: refused before anything is exported or
    connected (as Click's own usage errors), never recorded in a manifest as if applied."""

    exit_code = 2
    failure_class = "config"


class ModelError(EdgetoolError):
    """The model file is missing, corrupt, or does not fit the inputs or the device."""

    exit_code = 3
    failure_class = "model"


class HostKeyError(EdgetoolError):
    """The device's SSH host key is unknown or changed: never connect past it."""

    exit_code = 4
    failure_class = "config"


class ConfigError(EdgetoolError):
    """A target/plan file is missing, malformed or names something unknown."""

    exit_code = 5
    failure_class = "config"


class ConnectError(EdgetoolError):
    """The device cannot be reached or refuses our credentials."""

    exit_code = 6
    failure_class = "connect"


class DeviceError(EdgetoolError):
    """The device was reached but cannot do the work (no runtime, disk full, hung)."""

    exit_code = 7
    failure_class = "device"


class TransferError(EdgetoolError):
    """A file did not arrive on the device intact."""

    exit_code = 8
    failure_class = "transfer"


class ResultsError(EdgetoolError):
    """A run directory is missing or unreadable."""

    exit_code = 9
    failure_class = "error"


class Regression(EdgetoolError):
    """A comparison found a change beyond the threshold (for nightly gating)."""

    exit_code = 10


class VerificationFailed(EdgetoolError):
    """An artifact does not match its reference within the tolerances."""

    exit_code = 11
    failure_class = "model"


class JobsFailed(EdgetoolError):
    """`farm run`: one or more jobs of the night failed (the rest ran; see summary.json)."""

    exit_code = 12


class Inconclusive(EdgetoolError):
    """A comparison could not decide (too few repetitions, an interval straddling the
    threshold, a partial run) or refused to (different device or input shapes)."""

    exit_code = 13


class Interrupted(EdgetoolError):
    """The user stopped the run; what was measured is kept."""

    exit_code = 130


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error (a bug: rerun with -v and report the traceback)",
    2: "usage error (bad option or argument)",
    ModelError.exit_code: "model error: missing, corrupt, wrong input shape",
    HostKeyError.exit_code: "SSH host key not trusted or changed",
    ConfigError.exit_code: "configuration error: unknown target, malformed TOML",
    ConnectError.exit_code: "cannot connect: unreachable host, authentication failed",
    DeviceError.exit_code: "device error: runtime missing, disk full, runner failed or hung",
    TransferError.exit_code: "transfer error: upload did not verify",
    ResultsError.exit_code: "results error: run not found or unreadable",
    Regression.exit_code: "regression: a compared run got worse beyond the threshold",
    VerificationFailed.exit_code: "verification failed: artifact differs from its reference",
    JobsFailed.exit_code: "farm: one or more jobs of the night failed (see its summary.json)",
    Inconclusive.exit_code: "comparison inconclusive or not comparable (no regression found)",
    Interrupted.exit_code: "interrupted (partial results kept)",
}


def failure_class_of(exit_code: int) -> str:
    """The failure class of a process that exited with EXIT_CODE (a farm job's deploy)."""
    for cls in _all_subclasses(EdgetoolError):
        if cls.exit_code == exit_code:
            return cls.failure_class
    return EdgetoolError.failure_class


def _all_subclasses(cls: type[EdgetoolError]) -> list[type[EdgetoolError]]:
    found: list[type[EdgetoolError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found
