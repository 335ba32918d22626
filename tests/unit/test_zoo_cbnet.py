"""CBNet family: tiny trainings, IDX loading, static export, and the shipped weights.

Trainings here are 1-8 epochs on scikit-learn's digits (seconds on one core); the
shipped models in models/{cbnet,lenet,branchynet} are checked against their metrics.json.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from edgetool.errors import ModelError  # noqa: E402
from edgetool.zoo import cbnet  # noqa: E402
from edgetool.zoo.datasets import load_digits_28, load_mnist_idx, read_idx  # noqa: E402
from edgetool.zoo.family import get_family  # noqa: E402
from edgetool.zoo.recipe import Recipe, load_recipe  # noqa: E402

VARIANTS = ("cbnet", "lenet", "branchynet")
TINY = {"epochs": 1, "ae_epochs": 8, "shift": 0, "ae_shift": 0}


def _quiet(step: int, total: int, message: str) -> None:
    assert 1 <= step <= total and message


def _recipe(name: str, **train: Any) -> Recipe:
    return load_recipe(name).with_overrides({"train": {**TINY, **train}})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One tiny training of lenet and of cbnet (which trains a B-LeNet on the way)."""
    out: dict[str, dict[str, Any]] = {}
    for name in ("lenet", "cbnet"):
        d = tmp_path_factory.mktemp(name)
        out[name] = cbnet.CBNetFamily().train(_recipe(name), d, _quiet)
        out[name]["dir"] = d
    return out


# --- family and data ------------------------------------------------------------------


def test_registered_family() -> None:
    fam = get_family("cbnet")
    assert fam.name == "cbnet" and fam.task == "classification"


def test_digits_split_is_seeded_and_mnist_like() -> None:
    a, b = load_digits_28(0), load_digits_28(0)
    assert a.train.x.shape[1:] == (1, 28, 28) and a.train.x.dtype == np.float32
    assert a.train.x.min() >= 0.0 and a.train.x.max() <= 1.0
    assert a.train.x[:, :, :4].max() == 0.0  # 4-pixel empty border as in MNIST
    assert np.array_equal(a.test.y, b.test.y)
    n = len(a.train.y) + len(a.val.y) + len(a.test.y)
    assert n == 1797 and len(a.test.y) > 300
    assert not np.array_equal(load_digits_28(1).test.y, a.test.y)


def test_samples_and_metric() -> None:
    fam = get_family("cbnet")
    recipe = load_recipe("cbnet")
    cal = fam.samples(recipe, "calibration", 16)
    test = fam.samples(recipe, "test", 0)
    assert cal.inputs["image"].shape == (16, 1, 28, 28)
    assert cal.inputs["image"].dtype == np.float32
    assert test.targets.dtype == np.int64 and len(test.targets) > 300
    onehot = np.eye(10, dtype=np.float32)[test.targets]
    assert fam.task_metric(onehot, test) == {"top1": 1.0}


# --- IDX files ------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_mnist(tmp: Path, n: int = 40, gz: bool = False) -> tuple[Path, Path, Any]:
    digits = load_digits_28(0).train
    images = np.round(digits.x[:n, 0] * 255).astype(np.uint8)
    labels = digits.y[:n].astype(np.uint8)
    suffix = ".gz" if gz else ""
    img_path, lab_path = tmp / f"img-idx3-ubyte{suffix}", tmp / f"lab-idx1-ubyte{suffix}"
    for path, data, code in ((img_path, images, 0x08), (lab_path, labels, 0x08)):
        raw = _idx_bytes(data, code)
        path.write_bytes(gzip.compress(raw) if gz else raw)
    return img_path, lab_path, (images, labels)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    img_path, lab_path, (images, labels) = _write_mnist(tmp_path, gz=gz)
    raw = gzip.decompress(img_path.read_bytes()) if gz else img_path.read_bytes()
    assert int.from_bytes(raw[:4], "big") == 0x803
    assert np.array_equal(read_idx(img_path), images)
    split = load_mnist_idx(img_path, lab_path)
    assert split.x.shape == (40, 1, 28, 28) and split.x.dtype == np.float32
    assert np.allclose(split.x[:, 0] * 255, images)
    assert np.array_equal(split.y, labels)


def test_idx_other_dtypes(tmp_path: Path) -> None:
    for code, dtype in ((0x0C, ">i4"), (0x0D, ">f4"), (0x0B, ">i2")):
        arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        path = tmp_path / f"a{code}.idx"
        path.write_bytes(_idx_bytes(arr, code))
        assert np.array_equal(read_idx(path), arr)


def test_idx_corrupt_files(tmp_path: Path) -> None:
    img_path, lab_path, _ = _write_mnist(tmp_path)
    raw = img_path.read_bytes()
    cases = {
        "truncated": raw[:-10],
        "trailing bytes": raw + b"\0",
        "not an IDX": b"\x12\x34" + raw[2:],
        "element type": raw[:2] + b"\x42" + raw[3:],
        "truncated IDX header": raw[:9],
        "too short": raw[:3],
        "corrupt gzip": gzip.compress(raw)[:30],
    }
    for needle, data in cases.items():
        bad = tmp_path / "bad"
        bad.write_bytes(data)
        with pytest.raises(ModelError, match=needle) as info:
            read_idx(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="not found"):
        read_idx(tmp_path / "missing")
    short_labels = tmp_path / "short-labels"
    short_labels.write_bytes(_idx_bytes(np.zeros(3, np.uint8), 0x08))
    with pytest.raises(ModelError, match="3 labels for 40 images"):
        load_mnist_idx(img_path, short_labels)
    with pytest.raises(ModelError, match=r"expected images \[N, 28, 28\]"):
        load_mnist_idx(lab_path, lab_path)


