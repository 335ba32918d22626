"""Plans: strict validation, matrix expansion, `farm show`, and the JUnit XML of a night."""

from __future__ import annotations

import contextlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgetool.errors import ConfigError
from edgetool.farm.execute import Attempt, JobResult
from edgetool.farm.outputs import counts, junit_xml, write_junit
from edgetool.farm.plan import Job, check_targets, expand, load_plan, slots
from tests.conftest import REPO, assert_one_line_error

MINIMAL = """
[[models]]
name = "tiny-mlp"
[[targets]]
name = "local"
"""


@dataclass
class FakePlace:
    target: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    def power_cycle(self) -> bool:
        return False


class FakeProvider:
    """Answers tag queries from a fixed table (stands in for labgrid)."""

    description = "fake places"

    def __init__(self, places: dict[str, dict[str, str]]) -> None:
        self.places = places

    @contextlib.contextmanager
    def hold(
        self, target: str, *, timeout: float, priority: int = 0, place: str | None = None
    ) -> Iterator[FakePlace]:
        yield FakePlace(target, place or target)

    def places_with_tags(self, tags: dict[str, str]) -> list[str]:
        return [
            name
            for name, have in self.places.items()
            if all(have.get(k) == v for k, v in tags.items())
        ]


def write(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_plan_defaults(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, MINIMAL))
    assert plan.name == "plan"  # the file stem
    assert plan.run.iterations is None and plan.run.duration is None
    assert plan.retry.retries == 1 and "timeout" in plan.retry.on
    assert plan.regression.threshold == 0.05
    jobs = expand(plan)
    assert [(j.target, j.model) for j in jobs] == [("local", "tiny-mlp")]
    assert jobs[0].argv() == [
        "deploy", "--target", "local", "--model", "tiny-mlp", "-n", "100", "--json",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus = 1\n" + MINIMAL, "unknown key 'bogus'"),
        ("[run]\niterations = 'ten'\n" + MINIMAL, "key 'run.iterations' must be a positive"),
        ("[run]\niterations = 0\n" + MINIMAL, "key 'run.iterations' must be a positive"),
        ("[run]\niterations = 5\nduration = 1.0\n" + MINIMAL, "exclude each other"),
        ("[run]\nenergy = 'yes'\n" + MINIMAL, "key 'run.energy' must be true or false"),
        ("[run]\ntimeout = -1\n" + MINIMAL, "key 'run.timeout' must be a positive number"),
        ("[run]\ntimeuot = 5\n" + MINIMAL, "unknown key 'run.timeuot'"),
        ("[retry]\nretries = -1\n" + MINIMAL, "key 'retry.retries'"),
        ("[retry]\non = ['sometimes']\n" + MINIMAL, "key 'retry.on' must be a list of"),
        ("[regression]\nthreshold = 5\n" + MINIMAL, "key 'regression.threshold'"),
        ("[regression]\nmetric = 'p42'\n" + MINIMAL, "key 'regression.metric'"),
        ("[[targets]]\nname = 'local'\n", "key 'models' must list at least one model"),
        ("[[models]]\nname = 'tiny-mlp'\n", "key 'targets' must list at least one target"),
        (
            "[[models]]\nname = 'm'\nformat = 'onnx'\n[[targets]]\nname = 'local'\n",
            "unknown key 'models[0].format'",
        ),
        (
            "[[models]]\nname = 'm'\nformats = ['onyx']\n[[targets]]\nname = 'local'\n",
            "key 'models[0].formats' must be a list of 'onnx'",
        ),
        (
            "[[models]]\nname = 'm'\nquants = ['int8']\n[[targets]]\nname = 'local'\n",
            "key 'models[0].quants' needs 'formats'",
        ),
        (
            "[[models]]\nname = 'm:onnx'\n[[targets]]\nname = 'local'\n",
            "key 'models[0].name'",
        ),
        (
            "[[models]]\nname = 'm'\n[[targets]]\ntags = {board = 3}\n",
            "key 'targets[0].tags' must be a non-empty table",
        ),
        (
            "[[models]]\nname = 'm'\n[[targets]]\nname = 'a'\ntags = {board = 'x'}\ntarget = 'a'\n",
            "key 'targets[0]' needs exactly one of 'name' or 'tags'",
        ),
        (
            "[[models]]\nname = 'm'\n[[targets]]\nname = 'local'\nmodels = ['n']\n",
            "key 'targets[0].models' names 'n'",
        ),
        ("models = 3\n[[targets]]\nname = 'local'\n", "key 'models' must be a list"),
        ("name = 'has space'\n" + MINIMAL, "key 'name'"),
        ("[[models]\n", "malformed TOML"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    message = str(info.value)
    assert str(path) in message, message
    assert needle in message, message
    assert "\n" not in message


def test_unknown_target_is_refused_before_the_night(tmp_path: Path) -> None:
    path = write(tmp_path, "[[models]]\nname = 'm'\n[[targets]]\nname = 'rpi5'\n")
    with pytest.raises(ConfigError, match=r"key 'targets\[0\].name' names unknown target 'rpi5'"):
        check_targets(load_plan(path))


MATRIX = """
name = "matrix"
targets = [
  "local",
  { name = "loopback", models = ["tiny-mlp"] },
  { tags = { board = "rpi4" }, target = "rpi4" },
]
[run]
duration = 2.5
energy = true
[[models]]
name = "cbnet"
formats = ["onnx", "tflite"]
quants = ["fp32", "fp16", "int8"]
exclude = ["tflite:fp16"]
[[models]]
name = "tiny-mlp"
formats = ["onnx"]
iterations = 50
[[models]]
name = "solo"
"""


def test_matrix_expansion_with_tags(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, MATRIX))
    provider = FakeProvider(
        {
            "pi-01": {"board": "rpi4"},
            "pi-02": {"board": "rpi4", "rack": "b"},
            "nano": {"board": "jetson"},
        }
    )
    jobs = expand(plan, provider)
    cbnet = [
        "cbnet:onnx:fp32", "cbnet:onnx:fp16", "cbnet:onnx:int8",
        "cbnet:tflite:fp32", "cbnet:tflite:int8",
    ]  # fmt: skip
    per_target = [*cbnet, "tiny-mlp:onnx", "solo"]
    grouped = slots(jobs)
    assert list(grouped) == ["local", "loopback", "pi-01", "pi-02"]
    assert [j.model for j in grouped["local"]] == per_target
    assert [j.model for j in grouped["loopback"]] == ["tiny-mlp:onnx"]
    for place in ("pi-01", "pi-02"):
        assert [j.model for j in grouped[place]] == per_target
        assert {j.target for j in grouped[place]} == {"rpi4"}
    assert len(jobs) == 3 * 7 + 1
    assert [j.index for j in jobs] == list(range(len(jobs)))
    by_id = {j.id: j for j in jobs}
    assert by_id["pi-02/cbnet:tflite:int8"].argv()[-4:] == ["-d", "2.5", "--energy", "--json"]
    assert by_id["local/tiny-mlp:onnx"].argv()[-4:] == ["-n", "50", "--energy", "--json"]


def test_tag_entry_without_target_uses_the_providers_names(tmp_path: Path) -> None:
    text = "[[models]]\nname = 'm'\n[[targets]]\ntags = {board = 'rpi4'}\n"
    plan = load_plan(write(tmp_path, text))
    jobs = expand(plan, FakeProvider({"rpi4-a": {"board": "rpi4"}, "rpi4-b": {"board": "rpi4"}}))
    assert [(j.target, j.place, j.slot) for j in jobs] == [
        ("rpi4-a", None, "rpi4-a"),
        ("rpi4-b", None, "rpi4-b"),
    ]


def test_tags_without_provider_fail(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, MATRIX))
    with pytest.raises(ConfigError, match="needs a place provider"):
        expand(plan, None)


