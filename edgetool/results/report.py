"""One self-contained HTML report for one or more runs: tables and inline SVG plots.

Self-contained on purpose: the file is attached to CI jobs and mailed around, so it must
render offline, with no scripts, fonts or stylesheets fetched from anywhere. Partial and
failed runs show what they measured, with a notice, because a crashed run is exactly the
one somebody needs to look at.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetool.errors import EdgetoolError
from edgetool.files import write_text_atomic
from edgetool.results import plots
from edgetool.results.compare import DETERMINISTIC_PREFIX
from edgetool.results.manifest import (
    AlignmentInfo,
    EnergyFigure,
    EnergySummary,
    Summary,
)
from edgetool.results.op_profile import OpProfile, read_op_profile, top
from edgetool.results.plots import Bar, Point, esc
from edgetool.results.split import DEVICE_ONLY, SERVER_ONLY, energy_text, rate_text
from edgetool.results.store import Run
from edgetool.results.trace import (
    inference_starts,
    is_emulated,
    meter_windows,
    model_label,
    power_offset_ns,
    target_label,
)

SCATTER_MAX = 3000
"""Above this many inferences, latency over time is drawn as a min/max band plus mean."""

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;
color:#222;background:#fafafa;max-width:1600px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px}
h3{font-size:15px;margin:0 0 6px}
.meta{color:#666;font-size:13px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin:10px 0}
.notice{background:#fff4e0;border:1px solid #e0a040;border-radius:4px;padding:6px 10px;
margin:6px 0;font-size:13px}
.notice.err{background:#fdecea;border-color:#d9534f}
.emu{display:inline-block;background:#fde68a;border-radius:3px;padding:0 6px;font-size:12px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f0f0f0} td.l,th.l{text-align:left;overflow-wrap:anywhere}
table.summary{width:100%}
@media (max-width:900px){table.summary,table.summary tr,table.summary td{display:block}
table.summary tr:first-child{display:none} table.summary tr{margin:0 0 10px}
table.summary td{text-align:left;border-width:0 1px 1px}
table.summary td::before{content:attr(data-label) ": ";color:#666}}
td.regressed,td.failed{color:#b00;font-weight:600} td.skipped{color:#a60}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0;font-size:13px}
dt{color:#666} dd{margin:0;word-break:break-all}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots svg{border:1px solid #ddd;border-radius:4px;max-width:100%;height:auto}
.caption{font-size:12px;color:#666;margin:2px 0 10px}
"""


def run_label(index: int, run: Run) -> str:
    label = f"#{index + 1} {target_label(run.manifest)} · {model_label(run.manifest)}"
    return label + (" (emulated)" if is_emulated(run.manifest) else "")


def _num(value: Any, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _ci(ci: Any, digits: int = 3) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f" [{_num(ci[0], digits)}, {_num(ci[1], digits)}]"
    return ""


def _ci_pair(ci: Any) -> tuple[float, float] | None:
    if (
        isinstance(ci, (list, tuple))
        and len(ci) == 2
        and all(isinstance(v, (int, float)) for v in ci)
    ):
        return float(ci[0]), float(ci[1])
    return None


def _energy(run: Run) -> EnergySummary | None:
    return run.summary.energy if run.summary else None


def _summary(run: Run) -> Summary:
    """The run's summary, empty for a run that has none (no samples, aggregates lost)."""
    return run.summary if run.summary is not None else Summary()


def _dl(rows: Sequence[tuple[str, Any]]) -> str:
    items = "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows if v not in (None, "", [])
    )
    return f"<dl>{items}</dl>"


