"""TinyLUT-S: LUT conversion is exact, the ONNX LUT graph is bit-exact to numpy, shipped
weights beat bicubic, and tiny trainings of both families run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgetool.zoo import images
from edgetool.zoo import tinylut as T
from edgetool.zoo import tinylut_maps as M
from edgetool.zoo.family import get_family
from edgetool.zoo.recipe import load_recipe

ort = pytest.importorskip("onnxruntime")


def _random_luts(scale: int, seed: int = 1) -> T.Luts:
    """A randomly initialised net with noisy tables: every index path gets exercised."""
    net = T.TinyLUTNet(scale, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key in T.LUT_KEYS:
            table = getattr(net, key)
            table.add_(torch.randn(table.shape, generator=g) * 0.6)
    return net.to_luts()


def _session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("scale", [2, 4])
def test_lut_storage(scale: int) -> None:
    luts = _random_luts(scale)
    tables = 9 * 64 * 16 + 9 * 4 * 16 + 2 * 16 * 27 * 16 + 2 * 16 * 27 * scale * scale
    assert T.lut_bytes(luts) == {"tables": tables, "scales": 4 * 16 * 4}
    assert all(luts[k].dtype == np.int8 for k in T.LUT_KEYS)
    if scale == 4:
        assert tables == 37440  # the paper's "about 37 KB" for TinyLUT-S x4


def test_rotation_maps() -> None:
    assert M.tap_of_offset(0) == list(range(9))
    assert M.subpixel_of_rotation(0, 4) == list(range(16))
    for rot in range(4):
        assert sorted(M.tap_of_offset(rot)) == list(range(9))
        assert M.tap_of_offset(rot)[M.CENTER] == M.CENTER


@pytest.mark.parametrize("scale", [2, 4])
def test_network_equals_lut_reference(scale: int) -> None:
    """LUT conversion is exact: the training-time network (rounded tables) == numpy LUTs."""
    net = T.TinyLUTNet(scale, seed=3).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key in T.LUT_KEYS:
            getattr(net, key).add_(torch.randn(getattr(net, key).shape, generator=g) * 0.6)
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 12, 12)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, T.lut_reference(x, net.to_luts()))


def test_rotation_ensemble_is_equivariant() -> None:
    """Summing all four rotations makes the whole model commute with 90° rotations."""
    luts = _random_luts(4)
    x = np.random.default_rng(5).integers(0, 256, (1, 1, 10, 10)).astype(np.float32)
    y = T.lut_reference(x, luts)
    for rot in range(1, 4):
        rotated = np.ascontiguousarray(np.rot90(x, rot, axes=(2, 3)))
        np.testing.assert_array_equal(T.lut_reference(rotated, luts), np.rot90(y, rot, axes=(2, 3)))


@pytest.mark.parametrize(("scale", "bands"), [(2, 1), (4, 1), (4, 3)])
def test_onnx_bit_exact(scale: int, bands: int) -> None:
    luts = _random_luts(scale, seed=scale)
    data = T.build_lut_onnx(luts, 16, 12, bands=bands)
    assert data == T.build_lut_onnx(luts, 16, 12, bands=bands)  # deterministic bytes
    session = _session(data)
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = rng.integers(0, 256, (1, 1, 16, 12)).astype(np.float32)
        got = session.run(None, {"lr": x})[0]
        assert got.shape == (1, 1, 16 * scale, 12 * scale)
        np.testing.assert_array_equal(got, T.lut_reference(x, luts))
    # non-integer and out-of-range inputs are rounded and clipped identically
    x = rng.uniform(-20, 280, (1, 1, 16, 12)).astype(np.float32)
    np.testing.assert_array_equal(session.run(None, {"lr": x})[0], T.lut_reference(x, luts))


def test_lut_module_matches_reference() -> None:
    """The torch module litert-torch converts computes the same integers."""
    luts = _random_luts(4)
    module = T.LutModule(luts, 12, 12).eval()
    x = np.random.default_rng(2).integers(0, 256, (1, 1, 12, 12)).astype(np.float32)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, T.lut_reference(x, luts))


@pytest.mark.parametrize("name", ["tinylut-s-x2", "fsrcnn-x4"])
def test_tiny_training(name: str, tmp_path: Path) -> None:
    recipe = load_recipe(name).with_overrides(
        {"train": {"iters": 3, "batch": 2}, "data": {"lr_patch": 8, "test_count": 1}}
    )
    family = get_family(recipe.family)
    steps: list[int] = []
    metrics = family.train(recipe, tmp_path, lambda i, n, s: steps.append(i))
    assert steps[-1] == 3
    assert (tmp_path / "weights.pt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["psnr"] == metrics["psnr"]
    assert metrics["psnr_bicubic"] > 20
    module = family.reference(recipe, tmp_path)
    lr = family.samples(recipe, "calibration", 1).inputs["lr"]
    assert lr.shape == (1, 1, 128, 128)
    with torch.no_grad():
        out = module(torch.from_numpy(lr)).numpy()
    assert out.shape == (1, 1, 128 * T._scale(recipe), 128 * T._scale(recipe))
    if recipe.family == "tinylut":
        luts = T.load_luts(tmp_path)
        assert T.lut_bytes(luts)["tables"] == metrics["lut_bytes"]
        lut_family = T.TinyLUTFamily()
        assert lut_family.build_onnx(recipe, tmp_path, "fp32", 17) is None
        assert lut_family.reference_fn(recipe, tmp_path, "fp32") is None
        ref = lut_family.reference_fn(recipe, tmp_path, "int8")
        assert ref is not None
        assert ref({"lr": lr}).shape == out.shape


@pytest.mark.parametrize("name", ["tinylut-s-x2", "tinylut-s-x4"])
def test_shipped_weights_beat_bicubic(name: str) -> None:
    recipe = load_recipe(name)
    metrics = json.loads((recipe.dir / "metrics.json").read_text())
    assert metrics["psnr"] >= metrics["psnr_bicubic"] + 0.1
    luts = T.load_luts(recipe.dir)
    assert T.lut_bytes(luts)["tables"] == metrics["lut_bytes"]
    if T._scale(recipe) == 4:  # recompute the x4 number (2 held-out images)
        family = get_family("tinylut")
        test = family.samples(recipe, "test", 2)
        sr = T.lut_reference(test.inputs["lr"], luts)
        got = family.task_metric(sr, test)
        assert got["psnr"] == pytest.approx(metrics["psnr"], abs=1e-3)
        assert got["psnr_bicubic"] == pytest.approx(metrics["psnr_bicubic"], abs=1e-3)
        onnx_sr = _session(T.build_lut_onnx(luts, 128, 128)).run(
            None, {"lr": test.inputs["lr"][:1]}
        )[0]
        np.testing.assert_array_equal(onnx_sr, sr[:1])


def test_psnr_and_data() -> None:
    hr = torch.from_numpy(images.tiles(["camera"], 64)[:2])
    assert hr.shape == (2, 1, 64, 64)
    lr = images.downscale(hr, 4)
    assert lr.shape == (2, 1, 16, 16)
    assert torch.equal(lr, lr.round())
    assert images.psnr_y(hr.numpy(), hr.numpy(), 4) > 90
    assert not set(images.TRAIN_IMAGES) & set(images.TEST_IMAGES)


def test_lookup_sum_gradients_match_autograd() -> None:
    """The hand-written backward (per-column index_add, matmul slope) is the true gradient
    of sum_c table[idx] for the table, and the slope contraction for v."""
    g = torch.Generator().manual_seed(0)
    rows, k, p, c = 30, 5, 40, 3
    table = torch.randn(rows, k, generator=g, requires_grad=True)
    slope = torch.randn(rows, k, generator=g)
    idx = torch.randint(0, rows, (p, c), generator=g)
    v = torch.zeros(p, c, requires_grad=True)
    weight = torch.randn(p, k, generator=g)
    (T._LookupSum.apply(table, idx, v, slope) * weight).sum().backward()
    want_table = torch.autograd.grad((F.embedding(idx, table).sum(1) * weight).sum(), table)[0]
    assert table.grad is not None and v.grad is not None
    torch.testing.assert_close(table.grad, want_table)
    torch.testing.assert_close(v.grad, (F.embedding(idx, slope) * weight[:, None, :]).sum(-1))
    with torch.no_grad():
        out = T._LookupSum.apply(table, idx, None, None)
    torch.testing.assert_close(out, F.embedding(idx, table).sum(1))


def test_patch_sampler_options_are_seeded_and_skip_flat_crops() -> None:
    def stds(sampler: images.PatchSampler) -> np.ndarray:
        hr = sampler.batch(64)[1].numpy()
        return np.asarray(hr.reshape(len(hr), -1).std(axis=1))

    plain = images.PatchSampler(4, 8, seed=3)
    picky = images.PatchSampler(4, 8, seed=3, min_std=8.0, size_power=0.5)
    again = images.PatchSampler(4, 8, seed=3, min_std=8.0, size_power=0.5)
    assert torch.equal(picky.batch(4)[1], again.batch(4)[1])
    assert np.mean(stds(picky) < 8.0) < np.mean(stds(plain) < 8.0)
    even = images.PatchSampler(4, 8, seed=3, size_power=0.0)
    np.testing.assert_allclose(even.weights, 1.0 / len(even.images))
    assert {"cell", "microaneurysms"} <= set(images.TRAIN_IMAGES)


def test_fp32_network_exports_with_torch_onnx(tmp_path: Path) -> None:
    """quant fp32 takes the generic torch.onnx path: rotations must be exportable."""
    import contextlib
    import io

    x = torch.rand(2, 1, 5, 7)
    for k in range(-3, 5):
        assert torch.equal(T.rot90(x, k), torch.rot90(x, k, dims=(2, 3)))
    net = T.TinyLUTNet(2, seed=4).eval()
    net.round_tables = False
    lr = torch.from_numpy(
        np.random.default_rng(1).integers(0, 256, (1, 1, 12, 12)).astype(np.float32)
    )
    path = tmp_path / "fp32.onnx"
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(net, (lr,), str(path), input_names=["lr"], opset_version=17, dynamo=False)
        want = net(lr).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"lr": lr.numpy()}
    )[0]
    np.testing.assert_allclose(got, want, atol=1e-3)
