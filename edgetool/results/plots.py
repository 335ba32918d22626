"""The report's plots: matplotlib figures rendered to SVG text, inlined into the HTML.

matplotlib is imported here and nowhere else, so `edgetool --help` and every command but
`report` (and a night's report) never pay for it. Figures are built with `Figure` (no
pyplot: no global state, no GUI backend) inside `rc_context`, and rendered with a fixed
`svg.hashsalt` and no date, so the same run gives byte-identical SVG (diffable reports).

Each function returns one `<svg data-plot="NAME">` element. Text stays text
(`svg.fonttype = none`: searchable, small) and math parsing is off because run ids and model
names are user input (a `$` must not start a formula). Element ids are prefixed with a hash
of the plot: a report inlines many SVGs into one document, where ids must be unique.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

matplotlib.use("Agg")

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
SIZE = (6.6, 3.4)
"""Figure size in inches (rendered at 72 pt/in: about 475 × 245 px before CSS scaling)."""
LOG_SPREAD = 20.0
"""A latency axis spanning more than this ratio (max/min) is drawn on a log scale: a
7 µs model and a 100 ms one on one linear axis would leave the fast one a single bar at 0."""
CLIP_QUANTILE = 0.999
CLIP_GAIN = 1.25
"""The histogram is clipped at the p99.9 only when the tail reaches beyond this × p99.9:
hiding a handful of samples to gain nothing would only cost the reader a footnote."""
BUCKETS = 600
"""Above about 2× this many points a series is drawn as a min/max band plus mean."""

_RC: dict[Any, Any] = {
    "svg.hashsalt": "edgetool",
    "svg.fonttype": "none",
    "text.parse_math": False,
    "axes.formatter.useoffset": False,
    "axes.formatter.use_mathtext": False,
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.spines.top": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "legend.fontsize": 8.0,
    "legend.frameon": False,
}


def esc(text: object) -> str:
    """HTML/SVG-escape any text (quotes included: it also goes into attributes)."""
    return html.escape(str(text), quote=True)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Unit:
    """How a latency axis is labelled: `ns / per_ns` is the value in `name`."""

    name: str
    per_ns: float


def latency_unit(samples_ns: Sequence[float], instructions: bool = False) -> Unit:
    """µs, ms or s by the median's magnitude (k/M instructions on an instruction time base),
    so a 7 µs model reads 7.1 µs, not 0.007 ms."""
    finite = [v for v in samples_ns if math.isfinite(v)]
    median = float(np.median(finite)) if finite else 1e6
    if instructions:
        return Unit("M instr", 1e6) if median >= 1e5 else Unit("k instr", 1e3)
    if median < 1e6:
        return Unit("µs", 1e3)
    if median < 1e10:
        return Unit("ms", 1e6)
    return Unit("s", 1e9)


def time_unit(span_ns: float) -> Unit:
    """Seconds for spans over 2 s, else milliseconds (time axes, not latencies)."""
    return Unit("s", 1e9) if span_ns > 2e9 else Unit("ms", 1e6)


def minmax_buckets(
    xs: Sequence[float], ys: Sequence[float], buckets: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per x-bucket (centre x, min y, max y, mean y): keeps spikes visible while cutting a
    million points to a few hundred. Linear time; xs need not be sorted."""
    if not xs:
        return [], [], [], []
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    x0, x1 = float(x.min()), float(x.max())
    span = (x1 - x0) or 1.0
    idx = np.minimum(((x - x0) / span * buckets).astype(int), buckets - 1)
    count = np.bincount(idx, minlength=buckets)
    total = np.bincount(idx, weights=y, minlength=buckets)
    lo = np.full(buckets, np.inf)
    hi = np.full(buckets, -np.inf)
    np.minimum.at(lo, idx, y)
    np.maximum.at(hi, idx, y)
    used = count > 0
    centres = x0 + (np.arange(buckets) + 0.5) / buckets * span
    return (
        centres[used].tolist(),
        lo[used].tolist(),
        hi[used].tolist(),
        (total[used] / count[used]).tolist(),
    )


def merge_spans(spans: Sequence[tuple[float, float]], min_gap: float) -> list[tuple[float, float]]:
    """Merge x-ranges closer than `min_gap` (about a pixel), so a million inference windows
    draw as a handful of rectangles. Expects spans sorted by start (as inferences are)."""
    merged: list[tuple[float, float]] = []
    for x0, x1 in spans:
        if merged and x0 - merged[-1][1] <= min_gap:
            if x1 > merged[-1][1]:
                merged[-1] = (merged[-1][0], x1)
        else:
            merged.append((x0, x1))
    return merged


