"""Tiny SVG plots for the HTML report: no plotting library, no JavaScript, no network.

Each function returns one `<svg data-plot="NAME">` element as text, so the report stays a
single self-contained file that any browser renders. All text passes through `esc` because
run ids and model names are user input. Callers downsample large series first
(`minmax_buckets`): a plot never needs more points than it has pixels.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

WIDTH = 660
HEIGHT = 340
MARGIN_L = 64
MARGIN_R = 64
MARGIN_T = 34
MARGIN_B = 84
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def esc(text: object) -> str:
    """HTML/SVG-escape any text (quotes included: it also goes into attributes)."""
    return html.escape(str(text), quote=True)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks: list[float] = []
    for k in range(50):
        value = first + k * step
        ticks.append(round(value, 12))
        if value >= hi - step * 1e-9:
            break
    return ticks


def fmt_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.6g}"


def minmax_buckets(
    xs: Sequence[float], ys: Sequence[float], buckets: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per x-bucket (centre x, min y, max y, mean y): keeps spikes visible while cutting a
    million points to a few hundred. Linear time; xs need not be sorted."""
    if not xs:
        return [], [], [], []
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1.0
    lo: list[float] = [math.inf] * buckets
    hi: list[float] = [-math.inf] * buckets
    total = [0.0] * buckets
    count = [0] * buckets
    for x, y in zip(xs, ys, strict=True):
        b = min(int((x - x0) / span * buckets), buckets - 1)
        lo[b] = min(lo[b], y)
        hi[b] = max(hi[b], y)
        total[b] += y
        count[b] += 1
    out_x, out_lo, out_hi, out_mean = [], [], [], []
    for b in range(buckets):
        if count[b]:
            out_x.append(x0 + (b + 0.5) / buckets * span)
            out_lo.append(lo[b])
            out_hi.append(hi[b])
            out_mean.append(total[b] / count[b])
    return out_x, out_lo, out_hi, out_mean


@dataclass
class Series:
    """One thing to draw on an x/y plot.

    kind: "line", "step" (post), "scatter", or "band" (fill between ys and ys_hi).
    axis: "left" or "right" (the second y axis)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    kind: Literal["line", "step", "scatter", "band"] = "line"
    axis: Literal["left", "right"] = "left"
    color: str | None = None
    ys_hi: Sequence[float] = field(default_factory=list)
    dashed: bool = False


@dataclass
class Shade:
    """A shaded x-range (meter windows, inference activity)."""

    x0: float
    x1: float
    color: str
    opacity: float = 0.15
    label: str | None = None
    y_frac: tuple[float, float] = (0.0, 1.0)
    """Vertical extent as a fraction of the plot height (0 = bottom)."""


class _Frame:
    """Maps data to pixels and draws axes; shared by every plot type."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.left, self.top = MARGIN_L, MARGIN_T
        self.width = WIDTH - MARGIN_L - MARGIN_R
        self.height = HEIGHT - MARGIN_T - MARGIN_B
        self.xticks = nice_ticks(*x_range)
        self.yticks = nice_ticks(*y_range)
        self.x0, self.x1 = _span(x_range, self.xticks)
        self.y0, self.y1 = _span(y_range, self.yticks)

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / ((self.x1 - self.x0) or 1.0) * self.width

    def py(self, y: float, axis: tuple[float, float] | None = None) -> float:
        y0, y1 = axis or (self.y0, self.y1)
        return self.top + self.height - (y - y0) / ((y1 - y0) or 1.0) * self.height


def _span(data: tuple[float, float], ticks: list[float]) -> tuple[float, float]:
    lo = min(data[0], ticks[0]) if ticks else data[0]
    hi = max(data[1], ticks[-1]) if ticks else data[1]
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _open(name: str, title: str, extra: str = "") -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" data-plot="{esc(name)}" {extra}'
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'style="{FONT};font-size:12px;background:#fff">',
        f"<title>{esc(title)}</title>",
        f'<text x="{WIDTH / 2:.1f}" y="20" text-anchor="middle" font-size="14" '
        f'font-weight="600">{esc(title)}</text>',
    ]


