"""Journaled result directories: `results/<run-id>/{manifest.json,samples.jsonl,power.jsonl,
summary.json}`.

samples.jsonl lines are `{"i": first index, "ns": [durations], "t": [device start times],
"r": repetition}` ("t", on the device's monotonic clock, is absent in runs from older
runners; "r" in runs from before repetitions, which are one repetition; "top1" and "score", each
inference's top-1 class and its score, only from devices that report scores per inference,
such as an MLPerf Tiny DUT); power.jsonl
lines are `{"t": [ns on the meter's clock], "w": [watts], "v": [volts], "a": [amps]}` with
null where a channel is not measured. Which clock the power samples use, and how device
time maps onto it, is in the manifest's "power" entry.
op_profile.json (runs made with --op-profile) is the per-operator profile, in the format
results/op_profile.py describes; it is written once, after the timed repetitions.

Samples are appended and fsynced batch by batch, and the manifest is rewritten atomically,
so a crash, a Ctrl-C or a SIGKILL leaves a run that still reads (as `partial`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgetool.errors import ResultsError
from edgetool.events import PowerSample
from edgetool.files import write_json_atomic
from edgetool.procs import pid_alive
from edgetool.results.manifest import HostInfo, RunManifest, Summary
from edgetool.results.stats import repetition_medians, summarize_ns, summarize_repetitions

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"
POWER = "power.jsonl"


def new_run_id(root: Path, target: str, model: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{target}-{model}").strip("_")[:80]
    base = f"{stamp}-{slug}"
    run_id, n = base, 1
    while (root / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def _append_line(handle: IO[str], record: dict[str, Any]) -> None:
    """One JSON line, fsynced: a kill leaves at most a torn last line, which readers skip."""
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def _make_run_dir(root: Path, run_id: str) -> tuple[Path, str]:
    """Create the run directory atomically: mkdir is the check, so two deploys started in
    the same second never share (or trip over) one directory; the later one gets -2, -3..."""
    root.mkdir(parents=True, exist_ok=True)
    candidate, n = run_id, 1
    while True:
        try:
            (root / candidate).mkdir()
        except FileExistsError:
            n += 1
            candidate = f"{run_id}-{n}"
            continue
        return root / candidate, candidate


class RunWriter:
    """Owns one run directory while a deploy is in progress."""

    def __init__(self, root: Path, run_id: str, manifest: RunManifest) -> None:
        """Create the run directory and write `manifest` as a `running` run of this
        process (what the caller left unset). The manifest's run_id stays the one asked
        for, even when the directory got a -2 suffix, as it always has."""
        self.dir, self.run_id = _make_run_dir(root, run_id)
        if manifest.schema is None:
            manifest.schema = SCHEMA_VERSION
        if manifest.run_id is None:
            manifest.run_id = run_id
        if manifest.status is None:
            manifest.status = "running"
        if manifest.created is None:
            manifest.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if manifest.host is None:
            manifest.host = HostInfo(hostname=socket.gethostname(), pid=os.getpid())
        self.manifest = manifest
        self.save()
        self._samples = (self.dir / SAMPLES).open("a", encoding="utf-8")
        self._power: IO[str] | None = None
        self.count = 0

    def save(self) -> None:
        """Rewrite manifest.json from `manifest` (the flows change it as the run goes)."""
        write_json_atomic(self.dir / MANIFEST, self.manifest.to_dict())

    def append_samples(
        self,
        first_index: int,
        ns: list[int],
        starts: list[int] | None = None,
        repetition: int = 0,
        top1: list[tuple[int, float]] | None = None,
    ) -> None:
        record: dict[str, Any] = {"i": first_index, "ns": ns, "r": repetition}
        if starts is not None:
            record["t"] = starts
        if top1 is not None:
            record["top1"] = [label for label, _ in top1]
            record["score"] = [score for _, score in top1]
        _append_line(self._samples, record)
        self.count += len(ns)

    def append_power(self, samples: list[PowerSample]) -> None:
        if not samples:
            return
        if self._power is None:
            self._power = (self.dir / POWER).open("a", encoding="utf-8")
        _append_line(
            self._power,
            {
                "t": [s.t_ns for s in samples],
                "w": [s.watts for s in samples],
                "v": [s.volts for s in samples],
                "a": [s.amps for s in samples],
            },
        )

    def journaled(self) -> tuple[list[int], list[int]]:
        """The samples and their repetitions as the file holds them. After a failure this
        is the truth: an interrupt inside append_samples (its fsync is the slow part)
        leaves a batch on disk that the flow never counted."""
        samples, _, reps = read_sample_records(self.dir / SAMPLES)
        return samples, reps or [0] * len(samples)

    def finish(self, status: str, summary: Summary | None, error: str | None = None) -> None:
        self._samples.close()
        if self._power is not None:
            self._power.close()
        if summary is not None:
            write_json_atomic(self.dir / SUMMARY, summary.to_dict())
        self.manifest.status = status
        self.manifest.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.manifest.error = error
        self.manifest.keep_null("error")  # a finished run says it had none
        self.save()


@dataclass
class Run:
    dir: Path
    manifest: RunManifest
    samples_ns: list[int]
    summary: Summary | None
    starts_ns: list[int] | None = None
    """Device-clock start of each inference, when the runner reported it."""
    power: list[PowerSample] = field(default_factory=list)
    reps: list[int] | None = None
    """The repetition of each sample (None: a run from before repetitions, one repetition)."""

    @property
    def repetition_tags(self) -> list[int]:
        return self.reps if self.reps is not None else [0] * len(self.samples_ns)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id or self.dir.name

    @property
    def status(self) -> str:
        return self.manifest.status or "unknown"


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """Complete JSON lines; a torn last line (killed mid-write) is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def read_samples_with_starts(path: Path) -> tuple[list[int], list[int] | None]:
    """Durations, and start times when every line has them (else None)."""
    samples, starts, _ = read_sample_records(path)
    return samples, starts


