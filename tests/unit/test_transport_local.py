"""The verified put that every file transport shares, on the local transport."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from edgetool.errors import TransferError
from edgetool.transport.base import Progress
from edgetool.transport.local import LocalSettings, LocalTransport
from tests.conftest import all_at_once


class FlakyLink(LocalTransport):
    """Flips one byte on the way, as a bad cable or a full-then-freed disk might."""

    def _send_verified(
        self,
        jobs: Sequence[tuple[Path, str, str]],
        progress_for: Callable[[Path], Progress | None],
    ) -> dict[Path, float]:
        flipped = []
        for local, remote, sha in jobs:
            data = bytearray(local.read_bytes())
            data[len(data) // 2] ^= 0xFF
            bad = local.with_name(local.name + ".flipped")
            bad.write_bytes(bytes(data))
            flipped.append((bad, remote, sha))  # what arrives is not what was hashed
        return super()._send_verified(flipped, progress_for)


def test_unchanged_file_is_not_sent_again_and_changed_one_is(tmp_path: Path) -> None:
    device = LocalTransport(LocalSettings(root=tmp_path / "device"))
    src = tmp_path / "model.onnx"
    src.write_bytes(b"a" * 1000)
    first = device.put(src, "dir/model.onnx")
    assert (first.skipped, first.bytes_sent) == (False, 1000)
    again = device.put(src, "dir/model.onnx")
    assert (again.skipped, again.bytes_sent) == (True, 0)
    src.write_bytes(b"b" * 10)
    changed = device.put(src, "dir/model.onnx")
    assert changed.bytes_sent == 10
    assert (tmp_path / "device" / "dir" / "model.onnx").read_bytes() == b"b" * 10


def test_corruption_in_transit_never_reaches_the_final_path(tmp_path: Path) -> None:
    device = FlakyLink(LocalSettings(root=tmp_path / "device"))
    src = tmp_path / "model.onnx"
    src.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(TransferError, match="arrived corrupted"):
        device.put(src, "m/model.onnx")
    assert list((tmp_path / "device" / "m").iterdir()) == []  # no final file, no .part


def test_put_many_reports_each_file_and_progress(tmp_path: Path) -> None:
    device = LocalTransport(LocalSettings(root=tmp_path / "device"))
    files = []
    for name, size in (("a.bin", 10), ("b.bin", 3_000_000)):
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        files.append((path, f"out/{name}"))
    seen: dict[str, int] = {}

    def progress_for(local: Path) -> Progress:
        return lambda done, total: seen.__setitem__(local.name, done)

    results = device.put_many(files, progress_for)
    assert [r.bytes_sent for r in results] == [10, 3_000_000]
    assert seen == {"a.bin": 10, "b.bin": 3_000_000}


def test_two_puts_of_the_same_new_file_at_once_both_land_whole(tmp_path: Path) -> None:
    """Two deploys of one new model used to share `<file>.part`: one read the other's half
    file or found it renamed away. Each upload now has its own temporary."""
    src = tmp_path / "big.onnx"
    src.write_bytes(bytes(range(256)) * 40_000)

    def deploy() -> object:
        return LocalTransport(LocalSettings(root=tmp_path / "device")).put(src, "m/big.onnx")

    _, errors = all_at_once(4, deploy)
    assert errors == []
    assert (tmp_path / "device" / "m" / "big.onnx").read_bytes() == src.read_bytes()
    assert [p.name for p in (tmp_path / "device" / "m").iterdir()] == ["big.onnx"]


def test_a_link_planted_at_a_temporary_name_is_never_followed(tmp_path: Path) -> None:
    from edgetool.transport.base import part_name
    from edgetool.transport.local import _copy_hashing

    device = LocalTransport(LocalSettings(root=tmp_path / "device"))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "device" / "m").mkdir(parents=True)
    planted = part_name("m/model.onnx")
    (tmp_path / "device" / planted).symlink_to(victim)
    src = tmp_path / "model.onnx"
    src.write_bytes(b"x" * 100)
    with pytest.raises(FileExistsError):  # O_EXCL: the name is taken, the link not followed
        _copy_hashing(src, device.root / planted, None)
    assert victim.read_bytes() == b"precious"
    assert part_name("m/model.onnx") != part_name("m/model.onnx")  # unpredictable
