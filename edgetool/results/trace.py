"""A run as a Chrome/Perfetto trace (trace-event JSON Object Format).

Open the file in https://ui.perfetto.dev (or chrome://tracing): one process per run, a
"device" track with one slice per inference, the power meter as a counter mapped onto the
device timeline, the meter's idle/measure windows on their own track, log lines as instant
events and temperature/frequency as counters. A run with a per-operator profile has one
more track: each profiled inference of its profiling pass (not a timed inference) with
onnxruntime's `model_run` and one nested slice per node inside it. Everything is on the
device clock, in µs from the first event, so inferences and power line up without the
reader doing clock maths.

A split run (`edgetool split`) is traced from its journal instead: one process per link
with the device, encode, link and server parts of each inference on their own tracks, on
the host's clock from each inference's start (see `iter_split_events`).

Events are generated one at a time so `write_trace` stays linear in time and writes a run
of a million inferences without holding the whole JSON text in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from edgetool.errors import ResultsError
from edgetool.events import PowerSample
from edgetool.files import write_text_atomic
from edgetool.results.manifest import RunManifest
from edgetool.results.op_profile import OpProfile, read_op_profile
from edgetool.results.split import SPLIT_JOURNAL, read_journal, timeline
from edgetool.results.store import Run

PID = 1
DEVICE_TID = 1
METER_TID = 2
LOG_TID = 3
PROFILE_TID = 4


def model_label(manifest: RunManifest) -> str:
    """The model as a person names it: recipe name if known, else the artifact file name."""
    artifact = manifest.artifact_info
    return artifact.model or artifact.name or "model"


def target_label(manifest: RunManifest) -> str:
    return manifest.target_info.name or "target"


def is_emulated(manifest: RunManifest) -> bool:
    return bool(manifest.target_info.emulated)


def inference_starts(run: Run) -> list[int]:
    """Device-clock start of each inference. Older runs without start times are laid back
    to back from their durations, from the start of the meter's measure window when there
    is one (that window is the inferences' span), else from 0: the best the data allows."""
    if run.starts_ns is not None and len(run.starts_ns) == len(run.samples_ns):
        return list(run.starts_ns)
    starts: list[int] = []
    measure = [t0 for name, t0, _ in meter_windows(run.manifest) if name == "measure"]
    t = measure[0] if measure else 0
    for ns in run.samples_ns:
        starts.append(t)
        t += ns
    return starts


def power_offset_ns(manifest: RunManifest) -> int:
    """Meter time = device time + offset (0 when the run has no alignment)."""
    alignment = manifest.power_info.alignment
    return int(alignment.offset_ns or 0) if alignment is not None else 0


def _window(value: Any) -> tuple[int, int] | None:
    try:
        t0, t1 = int(value[0]), int(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return (t0, t1) if t1 >= t0 else None


def meter_windows(manifest: RunManifest) -> list[tuple[str, int, int]]:
    """(name, t0, t1) of the idle and measure windows on the device clock."""
    power = manifest.power_info
    offset = power_offset_ns(manifest)
    out: list[tuple[str, int, int]] = []
    for value, name in ((power.idle_window, "idle"), (power.measure_window, "measure")):
        window = _window(value)
        if window is not None:
            out.append((name, window[0] - offset, window[1] - offset))
    return out


def log_lines(manifest: RunManifest) -> list[tuple[int, str]]:
    """(device ns, text) of the runner's log lines, if the manifest has any."""
    out: list[tuple[int, str]] = []
    for entry in manifest.logs or []:
        try:
            out.append((int(entry["t_ns"]), str(entry["text"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def time_origin_ns(run: Run, starts: list[int]) -> int:
    """The earliest device-clock instant anything in the trace happens (linear scan)."""
    offset = power_offset_ns(run.manifest)
    candidates: list[int] = []
    if starts:
        candidates.append(min(starts))
    if run.power:
        candidates.append(min(s.t_ns for s in run.power) - offset)
    candidates.extend(t0 for _, t0, _ in meter_windows(run.manifest))
    candidates.extend(t for t, _ in log_lines(run.manifest))
    return min(candidates) if candidates else 0


MAX_POWER_EVENTS = 400_000
"""Above this, power counters are thinned to the min and max sample per time bucket: a
10 kHz meter over a long run is tens of millions of samples, more than the Perfetto UI
loads, and min/max per bucket keeps every spike visible."""


def thin_power(samples: Sequence[PowerSample], limit: int = MAX_POWER_EVENTS) -> list[PowerSample]:
    """At most about `limit` samples: the lowest and highest of each time bucket, in time
    order (linear time; samples are assumed sorted by time, as meters deliver them)."""
    if len(samples) <= limit:
        return list(samples)
    buckets = max(limit // 2, 1)
    t0, t1 = samples[0].t_ns, samples[-1].t_ns
    span = max(t1 - t0, 1)
    out: list[PowerSample] = []
    current = -1
    low: PowerSample | None = None
    high: PowerSample | None = None
    for sample in samples:
        bucket = min((sample.t_ns - t0) * buckets // span, buckets - 1)
        if bucket != current:
            if low is not None and high is not None:
                out.extend(sorted({id(low): low, id(high): high}.values(), key=_t))
            current, low, high = bucket, sample, sample
        else:
            assert low is not None and high is not None
            if sample.watts < low.watts:
                low = sample
            if sample.watts > high.watts:
                high = sample
    if low is not None and high is not None:
        out.extend(sorted({id(low): low, id(high): high}.values(), key=_t))
    return out


def _t(sample: PowerSample) -> int:
    return sample.t_ns


def _us(ns: int) -> float:
    return ns / 1000.0


def _env_counters(
    manifest: RunManifest, first_us: float, last_us: float
) -> Iterator[dict[str, Any]]:
    """Temperature and mean CPU frequency before (at the trace start) and after (at its end):
    the environment probes are snapshots, not a series, so two points is all there is."""
    for snapshot, ts in ((manifest.env_before, first_us), (manifest.env_after, last_us)):
        env = snapshot or {}
        temp = env.get("temp_c")
        if isinstance(temp, (int, float)):
            yield {
                "ph": "C",
                "name": "temperature (°C)",
                "pid": PID,
                "ts": ts,
                "args": {"°C": float(temp)},
            }
        freqs = env.get("freq_khz")
        if isinstance(freqs, list):
            values = {
                f"cpu{i}": v / 1000.0 for i, v in enumerate(freqs) if isinstance(v, (int, float))
            }
            if values:
                yield {"ph": "C", "name": "cpu freq (MHz)", "pid": PID, "ts": ts, "args": values}


def _profile(run: Run) -> OpProfile | None:
    """The run's profile if it has node slices to draw; a damaged file draws nothing (the
    rest of the trace is still worth having)."""
    try:
        profile = read_op_profile(run.dir)
    except ResultsError:
        return None
    return profile if profile is not None and profile.slices else None


def _profile_events(profile: OpProfile, origin: int) -> Iterator[dict[str, Any]]:
    """Each profiled inference as a slice, onnxruntime's `model_run` inside it (placed at
    the call's start: the binding's few µs before it are not located), and every node
    inside that at its offset, clamped to its parent so viewers nest it."""
    for inference in profile.slices:
        if inference.start_ns is None:
            continue
        ts = _us(inference.start_ns - origin)
        call_us = _us(inference.dur_ns) if inference.dur_ns is not None else None
        model_us = inference.model_us
        outer = call_us if call_us is not None else model_us or 0.0
        yield {
            "ph": "X",
            "name": "profiled inference",
            "cat": "op_profile",
            "pid": PID,
            "tid": PROFILE_TID,
            "ts": ts,
            "dur": outer,
            "args": {"index": inference.index, "note": profile.note},
        }
        parent = min(model_us, outer) if model_us is not None else outer
        if model_us is not None:
            yield {
                "ph": "X",
                "name": "model_run",
                "cat": "op_profile",
                "pid": PID,
                "tid": PROFILE_TID,
                "ts": ts,
                "dur": parent,
                "args": {"model_us": model_us},
            }
        for node_index, offset_us, dur_us in inference.nodes:
            if not 0 <= node_index < len(profile.nodes):
                continue
            node = profile.nodes[node_index]
            start = min(max(offset_us, 0.0), parent)
            yield {
                "ph": "X",
                "name": node.label,
                "cat": node.op_type,
                "pid": PID,
                "tid": PROFILE_TID,
                "ts": ts + start,
                "dur": max(min(dur_us, parent - start), 0.0),
                "args": {"op_type": node.op_type, "provider": node.provider, "us": dur_us},
            }


SPLIT_TRACKS: tuple[tuple[str, str], ...] = (
    ("inference", "inference (end to end)"),
    ("device", "device (head)"),
    ("encode", "encode"),
    ("up", "link up"),
    ("server", "server (tail)"),
    ("down", "link down"),
)
"""(part, track name) of a split run, in the order an inference goes through them; the
first track spans each whole inference, labelled with its cut and codec."""

SPLIT_CLOCK = (
    "host clock (perf_counter) from each inference's start; device and server parts are "
    "timed on their own clocks and placed end to end on it, the link parts are host-timed"
)


def _split_records(run: Run) -> list[dict[str, Any]]:
    return read_journal(run.dir / SPLIT_JOURNAL)


def _route(record: Mapping[str, Any]) -> str:
    return f"{record.get('cut')} · {record.get('codec')}"


def iter_split_events(run: Run) -> Iterator[dict[str, Any]]:
    """A split run's inferences: one process per link (the links are measured one after
    another, so each gets its own stretch of the timeline and a group to fold), one track
    per part, and a slice per part of each inference named by its cut and codec.

    Per link rather than per link and route: a run tries every cut with every codec, and
    tens of processes of five tracks each bury the comparison a reader makes when they
    scroll along one link's tracks from route to route."""
    records = _split_records(run)
    links = list(dict.fromkeys(str(r.get("link")) for r in records))
    pids = {link: PID + i for i, link in enumerate(links)}
    model = model_label(run.manifest)
    for link, pid in pids.items():
        yield {"ph": "M", "name": "process_name", "pid": pid,
               "args": {"name": f"link {link} · {model}"}}  # fmt: skip
        yield {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}}
        yield {"ph": "M", "name": "process_labels", "pid": pid, "args": {"labels": run.run_id}}
        for tid, (_, thread) in enumerate(SPLIT_TRACKS, start=1):
            yield {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                   "args": {"name": thread}}  # fmt: skip
            yield {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                   "args": {"sort_index": tid}}  # fmt: skip
    tids = {part: tid for tid, (part, _) in enumerate(SPLIT_TRACKS, start=1)}
    origin = min((int(r.get("t0_ns", 0)) for r in records), default=0)
    for record, parts in timeline(records):
        pid = pids[str(record.get("link"))]
        name = _route(record)
        common = {
            "cut": record.get("cut"),
            "codec": record.get("codec"),
            "rep": record.get("rep"),
            "i": record.get("i"),
        }
        start = int(record.get("t0_ns", 0))
        total = sum(duration for _, _, duration in parts)
        yield {
            "ph": "X",
            "name": name,
            "cat": "split",
            "pid": pid,
            "tid": tids["inference"],
            "ts": _us(start - origin),
            "dur": _us(total),
            "args": {
                **common,
                "bytes": record.get("bytes"),
                "reply_bytes": record.get("reply_bytes"),
                "e2e_ms": int(record.get("e2e_ns", total)) / 1e6,
            },
        }
        for part, t, duration in parts:
            args = dict(common)
            if part in ("encode", "up"):
                args["bytes"] = record.get("bytes")
            elif part == "down":
                args["bytes"] = record.get("reply_bytes")
            args["ms"] = duration / 1e6
            yield {
                "ph": "X",
                "name": name,
                "cat": part,
                "pid": pid,
                "tid": tids[part],
                "ts": _us(t - origin),
                "dur": _us(duration),
                "args": args,
            }


def iter_trace_events(run: Run) -> Iterator[dict[str, Any]]:
    """Every trace event of the run, metadata first, in one linear pass per series."""
    manifest = run.manifest
    if manifest.split is not None:
        yield from iter_split_events(run)
        return
    emulated = is_emulated(manifest)
    clock = "emulated device clock" if emulated else "device clock"
    starts = inference_starts(run)
    origin = time_origin_ns(run, starts)
    offset = power_offset_ns(manifest)
    name = f"{target_label(manifest)} · {model_label(manifest)}"
    if emulated:
        name += " (emulated)"
    yield {"ph": "M", "name": "process_name", "pid": PID, "args": {"name": name}}
    yield {"ph": "M", "name": "process_labels", "pid": PID, "args": {"labels": run.run_id}}
    profile = _profile(run)
    tracks = [
        (DEVICE_TID, f"device ({clock})"),
        (METER_TID, "meter" + (" (emulated time)" if emulated else "")),
        (LOG_TID, "logs"),
    ]
    if profile is not None:
        tracks.append((PROFILE_TID, "op profile (profiling pass, not timed inferences)"))
    for tid, thread in tracks:
        yield {"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": thread}}
        yield {
            "ph": "M",
            "name": "thread_sort_index",
            "pid": PID,
            "tid": tid,
            "args": {"sort_index": tid},
        }

    first_us, last_us = 0.0, 0.0
    for index, (start, ns) in enumerate(zip(starts, run.samples_ns, strict=True)):
        ts = _us(start - origin)
        yield {
            "ph": "X",
            "name": "inference",
            "cat": "inference",
            "pid": PID,
            "tid": DEVICE_TID,
            "ts": ts,
            "dur": _us(ns),
            "args": {"index": index, "latency_ms": ns / 1e6},
        }
        last_us = max(last_us, ts + _us(ns))

    if profile is not None:
        for event in _profile_events(profile, origin):
            yield event
            last_us = max(last_us, event["ts"] + event["dur"])

    for window_name, t0, t1 in meter_windows(manifest):
        yield {
            "ph": "X",
            "name": f"{window_name} window",
            "cat": "meter",
            "pid": PID,
            "tid": METER_TID,
            "ts": _us(t0 - origin),
            "dur": _us(t1 - t0),
            "args": {"meter_t0_ns": t0 + offset, "meter_t1_ns": t1 + offset},
        }
        last_us = max(last_us, _us(t1 - origin))

    for sample in thin_power(run.power):
        ts = _us(sample.t_ns - offset - origin)
        yield {"ph": "C", "name": "power (W)", "pid": PID, "ts": ts, "args": {"W": sample.watts}}
        last_us = max(last_us, ts)

    for t_ns, text in log_lines(manifest):
        yield {
            "ph": "i",
            "s": "t",
            "name": text[:200],
            "cat": "log",
            "pid": PID,
            "tid": LOG_TID,
            "ts": _us(t_ns - origin),
            "args": {"text": text},
        }
        last_us = max(last_us, _us(t_ns - origin))

    yield from _env_counters(manifest, first_us, last_us)


def trace_metadata(run: Run) -> dict[str, Any]:
    """What the trace is of, for a reader who finds the file later."""
    manifest = run.manifest
    about: dict[str, Any] = {
        "run_id": run.run_id,
        "status": run.status,
        "target": target_label(manifest),
        "model": model_label(manifest),
        "emulated": is_emulated(manifest),
    }
    if manifest.split is not None:
        return {
            **about,
            "kind": "split",
            "clock": SPLIT_CLOCK,
            "start_times": "measured (host clock)",
            "inferences": len(_split_records(run)),
        }
    return {
        **about,
        "clock": "emulated device clock" if is_emulated(manifest) else "device clock",
        "start_times": "measured" if run.starts_ns is not None else "back-to-back (estimated)",
        "power_offset_ns": power_offset_ns(manifest),
        "meter": manifest.power_info.meter,
        "inferences": len(run.samples_ns),
        "power_samples": len(run.power),
        "power_thinned": len(run.power) > MAX_POWER_EVENTS,
    }


def build_trace(run: Run) -> dict[str, Any]:
    """The whole trace as one JSON-ready dict (fine for tests and small runs)."""
    return {
        "traceEvents": list(iter_trace_events(run)),
        "displayTimeUnit": "ms",
        "metadata": trace_metadata(run),
    }


def write_trace(run: Run, path: Path) -> int:
    """Stream the trace to `path` event by event, atomically; returns the event count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0

    def stream(handle: IO[str]) -> None:
        nonlocal count
        handle.write('{"displayTimeUnit": "ms", "metadata": ')
        handle.write(json.dumps(trace_metadata(run)))
        handle.write(', "traceEvents": [\n')
        for event in iter_trace_events(run):
            if count:
                handle.write(",\n")
            handle.write(json.dumps(event, separators=(",", ":")))
            count += 1
        handle.write("\n]}\n")

    write_text_atomic(path, stream, mode=0o644)
    return count
