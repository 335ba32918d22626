"""L2MU: LMU matrices, snntorch vs written-out neurons step by step, WISDM loading,
synthetic data, a tiny training, and the unrolled export checked against snntorch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("snntorch")

from edgetool.errors import ConfigError, ModelError  # noqa: E402
from edgetool.zoo import l2mu, wisdm  # noqa: E402
from edgetool.zoo.family import get_family  # noqa: E402
from edgetool.zoo.recipe import Recipe, load_recipe  # noqa: E402
from tests.conftest import REPO, assert_one_line_error  # noqa: E402

TINY_ARCH = {"population": 8, "memory": 4, "order": 4, "hidden": 32}
TINY_DATA = {"per_class": 60}
TINY_TRAIN = {"epochs": 8, "lr": 0.003, "batch_size": 32}


def _quiet(step: int, total: int, message: str) -> None:
    assert 1 <= step <= total and message


def _tiny(**arch: Any) -> Recipe:
    return load_recipe("l2mu-mcu").with_overrides(
        {"arch": {**TINY_ARCH, **arch}, "data": TINY_DATA, "train": TINY_TRAIN}
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recipe, dict[str, Any]]:
    out = tmp_path_factory.mktemp("l2mu")
    recipe = dataclasses.replace(_tiny(), dir=out)
    (out / "recipe.toml").write_text("# tiny l2mu for tests\n")
    metrics = get_family("l2mu").train(recipe, out, _quiet)
    return recipe, metrics


# --- LMU state space ------------------------------------------------------------------


def test_lmu_matrices_follow_the_legendre_definition() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    order, theta = 5, 40.0
    a_bar, b_bar = l2mu.lmu_matrices(order, theta)
    a = np.zeros((order, order))
    b = np.zeros(order)
    for i in range(order):
        b[i] = (2 * i + 1) * (-1) ** i
        for j in range(order):
            a[i, j] = (2 * i + 1) * (-1 if i < j else (-1) ** (i - j + 1))
    a, b = a / theta, b / theta
    expected_a = scipy_linalg.expm(a)
    expected_b = np.linalg.solve(a, (expected_a - np.eye(order)) @ b)  # ZOH, dt = 1
    np.testing.assert_allclose(a_bar.numpy(), expected_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_bar.numpy(), expected_b, rtol=1e-5, atol=1e-6)


def test_lmu_memory_holds_the_last_theta_steps() -> None:
    """The Legendre memory's reason to exist: u(t − θ') can be read back from m(t)
    through shifted Legendre polynomials, for any delay θ' within the window θ."""
    from numpy.polynomial import legendre

    order, theta = 8, 20.0
    a_bar, b_bar = (m.double().numpy() for m in l2mu.lmu_matrices(order, theta))
    t = np.arange(200)
    u = np.sin(2 * np.pi * t / 37)
    m, states = np.zeros(order), []
    for value in u:
        m = a_bar @ m + b_bar * value
        states.append(m)
    for delay in (0, 10, 20):
        weights = [legendre.legval(2 * delay / theta - 1, [0] * i + [1]) for i in range(order)]
        decoded = np.asarray(states) @ np.asarray(weights)
        assert np.abs(decoded[100:] - u[100 - delay : 200 - delay]).max() < 0.1


# --- neurons: snntorch vs the written-out equations ------------------------------------


@pytest.mark.parametrize("kind", l2mu.NEURONS)
def test_population_matches_snntorch_bit_for_bit(kind: str) -> None:
    pop = l2mu.Population(kind, beta=0.85, alpha=0.7, threshold=1.0, slope=25.0)
    gen = torch.Generator().manual_seed(1)
    currents = torch.randn(40, 3, 50, generator=gen) * 0.8 + 0.3
    snn_state = pop.init_state(currents[0])
    exact_state = pop.init_state(currents[0])
    spikes = 0.0
    for current in currents:
        snn_state = pop.step(current, snn_state, exact=False)
        exact_state = pop.step(current, exact_state, exact=True)
        for got, want in zip(exact_state, snn_state, strict=True):
            assert torch.equal(got, want)
        spikes += float(snn_state[0].sum())
    assert 0 < spikes < currents.numel()  # the test exercised both spiking and silence


