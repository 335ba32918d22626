"""A throwaway installed distribution, visible to `importlib.metadata` without pip.

importlib.metadata finds a distribution from any `NAME-VERSION.dist-info` directory on
sys.path, so writing one beside the plugin's modules and putting that directory on
sys.path (in-process: `monkeypatch.syspath_prepend`) or PYTHONPATH (a subprocess such as
`python -m edgetool ...`) is enough for its entry points to be found: nothing is
installed anywhere else, and the directory disappears with the test's tmp_path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path


def make_dist(
    tmp_path: Path,
    name: str,
    entry_points: Mapping[str, Mapping[str, str]],
    modules: Mapping[str, str],
    version: str = "0.1",
) -> Path:
    """Write distribution NAME into a new directory under tmp_path and return it.

    `entry_points` maps a group ("edgetool.meters") to {entry name: "module:attr"};
    `modules` maps a file name relative to the returned directory ("plugpkg/__init__.py")
    to its source.
    """
    root = tmp_path / f"dist-{name}"
    root.mkdir()
    for filename, source in modules.items():
        path = root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    # The dist-info directory is named after the normalized project name (PEP 427/503).
    info = root / f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines: list[str] = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{entry} = {target}" for entry, target in entries.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    return root