def _run_card(index: int, run: Run) -> str:
    """Who, what, where and how it went: enough to know which run a number belongs to."""
    m = run.manifest
    summary = _summary(run)
    target = m.target_info
    artifact = m.artifact_info
    device = m.device or {}
    runtime = m.runtime_info
    emu = ' <span class="emu">emulated: times are emulator times</span>' if is_emulated(m) else ""
    parts = [f'<div class="card" id="run-{index + 1}"><h3>{esc(run_label(index, run))}{emu}</h3>']
    status = run.status
    if status != "complete":
        reason = f": {m.error}" if m.error else ""
        cls = "notice err" if status in ("failed", "error") else "notice"
        parts.append(
            f'<div class="{cls}">status <b>{esc(status)}</b>{esc(reason)}; '
            f"showing the {len(run.samples_ns)} inferences that were recorded.</div>"
        )
    if target.synthetic:
        parts.append(
            '<div class="notice err">SYNTHETIC: a test peer answered, not a device; '
            "these are not real figures</div>"
        )
    if summary.aggregate_only:
        source = summary.latency_info.source or "the runner"
        parts.append(
            f'<div class="notice">{esc(source)} reports aggregates only (count, mean, std, '
            "min, max): no per-inference samples, so no percentiles or histograms</div>"
        )
    elif _split(run) is not None:
        parts.append(
            '<div class="notice">a split run: its inferences are in split.jsonl, shown under '
            '<a href="#split">Split computing</a></div>'
        )
    elif not run.samples_ns:
        parts.append('<div class="notice">no samples were recorded</div>')
    if run.starts_ns is None and run.samples_ns:
        parts.append(
            '<div class="notice">this run has no inference start times: time axes lay '
            "inferences back to back</div>"
        )
    sha = artifact.sha256
    device_text = " · ".join(
        str(device[k]) for k in ("arch", "cores", "cpu_model", "os") if device.get(k) is not None
    )
    parts.append(
        _dl(
            [
                ("run", run.run_id),
                ("directory", str(run.dir)),
                ("status", status),
                ("created", m.created),
                (
                    "target",
                    " · ".join(
                        str(v)
                        for v in (
                            target.name,
                            target.kind,
                            target.description,
                        )
                        if v
                    ),
                ),
                (
                    "model",
                    " · ".join(
                        str(v)
                        for v in (
                            model_label(m),
                            artifact.format,
                            artifact.quant,
                        )
                        if v
                    ),
                ),
                ("sha256", f"{str(sha)[:16]}…" if sha else None),
                ("device", device_text),
                (
                    "runtime",
                    " ".join(str(v) for v in (runtime.runtime, runtime.runtime_version) if v),
                ),
                ("meter", m.power_info.meter),
                ("inferences", _count(run)),
            ]
        )
    )
    energy = _energy(run)
    if energy and energy.estimate:
        method = f"a {energy.method}" if energy.method else "an estimate from a power model"
        parts.append(f'<div class="notice">energy is {esc(method)}, not a meter reading</div>')
    if energy and energy.note:
        parts.append(f'<div class="notice">energy: {esc(energy.note)}</div>')
    for warning in summary.latency_info.unstable or []:
        parts.append(f'<div class="notice">unstable: {esc(warning)}</div>')
    parts.append("</div>")
    return "".join(parts)


def _count(run: Run) -> int:
    """Inferences as the summary counts them, else as samples.jsonl holds them."""
    count = _summary(run).count
    return count if count is not None else len(run.samples_ns)


def _figure(figure: EnergyFigure | None, suffix: str) -> str:
    """`mean [ci]` of an energy figure in a table cell, `suffix` saying what it is."""
    if figure is None:
        return _num(None)
    return _num(figure.mean, 4) + _ci(figure.ci, 4) + suffix


def _run_unit(run: Run) -> plots.Unit:
    """The run's latency unit: by its samples, else by its summary's p50."""
    if run.samples_ns:
        return _unit([run])
    p50 = _summary(run).latency_info.p50
    ns = [float(p50) * 1e6] if isinstance(p50, (int, float)) else []
    return plots.latency_unit(ns, _instructions(run))


def _lat(value_ms: Any, unit: plots.Unit) -> str:
    """A latency given in ms, in the run's unit with four significant figures."""
    if not isinstance(value_ms, (int, float)) or not math.isfinite(value_ms):
        return "—"
    return f"{value_ms * 1e6 / unit.per_ns:.4g}"


def _estimate(summary: Summary, unit: plots.Unit) -> str:
    """The run's estimate over its repetitions with their CI, else the pooled p50."""
    reps = summary.repetitions
    if reps is not None and reps.estimate_ms:
        ci = reps.ci
        interval = f" [{_lat(ci[0], unit)}, {_lat(ci[1], unit)}]" if ci else " (CI unknown)"
        return f"{_lat(reps.estimate_ms, unit)}{interval} {unit.name} ×{reps.count}"
    return f"{_lat(summary.latency_info.p50, unit)} {unit.name} (1 repetition)"