def test_idx_recipe_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.source = "idx": relative paths resolve in $EDGETOOL_MNIST_DIR; trains."""
    _write_mnist(tmp_path, n=200, gz=True)
    monkeypatch.setenv("EDGETOOL_MNIST_DIR", str(tmp_path))
    recipe = load_recipe("lenet").with_overrides(
        {
            "data": {
                "source": "idx",
                "images": "img-idx3-ubyte.gz",
                "labels": "lab-idx1-ubyte.gz",
            },
            "train": {"epochs": 1},
        }
    )
    fam = get_family("cbnet")
    n_test = len(fam.samples(recipe, "test", 0).targets)
    metrics = fam.train(recipe, tmp_path / "out", _quiet)
    assert sum(metrics["sizes"].values()) == 200 and 30 <= n_test <= 50
    assert metrics["sizes"]["test"] == n_test
    assert metrics["data"].startswith("IDX ")


# --- training -------------------------------------------------------------------------


def test_tiny_training_beats_chance(tiny: dict[str, dict[str, Any]]) -> None:
    assert tiny["lenet"]["test_top1"] > 0.3
    cb = tiny["cbnet"]
    assert cb["branchynet_test_exit1_top1"] > 0.3
    assert cb["test_top1"] > 0.25  # 8 autoencoder epochs: blurry, but informative
    assert 0.0 <= cb["test_hard_share"] <= 1.0
    assert cb["ae_params"] + cb["classifier_params"] == cb["params"]
    for name in ("lenet", "cbnet"):
        d = tiny[name]["dir"]
        assert json.loads((d / "metrics.json").read_text())["test_top1"] == tiny[name]["test_top1"]
        assert (d / "weights.pt").is_file()


def test_training_is_reproducible(tmp_path: Path, tiny: dict[str, dict[str, Any]]) -> None:
    fam = cbnet.CBNetFamily()
    recipe = _recipe("lenet")
    again = fam.train(recipe, tmp_path / "a", _quiet)
    assert again["test_top1"] == tiny["lenet"]["test_top1"]
    first = torch.load(tiny["lenet"]["dir"] / "weights.pt", weights_only=True)
    second = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = fam.train(_recipe("lenet", seed=1, epochs=1), tmp_path / "b", _quiet)
    third = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert not torch.equal(first["stem.weight"], third["stem.weight"])
    assert other["variant"] == "lenet"


# --- export: static graphs ------------------------------------------------------------


def _mixed_images(module: Any) -> torch.Tensor:
    """Test images on both sides of the early-exit threshold (exercise both where arms)."""
    x = torch.from_numpy(load_digits_28(0).test.x[:200])
    blenet = module if isinstance(module, cbnet.BLeNet) else None
    if blenet is None:
        return x[:4]
    with torch.no_grad():
        easy = (cbnet.entropy(blenet.exits(x)[0]) < blenet.threshold).flatten()
    assert easy.any() and (~easy).any()
    return torch.cat([x[easy][:2], x[~easy][:2]])


@pytest.mark.parametrize("name", VARIANTS)
def test_export_is_static_and_matches(name: str, tmp_path: Path) -> None:
    """torch.export (fails on data-dependent control flow), then the ONNX export edgetool
    uses (opset 17) run in onnxruntime: same logits as torch within 1e-4."""
    ort = pytest.importorskip("onnxruntime")
    recipe = load_recipe(name)
    module = get_family("cbnet").reference(recipe, recipe.dir)
    example = (torch.zeros(1, 1, 28, 28),)
    graph = torch.export.export(module, example, strict=False)
    targets = {str(node.target) for node in graph.graph.nodes}
    assert not any("cond" in t or "while_loop" in t or "item" in t for t in targets)
    path = tmp_path / f"{name}.onnx"
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for image in _mixed_images(module):
        feed = image[None].numpy()
        got = sess.run(None, {"image": feed})[0]
        with torch.no_grad():
            want = module(image[None]).numpy()
        assert got.shape == (1, 10)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_export_check_catches_data_dependent_branching() -> None:
    """The check above is meaningful: a Python `if` on a tensor value does not export."""

    class EarlyExitInPython(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(Exception, match=r"data.dependent|DataDependent|Could not guard"):
        torch.export.export(EarlyExitInPython(), (torch.zeros(1, 3),), strict=False)


# --- shipped models -------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_shipped_weights_reach_recorded_accuracy(name: str) -> None:
    recipe = load_recipe(name)
    metrics = json.loads((recipe.dir / "metrics.json").read_text())
    fam = get_family("cbnet")
    module = fam.reference(recipe, recipe.dir)
    assert not module.training
    test = fam.samples(recipe, "test", 0)
    with torch.no_grad():
        logits = module(torch.from_numpy(test.inputs["image"])).numpy()
    top1 = fam.task_metric(logits, test)["top1"]
    assert abs(top1 - metrics["test_top1"]) <= 0.005
    assert metrics["variant"] == name and top1 > 0.9


def test_reference_rejects_wrong_weights(tmp_path: Path) -> None:
    torch.save(cbnet.LeNet().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ModelError, match="do not fit"):
        get_family("cbnet").reference(load_recipe("cbnet"), tmp_path)
    with pytest.raises(ModelError, match="not found"):
        get_family("cbnet").reference(load_recipe("cbnet"), tmp_path / "nowhere")
    (tmp_path / "weights.pt").write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match="not a torch state_dict"):
        get_family("cbnet").reference(load_recipe("cbnet"), tmp_path)
