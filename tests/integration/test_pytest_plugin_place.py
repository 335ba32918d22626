"""`--edge-place` through a real labgrid coordinator: a user suite holds a place for its
session, deploys to the loopback sshd the place's NetworkService names (the target's TOML
points nowhere), and the place is given back however the session ends: all passed, a
test failed, a fixture stopped the session, or SIGTERM arrived mid-test. The
coordinator's own view (`labgrid-client places` / `reservations`) is the judge."""

from __future__ import annotations

import getpass
import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetool.emulate.sshd import LoopbackSshd
from tests.integration.test_farm_labgrid import TARGET
from tests.unit.test_pytest_plugin import _plugin_args

pytest_plugins = ["pytester"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("labgrid") is None,
        reason="labgrid not installed (pip install -e '.[farm]')",
    ),
    pytest.mark.skipif(
        not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()),
        reason="OpenSSH server not installed (apt-get install openssh-server)",
    ),
]

NAME = "lgp"

# The user's suite: it checks from inside the session that the place is held (asking the
# coordinator with the client edgetool uses), and notes what it saw for the outer test.
SUITE = """
import json, os, signal
from pathlib import Path

import pytest

from edgetool.farm.places import LabgridPlaces

def holder():
    places = LabgridPlaces(os.environ["EDGETOOL_COORDINATOR"]).places()
    return places["lgp"].acquired

def note(**seen):
    with Path(os.environ["SEEN"]).open("a") as out:
        out.write(json.dumps(seen) + "\\n")

def test_deploys_through_the_place(edge_deploy):
    run = edge_deploy("tiny-mlp", iterations=5, repeat=2, warmup=1, warmup_seconds=0.0)
    note(test="deploy", holder=holder(), run=run.run_id, target=run.target)
    assert run.latency_p50 > 0

def test_fails(edge_target):
    note(test="fails", holder=holder())
    assert False, "a latency budget not met"

@pytest.fixture(scope="session")
def board_flashed(edge_target):
    how = os.environ.get("BREAK", "")
    note(test="fixture", holder=holder())
    if how == "exit":
        pytest.exit("the board did not flash", returncode=3)
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    return True

def test_after_flashing(board_flashed):
    note(test="after", holder=holder())
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One loopback sshd exported as the NetworkService of place `lgp` (tagged board=pi)."""
    from tests.labgrid_env import labgrid_env

    root = tmp_path_factory.mktemp("edge-place")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGETOOL_STATE_DIR", str(root / "state"))
        sshd = LoopbackSshd(NAME, root / "sshd")
        try:
            transport = sshd.start()["transport"]
            targets = root / "targets"
            targets.mkdir()
            (targets / f"{NAME}.toml").write_text(
                TARGET.format(
                    name=NAME,
                    python=sys.executable,
                    identity=transport["identity_file"],
                    known_hosts=transport["known_hosts"],
                )
            )
            port = int(transport["port"])
            services = {NAME: ("127.0.0.1", port, getpass.getuser())}
            with labgrid_env(root / "lab", services, tags={NAME: {"board": "pi"}}) as env:
                yield {"env": env, "targets": targets, "port": port}
        finally:
            sshd.stop()


def _session(
    pytester: pytest.Pytester,
    lab: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    *args: str,
    brk: str = "",
) -> tuple[Any, list[dict[str, Any]]]:
    """Run SUITE holding the place; its outcome and what its tests saw, in order."""
    env = lab["env"]
    assert env.acquired() == set() and env.reservations() == []  # nothing before
    seen = home / f"seen-{len(list(home.glob('seen-*')))}.jsonl"
    monkeypatch.setenv("EDGETOOL_COORDINATOR", env.url)
    monkeypatch.setenv("SEEN", str(seen))
    monkeypatch.setenv("BREAK", brk)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makepyfile(test_user=SUITE)
    result = pytester.runpytest_subprocess(
        *_plugin_args(),
        "-p",
        "no:cacheprovider",
        f"--edge-target={NAME}",
        f"--edge-targets-dir={lab['targets']}",
        f"--edge-results={home / 'results'}",
        *args,
        timeout=240,
    )
    lines = seen.read_text().splitlines() if seen.exists() else []
    return result, [json.loads(line) for line in lines]


def _given_back(lab: dict[str, Any]) -> None:
    env = lab["env"]
    assert env.acquired() == set(), env.client("-v", "places").stdout
    assert env.reservations() == [], env.client("reservations").stdout


def test_place_held_for_the_session_and_deployed_through(
    pytester: pytest.Pytester, lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    # A second target in the session: the place is held once (a second reservation of
    # it would wait for ourselves), and tests on both targets run while it is held.
    result, seen = _session(
        pytester, lab, monkeypatch, home, "--edge-place=board=pi", "--edge-target=local"
    )
    # the failing test fails; the session goes on and the place is still given back
    result.assert_outcomes(passed=4, failed=2)
    assert "Traceback" not in result.stderr.str()
    assert sorted(entry["test"] for entry in seen) == sorted(
        ["deploy", "fails", "fixture", "after"] * 2
    )
    assert all(entry["holder"] for entry in seen), seen  # acquired during every test
    # the run went where the place said: the sshd's real port, not the TOML's 127.0.0.2
    run_id = next(e["run"] for e in seen if e["test"] == "deploy" and e["target"] == NAME)
    manifest = (home / "results" / run_id / "manifest.json").read_text()
    assert f"127.0.0.1:{lab['port']}" in manifest
    _given_back(lab)


@pytest.mark.parametrize(
    ("brk", "code", "says"),
    [
        ("exit", 3, "the board did not flash"),
        ("interrupt", pytest.ExitCode.INTERRUPTED, "KeyboardInterrupt"),
        ("sigterm", pytest.ExitCode.INTERRUPTED, "terminated by signal"),
    ],
)
def test_place_given_back_when_a_fixture_stops_the_session(
    pytester: pytest.Pytester,
    lab: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    brk: str,
    code: int,
    says: str,
) -> None:
    result, seen = _session(
        pytester, lab, monkeypatch, home, f"--edge-place={NAME}", "-k", "after", brk=brk
    )
    assert result.ret == code, result.stdout.str()
    assert says in result.stdout.str() + result.stderr.str()
    assert [entry["test"] for entry in seen] == ["fixture"]  # stopped there
    assert seen[0]["holder"], seen  # held when it stopped
    _given_back(lab)


@pytest.mark.parametrize(
    ("place", "says"),
    [
        ("board=nano", "edgetool: no labgrid place carries board=nano"),
        ("nosuch", "edgetool: no labgrid place 'nosuch' on coordinator 127.0.0.1:"),
    ],
)
def test_unknown_place_fails_every_test_in_one_line(
    pytester: pytest.Pytester,
    lab: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    place: str,
    says: str,
) -> None:
    result, seen = _session(pytester, lab, monkeypatch, home, f"--edge-place={place}")
    # no test runs anywhere but on the place: each one errors, the same way (none goes on
    # to the TOML's own host once the first hold failed)
    result.assert_outcomes(errors=3)
    assert seen == []
    out = result.stdout.str()
    assert "Traceback" not in out and "def edge_target" not in out
    assert "During handling" not in out
    # one line per test (the short summary repeats it after "ERROR …", in full under CI=true)
    assert sum(line.startswith(says) for line in out.splitlines()) == 3, out
    _given_back(lab)
