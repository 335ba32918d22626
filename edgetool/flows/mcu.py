"""The deploy flow for microcontrollers: build → fit check → flash → upload → infer → journal.

The device speaks the bench text protocol; this module turns what it says into the same
typed events (hello, model, warmup, sample, summary) the Linux runner prints, so the
result store, `edgetool results` and every later step stay target-agnostic.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgetool import events as schema
from edgetool.errors import (
    ConfigError,
    DeviceError,
    EdgetoolError,
    Interrupted,
    ModelError,
    VerificationFailed,
)
from edgetool.export.artifact import Artifact
from edgetool.firmware.build import Firmware, build_firmware, check_fit
from edgetool.flows.base import DeployFlow, DeployOutcome, DeviceFacts, Observer, RunSettings
from edgetool.flows.journal import artifact_info, finish_run, open_run, summarize
from edgetool.mcu.protocol import BenchClient, DeviceInfo
from edgetool.results.manifest import ArtifactInfo, Parity, RunManifest, Summary, TargetInfo
from edgetool.results.store import RunWriter
from edgetool.targets import McuSettings, Target, open_port

log = logging.getLogger(__name__)

BATCH = 50
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4


def _mcu(target: Target) -> McuSettings:
    if target.mcu is None:
        raise ConfigError(f"{target.source}: target {target.name} is not a microcontroller")
    return target.mcu


def build_for(target: Target, artifact: Artifact | None) -> Firmware:
    """Firmware for the target's board with the artifact's C model, fit-checked."""
    mcu = _mcu(target)
    if artifact is not None and artifact.format != "c":
        raise ModelError(
            f"{artifact.path.name} is {artifact.format}; a microcontroller needs the C export.",
            hint="Pass a zoo model (NAME or NAME:c) so edgetool exports it with emx-onnx-cgen.",
        )
    label = _label(artifact)
    firmware = build_firmware(mcu.board, artifact.path if artifact else None, label)
    check_fit(firmware, mcu.flash_bytes, mcu.ram_bytes, label, target.name)
    return firmware


def _label(artifact: Artifact | None) -> str:
    if artifact is None:
        return "the protocol-only firmware"
    m = artifact.manifest
    return f"{m['model']}:c:{m['quant']}" if m.get("model") else artifact.path.name


def flash(target: Target, firmware: Firmware) -> str | None:
    """Put the image on the device; returns the serial URL to talk to it on (None: the
    target's own)."""
    mcu = _mcu(target)
    if mcu.flash == "qemu":
        from edgetool.emulate.qemu_m import QemuCortexM

        options = target.emulator.options if target.emulator is not None else None
        state = QemuCortexM(target.name, options).start(firmware.elf)
        return str(state["transport"]["url"])
    if mcu.flash == "pyocd":
        pyocd = shutil.which("pyocd")
        if pyocd is None:
            raise DeviceError(
                "pyocd not found: it flashes real boards.", hint="pip install 'edgetool[pyocd]'"
            )
        argv = [pyocd, "flash", "--no-wait"]
        if mcu.pyocd_target:
            argv += ["-t", mcu.pyocd_target]
        log.info("run %s", shlex.join([*argv, str(firmware.elf)]))
        result = subprocess.run(
            [*argv, str(firmware.elf)], capture_output=True, text=True, check=False, timeout=300
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise DeviceError(f"pyocd could not flash {target.name}: {' '.join(tail)}")
        time.sleep(1.0)  # the board resets after flashing; let the firmware boot
        return None
    raise ConfigError(
        f"target {target.name} has flash = 'none': its firmware is fixed.",
        hint="Run without --model to benchmark the firmware's own model.",
    )


@contextmanager
def connect(target: Target, url: str | None = None) -> Iterator[BenchClient]:
    _mcu(target)
    if target.emulator is not None and target.emulator_state is None and url is None:
        from edgetool.errors import ConnectError

        raise ConnectError(
            f"target {target.name} is an emulated board that is not running.",
            hint=f"Start it with `edgetool emulate start {target.name}`, or deploy a --model.",
        )
    where = url or target.transport.where()
    # Byte-port settings carry the reply timeout (serial and ble-uart both call it so).
    timeout = float(getattr(target.transport, "timeout", 10.0))
    client = BenchClient(open_port(target, url), where, timeout)
    try:
        yield client
    finally:
        client.close()


def input_tensors(artifact: Artifact, settings: RunSettings) -> dict[str, np.ndarray]:
    """The inputs to upload: --input (.npy / .npz) or seeded uniform [0, 1) floats."""
    specs = artifact.manifest.get("inputs") or []
    if not specs:
        raise ModelError(f"{artifact.path.name}: the manifest names no inputs")
    if settings.input is not None:
        if settings.input.suffix == ".npz":
            with np.load(settings.input) as data:
                loaded = {s["name"]: np.asarray(data[s["name"]]) for s in specs}
        else:
            loaded = {specs[0]["name"]: np.load(settings.input)}
    else:
        rng = np.random.default_rng(settings.seed)
        loaded = {s["name"]: rng.random(s["shape"], dtype=np.float32) for s in specs}
    tensors = {}
    for spec in specs:
        value = np.ascontiguousarray(loaded[spec["name"]], dtype=np.float32)
        if list(value.shape) != list(spec["shape"]):
            raise ModelError(
                f"input {spec['name']} has shape {list(value.shape)}, the model wants "
                f"{spec['shape']}"
            )
        tensors[spec["name"]] = value
    return tensors


def reference_outputs(artifact: Artifact, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """onnxruntime on the ONNX graph the C was generated from: the parity reference."""
    source = artifact.manifest.get("source_onnx") or {}
    path = Path(str(source.get("path", "")))
    if not path.is_file():
        raise ModelError(f"{artifact.path.name}: its source ONNX {path} is gone; re-export it")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    return np.concatenate([np.asarray(o, dtype=np.float32).ravel() for o in outputs])


def deploy_mcu(
    target: Target,
    artifact: Artifact | None,
    settings: RunSettings,
    results_root: Path,
    obs: Observer,
) -> DeployOutcome:
    mcu = _mcu(target)
    firmware: Firmware | None = None
    url = None
    if artifact is not None:
        firmware = build_for(target, artifact)
        obs.connected(
            f"firmware {mcu.board}  flash {firmware.flash_bytes:,} B / {mcu.flash_bytes:,}  "
            f"RAM {firmware.ram_bytes:,} B / {mcu.ram_bytes:,} (stack {firmware.stack_bytes:,})"
        )
        url = flash(target, firmware)
    with connect(target, url) as client:
        client.sync()
        info = client.info()
        obs.connected(f"{client.description}  {info.name} · model {info.model or '?'}")
        emulated = bool(
            target.emulator is not None and (target.emulator_state or {}).get("emulated_cpu", True)
        )
        from edgetool.emulate.qemu_m import TIME_BASE

        time_base = (
            TIME_BASE if emulated else f"device timer ({info.extended.get('timer', 'm-lap-us')})"
        )
        model_name = artifact.path.stem if artifact else (info.model or "firmware")
        writer = open_run(
            results_root,
            target,
            model_name,
            settings,
            client.description,
            _artifact_info(artifact, info),
            TargetInfo(emulated=emulated, time_base=time_base, board=mcu.board, flash=mcu.flash),
            RunManifest(extra={"firmware": firmware.to_dict() if firmware else None}),
        )
        return DeployOutcome(
            writer.dir,
            writer.run_id,
            writer.manifest,
            _measure(client, info, artifact, settings, writer, obs),
        )


def _artifact_info(artifact: Artifact | None, info: DeviceInfo) -> ArtifactInfo:
    """The model that ran: the artifact pushed, or only the name of the one built in."""
    if artifact is not None:
        return artifact_info(artifact)
    built_in = ArtifactInfo(name=info.model)
    built_in.keep_null("name")
    return built_in


def events(
    client: BenchClient, info: DeviceInfo, settings: RunSettings, samples_wanted: int
) -> Iterator[schema.Event]:
    """Drive warm-up and measurement; yield the typed events the Linux runner would print."""
    device = {
        "board": info.extended.get("board", "?"),
        "name": info.name,
        "profile": info.profile,
        "model": info.model,
        **info.extended,
    }
    yield schema.Hello(device, {"firmware": info.profile or "mlperf-tiny"}, "mcu-bench")
    yield schema.ModelInfo("firmware", info.profile, [], [], 0.0, 1)
    hz = info.tick_hz
    done, device_ns = 0, 0
    for repetition in range(settings.repetitions()):
        # No process to restart on a board: a repetition is its own warm-up and window.
        started = time.monotonic()
        if hz and client.line_check:
            # `infer`'s lap line has no checksum: time the first inference with `xinfer`.
            client.infer(0, settings.warmup)
            first_ns = client.xinfer(1)[0] * 1_000_000_000 // hz
        else:
            first_ns = client.infer(1, settings.warmup)[0] * 1000
        yield schema.Warmup(settings.warmup, time.monotonic() - started, first_ns)
        in_window = 0
        wall = time.monotonic()
        while in_window < samples_wanted or (
            settings.duration and time.monotonic() - wall < settings.duration
        ):
            if hz:
                batch = [t * 1_000_000_000 // hz for t in client.xinfer(BATCH)]
            else:
                batch = [client.infer(1, 0)[0] * 1000]  # MLPerf Tiny firmware: laps in µs
            if not settings.duration:
                batch = batch[: samples_wanted - in_window]
            yield schema.Samples(done, batch, repetition=repetition)
            done += len(batch)
            in_window += len(batch)
            device_ns += sum(batch)
    # Device time, not host time: protocol round trips are not the device's throughput.
    yield schema.Summary(done, device_ns)


def journal(
    stream: Iterator[schema.Event],
    writer: RunWriter,
    settings: RunSettings,
    obs: Observer,
    samples: list[int],
    reps: list[int] | None = None,
) -> tuple[schema.Warmup | None, schema.Summary | None]:
    """Write a bench-protocol device's events into the run as they come; `samples` (and
    `reps`, each sample's window) grow in place, so a failure part-way keeps what was
    measured."""
    warm: schema.Warmup | None = None
    end: schema.Summary | None = None
    windows = settings.repetitions()
    expected = settings.effective_iterations() * windows
    for event in stream:
        if not (isinstance(event, schema.Warmup) and warm is not None):
            obs.event(event)
        if isinstance(event, schema.Hello):
            writer.manifest.device = event.device
            writer.manifest.runtimes = event.runtimes
            writer.manifest.runner = event.runner
            writer.save()
        elif isinstance(event, schema.Warmup):
            if warm is None:
                warm = event
                obs.measuring(0 if settings.duration else expected, settings.duration * windows)
        elif isinstance(event, schema.Samples):
            writer.append_samples(event.first_index, event.ns, repetition=event.repetition)
            samples.extend(event.ns)
            if reps is not None:
                reps.extend([event.repetition] * len(event.ns))
            obs.progress(len(samples))
        elif isinstance(event, schema.Summary):
            end = event
    return warm, end


ParityCheck = Callable[[bytes], tuple[dict[str, Any], str | None]]
"""The device's output bytes -> (the run's parity entry, why it failed or None)."""


def measure_bench(
    client: BenchClient,
    info: DeviceInfo,
    settings: RunSettings,
    writer: RunWriter,
    obs: Observer,
    prepare: Callable[[], ParityCheck | None],
    wire: Callable[[], dict[str, Any]] | None = None,
    **finish: Any,
) -> Summary:
    """One bench-protocol run on a prepared device: `prepare` loads what the run needs
    (inside the guard, so a failure there still closes the run) and says how to check
    the outputs; samples already measured survive any later failure."""
    samples: list[int] = []
    reps: list[int] = []
    end: schema.Summary | None = None
    warm: schema.Warmup | None = None
    failure: EdgetoolError | None = None
    parity: dict[str, Any] | None = None
    writer.manifest.repetition_kind = "window"
    writer.save()
    try:
        check = prepare()
        stream = events(client, info, settings, settings.effective_iterations())
        warm, end = journal(stream, writer, settings, obs, samples, reps)
        if check is not None:
            parity, problem = check(client.xresults(info.output_count))
            writer.manifest.parity = Parity.from_dict(parity)
            writer.save()
            if problem is not None:
                failure = VerificationFailed(problem)
    except KeyboardInterrupt as exc:
        failure = Interrupted(f"interrupted after {len(samples)} samples")
        failure.__cause__ = exc
    except EdgetoolError as exc:
        failure = exc
    if wire is not None:
        # Whether every sample was checksum-verified on the wire, and what noise cost.
        report = wire()
        writer.manifest.extra["wire"] = report
        writer.save()
        finish = {**finish, "wire_checksum": report["wire_checksum"]}
        finish["bad_lines"] = report["bad_lines"]
    return finish_bench_run(writer, samples, warm, end, failure, reps=reps, parity=parity, **finish)


def _measure(
    client: BenchClient,
    info: DeviceInfo,
    artifact: Artifact | None,
    settings: RunSettings,
    writer: RunWriter,
    obs: Observer,
) -> Summary:
    def prepare() -> ParityCheck | None:
        if artifact is None or not info.is_edgetool:
            return None
        feeds = input_tensors(artifact, settings)
        payload = b"".join(v.tobytes() for v in feeds.values())
        wanted = int(info.extended.get("in", "0"))
        if wanted != len(payload):
            raise ModelError(
                f"the firmware takes {wanted} input bytes, the model's inputs are "
                f"{len(payload)}: the board runs a different model"
            )
        sent_before = client.stats.sent
        client.load_binary(payload)
        writer.manifest.extra["upload"] = {
            "method": "xbin",
            "payload_bytes": len(payload),
            "wire_bytes": client.stats.sent - sent_before,
            "retransmits": client.stats.retransmits,
        }
        writer.save()

        def check(raw: bytes) -> tuple[dict[str, Any], str | None]:
            assert artifact is not None
            got = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            want = reference_outputs(artifact, feeds)
            same = got.shape == want.shape
            ok = same and bool(np.allclose(got, want, atol=PARITY_ATOL, rtol=PARITY_RTOL))
            parity = {
                "reference": "onnxruntime on the source ONNX, same input",
                "max_abs": float(np.max(np.abs(got - want))) if same else None,
                "atol": PARITY_ATOL,
                "rtol": PARITY_RTOL,
                "ok": ok,
                "outputs": got.tolist(),
            }
            problem = (
                f"firmware outputs differ from onnxruntime (max abs {parity['max_abs']}, "
                f"tolerance {PARITY_ATOL})"
            )
            return parity, None if ok else problem

        return check

    return measure_bench(
        client, info, settings, writer, obs, prepare, wire=client.wire_report,
        time_base=writer.manifest.target_info.time_base,
    )  # fmt: skip


def finish_bench_run(
    writer: RunWriter,
    samples: list[int],
    warm: schema.Warmup | None,
    end: schema.Summary | None,
    failure: EdgetoolError | None,
    reps: list[int] | None = None,
    **extra: Any,
) -> Summary:
    """Summarise and close a bench-protocol run: samples already measured are kept (run
    partial) on any failure except a parity mismatch, where the timings are whole."""
    if failure is not None and not isinstance(failure, VerificationFailed):
        samples, reps = writer.journaled()
    ends = [end] if end is not None else []
    summary = summarize(samples, ends, warm, None, reps, "window") if samples else None
    if summary is not None:  # the flow's own keys (parity, time base...), as it gave them
        summary = Summary.from_dict({**summary.to_dict(), **extra})
    status = (
        "partial"
        if samples and not isinstance(failure, VerificationFailed)
        else ("complete" if samples else "failed")
    )
    finish_run(writer, summary, failure, status)
    assert summary is not None
    return summary


def mcu_facts(target: Target) -> DeviceFacts:
    """Sync on the bench protocol and report what the firmware says."""
    with connect(target) as client:
        client.sync()
        info = client.info()
    rows = [("name", info.name), ("profile", info.profile), ("model", info.model)]
    if info.extended:
        rows.append(("edgetool", ", ".join(f"{k}={v}" for k, v in info.extended.items())))
    else:
        rows.append(("edgetool", "plain MLPerf Tiny firmware (no edgetool extensions)"))
    return DeviceFacts(client.description, asdict(info), rows, status="answers")


FLOW = DeployFlow(
    deploy_mcu,
    mcu_facts,
    ":c",
    supports=frozenset({"--input", "--save-outputs", "--duration"}),
    refusal="the firmware runs one thread, its own runtime, no meter is read and no "
    "profile is taken on microcontroller boards",
)
"""Microcontrollers over a UART: firmware built with the model, the bench protocol."""
