"""The HTML report in a real browser: headless Chromium renders it (screenshot kept as a CI
artifact) and its parsed DOM still has every inline SVG plot."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

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


PROBE = """<script>
const out = {overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
             viewport: window.innerWidth, plots: [], energy: null, jobs: []};
for (const svg of document.querySelectorAll("svg[data-plot]")) {
  const box = svg.getBoundingClientRect();
  out.plots.push([svg.dataset.plot, Math.round(box.width), Math.round(box.height)]);
}
const energy = [...document.querySelectorAll("#summary td")]
  .find((td) => (td.dataset.label || "").startsWith("total mJ"));
if (energy) {
  const box = energy.getBoundingClientRect();
  out.energy = [Math.round(box.left), Math.round(box.right), energy.textContent];
}
for (const row of document.querySelectorAll("#jobs tr[data-status]")) {
  out.jobs.push(row.dataset.status);
}
const pre = document.createElement("pre");
pre.id = "probe";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _probe(report: Path, tmp_path: Path, width: int) -> dict[str, Any]:
    """Lay the report out at `width` px in Chromium and measure it as a reader would see it
    (a copy with a measuring script: the report itself stays script-free)."""
    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(
        report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )
    dom = _chromium(f"--window-size={width},900", "--dump-dom", probe.as_uri(), home=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stdout[-2000:]
    return dict(json.loads(html.unescape(found.group(1))))


def _screenshot(page: Path, name: str, tmp_path: Path, width: int = 1280) -> bytes:
    artifacts = Path(os.environ.get("EDGETOOL_ARTIFACTS", "artifacts"))
    if not artifacts.is_absolute():
        artifacts = REPO / artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / name
    shot.unlink(missing_ok=True)
    result = _chromium(
        f"--screenshot={shot}", f"--window-size={width},2400", page.as_uri(), home=tmp_path
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    return shot.read_bytes()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_fast_model_report_fits_the_screen_with_its_plots(tmp_path: Path) -> None:
    fast = [7_000 + (i % 13) * 50 for i in range(3000)] + [2_000_000] * 4
    runs = [
        load_run(make_run(tmp_path / "results", "fast", durations=fast, model="a-long-model-name")),
        load_run(make_run(tmp_path / "results", "slow", n=300, target="jetson-orin-nano-devkit")),
    ]
    report = tmp_path / "report.html"
    write_report(runs, report)
    png = _screenshot(report, "report-fast-model-chromium.png", tmp_path)
    assert _png_distinct_colours(png) >= 10
    for width in (1280, 720):  # a laptop, and a narrow window where rows stack
        seen = _probe(report, tmp_path, width)
        assert seen["overflow"] <= 0, seen  # nothing scrolls sideways
        assert seen["energy"] is not None and "1.9000" in seen["energy"][2]
        assert seen["energy"][0] >= 0 and seen["energy"][1] <= seen["viewport"], seen
        names = [name for name, _, _ in seen["plots"]]
        assert {"latency-histogram", "latency-cdf", "latency-over-time", "power"} <= set(names)
        assert all(w > 200 and h > 100 for _, w, h in seen["plots"]), seen["plots"]
        assert all(w <= seen["viewport"] for _, w, _ in seen["plots"])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_night_report_leads_with_what_went_wrong_in_chromium(tmp_path: Path) -> None:
    from edgetool.farm.outputs import write_night_report
    from tests.unit.test_farm_plan import _night

    plan, results = _night(tmp_path)
    results[0].run_dir = str(make_run(tmp_path / "night" / "runs", "r0", n=200))
    report = tmp_path / "night" / "report.html"
    assert write_night_report(plan, results, report) == report
    png = _screenshot(report, "night-report-chromium.png", tmp_path)
    assert _png_distinct_colours(png) >= 10
    seen = _probe(report, tmp_path, 1280)
    assert seen["jobs"] == ["regressed", "failed", "skipped", "passed", "passed"]
    assert seen["overflow"] <= 0 and "latency-histogram" in [p[0] for p in seen["plots"]]
