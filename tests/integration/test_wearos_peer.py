"""`edgetool targets check` and `deploy` on a Wear OS target, end to end through the CLI,
against the ADB test peer (the real ADB device protocol on 127.0.0.1, a host shell behind
it) running a stand-in benchmark_model that prints in the real tool's format.

What this proves: the transport (adb-shell, our magic check, verified push through sh +
sha256sum, argv quoting, exit markers), the benchmark_model parsing and aggregate-only
summary, the fuel-gauge energy path against a battery with a known integral, and the
one-line errors. What it cannot: that a real watch's toybox agrees with the host's tools."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.testing.adb_peer import AdbPeer
from tests.conftest import REPO, assert_one_line_error, run_cli

pytestmark = pytest.mark.integration

FAKE_BENCHMARK_MODEL = REPO / "tests" / "fixtures" / "android" / "benchmark_model"
AVG_US = 2000  # the stand-in's per-inference time
SYNTHETIC = {"ro.edgetool.synthetic": "1"}


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`l2mu` exported to TFLite once for the module (a real litert-torch export)."""
    cache = tmp_path_factory.mktemp("export-cache")
    result = run_cli("export", "l2mu", "--format", "tflite", env={"EDGETOOL_CACHE_DIR": str(cache)})
    assert result.code == 0, result.stderr
    return cache


def _target_dir(tmp: Path, port: int, **transport: Any) -> Path:
    folder = tmp / "targets"
    folder.mkdir(exist_ok=True)
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in transport.items())
    (folder / "watch-wearos.toml").write_text(
        f"""
kind = "android"
runtimes = ["litert"]
workdir = "/data/local/tmp/edgetool"

[transport]
type = "adb"
host = "127.0.0.1"
port = {port}
timeout = 5
{extra}
[android]
benchmark_model = {{ "arm64-v8a" = "{FAKE_BENCHMARK_MODEL}" }}
threads = 2

[meter]
type = "fuel-gauge"
period_s = 0.05
repeats = 3
"""
    )
    return folder


@pytest.fixture
def watch(home: Path, export_cache: Path) -> Iterator[tuple[AdbPeer, dict[str, str]]]:
    """A peer that accepts edgetool's key on first use (the user tapped Allow)."""
    with AdbPeer(home / "watch", accept_new_keys=True, props=SYNTHETIC) as peer:
        env = {
            "EDGETOOL_TARGETS": str(_target_dir(home, peer.port)),
            "EDGETOOL_CONFIG_DIR": str(home / "config"),
            "EDGETOOL_CACHE_DIR": str(export_cache),
            "EDGETOOL_FAKE_AVG_US": str(AVG_US),
        }
        yield peer, env


def test_targets_check_reports_the_watch_and_says_synthetic(
    watch: tuple[AdbPeer, dict[str, str]],
) -> None:
    peer, env = watch
    result = run_cli("targets", "check", "watch-wearos", "--json", env=env)
    assert result.code == 0, result.stderr
    facts = result.json()
    assert facts["abi"] == "arm64-v8a"
    assert facts["synthetic"] is True
    assert "adb-shell" in facts["transport"]
    assert "found" in facts["benchmark_model"]
    assert facts["battery"].endswith("(Discharging)")
    assert "public-key-accepted" in [event for event, _ in peer.auth_log]
    text = run_cli("targets", "check", "watch-wearos", env=env)
    assert text.code == 0 and "synthetic peer" in text.stdout