def read_sample_records(path: Path) -> tuple[list[int], list[int] | None, list[int] | None]:
    """Durations; start times when every line has them; repetition tags when every line
    has them (else None: an older run, one repetition)."""
    samples: list[int] = []
    starts: list[int] | None = []
    reps: list[int] | None = []
    for record in _records(path):
        try:
            ns = [int(v) for v in record["ns"]]
            t = [int(v) for v in record["t"]] if "t" in record else None
            r = int(record["r"]) if "r" in record else None
        except (KeyError, TypeError, ValueError):
            continue
        samples.extend(ns)
        if reps is not None and r is not None:
            reps.extend([r] * len(ns))
        else:
            reps = None
        if starts is not None and t is not None and len(t) == len(ns):
            starts.extend(t)
        else:
            starts = None
    return samples, starts, reps


def read_samples(path: Path) -> list[int]:
    return read_samples_with_starts(path)[0]


def read_power(path: Path) -> list[PowerSample]:
    power: list[PowerSample] = []
    for record in _records(path):
        try:
            power.extend(
                PowerSample(int(t), float(w), v, a)
                for t, w, v, a in zip(
                    record["t"], record["w"], record["v"], record["a"], strict=True
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return power


def load_run(path: Path) -> Run:
    manifest_path = path / MANIFEST
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ResultsError(f"no run at {path} (missing {MANIFEST})") from exc
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{manifest_path}: unreadable ({exc})") from exc
    if not isinstance(raw, dict):
        raise ResultsError(f"{manifest_path}: unreadable (not a JSON object)")
    manifest = RunManifest.from_dict(raw)
    samples, starts, reps = read_sample_records(path / SAMPLES)
    summary = read_summary(path / SUMMARY)
    host = manifest.host or HostInfo()
    if manifest.status == "running" and not (
        host.hostname == socket.gethostname() and pid_alive(host.pid)
    ):
        manifest.status = "partial"
        if manifest.error is None:
            manifest.error = "the deploy process died before the run finished"
    if summary is None and samples:
        fallback: dict[str, Any] = {
            "latency": summarize_ns(samples).to_dict(),
            "count": len(samples),
        }
        if reps:
            kind = manifest.repetition_kind or "process"
            fallback["repetitions"] = summarize_repetitions(
                repetition_medians(samples, reps), kind
            ).to_dict()
        summary = Summary.from_dict(fallback)
    return Run(path, manifest, samples, summary, starts, read_power(path / POWER), reps)


def read_summary(path: Path) -> Summary | None:
    """A run's summary.json; None when it is missing or unreadable (an interrupted run)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Summary.from_dict(raw) if isinstance(raw, dict) else None


def find_run(ref: str, root: Path) -> Run:
    """A run by directory path, by id under root, or by unique id prefix; `latest` works."""
    direct = Path(ref)
    if (direct / MANIFEST).exists():
        return load_run(direct)
    if ref == "latest":
        runs = sorted(iter_run_dirs(root))
        if not runs:
            raise ResultsError(f"no runs under {root}")
        return load_run(runs[-1])
    if (root / ref / MANIFEST).exists():
        return load_run(root / ref)
    matches = [d for d in iter_run_dirs(root) if d.name.startswith(ref)]
    if len(matches) == 1:
        return load_run(matches[0])
    if matches:
        raise ResultsError(f"'{ref}' matches {len(matches)} runs under {root}; be more specific")
    raise ResultsError(f"no run '{ref}' under {root}.", hint="See `edgetool results list`.")


def iter_run_dirs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if (child / MANIFEST).is_file():
            yield child
