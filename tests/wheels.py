"""Tiny real wheels for provisioning tests: pip installs them, no index needed."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    requires: list[str] | None = None,
    extra_files: dict[str, str] | None = None,
    wheel_version: str = "1.0",
) -> Path:
    """`name-version-py3-none-any.whl` with `name/__init__.py` setting `__version__`.

    `requires` become Requires-Dist lines; `extra_files` adds archive entries as they are
    (an entry outside the package, e.g. `../x.py`, makes pip refuse to install it)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires or [])
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        **(extra_files or {}),
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: {wheel_version}\nGenerator: edgetool-tests\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(
        f"{path},{_record_hash(text.encode())},{len(text.encode())}\n"
        for path, text in files.items()
    )
    record += f"{dist_info}/RECORD,,\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, text in files.items():
            archive.writestr(entry, text)
        archive.writestr(f"{dist_info}/RECORD", record)
    return path