def test_deploy_l2mu_runs_benchmark_model_with_exact_counts(
    watch: tuple[AdbPeer, dict[str, str]],
) -> None:
    peer, env = watch
    result = run_cli(
        "deploy", "--target", "watch-wearos", "--model", "l2mu", "-n", "150", "--warmup", "3",
        "-r", "3", "--json", env=env,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    out = result.json()
    summary, manifest = out["summary"], out["manifest"]
    lat = summary["latency"]
    assert summary["aggregate_only"] is True and lat["aggregate_only"] is True
    # Three repetitions: three benchmark_model processes of 150, each a mean.
    assert lat["count"] == 450 and summary["count"] == 450 and summary["runs"] == 3
    reps = summary["repetitions"]
    assert reps["count"] == 3 and reps["kind"] == "process" and "means" in reps["method"]
    assert reps["estimate_ms"] == pytest.approx(AVG_US / 1e3)
    assert lat["mean"] == pytest.approx(AVG_US / 1e3)
    assert all(lat[key] is None for key in ("p50", "p90", "p99", "median_ci"))
    assert summary["warmup"]["count"] == 3
    assert summary["synthetic"] is True and manifest["target"]["synthetic"] is True
    assert manifest["artifact"]["format"] == "tflite"
    assert manifest["device"]["abi"] == "arm64-v8a"
    run_dir = Path(out["run_dir"])
    logged = (run_dir / "benchmark_model.txt").read_text()
    # The counts edgetool asked for are the counts the tool ran.
    assert "at least 150 iterations" in logged and "at least 3 iterations" in logged
    # Both files arrived whole at their final names on the "watch".
    pushed = [Path(p["remote"]) for p in out["pushes"]]
    assert [p.name for p in pushed] == ["benchmark_model", "l2mu-fp32.tflite"]
    for push in out["pushes"]:
        local = peer.root / push["remote"].lstrip("/")
        assert local.is_file() and local.stat().st_size == push["size"]
        assert not local.with_name(local.name + ".part").exists()
    again = run_cli(
        "deploy", "--target", "watch-wearos", "--model", "l2mu", "-n", "20", "--json", env=env
    )
    assert again.code == 0, again.stderr
    assert all(p["skipped"] for p in again.json()["pushes"])
    shown = run_cli("results", "show", str(run_dir), env=env)
    assert shown.code == 0 and "aggregates only, no percentiles" in shown.stdout
    assert "SYNTHETIC" in shown.stdout


def test_energy_is_a_fuel_gauge_estimate_close_to_the_battery_truth(
    watch: tuple[AdbPeer, dict[str, str]],
) -> None:
    peer, env = watch
    result = run_cli(
        "deploy", "--target", "watch-wearos", "--model", "l2mu", "-n", "400", "--energy",
        "--idle-seconds", "1", "--json", env=env,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    out = result.json()
    energy = out["summary"]["energy"]
    assert energy["estimate"] is True and "fuel-gauge" in json.dumps(energy)
    assert out["summary"]["runs"] == 3 and out["summary"]["count"] == 1200
    # Ground truth: the peer's load current above idle, for one inference's time.
    volts = peer.battery.voltage_uv / 1e6
    want_dynamic_mj = peer.battery.load_ua / 1e6 * volts * AVG_US / 1e6 * 1e3
    assert energy["dynamic_mj"]["mean"] == pytest.approx(want_dynamic_mj, rel=0.10)
    idle_w = peer.battery.idle_ua / 1e6 * volts
    assert energy["idle_w"] == pytest.approx(idle_w, rel=0.05)
    run_dir = Path(out["run_dir"])
    assert (run_dir / "fuel_gauge.log").is_file()
    # The gauge's samples are the run's power trace, as a meter's would be.
    trace = run_cli("trace", str(run_dir), "-o", str(run_dir / "trace.json"), env=env)
    assert trace.code == 0, trace.stderr
    events = json.loads((run_dir / "trace.json").read_text())["traceEvents"]
    watts = [e["args"]["W"] for e in events if e.get("name") == "power (W)"]
    assert len(watts) >= 10
    assert min(watts) == pytest.approx(idle_w, rel=0.05)
    assert max(watts) == pytest.approx(idle_w + peer.battery.load_ua / 1e6 * volts, rel=0.05)


def test_charging_watch_is_refused_for_energy(home: Path, export_cache: Path) -> None:
    with AdbPeer(home / "w", accept_new_keys=True, charging=True, props=SYNTHETIC) as peer:
        env = {
            "EDGETOOL_TARGETS": str(_target_dir(home, peer.port)),
            "EDGETOOL_CONFIG_DIR": str(home / "config"),
            "EDGETOOL_CACHE_DIR": str(export_cache),
        }
        result = run_cli(
            "deploy", "--target", "watch-wearos", "--model", "l2mu", "--energy", env=env
        )
    assert_one_line_error(result, 7, "charging")


def test_corrupt_model_is_a_model_error(
    watch: tuple[AdbPeer, dict[str, str]], tmp_path: Path
) -> None:
    _, env = watch
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"\x00" * 64)
    result = run_cli("deploy", "--target", "watch-wearos", "--model", str(bad), env=env)
    assert_one_line_error(result, 3)


def test_key_not_allowed_on_the_watch(home: Path) -> None:
    with AdbPeer(home / "w", accept_new_keys=False) as peer:
        env = {
            "EDGETOOL_TARGETS": str(_target_dir(home, peer.port)),
            "EDGETOOL_CONFIG_DIR": str(home / "config"),
        }
        result = run_cli("targets", "check", "watch-wearos", env=env)
    assert_one_line_error(result, 6, "did not accept")
    assert (home / "config" / "adbkey").is_file()  # made on first use, kept for next time


def test_tls_only_watch_needs_the_adb_client(home: Path) -> None:
    with AdbPeer(home / "w", mode="tls") as peer:
        env = {"EDGETOOL_CONFIG_DIR": str(home / "config")}
        strict_dir = _target_dir(home, peer.port, client="adb-shell")
        strict = run_cli(
            "targets", "check", "watch-wearos", env={**env, "EDGETOOL_TARGETS": str(strict_dir)}
        )
        no_client_dir = _target_dir(home, peer.port, adb="/nonexistent/adb")
        no_client = run_cli(
            "targets", "check", "watch-wearos", env={**env, "EDGETOOL_TARGETS": str(no_client_dir)}
        )
    assert_one_line_error(strict, 6, "Wireless debugging")
    assert_one_line_error(no_client, 6, "not installed")


def test_bad_magic_and_silence_are_clear_connect_errors(home: Path) -> None:
    env = {"EDGETOOL_CONFIG_DIR": str(home / "config")}
    with AdbPeer(home / "w", mode="bad-magic") as peer:
        bad = run_cli(
            "targets", "check", "watch-wearos",
            env={**env, "EDGETOOL_TARGETS": str(_target_dir(home, peer.port))},
        )  # fmt: skip
    assert_one_line_error(bad, 6, "does not speak the ADB protocol")
    with AdbPeer(home / "w2", mode="silent") as peer:
        silent = run_cli(
            "targets", "check", "watch-wearos",
            env={**env, "EDGETOOL_TARGETS": str(_target_dir(home, peer.port))},
            timeout=60,
        )  # fmt: skip
    assert_one_line_error(silent, 6, "did not answer")


@pytest.mark.skipif(shutil.which("adb") is None, reason="Debian's adb client is not installed")
def test_the_adb_client_path_works_against_the_same_peer(
    watch: tuple[AdbPeer, dict[str, str]], home: Path, tmp_path: Path
) -> None:
    """client = "adb": the platform-tools client drives the peer (its own server on a
    private port, its own key under a private HOME)."""
    import socket

    peer, env = watch
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        server_port = probe.getsockname()[1]
    adb_env = {
        **env,
        "EDGETOOL_TARGETS": str(_target_dir(home, peer.port, client="adb")),
        "HOME": str(tmp_path / "adb-home"),
        "ANDROID_ADB_SERVER_PORT": str(server_port),
    }
    (tmp_path / "adb-home").mkdir()
    try:
        result = run_cli(
            "deploy", "--target", "watch-wearos", "--model", "l2mu", "-n", "30", "-r", "1",
            "--json", env=adb_env,
        )  # fmt: skip
        assert result.code == 0, result.stderr
        out = result.json()
        assert "adb client" in out["manifest"]["target"]["transport"]
        assert out["summary"]["count"] == 30
    finally:
        import subprocess

        subprocess.run(
            ["adb", "-P", str(server_port), "kill-server"],
            env={"HOME": str(tmp_path / "adb-home"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=30,
            check=False,
        )
