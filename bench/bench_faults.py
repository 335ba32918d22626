#!/usr/bin/env python3
"""The fault campaign of issue 19, re-measured: links cut mid-upload, a noisy serial
link, a farm killed mid-job, and concurrent deploys of one new model.

1. SSH cuts: `--cuts` uploads (`edgetool deploy` of a new ~8 MB ONNX model each time)
   through a TCP proxy on 127.0.0.1 (edgetool.testing.cut_link) that cuts the
   connection after 2-6 MB went upstream, alternately with a FIN and a RST; each
   followed by a retry straight to the sshd. Counts: cuts that left a file at the
   final path that is not whole (goal 0), cuts answered by exactly one `error:` line
   with no traceback and no library text (goal all), retries that completed (goal all).
2. Serial noise: `--serial` deploys of cbnet-classifier to the emulated Cortex-M4
   (QEMU mps2-an386, -icount) through edgetool.testing.noisy_link flipping bits at
   BER 1e-3 in both directions. The firmware is booted once; each deploy runs the mcu
   flow unchanged except that its flash step hands back the noisy link's URL instead
   of booting QEMU again (so every deploy uploads the model's input through the noise,
   measures, and reads the outputs back for the parity check). Counts: corrupt runs
   accepted (parity failed, or a sample outside the clean link's tick range; goal 0),
   crashes (an exception that is not an edgetool error; goal 0), complete runs whose
   every sample came through a CRC-checked line (`wire.wire_checksum`; goal all), and
   what the noise cost (bad lines dropped, commands asked again, frames resent).
3. A killed farm night: `edgetool farm run` of a 600 s tiny-mlp job on a loopback
   device, `kill -9` of the farm (its own session) once the job measures. Checks: no
   runner left on the device (a `device_runner.py` under the device's workdir), the
   board's local lock never free while a job process of the night lives and free
   after, and the next night on the board runs and passes.
4. `--concurrent` deploys at once of one new ~8 MB model on a fresh loopback device:
   all exit 0, one whole file at the final path, no temporary file left.

    python bench/bench_faults.py            # 50 cuts, 100 serial deploys: ~20 min
    python bench/bench_faults.py --quick    # 10 cuts, 10 serial deploys
    python bench/bench_faults.py --only ssh,farm

Only 127.0.0.1 is contacted; state lives in a scratch dir (see _common.scratch).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULT_PREFIX, loopback, scratch

PARTS = ("ssh", "serial", "farm", "concurrent")
STRAY = ("Traceback", "paramiko", "Socket exception", "EOFError", "Exception", "socket.")
"""Text that must never reach a user's terminal without -v: tracebacks, library lines."""

DEVICE = """description = "fault bench device {name} (loopback sshd)"
kind = "linux"
workdir = "edgetool-{name}"
runtimes = ["onnxruntime"]

[transport]
type = "ssh"
host = "127.0.0.1"
use_ssh_config = false
connect_timeout = 10
idle_timeout = 30

[emulator]
type = "sshd"
"""

FARM_PLAN = """name = "{name}"
targets = ["{target}"]
[run]
duration = {duration}
timeout = {timeout}
place_timeout = 60
[[models]]
name = "tiny-mlp"
formats = ["onnx"]
"""