def _summary_table(runs: Sequence[Run], verdicts: Mapping[str, str] | None = None) -> str:
    """One row per run, the numbers people quote (with the CI where there is one).

    Energy comes right after the latency estimate and cells wrap, so the whole row fits a
    laptop screen; below 900 px each row stacks into a card (labels from data-label)."""
    any_energy = any(_energy(r) for r in runs)
    head = ["run", "n", "median [95% CI] ×repetitions"]
    if any_energy:
        head += ["total mJ/inf [CI]", "dynamic mJ/inf [CI]"]
    head += ["p50 / p90 / p99", "mean ± std", "inf/s"]
    if verdicts is not None:
        head.append("vs baseline")
    if any_energy:
        head += ["idle W", "meter"]
    rows = ["<tr>" + "".join(f'<th class="{"l" if i == 0 else ""}">{esc(h)}</th>'
                             for i, h in enumerate(head)) + "</tr>"]  # fmt: skip
    for i, run in enumerate(runs):
        summary = _summary(run)
        lat = summary.latency_info
        unit = _run_unit(run)
        status = "" if run.status == "complete" else f" ({run.status})"
        figures = _split(run)
        estimate = _estimate(summary, unit) if figures is None else _split_estimate(figures)
        cells = [run_label(i, run) + status, str(_count(run)), estimate]
        energy = _energy(run) or EnergySummary()
        est = " (estimate)" if energy.estimate else ""
        if any_energy:
            cells += [_figure(energy.total_mj, est), _figure(energy.dynamic_mj, est)]
        cells += [
            f"{_lat(lat.p50, unit)} / {_lat(lat.p90, unit)} / {_lat(lat.p99, unit)} {unit.name}",
            f"{_lat(lat.mean, unit)} ± {_lat(lat.std, unit)} {unit.name}",
            _num(summary.throughput_per_s, 1),
        ]
        if verdicts is not None:
            cells.append(verdicts.get(str(run.dir), "—"))
        if any_energy:
            cells += [_num(energy.idle_w, 3), energy.meter or "—"]
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="{"l" if j == 0 else ""}" data-label="{esc(head[j])}">{esc(c)}</td>'
                for j, c in enumerate(cells)
            )
            + "</tr>"
        )
    return f'<table class="summary" id="summary">{"".join(rows)}</table>'


def _instructions(run: Run) -> bool:
    """Times counted in emulated instructions (QEMU -icount): shown as instructions."""
    return (run.manifest.target_info.time_base or "").startswith(DETERMINISTIC_PREFIX)


def _unit(runs: Sequence[Run]) -> plots.Unit:
    """One latency unit for runs drawn on one axis, chosen by the pooled median."""
    pooled = [float(ns) for run in runs for ns in run.samples_ns]
    return plots.latency_unit(pooled, bool(runs) and all(_instructions(r) for r in runs))


def _values(run: Run, unit: plots.Unit) -> list[float]:
    return [ns / unit.per_ns for ns in run.samples_ns]


def _latency_label(unit: plots.Unit, emulated: bool) -> str:
    if unit.name.endswith("instr"):
        return f"latency ({unit.name}, emulated)"
    return f"latency ({unit.name}" + (", emulated time)" if emulated else ")")


def _latency_plots(runs: Sequence[Run]) -> str:
    with_samples = [(i, r) for i, r in enumerate(runs) if r.samples_ns]
    if not with_samples:
        return plots.empty_plot(
            "latency-histogram", "latency histogram", "no samples"
        ) + plots.empty_plot("latency-cdf", "latency CDF", "no samples")
    emulated = any(is_emulated(r.manifest) for _, r in with_samples)
    unit = _unit([r for _, r in with_samples])
    label = _latency_label(unit, emulated)
    datasets = [(run_label(i, r), _values(r, unit)) for i, r in with_samples]
    return plots.histogram(
        "latency-histogram", "latency histogram", datasets, unit.name, label
    ) + plots.cdf("latency-cdf", "latency CDF", datasets, label, unit.name)


def _env_line(run: Run) -> tuple[plots.EnvLine | None, str]:
    """Temperature (preferred) or mean CPU frequency, before → after, for the right axis;
    and a caption with what else is known (frequency, governor)."""
    before, after = run.manifest.env_before or {}, run.manifest.env_after or {}
    t0, t1 = before.get("temp_c"), after.get("temp_c")
    caption: list[str] = []
    line: plots.EnvLine | None = None

    def mean_mhz(env: dict[str, Any]) -> float | None:
        freqs = [v for v in env.get("freq_khz") or [] if isinstance(v, (int, float))]
        return sum(freqs) / len(freqs) / 1000.0 if freqs else None

    f0, f1 = mean_mhz(before), mean_mhz(after)
    if isinstance(t0, (int, float)) and isinstance(t1, (int, float)):
        line = plots.EnvLine(
            "temperature °C (before → after)", "temperature (°C)", t0, t1, "#d62728"
        )
        if f0 is not None and f1 is not None:
            caption.append(f"mean CPU frequency {f0:.0f} → {f1:.0f} MHz")
    elif f0 is not None and f1 is not None:
        line = plots.EnvLine(
            "mean CPU MHz (before → after)", "CPU frequency (MHz)", f0, f1, "#9467bd"
        )
    for env, when in ((before, "before"), (after, "after")):
        if env.get("governor"):
            caption.append(f"governor {when}: {env['governor']}")
    return line, "; ".join(caption)


