"""One TOML table reader for every file a user writes: all of a file's problems at once,
each naming the file and the dotted key; unknown keys are errors everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgetool.config import TableReader
from edgetool.errors import ConfigError
from edgetool.farm.plan import load_plan
from edgetool.power import open_meter
from edgetool.targets import load_target_file
from edgetool.zoo.recipe import parse_recipe
from tests.conftest import CliResult

THREE_MISTAKES = """
kind = "linux"
workdir = "/"
[transport]
type = "ssh"
host = "lab-pi"
port = 70000
[provision]
pakages = ["numpy"]
"""
"""Three mistakes in three tables: the top level, [transport] and [provision]."""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problem_lines(message: str) -> list[str]:
    return [line.strip() for line in message.splitlines()[1:]]


def test_one_problem_keeps_its_one_line_message(tmp_path: Path) -> None:
    path = write(tmp_path / "pi.toml", '[transport]\ntype = "ssh"\nhost = "x"\nport = 70000\n')
    with pytest.raises(ConfigError) as info:
        load_target_file(path)
    assert str(info.value) == (
        f"{path}: key 'transport.port' must be an integer from 1 to 65535, got 70000"
    )


def test_a_target_reports_every_mistake_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "x.toml", THREE_MISTAKES)
    with pytest.raises(ConfigError) as info:
        load_target_file(path)
    message = str(info.value)
    assert message.splitlines()[0] == f"{path}: 3 problems:"
    lines = problem_lines(message)
    assert len(lines) == 3, message
    assert lines[0].startswith("key 'transport.port' must be an integer from 1 to 65535")
    assert lines[1].startswith("unknown key 'provision.pakages' (known keys: ")
    assert lines[2].startswith("key 'workdir' must be a directory of its own")
    assert all(line.startswith("  ") for line in message.splitlines()[1:])


def assert_all_listed(result: CliResult, first: str, needles: list[str]) -> None:
    """exit 5, one `error:` line heading the list, each problem on its own line."""
    assert result.code == ConfigError.exit_code, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {first}", result.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[0]]
    for needle in needles:
        assert sum(needle in line for line in lines[1:]) == 1, (needle, result.stderr)


@pytest.mark.parametrize(
    "argv", [("targets", "show"), ("deploy", "-m", "tiny-mlp", "-t")], ids=["show", "deploy"]
)
def test_cli_lists_every_mistake_without_traceback(
    cli: Any, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    path = write(tmp_path / "x.toml", THREE_MISTAKES)
    result = cli(*argv, str(path))
    needles = ["'transport.port'", "'provision.pakages'", "'workdir'"]
    assert_all_listed(result, f"{path}: 3 problems:", needles)


def test_a_plan_reports_every_mistake_of_the_file(cli: Any, tmp_path: Path) -> None:
    path = write(
        tmp_path / "night.toml",
        "[run]\niterations = 0\n[retry]\nretires = 2\n"
        "[[models]]\nname = 'tiny-mlp'\nformats = ['onyx']\n[[targets]]\nname = 'local'\n",
    )
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    lines = problem_lines(str(info.value))
    assert [line.split(" must ")[0].split(" (")[0] for line in lines] == [
        "key 'run.iterations'",
        "unknown key 'retry.retires'",
        "key 'models[0].formats'",
    ]
    result = cli("farm", "show", str(path))
    needles = ["'run.iterations'", "'retry.retires'", "'models[0].formats'"]
    assert_all_listed(result, f"{path}: 3 problems:", needles)


def test_a_recipe_reports_every_mistake_of_the_file(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zoo = tmp_path / "zoo"
    path = write(
        zoo / "toy" / "recipe.toml",
        'family = "toy"\ndescriptoin = "typo"\n'
        'inputs = [{ name = "x", shape = [1, 4], dtyp = "float32" }]\n'
        '[export]\nformat = "onnx"\nquant = "int3"\n',
    )
    with pytest.raises(ConfigError) as info:
        parse_recipe(path)
    message = str(info.value)
    assert message.splitlines()[0] == f"{path}: 3 problems:"
    lines = problem_lines(message)
    assert lines[0].startswith("unknown key 'inputs[0].dtyp' (known keys: dtype, name, shape)")
    assert lines[1] == "export.quant must be one of fp32, fp16, int8, int4, w4a8"
    assert lines[2].startswith("unknown key 'descriptoin' (known keys: ")
    monkeypatch.setenv("EDGETOOL_MODELS", str(zoo))
    result = cli("models", "show", "toy")
    assert_all_listed(
        result, f"{path}: 3 problems:", ["'inputs[0].dtyp'", "export.quant", "'descriptoin'"]
    )


def test_shipped_recipes_have_no_unknown_keys() -> None:
    root = Path(__file__).resolve().parents[2] / "models"
    recipes = sorted(root.glob("*/recipe.toml"))
    assert recipes
    for path in recipes:
        parse_recipe(path)


def meter_target(tmp_path: Path, meter: str) -> Any:
    path = write(tmp_path / "metered.toml", f'[transport]\ntype = "local"\n[meter]\n{meter}')
    target = load_target_file(path)  # meter options are the driver's to judge
    assert target.meter is not None
    return path, target.meter


def test_an_unknown_meter_option_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    path, meter = meter_target(
        tmp_path, 'type = "estimate"\nidle_w = 1.0\nactive_w = 2.0\nidel_w = 1.0\n'
    )
    with pytest.raises(ConfigError) as info:
        open_meter(meter.type, meter.options)
    assert str(info.value) == (f"{path}: unknown key 'meter.idel_w' (known keys: active_w, idle_w)")


def test_meter_problems_are_reported_together(tmp_path: Path) -> None:
    path, meter = meter_target(
        tmp_path, 'type = "hwmon"\nchip = "ina260"\nrate_hz = 0\nchanel = 2\n'
    )
    with pytest.raises(ConfigError) as info:
        open_meter(meter.type, meter.options)
    message = str(info.value)
    assert message.splitlines()[0] == f"{path}: 2 problems:"
    lines = problem_lines(message)
    assert lines[0] == "key 'meter.rate_hz' must be within (0, 10000], got 0"
    assert lines[1].startswith("unknown key 'meter.chanel' (known keys: channel, chip, ")


def test_meter_options_given_in_code_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^unknown key 'meter\.extra'"):
        open_meter("rapl", {"root": str(tmp_path), "extra": 1})


def test_emulator_options_are_checked_by_their_emulator(home: Path, tmp_path: Path) -> None:
    from edgetool.emulate.qemu_a import QemuArm64
    from edgetool.emulate.sshd import LoopbackSshd

    path = write(
        tmp_path / "pi-qemu.toml",
        '[transport]\ntype = "ssh"\nhost = "127.0.0.1"\n'
        '[emulator]\ntype = "qemu-aarch64"\ncores = 0\nmemroy_mb = 1024\nfree_mb = 10\n',
    )
    target = load_target_file(path)
    with pytest.raises(ConfigError) as info:
        QemuArm64(target)
    assert problem_lines(str(info.value)) == [
        "key 'emulator.free_mb' must be an integer >= 256",
        "key 'emulator.cores' must be an integer from 1 to 64",
        "unknown key 'emulator.memroy_mb' (known keys: boot_timeout, cores, disk_of, free_mb, "
        "hostname, icount, memory_mb, mirror, packages, port, security_mirror, suite, user)",
    ]
    loopback = write(
        tmp_path / "lb.toml", '[transport]\ntype = "local"\n[emulator]\ntype = "sshd"\ncores = 2\n'
    )
    sshd = load_target_file(loopback).emulator
    assert sshd is not None
    with pytest.raises(ConfigError) as info:
        LoopbackSshd("lb", options=sshd.options)
    assert str(info.value) == f"{loopback}: unknown key 'emulator.cores' (known keys: none)"


def test_sub_tables_share_the_file_problems() -> None:
    source = Path("t.toml")
    top = TableReader(source, {"a": {"x": "1", "y": 2}, "b": 3, "c": "s"})
    sub = top.table("a")
    assert sub is not None
    assert sub.get("x", int, "an integer", 7) == 7  # the default stands in
    sub.finish()  # a sub-table only records
    assert top.problems == [
        "key 'a.x' must be an integer, got '1'",
        "unknown key 'a.y' (known keys: x)",
    ]
    assert top.table("b") is None  # not a table: recorded
    assert top.required_str("name") == ""
    assert top.choice("c", ("p", "q"), "p") == "p"
    with pytest.raises(ConfigError) as info:
        top.finish()
    assert str(info.value).splitlines() == [
        "t.toml: 5 problems:",
        "  key 'a.x' must be an integer, got '1'",
        "  unknown key 'a.y' (known keys: x)",
        "  key 'b' must be a table, got 3",
        "  missing required key 'name'",
        "  key 'c' must be one of 'p', 'q', got 's'",
    ]


def test_a_clean_table_raises_nothing() -> None:
    top = TableReader(Path("t.toml"), {"n": 3, "t": {"k": "v"}})
    assert top.get("n", int, "an integer", 0) == 3
    sub = top.table("t", {})
    assert sub.text("k") == "v"
    sub.finish()
    top.finish()
    assert top.problems == []


def test_a_hint_goes_on_its_own_line_after_several_problems() -> None:
    one = ConfigError("f.toml: key 'x' must be y", hint="See the README.")
    assert str(one) == "f.toml: key 'x' must be y See the README."
    several = ConfigError("f.toml: 2 problems:\n  a\n  b", hint="See the README.")
    assert str(several).splitlines() == ["f.toml: 2 problems:", "  a", "  b", "See the README."]
