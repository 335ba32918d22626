"""The runner's `env` probes, against a fake sysfs/procfs tree and on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetool.runner import device_runner as runner

OLD_KEYS = {"time_ns", "governor", "freq_khz", "loadavg"}  # temp_c/throttled: when present
NEW_KEYS = {"cpus", "thermal", "throttle", "cpu_times", "affinity", "process_threads"}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A Pi-like tree: 2 CPUs with cpufreq (cpu2 without), two zones of one type."""
    cpu = tmp_path / "sys/devices/system/cpu"
    for n, (governor, cur, low, high) in enumerate(
        [("ondemand", 600000, 600000, 1500000), ("performance", 1500000, 600000, 1200000)]
    ):
        freq = cpu / f"cpu{n}/cpufreq"
        write(freq / "scaling_governor", governor + "\n")
        write(freq / "scaling_cur_freq", f"{cur}\n")
        write(freq / "scaling_min_freq", f"{low}\n")
        write(freq / "scaling_max_freq", f"{high}\n")
        write(freq / "cpuinfo_max_freq", "1800000\n")
    (cpu / "cpu2").mkdir()
    (cpu / "cpufreq").mkdir()  # not a CPU
    thermal = tmp_path / "sys/class/thermal"
    write(thermal / "thermal_zone0/type", "cpu-thermal\n")
    write(thermal / "thermal_zone0/temp", "48312\n")
    write(thermal / "thermal_zone1/type", "cpu-thermal\n")
    write(thermal / "thermal_zone1/temp", "51000\n")
    (thermal / "cooling_device0").mkdir()
    # The firmware driver prints "%x": no 0x prefix.
    write(tmp_path / "sys/devices/platform/soc/soc:firmware/get_throttled", "50005\n")
    write(
        tmp_path / "proc/stat",
        "cpu  100 5 50 1000 20 3 2 7 40 0\ncpu0 50 2 25 500 10 1 1 3 20 0\nintr 1 2 3\n",
    )
    write(tmp_path / "proc/self/status", "Name:\tpython3\nThreads:\t4\nVmHWM:\t100 kB\n")
    return tmp_path


def test_cpufreq_per_cpu(fake_root: Path) -> None:
    assert runner.cpufreq_state(str(fake_root / "sys")) == [
        {
            "cpu": 0,
            "governor": "ondemand",
            "cur_khz": 600000,
            "min_khz": 600000,
            "max_khz": 1500000,
            "hw_max_khz": 1800000,
        },
        {
            "cpu": 1,
            "governor": "performance",
            "cur_khz": 1500000,
            "min_khz": 600000,
            "max_khz": 1200000,
            "hw_max_khz": 1800000,
        },
    ]


def test_cpus_sort_numerically_and_missing_files_are_none(tmp_path: Path) -> None:
    for n in (10, 9):
        (tmp_path / f"devices/system/cpu/cpu{n}/cpufreq").mkdir(parents=True)
    write(tmp_path / "devices/system/cpu/cpu9/cpufreq/scaling_cur_freq", "<unsupported>\n")
    cpus = runner.cpufreq_state(str(tmp_path))
    assert cpus is not None
    assert [c["cpu"] for c in cpus] == [9, 10]
    assert all(value is None for c in cpus for key, value in c.items() if key != "cpu")


def test_thermal_zones_by_type_with_suffixes(fake_root: Path) -> None:
    assert runner.thermal_state(str(fake_root / "sys")) == {
        "cpu-thermal": 48.312,
        "cpu-thermal_2": 51.0,
    }


def test_unreadable_zone_keeps_the_other_names_stable(fake_root: Path) -> None:
    (fake_root / "sys/class/thermal/thermal_zone0/temp").unlink()
    assert runner.thermal_state(str(fake_root / "sys")) == {"cpu-thermal_2": 51.0}


@pytest.mark.parametrize("text", ["throttled=0x50005", "0x50005", "50005\n"])
def test_pi_throttle_bits(text: str) -> None:
    assert runner.decode_throttled(text) == {
        "raw": "0x50005",
        "now": ["under-voltage", "throttled"],
        "since_boot": ["under-voltage", "throttled"],
    }


