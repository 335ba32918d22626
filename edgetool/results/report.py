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
from pathlib import Path
from typing import Any

from edgetool.files import write_text_atomic
from edgetool.results import plots
from edgetool.results.manifest import (
    AlignmentInfo,
    EnergyFigure,
    EnergySummary,
    Summary,
)
from edgetool.results.plots import Bar, Series, Shade, esc
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
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0} td.l,th.l{text-align:left}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0;font-size:13px}
dt{color:#666} dd{margin:0;word-break:break-all}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots svg{border:1px solid #ddd;border-radius:4px;max-width:100%;height:auto}
.scroll{overflow-x:auto}
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


def _estimate(summary: Summary) -> str:
    """The run's estimate over its repetitions with their CI, else the pooled p50."""
    reps = summary.repetitions
    if reps is not None and reps.estimate_ms:
        ci = reps.ci
        interval = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else " (CI unknown)"
        return f"{reps.estimate_ms:.4g}{interval} ×{reps.count}"
    return _num(summary.latency_info.p50) + " (1 repetition)"


def _summary_table(runs: Sequence[Run], verdicts: Mapping[str, str] | None = None) -> str:
    """One row per run, the numbers people quote (with the CI where there is one)."""
    any_energy = any(_energy(r) for r in runs)
    head = [
        "run", "status", "n", "median ms [95% CI] ×repetitions", "p50 ms", "p90 ms", "p99 ms",
        "mean ± std ms", "inf/s",
    ]  # fmt: skip
    if verdicts is not None:
        head.append("vs baseline")
    if any_energy:
        head += ["dynamic mJ/inf [CI]", "total mJ/inf [CI]", "idle W", "meter"]
    rows = [
        "<tr>"
        + "".join(f'<th class="{"l" if i < 2 else ""}">{esc(h)}</th>' for i, h in enumerate(head))
        + "</tr>"
    ]
    for i, run in enumerate(runs):
        summary = _summary(run)
        lat = summary.latency_info
        cells = [
            run_label(i, run),
            run.status,
            str(_count(run)),
            _estimate(summary),
            _num(lat.p50),
            _num(lat.p90),
            _num(lat.p99),
            f"{_num(lat.mean)} ± {_num(lat.std)}",
            _num(summary.throughput_per_s, 1),
        ]
        if verdicts is not None:
            cells.append(verdicts.get(str(run.dir), "—"))
        if any_energy:
            energy = _energy(run) or EnergySummary()
            dyn, tot = energy.dynamic_mj, energy.total_mj
            est = " (estimate)" if energy.estimate else ""
            cells += [_figure(dyn, est), _figure(tot, est), _num(energy.idle_w, 3)]
            cells.append(energy.meter or "—")
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="{"l" if j < 2 else ""}">{esc(c)}</td>' for j, c in enumerate(cells)
            )
            + "</tr>"
        )
    return f'<div class="scroll"><table>{"".join(rows)}</table></div>'


def _latency_ms(run: Run) -> list[float]:
    return [ns / 1e6 for ns in run.samples_ns]


def _hist_range(datasets: Sequence[Sequence[float]]) -> tuple[float, float, int]:
    """The x range for latency histograms: cut far outliers (beyond 3× the p99.9) so one
    100 ms hiccup does not squash the distribution into one bar; returns how many are cut."""
    lo, hi, cut_at = math.inf, -math.inf, -math.inf
    for values in datasets:
        if not values:
            continue
        ordered = sorted(values)
        lo = min(lo, ordered[0])
        hi = max(hi, ordered[-1])
        p999 = ordered[min(len(ordered) - 1, int(0.999 * (len(ordered) - 1) + 0.5))]
        cut_at = max(cut_at, p999)
    if hi > 3 * cut_at > 0:
        hidden = sum(1 for values in datasets for v in values if v > cut_at)
        return lo, cut_at, hidden
    return lo, hi, 0


def _latency_plots(runs: Sequence[Run]) -> str:
    with_samples = [(i, r) for i, r in enumerate(runs) if r.samples_ns]
    emulated = any(is_emulated(r.manifest) for _, r in with_samples)
    unit = "latency (ms" + (", emulated time" if emulated else "") + ")"
    datasets = [(run_label(i, r), _latency_ms(r)) for i, r in with_samples]
    if not datasets:
        return plots.empty_plot(
            "latency-histogram", "latency histogram", "no samples"
        ) + plots.empty_plot("latency-cdf", "latency CDF", "no samples")
    lo, hi, hidden = _hist_range([d for _, d in datasets])
    title = "latency histogram"
    if hidden:
        title += f" ({hidden} outliers above {hi:.3g} ms not shown)"
    return plots.histogram(
        "latency-histogram", title, datasets, unit, x_range=(lo, hi)
    ) + plots.cdf("latency-cdf", "latency CDF", datasets, unit)


def _env_series(run: Run, x0: float, x1: float) -> tuple[list[Series], str, str]:
    """Temperature (preferred) or mean CPU frequency, before → after, for the right axis."""
    before, after = run.manifest.env_before or {}, run.manifest.env_after or {}
    t0, t1 = before.get("temp_c"), after.get("temp_c")
    caption = []
    series: list[Series] = []
    label = ""

    def mean_mhz(env: dict[str, Any]) -> float | None:
        freqs = [v for v in env.get("freq_khz") or [] if isinstance(v, (int, float))]
        return sum(freqs) / len(freqs) / 1000.0 if freqs else None

    f0, f1 = mean_mhz(before), mean_mhz(after)
    if isinstance(t0, (int, float)) and isinstance(t1, (int, float)):
        series.append(
            Series(
                "temperature °C (before → after)",
                [x0, x1],
                [t0, t1],
                axis="right",
                color="#d62728",
                dashed=True,
            )
        )
        label = "temperature (°C)"
        if f0 is not None and f1 is not None:
            caption.append(f"mean CPU frequency {f0:.0f} → {f1:.0f} MHz")
    elif f0 is not None and f1 is not None:
        series.append(
            Series(
                "mean CPU MHz (before → after)",
                [x0, x1],
                [f0, f1],
                axis="right",
                color="#9467bd",
                dashed=True,
            )
        )
        label = "CPU frequency (MHz)"
    for env, when in ((before, "before"), (after, "after")):
        if env.get("governor"):
            caption.append(f"governor {when}: {env['governor']}")
    return series, label, "; ".join(caption)


