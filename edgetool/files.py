"""Host files written and identified the same way everywhere: export, results, transports
and emulators all share these, so none of them imports another for a file helper.

Atomic writes go through a temporary file beside the target, fsynced, then renamed over
it: a reader (or a crash, or a Ctrl-C) sees the old file or the new one, never half.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

HASH_CHUNK = 1 << 20
"""Bytes read per step while hashing: large enough that the hash, not Python, is the cost."""


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes: an artifact's identity and a put's check."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(
    path: Path, write: Callable[[IO[str]], object], mode: int | None = None
) -> None:
    """Write through `write` into a temporary file, fsync, then rename: a reader (or a
    crash) never sees half a file. `mode` widens mkstemp's private 0600 for shared files."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """`data` written as `write_text_atomic` writes text: a model file another process may
    be loading (a cached split head or tail) is never seen half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as indented, key-sorted JSON with a final newline, written atomically."""

    def dump(handle: IO[str]) -> None:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")

    write_text_atomic(path, dump)
