"""edgetool.files: the shared hash and atomic writes (an interrupted write keeps the old
file and leaves no temporary behind)."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import IO

import pytest

from edgetool.files import (
    HASH_CHUNK,
    file_sha256,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_file_sha256_spans_read_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * (HASH_CHUNK // 256 * 2 + 3)  # two chunks and a bit
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old\n")

    def half_then_fail(handle: IO[str]) -> None:
        handle.write("new, half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_modes_and_json_layout(tmp_path: Path) -> None:
    shared = tmp_path / "report.html"
    write_text_atomic(shared, lambda handle: handle.write("<p>"), mode=0o644)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    private = tmp_path / "private.txt"
    write_text_atomic(private, lambda handle: handle.write("x"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o600  # mkstemp's, unless widened

    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1, 2], "b": 1}


def test_write_bytes_atomic_replaces_whole_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "head.onnx"
    path.write_bytes(b"old")
    write_bytes_atomic(path, b"\x00new\xff")
    assert path.read_bytes() == b"\x00new\xff"
    with pytest.raises(TypeError):
        write_bytes_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"\x00new\xff"
    assert [p.name for p in tmp_path.iterdir()] == ["head.onnx"]