def _axes(
    frame: _Frame,
    xlabel: str,
    ylabel: str,
    y2: tuple[float, float, list[float]] | None = None,
    y2label: str = "",
    xtick_labels: list[tuple[float, str]] | None = None,
) -> list[str]:
    out = []
    bottom = frame.top + frame.height
    right = frame.left + frame.width
    for t in frame.yticks:
        y = frame.py(t)
        if frame.top - 0.5 <= y <= bottom + 0.5:
            out.append(
                f'<line x1="{frame.left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
                f'stroke="#e6e6e6"/>'
                f'<text x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{esc(fmt_tick(t))}</text>"
            )
    labels = xtick_labels or [(t, fmt_tick(t)) for t in frame.xticks]
    for t, label in labels:
        x = frame.px(t)
        if frame.left - 0.5 <= x <= right + 0.5:
            out.append(
                f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="#333"/>'
                f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{esc(label)}</text>'
            )
    out.append(
        f'<rect x="{frame.left}" y="{frame.top}" width="{frame.width}" height="{frame.height}" '
        f'fill="none" stroke="#333"/>'
        f'<text x="{frame.left + frame.width / 2:.1f}" y="{bottom + 38}" text-anchor="middle">'
        f"{esc(xlabel)}</text>"
        f'<text transform="translate(16 {frame.top + frame.height / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{esc(ylabel)}</text>'
    )
    if y2 is not None:
        lo, hi, ticks = y2
        for t in ticks:
            y = frame.py(t, (lo, hi))
            if frame.top - 0.5 <= y <= bottom + 0.5:
                out.append(
                    f'<text x="{right + 6}" y="{y + 4:.1f}" text-anchor="start">'
                    f"{esc(fmt_tick(t))}</text>"
                )
        out.append(
            f'<text transform="translate({WIDTH - 14} {frame.top + frame.height / 2:.1f}) '
            f'rotate(90)" text-anchor="middle">{esc(y2label)}</text>'
        )
    return out


def _legend(entries: list[tuple[str, str, bool]]) -> list[str]:
    """(label, colour, is_fill) in up to two rows under the x label (wraps, then clips)."""
    out = []
    x = MARGIN_L
    row = 0
    for label, col, fill in entries:
        short = label if len(label) <= 50 else label[:47] + "…"
        width = 30 + int(len(short) * 7.0)
        if x + width > WIDTH and x > MARGIN_L:
            row += 1
            x = MARGIN_L
        if row > 1:
            break
        y = HEIGHT - 20 + row * 15
        if fill:
            out.append(
                f'<rect x="{x}" y="{y - 9}" width="14" height="10" fill="{esc(col)}" '
                f'fill-opacity="0.35" stroke="{esc(col)}"/>'
            )
        else:
            out.append(
                f'<line x1="{x}" y1="{y - 4}" x2="{x + 14}" y2="{y - 4}" stroke="{esc(col)}" '
                f'stroke-width="2.5"/>'
            )
        out.append(f'<text x="{x + 18}" y="{y}">{esc(short)}</text>')
        x += width
    return out


def _path(points: list[tuple[float, float]]) -> str:
    return "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in points)


def empty_plot(name: str, title: str, message: str) -> str:
    """A placeholder with a reason, so the layout (and tests) still find the plot."""
    out = _open(name, title)
    out.append(
        f'<text x="{WIDTH / 2:.1f}" y="{HEIGHT / 2:.1f}" text-anchor="middle" fill="#777">'
        f"{esc(message)}</text></svg>"
    )
    return "".join(out)