def _over_time_plot(index: int, run: Run) -> str:
    """Latency per inference against time (or index for old runs), drift and throttling
    show up here, with temperature/frequency on the right axis where known."""
    unit = _unit([run])
    latency = _values(run, unit)
    emulated = is_emulated(run.manifest)
    clock_emu = "emulated " if emulated else ""
    title = f"latency over time — {run_label(index, run)}"
    if run.starts_ns is not None and len(run.starts_ns) == len(latency):
        origin = min(run.starts_ns)
        scale = plots.time_unit(max(run.starts_ns) - origin)
        xs = [(t - origin) / scale.per_ns for t in run.starts_ns]
        xlabel = f"time since first inference ({scale.name}, {clock_emu}device clock)"
    else:
        xs = [float(i) for i in range(len(latency))]
        xlabel = "inference index"
    env, caption = _env_line(run)
    svg = plots.over_time(
        "latency-over-time",
        title,
        xs,
        latency,
        xlabel,
        _latency_label(unit, emulated),
        env=env,
        attrs={"data-run": str(index + 1)},
        scatter_max=SCATTER_MAX,
    )
    return svg + (f'<div class="caption">{esc(caption)}</div>' if caption else "")


def _repetition_plot(index: int, run: Run) -> str | None:
    """Per-repetition medians with the run's estimate and CI (runs with 2+ repetitions)."""
    reps = _summary(run).repetitions
    if reps is None or not reps.medians_ms or len(reps.medians_ms) < 2:
        return None
    ns = [v * 1e6 for v in reps.medians_ms]
    unit = plots.latency_unit(ns, _instructions(run))
    scale = 1e6 / unit.per_ns
    ci = _ci_pair(reps.ci)
    svg = plots.repetitions(
        "latency-repetitions",
        f"per-repetition medians — {run_label(index, run)}",
        [v * scale for v in reps.medians_ms],
        reps.estimate_ms * scale if reps.estimate_ms is not None else None,
        (ci[0] * scale, ci[1] * scale) if ci else None,
        _latency_label(unit, is_emulated(run.manifest)),
        attrs={"data-run": str(index + 1)},
    )
    kind = f"{reps.count} {reps.kind or ''} repetitions".replace("  ", " ")
    method = f"; CI by {reps.method}" if reps.method else ""
    return svg + f'<div class="caption">{esc(kind)}{esc(method)}</div>'


def _power_plot(index: int, run: Run) -> str:
    """Power on the device timeline (meter samples shifted by the alignment offset), with
    the idle/measure windows shaded and the inferences as a strip along the bottom."""
    offset = power_offset_ns(run.manifest)
    starts = inference_starts(run)
    windows = meter_windows(run.manifest)
    placed = run.starts_ns is not None or any(name == "measure" for name, _, _ in windows)
    candidates = [starts[0]] if starts and placed else []
    candidates += [run.power[0].t_ns - offset] + [w[1] for w in windows]
    origin = min(candidates)
    span = max(s.t_ns for s in run.power) - offset - origin
    scale = plots.time_unit(span)
    t = [(s.t_ns - offset - origin) / scale.per_ns for s in run.power]
    watts = [s.watts for s in run.power]
    shades = [
        plots.Window(
            f"{name} window",
            (t0 - origin) / scale.per_ns,
            (t1 - origin) / scale.per_ns,
            "#2ca02c" if name == "idle" else "#ff7f0e",
        )
        for name, t0, t1 in windows
    ]
    busy = [
        ((s - origin) / scale.per_ns, (s + ns - origin) / scale.per_ns)
        for s, ns in zip(starts, run.samples_ns, strict=True)
    ]
    if not placed:
        busy = []  # no device times and no measure window: placing them would be a guess
    emu = "emulated " if is_emulated(run.manifest) else ""
    idle = (_energy(run) or EnergySummary()).idle_w
    power_meta = run.manifest.power_info
    alignment = power_meta.alignment or AlignmentInfo()
    svg = plots.power(
        "power",
        f"power — {run_label(index, run)}",
        t,
        watts,
        f"time ({scale.name}, {emu}device clock)",
        windows=shades,
        busy=busy,
        idle_w=float(idle) if isinstance(idle, (int, float)) else None,
        attrs={"data-run": str(index + 1)},
    )
    caption = (
        f"{len(run.power)} samples from {power_meta.meter or 'the meter'}"
        f" ({power_meta.clock or '?'} clock); alignment offset "
        f"{alignment.offset_ns if alignment.offset_ns is not None else 0} ns ± "
        f"{alignment.uncertainty_ns if alignment.uncertainty_ns is not None else '?'} ns"
    )
    return svg + f'<div class="caption">{esc(caption)}</div>'


