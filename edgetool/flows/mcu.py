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
from dataclasses import asdict, dataclass
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
    UsageError,
    VerificationFailed,
)
from edgetool.export.artifact import Artifact
from edgetool.firmware.build import Firmware, build_firmware, check_fit
from edgetool.flows.base import DeployFlow, DeployOutcome, DeviceFacts, Observer, RunSettings
from edgetool.flows.journal import artifact_info, finish_run, open_run, summarize
from edgetool.mcu.protocol import BenchClient, DeviceInfo
from edgetool.results.manifest import (
    ArtifactInfo,
    Parity,
    RunManifest,
    Summary,
    TargetInfo,
    Top1Summary,
)
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


# --- MLPerf Tiny boards: a fixed firmware, its own model (flash = "none") ---------------

REFERENCE_ATOL = 0.01
"""Default score tolerance against --reference: DUTs print scores with 3 decimals
(EEMBC's `%0.3f`) and an int8 model's scores move in steps of 1/256 between kernels."""


@dataclass(frozen=True)
class DutInput:
    """What a fixed firmware reads with `db load`: its buffer is bytes, so what matters is
    the byte count and the dtype the firmware casts them to."""

    shape: tuple[int, ...]
    dtypes: tuple[str, ...]
    source: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtypes[0]).itemsize


MLPERF_TINY_INPUTS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    # The benchmark's reference models (`m-model-[CODE]`): 8-bit images or features,
    # sent as the raw bytes of the runner's input files (uint8 or int8 alike).
    "ic01": ((1, 32, 32, 3), ("int8", "uint8")),
    "vww01": ((1, 96, 96, 3), ("int8", "uint8")),
    "kws01": ((1, 49, 10, 1), ("int8", "uint8")),
}


def dut_input_spec(target: Target, model_code: str | None) -> DutInput | None:
    """The target TOML's [mcu] input_shape/input_dtype, else the MLPerf Tiny model code's
    known input, else None (unknown: nothing can be checked)."""
    mcu = _mcu(target)
    if mcu.input_shape is not None and mcu.input_dtype is not None:
        return DutInput(mcu.input_shape, (mcu.input_dtype,), f"[mcu] in {target.source.name}")
    known = MLPERF_TINY_INPUTS.get((model_code or "").lower())
    if known is None:
        return None
    return DutInput(known[0], known[1], f"MLPerf Tiny model {model_code}")