# --- rendering ---------------------------------------------------------------------------


@contextlib.contextmanager
def _figure() -> Iterator[Figure]:
    with matplotlib.rc_context(_RC):
        yield Figure(figsize=SIZE, layout="constrained")


def _svg(fig: Figure, name: str, title: str, attrs: Mapping[str, str] | None = None) -> str:
    """The figure as one `<svg>` element: no XML prolog, no metadata, ids made unique."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue().decode("utf-8")
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    prefix = "p" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8] + "-"
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    if ids:
        pattern = re.compile(r'(\bid="|#)(' + "|".join(map(re.escape, ids)) + r')(?=["\)])')
        text = pattern.sub(lambda m: m.group(1) + prefix + m.group(2), text)
    extra = "".join(f' {key}="{esc(value)}"' for key, value in (attrs or {}).items())
    return text.replace("<svg ", f'<svg data-plot="{esc(name)}"{extra} role="img" ', 1).replace(
        ">", f"><title>{esc(title)}</title>", 1
    )


def empty_plot(name: str, title: str, message: str) -> str:
    """A placeholder with a reason, so the layout (and tests) still find the plot."""
    with _figure() as fig:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.5, message, ha="center", va="center", color="#777")
        return _svg(fig, name, title)


def _plain_ticks(ax: Axes, axis: str = "x") -> None:
    """Log-axis ticks at 1, 2, 5 × 10^k labelled as plain numbers (no 10^k formulas)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)


def _clip(values: Sequence[np.ndarray]) -> tuple[float, float, int]:
    """(low, high, samples hidden): high is the largest per-run p99.9 when the tail beyond
    it is long (CLIP_GAIN), else the maximum."""
    lo = min(float(v.min()) for v in values)
    top = max(float(v.max()) for v in values)
    cut = max(float(np.quantile(v, CLIP_QUANTILE, method="higher")) for v in values)
    if top > CLIP_GAIN * cut:
        return lo, cut, int(sum(int((v > cut).sum()) for v in values))
    return lo, top, 0


def _log_scale(lo: float, hi: float) -> bool:
    return lo > 0 and hi / lo > LOG_SPREAD


def histogram(
    name: str,
    title: str,
    datasets: Sequence[tuple[str, Sequence[float]]],
    unit: str,
    xlabel: str,
    bins: int = 40,
) -> str:
    """Overlaid histograms sharing bins, clipped at the p99.9 with the hidden tail counted,
    on a log axis when the runs span more than LOG_SPREAD."""
    arrays = [(label, np.asarray(v, dtype=float)) for label, v in datasets]
    arrays = [(label, v[np.isfinite(v)]) for label, v in arrays]
    arrays = [(label, v) for label, v in arrays if v.size]
    if not arrays:
        return empty_plot(name, title, "no samples")
    lo, hi, hidden = _clip([v for _, v in arrays])
    log = _log_scale(lo, hi)
    if hi <= lo:
        lo, hi = lo * 0.95 if lo else -0.5, hi * 1.05 if hi else 0.5
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    with _figure() as fig:
        ax = fig.add_subplot()
        for i, (label, values) in enumerate(arrays):
            shown = values[values <= hi]
            ax.hist(
                shown,
                bins=edges.tolist(),
                histtype="stepfilled",
                alpha=0.35,
                color=color(i),
                edgecolor=color(i),
                linewidth=1.2,
                label=f"{label} (n={shown.size})",
            )
        if log:
            ax.set_xscale("log")
            _plain_ticks(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("inferences")
        ax.set_title(title)
        if hidden:
            ax.text(
                0.99, 0.97, f"{hidden} samples above {hi:.4g} {unit} not shown",
                transform=ax.transAxes, ha="right", va="top", fontsize=8, color="#a33",
            )  # fmt: skip
        _legend(ax)
        return _svg(fig, name, title)


def cdf(
    name: str,
    title: str,
    datasets: Sequence[tuple[str, Sequence[float]]],
    xlabel: str,
    unit: str = "",
    points: int = 600,
) -> str:
    """Empirical CDFs as steps (big samples thinned to `points` quantiles), with the p50 and
    p99 marked; the x axis ends where the histogram's does (the p99.9 when the tail is long)
    and is logarithmic when the runs span more than LOG_SPREAD."""
    arrays = [(label, np.sort(np.asarray(v, dtype=float))) for label, v in datasets]
    arrays = [(label, v[np.isfinite(v)]) for label, v in arrays]
    arrays = [(label, v) for label, v in arrays if v.size]
    if not arrays:
        return empty_plot(name, title, "no samples")
    lo, hi, hidden = _clip([v for _, v in arrays])
    with _figure() as fig:
        ax = fig.add_subplot()
        for i, (label, values) in enumerate(arrays):
            n = values.size
            idx = np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(int))
            xs = np.concatenate(([values[0]], values[idx]))
            ys = np.concatenate(([0.0], (idx + 1) / n))
            ax.step(xs, ys, where="post", color=color(i), linewidth=1.5, label=label)
        for q in (0.5, 0.99):
            ax.axhline(q, color="#999", linewidth=0.8, linestyle=":")
            ax.text(1.0, q, f" p{q * 100:g}", transform=ax.get_yaxis_transform(), va="center")
        if _log_scale(lo, hi):
            ax.set_xscale("log")
            _plain_ticks(ax)
        if hidden:
            ax.set_xlim(right=hi)
            ax.text(
                0.99, 0.03, f"{hidden} samples above {hi:.4g} {unit} not shown",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="#a33",
            )  # fmt: skip
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of inferences ≤ x")
        ax.set_title(title)
        _legend(ax)
        return _svg(fig, name, title)


