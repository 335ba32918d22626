"""Run a plan's jobs: one worker thread per place, jobs on a place one after another.

Each job is a separate `edgetool deploy` process in its own process group, so a hung
device costs one timeout (the whole group is killed) and never the night; a crash of one
deploy cannot take the farm down with it. Places are held per job, not per night: a lab
wants its other users (and another plan) to get a board between our jobs.

A job never outlives its place or its farm: it starts through `edgetool.farm.guard` (SIGTERM
when the farm dies, however it dies) and inherits a local place's lock, so the board stays
locked until the job's process is gone. On an interrupt the farm waits for (or kills) every
job it started before it reports; a job it started is never reported as never run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgetool.errors import EdgetoolError, failure_class_of
from edgetool.farm.plan import Job, Plan, slots
from edgetool.results.store import SUMMARY, read_summary

if TYPE_CHECKING:
    from edgetool.farm.places import Place, PlaceProvider

KILL_GRACE = 5.0
"""Seconds between SIGTERM (deploy keeps a partial run) and SIGKILL of a job's group."""
CHECK_TIMEOUT = 120.0
RELEASE_GRACE = 40.0
"""Seconds workers get to give their places back after their jobs were killed (a labgrid
give-back is two calls bounded at 15 s each)."""
NEVER_RAN = "interrupted before it ran"


@dataclass
class Attempt:
    number: int
    status: str
    """passed | failed | timeout | interrupted"""
    seconds: float
    exit_code: int | None = None
    failure: str | None = None
    error: str | None = None
    run_dir: str | None = None
    log: str | None = None
    recovery: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class JobResult:
    job: Job
    status: str = "pending"
    """passed | failed | skipped | regressed (set by the comparison)"""
    attempts: list[Attempt] = field(default_factory=list)
    place: str | None = None
    started: float | None = None
    finished: float | None = None
    run_dir: str | None = None
    run_id: str | None = None
    p50_ms: float | None = None
    error: str | None = None
    failure: str | None = None
    reason: str | None = None
    """Why a job was skipped."""
    regressions: list[str] = field(default_factory=list)
    verdict: str | None = None
    """The comparison's verdict against the baseline (results.compare.VERDICTS)."""
    comparison: dict[str, Any] | None = None
    place_wait: float = 0.0
    """Seconds spent waiting for the place (not part of the job's time)."""
    health_s: float | None = None
    """Seconds the device's health check took (on the first job of a place)."""
    launched: bool = False
    """A process was started for this job (so "never ran" would be a lie)."""

    @property
    def seconds(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return self.finished - self.started


class Observer(Protocol):
    """Progress hooks, called from worker threads (implementations must be thread-safe)."""

    def health(self, slot: str, target: str, ok: bool, detail: str) -> None: ...

    def started(self, job: Job, place: str, attempt: int) -> None: ...

    def retrying(self, job: Job, attempt: Attempt, recovery: str | None) -> None: ...

    def finished(self, result: JobResult) -> None: ...


class QuietObserver:
    """Reports nothing (library use, tests)."""

    def health(self, slot: str, target: str, ok: bool, detail: str) -> None:
        return None

    def started(self, job: Job, place: str, attempt: int) -> None:
        return None

    def retrying(self, job: Job, attempt: Attempt, recovery: str | None) -> None:
        return None

    def finished(self, result: JobResult) -> None:
        return None


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line[len("error: ") :] for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1].strip()
    return lines[-1].strip() if lines else "no output"


def _kept_run_dir(stderr: str) -> str | None:
    marker = "what was measured is kept in "
    for line in stderr.splitlines():
        if line.startswith(marker):
            return line[len(marker) :].strip()
    return None