@pytest.mark.parametrize("kind", l2mu.NEURONS)
def test_network_steps_match_snntorch(kind: str) -> None:
    model = l2mu.build(_tiny(neuron=kind)).eval()
    window = torch.from_numpy(wisdm.synthetic(2, seed=3).x)
    with torch.no_grad():
        reference = model.run(window)
        model.exact = True
        written_out = model.run(window)
    for name in reference:
        assert len(reference[name]) == wisdm.STEPS
        for t, (want, got) in enumerate(zip(reference[name], written_out[name], strict=True)):
            assert torch.equal(want, got), f"{name} differs at step {t}"
    assert float(torch.stack(reference["x"]).mean()) > 0  # the input layer spikes


def test_bad_arch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="neuron"):
        l2mu.build(_tiny(neuron="izhikevich"))
    with pytest.raises(ConfigError, match="unknown arch key 'layers'"):
        l2mu.build(_tiny(layers=3))


# --- data -----------------------------------------------------------------------------


def test_synthetic_windows_are_seeded_and_shaped() -> None:
    a, b = wisdm.synthetic(10, seed=0), wisdm.synthetic(10, seed=0)
    assert a.x.shape == (70, 40, 6) and a.x.dtype == np.float32
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, wisdm.synthetic(10, 1).x)
    assert np.bincount(a.y).tolist() == [10] * 7
    # gravity shows in the accelerometer: the mean magnitude is about 9.81 m/s²
    gravity = np.linalg.norm(a.x[:, :, :3].mean(axis=1), axis=1)
    assert 5 < float(np.median(gravity)) < 12


def _write_wisdm(root: Path, subjects: list[int], steps: int = 100) -> None:
    """Raw watch files in WISDM 2019's format: one accel and one gyro file per subject."""
    period = 50_000_000
    for sensor, offset in (("accel", 0), ("gyro", 7_000_000)):
        folder = root / sensor
        folder.mkdir(parents=True, exist_ok=True)
        for s in subjects:
            lines = []
            t = 1_000_000_000 * s
            for code in ("P", "A", "F"):  # dribbling, walking (not a hand activity), typing
                for k in range(steps):
                    value = 100 * s + k if sensor == "accel" else -(100 * s + k)
                    lines.append(f"{s},{code},{t + offset},{value},{value / 2},1.5;")
                    t += period
                t += 10 * period  # a gap between activities
            (folder / f"data_{s}_{sensor}_watch.txt").write_text("\n".join(lines) + "\n")


def test_wisdm_loader_pairs_windows_and_filters(tmp_path: Path) -> None:
    _write_wisdm(tmp_path, [1600, 1601, 1602], steps=100)
    data = wisdm.load_wisdm(tmp_path)
    # per subject: 2 hand activities × floor(100 / 40) windows; walking is dropped
    assert data.x.shape == (3 * 2 * 2, 40, 6)
    assert sorted(set(data.y.tolist())) == [0, 2]  # dribbling, typing
    first = data.x[0]
    assert first[0, 0] == 160000 and first[39, 0] == 160039  # consecutive samples
    assert np.array_equal(first[:, 3], -first[:, 0])  # the gyro sample of the same instant
    assert set(data.subjects.tolist()) == {1600, 1601, 1602}


def test_wisdm_window_skips_recording_gaps() -> None:
    t = np.arange(100) * 50_000_000.0
    t[50:] += 5e9  # a 5 s gap after sample 50
    paired = np.column_stack([t, np.arange(100.0), *(np.zeros(100) for _ in range(5))])
    windows = wisdm.window(paired)
    assert len(windows) == 2  # [0, 40) and [50, 90): none straddles the gap
    assert windows[1][0, 0] == 50


def test_wisdm_recipe_source_splits_by_subject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_wisdm(tmp_path, [1600, 1601, 1602, 1603, 1604], steps=80)
    monkeypatch.setenv(wisdm.WISDM_DIR_ENV, str(tmp_path))
    splits = wisdm.load_windows({"source": "wisdm", "test_fraction": 0.2}, tmp_path)
    train, test = set(splits.train.subjects.tolist()), set(splits.test.subjects.tolist())
    assert test and train and not train & test
    assert "WISDM" in splits.source