@dataclass(frozen=True)
class EnvLine:
    """A before → after figure for the right axis (temperature, CPU frequency)."""

    label: str
    axis_label: str
    before: float
    after: float
    color: str


def over_time(
    name: str,
    title: str,
    xs: Sequence[float],
    ys: Sequence[float],
    xlabel: str,
    ylabel: str,
    env: EnvLine | None = None,
    attrs: Mapping[str, str] | None = None,
    scatter_max: int = 3000,
) -> str:
    """Latency per inference against time: both axes from 0 (a latency is never negative),
    a min/max band plus mean above `scatter_max` points, temperature on the right axis."""
    if not xs:
        return empty_plot(name, title, "no samples")
    with _figure() as fig:
        ax = fig.add_subplot()
        if len(xs) > scatter_max:
            bx, lo, hi, mean = minmax_buckets(xs, ys, BUCKETS)
            ax.fill_between(bx, lo, hi, color=PALETTE[0], alpha=0.3, linewidth=0,
                            label="latency min–max")  # fmt: skip
            ax.plot(bx, mean, color=PALETTE[0], linewidth=1.2, label="latency mean")
        else:
            ax.scatter(xs, ys, s=4, color=PALETTE[0], alpha=0.6, linewidths=0, label="latency")
        ax.set_xlim(left=0, right=max(max(xs), 1e-12) * 1.01)
        ax.set_ylim(bottom=0, top=max(max(ys), 1e-12) * 1.08)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if env is not None:
            right = ax.twinx()
            right.grid(False)
            right.plot([0, max(xs)], [env.before, env.after], color=env.color,
                       linestyle="--", linewidth=1.4, label=env.label)  # fmt: skip
            right.set_ylabel(env.axis_label)
            spread = abs(env.after - env.before) or abs(env.before) * 0.05 or 1.0
            right.set_ylim(min(env.before, env.after) - spread, max(env.before, env.after) + spread)
            handles = ax.get_legend_handles_labels()
            extra = right.get_legend_handles_labels()
            ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper center",
                      bbox_to_anchor=(0.5, -0.2), ncols=2)  # fmt: skip
        else:
            _legend(ax)
        return _svg(fig, name, title, attrs)


