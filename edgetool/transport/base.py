"""What every device connection implements: FileTransport (commands and verified files)
or BytePort (a line protocol over a UART or BLE), and how a transport type registers.

A command is always an argv list. Transports that need a shell string (SSH) build it with
`quote_argv`, so no file name or config value is ever interpreted by a remote shell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import secrets
import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from edgetool.errors import DeviceError, TransferError
from edgetool.files import file_sha256

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a file moves."""

CHUNK = 1 << 20

# Runs on the device with any Python 3: for each path, its sha256 (or null), and the free
# bytes in the directory that would hold it. One round trip decides skip/upload/disk-full.
_PROBE = r"""
import hashlib, json, os, sys
out = {}
for p in sys.argv[1:]:
    d = os.path.dirname(p) or "."
    while d and not os.path.isdir(d):
        d = os.path.dirname(d) or "."
    st = os.statvfs(d)
    entry = {"free": st.f_bavail * st.f_frsize, "sha256": None}
    if os.path.isfile(p):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        entry["sha256"] = h.hexdigest()
    out[p] = entry
print(json.dumps(out))
"""


# Runs on the device: for each [part, final, sha256], rename part -> final only if the
# part's hash matches (else delete it); reply {final: null | the wrong hash}. Temporaries
# of the same file left by uploads cut off over 10 minutes ago are removed (younger ones
# may belong to a deploy still sending). Used by transports that cannot stream into a
# remote command (ADB's sync protocol writes the file itself).
_COMMIT = r"""
import hashlib, json, os, sys, time
out = {}
for part, final, want in json.loads(sys.argv[1]):
    h = hashlib.sha256()
    with open(part, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    got = h.hexdigest()
    if got == want:
        os.replace(part, final)
        out[final] = None
    else:
        os.remove(part)
        out[final] = got
    folder, name = os.path.split(final)
    for entry in os.listdir(folder or "."):
        if entry.startswith("." + name + ".") and entry.endswith(".part"):
            stale = os.path.join(folder, entry)
            try:
                if time.time() - os.lstat(stale).st_mtime > 600:
                    os.remove(stale)
            except OSError:
                pass
print(json.dumps(out))
"""

# Runs on the device with any Python 3: one put_many in one command. argv[1] is the
# JSON list of final paths. First line out: for each path, its sha256 (or null) and the
# free bytes in the directory that would hold it (what _PROBE answers). Then one line in:
# the JSON list of [index, part, sha256, size] the host sends, followed by exactly those
# files' bytes in that order; an empty line or end of input ends it with nothing written.
# Each file goes into its PART, created exclusively and never through a link, hashed as
# it is written; PART -> FINAL only on a sha256 match, else PART is deleted. A file that
# cannot be written is still read to its end, so the next one stays in step. One JSON
# line out per file, flushed: {"sha256": what arrived, "size": bytes read} or
# {"error": why}. A stream that ends early (the host or the link died) leaves no PART.
# Same-file temporaries of uploads cut off over 10 minutes ago are removed, as _COMMIT
# does.
_RECEIVE = r"""
import hashlib, json, os, sys, time
finals = json.loads(sys.argv[1])
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def present(path):
    d = os.path.dirname(path) or "."
    while d and not os.path.isdir(d):
        d = os.path.dirname(d) or "."
    st = os.statvfs(d)
    sha = sha256_of(path) if os.path.isfile(path) else None
    return {"free": st.f_bavail * st.f_frsize, "sha256": sha}


def why(exc, part):
    return "%s: %s" % (exc.filename or part, exc.strerror or exc)


def receive(src, part, final, want, size):
    h = hashlib.sha256()
    left, fd, error = size, -1, None
    try:
        os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
        fd = os.open(part, FLAGS, 0o644)
    except OSError as exc:
        error = why(exc, part)
    while left:
        block = src.read1(min(left, 1 << 20))
        if not block:
            break
        left -= len(block)
        h.update(block)
        if fd >= 0 and error is None:
            try:
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:
                error = why(exc, part)
    got = h.hexdigest()
    if fd >= 0:
        renamed = False
        try:
            os.close(fd)
            if error is None and not left and got == want:
                os.replace(part, final)
                renamed = True
        except OSError as exc:
            error = error or why(exc, part)
        if not renamed:
            try:
                os.remove(part)
            except OSError:
                pass
    if error is not None:
        return {"error": error, "size": size - left}
    return {"sha256": got, "size": size - left}


def clear_stale(final):
    folder, name = os.path.split(final)
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return
    for entry in entries:
        if entry.startswith("." + name + ".") and entry.endswith(".part"):
            stale = os.path.join(folder, entry)
            try:
                if time.time() - os.lstat(stale).st_mtime > 600:
                    os.remove(stale)
            except OSError:
                pass


print(json.dumps([present(p) for p in finals]), flush=True)
src = sys.stdin.buffer
head = src.readline()
for index, part, want, size in json.loads(head) if head.strip() else []:
    reply = receive(src, part, finals[index], want, size)
    print(json.dumps(reply), flush=True)
    if reply["size"] < size:
        break
    clear_stale(finals[index])
"""


