"""The emulated Pi's pieces that need no boot: the initrd, the recipe, the CLI's errors."""

from __future__ import annotations

import gzip
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from edgetool.emulate.debian_image import Recipe
from edgetool.emulate.initrd import build_initrd, module_closure, module_dependencies
from edgetool.errors import ConfigError
from tests.conftest import assert_one_line_error


def fake_module(depends: str) -> bytes:
    """The bytes a .ko carries in its .modinfo section (NUL-separated key=value)."""
    return b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=6.1\0"


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """An independent reader of the cpio 'newc' format (name -> mode, data, rdev)."""
    entries: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    at = 0
    while True:
        header = data[at : at + 110]
        assert header[:6] == b"070701", f"bad magic at {at}"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        rdev = (fields[9], fields[10])
        name_end = at + 110 + namesize
        name = data[at + 110 : name_end - 1].decode()
        assert data[name_end - 1] == 0
        body_at = name_end + (-name_end % 4)
        body = data[body_at : body_at + size]
        at = body_at + size + (-(body_at + size) % 4)
        if name == "TRAILER!!!":
            assert at == len(data)
            return entries
        entries[name] = (mode, body, rdev)


def test_module_dependencies_are_read_from_modinfo() -> None:
    assert module_dependencies(fake_module("jbd2,mbcache,crc16")) == ["jbd2", "mbcache", "crc16"]
    assert module_dependencies(fake_module("")) == []
    assert module_dependencies(b"no modinfo here") == []
    assert module_dependencies(fake_module("virtio-pci-legacy-dev")) == ["virtio_pci_legacy_dev"]


def test_closure_orders_dependencies_first_and_skips_built_ins() -> None:
    modules = {
        "ext4": fake_module("jbd2,mbcache,crc16"),
        "jbd2": fake_module(""),
        "mbcache": fake_module(""),
        "virtio_blk": fake_module("virtio"),  # virtio is built in: not a module here
        "unused": fake_module(""),
    }
    order = module_closure(["virtio_blk", "ext4"], modules)
    assert order == ["virtio_blk", "jbd2", "mbcache", "ext4"]
    with pytest.raises(ValueError, match="cycle"):
        module_closure(["a"], {"a": fake_module("b"), "b": fake_module("a")})


def test_initrd_is_a_gzipped_newc_archive_with_init_busybox_and_modules() -> None:
    modules = {
        "virtio_pci": fake_module("virtio_pci_modern_dev"),
        "virtio_pci_modern_dev": fake_module(""),
        "virtio_blk": fake_module(""),
        "crc32c_generic": fake_module(""),
        "ext4": fake_module("jbd2"),
        "jbd2": fake_module(""),
    }
    image = build_initrd(b"BUSYBOX-ELF", modules)
    assert image == build_initrd(b"BUSYBOX-ELF", modules), "the same inputs give the same bytes"
    entries = parse_newc(gzip.decompress(image))
    mode, init, _ = entries["init"]
    assert stat.S_ISREG(mode) and mode & 0o111 and init.startswith(b"#!/bin/busybox sh")
    assert b"switch_root /newroot /sbin/init" in init
    assert entries["bin/busybox"][1] == b"BUSYBOX-ELF"
    console_mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(console_mode) and rdev == (5, 1)
    order = entries["modules.order"][1].decode().split()
    assert order.index("virtio_pci_modern_dev") < order.index("virtio_pci")
    assert order.index("jbd2") < order.index("ext4")
    assert all(f"modules/{name}.ko" in entries for name in order)


def test_initrd_refuses_a_kernel_without_the_root_disk_modules() -> None:
    with pytest.raises(ValueError, match="ext4"):
        build_initrd(b"x", {"virtio_blk": fake_module("")})


def test_recipe_hash_follows_the_contents_and_validates_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EDGETOOL_DEBIAN_MIRROR", raising=False)
    src = Path("t.toml")
    base = Recipe.from_options({}, src)
    assert base.digest() == Recipe.from_options({}, src).digest()
    assert "openssh-server" in base.packages and base.user == "pi"
    assert base.mirrors[0] == "deb http://deb.debian.org/debian bookworm main"
    assert Recipe.from_options({"packages": ["htop"]}, src).digest() != base.digest()
    assert Recipe.from_options({"suite": "trixie"}, src).digest() != base.digest()
    monkeypatch.setenv("EDGETOOL_DEBIAN_MIRROR", "http://mirror.lab/debian")
    assert Recipe.from_options({}, src).mirrors[0].startswith("deb http://mirror.lab/debian ")
    with pytest.raises(ConfigError, match=r"emulator\.packages"):
        Recipe.from_options({"packages": "htop"}, src)
    with pytest.raises(ConfigError, match=r"emulator\.free_mb"):
        Recipe.from_options({"free_mb": 10}, src)


def _target_dir(tmp_path: Path, extra: str = "") -> Path:
    targets = tmp_path / "targets"
    targets.mkdir(exist_ok=True)
    (targets / "pi-emu.toml").write_text(
        'kind = "linux"\n[transport]\ntype = "ssh"\nhost = "127.0.0.1"\n'
        'use_ssh_config = false\n[emulator]\ntype = "qemu-aarch64"\n' + extra
    )
    return targets


def test_missing_qemu_names_the_apt_package(cli: Any, tmp_path: Path) -> None:
    targets = _target_dir(tmp_path)
    out = cli(
        "--targets-dir", str(targets), "emulate", "start", "pi-emu", env={"PATH": "/nonexistent"}
    )
    assert_one_line_error(out, 7, "qemu-system-aarch64 not found")
    assert "apt-get install qemu-system-arm" in out.stderr


def test_a_taken_fixed_port_is_one_clear_error(cli: Any, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        targets = _target_dir(tmp_path, f"port = {port}\n")
        out = cli("--targets-dir", str(targets), "emulate", "start", "pi-emu")
    if out.code == 7 and "qemu-system-aarch64 not found" in out.stderr:
        pytest.skip("qemu-system-aarch64 not installed")
    assert_one_line_error(out, 7, f"port 127.0.0.1:{port}", "taken")


def test_bad_emulator_options_are_config_errors(cli: Any, tmp_path: Path) -> None:
    targets = _target_dir(tmp_path, 'cores = "four"\n')
    out = cli("--targets-dir", str(targets), "emulate", "status", "pi-emu")
    assert_one_line_error(out, 5, "emulator.cores")


def test_status_of_a_never_started_emulator(cli: Any, tmp_path: Path) -> None:
    out = cli("--targets-dir", str(_target_dir(tmp_path)), "emulate", "status", "pi-emu", "--json")
    assert out.code == 0, out.stderr
    assert out.json()["status"] == "stopped" and out.json()["running"] is False
