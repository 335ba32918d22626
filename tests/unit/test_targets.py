from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetool.errors import ConfigError
from edgetool.flows import model_spec
from edgetool.targets import (
    emulator_state_file,
    load_all,
    load_target,
    load_target_file,
)
from edgetool.transport.local import LocalSettings
from edgetool.transport.ssh import SshSettings
from tests.conftest import assert_one_line_error, run_cli


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def test_shipped_targets_all_validate(home: Path) -> None:
    loaded = load_all()
    errors = [t for t in loaded if isinstance(t, ConfigError)]
    assert errors == []
    names = {t.name for t in loaded if not isinstance(t, ConfigError)}
    assert {"local", "rpi4", "loopback"} <= names


def test_ssh_target_parses_into_typed_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pi",
        """
kind = "linux"
python = "/opt/venv/bin/python"
workdir = "bench dir"
[transport]
type = "ssh"
host = "lab-pi"
port = 2222
user = "pi"
identity_file = "~/.ssh/id_lab"
known_hosts = ["~/.ssh/known_hosts", "/etc/lab/known_hosts"]
[meter]
type = "hwmon"
channel = "ina260"
""",
    )
    target = load_target_file(path)
    assert target.name == "pi"
    assert target.python == "/opt/venv/bin/python"
    assert target.workdir == "bench dir"
    assert isinstance(target.transport, SshSettings)
    assert target.transport.port == 2222
    assert target.transport.identity_file == Path("~/.ssh/id_lab").expanduser()
    assert target.transport.known_hosts[1] == Path("/etc/lab/known_hosts")
    assert target.meter is not None and target.meter.type == "hwmon"
    assert target.meter.options == {"channel": "ina260"}


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (
            'kind = "linux"\n[transport]\ntype = "ssh"\nhots = "x"\nhost = "y"\n',
            ["unknown key 'transport.hots'"],
        ),
        ('kind = "toaster"\n', ["key 'kind'", "'linux'"]),
        ('[transport]\ntype = "ssh"\nhost = "x"\nport = "22"\n', ["transport.port", "integer"]),
        ('[transport]\ntype = "ssh"\nhost = "x"\nport = 70000\n', ["transport.port", "65535"]),
        ('[transport]\ntype = "ssh"\n', ["missing required key 'transport.host'"]),
        ('[transport]\ntype = "carrier-pigeon"\n', ["transport.type", "'ssh'"]),
        ('runtimes = ["tensorrt"]\n', ["unknown runtime 'tensorrt'"]),
        ('[transport]\ntype = "local"\nidle_timeout = -1\n', ["idle_timeout", "positive"]),
        ("[meter]\nrate = 1\n", ["missing required key 'meter.type'"]),
        ('name = "bad name!"\n', ["key 'name'"]),
        ("[models]\nl2mu = 3\n", ["models.l2mu", "model spec string"]),
        ('models = "l2mu"\n', ["key 'models'", "table"]),
        (
            '[transport]\ntype = "ssh"\nhost = "x"\nuse_ssh_config = "yes"\n',
            ["use_ssh_config", "true or false"],
        ),
    ],
)
def test_invalid_files_name_file_key_and_expectation(
    tmp_path: Path, body: str, needles: list[str]
) -> None:
    path = write(tmp_path, "broken", body)
    with pytest.raises(ConfigError) as info:
        load_target_file(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_malformed_toml_names_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, "bad", 'kind = "linux\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: malformed TOML.*line 1"):
        load_target_file(path)


def test_unknown_target_lists_known_ones(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown target 'nope' \(known: .*local.*rpi4"):
        load_target("nope")


def test_targets_dir_and_env_dirs_override_builtins(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir, cli_dir = tmp_path / "env", tmp_path / "cli"
    write(env_dir, "local", 'description = "from env"\n[transport]\ntype = "local"\n')
    monkeypatch.setenv("EDGETOOL_TARGETS", str(env_dir))
    assert load_target("local").description == "from env"
    write(cli_dir, "local", 'description = "from cli"\n[transport]\ntype = "local"\n')
    assert load_target("local", [cli_dir]).description == "from cli"


def test_env_overrides_point_a_shipped_target_at_a_board(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETOOL_RPI4_HOST", "lab-pi4-03")
    monkeypatch.setenv("EDGETOOL_RPI4_PORT", "2200")
    monkeypatch.setenv("EDGETOOL_RPI4_USER", "pi")
    target = load_target("rpi4")
    assert isinstance(target.transport, SshSettings)
    assert (target.transport.host, target.transport.port, target.transport.user) == (
        "lab-pi4-03",
        2200,
        "pi",
    )


def test_running_emulator_state_overlays_transport(home: Path) -> None:
    stopped = load_target("loopback")
    assert stopped.emulator is not None and stopped.emulator_state is None
    state_file = emulator_state_file("loopback")
    state_file.parent.mkdir(parents=True)
    state_file.write_text(
        json.dumps(
            {
                "pid": 1,
                "python": "/x/python",
                "workdir": "/x/dev",
                "transport": {"host": "127.0.0.1", "port": 2022, "user": "me"},
            }
        )
    )
    running = load_target("loopback")
    assert isinstance(running.transport, SshSettings)
    assert running.transport.port == 2022
    assert running.python == "/x/python"
    assert running.workdir == "/x/dev"


def test_local_default(home: Path) -> None:
    target = load_target("local")
    assert isinstance(target.transport, LocalSettings)
    assert target.kind == "linux"


@pytest.mark.parametrize("text", ["", 'kind = "linux"\nruntimes = ["onnxruntime"]\n'])
def test_a_file_without_transport_is_refused_not_run_on_this_host(
    tmp_path: Path, text: str
) -> None:
    path = write(tmp_path / "targets", "lab-pi", text)
    result = run_cli("targets", "check", str(path))
    assert_one_line_error(result, 5, str(path), "no [transport] table", 'type = "local"')
    assert "reachable" not in result.stdout  # nothing ran here instead


def test_this_host_said_explicitly_still_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "here", '[transport]\ntype = "local"\n')
    assert isinstance(load_target_file(path).transport, LocalSettings)


def test_models_table_says_what_a_bare_model_name_means(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "watch",
        'kind = "linux"\n[transport]\ntype = "local"\n[models]\nl2mu = "l2mu-watch:tflite:fp32"\n',
    )
    target = load_target_file(path)
    assert model_spec(target, "l2mu") == "l2mu-watch:tflite:fp32"
    assert model_spec(target, "cbnet") == "cbnet"  # linux: the zoo's default format
    shipped = load_target("bangle2")
    assert model_spec(shipped, "l2mu") == "l2mu-watch:tflite:fp32"
    assert model_spec(shipped, "cbnet-classifier") == "cbnet-classifier:tflite:int8"


@pytest.mark.parametrize(
    ("workdir", "needle"),
    [
        ("", "directory of its own"),
        ("/", "directory of its own"),
        ("~/", "directory of its own"),
        ("~", "directory of its own"),
        ("//", "directory of its own"),
        ("-cimport os;os.system('touch x')#", "begin with '-'"),
        ("~/-x", "begin with '-'"),
        ("lab/../../etc", "'..'"),
        ("a\nb", "control characters"),
    ],
)
def test_a_workdir_that_would_escape_or_be_read_as_an_option_is_refused(
    tmp_path: Path, workdir: str, needle: str
) -> None:
    """`~/` or "" used to become `/` (runner and artifacts at the device's root), and a
    workdir beginning with `-` became an option of the device's python (code ran)."""
    path = write(tmp_path, "lab", f'workdir = {json.dumps(workdir)}\n[transport]\ntype = "local"\n')
    with pytest.raises(ConfigError) as info:
        load_target_file(path)
    assert "key 'workdir'" in str(info.value) and needle in str(info.value)
    venv = write(
        tmp_path,
        "prov",
        f'[transport]\ntype = "local"\n[provision]\nvenv = {json.dumps(workdir)}\n',
    )
    with pytest.raises(ConfigError, match=r"provision\.venv"):
        load_target_file(venv)


@pytest.mark.parametrize("workdir", ["edgetool", "~/edgetool", "/tmp/edgetool-lab", "lab/run"])
def test_ordinary_workdirs_load(tmp_path: Path, workdir: str) -> None:
    path = write(tmp_path, "lab", f'workdir = "{workdir}"\n[transport]\ntype = "local"\n')
    assert load_target_file(path).workdir == workdir
