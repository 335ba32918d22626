"""The remote command string must split back into exactly the argv we meant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetool.transport.base import quote_argv

ECHO = "import json, sys; sys.stdout.write(json.dumps(sys.argv[1:]))"
arg_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
)


def _through_shell(argv: list[str], cwd: Path | None = None) -> list[str]:
    command = quote_argv([sys.executable, "-c", ECHO, *argv])
    out = subprocess.run(["/bin/sh", "-c", command], capture_output=True, check=True, cwd=cwd)
    result: list[str] = json.loads(out.stdout.decode("utf-8"))
    return result


@given(st.lists(arg_text, max_size=6))
@settings(max_examples=60, deadline=None)
def test_any_argv_survives_a_posix_shell(argv: list[str]) -> None:
    assert _through_shell(argv) == argv


@pytest.mark.parametrize(
    "nasty",
    [
        "a b",
        "it's",
        '"dq"',
        "x; touch pwned",
        "$(touch pwned)",
        "`touch pwned`",
        "*",
        "~",
        "-n",
        "\n",
        "a\\b",
        "&&",
        "|",
        ">out",
        "${HOME}",
    ],
)
def test_metacharacters_are_data(nasty: str, tmp_path: Path) -> None:
    assert _through_shell([nasty], cwd=tmp_path) == [nasty]
    assert list(tmp_path.iterdir()) == []  # nothing was executed or redirected


def test_nul_and_empty_are_refused() -> None:
    with pytest.raises(ValueError):
        quote_argv([])
    with pytest.raises(ValueError):
        quote_argv(["a\x00b"])
