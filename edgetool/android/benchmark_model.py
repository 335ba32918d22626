"""LiteRT's `benchmark_model`: the command line edgetool runs on a watch, and its output.

Android has no Python, so the runner on a Wear OS watch is the stock benchmark binary.
It prints aggregates only (tsl `Stat::OutputToStream`: count, first, curr, min, max, avg,
std; newer builds append p5/median/p95), never per-inference samples, so the latency
edgetool stores for it says `aggregate_only` and leaves every percentile it cannot know
empty rather than inventing one.

Format notes, from the tool's sources (tensorflow/lite/tools/benchmark/benchmark_model.cc,
benchmark_tflite_model.cc, profiling_listener.cc, tools/logging.h, tsl stats_calculator):
tool messages are `INFO: ` / `WARN: ` / `ERROR: ` lines (runtime ones use `WARNING: `,
older builds print no prefix, the Android app logs through logcat), each `Run()` prints
"Running benchmark for at least N iterations ..." then its stats line, warm-up first, and
`avg` is a C++ double in default stream precision (so `1.23457e+06` is possible).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from edgetool.errors import DeviceError, ModelError

log = logging.getLogger(__name__)

MAX_SECS = 3600
"""`--max_secs`: the tool stops starting new runs past it; an hour keeps counts exact."""

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_STAT = re.compile(
    rf"^count=(?P<count>\d+)"
    rf"(?:\s+first=(?P<first>{_NUM})\s+curr=(?P<curr>{_NUM})\s+min=(?P<min>{_NUM})"
    rf"\s+max=(?P<max>{_NUM})\s+avg=(?P<avg>{_NUM})\s+std=(?P<std>{_NUM})"
    rf"|\s+curr=(?P<same>{_NUM})(?P<suffix>\(all same\))?)?"
    rf"(?:\s+p5=(?P<p5>{_NUM})\s+median=(?P<median>{_NUM})\s+p95=(?P<p95>{_NUM}))?\s*$"
)
_RUNNING = re.compile(r"^Running benchmark for at least (\d+) iterations")
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUM}), First inference: (?P<first>{_NUM}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUM}), Inference \(avg\): (?P<inference>{_NUM})"
)
# "Memory footprint delta from the start of the tool (MB)" (current); older builds said
# "Peak memory footprint (MB)" for the same two figures.
_MEMORY = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})"
)
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_MODEL_SIZE = re.compile(rf"The input model file size \(MB\): ({_NUM})")
_THREADS = re.compile(r"^(?:Num threads|#threads used for CPU inference): \[(-?\d+)\]")
_SESSION = re.compile(rf"^Initialized session in ({_NUM})ms\.")
_LOGCAT = re.compile(r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+([VDIWEF])\s+[^:]*:\s?")
_LEVEL = re.compile(r"^(INFO|WARN|WARNING|ERROR|FATAL|VERBOSE): ?")
_LOGCAT_LEVEL = {"V": "VERBOSE", "D": "VERBOSE", "I": "INFO", "W": "WARN", "E": "ERROR"}
_SUBGRAPH = re.compile(r"^Subgraph \(index: (\d+)\) (?:profile|summary):$")

# Lines the tool (or the TFLite runtime under it) prints when the model cannot be loaded,
# prepared or run; matched case-insensitively on ERROR lines and unprefixed (old) lines.
_MODEL_FAILURES = (
    "failed to mmap model",
    "failed to load model",
    "failed to initialize model loader",
    "could not build model",
    "not a valid flatbuffer",
    "model provided has model identifier",
    "didn't find op for builtin opcode",
    "encountered unresolved custom op",
    "not supported by this interpreter",
    "failed to initialize the interpreter",
    "failed to construct interpreter",
    "registration failed",
    "failed to prepare",
    "failed to invoke",
    "failed to allocate tensors",
    "failed to apply",
    "disallowed cpu fallback",
)
# Follow-up lines that say *that* it failed, not why: quoted only when nothing better.
_GENERIC = ("registration failed", "failed to initialize the interpreter", "benchmarking failed")


@dataclass(frozen=True)
class Stat:
    """One `count=...` line in microseconds. The tool prints three forms: `count=0`
    (nothing else), `count=N curr=X` with `(all same)` when N > 1 (min = max = curr; also
    the form for N = 1), and the full one. Fields the form lacks are None."""

    count: int
    first_us: float | None
    curr_us: float | None
    min_us: float | None
    max_us: float | None
    avg_us: float | None
    std_us: float | None
    all_same: bool
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    """Newer builds (StatWithPercentiles) append nearest-rank p5/median/p95."""

    @property
    def mean_us(self) -> float | None:
        """The average, also for the "(all same)" form (where it is curr)."""
        if self.avg_us is not None:
            return self.avg_us
        return self.curr_us if self.all_same else None


@dataclass(frozen=True)
class OpProfile:
    """One row of an op-profiling table (`--enable_op_profiling=true`), regular runs only.

    Rows of the "Run Order" table are single nodes (name set, count None); rows of
    "Summary by node type" aggregate a type (name None, count = nodes of that type).
    `scope` is "primary", "subgraph N" or "delegate" (the delegate's internal ops)."""

    node_type: str
    avg_ms: float
    percent: float
    times_called: int
    name: str | None
    first_ms: float | None = None
    count: int | None = None
    scope: str = "primary"


@dataclass(frozen=True)
class BenchmarkOutput:
    """What one benchmark_model run printed (times in µs, memory in MB as printed)."""

    init_us: float | None
    first_us: float | None
    warmup_avg_us: float | None
    steady: Stat
    warmup: Stat | None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    model_size_mb: float | None = None
    threads: int | None = None
    inference_avg_us: float | None = None
    ops: list[OpProfile] = field(default_factory=list)
    op_types: list[OpProfile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def benchmark_argv(
    binary: str,
    graph: str,
    *,
    num_runs: int,
    warmup_runs: int,
    threads: int,
    op_profiling: bool = False,
    use_xnnpack: bool | None = None,
) -> list[str]:
    """Exact counts: the tool runs `max(num_runs, as many as fit in min_secs)` (default
    min_secs 1, warmup_min_secs 0.5), so both time floors are zeroed and max_secs raised;
    `use_xnnpack` is passed only when set, as the tool treats "set to false" specially."""
    if num_runs < 1:
        raise ValueError("num_runs must be at least 1")
    if warmup_runs < 0:
        raise ValueError("warmup_runs must not be negative")
    if threads == 0 or threads < -1:
        raise ValueError("threads must be positive (or -1 for the tool's default)")
    argv = [
        binary,
        f"--graph={graph}",
        f"--num_runs={num_runs}",
        f"--warmup_runs={warmup_runs}",
        "--min_secs=0",
        "--warmup_min_secs=0",
        f"--max_secs={MAX_SECS}",
        f"--num_threads={threads}",
    ]
    if op_profiling:
        argv.append("--enable_op_profiling=true")
    if use_xnnpack is not None:
        argv.append(f"--use_xnnpack={'true' if use_xnnpack else 'false'}")
    return argv


def _split_level(line: str) -> tuple[str | None, str]:
    """(severity or None, message) with logcat and `INFO: `-style prefixes removed."""
    severity: str | None = None
    logcat = _LOGCAT.match(line)
    if logcat:
        severity = _LOGCAT_LEVEL.get(logcat.group(1), "ERROR")
        line = line[logcat.end() :]
    level = _LEVEL.match(line)
    if level:
        severity = "WARN" if level.group(1) == "WARNING" else level.group(1)
        line = line[level.end() :]
    return severity, line


def parse_stat(text: str) -> Stat | None:
    """A `count=...` line (prefix already removed), or None if it is not one."""
    match = _STAT.match(text.strip())
    if not match:
        return None
    g = match.groupdict()

    def num(key: str) -> float | None:
        value = g[key]
        return float(value) if value is not None else None

    count = int(g["count"])
    percentiles = {"p5_us": num("p5"), "median_us": num("median"), "p95_us": num("p95")}
    if count == 0:
        return Stat(0, None, None, None, None, None, None, False)
    if g["same"] is not None:
        return Stat(count, None, num("same"), None, None, None, None, True, **percentiles)
    if g["first"] is None:
        return None  # "count=N" alone only exists for N = 0
    return Stat(
        count,
        num("first"),
        num("curr"),
        num("min"),
        num("max"),
        num("avg"),
        num("std"),
        False,
        **percentiles,
    )


class _Tables:
    """The op-profiling tables of the regular runs (the initialization ones are skipped)."""

    def __init__(self) -> None:
        self.ops: list[OpProfile] = []
        self.op_types: list[OpProfile] = []
        self.section: str | None = None
        self.scope = "primary"
        self.table: str | None = None
        self.columns: list[str] | None = None

    def feed(self, raw: str, message: str) -> bool:
        """Consume a line if it belongs to the profile; True when consumed."""
        text = message.strip()
        if text.startswith("Operator-wise Profiling Info for Regular Benchmark Runs"):
            self.section, self.scope, self.table = "regular", "primary", None
            return True
        if text.startswith("Profiling Info for Benchmark Initialization"):
            self.section, self.scope, self.table = "init", "primary", None
            return True
        if self.section is None:
            return False
        subgraph = _SUBGRAPH.match(text)
        if text in ("Primary graph profile:", "Primary graph summary:"):
            self.scope, self.table = "primary", None
            return True
        if subgraph:
            self.scope, self.table = f"subgraph {subgraph.group(1)}", None
            return True
        if text == "Delegate internal:":
            self.scope, self.table = "delegate", None
            return True
        if text.startswith("=====") and text.endswith("====="):
            title = text.strip("= ").strip()
            self.table = {"Run Order": "run", "Summary by node type": "type"}.get(title, "other")
            self.columns = None
            return True
        if self.table is None:
            return False
        if not text:
            self.table, self.columns = None, None
            return True
        if self.columns is None:
            if "[" in text and "]" in text:
                self.columns = [c.strip().lower() for c in re.findall(r"\[([^\]]+)\]", text)]
                return True
            self.table = None
            return False
        if self.section == "regular" and self.table in ("run", "type"):
            row = self._row(raw)
            if row is not None:
                (self.ops if self.table == "run" else self.op_types).append(row)
        return True

    def _row(self, raw: str) -> OpProfile | None:
        assert self.columns is not None
        columns = self.columns
        cells: list[str] | None = _cells(raw)
        if cells is None or len(cells) != len(columns):
            cells = _cells_by_space(raw, columns)
            if cells is None:
                return None
        row = dict(zip(columns, cells, strict=True))
        try:
            if self.table == "run":
                return OpProfile(
                    node_type=row["node type"],
                    avg_ms=float(row["avg ms"]),
                    percent=float(row["%"].rstrip("%")),
                    times_called=int(row["times called"]),
                    name=row.get("name"),
                    first_ms=float(row["first"]),
                    scope=self.scope,
                )
            return OpProfile(
                node_type=row["node type"],
                avg_ms=float(row["avg ms"]),
                percent=float(row["avg %"].rstrip("%")),
                times_called=int(row["times called"]),
                name=None,
                count=int(row["count"]),
                scope=self.scope,
            )
        except (KeyError, ValueError):
            return None


def _cells(raw: str) -> list[str]:
    """A tab-separated table line (the tool right-aligns each cell after a tab)."""
    parts = raw.split("\t")
    if parts and not parts[0].strip():
        parts = parts[1:]
    return [p.strip() for p in parts]


def _cells_by_space(raw: str, columns: list[str]) -> list[str] | None:
    """Fallback for a table whose tabs became spaces (pasted output): the numeric columns
    are the run of numbers after the node type; only the name may follow them."""
    tokens = raw.split()
    has_name = columns[-1] == "name"
    numeric = len(columns) - 1 - int(has_name)
    for i in range(1, len(tokens) - numeric + 1):
        window = tokens[i : i + numeric]
        if all(_is_number(t.rstrip("%")) for t in window):
            rest = tokens[i + numeric :]
            if has_name != bool(rest):
                continue
            return [" ".join(tokens[:i]), *window] + ([" ".join(rest)] if has_name else [])
    return None


def _is_number(text: str) -> bool:
    return re.fullmatch(_NUM, text) is not None


def _model_failure(errors: list[str]) -> str | None:
    """The one line that says why the model failed: a specific one before a generic one."""
    hits = [line for line in errors if any(p in line.lower() for p in _MODEL_FAILURES)]
    specific = [line for line in hits if not line.lower().startswith(_GENERIC)]
    chosen = specific or hits
    return chosen[0] if chosen else None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_output(text: str) -> BenchmarkOutput:
    """Parse one run's output. Raises ModelError when the tool says the model could not
    be loaded, prepared or run, DeviceError when no steady-state statistics were printed."""
    runs: list[Stat | None] = []
    timings: re.Match[str] | None = None
    memory: re.Match[str] | None = None
    peak = model_size = session_ms = None
    threads: int | None = None
    warnings: list[str] = []
    errors: list[str] = []
    failed = False
    tables = _Tables()
    last = ""
    for raw in text.splitlines():
        raw = raw.rstrip()
        if raw.strip():
            last = raw.strip()
        severity, message = _split_level(raw)
        if tables.feed(raw, message):
            continue
        message = message.strip()
        if not message:
            continue
        if severity in ("WARN",):
            warnings.append(message)
        if severity in ("ERROR", "FATAL") or severity is None:
            if message.lower().startswith("benchmarking failed"):
                failed = True
            if severity is not None or any(p in message.lower() for p in _MODEL_FAILURES):
                errors.append(message)
        if _RUNNING.match(message):
            runs.append(None)
            continue
        if message.startswith("count="):
            stat = parse_stat(message)
            if stat is not None and runs and runs[-1] is None:
                runs[-1] = stat
            continue
        if found := _TIMINGS.search(message):
            timings = found
        elif found := _MEMORY.search(message):
            memory = found
        elif found := _PEAK.search(message):
            peak = float(found.group(1))
        elif found := _MODEL_SIZE.search(message):
            model_size = float(found.group(1))
        elif found := _THREADS.match(message):
            threads = int(found.group(1))
        elif found := _SESSION.match(message):
            session_ms = float(found.group(1))

    warmup = runs[0] if runs else None
    steady = runs[1] if len(runs) > 1 else None
    reason = _model_failure(errors)
    if reason is not None and (steady is None or failed):
        raise ModelError(
            f"benchmark_model could not run the model: {_one_line(reason)}",
            hint="The .tflite may be corrupt, or use ops (or op versions) this benchmark_model "
            "build lacks: try a newer LiteRT release of it, or convert with builtin ops only.",
        )
    if failed:
        raise DeviceError(
            f"benchmark_model failed: {_one_line(errors[0] if errors else last)}",
            hint="Run the same command with adb shell to see its full output.",
        )
    if steady is None:
        missing = (
            "no 'Running benchmark' line"
            if not runs
            else "no regular (post-warm-up) run"
            if len(runs) < 2
            else "no stats line after the regular run's 'Running benchmark' line"
        )
        raise DeviceError(
            f"benchmark_model printed no steady-state statistics ({missing}); "
            f"its last line: {_one_line(last) or '(no output)'!r}",
            hint="Is the binary LiteRT's benchmark_model for this ABI? Run it with adb shell.",
        )
    log.debug(
        "benchmark_model said: %d runs, steady count=%d mean %s us, %d warnings, %d op rows",
        len(runs),
        steady.count,
        steady.mean_us,
        len(warnings),
        len(tables.ops),
    )
    init_us = float(timings["init"]) if timings else None
    if init_us is None and session_ms is not None:
        init_us = session_ms * 1e3
    return BenchmarkOutput(
        init_us=init_us,
        first_us=float(timings["first"]) if timings else None,
        warmup_avg_us=float(timings["warmup"]) if timings else None,
        steady=steady,
        warmup=warmup,
        memory_init_mb=float(memory["init"]) if memory else None,
        memory_overall_mb=float(memory["overall"]) if memory else None,
        peak_memory_mb=peak,
        model_size_mb=model_size,
        threads=threads,
        inference_avg_us=float(timings["inference"]) if timings else None,
        ops=tables.ops,
        op_types=tables.op_types,
        warnings=warnings,
    )


def latency_summary(out: BenchmarkOutput) -> dict[str, Any]:
    """The run summary's `latency` dict, in ms, with LatencyStats' keys: count, mean, std,
    min and max from the tool; every percentile and the median CI None (the tool keeps no
    samples, so they cannot be computed). The tool's std is the population one (÷n); it
    is converted to the sample std (÷(n−1)) that edgetool reports everywhere else."""
    s = out.steady
    if s.count == 0 or s.curr_us is None:
        raise DeviceError(
            "benchmark_model timed no inference (count=0)",
            hint="Raise num_runs (and check --max_secs was not exceeded by one run).",
        )
    if s.all_same:
        mean = low = high = s.curr_us / 1e3
        std = 0.0
    else:
        assert s.avg_us is not None and s.std_us is not None
        assert s.min_us is not None and s.max_us is not None
        mean, low, high = s.avg_us / 1e3, s.min_us / 1e3, s.max_us / 1e3
        pop = s.std_us / 1e3
        std = pop * math.sqrt(s.count / (s.count - 1)) if s.count > 1 else 0.0
    unstable = []
    if s.count < 20:
        unstable.append(f"only {s.count} samples")
    return {
        "count": s.count,
        "mean": mean,
        "std": std,
        "min": low,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
        "p999": None,
        "max": high,
        "median_ci": None,
        "confidence": 0.95,
        "unstable": unstable,
        "unit": "ms",
        "tail_support": None,
        "aggregate_only": True,
        "source": "benchmark_model",
    }
