"""The README's table of environment variables names every one edgetool reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NOT_OURS_TO_SET = {
    # Read on the watch (Espruino's process.env), never on this host.
    "EDGETOOL_SYNTHETIC",
    # A flag file name inside the ADB test double, not a variable a user sets.
    "EDGETOOL_PEER_LOAD_FLAG",
    # The fake Android benchmark_model's per-run time, set by its own test.
    "EDGETOOL_FAKE_AVG_US",
}
PER_TARGET_KEYS = "HOST|PORT|USER|IDENTITY_FILE|KNOWN_HOSTS|URL|ADDRESS"
PER_TARGET = re.compile(rf"EDGETOOL_[A-Z0-9_]+_({PER_TARGET_KEYS})")


def _variables_in(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        found |= set(re.findall(r"EDGETOOL_[A-Z][A-Z0-9_]*[A-Z0-9]", path.read_text()))
    return found


def test_every_variable_edgetool_reads_is_in_the_readme() -> None:
    code = sorted((ROOT / "edgetool").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    used = _variables_in(code) - NOT_OURS_TO_SET
    used = {name for name in used if not PER_TARGET.fullmatch(name)}
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    missing = sorted(name for name in used if f"`{name}`" not in table)
    assert not missing, f"README's environment table lacks {missing}"