def _kill_group(proc: subprocess.Popen[bytes], grace: float = KILL_GRACE) -> None:
    """SIGTERM the job's process group (deploy then keeps a partial run), SIGKILL after."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # Also the group's leftovers (an ssh child, a runner) when the leader already went.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class ProcResult:
    code: int | None
    """None when it was killed at its timeout or by an interrupt."""
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    interrupted: bool = False


class Executor:
    """Runs the jobs of one night; `run()` returns one JobResult per job, in plan order."""

    def __init__(
        self,
        plan: Plan,
        jobs: Sequence[Job],
        provider: PlaceProvider,
        night_dir: Path,
        *,
        observer: Observer | None = None,
        targets_dirs: Sequence[Path] = (),
        python: str = sys.executable,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan = plan
        self.jobs = list(jobs)
        self.provider = provider
        self.night_dir = night_dir
        self.runs_dir = night_dir / "runs"
        self.logs_dir = night_dir / "logs"
        self.observer: Observer = observer or QuietObserver()
        self.targets_dirs = list(targets_dirs)
        self.python = python
        self.sleep = sleep
        self.stop = threading.Event()
        self.results = {job.index: JobResult(job) for job in self.jobs}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = 0
        self._done = threading.Event()
        self._live: set[subprocess.Popen[bytes]] = set()
        """Processes running right now (guarded by _lock): what `kill_running` kills."""

    # --- subprocesses -------------------------------------------------------------

    def _edgetool(self, args: list[str]) -> list[str]:
        dirs = [a for d in self.targets_dirs for a in ("--targets-dir", str(d))]
        return [self.python, "-m", "edgetool", *dirs, *args]

    def _env(self, place: Place | None) -> dict[str, str]:
        env = {**os.environ, **(place.env if place is not None else {})}
        env["EDGETOOL_RESULTS"] = str(self.runs_dir)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _run(
        self,
        args: list[str],
        env: dict[str, str],
        timeout: float,
        log: Path,
        place: Place | None = None,
    ) -> ProcResult:
        """Run one edgetool command in its own process group; kill the group at timeout
        or on interrupt. Output goes to files (the night keeps every attempt's log).

        With a `place`, the command uses its device: it inherits the place's lock (held
        until the command's process is gone) and is recorded as the place's job. Once the
        night is stopping, nothing new starts."""
        log.parent.mkdir(parents=True, exist_ok=True)
        out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
        start = time.monotonic()
        timed_out = interrupted = False
        guard = [self.python, "-m", "edgetool.farm.guard", str(os.getpid()), "--"]
        lock_fd = place.lock_fd if place is not None else None
        with out_path.open("wb") as out, err_path.open("wb") as err:
            with self._lock:  # against kill_running(): started and registered, or neither
                if self.stop.is_set():
                    return ProcResult(None, "", "", 0.0, interrupted=True)
                proc = subprocess.Popen(
                    [*guard, *self._edgetool(args)],
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                    pass_fds=(lock_fd,) if lock_fd is not None else (),
                )
                self._live.add(proc)
            try:
                if place is not None:
                    place.job_started(proc.pid)
                deadline = start + timeout
                while True:
                    try:
                        proc.wait(timeout=min(0.2, max(0.01, deadline - time.monotonic())))
                        break
                    except subprocess.TimeoutExpired:
                        if self.stop.is_set():
                            interrupted = True
                            _kill_group(proc, grace=10.0)
                            break
                        if time.monotonic() >= deadline:
                            timed_out = True
                            _kill_group(proc)
                            break
            finally:
                if proc.returncode is None:  # an exception in this thread: never leave it
                    _kill_group(proc, grace=0.0)
                with self._lock:
                    self._live.discard(proc)
        if proc.returncode is not None and proc.returncode < 0 and self.stop.is_set():
            interrupted = True  # killed by kill_running()
        seconds = time.monotonic() - start
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
        code = None if (timed_out or interrupted) else proc.returncode
        return ProcResult(code, stdout, stderr, seconds, timed_out, interrupted)

    # --- one place ----------------------------------------------------------------

    def _emulator(self, target: str) -> str | None:
        """ "running" / "stopped" for an emulated target, None for hardware (or unreadable)."""
        from edgetool.targets import load_target

        try:
            loaded = load_target(target, self.targets_dirs)
        except EdgetoolError:
            return None
        if loaded.emulator is None:
            return None
        return "running" if loaded.emulator_state is not None else "stopped"

    def _check(self, job: Job, place: Place, number: int) -> str | None:
        """None when the device answers `targets check`, else why it does not."""
        suffix = "" if number == 1 else f"-{number}"
        log = self.logs_dir / f"{_safe(job.slot)}-check{suffix}.log"
        timeout = min(CHECK_TIMEOUT, job.run.timeout)
        args = ["targets", "check", job.target, "--json"]
        proc = self._run(args, self._env(place), timeout, log, place)
        if proc.code == 0:
            return None
        if proc.timed_out:
            return f"health check timed out after {timeout:g} s"
        if proc.interrupted:
            return "interrupted"
        return f"health check failed: {_last_error(proc.stderr)}"

    def _health(self, job: Job, place: Place) -> str | None:
        """None when the device is healthy. An unhealthy one is power-cycled (an emulator
        that runs is restarted) and checked once more before its jobs are skipped; a
        stopped emulator is left alone (someone stopped it: starting it is not ours)."""
        reason = self._check(job, place, 1)
        recoverable = reason is not None and reason != "interrupted" and not self.stop.is_set()
        if recoverable and self._emulator(job.target) != "stopped":
            recovery = self._recover(job, place)
            if recovery in ("power-cycled", "emulator restarted"):
                again = self._check(job, place, 2)
                reason = None if again is None else f"{reason}; {recovery}, then {again}"
            else:
                reason = f"{reason} ({recovery})"
        self.observer.health(job.slot, job.target, reason is None, reason or "")
        return reason

    def _recover(self, job: Job, place: Place) -> str:
        """Power-cycle the board, or restart an emulated one; say what happened."""
        if self._emulator(job.target) is not None:
            env = self._env(place)
            log = self.logs_dir / _safe(job.slot)
            stop = self._run(["emulate", "stop", job.target], env, 60.0, Path(f"{log}-stop.log"))
            start = self._run(
                ["emulate", "start", job.target], env, 300.0, Path(f"{log}-start.log")
            )
            if start.code == 0:
                return "emulator restarted"
            return f"emulator restart failed: {_last_error(start.stderr or stop.stderr)}"
        try:
            ok = place.power_cycle()
        except Exception as exc:  # a PDU driver's failure must not end the worker
            return f"power-cycle failed: {exc}"
        return "power-cycled" if ok else "power-cycle not available"

    def _attempt(self, job: Job, place: Place, number: int) -> Attempt:
        log = self.logs_dir / f"{job.index:03d}-{_safe(job.slot)}-{_safe(job.model)}-{number}.log"
        self.observer.started(job, place.name, number)
        self.results[job.index].launched = True
        proc = self._run(job.argv(), self._env(place), job.run.timeout, log, place)
        attempt = Attempt(number, "failed", round(proc.seconds, 3), proc.code, log=str(log))
        attempt.run_dir = _kept_run_dir(proc.stderr)
        if proc.timed_out:
            attempt.status, attempt.failure = "timeout", "timeout"
            attempt.error = f"timed out after {job.run.timeout:g} s (process group killed)"
        elif proc.interrupted:
            attempt.status = attempt.failure = attempt.error = "interrupted"
        elif proc.code == 0:
            try:
                data = json.loads(proc.stdout)
                attempt.run_dir = str(data["run_dir"])
                attempt.status = "passed"
            except (ValueError, KeyError, TypeError):
                attempt.failure, attempt.error = "error", "deploy printed no JSON result"
        else:
            attempt.failure = failure_class_of(proc.code or 1)
            attempt.error = f"{_last_error(proc.stderr)} [exit {proc.code}]"
        return attempt

    def _run_job(self, job: Job, health: dict[str, str | None]) -> None:
        result = self.results[job.index]
        asked = result.started = time.time()
        retries = self.plan.retry.retries
        try:
            with self.provider.hold(
                job.target,
                timeout=self.plan.place_timeout,
                priority=self.plan.priority,
                place=job.place,
            ) as place:
                result.started = time.time()
                result.place_wait = result.started - asked
                result.place = place.name
                if self.stop.is_set():  # the place came after the night was stopped
                    result.status, result.reason = "skipped", NEVER_RAN
                    return
                if job.slot not in health:
                    t0 = time.monotonic()
                    health[job.slot] = self._health(job, place)
                    result.health_s = round(time.monotonic() - t0, 3)
                if health[job.slot] is not None:
                    result.status, result.reason = "skipped", health[job.slot]
                    return
                number = 1
                while True:
                    attempt = self._attempt(job, place, number)
                    result.attempts.append(attempt)
                    if attempt.status == "passed" or attempt.status == "interrupted":
                        break
                    if number > retries or attempt.failure not in self.plan.retry.on:
                        break
                    if self.stop.is_set():
                        break
                    if attempt.failure in self.plan.retry.recover:
                        attempt.recovery = self._recover(job, place)
                    self.observer.retrying(job, attempt, attempt.recovery)
                    self.sleep(self.plan.retry.backoff)
                    number += 1
        except (EdgetoolError, TimeoutError) as exc:
            if not result.attempts and result.status != "skipped":
                result.status, result.failure = "failed", "place"
                result.error = f"no place for {job.target}: {exc}"
        except Exception as exc:  # one broken job never stops the others
            result.status, result.failure = "failed", "error"
            result.error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            result.finished = time.time()
            self._settle(result)
            self.observer.finished(result)

    @staticmethod
    def _settle(result: JobResult) -> None:
        if result.status in ("skipped", "failed") or not result.attempts:
            if result.status == "pending":
                result.status = "failed"
            return
        last = result.attempts[-1]
        result.run_dir = last.run_dir
        if last.status == "passed":
            result.status = "passed"
            summary = read_summary(Path(last.run_dir) / SUMMARY) if last.run_dir else None
            # The run's estimate (repetition medians) where it has one, else its pooled p50.
            reps = summary.repetitions if summary else None
            p50 = (reps.estimate_ms if reps else None) or (
                summary.latency_info.p50 if summary else None
            )
            result.p50_ms = float(p50) if p50 is not None else None
        else:
            result.status, result.failure, result.error = "failed", last.failure, last.error
        if result.run_dir:
            result.run_id = Path(result.run_dir).name

    def _worker(self, jobs: list[Job]) -> None:
        health: dict[str, str | None] = {}
        try:
            for job in jobs:
                result = self.results[job.index]
                if self.stop.is_set():
                    result.status, result.reason = "skipped", NEVER_RAN
                    self.observer.finished(result)
                    continue
                self._run_job(job, health)
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._done.set()

    # --- the night ----------------------------------------------------------------

    def start(self) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        groups = slots(self.jobs)
        self._running = len(groups)
        if not groups:
            self._done.set()
        for slot, jobs in groups.items():
            thread = threading.Thread(
                target=self._worker, args=(jobs,), name=f"farm-{slot}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def wait(self, timeout: float | None = None) -> bool:
        """True when every worker is done. Waits on an event in short steps, not on
        Thread.join: a Ctrl-C inside join() can leave a live thread reported as finished
        (CPython bpo-45274), and the interrupt must then still wait for the workers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def live(self) -> int:
        """How many processes of this night are running now."""
        with self._lock:
            return len(self._live)

    def kill_running(self) -> None:
        """Stop now: SIGKILL every running process group (no partial run is closed), and
        start nothing more. Workers then see their process gone and give their places back."""
        with self._lock:
            self.stop.set()
            procs = list(self._live)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def mark_unfinished(self) -> None:
        """Jobs without an outcome when the night ends: never started → skipped; started
        (a worker gave up waiting for it) → failed as interrupted."""
        for result in self.results.values():
            if result.status != "pending":
                continue
            if result.launched:
                result.status = "failed"
                result.failure = result.error = "interrupted"
            else:
                result.status, result.reason = "skipped", NEVER_RAN

    def interrupt(self, grace: float = 30.0) -> None:
        """Stop running jobs (their groups get SIGTERM, then SIGKILL), let workers leave
        their places, and mark what never ran. Past `grace`, running jobs are killed."""
        self.stop.set()
        if not self.wait(grace):
            self.kill_running()
            self.wait(RELEASE_GRACE)
        self.mark_unfinished()

    def run(self) -> list[JobResult]:
        self.start()
        self.wait()
        return self.ordered()

    def ordered(self) -> list[JobResult]:
        return [self.results[job.index] for job in self.jobs]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:80]