def _time_unit(span_ns: float) -> tuple[float, str]:
    return (1e9, "s") if span_ns > 2e9 else (1e6, "ms")


def _over_time_plot(index: int, run: Run) -> str:
    """Latency per inference against time (or index for old runs), drift and throttling
    show up here, with temperature/frequency on the right axis where known."""
    latency = _latency_ms(run)
    emu = ", emulated" if is_emulated(run.manifest) else ""
    clock_emu = "emulated " if emu else ""
    title = f"latency over time — {run_label(index, run)}"
    if run.starts_ns is not None and len(run.starts_ns) == len(latency):
        origin = min(run.starts_ns)
        scale, unit = _time_unit(max(run.starts_ns) - origin)
        xs = [(t - origin) / scale for t in run.starts_ns]
        xlabel = f"time since first inference ({unit}, {clock_emu}device clock)"
    else:
        xs = [float(i) for i in range(len(latency))]
        xlabel = "inference index"
    if len(latency) > SCATTER_MAX:
        bx, lo, hi, mean = plots.minmax_buckets(xs, latency, 600)
        series = [
            Series("latency min–max", bx, lo, kind="band", ys_hi=hi, color=plots.PALETTE[0]),
            Series("latency mean", bx, mean, color=plots.PALETTE[0]),
        ]
    else:
        series = [Series("latency", xs, latency, kind="scatter", color=plots.PALETTE[0])]
    env, y2label, caption = _env_series(run, min(xs), max(xs))
    svg = plots.xy_plot(
        "latency-over-time",
        title,
        [*series, *env],
        xlabel,
        f"latency (ms{emu})",
        y2label=y2label,
        extra_attrs=f'data-run="{index + 1}" ',
    )
    return svg + (f'<div class="caption">{esc(caption)}</div>' if caption else "")


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
    scale, unit = _time_unit(span)
    t = [(s.t_ns - offset - origin) / scale for s in run.power]
    watts = [s.watts for s in run.power]
    shades = [
        Shade(
            (t0 - origin) / scale,
            (t1 - origin) / scale,
            "#2ca02c" if name == "idle" else "#ff7f0e",
            0.15,
            f"{name} window",
        )
        for name, t0, t1 in windows
    ]
    busy = [
        ((s - origin) / scale, (s + ns - origin) / scale)
        for s, ns in zip(starts, run.samples_ns, strict=True)
    ]
    if not placed:
        busy = []  # no device times and no measure window: placing them would be a guess
    emu = "emulated " if is_emulated(run.manifest) else ""
    idle = (_energy(run) or EnergySummary()).idle_w
    power_meta = run.manifest.power_info
    alignment = power_meta.alignment or AlignmentInfo()
    svg = plots.power_plot(
        "power",
        f"power — {run_label(index, run)}",
        t,
        watts,
        f"time ({unit}, {emu}device clock)",
        windows=shades,
        busy=busy,
        idle_w=float(idle) if isinstance(idle, (int, float)) else None,
    ).replace('data-plot="power" ', f'data-plot="power" data-run="{index + 1}" ', 1)
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


def build_report(
    runs: list[Run], title: str | None = None, verdicts: Mapping[str, str] | None = None
) -> str:
    """The report as one HTML string (inline CSS and SVG, no JavaScript); `verdicts` (by
    run directory) adds each run's comparison against a baseline."""
    heading = title or (
        f"edgetool report — {run_label(0, runs[0])}"
        if len(runs) == 1
        else f"edgetool report — {len(runs)} runs"
    )
    body = [
        f"<h1>{esc(heading)}</h1>",
        f'<div class="meta">generated {esc(time.strftime("%Y-%m-%d %H:%M:%S %z"))}</div>',
    ]
    if any(is_emulated(r.manifest) for r in runs):
        body.append(
            '<div class="notice">Some runs are on <b>emulated</b> targets: their times are '
            "emulator times, not device times.</div>"
        )
    body.append("<h2>Runs</h2>")
    body.extend(_run_card(i, r) for i, r in enumerate(runs))
    body.append("<h2>Summary</h2>")
    body.append(_summary_table(runs, verdicts))
    body.append('<h2>Latency distribution</h2><div class="plots">')
    body.append(_latency_plots(runs))
    body.append('</div><h2>Latency over time</h2><div class="plots">')
    for i, run in enumerate(runs):
        if run.samples_ns:
            body.append(f"<div>{_over_time_plot(i, run)}</div>")
    body.append("</div>")
    powered = [(i, r) for i, r in enumerate(runs) if r.power]
    if powered:
        body.append('<h2>Power</h2><div class="plots">')
        body.extend(f"<div>{_power_plot(i, r)}</div>" for i, r in powered)
        body.append("</div>")
    if any(_energy(r) for r in runs):
        body.append('<h2>Energy</h2><div class="plots">')
        body.append(f"<div>{_energy_plot(runs)}</div></div>")
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
) -> None:
    """Write the report atomically: a reader never sees half a file."""
    text = build_report(runs, title, verdicts)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, lambda handle: handle.write(text), mode=0o644)