def log(message: str) -> None:
    print(message, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_model(path: Path, seed: int, rows: int = 1024, cols: int = 2048) -> Path:
    """A valid ONNX model of rows × cols float32 weights (8 MB by default), new each seed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "faults",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def edgetool(args: list[str], env: dict[str, str], timeout: float = 300) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "edgetool", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=timeout,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def one_clean_error(code: int, stderr: str) -> bool:
    """A failure the way a user should see it: non-zero, one `error:` line, no traceback
    or library text anywhere on stderr."""
    return code != 0 and len(error_lines(stderr)) == 1 and not any(s in stderr for s in STRAY)


def processes_with(*needles: str) -> list[int]:
    """Pids (not this one) whose command line contains every needle."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            found.append(int(entry.name))
    return found


def with_environ(marker: bytes) -> list[int]:
    """Pids whose environment holds `marker` (a NAME=value entry)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                alive.append(int(entry.name))
    return alive


def wait_until(check: Any, within: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return bool(check())


# --- 1. SSH uploads cut mid-stream ---------------------------------------------------


def ssh_target(path: Path, state: dict[str, Any], port: int, known: Path, workdir: str) -> None:
    tp = state["transport"]
    path.write_text(
        f'kind = "linux"\nworkdir = "{workdir}"\npython = "{state["python"]}"\n'
        f'runtimes = ["onnxruntime"]\n[transport]\ntype = "ssh"\nhost = "127.0.0.1"\n'
        f'port = {port}\nuser = "{tp["user"]}"\nidentity_file = "{tp["identity_file"]}"\n'
        f'known_hosts = "{known}"\nuse_ssh_config = false\nidle_timeout = 30\n'
    )


def ssh_cuts(root: Path, targets: Path, env: dict[str, str], cuts: int) -> dict[str, Any]:
    from edgetool.errors import TransferError
    from edgetool.testing.cut_link import CuttingProxy

    rows = []
    with loopback() as state:
        sshd_port = int(state["transport"]["port"])
        workdir = f"{state['workdir']}/cuts"
        key = Path(state["transport"]["known_hosts"]).read_text().split()[1:3]
        direct_known = Path(state["transport"]["known_hosts"])
        ssh_target(targets / "direct.toml", state, sshd_port, direct_known, workdir)
        for i in range(cuts):
            reset = i % 2 == 1
            cut_after = (2 << 20) + (i * 997 * 1024) % (4 << 20)  # 2-6 MB of the 8 MB
            model = new_model(root / "cut-models" / f"cut{i:02d}.onnx", seed=1000 + i)
            proxy = CuttingProxy(sshd_port, cut_after=cut_after, reset=reset)
            known = root / "cut_known_hosts"
            known.write_text(f"[127.0.0.1]:{proxy.address[1]} {' '.join(key)}\n")
            ssh_target(targets / "cut.toml", state, proxy.address[1], known, workdir)
            run = ["-m", str(model), "-n", "5", "-r", "1", "--warmup", "1"]
            try:
                cut = edgetool(["deploy", "-t", "cut", *run], env)
            finally:
                proxy.close()
            finals = list(Path(workdir).rglob(model.name))
            whole = sha256(model)
            torn = sum(sha256(f) != whole for f in finals)
            clean = one_clean_error(cut.returncode, cut.stderr)
            retry = edgetool(["deploy", "-t", "direct", *run], env)
            after = list(Path(workdir).rglob(model.name))
            row = {
                "i": i,
                "how": "rst" if reset else "fin",
                "cut_after": cut_after,
                "cut": proxy.cut_at is not None,
                "exit": cut.returncode,
                "transfer_error_code": cut.returncode == TransferError.exit_code,
                "one_clean_error": clean,
                "error": (error_lines(cut.stderr) or [cut.stderr.strip()[-200:]])[0][:200],
                "final_files_after_cut": len(finals),
                "torn_final_files": torn,
                "retry_exit": retry.returncode,
                "retry_whole": len(after) == 1 and sha256(after[0]) == whole,
            }
            if not clean:
                row["stderr"] = cut.stderr[-600:]
            if retry.returncode != 0:
                row["retry_stderr"] = retry.stderr[-600:]
            rows.append(row)
            log(
                f"  cut {i + 1}/{cuts} {row['how']} at {cut_after >> 10} KiB: exit {cut.returncode}"
                f", one clean error {clean}, torn {torn}, retry exit {retry.returncode}"
            )
    # What the users read, ports and sizes folded so equal messages count together.
    messages = Counter(re.sub(r"\d+", "N", r["error"]) for r in rows)
    return {
        "cuts": cuts,
        "really_cut": sum(r["cut"] for r in rows),
        "torn_final_files": sum(r["torn_final_files"] for r in rows),
        "left_a_final_file": sum(r["final_files_after_cut"] > 0 for r in rows),
        "one_clean_error": sum(r["one_clean_error"] for r in rows),
        "transfer_error_exit": sum(r["transfer_error_code"] for r in rows),
        "exit_codes": dict(Counter(str(r["exit"]) for r in rows)),
        "retries_completed": sum(r["retry_exit"] == 0 and r["retry_whole"] for r in rows),
        "error_heads": dict(messages.most_common(5)),
        "bad_rows": [r for r in rows if not r["one_clean_error"] or r["retry_exit"] != 0],
    }


# --- 2. serial deploys through a bit-flipping link ------------------------------------


def serial_noise(root: Path, deploys: int, samples: int, ber: float) -> dict[str, Any]:
    import edgetool.flows.mcu as mcu_flow
    from edgetool.emulate.qemu_m import QemuCortexM
    from edgetool.errors import EdgetoolError, VerificationFailed
    from edgetool.export.build import export
    from edgetool.flows import deploy
    from edgetool.flows.base import RunSettings
    from edgetool.mcu.protocol import BenchClient
    from edgetool.targets import load_target
    from edgetool.testing.noisy_link import BitFlipProxy
    from edgetool.transport.serial import open_port

    base = load_target("mcu-m4-qemu")
    target = dataclasses.replace(base, transport=dataclasses.replace(base.transport, timeout=5))
    log("  exporting and building cbnet-classifier for the M4 ...")
    artifact = export("cbnet-classifier", "c")
    firmware = mcu_flow.build_for(target, artifact)
    qemu = QemuCortexM("bench-faults")
    state = qemu.start(firmware.elf)
    url = str(state["transport"]["url"])
    port = int(url.rsplit(":", 1)[1])
    results = root / "serial-results"
    rows: list[dict[str, Any]] = []
    real_flash = mcu_flow.flash
    try:
        client = BenchClient(open_port(url, 115200, 20), url, 20)
        try:
            client.sync()
            hz = int(client.info().extended["tick-hz"])
            truth = client.xinfer(50)
        finally:
            client.close()
        allowed = {t * 1_000_000_000 // hz for t in range(min(truth), max(truth) + 1)}
        log(f"  clean link: ticks {sorted(set(truth))} at {hz} Hz")
        settings = RunSettings(iterations=samples, repeat=1, warmup=2)
        for seed in range(deploys):
            proxy = BitFlipProxy(("127.0.0.1", port), ber, seed=seed, both=True)
            # The board already runs this firmware: "flashing" is reaching it through noise.
            mcu_flow.flash = lambda _target, _firmware, url=proxy.url: url  # type: ignore[assignment, misc]
            row: dict[str, Any] = {"seed": seed}
            started = time.monotonic()
            run_dir: Path | None = None
            try:
                outcome = deploy(target, artifact, settings, results)
                run_dir = outcome.run_dir
                row["outcome"] = "ok"
            except VerificationFailed as exc:
                row["outcome"] = "parity-failed"
                row["error"] = str(exc)[:200]
                run_dir = getattr(exc, "run_dir", None)
            except EdgetoolError as exc:
                row["outcome"] = "error"
                row["error"] = str(exc)[:200]
                row["one_line"] = "\n" not in str(exc)
                run_dir = getattr(exc, "run_dir", None)
            except Exception as exc:  # a crash: what this counts
                row["outcome"] = "crash"
                row["error"] = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                proxy.close()
                mcu_flow.flash = real_flash
            row["s"] = round(time.monotonic() - started, 2)
            row["flipped_bits"] = proxy.flipped
            if run_dir is None:  # the run directory of a failure: the newest one
                dirs = sorted(results.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
                run_dir = dirs[-1].parent if dirs and row["outcome"] != "crash" else None
            if run_dir is not None:
                row |= run_facts(Path(run_dir), allowed)
            rows.append(row)
            log(
                f"  serial {seed + 1}/{deploys}: {row['outcome']}, status {row.get('status')}, "
                f"bad lines {row.get('bad_lines')}, retries {row.get('retries')}, "
                f"resent frames {row.get('retransmits')}, {row['s']} s"
            )
    finally:
        mcu_flow.flash = real_flash
        qemu.stop()
    complete = [r for r in rows if r.get("status") == "complete" and r["outcome"] == "ok"]
    corrupt = [
        r
        for r in rows
        if r["outcome"] == "parity-failed"
        or r.get("parity_ok") is False
        or r.get("outside_clean_range", 0) > 0
    ]
    return {
        "ber": ber,
        "both_directions": True,
        "deploys": deploys,
        "samples_each": samples,
        "complete": len(complete),
        "accepted_corrupt": len(corrupt),
        "crashes": sum(r["outcome"] == "crash" for r in rows),
        "clean_errors": sum(r["outcome"] == "error" and r.get("one_line", False) for r in rows),
        "complete_all_checksum_verified": sum(bool(r.get("wire_checksum")) for r in complete),
        "complete_samples": sum(r.get("samples", 0) for r in complete),
        "samples_outside_clean_range": sum(r.get("outside_clean_range", 0) for r in rows),
        "bad_lines": sum(r.get("bad_lines") or 0 for r in rows),
        "retries": sum(r.get("retries") or 0 for r in rows),
        "retransmits": sum(r.get("retransmits") or 0 for r in rows),
        "flipped_bits": sum(r["flipped_bits"] for r in rows),
        "median_s": sorted(r["s"] for r in rows)[len(rows) // 2],
        "max_s": max(r["s"] for r in rows),
        "bad_rows": [r for r in rows if r not in complete],
    }


def run_facts(run_dir: Path, allowed: set[int]) -> dict[str, Any]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    wire = manifest.get("wire") or {}
    parity = manifest.get("parity") or {}
    values = []
    samples_file = run_dir / "samples.jsonl"
    if samples_file.is_file():
        for line in samples_file.read_text().splitlines():
            try:
                values += json.loads(line).get("ns", [])
            except ValueError:
                continue  # a torn last line: readers skip it
    return {
        "status": manifest.get("status"),
        "parity_ok": parity.get("ok"),
        "samples": len(values),
        "outside_clean_range": sum(ns not in allowed for ns in values),
        "wire_checksum": wire.get("wire_checksum"),
        "bad_lines": wire.get("bad_lines"),
        "retries": wire.get("retries"),
        "retransmits": wire.get("retransmits"),
    }


# --- 3. a farm night killed mid-job ---------------------------------------------------


def running_job(night: Path) -> bool:
    for manifest in night.glob("runs/*/manifest.json"):
        try:
            if json.loads(manifest.read_text()).get("status") == "running":
                return True
        except (OSError, ValueError):
            continue
    return False


def killed_farm(root: Path, targets: Path, env: dict[str, str]) -> dict[str, Any]:
    from edgetool.emulate.sshd import LoopbackSshd
    from edgetool.errors import DeviceError
    from edgetool.farm.places import LocalLocks

    name = "faultfarm"
    (targets / f"{name}.toml").write_text(DEVICE.format(name=name))
    sshd = LoopbackSshd(name)
    state = sshd.start()
    workdir = str(state["workdir"])
    long = root / "long.toml"
    long.write_text(FARM_PLAN.format(name="long", target=name, duration=600, timeout=900))
    night = root / "night-killed"
    out: dict[str, Any] = {}
    try:
        with (root / "killed-farm.err").open("wb") as err:
            farm = subprocess.Popen(
                [sys.executable, "-m", "edgetool", "farm", "run", str(long), "--out", str(night)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # `setsid edgetool farm run … &`
            )
        try:
            measuring = wait_until(lambda: running_job(night), 180)
            out["job_measuring_before_kill"] = measuring
            out["runners_before_kill"] = len(processes_with("device_runner.py", workdir))
        finally:
            farm.send_signal(signal.SIGKILL)
            farm.wait(30)
        killed_at = time.monotonic()
        log(f"  farm killed; the device had {out['runners_before_kill']} runner(s)")
        job_marker = f"EDGETOOL_RESULTS={night / 'runs'}".encode()
        locks = LocalLocks()
        violations = 0
        # Poll: while a job process of the killed night lives, the board must stay locked.
        while time.monotonic() - killed_at < 120:
            if not with_environ(job_marker) and not processes_with("device_runner.py", workdir):
                break
            try:
                with locks.hold(name, timeout=0):
                    violations += bool(with_environ(job_marker))
            except DeviceError:
                pass
            time.sleep(0.1)
        out["s_until_device_and_jobs_clean"] = round(time.monotonic() - killed_at, 2)
        out["runners_left"] = len(processes_with("device_runner.py", workdir))
        out["job_processes_left"] = len(with_environ(job_marker))
        out["lock_free_while_job_lived"] = violations
        try:
            with locks.hold(name, timeout=5):
                out["lock_free_after"] = True
        except DeviceError:
            out["lock_free_after"] = False
        manifests = [json.loads(m.read_text()) for m in night.glob("runs/*/manifest.json")]
        out["killed_run_status"] = [m.get("status") for m in manifests]
        short = root / "short.toml"
        short.write_text(FARM_PLAN.format(name="short", target=name, duration=1, timeout=120))
        again = root / "night-again"
        nxt = edgetool(["farm", "run", str(short), "--out", str(again)], env, timeout=300)
        passed = 0
        if (again / "summary.json").is_file():
            passed = json.loads((again / "summary.json").read_text())["counts"].get("passed", 0)
        out["next_night_exit"] = nxt.returncode
        out["next_night_passed"] = passed
        if nxt.returncode != 0:
            out["next_night_stderr"] = nxt.stderr[-600:]
    finally:
        for pid in processes_with("device_runner.py", workdir):
            os.kill(pid, signal.SIGKILL)
        sshd.stop()
    return out


# --- 4. concurrent deploys of one new model ------------------------------------------


def concurrent(root: Path, targets: Path, env: dict[str, str], count: int) -> dict[str, Any]:
    from edgetool.emulate.sshd import LoopbackSshd

    name = "faultfresh"
    (targets / f"{name}.toml").write_text(DEVICE.format(name=name))
    sshd = LoopbackSshd(name)
    state = sshd.start()
    workdir = Path(state["workdir"])
    model = new_model(root / "together" / "together.onnx", seed=7)
    argv = [sys.executable, "-m", "edgetool", "deploy", "-t", name, "-m", str(model)]
    argv += ["-n", "5", "-r", "1", "--warmup", "1"]
    try:
        procs = [
            subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            for _ in range(count)
        ]
        errors = [p.communicate(timeout=600)[1] for p in procs]
    finally:
        sshd.stop()
    codes = [p.returncode for p in procs]
    finals = list(workdir.rglob(model.name))
    whole = sha256(model)
    siblings = sorted(p.name for f in finals for p in f.parent.iterdir() if p.name != model.name)
    temporaries = [p.name for p in workdir.rglob("*") if ".part" in p.name or ".tmp" in p.name]
    out: dict[str, Any] = {
        "deploys": count,
        "succeeded": codes.count(0),
        "final_files": len(finals),
        "whole": len(finals) == 1 and sha256(finals[0]) == whole,
        "other_files_beside_it": siblings,
        "temporaries_left": temporaries,
    }
    failed = [e[-400:] for e, c in zip(errors, codes, strict=True) if c != 0]
    if failed:
        out["failures"] = failed
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 cuts, 10 serial deploys")
    parser.add_argument("--cuts", type=int, default=None, help="SSH cuts [50; quick 10]")
    parser.add_argument("--serial", type=int, default=None, help="serial deploys [100; quick 10]")
    parser.add_argument("--samples", type=int, default=100, help="samples per serial deploy")
    parser.add_argument("--ber", type=float, default=1e-3)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--only", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    args = parser.parse_args(argv)
    cuts = args.cuts if args.cuts is not None else (10 if args.quick else 50)
    serial = args.serial if args.serial is not None else (10 if args.quick else 100)
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {PARTS}")
    report: dict[str, Any] = {"bench": "faults", "quick": args.quick}
    report["loadavg_before"] = os.getloadavg()
    with scratch() as root:
        targets = root / "fault-targets"
        targets.mkdir(exist_ok=True)
        env = {**os.environ, "EDGETOOL_TARGETS": str(targets), "OMP_NUM_THREADS": "1"}
        started = time.monotonic()
        if "ssh" in parts:
            log(f"1. {cuts} SSH uploads cut mid-stream (FIN/RST), each retried ...")
            report["ssh_cuts"] = ssh_cuts(root, targets, env, cuts)
        if "serial" in parts:
            log(f"2. {serial} serial deploys at BER {args.ber:g} both directions ...")
            report["serial"] = serial_noise(root, serial, args.samples, args.ber)
        if "farm" in parts:
            log("3. a farm night killed mid-job ...")
            report["killed_farm"] = killed_farm(root, targets, env)
        if "concurrent" in parts:
            log(f"4. {args.concurrent} concurrent deploys of one new model ...")
            report["concurrent"] = concurrent(root, targets, env, args.concurrent)
        report["seconds"] = round(time.monotonic() - started, 1)
    report["loadavg_after"] = os.getloadavg()
    report["met"] = goals_met(report)
    print_summary(report)
    print(RESULT_PREFIX + json.dumps(report), flush=True)
    return 0 if all(report["met"].values()) else 1


def goals_met(report: dict[str, Any]) -> dict[str, bool]:
    met = {}
    if "ssh_cuts" in report:
        s = report["ssh_cuts"]
        met["ssh_cuts"] = (
            s["torn_final_files"] == 0
            and s["one_clean_error"] == s["cuts"] == s["really_cut"]
            and s["retries_completed"] == s["cuts"]
        )
    if "serial" in report:
        s = report["serial"]
        met["serial"] = (
            s["accepted_corrupt"] == 0
            and s["crashes"] == 0
            and s["complete_all_checksum_verified"] == s["complete"]
        )
    if "killed_farm" in report:
        f = report["killed_farm"]
        met["killed_farm"] = (
            f["runners_before_kill"] > 0
            and f["runners_left"] == 0
            and f["job_processes_left"] == 0
            and f["lock_free_while_job_lived"] == 0
            and f["lock_free_after"]
            and f["next_night_exit"] == 0
            and f["next_night_passed"] == 1
        )
    if "concurrent" in report:
        c = report["concurrent"]
        met["concurrent"] = (
            c["succeeded"] == c["deploys"]
            and c["whole"]
            and not c["temporaries_left"]
            and not c["other_files_beside_it"]
        )
    return met


def print_summary(report: dict[str, Any]) -> None:
    log(f"\n=== faults ({report['seconds']:.0f} s, load average {report['loadavg_before']})")
    if "ssh_cuts" in report:
        s = report["ssh_cuts"]
        log(
            f"SSH cuts: {s['really_cut']}/{s['cuts']} cut; torn final files "
            f"{s['torn_final_files']}; one clean error line {s['one_clean_error']}/{s['cuts']} "
            f"(exit codes {s['exit_codes']}); retries completed "
            f"{s['retries_completed']}/{s['cuts']}"
        )
    if "serial" in report:
        s = report["serial"]
        log(
            f"serial BER {s['ber']:g} both ways: {s['complete']}/{s['deploys']} complete, "
            f"accepted corrupt {s['accepted_corrupt']}, crashes {s['crashes']}, clean errors "
            f"{s['clean_errors']}; complete and checksum-verified "
            f"{s['complete_all_checksum_verified']}/{s['complete']} "
            f"({s['complete_samples']} samples, {s['samples_outside_clean_range']} outside the "
            f"clean range); bad lines {s['bad_lines']}, retries {s['retries']}, frames resent "
            f"{s['retransmits']}, bits flipped {s['flipped_bits']}; per deploy median "
            f"{s['median_s']} s, max {s['max_s']} s"
        )
    if "killed_farm" in report:
        f = report["killed_farm"]
        log(
            f"killed farm: runners before kill {f['runners_before_kill']}, left "
            f"{f['runners_left']} (clean after {f['s_until_device_and_jobs_clean']} s); job "
            f"processes left {f['job_processes_left']}; lock free while a job lived "
            f"{f['lock_free_while_job_lived']} times, free after {f['lock_free_after']}; "
            f"killed run {f['killed_run_status']}; next night exit {f['next_night_exit']}, "
            f"passed {f['next_night_passed']}"
        )
    if "concurrent" in report:
        c = report["concurrent"]
        log(
            f"concurrent: {c['succeeded']}/{c['deploys']} succeeded, final files "
            f"{c['final_files']} (whole {c['whole']}), beside it {c['other_files_beside_it']}, "
            f"temporaries left {c['temporaries_left']}"
        )
    log(f"goals met: {report['met']}")


if __name__ == "__main__":
    sys.exit(main())