def part_name(remote: str) -> str:
    """A temporary name beside `remote` that nobody can predict: a link planted at a
    fixed `<file>.part` can no longer redirect an upload, and two deploys of the same new
    file never write into one temporary (each renames its own, verified, into place).
    Transports that can also create it exclusively (O_EXCL: never through a link) do."""
    folder, name = posixpath.split(remote)
    return posixpath.join(folder, f".{name}.{secrets.token_hex(8)}.part")


def quote_argv(argv: Sequence[str]) -> str:
    """One POSIX shell string that a remote `sh -c` splits back into exactly `argv`."""
    if not argv:
        raise ValueError("empty command")
    for arg in argv:
        if "\x00" in arg:
            raise ValueError("a command argument cannot contain a NUL byte")
    return shlex.join(argv)


def shown_argv(argv: Sequence[str]) -> str:
    """An argv for the log, shell-quoted as `quote_argv` sends it; a device-side script
    passed inline (`-c` code, many lines) is shortened so one command stays one line."""
    return shlex.join(
        f"<{len(arg.splitlines())}-line script>" if "\n" in arg else arg for arg in argv
    )


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Reassemble a byte stream that arrives in arbitrary pieces into text lines."""
    buffer = b""
    for data in chunks:
        buffer += data
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
    if buffer:
        yield buffer.decode("utf-8", "replace")


def receiver_argv(python: str, remotes: Sequence[str]) -> list[str]:
    """The one device command of a put_many that answers what is at `remotes`, then
    receives files on stdin and verifies each as it writes (`_RECEIVE`); python -S:
    stdlib only, no site start-up hooks."""
    return [python, "-S", "-c", _RECEIVE, json.dumps(list(remotes))]


def corrupted(description: str, name: str, arrived: str, want: str) -> TransferError:
    return TransferError(
        f"{description}: {name} arrived corrupted (sha256 {arrived[:12]} != {want[:12]}); "
        "nothing was written at the final path."
    )


@dataclass(frozen=True)
class PutResult:
    """`seconds` is this file's upload time (0 when skipped); the device command(s) that
    answer what is there and commit are shared."""

    remote: str
    sha256: str
    size: int
    bytes_sent: int
    skipped: bool
    seconds: float


class Process(Protocol):
    """A command running on the device."""

    def lines(self) -> Iterator[str]:
        """Stdout lines as they arrive; raises DeviceError when the device goes silent."""
        ...

    def wait(self) -> int:
        """Exit status (negative or 255 when killed or the connection dropped)."""
        ...

    def stderr_text(self) -> str: ...

    def send(self, data: bytes) -> None:
        """Write to the command's stdin (the clock probe's round trips)."""

    def kill(self) -> None: ...


class Delivery(Protocol):
    """One put_many's exchange with the device (`FileTransport.deliver`)."""

    def existing(self) -> dict[str, dict[str, int | str | None]]:
        """For each remote path: its sha256 (or None) and the free bytes where it goes."""
        ...

    def send(
        self,
        jobs: Sequence[tuple[Path, str, str]],
        progress_for: Callable[[Path], Progress | None],
    ) -> dict[Path, float]:
        """Send each (local, remote, sha256), renamed into place only once its hash
        matched on the device; {local: upload seconds}. Called at most once."""
        ...

    def close(self) -> None:
        """End the exchange (whatever was not sent is not written); never raises."""
        ...


