"""The wheel carries targets/, models/, links/ and firmware_stubs/, and an installed copy uses them.

The wheel is built offline with the installed build backend from a copy of the source tree
(so stray build output can be planted without touching the checkout), then unpacked and put
first on PYTHONPATH: that is an installed edgetool as far as its own file lookups go.
`.ci/wheel-smoke` does the same with a real `pip install` into a fresh venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", ".gitignore", "edgetool", "targets", "models", "links")


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "build")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    shutil.copytree(REPO / "firmware_stubs", dest / "firmware_stubs", ignore=ignore)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    _copy_tree(src)
    # What `make firmware` and an in-tree Python run leave behind: neither may ship.
    stray = src / "firmware_stubs" / "build" / "mps2-an386"
    stray.mkdir(parents=True)
    (stray / "firmware.elf").write_bytes(b"\x7fELF")
    (src / "edgetool" / "__pycache__").mkdir(exist_ok=True)
    (src / "edgetool" / "__pycache__" / "stray.cpython-311.pyc").write_bytes(b"")
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-c", "import sys, hatchling.build as b; b.build_wheel(sys.argv[1])", out],
        cwd=src,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("edgetool-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_wheel_carries_targets_models_links_and_firmware_sources(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    data = "edgetool/_data"
    assert {
        f"{data}/targets/local.toml",
        f"{data}/models/tiny-mlp/tiny-mlp.onnx",
        f"{data}/models/tiny-mlp/tiny-mlp.tflite",
        f"{data}/models/lenet/recipe.toml",
        f"{data}/models/lenet/weights.pt",
        f"{data}/links/wifi.toml",
        f"{data}/links/lte.toml",
        f"{data}/links/ble.toml",
        f"{data}/firmware_stubs/Makefile",
        f"{data}/firmware_stubs/common/bench.c",
        f"{data}/firmware_stubs/boards/mps2-an386/board.mk",
        "edgetool/runner/device_runner.py",
        "edgetool/py.typed",
    } <= names
    assert not [n for n in names if n.startswith(f"{data}/firmware_stubs/build")]
    assert not [n for n in names if "__pycache__" in n]
    tracked = {p.relative_to(REPO).as_posix() for p in (REPO / "targets").glob("*.toml")}
    assert {f"{data}/{name}" for name in tracked} <= names


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETOOL_")}
    env.update(
        PYTHONPATH=str(site),
        EDGETOOL_CACHE_DIR=str(cwd.parent / "cache"),
        EDGETOOL_STATE_DIR=str(cwd.parent / "state"),
        EDGETOOL_CONFIG_DIR=str(cwd.parent / "config"),
    )
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=240,
        check=False,
    )


def _empty_dir(tmp_path: Path) -> Path:
    work = tmp_path / "elsewhere"
    work.mkdir()
    return work


def test_installed_copy_finds_its_own_data(installed: Path, tmp_path: Path) -> None:
    probe = _run(
        installed,
        _empty_dir(tmp_path),
        "-c",
        "import json, edgetool, edgetool.paths as p; print(json.dumps([edgetool.__file__, "
        "str(p.builtin_targets_dir()), str(p.models_dir()), str(p.firmware_stubs_dir()), "
        "str(p.links_dir())]))",
    )
    assert probe.returncode == 0, probe.stderr
    module, targets, models, firmware, links = (Path(p) for p in json.loads(probe.stdout))
    data = installed / "edgetool" / "_data"
    assert module == installed / "edgetool" / "__init__.py"
    assert (targets, models, firmware, links) == (
        data / "targets",
        data / "models",
        data / "firmware_stubs",
        data / "links",
    )


def test_installed_copy_lists_models_and_deploys_from_any_folder(
    installed: Path, tmp_path: Path
) -> None:
    work = _empty_dir(tmp_path)
    listed = _run(installed, work, "-m", "edgetool", "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    recipes = {d.parent.name for d in (REPO / "models").glob("*/recipe.toml")}
    assert {"lenet", "l2mu"} <= recipes
    assert {m["name"] for m in json.loads(listed.stdout)} == recipes
    deployed = _run(
        installed, work, "-m", "edgetool", "deploy", "--model", "tiny-mlp", "-r", "1", "-q"
    )
    assert deployed.returncode == 0, deployed.stderr
    run_dir = work / deployed.stdout.strip()
    assert run_dir.parent == work / "results"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    model = installed / "edgetool" / "_data" / "models" / "tiny-mlp" / "tiny-mlp.onnx"
    assert manifest["artifact"]["path"] == str(model)


@pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("make") is None,
    reason="needs gcc-arm-none-eabi and make",
)
def test_installed_firmware_builds_outside_the_package(installed: Path, tmp_path: Path) -> None:
    stubs = installed / "edgetool" / "_data" / "firmware_stubs"
    before = sorted(p for p in stubs.rglob("*"))
    work = _empty_dir(tmp_path)
    built = _run(
        installed,
        work,
        "-c",
        "from edgetool.firmware.build import build_firmware; "
        "print(build_firmware('mps2-an386', None).elf)",
    )
    assert built.returncode == 0, built.stderr
    elf = Path(built.stdout.strip())
    assert elf.is_file()
    assert elf.is_relative_to(work.parent / "cache")
    assert sorted(p for p in stubs.rglob("*")) == before