def xy_plot(
    name: str,
    title: str,
    series: Sequence[Series],
    xlabel: str,
    ylabel: str,
    y2label: str = "",
    shades: Sequence[Shade] = (),
    y_from_zero: bool = False,
    extra_attrs: str = "",
    y_range: tuple[float, float] | None = None,
) -> str:
    """Lines, steps, scatter and bands over a shared x axis, with an optional right axis."""
    left = [s for s in series if s.axis == "left"]
    right = [s for s in series if s.axis == "right"]
    xs = _finite([x for s in series for x in s.xs] + [v for sh in shades for v in (sh.x0, sh.x1)])
    ly = _finite([y for s in left for y in (*s.ys, *s.ys_hi)])
    if not xs or not ly:
        return empty_plot(name, title, "no data")
    y_lo = 0.0 if y_from_zero else min(ly)
    y_hi = max(ly)
    pad = (y_hi - y_lo) * 0.05 or abs(y_hi) * 0.05 or 1.0
    frame = _Frame((min(xs), max(xs)), y_range or (y_lo if y_from_zero else y_lo - pad, y_hi + pad))
    y2: tuple[float, float, list[float]] | None = None
    if right:
        ry = _finite([y for s in right for y in (*s.ys, *s.ys_hi)])
        if ry:
            r_pad = (max(ry) - min(ry)) * 0.1 or abs(max(ry)) * 0.05 or 1.0
            ticks = nice_ticks(min(ry) - r_pad, max(ry) + r_pad)
            y2 = (ticks[0], ticks[-1], ticks)
    out = _open(name, title, extra_attrs)
    out.append(
        f'<clipPath id="clip-{esc(name)}"><rect x="{frame.left}" y="{frame.top}" '
        f'width="{frame.width}" height="{frame.height}"/></clipPath>'
    )
    out.extend(_axes(frame, xlabel, ylabel, y2, y2label))
    out.append(f'<g clip-path="url(#clip-{esc(name)})">')
    for sh in shades:
        x0, x1 = frame.px(sh.x0), frame.px(sh.x1)
        top = frame.top + frame.height * (1 - sh.y_frac[1])
        h = frame.height * (sh.y_frac[1] - sh.y_frac[0])
        out.append(
            f'<rect x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0, 0.8):.1f}" height="{h:.1f}" '
            f'fill="{esc(sh.color)}" fill-opacity="{sh.opacity}"/>'
        )
    legend: list[tuple[str, str, bool]] = []
    seen_shades: set[str] = set()
    for sh in shades:
        if sh.label and sh.label not in seen_shades:
            seen_shades.add(sh.label)
            legend.append((sh.label, sh.color, True))
    for i, s in enumerate(series):
        col = s.color or color(i)
        axis = (y2[0], y2[1]) if (s.axis == "right" and y2) else None
        pts = [
            (frame.px(x), frame.py(y, axis))
            for x, y in zip(s.xs, s.ys, strict=False)
            if math.isfinite(x) and math.isfinite(y)
        ]
        if not pts:
            continue
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        if s.kind == "band":
            upper = [(frame.px(x), frame.py(y, axis)) for x, y in zip(s.xs, s.ys_hi, strict=False)]
            poly = pts + upper[::-1]
            out.append(
                f'<path d="{_path(poly)}Z" fill="{esc(col)}" fill-opacity="0.3" '
                f'stroke="{esc(col)}" stroke-width="0.6"/>'
            )
            legend.append((s.label, col, True))
            continue
        if s.kind == "scatter":
            out.append(f'<g fill="{esc(col)}" fill-opacity="0.6">')
            out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.8"/>' for x, y in pts)
            out.append("</g>")
        else:
            if s.kind == "step":
                stepped: list[tuple[float, float]] = []
                for j, (x, y) in enumerate(pts):
                    if j:
                        stepped.append((x, stepped[-1][1]))
                    stepped.append((x, y))
                pts = stepped
            out.append(
                f'<path d="{_path(pts)}" fill="none" stroke="{esc(col)}" stroke-width="1.6"{dash}/>'
            )
        legend.append((s.label, col, False))
    out.append("</g>")
    out.extend(_legend(legend))
    out.append("</svg>")
    return "".join(out)


def histogram(
    name: str,
    title: str,
    datasets: Sequence[tuple[str, Sequence[float]]],
    xlabel: str,
    bins: int = 40,
    x_range: tuple[float, float] | None = None,
) -> str:
    """Overlaid histograms (outlined, translucent) sharing bins, so runs compare directly."""
    values = [v for _, vs in datasets for v in _finite(vs)]
    if not values:
        return empty_plot(name, title, "no samples")
    lo, hi = x_range or (min(values), max(values))
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    width = (hi - lo) / bins
    counts: list[list[int]] = []
    for _, vs in datasets:
        c = [0] * bins
        for v in vs:
            if lo <= v <= hi:
                c[min(int((v - lo) / width), bins - 1)] += 1
        counts.append(c)
    top = max(max(c) for c in counts) or 1
    frame = _Frame((lo, hi), (0.0, top * 1.05))
    out = _open(name, title)
    out.extend(_axes(frame, xlabel, "count"))
    legend = []
    for i, ((label, _), c) in enumerate(zip(datasets, counts, strict=True)):
        col = color(i)
        pts: list[tuple[float, float]] = [(frame.px(lo), frame.py(0))]
        for b, n in enumerate(c):
            pts.append((frame.px(lo + b * width), frame.py(n)))
            pts.append((frame.px(lo + (b + 1) * width), frame.py(n)))
        pts.append((frame.px(hi), frame.py(0)))
        out.append(
            f'<path d="{_path(pts)}Z" fill="{esc(col)}" fill-opacity="0.3" '
            f'stroke="{esc(col)}" stroke-width="1.4"/>'
        )
        legend.append((f"{label} (n={sum(c)})", col, True))
    out.extend(_legend(legend))
    out.append("</svg>")
    return "".join(out)