class FileTransport(ABC):
    """The verified put every file-system transport shares.

    Upload to a fresh `.<final>.<random>.part` (created exclusively where the transport
    can), check its sha256 *on the device*, then rename atomically: a dropped connection
    can leave a `.part` file but never a half file at the final path.
    A remote file whose hash already matches is not sent again.
    """

    description: str
    python: str
    python_hint = "Set 'python' in the target file to the device's interpreter."
    """What to do when `python` is missing on the device (a provisioned target: provision)."""

    @abstractmethod
    def run(self, argv: Sequence[str]) -> Process: ...

    @abstractmethod
    def get(self, remote: str, local: Path) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def makedirs(self, path: str) -> None:
        """mkdir -p on the device."""

    def run_checked(self, argv: Sequence[str]) -> str:
        """Run a short command and return its stdout; a non-zero exit is a DeviceError."""
        try:
            proc = self.run(argv)
        except DeviceError as exc:
            if argv[0] == self.python and exc.hint:
                exc.hint = self.python_hint  # a local interpreter that does not exist
            raise
        out = "\n".join(proc.lines())
        status = proc.wait()
        if status != 0:
            err = proc.stderr_text().strip().splitlines()
            detail = err[-1] if err else f"exit status {status}"
            if "No such file" in detail or status == 127:
                raise DeviceError(
                    f"{self.description}: cannot run {argv[0]!r}: {detail}",
                    hint=self.python_hint
                    if argv[0] == self.python
                    else "Set 'python' in the target file to the device's interpreter.",
                )
            raise DeviceError(f"{self.description}: {argv[0]} failed: {detail}")
        return out

    def remote_json(self, script: str, *args: str) -> dict[str, Any]:
        """Run a stdlib-only script with the device's python; its stdout is one JSON object."""
        # -S: stdlib only, so site-packages' .pth start-up hooks do not slow every call.
        out = self.run_checked([self.python, "-S", "-c", script, *args])
        try:
            result: dict[str, Any] = json.loads(out)
        except ValueError as exc:
            raise DeviceError(f"{self.description}: unexpected reply {out[:80]!r}") from exc
        return result

    def probe(self, remotes: Sequence[str]) -> dict[str, dict[str, int | str | None]]:
        """sha256 (or None) and free bytes for each remote path, in one round trip."""
        return self.remote_json(_PROBE, *remotes)

    def commit(self, jobs: Sequence[tuple[str, str, str]]) -> dict[str, str | None]:
        """For each (part, final, sha256): rename part -> final on the device only if its
        hash matches, else delete it; {final: None | the hash that arrived}."""
        return self.remote_json(_COMMIT, json.dumps([list(job) for job in jobs]))

    def put(self, local: Path, remote: str, progress: Progress | None = None) -> PutResult:
        return self.put_many([(local, remote)], lambda _path: progress)[0]

    def put_many(
        self,
        files: Sequence[tuple[Path, str]],
        progress_for: Callable[[Path], Progress | None] = lambda _path: None,
    ) -> list[PutResult]:
        """What is already on the device decides what to send (a remote file whose hash
        matches is skipped); the rest is sent so that there is never a half or
        unverified file at its final path. The device side starts first (`deliver`), so
        hashing the local files overlaps with it."""
        delivery = self.deliver([remote for _, remote in files])
        try:
            shas = {local: file_sha256(local) for local, _ in files}
            info = delivery.existing()
            needed = [(lo, re) for lo, re in files if info[re]["sha256"] != shas[lo]]
            self._check_space(needed, info)
            for local, remote in files:
                if (local, remote) not in needed:
                    log.info("put %s -> %s: skipped, hash matches", local.name, remote)
                else:
                    size = local.stat().st_size
                    log.info("put %s -> %s (%d bytes)", local.name, remote, size)
            upload_seconds = delivery.send(
                [(local, remote, shas[local]) for local, remote in needed], progress_for
            )
        finally:
            delivery.close()
        results = []
        for local, remote in files:
            size = local.stat().st_size
            skipped = (local, remote) not in needed
            if skipped:
                progress = progress_for(local)
                if progress:
                    progress(size, size)
            seconds = upload_seconds.get(local, 0.0)
            results.append(
                PutResult(remote, shas[local], size, 0 if skipped else size, skipped, seconds)
            )
        return results

    def deliver(self, remotes: Sequence[str]) -> Delivery:
        """Begin one put_many to `remotes`. This default asks with `probe` and sends with
        `_send_verified` (two remote commands or more); a transport that can run the
        whole exchange as one device command overrides it."""
        return _ProbeThenSend(self, remotes)

    def _send_verified(
        self,
        jobs: Sequence[tuple[Path, str, str]],
        progress_for: Callable[[Path], Progress | None],
    ) -> dict[Path, float]:
        """Send each (local, remote, sha256) so that only a file whose hash matched *on the
        device* reaches its final name; {local: upload seconds}.

        This default uploads every file to its `.part` name, then verifies and renames them
        all with one `commit` command (which reads each file again on the device).
        Transports that can stream into a remote command override it to verify while
        receiving."""
        sent: list[tuple[Path, str, str, str]] = []
        seconds: dict[Path, float] = {}
        for local, remote, sha in jobs:
            self.makedirs(posixpath.dirname(remote))
            partial = part_name(remote)
            began = time.perf_counter()
            try:
                self._upload(local, partial, progress_for(local))
            except OSError as exc:
                self._try_remove(partial)
                raise TransferError(
                    f"{self.description}: upload of {local.name} failed ({exc}); "
                    "nothing was written at the final path."
                ) from exc
            seconds[local] = time.perf_counter() - began
            log.debug("sent %s as %s in %.3f s", local.name, partial, seconds[local])
            sent.append((local, remote, sha, partial))
        if sent:
            arrived = self.commit([(partial, remote, sha) for _, remote, sha, partial in sent])
            for local, remote, sha, _ in sent:
                if arrived[remote] is not None:
                    raise corrupted(self.description, local.name, str(arrived[remote]), sha)
        return seconds

    def _upload(self, local: Path, remote: str, progress: Progress | None) -> None:
        """Write `local` at `remote` (a fresh `.part` name), for the default
        `_send_verified`; transports that override that need not implement this."""
        raise NotImplementedError(f"{type(self).__name__} streams its uploads")

    def _remove(self, path: str) -> None:
        """Remove a remote file (the default `_send_verified` cleans up with it)."""
        raise NotImplementedError(f"{type(self).__name__} streams its uploads")

    def _check_space(
        self, needed: Sequence[tuple[Path, str]], info: dict[str, dict[str, int | str | None]]
    ) -> None:
        """Refuse before sending a byte when the files cannot fit (per device directory)."""
        demand: dict[str, int] = {}
        for local, remote in needed:
            folder = posixpath.dirname(remote) or "."
            demand[folder] = demand.get(folder, 0) + local.stat().st_size
            free = int(info[remote]["free"] or 0)
            if demand[folder] > free:
                raise DeviceError(
                    f"{self.description}: disk full: {local.name} needs "
                    f"{local.stat().st_size:,} bytes, {folder} has {free:,} free.",
                    hint="Free space on the device or set 'workdir' in the target file.",
                )

    def _try_remove(self, path: str) -> None:
        # The connection may be gone; a stray .part is never used, and a later commit of
        # the same file removes it once it is 10 minutes old.
        with contextlib.suppress(Exception):
            self._remove(path)


