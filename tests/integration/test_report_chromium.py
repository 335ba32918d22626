"""The HTML report in a real browser: headless Chromium renders it (screenshot kept as a CI
artifact) and its parsed DOM still has every inline SVG plot."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from edgetool.results.report import write_report
from edgetool.results.store import load_run
from tests.conftest import REPO
from tests.unit.test_trace_report import make_run, plots_in

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def _chromium(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    # Its own HOME: chromium writes a profile there, which must not land in the real one.
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *FLAGS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
        stdin=subprocess.DEVNULL,
    )


def _png_distinct_colours(png: bytes, limit: int = 50) -> int:
    """Decode a (non-interlaced, 8-bit RGB/RGBA) PNG with zlib and count distinct pixels in
    a sample of rows: enough to tell a rendered page from a blank one."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, colour_type = 8, b"", 0, 0, 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", data[:10])
            assert depth == 8
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    channels = {2: 3, 6: 4}[colour_type]
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    colours: set[bytes] = set()
    prev = bytearray(stride - 1)
    for y in range(height):
        line = raw[y * stride : (y + 1) * stride]
        filt, cur = line[0], bytearray(line[1:])
        for i in range(len(cur)):
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if filt == 1:
                cur[i] = (cur[i] + a) & 0xFF
            elif filt == 2:
                cur[i] = (cur[i] + b) & 0xFF
            elif filt == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 37 == 0:
            colours.update(bytes(cur[x : x + 3]) for x in range(0, len(cur), channels * 7))
            if len(colours) >= limit:
                return len(colours)
        prev = cur
    return len(colours)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    runs = [
        load_run(make_run(tmp_path / "results", "a", n=400)),
        load_run(make_run(tmp_path / "results", "b", n=5000, target="jetson", model="cbnet")),
        load_run(make_run(tmp_path / "results", "c", emulated=True, power=False, energy=False)),
    ]
    report = tmp_path / "report.html"
    write_report(runs, report)
    expected = plots_in(report.read_text(encoding="utf-8"))
    assert {"latency-histogram", "latency-cdf", "latency-over-time", "power", "energy"} <= set(
        expected
    )

    artifacts = Path(os.environ.get("EDGETOOL_ARTIFACTS", "artifacts"))
    if not artifacts.is_absolute():
        artifacts = REPO / artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-chromium.png"
    shot.unlink(missing_ok=True)
    result = _chromium(
        f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri(), home=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists(), result.stderr[-2000:]
    png = shot.read_bytes()
    assert len(png) > 20_000, len(png)
    assert _png_distinct_colours(png) >= 10  # text, axes, fills: not one flat colour

    dom = _chromium("--dump-dom", report.as_uri(), home=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = re.findall(r'<svg [^>]*data-plot="([^"]+)"', dom.stdout)
    assert parsed == expected
    assert dom.stdout.count("</svg>") == len(expected)
