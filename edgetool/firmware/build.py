"""Firmware builds (`make -C firmware_stubs`) and the fit check against a target's limits.

Flash and RAM are read off the linked ELF: flash = .text + .ARM.exidx + .data (its load
image), RAM = .data + .bss + .stack, where the stack is sized from gcc's -fstack-usage of
the model (emx-onnx-cgen keeps every temporary on the stack). Builds are cached by the
content of the model C file and every firmware source, so a repeat deploy relinks nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgetool import paths
from edgetool.errors import ConfigError, DeviceError, ModelError

log = logging.getLogger(__name__)
STACK_MARGIN = 4096
"""Bytes of stack beyond the model's own frames: the protocol loop, the CRC, interrupts."""


@dataclass(frozen=True)
class Firmware:
    board: str
    elf: Path
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int
    model_stack_bytes: int
    sections: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["elf"] = str(self.elf)
        return data


def firmware_dir() -> Path:
    return paths.firmware_stubs_dir()


def boards() -> list[str]:
    root = firmware_dir() / "boards"
    return sorted(d.name for d in root.iterdir() if (d / "board.mk").is_file())


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise DeviceError(
            f"{name} not found.",
            hint="Install the Arm toolchain: apt-get install gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi",
        )
    return found


def _source_hash(model_c: Path | None, board: str) -> str:
    digest = hashlib.sha256(board.encode())
    root = firmware_dir()
    for path in sorted(
        [*root.glob("common/*"), *root.glob(f"boards/{board}/*"), root / "Makefile"]
    ):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    if model_c is not None:
        digest.update(model_c.read_bytes())
    return digest.hexdigest()[:20]


def _make(args: list[str]) -> subprocess.CompletedProcess[str]:
    argv = [_tool("make"), "-s", "-C", str(firmware_dir()), *args]
    log.info("run %s", shlex.join(argv))
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def stack_usage(out: Path) -> int:
    """The model's worst stack depth: its entry frame + the deepest node it calls."""
    entry, deepest = 0, 0
    su = out / "model.su"
    if not su.is_file():
        return 0
    for line in su.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip().isdigit():
            continue
        size = int(parts[1])
        function = parts[0].rsplit(":", 1)[-1]
        if function in ("edgetool_model", "edgetool_run"):
            entry += size
        else:
            deepest = max(deepest, size)
    return entry + deepest


_OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")


def build_firmware(board: str, model_c: Path | None, label: str = "") -> Firmware:
    """Build (or reuse) firmware.elf for board with the model C file (None: null model)."""
    if board not in boards():
        raise ConfigError(
            f"no firmware port for board '{board}' (ports: {', '.join(boards())})",
            hint=f"Add {firmware_dir()}/boards/{board}/ (board.mk, linker script, board.c, "
            "board_vectors.h).",
        )
    out = paths.cache_dir() / "firmware" / f"{board}-{_source_hash(model_c, board)}"
    elf = out / "firmware.elf"
    args = [f"BOARD={board}", f"OUT={out}"]
    if model_c is not None:
        args.append(f"MODEL={model_c.resolve()}")
    if not elf.is_file():
        out.mkdir(parents=True, exist_ok=True)
        compiled = _make([*args, "objects"])
        if compiled.returncode != 0:
            raise DeviceError(
                f"firmware for {board} did not compile: {_last_error(compiled.stderr)}"
            )
        model_stack = stack_usage(out)
        stack = (model_stack + STACK_MARGIN + 1023) // 1024 * 1024
        linked = _make([*args, f"STACK_SIZE={stack}", "all"])
        if linked.returncode != 0:
            over = _OVERFLOW.findall(linked.stderr)
            if over:
                what = label or (model_c.name if model_c else "the firmware")
                detail = ", ".join(f"{region} by {int(n):,} bytes" for region, n in over)
                raise ModelError(
                    f"{what} does not fit board {board}: {detail} "
                    f"(stack {stack:,} bytes incl. the model's {model_stack:,}).",
                    hint="Use a smaller model or a board with more memory.",
                )
            raise DeviceError(f"firmware for {board} did not link: {_last_error(linked.stderr)}")
        (out / "stack.txt").write_text(f"{stack} {model_stack}\n")
    else:
        log.info("firmware for %s is cached: %s", board, elf)
    stack, model_stack = (int(v) for v in (out / "stack.txt").read_text().split())
    sections = section_sizes(elf)
    flash = sections.get(".text", 0) + sections.get(".ARM.exidx", 0) + sections.get(".data", 0)
    ram = sections.get(".data", 0) + sections.get(".bss", 0) + sections.get(".stack", 0)
    return Firmware(board, elf, flash, ram, stack, model_stack, sections)


def section_sizes(elf: Path) -> dict[str, int]:
    result = subprocess.run(
        [_tool("arm-none-eabi-size"), "-A", str(elf)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DeviceError(f"cannot read section sizes of {elf}: {result.stderr.strip()}")
    sizes: dict[str, int] = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def check_fit(firmware: Firmware, flash_limit: int, ram_limit: int, what: str, where: str) -> None:
    """Refuse, before flashing, an image the target cannot hold; name the excess."""
    problems = []
    if firmware.flash_bytes > flash_limit:
        problems.append(
            f"{firmware.flash_bytes:,} bytes flash; {where} has {flash_limit:,} "
            f"({firmware.flash_bytes - flash_limit:,} over)"
        )
    if firmware.ram_bytes > ram_limit:
        problems.append(
            f"{firmware.ram_bytes:,} bytes RAM (stack {firmware.stack_bytes:,}); {where} has "
            f"{ram_limit:,} ({firmware.ram_bytes - ram_limit:,} over)"
        )
    if problems:
        raise ModelError(
            f"{what} needs " + " and ".join(problems) + ".",
            hint="Try a smaller model (e.g. cbnet-classifier) or a target with more memory.",
        )


def _last_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if "error" in ln.lower()] or [
        ln for ln in stderr.strip().splitlines() if ln.strip()
    ]
    return lines[-1][:300] if lines else "no output"