def cdf(
    name: str,
    title: str,
    datasets: Sequence[tuple[str, Sequence[float]]],
    xlabel: str,
    points: int = 600,
) -> str:
    """Empirical CDFs as step lines; big samples are thinned to `points` quantiles."""
    series = []
    for i, (label, vs) in enumerate(datasets):
        values = sorted(_finite(vs))
        n = len(values)
        if not n:
            continue
        idx = (
            range(n)
            if n <= points
            else sorted({round(k * (n - 1) / (points - 1)) for k in range(points)})
        )
        xs = [values[k] for k in idx]
        ys = [(k + 1) / n for k in idx]
        series.append(Series(label, [xs[0], *xs], [0.0, *ys], kind="step", color=color(i)))
    if not series:
        return empty_plot(name, title, "no samples")
    return xy_plot(name, title, series, xlabel, "fraction of inferences ≤ x", y_range=(0, 1))


@dataclass
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
    values = _finite(
        [b.value for _, bars in series for b in bars if b.value is not None]
        + [b.ci[1] for _, bars in series for b in bars if b.ci]
    )
    if not groups or not values:
        return empty_plot(name, title, "no data")
    frame = _Frame((0.0, float(len(groups))), (0.0, max(values) * 1.1 or 1.0))
    frame.x0, frame.x1 = 0.0, float(len(groups))
    chars = max(int(WIDTH / len(groups) / 7), 4)
    labels = [
        (g + 0.5, text if len(text) <= chars else text[: chars - 1] + "…")
        for g, text in enumerate(groups)
    ]
    out = _open(name, title)
    out.extend(_axes(frame, "run", ylabel, xtick_labels=labels))
    slot = frame.width / len(groups)
    bar_w = slot * 0.7 / max(len(series), 1)
    legend = []
    for s_i, (label, bars) in enumerate(series):
        col = color(s_i)
        legend.append((label, col, True))
        for g, bar in enumerate(bars):
            if bar.value is None or not math.isfinite(bar.value):
                continue
            x = frame.left + g * slot + slot * 0.15 + s_i * bar_w
            y = frame.py(bar.value)
            tip = f"{groups[g]}: {label} {bar.value:.4g}"
            if bar.ci:
                tip += f" [{bar.ci[0]:.4g}, {bar.ci[1]:.4g}]"
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.92:.1f}" '
                f'height="{frame.py(0) - y:.1f}" fill="{esc(col)}" fill-opacity="0.7">'
                f"<title>{esc(tip)}</title></rect>"
            )
            if bar.ci:
                cx = x + bar_w * 0.46
                y_lo, y_hi = frame.py(bar.ci[0]), frame.py(bar.ci[1])
                out.append(
                    f'<path d="M{cx:.1f},{y_lo:.1f}V{y_hi:.1f}M{cx - 5:.1f},{y_lo:.1f}'
                    f'H{cx + 5:.1f}M{cx - 5:.1f},{y_hi:.1f}H{cx + 5:.1f}" '
                    f'stroke="#222" stroke-width="1.3" fill="none"/>'
                )
    out.extend(_legend(legend))
    out.append("</svg>")
    return "".join(out)


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


def power_plot(
    name: str,
    title: str,
    t: Sequence[float],
    watts: Sequence[float],
    xlabel: str,
    windows: Sequence[Shade] = (),
    busy: Sequence[tuple[float, float]] = (),
    idle_w: float | None = None,
    buckets: int = 600,
) -> str:
    """Power over time: min/max envelope plus mean when there are more samples than pixels,
    meter windows shaded, inference activity as a strip along the bottom."""
    series: list[Series] = []
    if len(t) > 2 * buckets:
        bx, lo, hi, mean = minmax_buckets(t, watts, buckets)
        series.append(Series("power min–max", bx, lo, kind="band", ys_hi=hi, color=PALETTE[0]))
        series.append(Series("power mean", bx, mean, color=PALETTE[0]))
    else:
        series.append(Series("power", t, watts, color=PALETTE[0]))
    if idle_w is not None and t:
        series.append(
            Series("idle W", [min(t), max(t)], [idle_w, idle_w], color="#555", dashed=True)
        )
    pixel = ((max(t) - min(t)) if t else 1.0) / buckets
    strip = [
        Shade(x0, x1, "#222", 0.55, "inference running", (0.0, 0.035))
        for x0, x1 in merge_spans(busy, pixel)
    ]
    return xy_plot(
        name, title, series, xlabel, "power (W)", shades=[*windows, *strip], y_from_zero=True
    )
