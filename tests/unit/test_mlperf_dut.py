"""MLPerf Tiny boards (`flash = "none"`): edgetool drives a firmware it did not write. The
DUT is `edgetool.testing.mlperf_dut` on a pty, written from the EEMBC protocol text; the
CLI runs as a user runs it, in its own process, over pyserial."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgetool.errors import ConfigError, DeviceError
from edgetool.mcu.protocol import BenchClient, _BadReply, parse_scores
from edgetool.targets import load_target_file
from edgetool.testing.mlperf_dut import MAX_COMMAND, DutModel, MlperfDut
from edgetool.transport.serial import open_port
from tests.conftest import CliResult, assert_one_line_error, run_cli

TARGET = "mlperf-tiny-dut"
URL_VAR = "EDGETOOL_MLPERF_TINY_DUT_URL"


def deploy(url: str, *args: str) -> CliResult:
    return run_cli("deploy", "-t", TARGET, "-n", "3", "-r", "2", *args, env={URL_VAR: url})


@pytest.fixture
def dut(home: Path) -> Iterator[tuple[MlperfDut, str]]:
    # Scores in exponent notation, as a firmware printing with %e does.
    peer = MlperfDut(score_format="{:.6e}")
    with peer.serve() as url:
        yield peer, url


# --- scores -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("m-results-[1e-05,-0.5,1.0E+2]", [1e-05, -0.5, 100.0]),
        ("m-results-[0.125, 3.5e+00 ,7]", [0.125, 3.5, 7.0]),
        ("m-results-[]", []),
    ],
)
def test_scores_in_every_float_notation(line: str, want: list[float]) -> None:
    assert parse_scores(line) == want


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_scores_are_an_error_naming_the_line(bad: str) -> None:
    line = f"m-results-[0.5,{bad}]"
    with pytest.raises(DeviceError, match="non-finite") as caught:
        parse_scores(line)
    assert line in caught.value.message


@pytest.mark.parametrize("garbled", ["m-results-[0.5,0.#5]", "m-results-[1_0]"])
def test_garbled_scores_are_noise_asked_again(garbled: str) -> None:
    with pytest.raises(_BadReply):
        parse_scores(garbled)


def test_a_dut_printing_nan_fails_with_its_line() -> None:
    peer = MlperfDut(nan_scores=True)
    with peer.serve() as url:
        client = BenchClient(open_port(url, 115200, 2.0), url, 2.0)
        try:
            client.sync()
            with pytest.raises(DeviceError, match=r"m-results-\[nan,nan"):
                client.infer(1, 0)
        finally:
            client.close()


def test_scores_reach_samples_summary_json_outputs_and_results_show(
    dut: tuple[MlperfDut, str],
) -> None:
    peer, url = dut
    result = deploy(url, "--save-outputs", "--json")
    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    expected = peer.expected_scores(peer.buffer)  # its own buffer
    top1 = out["summary"]["top1"]
    assert top1["class"] == int(np.argmax(expected))
    assert top1["score"] == pytest.approx(float(np.max(expected)))
    assert (top1["agreement"], top1["count"], top1["classes"]) == (1.0, 6, 10)
    run_dir = Path(out["run_dir"])
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [c for r in records for c in r["top1"]] == [top1["class"]] * 6
    assert all(len(r["score"]) == len(r["ns"]) for r in records)
    # outputs.npz as the Linux runner writes it: one array per output, batch first.
    with np.load(run_dir / "outputs.npz") as saved:
        assert saved["scores"].shape == (1, 10)
        np.testing.assert_allclose(saved["scores"][0], expected, rtol=1e-6)
    shown = run_cli("results", "show", str(run_dir))
    assert shown.code == 0, shown.stderr
    assert f"top-1  class {top1['class']} (score" in shown.stdout
    assert "in 100% of 6 inferences" in shown.stdout


# --- --input through db load / db -------------------------------------------------------


def test_input_goes_through_db_load_in_short_lines(dut: tuple[MlperfDut, str], home: Path) -> None:
    peer, url = dut
    image = np.random.default_rng(7).integers(-128, 128, (1, 32, 32, 3)).astype(np.int8)
    np.save(home / "img.npy", image)
    result = deploy(url, "--input", str(home / "img.npy"), "--json")
    assert result.code == 0, result.stderr
    loads = [c for c in peer.commands if c.startswith("db load")]
    chunks = [c for c in peer.commands if c.startswith("db ") and c not in loads]
    assert loads == ["db load 3072"]
    assert len(chunks) == math.ceil(3072 / 31)
    assert b"".join(bytes.fromhex(c[3:]) for c in chunks) == image.tobytes()
    assert max(len(c) + 1 for c in peer.commands) <= MAX_COMMAND
    # The DUT's scores are those of the image sent, not of its empty buffer.
    out = json.loads(result.stdout)
    assert out["summary"]["top1"]["class"] == int(np.argmax(peer.model.scores(image.tobytes())))
    assert out["manifest"]["upload"]["payload_bytes"] == 3072
    assert out["manifest"]["upload"]["method"] == "db"


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((1, 32, 32, 3), np.float32), "is float32 [1, 32, 32, 3]; the board"),
        (np.zeros((1, 32, 32, 2), np.int8), "has 2048 values [1, 32, 32, 2]"),
    ],
)
def test_input_the_dut_cannot_read_is_refused_before_anything_is_sent(
    dut: tuple[MlperfDut, str], home: Path, array: np.ndarray, needle: str
) -> None:
    peer, url = dut
    np.save(home / "bad.npy", array)
    result = deploy(url, "--input", str(home / "bad.npy"))
    assert_one_line_error(result, 3, needle, "MLPerf Tiny model ic01", "32x32x3")
    assert not [c for c in peer.commands if c.startswith("db")]
    assert not [c for c in peer.commands if c.startswith("infer")]


def test_an_npz_with_several_arrays_is_refused(home: Path) -> None:
    np.savez(home / "two.npz", a=np.zeros(3072, np.int8), b=np.zeros(3, np.int8))
    result = deploy("/nonexistent/tty", "--input", str(home / "two.npz"))
    assert_one_line_error(result, 3, "holds 2 arrays (a, b)")


def test_an_unknown_model_code_needs_its_input_in_the_target_toml(home: Path) -> None:
    peer = MlperfDut(model=DutModel(code="xx99", input_bytes=8, classes=4))
    np.save(home / "x.npy", np.arange(8, dtype=np.int8))
    with peer.serve() as url:
        result = deploy(url, "--input", str(home / "x.npy"))
        assert_one_line_error(result, 3, "model 'xx99'", "input_shape")
        toml = (Path(__file__).parents[2] / "targets" / f"{TARGET}.toml").read_text()
        declared = toml.replace('board = "unknown"', 'board = "unknown"\ninput_shape = [1, 8]\n'
                                'input_dtype = "int8"')  # fmt: skip
        (home / "own.toml").write_text(declared.replace("/dev/ttyACM0", url))
        ok = run_cli("deploy", "-t", str(home / "own.toml"), "-n", "2", "-r", "1",
                     "--input", str(home / "x.npy"), "--json")  # fmt: skip
    assert ok.code == 0, ok.stderr
    assert "db load 8" in peer.commands
    want = int(np.argmax(peer.model.scores(np.arange(8, dtype=np.int8).tobytes())))
    assert json.loads(ok.stdout)["summary"]["top1"]["class"] == want


def test_target_toml_input_spec_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        'kind = "mcu"\nruntimes = ["firmware"]\n[transport]\ntype = "serial"\n'
        'url = "/dev/null"\n[mcu]\nboard = "x"\nflash = "none"\nflash_bytes = 1\n'
        "ram_bytes = 1\ninput_shape = [1, 0]\n"
    )
    with pytest.raises(ConfigError, match=r"input_shape.*positive integers") as caught:
        load_target_file(path)
    assert "go together" in str(caught.value)


# --- --reference ------------------------------------------------------------------------


def test_reference_scores_agree_and_disagree(dut: tuple[MlperfDut, str], home: Path) -> None:
    peer, url = dut
    expected = peer.model.scores(peer.buffer)
    np.savez(home / "good.npz", scores=expected[None, :])
    good = deploy(url, "--reference", str(home / "good.npz"), "--json")
    assert good.code == 0, good.stderr
    parity = json.loads(good.stdout)["summary"]["parity"]
    assert parity["ok"] is True and parity["top1_agreement"] == 1.0
    assert parity["max_abs"] < 1e-6

    wrong = np.roll(expected, 1)  # another class on top
    np.savez(home / "bad.npz", scores=wrong)
    bad = deploy(url, "--reference", str(home / "bad.npz"))
    assert_one_line_error(bad, 11, "differ from --reference bad.npz", "top-1 agreement 0%")
    runs = sorted((home / "results").iterdir())
    manifest = json.loads((runs[-1] / "manifest.json").read_text())
    assert manifest["parity"]["ok"] is False
    assert (runs[-1] / "summary.json").is_file()  # the timings stay


def test_reference_with_a_loose_atol_passes_close_scores(
    dut: tuple[MlperfDut, str], home: Path
) -> None:
    peer, url = dut
    near = peer.model.scores(peer.buffer) + 0.004
    np.savez(home / "near.npz", scores=near, atol=0.005)
    assert deploy(url, "--reference", str(home / "near.npz")).code == 0
    np.savez(home / "tight.npz", scores=near, atol=0.001)
    assert_one_line_error(deploy(url, "--reference", str(home / "tight.npz")), 11, "0.001")


def test_reference_is_refused_where_it_means_nothing(cli: object, home: Path) -> None:
    np.save(home / "r.npy", np.zeros(10))
    result = run_cli("deploy", "-t", "local", "-m", "tiny-mlp", "--reference", str(home / "r.npy"))
    assert_one_line_error(result, 2, "--reference applies to MLPerf Tiny boards")


# --- -m on a fixed firmware -------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny-mlp", "cbnet-classifier", "model.onnx"])
def test_a_model_is_refused_up_front(home: Path, model: str) -> None:
    # The URL is not even a device: the refusal comes before any export or connection.
    result = deploy("/nonexistent/tty", "-m", model)
    assert_one_line_error(result, 2, f'{TARGET} has flash = "none"', f"--model {model}", "--input")
    assert not (home / "cache").exists() or not any((home / "cache").rglob("*.onnx"))
    assert not (home / "results").exists()