def test_farm_show_text_and_json(cli: Any) -> None:
    plan = str(REPO / "examples" / "nightly-local.toml")
    text = cli("farm", "show", plan)
    assert text.code == 0, text.stderr
    assert "6 jobs on 3 workers" in text.stdout
    assert "loopback  (emulated)" in text.stdout and "rpi4-qemu  (emulated)" in text.stdout
    assert "tiny-mlp:tflite" in text.stdout
    data = cli("farm", "show", plan, "--json").json()
    assert data["jobs"] == 6
    assert [w["slot"] for w in data["workers"]] == ["local", "loopback", "rpi4-qemu"]
    assert [w["emulated"] for w in data["workers"]] == [False, True, True]
    assert [j["model"] for j in data["workers"][0]["jobs"]] == ["tiny-mlp:onnx", "tiny-mlp:tflite"]
    assert data["workers"][1]["jobs"][0]["argv"][:5] == [
        "edgetool", "deploy", "--target", "loopback", "--model",
    ]  # fmt: skip


def test_farm_show_bad_plan_is_one_line_exit_5(cli: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "[run]\niteration = 3\n" + MINIMAL)
    assert_one_line_error(cli("farm", "show", str(path)), 5, str(path), "run.iteration")


JUNIT_XSD = REPO / "tests" / "fixtures" / "junit-10.xsd"


