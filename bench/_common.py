"""Shared plumbing for the bench/ scripts: isolated state dirs, the mlp-1ms model,
the loopback sshd, ABAB interleaving, medians and the machine-readable result line.

Every script sets EDGETOOL_STATE_DIR / EDGETOOL_CACHE_DIR / EDGETOOL_RESULTS to a
scratch directory *before* touching edgetool, so the user's real state is never used,
and only ever talks to the loopback sshd on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
WORKDIR_ENV = "EDGETOOL_BENCH_WORKDIR"
"""run_all.py sets this so the three scripts share one scratch dir and one model file."""


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A scratch dir holding edgetool's state/cache/results; removed unless shared."""
    shared = os.environ.get(WORKDIR_ENV)
    root = Path(shared) if shared else Path(tempfile.mkdtemp(prefix="edgetool-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    saved = {
        k: os.environ.get(k)
        for k in ("EDGETOOL_STATE_DIR", "EDGETOOL_CACHE_DIR", "EDGETOOL_RESULTS")
    }
    os.environ["EDGETOOL_STATE_DIR"] = str(root / "state")
    os.environ["EDGETOOL_CACHE_DIR"] = str(root / "cache")
    os.environ["EDGETOOL_RESULTS"] = str(root / "results")
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not shared:
            shutil.rmtree(root, ignore_errors=True)


def mlp_1ms_onnx(root: Path) -> Path:
    """Generate (once per scratch dir) the ~1 ms, 22 MB BENCH_1MS MLP; return the .onnx."""
    from edgetool.zoo.tinymlp import BENCH_1MS, write_models

    out = root / "models" / BENCH_1MS.name
    onnx = out / f"{BENCH_1MS.name}.onnx"
    if not onnx.is_file():
        write_models(BENCH_1MS, out)
    return onnx


@contextlib.contextmanager
def loopback() -> Iterator[dict[str, Any]]:
    """The loopback sshd (started in the current EDGETOOL_STATE_DIR), stopped afterwards."""
    from edgetool.emulate.sshd import LoopbackSshd

    sshd = LoopbackSshd("loopback")
    already = sshd.state() is not None
    state = sshd.start()
    host = state["transport"]["host"]
    if host != "127.0.0.1":  # never benchmark against anything but this machine
        raise SystemExit(f"loopback sshd listens on {host}, expected 127.0.0.1")
    try:
        yield state
    finally:
        if not already:
            sshd.stop()


def ssh_options(state: dict[str, Any], port_flag: str) -> list[str]:
    """OpenSSH client options for the loopback sshd (`-p` for ssh, `-P` for scp)."""
    tp = state["transport"]
    return [
        "-i",
        str(tp["identity_file"]),
        port_flag,
        str(tp["port"]),
        "-o",
        f"UserKnownHostsFile={tp['known_hosts']}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-F",
        "/dev/null",
    ]


def ssh_dest(state: dict[str, Any]) -> str:
    tp = state["transport"]
    return f"{tp['user']}@{tp['host']}"


def interleave(
    reps: int,
    arms: dict[str, Callable[[int], float]],
    label: str = "",
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Run the arms round-robin (A B A B ... A, or A B C A B C ... A), `reps` times each.

    The first arm is the baseline; it runs once more at the end (index `reps`), so every
    candidate run sits between two baseline runs (see `bracketed`). Each call gets
    the repetition index and returns one number (seconds, microseconds, ...).
    """
    out: dict[str, list[float]] = {name: [] for name in arms}
    first = next(iter(arms))
    for i in range(reps):
        for name, arm in arms.items():
            out[name].append(arm(i))
        if verbose:
            row = "  ".join(f"{name} {values[-1]:.4g}" for name, values in out.items())
            print(f"  {label} rep {i + 1}/{reps}: {row}", flush=True)
    out[first].append(arms[first](reps))
    if verbose:
        print(f"  {label} closing {first}: {out[first][-1]:.4g}", flush=True)
    return out


def bracketed(base: Sequence[float], cand: Sequence[float]) -> list[float]:
    """cand / base for every adjacent pair: each candidate run against the baseline run
    just before it and the one just after it (2 ratios per repetition).

    The median of these cancels a slow drift of the machine (half of the pairs see it
    one way, half the other way), and one disturbed baseline run spoils only 2 of the
    2 x reps ratios.
    """
    if len(base) != len(cand) + 1:
        raise ValueError("need one more baseline run than candidate runs")
    return [c / b for i, c in enumerate(cand) for b in (base[i], base[i + 1])]


def arm_ratios(
    series: dict[str, list[float]], baseline: str, *, throughput: bool = False
) -> dict[str, float]:
    """Each arm against the baseline runs around it: median of arm/baseline time
    (or baseline/arm with `throughput`, so higher is better)."""
    return {
        name: median([1 / r if throughput else r for r in bracketed(series[baseline], values)])
        for name, values in series.items()
        if name != baseline
    }


def fmt(values: Sequence[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The same linear-interpolated percentile edgetool reports (q in [0, 100])."""
    from edgetool.results.stats import percentile as sorted_percentile

    return sorted_percentile(sorted(values), q)


@dataclass(frozen=True)
class Result:
    name: str
    ratio: float
    goal: str
    met: bool
    details: dict[str, Any]

    def emit(self) -> None:
        """One machine-readable line that run_all.py collects."""
        payload = {
            "name": self.name,
            "ratio": self.ratio,
            "goal": self.goal,
            "met": self.met,
            "details": self.details,
        }
        print(RESULT_PREFIX + json.dumps(payload), flush=True)


def tool(name: str) -> str:
    """An executable, preferring the one next to this interpreter (skips pyenv shims)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found on PATH")
    return found


def ort_session(path: Path, threads: int = 1) -> Any:
    """onnxruntime at its best settings for batch-1 latency on `threads` cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_call_us(fn: Callable[[], Any], inner: int) -> Callable[[int], float]:
    """An `interleave` arm: the median of `inner` back-to-back calls, in microseconds."""

    def arm(_rep: int) -> float:
        times = []
        for _ in range(inner):
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
        return median(times) / 1000.0

    return arm