def repetitions(
    name: str,
    title: str,
    medians: Sequence[float],
    estimate: float | None,
    ci: tuple[float, float] | None,
    ylabel: str,
    attrs: Mapping[str, str] | None = None,
) -> str:
    """Each repetition's median, the run's estimate and its CI: whether the repetitions
    agree (and so whether the CI can be trusted) is visible at a glance."""
    with _figure() as fig:
        ax = fig.add_subplot()
        index = list(range(1, len(medians) + 1))
        if ci is not None:
            ax.axhspan(ci[0], ci[1], color=PALETTE[0], alpha=0.15, label="95% CI of the run")
        if estimate is not None:
            ax.axhline(estimate, color=PALETTE[0], linewidth=1.2, label="run estimate")
        ax.plot(index, medians, "o", color=PALETTE[1], markersize=5, label="repetition median")
        ax.set_xticks(index if len(index) <= 20 else index[:: max(len(index) // 10, 1)])
        top = max([*medians, *(ci or ()), estimate or 0.0])
        ax.set_ylim(bottom=0, top=top * 1.1 or 1.0)
        ax.set_xlabel("repetition")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _legend(ax)
        return _svg(fig, name, title, attrs)


@dataclass(frozen=True)
class Window:
    """A shaded time range (the meter's idle and measure windows)."""

    label: str
    x0: float
    x1: float
    color: str


def power(
    name: str,
    title: str,
    t: Sequence[float],
    watts: Sequence[float],
    xlabel: str,
    windows: Sequence[Window] = (),
    busy: Sequence[tuple[float, float]] = (),
    idle_w: float | None = None,
    attrs: Mapping[str, str] | None = None,
) -> str:
    """Power over time from 0 W: min/max envelope plus mean when there are more samples than
    pixels, meter windows shaded, each inference as a dark strip along the bottom."""
    if not t:
        return empty_plot(name, title, "no power samples")
    with _figure() as fig:
        ax = fig.add_subplot()
        for i, window in enumerate(windows):
            seen = any(w.label == window.label for w in windows[:i])
            ax.axvspan(window.x0, window.x1, color=window.color, alpha=0.15, linewidth=0,
                       label=None if seen else window.label)  # fmt: skip
        pixel = (max(t) - min(t)) / BUCKETS or 1e-12
        for j, (x0, x1) in enumerate(merge_spans(busy, pixel)):
            ax.axvspan(x0, max(x1, x0 + pixel / 2), ymin=0, ymax=0.04, color="#222", alpha=0.6,
                       linewidth=0, label="inference running" if j == 0 else None)  # fmt: skip
        if len(t) > 2 * BUCKETS:
            bx, lo, hi, mean = minmax_buckets(t, watts, BUCKETS)
            ax.fill_between(bx, lo, hi, color=PALETTE[0], alpha=0.3, linewidth=0,
                            label="power min–max")  # fmt: skip
            ax.plot(bx, mean, color=PALETTE[0], linewidth=1.0, label="power mean")
        else:
            ax.plot(t, watts, color=PALETTE[0], linewidth=1.0, label="power")
        if idle_w is not None:
            ax.axhline(idle_w, color="#555", linestyle="--", linewidth=1.0, label="idle W")
        ax.set_ylim(bottom=0, top=max(max(watts), idle_w or 0.0) * 1.1 or 1.0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("power (W)")
        ax.set_title(title)
        _legend(ax)
        return _svg(fig, name, title, attrs)


@dataclass(frozen=True)
class Bar:
    """One bar: a value and an optional (lo, hi) confidence interval."""

    value: float | None
    ci: tuple[float, float] | None = None


def bar_chart(
    name: str,
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[Bar]]],
    ylabel: str,
) -> str:
    """Grouped bars with CI error bars (groups = runs, series = e.g. dynamic/total)."""
    values = [
        b.value
        for _, bars in series
        for b in bars
        if b.value is not None and math.isfinite(b.value)
    ]
    if not groups or not values:
        return empty_plot(name, title, "no data")
    width = 0.8 / max(len(series), 1)
    with _figure() as fig:
        ax = fig.add_subplot()
        for s_i, (label, bars) in enumerate(series):
            xs, heights, err_lo, err_hi = [], [], [], []
            for g, bar in enumerate(bars):
                if bar.value is None or not math.isfinite(bar.value):
                    continue
                xs.append(g - 0.4 + width * (s_i + 0.5))
                heights.append(bar.value)
                lo, hi = bar.ci or (bar.value, bar.value)
                err_lo.append(max(bar.value - lo, 0.0))
                err_hi.append(max(hi - bar.value, 0.0))
            ax.bar(xs, heights, width * 0.92, yerr=[err_lo, err_hi], capsize=4,
                   color=color(s_i), alpha=0.75, label=label)  # fmt: skip
        ax.set_xticks(range(len(groups)), list(groups))
        ax.set_ylim(bottom=0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _legend(ax)
        return _svg(fig, name, title)


def op_bars(name: str, title: str, labels: Sequence[str], values: Sequence[float]) -> str:
    """Horizontal bars, largest on top: where a profiled inference's time went by operator
    (ms per inference), with each bar's value written beside it."""
    shown = [(label, value) for label, value in zip(labels, values, strict=True)]
    shown = [(label, value) for label, value in shown if math.isfinite(value)]
    if not shown:
        return empty_plot(name, title, "no operators")
    with _figure() as fig:
        fig.set_figheight(max(SIZE[1], 0.28 * len(shown) + 1.0))
        ax = fig.add_subplot()
        ys = list(range(len(shown)))[::-1]
        ax.barh(ys, [v for _, v in shown], 0.7, color=color(0), alpha=0.75)
        ax.set_yticks(ys, [label[:40] for label, _ in shown])
        for y, (_, value) in zip(ys, shown, strict=True):
            ax.annotate(f" {value:.3g}", (value, y), va="center", fontsize=8)
        ax.set_xlim(left=0)
        ax.margins(x=0.15)
        ax.set_xlabel("ms per profiled inference")
        ax.set_title(title)
        return _svg(fig, name, title)


@dataclass(frozen=True)
class Point:
    """One point of a line: a value, its (lo, hi) interval, and a label written beside it."""

    value: float | None
    ci: tuple[float, float] | None = None
    label: str = ""


def cut_lines(
    name: str,
    title: str,
    xlabels: Sequence[str],
    series: Sequence[tuple[str, Sequence[Point]]],
    ylabel: str,
) -> str:
    """One line per series (a link) across categorical x positions (cut points), each
    point with its CI and its label (the codec) beside it; log y when the values span
    more than LOG_SPREAD (a BLE link and a device-only baseline are orders apart)."""
    values = [
        p.value for _, points in series for p in points if p.value is not None and p.value > 0
    ]
    if not xlabels or not values:
        return empty_plot(name, title, "no data")
    markers = "osD^v<>"
    with _figure() as fig:
        fig.set_figwidth(max(SIZE[0], 0.9 * len(xlabels) + 2.0))
        ax = fig.add_subplot()
        for s_i, (label, points) in enumerate(series):
            xs, ys, lo, hi = [], [], [], []
            for x, point in enumerate(points):
                if point.value is None or not math.isfinite(point.value):
                    continue
                xs.append(x)
                ys.append(point.value)
                low, high = point.ci or (point.value, point.value)
                lo.append(max(point.value - low, 0.0))
                hi.append(max(high - point.value, 0.0))
                if point.label:
                    ax.annotate(f" {point.label}", (x, point.value), fontsize=7,
                                color=color(s_i), va="bottom")  # fmt: skip
            ax.errorbar(xs, ys, yerr=[lo, hi], color=color(s_i), marker=markers[s_i % 7],
                        markersize=5, capsize=3, linewidth=1.2, label=label)  # fmt: skip
        if _log_scale(min(values), max(values)):
            ax.set_yscale("log")
            _plain_ticks(ax, "y")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xticks(range(len(xlabels)), [x[-28:] for x in xlabels], rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _side_legend(ax)
        return _svg(fig, name, title)


def _side_legend(ax: Axes) -> None:
    """Legend to the right of the axes: below them it would collide with the slanted
    cut-point names."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))


def stacked_bars(
    name: str,
    title: str,
    groups: Sequence[str],
    parts: Sequence[tuple[str, Sequence[float]]],
    ylabel: str,
    attrs: Mapping[str, str] | None = None,
) -> str:
    """One bar per group (a cut point) stacked from its parts in order (device, encode,
    link up, server, link down), so where an inference's time goes reads bottom to top."""
    if not groups or not any(v > 0 for _, values in parts for v in values):
        return empty_plot(name, title, "no data")
    with _figure() as fig:
        fig.set_figwidth(max(SIZE[0], 0.9 * len(groups) + 2.0))
        ax = fig.add_subplot()
        bottom = np.zeros(len(groups))
        for p_i, (label, values) in enumerate(parts):
            heights = np.asarray([v if math.isfinite(v) else 0.0 for v in values], dtype=float)
            ax.bar(range(len(groups)), heights, 0.6, bottom=bottom, color=color(p_i),
                   alpha=0.8, label=label)  # fmt: skip
            bottom += heights
        ax.set_xticks(range(len(groups)), [g[-28:] for g in groups], rotation=20, ha="right")
        ax.set_ylim(bottom=0, top=float(bottom.max()) * 1.08 or 1.0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _side_legend(ax)
        return _svg(fig, name, title, attrs)