def _energy_plot(runs: Sequence[Run]) -> str:
    groups: list[str] = []
    names: list[str] = []
    dynamic: list[Bar] = []
    total: list[Bar] = []
    for i, run in enumerate(runs):
        energy = _energy(run)
        if not energy:
            continue
        groups.append(f"#{i + 1}")
        names.append(run_label(i, run))
        dyn = energy.dynamic_mj or EnergyFigure()
        tot = energy.total_mj or EnergyFigure()
        dynamic.append(Bar(dyn.mean, _ci_pair(dyn.ci)))
        total.append(Bar(tot.mean, _ci_pair(tot.ci)))
    svg = plots.bar_chart(
        "energy",
        "energy per inference (95% CI)",
        groups,
        [("dynamic (above idle)", dynamic), ("total", total)],
        "mJ per inference",
    )
    return svg + f'<div class="caption">{esc("; ".join(names))}</div>'


OP_ROWS = 12
"""Operator types in a run's bar chart, and nodes in its table."""


def _op_profile(run: Run) -> OpProfile | None:
    """The run's profile, or None (none, a damaged file, or one that says it failed)."""
    try:
        profile = read_op_profile(run.dir, run.summary.ops if run.summary else None)
    except EdgetoolError:
        return None
    return profile if profile is not None and not profile.error else None


def _op_section(index: int, run: Run, profile: OpProfile) -> str:
    """One run's profile: a bar per op type and a table of the slowest nodes."""
    rows = top(profile.op_types or profile.nodes, OP_ROWS)
    svg = plots.op_bars(
        f"ops-{index + 1}",
        f"#{index + 1} time per operator type",
        [row.label for row in rows],
        [row.mean_ms or 0.0 for row in rows],
    )
    share = "% of inference" if profile.percent_of == "inference" else "% of op time"
    head = ["node", "op type", "calls", "ms / inference", share]
    table = ["<tr>" + "".join(f'<th class="l">{esc(h)}</th>' for h in head) + "</tr>"]
    for row in top(profile.nodes, OP_ROWS):
        table.append(
            f'<tr><td class="l">{esc(row.label)}</td><td class="l">{esc(row.op_type)}</td>'
            f"<td>{esc(row.calls if row.calls is not None else '—')}</td>"
            f"<td>{_num(row.mean_ms, 4)}</td><td>{_num(row.percent, 1)}</td></tr>"
        )
    runs = f"{profile.inferences} profiled inferences" if profile.inferences else "profiled runs"
    caption = f"{run_label(index, run)}: {profile.source}, {runs}; {profile.note}"
    nodes = f'<table class="ops">{"".join(table)}</table>' if profile.nodes else ""
    return f'<div>{svg}<div class="caption">{esc(caption)}</div>{nodes}</div>'


SPLIT_PART_LABELS = {
    "device": "device (head)",
    "encode": "encode",
    "up": "link up",
    "server": "server (tail)",
    "down": "link down",
}


def _split(run: Run) -> dict[str, Any] | None:
    """A split run's figures (summary.json's `split`), None for any other run."""
    if run.manifest.split is None or run.summary is None or not run.summary.split:
        return None
    return run.summary.split


def _e2e_text(figure: Mapping[str, Any]) -> str:
    return f"{_num(figure.get('estimate_ms'))}{_ci(figure.get('ci'))} ms"


def _split_estimate(figures: Mapping[str, Any]) -> str:
    """A split run in the summary table: no single latency, so its best end-to-end time
    per link (with the cut and codec that gave it)."""
    best = figures.get("best") or {}
    texts = [
        f"{link}: {_e2e_text(b.get('e2e') or {})} ({b.get('cut')} · {b.get('codec')})"
        for link, b in best.items()
    ]
    return "split run, best end to end: " + ("; ".join(texts) or "—")


