"""A minimal initrd for Debian's arm64 kernel, built on the host without emulation.

Debian builds `virtio_blk`, `virtio_pci` and `ext4` as modules, so the kernel needs an
initrd to find its root disk. The package's postinst would build one with
initramfs-tools, which under qemu-user takes ~20 minutes; this one holds the rootfs's own
static busybox, the few modules (with their dependencies, read from each module's
`.modinfo`), and a short /init that loads them, mounts /dev/vda and switches root.
"""

from __future__ import annotations

import gzip
import io
import stat
from collections.abc import Iterable, Mapping

# Loaded in this order (dependencies first, found by `module_closure`).
ROOT_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")

INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules.order); do
    insmod "/modules/$module.ko" || echo "edgetool-initrd: insmod $module failed"
done
tries=0
while [ ! -b /dev/vda ] && [ "$tries" -lt 300 ]; do sleep 0.1; tries=$((tries + 1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "edgetool-initrd: cannot mount /dev/vda as ext4; powering off"
    sleep 2
    poweroff -f
fi
umount /sys /proc
mount --move /dev /newroot/dev || umount /dev
echo "edgetool-initrd: root mounted, starting /sbin/init"
exec switch_root /newroot /sbin/init
"""


def module_dependencies(ko: bytes) -> list[str]:
    """The `depends=` list a kernel module carries in its .modinfo strings."""
    marker = b"\0depends="
    at = ko.find(marker)
    if at < 0:
        return []
    end = ko.find(b"\0", at + len(marker))
    value = ko[at + len(marker) : end].decode("ascii", "replace")
    return [name.replace("-", "_") for name in value.split(",") if name]


def module_closure(wanted: Iterable[str], modules: Mapping[str, bytes]) -> list[str]:
    """Module names in a load order where every dependency comes before its user.

    `modules` maps a module name (underscores) to its .ko bytes; a name the kernel does
    not ship as a module (built in) is skipped, as insmod would not find it either."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name not in modules:
            return
        if name in visiting:
            raise ValueError(f"module dependency cycle through {name}")
        visiting.add(name)
        for dependency in module_dependencies(modules[name]):
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def _newc_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One cpio 'newc' record: 110-byte ASCII header, name, data, each padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    fields = [
        0,  # inode (the kernel's unpacker does not need unique ones without hard links)
        mode,
        0,  # uid
        0,  # gid
        1,  # nlink
        0,  # mtime: fixed, so the same inputs give the same bytes
        len(data),
        0,  # dev major
        0,  # dev minor
        rdev[0],
        rdev[1],
        len(encoded),
        0,  # check
    ]
    header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
    record = header + encoded
    record += b"\0" * (-len(record) % 4)
    record += data
    record += b"\0" * (-len(record) % 4)
    return record


def build_initrd(busybox: bytes, modules: Mapping[str, bytes]) -> bytes:
    """A gzip-compressed cpio archive the kernel unpacks as its first root."""
    order = module_closure(ROOT_MODULES, modules)
    missing = [name for name in ("virtio_blk", "ext4") if name not in order]
    if missing:
        raise ValueError(f"the kernel ships no {', '.join(missing)} module")
    out = io.BytesIO()
    dirs = ("bin", "dev", "modules", "proc", "sys", "newroot")
    for directory in dirs:
        out.write(_newc_entry(directory, stat.S_IFDIR | 0o755))
    out.write(_newc_entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    out.write(_newc_entry("bin/busybox", stat.S_IFREG | 0o755, busybox))
    out.write(_newc_entry("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode()))
    out.write(_newc_entry("modules.order", stat.S_IFREG | 0o644, "\n".join(order).encode()))
    for name in order:
        out.write(_newc_entry(f"modules/{name}.ko", stat.S_IFREG | 0o644, modules[name]))
    out.write(_newc_entry("TRAILER!!!", 0))
    return gzip.compress(out.getvalue(), compresslevel=6, mtime=0)
