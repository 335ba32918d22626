"""Entropic Student family: the shipped weights, the named `bottleneck` in the ONNX
export (integers, int8-sized), the exported accuracy against metrics.json, and a
three-epoch training (seconds, not the shipped 100 epochs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

from edgetool.errors import ConfigError, ModelError  # noqa: E402
from edgetool.export.build import export  # noqa: E402
from edgetool.zoo import entropic_student  # noqa: E402
from edgetool.zoo.family import get_family  # noqa: E402
from edgetool.zoo.recipe import load_recipe, parse_recipe  # noqa: E402

NAME = "entropic-student"


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (load_recipe(NAME).dir / "metrics.json").read_text(encoding="utf-8")
    )
    return data


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fp32 ONNX export of the shipped weights, in a cache of this module's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGETOOL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield export(NAME, "onnx", "fp32").path


def _with_bottleneck_output(path: Path) -> Any:
    """A session whose outputs are logits and the internal `bottleneck` tensor."""
    model = onnx.load(str(path))
    model.graph.output.append(
        onnx.helper.make_tensor_value_info("bottleneck", onnx.TensorProto.FLOAT, None)
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_family_is_registered() -> None:
    fam = get_family(load_recipe(NAME).family)
    assert fam.name == "entropic_student" and fam.task == "classification"


def test_shipped_weights_load() -> None:
    recipe = load_recipe(NAME)
    module = get_family(recipe.family).reference(recipe, recipe.dir)
    assert isinstance(module, entropic_student.EntropicStudent) and not module.training
    x = torch.from_numpy(get_family(recipe.family).samples(recipe, "test", 4).inputs["image"])
    with torch.no_grad():
        q = module.encode(x)
    assert q.shape == (4, 8, 7, 7) and torch.equal(q, q.round())


def test_export_names_the_bottleneck(exported: Path, metrics: dict[str, Any]) -> None:
    graph = onnx.load(str(exported)).graph
    producers = [n for n in graph.node if "bottleneck" in n.output]
    assert [n.op_type for n in producers] == ["Clip"]
    assert any("bottleneck" in n.input for n in graph.node)  # the tail reads it
    assert [o.name for o in graph.output] == ["logits"]  # the model's I/O is unchanged
    recipe = load_recipe(NAME)
    session = _with_bottleneck_output(exported)
    images = get_family(recipe.family).samples(recipe, "test", 32).inputs["image"]
    low, high = metrics["bottleneck_range"]
    for image in images:
        _, q = session.run(None, {"image": image[None]})
        assert list(q.shape) == metrics["bottleneck_shape"] == [1, 8, 7, 7]
        assert np.array_equal(q, np.round(q)) and low <= q.min() and q.max() <= high
        assert low >= -128 and high <= 127  # int8 holds it: C*49 bytes cross a split
    assert metrics["bytes_per_inference_int8"] == 8 * 7 * 7 <= 400


def test_exported_top1_matches_metrics(exported: Path, metrics: dict[str, Any]) -> None:
    recipe = load_recipe(NAME)
    fam = get_family(recipe.family)
    test = fam.samples(recipe, "test", 0)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    logits = np.concatenate(
        [session.run(None, {"image": x[None]})[0] for x in test.inputs["image"]]
    )
    got = fam.task_metric(logits, test)["top1"]
    assert abs(got - metrics["test_top1"]) <= 0.005
    # the trade-off this model is for: (about) the teacher's accuracy through 392 bytes
    assert got >= metrics["teacher_test_top1"] - 0.02


def test_unknown_cut_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGETOOL_CACHE_DIR", str(tmp_path))
    recipe = replace(load_recipe(NAME), split_cuts=("encoder", "nosuch"))
    with pytest.raises(ModelError, match=r"cut 'nosuch'.*found 0") as info:
        export(NAME, "onnx", "fp32", recipe=recipe)
    assert "\n" not in str(info.value)


def test_split_cut_must_name_modules(tmp_path: Path) -> None:
    text = (load_recipe(NAME).dir / "recipe.toml").read_text(encoding="utf-8")
    for bad in ('"tail.0"', "3", '["ok", ""]'):
        path = tmp_path / "m" / "recipe.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text.replace('cut = "bottleneck"', f"cut = {bad}"), encoding="utf-8")
        with pytest.raises(ConfigError, match=r"split\.cut must be a module name"):
            parse_recipe(path)
    path.write_text(text.replace('cut = "bottleneck"', 'cut = ["a", "b"]'), encoding="utf-8")
    assert parse_recipe(path).split_cuts == ("a", "b")
    path.write_text(text.replace("[split]", "[split]\nwhere = 1"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'split\.where'"):
        parse_recipe(path)


def test_bottleneck_noise_then_rounding_and_a_proper_prior() -> None:
    neck = entropic_student.Bottleneck(channels=2, clamp=3)
    latent = torch.tensor([0.2, 1.7, -9.0, 4.4]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    noisy = neck.train()(latent)
    assert (noisy - latent).abs().max() <= 0.5 and not torch.equal(noisy, noisy.round())
    q = neck.eval()(latent)
    assert q.flatten().tolist()[:4] == [0.0, 2.0, -3.0, 3.0]
    # at inference the masses of the levels -3..3 (tails on the outermost) sum to one
    with torch.no_grad():
        neck.prior_loc.fill_(0.4)
        levels = torch.arange(-3.0, 4.0).view(7, 1, 1, 1).expand(7, 2, 1, 1)
        mass = torch.exp2(-neck.bits(levels) / 2)  # two channels, same value
    assert abs(float(mass.sum()) - 1.0) < 1e-5


def test_three_epoch_training(tmp_path: Path) -> None:
    recipe = load_recipe(NAME).with_overrides({"train": {"epochs": 3}})
    seen: list[str] = []
    metrics = get_family(recipe.family).train(
        recipe, tmp_path, lambda step, total, msg: seen.append(f"{step}/{total} {msg}")
    )
    assert len(seen) == 3 and seen[0].startswith("1/3 epoch 1 loss")
    assert metrics["test_top1"] > 0.3 and metrics["teacher"] == "lenet"
    assert metrics["teacher_test_top1"] == pytest.approx(0.9805, abs=1e-3)  # lenet as shipped
    assert metrics["entropy_bits_per_inference"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["test_top1"] == metrics["test_top1"]
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert state["bottleneck.prior_log_scale"].shape == (8,)
    with pytest.raises(ConfigError, match="temperature"):
        get_family(recipe.family).train(
            recipe.with_overrides({"train": {"temperature": 0}}), tmp_path, lambda *_: None
        )


def test_models_show(cli: Any) -> None:
    shown = cli("models", "show", NAME)
    assert shown.code == 0, shown.stderr
    assert "(entropic_student)" in shown.stdout and "split    cut=bottleneck" in shown.stdout
    assert "bytes_per_inference_int8" in shown.stdout and "{'" not in shown.stdout
    data = json.loads(cli("models", "show", NAME, "--json").stdout)
    assert data["split_cuts"] == ["bottleneck"] and data["metrics"]["test_top1"] > 0.96