def validate_junit(tree: ET.ElementTree[ET.Element]) -> None:
    """Validate against the junit-10 schema Jenkins and GitLab read (raises when invalid)."""
    import xmlschema

    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(ET.tostring(tree.getroot(), encoding="unicode"))


def _result(job: Job, status: str, **kw: Any) -> JobResult:
    result = JobResult(job, status=status, started=100.0, finished=101.5, **kw)
    return result


def test_junit_counts_and_structure(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, MATRIX))
    jobs = expand(plan, FakeProvider({}))[:5]
    results = [
        _result(jobs[0], "passed", run_dir="/r/a", run_id="a", p50_ms=0.5),
        _result(
            jobs[1],
            "failed",
            failure="timeout",
            error="timed out after 60 s",
            attempts=[
                Attempt(1, "timeout", 60.0, failure="timeout", recovery="power-cycled"),
                Attempt(2, "timeout", 60.0, failure="timeout"),
            ],
        ),
        _result(jobs[2], "skipped", reason="health check failed: unreachable"),
        _result(jobs[3], "regressed", run_dir="/r/d", regressions=["latency_p50"]),
        _result(jobs[4], "passed"),
    ]
    assert counts(results) == {
        "passed": 2, "failed": 1, "skipped": 1, "regressed": 1, "total": 5,
    }  # fmt: skip
    path = tmp_path / "out" / "junit.xml"
    write_junit(plan, results, path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    for element in (root, suite):
        assert element.get("tests") == "5"
        assert element.get("failures") == "1"
        assert element.get("errors") == "1"
    assert suite.get("skipped") == "1" and root.get("skipped") is None  # junit-10
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["local"] * 5
    assert [c.get("name") for c in cases] == [j.model for j in jobs]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    assert not any(c.find("properties") is not None for c in cases)
    out = cases[0].findtext("system-out") or ""
    assert "run: /r/a" in out and "p50: 0.5 ms" in out
    error = cases[1].find("error")
    assert error is not None and error.get("type") == "timeout"
    assert "power-cycled" in (error.text or "")
    skipped = cases[2].find("skipped")
    assert skipped is not None and "unreachable" in (skipped.get("message") or "")
    failure = cases[3].find("failure")
    assert failure is not None and failure.get("type") == "regression"
    assert "latency_p50" in (failure.get("message") or "")
    assert float(cases[0].get("time") or 0) == pytest.approx(1.5)
    # the same tree in memory
    assert junit_xml(plan, results).getroot().get("tests") == "5"


def _fake_run(runs: Path, name: str, target: str, ms: float) -> Path:
    """A complete run directory: 5 repetitions of 40 samples around `ms` milliseconds,
    the repetitions' levels 1 % apart."""
    import json

    run = runs / name
    run.mkdir(parents=True)
    manifest = {
        "run_id": name,
        "status": "complete",
        "artifact": {"name": "tiny-mlp.onnx", "format": "onnx"},
        "target": {"name": target},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines = []
    for r in range(5):
        level = ms * 1e6 * (1 + 0.01 * ((r * 3) % 5 - 2) / 2)
        ns = [int(level * (1 + 0.01 * ((i * 7) % 10) / 10)) for i in range(40)]
        lines.append(json.dumps({"i": 40 * r, "ns": ns, "r": r}))
    (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_baseline_marks_regressions(tmp_path: Path) -> None:
    from edgetool.farm.outputs import apply_baseline, latest_night

    plan = load_plan(write(tmp_path, MINIMAL + "[[targets]]\nname = 'loopback'\n"))
    jobs = expand(plan)
    base = tmp_path / "nights" / "plan-2026-11-20T01-00-00Z"
    (base / "summary.json").parent.mkdir(parents=True)
    (base / "summary.json").write_text("{}")
    _fake_run(base / "runs", "b-local", "local", 1.0)
    _fake_run(base / "runs", "b-loop", "loopback", 1.0)
    new = tmp_path / "nights" / "plan-2026-11-21T01-00-00Z"
    results = [
        _result(jobs[0], "passed", run_dir=str(_fake_run(new / "runs", "n-local", "local", 1.3))),
        _result(jobs[1], "passed", run_dir=str(_fake_run(new / "runs", "n-lo", "loopback", 1.0))),
    ]
    assert latest_night(tmp_path / "nights", plan, exclude=new) == base
    comparison = apply_baseline(results, base, plan)
    assert comparison["regressions"] == 1
    assert results[0].status == "regressed" and results[0].regressions == ["latency_p50"]
    assert results[0].comparison is not None and results[0].comparison["verdict"] == "regression"
    assert results[1].status == "passed" and results[1].regressions == []
    assert (results[0].verdict, results[1].verdict) == ("regression", "no change")
    assert comparison["settings"]["correction"] == "holm"
    assert all(p["effect"]["p_adjusted"] is not None for p in comparison["pairs"])
    failure = junit_xml(plan, results).getroot().find("testsuite/testcase/failure")
    assert failure is not None and "latency_p50" in (failure.get("message") or "")
    outs = [
        c.findtext("system-out") or "" for c in junit_xml(plan, results).getroot().iter("testcase")
    ]
    assert "comparison: regression" in outs[0] and "comparison: no change" in outs[1]
    assert re.search(r"latency change: \+\d+\.\d % \[\+\d+\.\d, \+\d+\.\d\] 95% CI", outs[0])
    assert re.search(r"\(latency \+\d+\.\d % \[", failure.get("message") or "")
    assert "change 0." not in (failure.text or "")  # a percentage, not a raw ratio
    validate_junit(junit_xml(plan, results))


def test_baseline_of_several_nights_pools_them(tmp_path: Path) -> None:
    from edgetool.farm.outputs import apply_baseline, latest_nights

    plan = load_plan(write(tmp_path, MINIMAL))
    jobs = expand(plan)
    nights = []
    for day in (18, 19, 20):
        night = tmp_path / "nights" / f"plan-2026-11-{day}T01-00-00Z"
        (night / "summary.json").parent.mkdir(parents=True)
        (night / "summary.json").write_text("{}")
        _fake_run(night / "runs", f"b-{day}", "local", 1.0)
        nights.append(night)
    new = tmp_path / "nights" / "plan-2026-11-21T01-00-00Z"
    assert latest_nights(tmp_path / "nights", plan, exclude=new, count=2) == nights[1:]
    results = [_result(jobs[0], "passed", run_dir=str(_fake_run(new / "runs", "n", "local", 1.0)))]
    comparison = apply_baseline(results, nights[-1], plan, nights[:-1])
    pair = comparison["pairs"][0]
    assert pair["effect"]["repetitions"] == {"base": 15, "new": 5}
    assert pair["base"]["pooled_runs"] == ["b-18", "b-19", "b-20"]
    assert comparison["baseline_nights"] == [str(n) for n in nights]
    assert results[0].verdict == "no change" and results[0].status == "passed"


def test_repetitions_and_gate_settings_in_a_plan(tmp_path: Path) -> None:
    text = (
        "[run]\nrepeat = 7\n[regression]\nbaseline = 'latest'\nbaseline_nights = 3\n"
        "correction = 'none'\n" + MINIMAL
    )
    plan = load_plan(write(tmp_path, text))
    assert plan.run.repeat == 7 and "--repeat" in plan.run.deploy_args()
    assert plan.run.deploy_args()[plan.run.deploy_args().index("--repeat") + 1] == "7"
    assert (plan.regression.baseline_nights, plan.regression.correction) == (3, "none")
    assert plan.regression.alpha == 0.05
    default = load_plan(write(tmp_path, MINIMAL))
    assert "--repeat" not in default.run.deploy_args()  # deploy's own default
    for bad, needle in (
        ("[regression]\nmetric = 'p90'\n", "regression.metric"),
        ("[regression]\nbaseline_nights = 0\n", "regression.baseline_nights"),
        ("[run]\nrepeat = 0\n", "run.repeat"),
    ):
        with pytest.raises(ConfigError, match=needle):
            load_plan(write(tmp_path, bad + MINIMAL))


def _night(tmp_path: Path) -> tuple[Any, list[JobResult]]:
    """A night of every kind of job, in plan order: passed, regressed, failed, skipped,
    inconclusive; the failed and regressed ones with captured logs."""
    plan = load_plan(write(tmp_path, MATRIX))
    jobs = expand(plan, FakeProvider({}))[:5]
    logs = tmp_path / "night" / "logs"
    logs.mkdir(parents=True)
    for name in ("001-a-1", "003-c-1"):
        (logs / f"{name}.err").write_text("error: it broke\n")
        (logs / f"{name}.out").write_text("")
    effect = {"change": 0.021954596622889304, "ci": [1.008, 1.036], "confidence": 0.95, "p": 0.001}
    regression = {"effect": effect, "latency": {"name": "latency_p50", "change": 0.0219,
                  "before": 1.0, "after": 1.022, "unit": "ms"}}  # fmt: skip
    results = [
        _result(jobs[0], "passed", verdict="no change", comparison={"effect": {"change": 0.001}}),
        _result(
            jobs[1],
            "regressed",
            verdict="regression",
            regressions=["latency_p50"],
            comparison=regression,
            attempts=[Attempt(1, "passed", 1.0, log=str(logs / "001-a-1.log"))],
        ),
        _result(
            jobs[2],
            "failed",
            failure="timeout",
            error="timed out after 60 s",
            attempts=[Attempt(1, "timeout", 60.0, log=str(logs / "003-c-1.log"))],
        ),
        _result(jobs[3], "skipped", reason="health check failed: unreachable"),
        _result(jobs[4], "passed", verdict="inconclusive", comparison={"reason": "too few"}),
    ]
    return plan, results


def test_junit_validates_against_junit_10_with_percentages_and_logs(tmp_path: Path) -> None:
    import xmlschema

    plan, results = _night(tmp_path)
    tree = junit_xml(plan, results)
    validate_junit(tree)
    cases = list(tree.getroot().iter("testcase"))
    regressed = cases[1]
    failure = regressed.find("failure")
    assert failure is not None
    assert "+2.2 % [+0.8, +3.6] 95% CI" in (failure.get("message") or "")
    assert "2.1954596622889304" not in ET.tostring(tree.getroot(), encoding="unicode")
    assert f"log: {tmp_path / 'night' / 'logs' / '001-a-1.err'}" in (
        regressed.findtext("system-out") or ""
    )
    assert "log: " in (cases[2].findtext("system-out") or "")
    # the schema is strict where the old output was wrong
    schema = xmlschema.XMLSchema(str(JUNIT_XSD))
    bad = ET.fromstring(ET.tostring(tree.getroot()))
    bad.set("skipped", "1")
    assert not schema.is_valid(ET.tostring(bad, encoding="unicode"))
    bad = ET.fromstring(ET.tostring(tree.getroot()))
    case = bad.find("testsuite/testcase")
    assert case is not None
    case.insert(0, ET.Element("properties"))
    assert not schema.is_valid(ET.tostring(bad, encoding="unicode"))


def test_night_report_leads_with_regressions_failures_and_skips(tmp_path: Path) -> None:
    from edgetool.farm.outputs import write_night_report

    plan, results = _night(tmp_path)
    path = tmp_path / "night" / "report.html"
    assert write_night_report(plan, results, path) == path  # no runs: still written
    html = path.read_text()
    statuses = re.findall(r'<tr data-status="([^"]+)">', html)
    assert statuses == ["regressed", "failed", "skipped", "passed", "passed"]
    rows = re.findall(r'<tr data-status="[^"]+">(.*?)</tr>', html, re.S)
    assert "regression +2.2 % [+0.8, +3.6] 95% CI" in rows[0]
    assert 'href="logs/001-a-1.err"' in rows[0] and 'href="logs/003-c-1.err"' in rows[1]
    assert "timeout: timed out after 60 s" in rows[1] and "unreachable" in rows[2]
    assert "inconclusive (too few)" in rows[3] and "no change" in rows[4]
    assert "1 regressed, 1 failed, 1 skipped, 2 passed" in html
