"""Journaled result directories: `results/<run-id>/{manifest.json,samples.jsonl,summary.json}`.

Samples are appended and fsynced batch by batch, and the manifest is rewritten atomically,
so a crash, a Ctrl-C or a SIGKILL leaves a run that still reads (as `partial`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetool.errors import ResultsError
from edgetool.procs import pid_alive
from edgetool.results.stats import summarize_ns

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"


def write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_run_id(root: Path, target: str, model: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{target}-{model}").strip("_")[:80]
    base = f"{stamp}-{slug}"
    run_id, n = base, 1
    while (root / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


class RunWriter:
    """Owns one run directory while a deploy is in progress."""

    def __init__(self, root: Path, run_id: str, manifest: dict[str, Any]) -> None:
        self.dir = root / run_id
        self.dir.mkdir(parents=True, exist_ok=False)
        self.run_id = run_id
        self.manifest = {
            "schema": SCHEMA_VERSION,
            "run_id": run_id,
            "status": "running",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"hostname": socket.gethostname(), "pid": os.getpid()},
            **manifest,
        }
        write_json_atomic(self.dir / MANIFEST, self.manifest)
        self._samples = (self.dir / SAMPLES).open("a", encoding="utf-8")
        self.count = 0

    def update(self, **fields: Any) -> None:
        self.manifest.update(fields)
        write_json_atomic(self.dir / MANIFEST, self.manifest)

    def append_samples(self, first_index: int, ns: list[int]) -> None:
        self._samples.write(json.dumps({"i": first_index, "ns": ns}) + "\n")
        self._samples.flush()
        os.fsync(self._samples.fileno())
        self.count += len(ns)

    def finish(self, status: str, summary: dict[str, Any] | None, error: str | None = None) -> None:
        self._samples.close()
        if summary is not None:
            write_json_atomic(self.dir / SUMMARY, summary)
        self.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), error=error)


@dataclass
class Run:
    dir: Path
    manifest: dict[str, Any]
    samples_ns: list[int]
    summary: dict[str, Any] | None

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.dir.name))

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))


def read_samples(path: Path) -> list[int]:
    """All complete sample lines; a torn last line (killed mid-write) is ignored."""
    samples: list[int] = []
    if not path.exists():
        return samples
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                samples.extend(int(v) for v in record["ns"])
            except (ValueError, KeyError, TypeError):
                continue
    return samples


def load_run(path: Path) -> Run:
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ResultsError(f"no run at {path} (missing {MANIFEST})") from exc
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{manifest_path}: unreadable ({exc})") from exc
    samples = read_samples(path / SAMPLES)
    summary: dict[str, Any] | None = None
    if (path / SUMMARY).exists():
        try:
            summary = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
        except ValueError:
            summary = None
    host = manifest.get("host", {})
    if manifest.get("status") == "running" and not (
        host.get("hostname") == socket.gethostname() and pid_alive(host.get("pid"))
    ):
        manifest["status"] = "partial"
        manifest.setdefault("error", "the deploy process died before the run finished")
    if summary is None and samples:
        summary = {"latency": summarize_ns(samples).to_dict(), "count": len(samples)}
    return Run(path, manifest, samples, summary)


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
    raise ResultsError(f"no run '{ref}' under {root}", hint="See `edgetool results list`.")


def iter_run_dirs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if (child / MANIFEST).is_file():
            yield child