def load_array(path: Path, what: str) -> dict[str, np.ndarray]:
    """An .npy (one array) or .npz file's arrays by name; a bad file is one clear line."""
    if path.suffix not in (".npy", ".npz"):
        raise ModelError(f"{what} {path}: expected an .npy or .npz file")
    try:
        with open(path, "rb") as handle:
            if path.suffix == ".npy":
                return {"": np.load(handle, allow_pickle=False)}
            with np.load(handle, allow_pickle=False) as data:
                return {name: np.asarray(data[name]) for name in data.files}
    except OSError as exc:
        raise ModelError(f"{what} {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ModelError(f"{what} {path} is not a numpy file ({exc})") from exc


def dut_input(path: Path) -> np.ndarray:
    """--input for a DUT: one array (a board has one input buffer)."""
    arrays = load_array(path, "--input")
    if len(arrays) != 1:
        names = ", ".join(sorted(arrays)) or "none"
        raise ModelError(
            f"--input {path.name} holds {len(arrays)} arrays ({names}); an MLPerf Tiny "
            f"board takes one input"
        )
    return next(iter(arrays.values()))


def check_dut_input(array: np.ndarray, spec: DutInput, name: str) -> None:
    """The array the DUT reads, exactly: edgetool never casts (1.9 -> 1 silently)."""
    wanted = " or ".join(spec.dtypes)
    shape = "x".join(map(str, spec.shape))
    if array.dtype.name not in spec.dtypes:
        raise ModelError(
            f"--input {name} is {array.dtype.name} {list(array.shape)}; the board ({spec.source}) "
            f"reads {shape} {wanted}.",
            hint=f"Convert it yourself, e.g. np.save(..., x.astype(np.{spec.dtypes[0]})).",
        )
    if array.size != int(np.prod(spec.shape)):
        raise ModelError(
            f"--input {name} has {array.size} values {list(array.shape)}; the board "
            f"({spec.source}) reads {shape} = {int(np.prod(spec.shape))} {wanted} values"
        )


def load_reference(path: Path) -> tuple[np.ndarray, float]:
    """--reference: the expected scores ("scores", or the file's one array) as a 1-D
    vector, and the tolerance (an optional "atol" in the .npz)."""
    arrays = load_array(path, "--reference")
    atol = REFERENCE_ATOL
    if "atol" in arrays:
        atol = float(arrays.pop("atol"))
    scores = arrays.get("scores")
    if scores is None and len(arrays) == 1:
        scores = next(iter(arrays.values()))
    if scores is None:
        names = ", ".join(sorted(arrays)) or "none"
        raise ModelError(f"--reference {path.name}: no `scores` array (it holds {names})")
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    if flat.size == 0 or flat.size != max(np.shape(scores) or (1,)):
        raise ModelError(
            f"--reference {path.name}: scores must be one vector, "
            f"got shape {list(np.shape(scores))}"
        )
    if not np.all(np.isfinite(flat)) or not np.isfinite(atol) or atol < 0:
        raise ModelError(f"--reference {path.name}: scores and atol must be finite (atol >= 0)")
    return flat, atol


def mcu_preflight(target: Target, model: str | None, settings: RunSettings) -> None:
    """A fixed firmware runs its own model: refuse a --model before a 27 s export, and a
    bad --input/--reference before connecting."""
    mcu = _mcu(target)
    if mcu.flash != "none":
        if settings.reference is not None:
            raise UsageError(
                f"--reference applies to boards whose firmware holds its own model "
                f'(flash = "none"); {target.name} flashes {mcu.flash}.',
                hint="With --model, edgetool checks the firmware's outputs against onnxruntime.",
            )
        return
    if model is not None:
        raise UsageError(
            f'{target.name} has flash = "none": its firmware holds its own model, so '
            f"--model {model} cannot run there.",
            hint="Run without --model to benchmark that model; give it data with --input FILE.",
        )
    if settings.input is not None:
        array = dut_input(settings.input)
        spec = dut_input_spec(target, None)
        if spec is not None:
            check_dut_input(array, spec, settings.input.name)
    if settings.reference is not None:
        load_reference(settings.reference)


def top1_of(outputs: list[list[float]]) -> tuple[list[tuple[int, float]], Top1Summary]:
    """Each inference's (top-1 class, score), and the run's: the class chosen most often."""
    picks = [(int(np.argmax(v)), float(np.max(v))) for v in outputs]
    labels = [label for label, _ in picks]
    best = max(set(labels), key=lambda c: (labels.count(c), -c))
    scores = [score for label, score in picks if label == best]
    summary = Top1Summary(
        label=best,
        score=float(np.median(scores)),
        agreement=labels.count(best) / len(labels),
        count=len(labels),
        classes=len(outputs[0]),
    )
    return picks, summary


def score_parity(
    outputs: list[list[float]], reference: np.ndarray, atol: float, name: str
) -> tuple[dict[str, Any], str | None]:
    """Every inference's scores against the reference: max abs diff and top-1 agreement."""
    got = np.asarray(outputs, dtype=np.float64)
    if got.ndim != 2 or got.shape[1] != reference.size:
        width = got.shape[1] if got.ndim == 2 else 0
        parity = {"reference": name, "max_abs": None, "atol": atol, "ok": False}
        return parity, f"the board reports {width} scores, --reference {name} has {reference.size}"
    max_abs = float(np.max(np.abs(got - reference)))
    agreement = float(np.mean(np.argmax(got, axis=1) == int(np.argmax(reference))))
    ok = max_abs <= atol and agreement == 1.0
    parity = {
        "reference": name,
        "max_abs": max_abs,
        "atol": atol,
        "ok": ok,
        "top1_agreement": agreement,
    }
    problem = (
        f"board scores differ from --reference {name}: max abs {max_abs:.4g} "
        f"(tolerance {atol:g}), top-1 agreement {agreement:.0%}"
    )
    return parity, None if ok else problem


def deploy_mcu(
    target: Target,
    artifact: Artifact | None,
    settings: RunSettings,
    results_root: Path,
    obs: Observer,
) -> DeployOutcome:
    mcu = _mcu(target)
    if artifact is not None and mcu.flash == "none":
        mcu_preflight(target, artifact.path.name, settings)  # before any build
    firmware: Firmware | None = None
    url = None
    array = dut_input(settings.input) if artifact is None and settings.input else None
    reference = load_reference(settings.reference) if settings.reference else None
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
        if artifact is None and info.is_edgetool and (array is not None or reference is not None):
            raise UsageError(
                f"{target.name} runs edgetool's protocol firmware, which holds no model: "
                f"--input and --reference need one.",
                hint="Pass --model NAME to build it into the firmware.",
            )
        if array is not None and settings.input is not None:
            spec = dut_input_spec(target, info.model)
            if spec is None:
                raise ModelError(
                    f"{target.name}'s firmware runs model {info.model!r}, whose input edgetool "
                    f"does not know, so --input {settings.input.name} cannot be checked.",
                    hint=f"Declare it in [mcu] of {target.source.name}: input_shape = [1, ...] "
                    f'and input_dtype = "int8".',
                )
            check_dut_input(array, spec, settings.input.name)
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
            _measure_dut(client, info, settings, writer, obs, array, reference)
            if artifact is None and not info.is_edgetool
            else _measure(client, info, artifact, settings, writer, obs),
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
            outputs = None
            if hz:
                batch = [t * 1_000_000_000 // hz for t in client.xinfer(BATCH)]
            else:
                lap_us, scores = client.infer(1, 0)  # MLPerf Tiny firmware: laps in µs
                batch = [lap_us * 1000]
                outputs = [scores] if scores else None
            if not settings.duration:
                batch = batch[: samples_wanted - in_window]
            yield schema.Samples(done, batch, repetition=repetition, outputs=outputs)
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
    outputs: list[list[float]] | None = None,
) -> tuple[schema.Warmup | None, schema.Summary | None]:
    """Write a bench-protocol device's events into the run as they come; `samples` (and
    `reps`, each sample's window, and `outputs`, each inference's scores where the device
    reports them) grow in place, so a failure part-way keeps what was measured."""
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
            top1 = top1_of(event.outputs)[0] if event.outputs else None
            writer.append_samples(
                event.first_index, event.ns, repetition=event.repetition, top1=top1
            )
            if outputs is not None and event.outputs:
                outputs.extend(event.outputs)
            samples.extend(event.ns)
            if reps is not None:
                reps.extend([event.repetition] * len(event.ns))
            obs.progress(len(samples))
        elif isinstance(event, schema.Summary):
            end = event
    return warm, end


ParityCheck = Callable[[bytes], tuple[dict[str, Any], str | None]]
"""The device's output bytes -> (the run's parity entry, why it failed or None)."""
ScoreCheck = Callable[[list[list[float]]], tuple[dict[str, Any], str | None]]
"""Every inference's scores -> (the run's parity entry, why it failed or None)."""


def measure_bench(
    client: BenchClient,
    info: DeviceInfo,
    settings: RunSettings,
    writer: RunWriter,
    obs: Observer,
    prepare: Callable[[], ParityCheck | None],
    wire: Callable[[], dict[str, Any]] | None = None,
    score_check: ScoreCheck | None = None,
    **finish: Any,
) -> Summary:
    """One bench-protocol run on a prepared device: `prepare` loads what the run needs
    (inside the guard, so a failure there still closes the run) and says how to check
    the outputs; samples already measured survive any later failure."""
    samples: list[int] = []
    reps: list[int] = []
    outputs: list[list[float]] = []
    end: schema.Summary | None = None
    warm: schema.Warmup | None = None
    failure: EdgetoolError | None = None
    parity: dict[str, Any] | None = None
    writer.manifest.repetition_kind = "window"
    writer.save()
    try:
        check = prepare()
        stream = events(client, info, settings, settings.effective_iterations())
        warm, end = journal(stream, writer, settings, obs, samples, reps, outputs)
        if score_check is not None and outputs:
            parity, problem = score_check(outputs)
            writer.manifest.parity = Parity.from_dict(parity)
            writer.save()
            if problem is not None:
                failure = VerificationFailed(problem)
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
    if outputs:
        finish["top1"] = top1_of(outputs)[1].to_dict()
        if settings.save_outputs:
            # The first inference's scores, laid out as the Linux runner's outputs.npz.
            np.savez(writer.dir / "outputs.npz", scores=np.asarray([outputs[0]], np.float32))
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


def _measure_dut(
    client: BenchClient,
    info: DeviceInfo,
    settings: RunSettings,
    writer: RunWriter,
    obs: Observer,
    array: np.ndarray | None,
    reference: tuple[np.ndarray, float] | None,
) -> Summary:
    """A plain MLPerf Tiny DUT: --input through its own `db load`/`db` commands, its
    scores per inference, checked against --reference when one is given."""

    def prepare() -> ParityCheck | None:
        if array is None:
            return None
        payload = np.ascontiguousarray(array).tobytes()
        sent_before = client.stats.sent
        client.load_hex(payload)  # the DUT acknowledged all N bytes (m-load-done)
        writer.manifest.extra["upload"] = {
            "method": "db",
            "payload_bytes": len(payload),
            "wire_bytes": client.stats.sent - sent_before,
        }
        writer.save()
        return None

    score_check = None
    if reference is not None and settings.reference is not None:
        expected, atol = reference
        name = settings.reference.name

        def score_check(outputs: list[list[float]]) -> tuple[dict[str, Any], str | None]:
            return score_parity(outputs, expected, atol, name)

    summary = measure_bench(
        client, info, settings, writer, obs, prepare, wire=client.wire_report,
        score_check=score_check, time_base=writer.manifest.target_info.time_base,
    )  # fmt: skip
    if settings.save_outputs and summary.top1 is None:
        log.warning("%s printed no m-results scores: no outputs.npz", client.description)
    return summary


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
    preflight=mcu_preflight,
)
"""Microcontrollers over a UART: firmware built with the model, the bench protocol."""
