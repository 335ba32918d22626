"""A split run's figures from its journal (`split.jsonl`): per link, cut point and codec,
each part of an inference's path (device, encode, link up, server, link down, end to end)
as the repetitions tell it, the best cut per link, and the bandwidth where offloading
starts to pay. `edgetool split` writes them into summary.json; `results show`, `report`
and `trace` read them back. Reads files only."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgetool.results.stats import percentile, summarize_repetitions

SPLIT_JOURNAL = "split.jsonl"

DEVICE_ONLY = "device-only"
"""The cut name of the baseline that runs the whole model on the device."""
SERVER_ONLY = "server-only"
"""The cut name of the baseline that sends the model's input to the server."""

PARTS: tuple[tuple[str, str], ...] = (
    ("device", "device_ns"),
    ("encode", "encode_ns"),
    ("up", "up_ns"),
    ("server", "server_ns"),
    ("down", "down_ns"),
    ("e2e", "e2e_ns"),
)
"""(figure, journal key): the path of one inference, in the order it happens."""


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete record (a torn last line from a killed run is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def kind_of(cut: str) -> str:
    return cut if cut in (DEVICE_ONLY, SERVER_ONLY) else "split"


def route_groups(
    records: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
    """The journal's records per route: (link, cut, codec), in journal order."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        key = (str(record["link"]), str(record["cut"]), str(record["codec"]))
        groups.setdefault(key, []).append(record)
    return groups


def _figure(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """p50 (ms) of one part, with the run-level interval from per-repetition medians."""
    per_rep: dict[int, list[float]] = {}
    for record in records:
        per_rep.setdefault(int(record.get("rep", 0)), []).append(float(record[key]) / 1e6)
    medians = [percentile(sorted(v), 50.0) for _, v in sorted(per_rep.items())]
    everything = sorted(v for values in per_rep.values() for v in values)
    figure: dict[str, Any] = {"p50_ms": percentile(everything, 50.0), "ci": None}
    if all(m > 0 for m in medians):
        stats = summarize_repetitions(medians, "process")
        figure.update(estimate_ms=stats.estimate, ci=list(stats.ci) if stats.ci else None)
    else:  # a part that costs nothing here (no link on the device-only path)
        figure.update(estimate_ms=percentile(sorted(medians), 50.0))
    figure["reps"] = len(medians)
    return figure


def summarize(
    records: Sequence[Mapping[str, Any]], links: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """summary.json's `split` section. `links` holds each link's profile (rtt_ms and
    bits_per_second, None for the plain connection)."""
    rows = []
    for (link, cut, codec), group in route_groups(records).items():
        row: dict[str, Any] = {
            "link": link,
            "cut": cut,
            "codec": codec,
            "kind": kind_of(cut),
            "count": len(group),
            "bytes": int(percentile(sorted(float(r["bytes"]) for r in group), 50.0)),
            "reply_bytes": int(
                percentile(sorted(float(r.get("reply_bytes", 0)) for r in group), 50.0)
            ),
        }
        for name, key in PARTS:
            row[name] = _figure(group, key)
        rows.append(row)
    best = {}
    crossover = {}
    for link in sorted({row["link"] for row in rows}):
        mine = [row for row in rows if row["link"] == link]
        fastest = min(mine, key=lambda row: row["e2e"]["estimate_ms"])
        best[link] = {k: fastest[k] for k in ("cut", "codec", "kind")} | {"e2e": fastest["e2e"]}
        crossover[link] = crossover_bandwidth(mine, links.get(link, {}))
    return {"rows": rows, "best": best, "crossover": crossover}


def crossover_bandwidth(
    rows: Sequence[Mapping[str, Any]], link: Mapping[str, Any]
) -> dict[str, Any]:
    """The lowest bandwidth at which some offloading row beats running on the device.

    A model, not a measurement: each row's end-to-end time is its measured compute
    (device + encode + server) plus the link's RTT plus its bytes (both ways) over the
    bandwidth; offloading pays when that is below the measured device-only time."""
    device = [row for row in rows if row["kind"] == DEVICE_ONLY]
    if not device:
        return {"bits_per_second": None, "reason": "no device-only baseline in this run"}
    device_ms = float(device[0]["e2e"]["estimate_ms"])
    rtt_ms = float(link.get("rtt_ms") or 0.0)
    best: dict[str, Any] | None = None
    for row in rows:
        if row["kind"] == DEVICE_ONLY:
            continue
        compute_ms = sum(float(row[p]["estimate_ms"]) for p in ("device", "encode", "server"))
        slack_ms = device_ms - compute_ms - rtt_ms
        if slack_ms <= 0:
            continue
        bits = 8.0 * (int(row["bytes"]) + int(row["reply_bytes"]))
        bps = bits / (slack_ms / 1e3)
        if best is None or bps < best["bits_per_second"]:
            best = {"bits_per_second": bps, "cut": row["cut"], "codec": row["codec"]}
    if best is None:
        return {
            "bits_per_second": None,
            "reason": f"no offloading path computes in less than device-only "
            f"({device_ms:.3g} ms) minus the RTT ({rtt_ms:g} ms): it never pays here",
        }
    best.update(device_only_ms=device_ms, rtt_ms=rtt_ms)
    return best


def energy_text(energy: Mapping[str, Any] | None, missing: str) -> str:
    """`4.1 [3.9, 4.3]`: a route's mean device energy per inference (mJ) and its interval."""
    if not energy:
        return missing
    total = energy["total_mj"]
    ci = total.get("ci")
    return f"{total['mean']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")


def rate_text(bits_per_second: float | None) -> str:
    if bits_per_second is None or not math.isfinite(bits_per_second):
        return "never"
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:.3g} {unit}"
    return f"{bits_per_second:.3g} bit/s"


def timeline(
    records: Sequence[Mapping[str, Any]],
) -> Iterator[tuple[Mapping[str, Any], list[tuple[str, int, int]]]]:
    """Each inference with its parts as (part, start ns, duration ns) on the host's
    clock from its `t0_ns`: device, encode, up, server, down laid end to end."""
    for record in records:
        start = int(record.get("t0_ns", 0))
        parts = []
        for name, key in PARTS[:-1]:
            duration = int(record.get(key, 0))
            if duration > 0:
                parts.append((name, start, duration))
            start += duration
        yield record, parts