def _cut_order(run: Run, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Cut points in graph order, everything-on-the-server first and everything-on-the-
    device last: left to right, more of the model runs on the device."""
    cuts = (run.manifest.split or {}).get("cuts") or []
    ordered = sorted(
        (c for c in cuts if isinstance(c, dict) and "tensor" in c),
        key=lambda c: float(c.get("position") or 0),
    )
    names = [str(c["tensor"]) for c in ordered]
    seen = {row["cut"] for row in rows}
    middle = [n for n in names if n in seen]
    middle += [c for c in dict.fromkeys(r["cut"] for r in rows) if c not in middle]
    middle = [c for c in middle if c not in (SERVER_ONLY, DEVICE_ONLY)]
    return [c for c in (SERVER_ONLY, *middle, DEVICE_ONLY) if c in seen]


def _best_per_cut(
    rows: Sequence[Mapping[str, Any]], link: str, cuts: Sequence[str]
) -> list[Mapping[str, Any] | None]:
    """On one link, the codec with the lowest end-to-end estimate at each cut."""
    out: list[Mapping[str, Any] | None] = []
    for cut in cuts:
        mine = [r for r in rows if r["link"] == link and r["cut"] == cut]
        out.append(min(mine, key=lambda r: _ms(r["e2e"])) if mine else None)
    return out


def _ms(figure: Mapping[str, Any]) -> float:
    value = figure.get("estimate_ms")
    return float(value) if isinstance(value, (int, float)) else math.inf


def _accuracy(run: Run, cut: str, codec: str) -> str:
    """What the codec costs at this cut, as the plan measured it on the host."""
    quality = ((run.manifest.split or {}).get("quality") or {}).get(cut) or {}
    figures = quality.get(codec) or {}
    texts = []
    if isinstance(figures.get("top1"), (int, float)):
        texts.append(f"top-1 {_num(figures['top1'])}")
    if isinstance(figures.get("psnr_db"), (int, float)):
        texts.append(f"PSNR {_num(figures['psnr_db'], 1)} dB")
    if isinstance(figures.get("max_abs_diff"), (int, float)):
        texts.append(f"max |Δ| {figures['max_abs_diff']:.3g}")
    if cut == DEVICE_ONLY:
        return "reference (whole model)"
    return ", ".join(texts) or "—"


def _link_text(run: Run, link: str) -> str:
    profile = ((run.manifest.split or {}).get("links") or {}).get(link) or {}
    details = []
    if profile.get("bandwidth"):
        details.append(str(profile["bandwidth"]))
    if isinstance(profile.get("rtt_ms"), (int, float)):
        details.append(f"RTT {profile['rtt_ms']:g} ms")
    return f"{link} ({', '.join(details)})" if details else link


def _split_table(run: Run, figures: Mapping[str, Any], cuts: Sequence[str]) -> str:
    """Every link × cut × codec the run measured, as `edgetool split` prints it."""
    rows = figures.get("rows") or []
    metered = any(row.get("energy") for row in rows)
    head = ["link", "cut", "codec", "bytes", *SPLIT_PART_LABELS.values(),
            "end to end [95% CI]", *(["device mJ [95% CI]"] if metered else []),
            "accuracy"]  # fmt: skip
    out = ["<tr>" + "".join(f'<th class="l">{esc(h)}</th>' for h in head) + "</tr>"]
    best = figures.get("best") or {}
    position = {cut: i for i, cut in enumerate(cuts)}
    ordered = sorted(
        rows, key=lambda r: (r["link"], position.get(r["cut"], len(cuts)), _ms(r["e2e"]))
    )
    for row in ordered:
        mark = best.get(row["link"]) or {}
        is_best = mark.get("cut") == row["cut"] and mark.get("codec") == row["codec"]
        cells = [row["link"], row["cut"], row["codec"], str(row["bytes"])]
        cells += [_num((row.get(part) or {}).get("estimate_ms")) for part in SPLIT_PART_LABELS]
        cells += [
            _e2e_text(row["e2e"]) + (" ★ best" if is_best else ""),
            *([energy_text(row.get("energy"), "—")] if metered else []),
            _accuracy(run, row["cut"], row["codec"]),
        ]
        out.append(
            ('<tr class="best">' if is_best else "<tr>")
            + "".join(
                f'<td class="{"l" if j < 3 or j == len(cells) - 1 else ""}" '
                f'data-label="{esc(head[j])}">{esc(c)}</td>'
                for j, c in enumerate(cells)
            )
            + "</tr>"
        )
    return f'<table class="summary split">{"".join(out)}</table>'


def _split_verdicts(run: Run, figures: Mapping[str, Any]) -> str:
    """Per link: the best cut and the bandwidth above which offloading starts to pay."""
    lines = []
    for link, best in (figures.get("best") or {}).items():
        crossover = (figures.get("crossover") or {}).get(link) or {}
        bps = crossover.get("bits_per_second")
        if isinstance(bps, (int, float)):
            pays = (
                f"offloading pays above {rate_text(float(bps))} "
                f"({crossover.get('cut')} · {crossover.get('codec')}, modelled)"
            )
        else:
            pays = f"crossover: never ({crossover.get('reason') or 'no offloading path'})"
        lines.append(
            f"<li><b>{esc(_link_text(run, link))}</b>: best cut {esc(best.get('cut'))} · "
            f"{esc(best.get('codec'))}, {esc(_e2e_text(best.get('e2e') or {}))}; "
            f"{esc(pays)}</li>"
        )
    return f'<ul class="split-best">{"".join(lines)}</ul>'


def _split_section(index: int, run: Run, figures: Mapping[str, Any]) -> str:
    """A split run: end to end per cut and link, where the time goes at each cut, the
    table of every route, and the best cut and crossover per link."""
    rows = figures.get("rows") or []
    cuts = _cut_order(run, rows)
    links = sorted({str(r["link"]) for r in rows})
    label = run_label(index, run)
    series = []
    for link in links:
        points = [
            Point(_ms(r["e2e"]), _ci_pair(r["e2e"].get("ci")), str(r["codec"]))
            if r is not None
            else Point(None)
            for r in _best_per_cut(rows, link, cuts)
        ]
        series.append((_link_text(run, link), points))
    parts = [
        f'<div class="card"><h3>{esc(label)}</h3>',
        _split_verdicts(run, figures),
        '<div class="plots"><div>',
        plots.cut_lines(
            f"split-e2e-{index + 1}",
            f"end-to-end p50 per cut point — {label}",
            cuts,
            series,
            "end to end (ms, best codec per cut)",
        ),
        '<div class="caption">each point is the fastest codec at that cut (written beside '
        "it) with its 95% CI over repetitions; left to right, more of the model runs on "
        "the device</div></div>",
    ]
    for link in links:
        best = _best_per_cut(rows, link, cuts)
        shown = [(cut, r) for cut, r in zip(cuts, best, strict=True) if r is not None]
        parts.append("<div>")
        parts.append(
            plots.stacked_bars(
                "split-parts",
                f"where the time goes on {link} — {label}",
                [f"{cut} · {r['codec']}" for cut, r in shown],
                [
                    (text, [_finite((r.get(part) or {}).get("estimate_ms")) for _, r in shown])
                    for part, text in SPLIT_PART_LABELS.items()
                ],
                "ms (run estimate per part)",
                attrs={"data-run": str(index + 1), "data-link": link},
            )
        )
        parts.append("</div>")
    parts.append("</div>")
    parts.append(_split_table(run, figures, cuts))
    parts.append(
        '<div class="caption">device and server parts are timed on their own clocks, '
        "the link parts on the host's; each part is its run-level estimate, so the parts "
        "need not add up to the end-to-end figure exactly. The crossover bandwidth is a "
        "model from the measured compute, the link's RTT and the bytes each way.</div>"
    )
    parts.append("</div>")
    return "".join(parts)


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


@dataclass(frozen=True)
class JobRow:
    """One job of a night as the night's table shows it (the farm fills these in; results
    knows nothing of the farm)."""

    status: str
    """regressed | failed | skipped | passed"""
    model: str
    target: str
    verdict: str
    """The comparison's verdict, or why the job failed or was skipped."""
    change: str
    """Latency change as a percentage with its CI (`+8.1 % [+4.0, +12.3]`), or `—`."""
    logs: tuple[tuple[str, str], ...] = ()
    """(label, relative href) of the job's logs."""
    run: int | None = None
    """Index of the job's run in the report (links to its card)."""