def test_pi_throttle_all_bits_and_garbage() -> None:
    names = ["under-voltage", "arm-frequency-capped", "throttled", "soft-temperature-limit"]
    assert runner.decode_throttled("0xf000f") == {
        "raw": "0xf000f",
        "now": names,
        "since_boot": names,
    }
    assert runner.decode_throttled("0x0") == {"raw": "0x0", "now": [], "since_boot": []}
    assert runner.decode_throttled(None) is None
    assert runner.decode_throttled("error") is None


def test_throttle_prefers_vcgencmd_then_sysfs(fake_root: Path) -> None:
    sys_root = str(fake_root / "sys")
    assert runner.throttle_state("throttled=0x0", sys_root) == {
        "raw": "0x0",
        "now": [],
        "since_boot": [],
    }
    from_sysfs = runner.throttle_state(None, sys_root)
    assert from_sysfs is not None and from_sysfs["raw"] == "0x50005"
    assert runner.throttle_state(None, str(fake_root / "nothing")) is None


def test_cpu_times_from_proc_stat(fake_root: Path) -> None:
    # total: user..steal (guest and guest_nice are already inside user and nice)
    assert runner.cpu_times(str(fake_root / "proc")) == {
        "total": 100 + 5 + 50 + 1000 + 20 + 3 + 2 + 7,
        "steal": 7,
        "idle": 1000 + 20,
    }


def test_process_threads_from_status(fake_root: Path) -> None:
    assert runner.process_threads(str(fake_root / "proc")) == 4


def test_environment_on_the_fake_tree(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    def fake_vcgencmd(*args: str) -> str | None:
        calls.append(args)
        return None

    monkeypatch.setattr(runner, "vcgencmd", fake_vcgencmd)
    env = runner.environment(str(fake_root / "sys"), str(fake_root / "proc"))
    assert calls == [("get_throttled",)]  # asked once, its answer reused
    assert env["temp_c"] == 48.312
    assert env["governor"] == "ondemand"
    assert env["freq_khz"] == [600000, 1500000]
    assert "throttled" not in env
    assert [c["cpu"] for c in env["cpus"]] == [0, 1]
    assert env["thermal"] == {"cpu-thermal": 48.312, "cpu-thermal_2": 51.0}
    assert env["throttle"]["now"] == ["under-voltage", "throttled"]
    assert env["cpu_times"]["steal"] == 7
    assert env["process_threads"] == 4
    json.dumps(env)


def test_environment_reuses_vcgencmd_answer(
    fake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "vcgencmd", lambda *args: "throttled=0x20002")
    env = runner.environment(str(fake_root / "sys"), str(fake_root / "proc"))
    assert env["throttled"] == "0x20002"
    assert env["throttle"] == {
        "raw": "0x20002",
        "now": ["arm-frequency-capped"],
        "since_boot": ["arm-frequency-capped"],
    }


def test_environment_without_any_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "vcgencmd", lambda *args: None)
    env = runner.environment(str(tmp_path), str(tmp_path))
    assert "temp_c" not in env and "throttled" not in env
    assert env["governor"] is None and env["freq_khz"] is None
    for key in ("cpus", "thermal", "throttle", "cpu_times", "process_threads"):
        assert env[key] is None, key


def test_environment_on_this_machine() -> None:
    env = runner.environment()
    assert set(env) >= OLD_KEYS | NEW_KEYS
    json.loads(json.dumps(env))
    times = env["cpu_times"]
    assert times is not None and 0 <= times["steal"] <= times["total"]
    assert 0 <= times["idle"] <= times["total"]
    assert env["affinity"] and all(isinstance(cpu, int) for cpu in env["affinity"])
    assert env["process_threads"] >= 1
    for cpu in env["cpus"] or []:
        assert set(cpu) == {"cpu", "governor", "cur_khz", "min_khz", "max_khz", "hw_max_khz"}
    assert all(isinstance(t, float) for t in (env["thermal"] or {}).values())