def test_wisdm_bad_input_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(wisdm.WISDM_DIR_ENV, raising=False)
    with pytest.raises(ModelError, match="no WISDM watch files"):
        wisdm.load_wisdm(tmp_path)
    _write_wisdm(tmp_path, [1600])
    bad = tmp_path / "accel" / "data_1600_accel_watch.txt"
    bad.write_text(bad.read_text() + "1600,P,notatime,1,2,3;\n")
    with pytest.raises(ModelError, match=r"data_1600_accel_watch.txt:\d+: not a WISDM record"):
        wisdm.load_wisdm(tmp_path)
    with pytest.raises(ConfigError, match=r"needs data\.path"):
        wisdm.load_windows({"source": "wisdm"}, tmp_path)
    with pytest.raises(ConfigError, match="'synthetic' or 'wisdm'"):
        wisdm.load_windows({"source": "har"}, tmp_path)


# --- training and export ----------------------------------------------------------------


def test_tiny_training_learns(trained: tuple[Recipe, dict[str, Any]]) -> None:
    recipe, metrics = trained
    assert metrics["test_top1"] >= 0.6  # chance is 1/7
    assert metrics["params"] == l2mu.num_params(l2mu.build(recipe))
    saved = json.loads((recipe.dir / "metrics.json").read_text())
    assert saved["test_top1"] == metrics["test_top1"]
    assert all(0 < rate < 1 for name, rate in metrics["spike_rates"].items() if name != "m")


