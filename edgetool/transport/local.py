"""The host itself as a device: commands run as subprocesses inside a sandbox directory."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgetool import paths
from edgetool.config import TableReader, expand_path
from edgetool.errors import DeviceError, TransferError
from edgetool.transport.base import (
    CHUNK,
    FileTransport,
    Progress,
    TransportType,
    corrupted,
    part_name,
    shown_argv,
    split_lines,
)

log = logging.getLogger(__name__)

KILL_GRACE = 2.0
"""Seconds a stopped command's group has between SIGTERM and SIGKILL."""


@dataclass(frozen=True)
class LocalSettings:
    """`root` is the sandbox the local device works in (default: the cache dir)."""

    type: ClassVar[str] = "local"

    root: Path | None = None
    command_timeout: float = 3600.0
    idle_timeout: float = 120.0

    def where(self) -> str:
        """Where the device is, as `targets list` shows it."""
        return ""


def _parse_local(reader: TableReader) -> LocalSettings:
    root = reader.text("root")
    settings = LocalSettings(
        root=expand_path(root) if root else None,
        command_timeout=reader.number("command_timeout", 3600.0),
        idle_timeout=reader.number("idle_timeout", 120.0),
    )
    reader.finish()
    return settings


class LocalProcess:
    def __init__(self, argv: Sequence[str], cwd: Path, idle_timeout: float, total_timeout: float):
        self._argv = list(argv)
        try:
            self._popen = subprocess.Popen(
                self._argv,
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # Its own session: the whole group (the runner and anything it started) can
                # be signalled on a timeout or an interrupt, and a Ctrl-C in the terminal
                # reaches edgetool, which stops the group, rather than the runner alone.
                start_new_session=True,
            )
        except OSError as exc:
            raise DeviceError(
                f"local: cannot run {argv[0]!r}: {exc.strerror}",
                hint="Set 'python' in the target file to an interpreter that exists.",
            ) from exc
        self._idle = idle_timeout
        self._deadline = time.monotonic() + total_timeout
        self._stderr: list[bytes] = []
        assert self._popen.stderr is not None
        stderr = self._popen.stderr
        self._drain = threading.Thread(
            target=lambda: self._stderr.extend(iter(lambda: stderr.read(4096), b"")),
            daemon=True,
        )
        self._drain.start()

    def lines(self) -> Iterator[str]:
        return split_lines(self._chunks())

    def _chunks(self) -> Iterator[bytes]:
        stdout = self._popen.stdout
        assert stdout is not None
        fd = stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        try:
            while True:
                wait = min(self._idle, self._deadline - time.monotonic())
                if wait <= 0 or not selector.select(timeout=wait):
                    self.kill()
                    raise DeviceError(
                        f"local: {os.path.basename(self._argv[0])} produced no output for "
                        f"{self._idle:.0f} s or ran past its time limit; stopped it."
                    )
                data = os.read(fd, CHUNK)
                if not data:
                    return
                yield data
        finally:
            selector.close()

    def wait(self) -> int:
        status = self._popen.wait()
        self._drain.join(timeout=5)
        log.debug("%s (pid %d) exited with status %d", self._argv[0], self._popen.pid, status)
        return status

    def stderr_text(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def send(self, data: bytes) -> None:
        stdin = self._popen.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            stdin.flush()
        except OSError as exc:
            raise DeviceError(f"local: {os.path.basename(self._argv[0])} stopped reading") from exc

    def kill(self) -> None:
        """Stop the command's whole process group: SIGTERM, then SIGKILL after a grace
        period. Closing stdin first also ends a runner that watches it."""
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError):
                self._popen.stdin.close()
        pgid = self._popen.pid  # a session leader: its pid is its group's id
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self._popen.poll() is not None and not _group_alive(pgid):
                return
            log.debug("signal %s to process group %d (%s)", sig.name, pgid, self._argv[0])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=KILL_GRACE)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class LocalTransport(FileTransport):
    """Paths are relative to the sandbox root, exactly as SSH paths are relative to home."""

    def __init__(self, settings: LocalSettings, python: str | None = None) -> None:
        self.settings = settings
        self.root = settings.root or paths.cache_dir() / "local-device"
        self.root.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self.description = f"local ({self.root})"

    def _path(self, remote: str) -> Path:
        return self.root / remote

    def run(self, argv: Sequence[str]) -> LocalProcess:
        log.info("run %s", shown_argv(argv))
        return LocalProcess(
            argv, self.root, self.settings.idle_timeout, self.settings.command_timeout
        )

    def _send_verified(
        self,
        jobs: Sequence[tuple[Path, str, str]],
        progress_for: Callable[[Path], Progress | None],
    ) -> dict[Path, float]:
        """Copy each file to a fresh `.part` (O_EXCL|O_NOFOLLOW: never through a planted
        link), hashing as it is written; rename on a match, else remove it."""
        seconds: dict[Path, float] = {}
        for local, remote, sha in jobs:
            began = time.perf_counter()
            partial = self._path(part_name(remote))
            partial.parent.mkdir(parents=True, exist_ok=True)
            try:
                got = _copy_hashing(local, partial, progress_for(local))
            except OSError as exc:
                partial.unlink(missing_ok=True)
                raise TransferError(
                    f"{self.description}: upload of {local.name} failed ({exc}); "
                    "nothing was written at the final path."
                ) from exc
            if got != sha:
                partial.unlink(missing_ok=True)
                raise corrupted(self.description, local.name, got, sha)
            partial.replace(self._path(remote))
            seconds[local] = time.perf_counter() - began
        return seconds

    def makedirs(self, path: str) -> None:
        if path:
            self._path(path).mkdir(parents=True, exist_ok=True)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(self._path(remote), local)

    def close(self) -> None:
        pass


def _copy_hashing(local: Path, partial: Path, progress: Progress | None) -> str:
    """Copy `local` to a new file `partial` (created exclusively, never through a link),
    fsynced; the sha256 of the bytes written."""
    total = local.stat().st_size
    done = 0
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with local.open("rb") as src, os.fdopen(os.open(partial, flags, 0o644), "wb") as dst:
        for block in iter(lambda: src.read(CHUNK), b""):
            digest.update(block)
            dst.write(block)
            done += len(block)
            if progress:
                progress(done, total)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def _open(settings: LocalSettings, target_name: str, python: str | None) -> LocalTransport:
    return LocalTransport(settings, python)


TRANSPORT = TransportType("local", LocalSettings, _parse_local, open_files=_open)