class BytePort(Protocol):
    """A byte stream a line protocol runs over (pyserial's Serial has all of it)."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...


class TransportSettings(Protocol):
    """A transport's validated `[transport]` table (a frozen dataclass in its module)."""

    type: ClassVar[str]

    def where(self) -> str: ...


@dataclass(frozen=True)
class TransportType:
    """One registered transport: how to read its `[transport]` table and how to open it.

    A file transport (commands, files) sets `open_files`; a byte transport (a UART or BLE
    console that firmware speaks a line protocol on) sets `open_port`.
    """

    name: str
    settings: type[Any]
    parse: Callable[[Any], Any]
    """TableReader of the `[transport]` table -> the settings object."""
    open_files: Callable[[Any, str, str | None], FileTransport] | None = None
    """(settings, target name, device python or None) -> an open FileTransport."""
    open_port: Callable[[Any], BytePort] | None = None
    """settings -> an open BytePort."""


class _ProbeThenSend:
    """The default delivery: `probe`, then `_send_verified`."""

    def __init__(self, transport: FileTransport, remotes: Sequence[str]) -> None:
        self.transport = transport
        self.remotes = list(remotes)

    def existing(self) -> dict[str, dict[str, int | str | None]]:
        return self.transport.probe(self.remotes)

    def send(
        self,
        jobs: Sequence[tuple[Path, str, str]],
        progress_for: Callable[[Path], Progress | None],
    ) -> dict[Path, float]:
        return self.transport._send_verified(jobs, progress_for)

    def close(self) -> None:
        pass
