"""An arm64 Debian disk image for the emulated Raspberry Pi, built offline-reproducibly
from Debian's registry and cached under the user's cache dir, keyed by the recipe's hash.

The root filesystem comes from `mmdebstrap --arch=arm64` (maintainer scripts run under
qemu-user/binfmt). The kernel is Debian's arm64 kernel package, unpacked without its
maintainer scripts: its postinst builds an initramfs, which under qemu-user alone took
~20 minutes, so edgetool builds a small initrd of its own on the host (`initrd.py`).
Host key and client key are generated per build and kept beside the image, so the first
SSH connection to the emulator is already verified (no trust-on-first-use).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgetool import paths
from edgetool.config import TableReader
from edgetool.emulate.host import keygen, require_tool
from edgetool.emulate.initrd import INIT_SCRIPT, ROOT_MODULES, build_initrd
from edgetool.errors import DeviceError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout of a built image changes
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
BASE_PACKAGES = (
    "systemd-sysv",
    "udev",
    "kmod",
    "openssh-server",
    "python3",
    "python3-numpy",
    "python3-venv",
    "iproute2",
    "busybox-static",
)

# Runs on the host inside mmdebstrap's customize phase: $1 is the root, $2 our files.
CUSTOMIZE_HOOK = r"""set -eu
root="$1"; files="$2"; user="$3"; hostname="$4"
# The kernel: the package's files, not its maintainer scripts (see the module docstring).
pkg=$(chroot "$root" apt-cache depends linux-image-arm64 \
      | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
[ -n "$pkg" ] || { echo "edgetool: no linux-image-arm64 dependency found" >&2; exit 1; }
mkdir -p "$root/var/tmp/edgetool-kernel"
chroot "$root" sh -c 'cd /var/tmp/edgetool-kernel &&
    apt-get -q -o APT::Sandbox::User=root download "$1"' sh "$pkg"
dpkg-deb --fsys-tarfile "$root"/var/tmp/edgetool-kernel/*.deb \
    | tar -x --keep-directory-symlink -C "$root"
rm -rf "$root/var/tmp/edgetool-kernel"
version=$(ls "$root/usr/lib/modules" | head -n 1)
chroot "$root" depmod "$version"
echo "$pkg" > "$root/etc/edgetool-kernel-package"
# The login: one user, edgetool's key only; sshd: keys only, the build's host key only.
chroot "$root" useradd --create-home --shell /bin/bash "$user"
install -d -m 700 "$root/home/$user/.ssh"
install -m 600 "$files/authorized_keys" "$root/home/$user/.ssh/authorized_keys"
chroot "$root" chown -R "$user:$user" "/home/$user/.ssh"
rm -f "$root"/etc/ssh/ssh_host_*
install -m 600 "$files/host_ed25519" "$root/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$files/host_ed25519.pub" "$root/etc/ssh/ssh_host_ed25519_key.pub"
install -m 644 "$files/sshd.conf" "$root/etc/ssh/sshd_config.d/edgetool.conf"
install -m 644 "$files/wired.network" "$root/etc/systemd/network/20-wired.network"
install -m 644 "$files/fstab" "$root/etc/fstab"
echo "$hostname" > "$root/etc/hostname"
printf '127.0.1.1\t%s\n' "$hostname" >> "$root/etc/hosts"
chroot "$root" systemctl enable systemd-networkd.service
# Not needed on a benchmark box, and each costs seconds of emulated boot.
for unit in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
            e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer \
            systemd-timesyncd.service; do
    chroot "$root" systemctl mask "$unit" >/dev/null 2>&1 || true
done
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
"""

SSHD_CONF = """# edgetool: keys only, the build's host key only.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
"""
WIRED_NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n"
FSTAB = "/dev/vda / ext4 rw,noatime,errors=remount-ro 0 1\n"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's contents; its hash names the cache entry."""

    suite: str = "bookworm"
    arch: str = "arm64"
    mirrors: tuple[str, ...] = ()
    packages: tuple[str, ...] = BASE_PACKAGES
    user: str = "pi"
    hostname: str = "rpi4-qemu"
    free_mb: int = 2048
    scripts: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], source: Path) -> Recipe:
        """The recipe of `[emulator]` OPTIONS alone (other keys are not judged here)."""
        reader = TableReader(source, options, "emulator.")
        recipe = cls.read(reader)
        reader.check()
        return recipe

    @classmethod
    def read(cls, reader: TableReader) -> Recipe:
        """The image keys of an `[emulator]` table; problems are recorded in READER."""

        def text(key: str, default: str) -> str:
            value = reader.value(key, default)
            if not isinstance(value, str) or not value:
                reader.problem(f"key '{reader.key(key)}' must be a non-empty string")
                return default
            return value

        extra = reader.value("packages", [])
        if not isinstance(extra, list) or not all(isinstance(p, str) for p in extra):
            reader.problem(f"key '{reader.key('packages')}' must be a list of strings")
            extra = []
        free_mb = reader.value("free_mb", 2048)
        if not isinstance(free_mb, int) or free_mb < 256:
            reader.problem(f"key '{reader.key('free_mb')}' must be an integer >= 256")
            free_mb = 2048
        suite = text("suite", "bookworm")
        configured_mirror = text("mirror", DEFAULT_MIRROR)
        mirror = os.environ.get("EDGETOOL_DEBIAN_MIRROR") or configured_mirror
        security = text("security_mirror", DEFAULT_SECURITY)
        mirrors = (
            f"deb {mirror} {suite} main",
            f"deb {mirror} {suite}-updates main",
            f"deb {security} {suite}-security main",
        )
        return cls(
            suite=suite,
            mirrors=mirrors,
            packages=tuple(dict.fromkeys([*BASE_PACKAGES, *extra])),
            user=text("user", "pi"),
            hostname=text("hostname", "rpi4-qemu"),
            free_mb=free_mb,
            scripts=(
                *(CUSTOMIZE_HOOK, INIT_SCRIPT, SSHD_CONF, WIRED_NETWORK, FSTAB),
                ",".join(ROOT_MODULES),
            ),
        )

    def digest(self) -> str:
        payload = json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Image:
    """A built image: files in one cache directory, never modified after the build."""

    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "rootfs.qcow2"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def host_public_key(self) -> str:
        return (self.dir / "host_ed25519.pub").read_text().strip()

    @property
    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / "image.json").read_text())
        return data


def images_dir() -> Path:
    return paths.cache_dir() / "images"


def cached_image(recipe: Recipe, name: str) -> Image | None:
    image = Image(images_dir() / f"{name}-{recipe.digest()[:16]}")
    return image if (image.dir / "image.json").is_file() else None


def _check_binfmt(arch: str) -> None:
    """mmdebstrap runs arm64 maintainer scripts through qemu-user; say so up front."""
    if shutil.which("arch-test"):
        result = subprocess.run(["arch-test", arch], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
    elif Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        return
    raise DeviceError(
        f"this host cannot run {arch} programs (no qemu-user binfmt handler).",
        hint="Install it: apt-get install qemu-user-static binfmt-support arch-test "
        "(and make sure /proc/sys/fs/binfmt_misc is mounted)",
    )


Stage = Callable[[str], None]


def build_image(recipe: Recipe, name: str, stage: Stage = lambda _s: None) -> tuple[Image, bool]:
    """The cached image for `recipe`, building it first when missing; (image, was_cached)."""
    found = cached_image(recipe, name)
    if found:
        return found, True
    root = images_dir()
    root.mkdir(parents=True, exist_ok=True)
    digest = recipe.digest()[:16]
    with (root / f".{name}-{digest}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stage("waiting for another build of this image")
            fcntl.flock(lock, fcntl.LOCK_EX)
        found = cached_image(recipe, name)
        if found:
            return found, True
        final = root / f"{name}-{digest}"
        work = root / f".build-{name}-{digest}-{os.getpid()}"
        failed_log = root / f"{name}-{digest}.failed.log"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            _build_into(recipe, work, stage)
            shutil.rmtree(final, ignore_errors=True)
            work.rename(final)  # whole or nothing: a killed build leaves only .build-*
            failed_log.unlink(missing_ok=True)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                shutil.copy(work / "build.log", failed_log)
                if isinstance(exc, DeviceError):
                    exc.hint = f"The build's full log: {failed_log}"
            raise
        finally:
            _remove_tree(work)
    return Image(final), False


def _remove_tree(path: Path) -> None:
    """rmtree that also removes a root filesystem's read-only directories."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _build_into(recipe: Recipe, work: Path, stage: Stage) -> None:
    began = time.monotonic()
    mmdebstrap = require_tool("mmdebstrap", "mmdebstrap")
    mke2fs = require_tool("mke2fs", "e2fsprogs")
    qemu_img = require_tool("qemu-img", "qemu-utils")
    _check_binfmt(recipe.arch)
    files = work / "files"
    files.mkdir()
    host_key, client_key = work / "host_ed25519", work / "id_ed25519"
    keygen(host_key, f"edgetool-{recipe.hostname}-host")
    keygen(client_key, "edgetool")
    shutil.copy(host_key, files / "host_ed25519")
    shutil.copy(host_key.with_suffix(".pub"), files / "host_ed25519.pub")
    shutil.copy(client_key.with_suffix(".pub"), files / "authorized_keys")
    for file_name, text in (
        ("sshd.conf", SSHD_CONF),
        ("wired.network", WIRED_NETWORK),
        ("fstab", FSTAB),
        ("customize.sh", CUSTOMIZE_HOOK),
    ):
        (files / file_name).write_text(text)
    # As root the rootfs is a directory that mke2fs copies with its owners; without root
    # mmdebstrap runs in a user namespace and writes a tarball, which mke2fs reads only
    # from e2fsprogs 1.47.1 on.
    as_root = os.geteuid() == 0
    rootfs = work / ("rootfs" if as_root else "rootfs.tar")
    if as_root:
        rootfs.mkdir()
    else:
        _check_mke2fs_reads_tar(mke2fs)
    hook_args = [str(files / "customize.sh"), '"$1"', str(files), recipe.user, recipe.hostname]
    hook = "sh " + " ".join(a if a == '"$1"' else shlex.quote(a) for a in hook_args)
    argv = [
        mmdebstrap,
        "--variant=apt",
        f"--arch={recipe.arch}",
        "--include=" + ",".join(recipe.packages),
        '--aptopt=Acquire::Retries "3"',
        f"--customize-hook={hook}",
        recipe.suite,
        str(rootfs) + ("/" if as_root else ""),
        *recipe.mirrors,
    ]
    _run_logged(argv, work / "build.log", stage, "mmdebstrap")
    stage("building the initrd")
    kernel_version, kernel_bytes, busybox, modules, facts = _read_rootfs(rootfs, work)
    (work / "vmlinuz").write_bytes(kernel_bytes)
    (work / "initrd.img").write_bytes(build_initrd(busybox, modules))
    stage("making the ext4 disk")
    raw = work / "rootfs.raw"
    size_mb = int(_tree_bytes(rootfs) * 1.3 / 2**20) + recipe.free_mb
    _run_logged(
        [mke2fs, "-q", "-t", "ext4", "-L", "rootfs", "-d", str(rootfs), "-F", str(raw),
         f"{size_mb}M"],
        work / "build.log", stage, "mke2fs",
    )  # fmt: skip
    _remove_tree(rootfs)
    _run_logged(
        [qemu_img, "convert", "-O", "qcow2", str(raw), str(work / "rootfs.qcow2")],
        work / "build.log", stage, "qemu-img",
    )  # fmt: skip
    raw.unlink()
    shutil.rmtree(files)
    info = {
        "format": FORMAT,
        "recipe": asdict(recipe) | {"scripts": "(hashed)"},
        "digest": recipe.digest(),
        "kernel": kernel_version,
        "kernel_package": facts.get("kernel"),
        "python": facts.get("python"),
        "disk_mb": size_mb,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.monotonic() - began, 1),
    }
    (work / "image.json").write_text(json.dumps(info, indent=2) + "\n")


def _run_logged(argv: list[str], log_path: Path, stage: Stage, what: str) -> None:
    """Run a build step with its output in the log; its `I:` lines become the stage text."""
    log.info("run %s", shlex.join(argv))
    with log_path.open("a") as out:
        out.write("$ " + shlex.join(argv) + "\n")
        out.flush()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        )  # fmt: skip
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:
            out.write(line)
            if line.startswith(("I: ", "E: ")):
                last = line[3:].strip()
                stage(f"{what}: {last}")
        status = proc.wait()
    if status != 0:
        errors = [
            ln.strip()
            for ln in log_path.read_text(errors="replace").splitlines()
            if ln.startswith("E: ") or "rror" in ln
        ]
        detail = errors[-1] if errors else last or f"exit status {status}"
        raise DeviceError(f"image build failed in {what}: {detail}")


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, names in os.walk(path) for f in names)


def _check_mke2fs_reads_tar(mke2fs: str) -> None:
    out = subprocess.run([mke2fs, "-V"], capture_output=True, text=True, check=False)
    found = re.search(r"mke2fs (\d+)\.(\d+)(?:\.(\d+))?", out.stderr + out.stdout)
    version = tuple(int(g or 0) for g in found.groups()) if found else (0, 0, 0)
    if version < (1, 47, 1):
        raise DeviceError(
            "building the image without root needs e2fsprogs >= 1.47.1 (mke2fs reading a "
            f"tarball); this host has {'.'.join(map(str, version))}.",
            hint="Run the build as root (sudo edgetool emulate build ...) or upgrade e2fsprogs.",
        )


_WANTED_MODULE_DIRS = ("drivers/virtio", "drivers/block", "fs", "lib", "crypto")


def _wanted(path: str) -> bool:
    """The rootfs files the initrd and the image facts are made from."""
    if path.startswith(("boot/vmlinuz-", "etc/edgetool-kernel-package")):
        return True
    if path in ("usr/bin/busybox", "bin/busybox") or re.fullmatch(r"usr/bin/python3\.\d+", path):
        return True
    parts = path.split("/kernel/", 1)
    return (
        path.startswith("usr/lib/modules/")
        and path.endswith(".ko")
        and len(parts) == 2
        and parts[1].startswith(_WANTED_MODULE_DIRS)
    )


def _read_rootfs(
    rootfs: Path, scratch: Path
) -> tuple[str, bytes, bytes, dict[str, bytes], dict[str, str]]:
    """Kernel, busybox and the initrd's modules from the built root (a tarball's needed
    members are extracted to `scratch` first, so both forms are read the same way)."""
    if rootfs.is_file():
        tree = scratch / "from-tar"
        with tarfile.open(rootfs) as tar:
            members = [m for m in tar if _wanted(m.name.removeprefix("./"))]
            tar.extractall(tree, members=members, filter="data")
        rootfs = tree
    kernel: tuple[str, bytes] | None = None
    busybox: bytes | None = None
    modules: dict[str, bytes] = {}
    facts: dict[str, str] = {}
    for directory, _, names in os.walk(rootfs):
        for file_name in names:
            full = Path(directory, file_name)
            path = full.relative_to(rootfs).as_posix()
            if not _wanted(path) or full.is_symlink():
                continue
            if path.startswith("boot/vmlinuz-"):
                kernel = (path.removeprefix("boot/vmlinuz-"), full.read_bytes())
            elif path.endswith("busybox"):
                busybox = full.read_bytes()
            elif path.endswith(".ko"):
                modules[full.stem.replace("-", "_")] = full.read_bytes()
            elif path.startswith("usr/bin/python3."):
                facts["python"] = path.removeprefix("usr/bin/python")
            else:
                facts["kernel"] = full.read_text().strip()
    if kernel is None or busybox is None:
        raise DeviceError(
            "image build: the root filesystem has no "
            + ("kernel (boot/vmlinuz-*)" if kernel is None else "busybox")
        )
    return kernel[0], kernel[1], busybox, modules, facts