def _jobs_table(jobs: Sequence[JobRow]) -> str:
    head = ["status", "model", "target", "verdict", "latency change [95% CI]", "log"]
    rows = ["<tr>" + "".join(f'<th class="l">{esc(h)}</th>' for h in head) + "</tr>"]
    for job in jobs:
        model = esc(job.model)
        if job.run is not None:
            model = f'<a href="#run-{job.run + 1}">{model}</a>'
        logs = " · ".join(f'<a href="{esc(href)}">{esc(label)}</a>' for label, href in job.logs)
        cells = [
            f'<td class="l {esc(job.status)}" data-label="status">{esc(job.status)}</td>',
            f'<td class="l" data-label="model">{model}</td>',
            f'<td class="l" data-label="target">{esc(job.target)}</td>',
            f'<td class="l" data-label="verdict">{esc(job.verdict)}</td>',
            f'<td data-label="change">{esc(job.change)}</td>',
            f'<td class="l" data-label="log">{logs or "—"}</td>',
        ]
        rows.append(f'<tr data-status="{esc(job.status)}">' + "".join(cells) + "</tr>")
    return f'<table class="summary" id="jobs">{"".join(rows)}</table>'


def build_report(
    runs: list[Run],
    title: str | None = None,
    verdicts: Mapping[str, str] | None = None,
    jobs: Sequence[JobRow] | None = None,
) -> str:
    """The report as one HTML string (inline CSS and SVG, no JavaScript); `verdicts` (by
    run directory) adds each run's comparison against a baseline; `jobs` (a night) puts a
    table of every job first, in the order given (the farm leads with what went wrong)."""
    if title:
        heading = title
    elif len(runs) == 1:
        heading = f"edgetool report — {run_label(0, runs[0])}"
    else:
        heading = f"edgetool report — {len(runs)} runs"
    body = [
        f"<h1>{esc(heading)}</h1>",
        f'<div class="meta">generated {esc(time.strftime("%Y-%m-%d %H:%M:%S %z"))}</div>',
    ]
    if jobs is not None:
        bad = sum(1 for job in jobs if job.status != "passed")
        body.append(f"<h2>Jobs ({len(jobs)}, {bad} not passed)</h2>")
        body.append(_jobs_table(jobs))
    if any(is_emulated(r.manifest) for r in runs):
        body.append(
            '<div class="notice">Some runs are on <b>emulated</b> targets: their times are '
            "emulator times, not device times.</div>"
        )
    if not runs:
        body.append('<div class="notice">no runs to show</div>')
    else:
        body.append("<h2>Summary</h2>")
        body.append(_summary_table(runs, verdicts))
        if not all(_split(r) is not None for r in runs):  # split runs have no samples
            body.append('<h2>Latency distribution</h2><div class="plots">')
            body.append(_latency_plots(runs))
            body.append('</div><h2>Latency over time</h2><div class="plots">')
            for i, run in enumerate(runs):
                if run.samples_ns:
                    body.append(f"<div>{_over_time_plot(i, run)}</div>")
            body.append("</div>")
        repeated = [plot for i, r in enumerate(runs) if (plot := _repetition_plot(i, r))]
        if repeated:
            body.append('<h2>Repetitions</h2><div class="plots">')
            body.extend(f"<div>{plot}</div>" for plot in repeated)
            body.append("</div>")
        powered = [(i, r) for i, r in enumerate(runs) if r.power]
        if powered:
            body.append('<h2>Power</h2><div class="plots">')
            body.extend(f"<div>{_power_plot(i, r)}</div>" for i, r in powered)
            body.append("</div>")
        if any(_energy(r) for r in runs):
            body.append('<h2>Energy</h2><div class="plots">')
            body.append(f"<div>{_energy_plot(runs)}</div></div>")
        splits = [(i, r, f) for i, r in enumerate(runs) if (f := _split(r)) is not None]
        if splits:
            body.append('<h2 id="split">Split computing</h2>')
            body.extend(_split_section(i, r, f) for i, r, f in splits)
        profiled = [(i, r, p) for i, r in enumerate(runs) if (p := _op_profile(r))]
        if profiled:
            body.append('<h2>Per-operator profile</h2><div class="plots">')
            body.extend(_op_section(i, r, p) for i, r, p in profiled)
            body.append("</div>")
        body.append("<h2>Runs</h2>")
        body.extend(_run_card(i, r) for i, r in enumerate(runs))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(heading)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    runs: list[Run],
    path: Path,
    title: str | None = None,
    verdicts: Mapping[str, str] | None = None,
    jobs: Sequence[JobRow] | None = None,
) -> None:
    """Write the report atomically: a reader never sees half a file."""
    text = build_report(runs, title, verdicts, jobs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, lambda handle: handle.write(text), mode=0o644)