def test_training_is_reproducible(trained: tuple[Recipe, dict[str, Any]], tmp_path: Path) -> None:
    recipe, metrics = trained
    again = get_family("l2mu").train(dataclasses.replace(recipe, dir=tmp_path), tmp_path, _quiet)
    assert again["test_top1"] == metrics["test_top1"]
    a = torch.load(recipe.dir / recipe.weights, weights_only=True)
    b = torch.load(tmp_path / recipe.weights, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_onnx_graph_is_unrolled_and_matches_snntorch_step_by_step(
    trained: tuple[Recipe, dict[str, Any]], tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from edgetool.export.onnx_export import export_onnx

    recipe, _ = trained
    traced = dataclasses.replace(
        recipe,
        arch={**recipe.arch, "trace": True},
        outputs=("spike_counts", "hidden_spikes", "output_spikes"),
    )
    family = get_family("l2mu")
    out = tmp_path / "l2mu.onnx"
    export_onnx(family, traced, recipe.dir, "fp32", out, lambda _m: None)
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert not ops & {"Loop", "Scan", "If"}
    assert {"Greater", "Cast"} <= ops

    samples = family.samples(recipe, "test", 24)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    reference = family.reference(recipe, recipe.dir)
    mismatched = total = 0
    for i in range(24):
        window = samples.inputs["window"][i : i + 1]
        counts, hidden, output = session.run(None, {"window": window})
        with torch.no_grad():
            steps = reference.run(torch.from_numpy(window))
        want_h = torch.stack(steps["h"], dim=1).numpy()
        want_o = torch.stack(steps["out"], dim=1).numpy()
        assert hidden.shape == want_h.shape == (1, 40, recipe.arch["hidden"])
        mismatched += int((hidden != want_h).sum() + (output != want_o).sum())
        total += hidden.size + output.size
        np.testing.assert_array_equal(counts, output.sum(axis=1))
    # float sums in onnxruntime may differ in the last bit from PyTorch's, which can flip
    # a spike that sits exactly at threshold; anything beyond a rare flip is a bug
    assert mismatched <= total * 1e-3


def test_shipped_l2mu_mcu_weights_reach_recorded_accuracy() -> None:
    recipe = load_recipe("l2mu-mcu")
    metrics = json.loads((recipe.dir / "metrics.json").read_text())
    assert metrics["test_top1"] >= 0.9 and 15_000 <= metrics["params"] <= 25_000
    family = get_family("l2mu")
    samples = family.samples(recipe, "test", 0)
    model = family.reference(recipe, recipe.dir)
    with torch.no_grad():
        counts = model(torch.from_numpy(samples.inputs["window"]))
    top1 = family.task_metric(counts.numpy(), samples)["top1"]
    assert top1 == pytest.approx(metrics["test_top1"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "quant"), [("onnx", "int8"), ("tflite", "fp32")])
def test_cli_export_verify_deploy(cli: Any, home: Path, fmt: str, quant: str) -> None:
    """The user's path, on the shipped microcontroller-sized recipe."""
    result = cli("verify", f"l2mu-mcu:{fmt}:{quant}", "--samples", "32", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["passed"] and report["agreement"]["top1_agreement"] >= 0.95
    assert 0 <= report["agreement"]["spike_count_agreement"] <= 1
    if fmt == "onnx":
        assert "QuantizeLinear" in report["ops"] and "Loop" not in report["ops"]
    deployed = cli("deploy", "-m", f"l2mu-mcu:{fmt}:{quant}", "-n", "20", "--json")
    assert deployed.code == 0, deployed.stderr
    assert deployed.json()["manifest"]["artifact"]["model"] == "l2mu-mcu"


def test_cli_train_rejects_unknown_neuron(cli: Any, home: Path) -> None:
    result = cli("train", "l2mu-mcu", "--set", "arch.neuron=izhikevich", "-o", str(home / "w"))
    assert_one_line_error(result, 5, "arch.neuron must be one of leaky, synaptic")
    assert not (REPO / "models" / "l2mu-mcu" / "izhikevich").exists()


# --- stepped export (one time step per invoke, for Bangle.js) ------------------------------


@pytest.mark.parametrize("kind", l2mu.NEURONS)
def test_stepping_one_step_module_gives_the_unrolled_counts(kind: str) -> None:
    from edgetool.export.stepped import StepLayout, run_window

    model = l2mu.build(_tiny(neuron=kind)).eval()
    model.exact = True
    step = l2mu.L2MUStep(model).eval()
    layers = 2 if kind == "synaptic" else 1  # membrane (+ synaptic current) per neuron
    assert step.state_size == (6 * 8 + 4 + 4 * 4 + 32 + 7) * layers + 7
    layout = StepLayout(wisdm.STEPS, 6, step.state_size, 7)
    windows = wisdm.synthetic(2, seed=5).x[:6]
    with torch.no_grad():
        want = model(torch.from_numpy(windows)).numpy()

        def invoke(packed: np.ndarray) -> np.ndarray:
            return step(torch.from_numpy(packed.copy())).numpy()

        got = np.stack([run_window(invoke, layout, w) for w in windows])
    np.testing.assert_array_equal(got, want)  # bit for bit: the same operations in order
    assert got.sum() > 0  # the output layer spiked


def test_stepped_recipe_shape_and_quants_are_checked(tmp_path: Path) -> None:
    from edgetool.export import build

    recipe = load_recipe("l2mu-watch")
    mcu = load_recipe("l2mu-mcu")
    assert recipe.weights_path.read_bytes() == mcu.weights_path.read_bytes()
    assert dict(recipe.arch) == dict(mcu.arch) and dict(recipe.train) == dict(mcu.train)
    assert l2mu.step_layout(recipe) == {"steps": 40, "channels": 6, "state": 270, "result": 7}
    assert l2mu.step_layout(load_recipe("l2mu-mcu")) is None
    wrong = dataclasses.replace(
        recipe, inputs=(dataclasses.replace(recipe.inputs[0], shape=(1, 6)),)
    )
    with pytest.raises(ConfigError, match=r"one input of shape \[1, 276\]"):
        get_family("l2mu").export_module(wrong, recipe.dir, "fp32")
    with pytest.raises(ModelError, match="l2mu-watch exports only as fp32, not int8"):
        build.export("l2mu-watch", "tflite", "int8")


def test_step_layout_rejects_a_wrong_window() -> None:
    from edgetool.export.stepped import StepLayout

    layout = StepLayout.of({"stepped": {"steps": 40, "channels": 6, "state": 270, "result": 7}})
    assert layout is not None and StepLayout.of({}) is None
    assert layout.window(np.zeros((1, 40, 6))).shape == (40, 6)
    with pytest.raises(ModelError, match=r"\[1, 40, 6\]; got \[1, 6, 40\]"):
        layout.window(np.zeros((1, 6, 40)))
    with pytest.raises(ModelError, match="malformed 'stepped'"):
        StepLayout.of({"stepped": {"steps": 40}})


@pytest.mark.slow
def test_cli_stepped_tflite_verifies_against_the_unrolled_reference(cli: Any, home: Path) -> None:
    result = cli("verify", "l2mu-watch", "--samples", "16", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["passed"] and report["max_abs"] == 0  # fp32, same operations
    assert report["agreement"]["spike_count_agreement"] == 1
    assert "FULLY_CONNECTED" in report["ops"]
