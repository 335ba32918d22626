"""Bangle.js 2 (Espruino on an nRF52840) over the Nordic UART Service: facts, fit check,
upload into Storage, a small JS bench program around `require("tensorflow")`, and the
same journal as every other target.

What the firmware does with the model (libs/tensorflow/jswrap_tensorflow.c): `create`
needs a *flat* string or ArrayBuffer (jsvGetDataPointer) and allocates one more flat
string of sizeof(TFData) + arena (+15 for alignment). On Bangle.js 2 Storage lives in
external SPI flash, which is not memory-mapped (src/jsflash.c jsvAddressToVar returns a
flash string), so the model must be copied into RAM first: RAM = model + arena + TFData.
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetool.errors import (
    ConfigError,
    DeviceError,
    EdgetoolError,
    ModelError,
    TransferError,
)
from edgetool.export.artifact import Artifact
from edgetool.export.stepped import StepLayout, run_window
from edgetool.flows.base import (
    DeployFlow,
    DeployOutcome,
    Observer,
    RunSettings,
    watch_facts,
)
from edgetool.flows.journal import artifact_info, open_run
from edgetool.flows.mcu import BATCH, ParityCheck, input_tensors, measure_bench
from edgetool.mcu.protocol import DeviceInfo
from edgetool.results.manifest import RunManifest, Summary, TargetInfo
from edgetool.results.store import RunWriter
from edgetool.targets import McuSettings, Target
from edgetool.transport.base import PutResult
from edgetool.transport.ble_uart import BleUartSettings
from edgetool.watch.espruino import EspruinoConsole

TFDATA_BYTES = 8192
"""Budget for sizeof(TFData): error reporter, AllOpsResolver and MicroInterpreter objects
that jswrap_tensorflow.c allocates beside the arena (not measurable on the host)."""
CHUNK_BYTES = 192
"""Model bytes per `Storage.write` line: 256 base64 characters, a ~330-character line."""
INPUT_VALUES = 64
"""int8 values per `set` line (float32 values: a quarter, to keep lines ~330 characters)."""
TIME_BASE = "watch getTime() (nRF52 RTC, 1/32768 s = 30.5 µs resolution)"
PARITY_LSB = 1
"""int8 outputs: TFLM and LiteRT kernels may round differently by one LSB; float32
outputs (a stepped model's spike counts) get the same tolerance of one."""
PARITY_FLOAT_ATOL = 1e-4
"""Any other float32 output: kernels may sum in another order."""
IO_DTYPES = ("int8", "float32")
FACTS_JS = (
    "{v:process.env.VERSION,b:process.env.BOARD,m:process.memory(),"
    's:require("Storage").getFree(),'
    't:(process.env.MODULES||"").split(",").indexOf("tensorflow")>=0,'
    "x:process.env.EDGETOOL_SYNTHETIC}"
)


def dispatcher(invoke: str = "ET.tf.invoke()", output: str = "ET.tf.getOutput()") -> str:
    """The bench protocol in JS around one `invoke` (a TFLM invoke, or a stepped model's
    whole window): timings are taken into an array, printed after the loop; `xresults`
    sends the output's bytes as hex whatever its type."""
    return (
        "ET.c=function(s){var a=s.split(' '),n=0|a[1],k,t,u,r=[],o;"
        f"if(a[0]=='infer'){{for(k=0;k<(0|a[2]);k++){invoke};"
        f"t=getTime();for(k=0;k<n;k++){invoke};u=getTime();"
        "print('m-lap-us-0');print('m-lap-us-'+Math.round((u-t)*1e6));print('m-infer-done');"
        f"print('m-results-['+[].slice.call({output}).join(',')+']');}}"
        f"else if(a[0]=='xinfer'){{for(k=0;k<n;k++){{t=getTime();{invoke};r.push(getTime()-t);}}"
        "for(k=0;k<n;k++)print('m-xlap-ticks-'+Math.round(r[k]*1e6));}"
        f"else if(a[0]=='xresults'){{o={output};"
        "o=new Uint8Array(o.buffer,o.byteOffset,o.byteLength);"
        "u='';for(k=0;k<o.length;k++)u+=(256+o[k]).toString(16).substr(1);"
        "print('m-xresults-['+u+']');}"
        "else print('e-[Unknown command: '+s+']');print('m-ready');}"
    )


def stepped_program(layout: StepLayout) -> str:
    """JS that runs one window through a stepped model (edgetool.export.stepped): zero the
    state, then per row write x_t, invoke, copy the output state back into the input."""
    c, tail = layout.channels, layout.state - layout.result
    return (
        f"ET.z=new Float32Array({c + layout.state});"
        "ET.i=ET.tf.getInput();ET.o=ET.tf.getOutput();"
        f"ET.run=function(){{var t;ET.i.set(ET.z);for(t=0;t<{layout.steps};t++){{"
        f"ET.i.set(ET.w.subarray(t*{c},t*{c}+{c}));ET.tf.invoke();ET.i.set(ET.o,{c});}}}};"
        f"ET.r=function(){{return ET.o.subarray({tail})}}"
    )


def _settings(target: Target) -> tuple[McuSettings, BleUartSettings]:
    if target.mcu is None or not isinstance(target.transport, BleUartSettings):
        raise ConfigError(
            f"{target.source}: target {target.name} needs an [mcu] table and a ble-uart transport"
        )
    return target.mcu, target.transport


def storage_name(sha256: str) -> str:
    """The Storage file for a model: Espruino names are at most 28 characters."""
    return f"et{sha256[:22]}.tfl"


# --- fit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    model_bytes: int
    arena_needed: int
    arena_bytes: int
    ram_needed: int
    ram_bytes: int


def measure_arena(model: bytes) -> int:
    """Arena bytes TFLite Micro allocates for the model (its RecordingMicroAllocator's
    total, measured on the host: 64-bit pointers make it an upper bound for Cortex-M)."""
    from tflite_micro.python.tflite_micro import runtime

    fd = 2
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), fd)
        failure: Exception | None = None
        try:
            interpreter = runtime.Interpreter.from_bytes(model, arena_size=4 << 20)
            interpreter.print_allocations()
        except (RuntimeError, ValueError) as exc:
            failure = exc
        finally:
            os.dup2(saved, fd)
            os.close(saved)
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    if failure is not None:
        detail = next((ln for ln in text.splitlines() if "was not true" in ln), "") or next(
            (ln for ln in text.splitlines() if ln.strip()), str(failure)
        )
        raise ModelError(
            f"TFLite Micro cannot load this model: {detail.strip()[:140]}",
            hint="Export a smaller/simpler graph (TFLM limits op inputs and needs its ops).",
        )
    found = re.search(r"Arena allocation total (\d+) bytes", text)
    if not found:
        raise ModelError("TFLite Micro did not report its arena use for this model")
    return int(found.group(1))


def _tensor_spec(artifact: Artifact, key: str) -> dict[str, Any]:
    specs = artifact.manifest.get(key) or []
    if len(specs) != 1:
        raise ModelError(
            f"{artifact.path.name}: Espruino's tensorflow uses one input and one output; "
            f"this model has {len(specs)} {key}"
        )
    spec: dict[str, Any] = specs[0]
    return spec


def check_fit(target: Target, artifact: Artifact) -> Fit:
    """Refuse, before anything is sent, a model the watch cannot hold or run."""
    mcu, _ = _settings(target)
    label = f"{artifact.manifest.get('model') or artifact.path.stem}"
    if artifact.format != "tflite" or artifact.path.suffix != ".tflite":
        raise ModelError(
            f"{artifact.path.name} is {artifact.format}; Bangle.js runs TFLite Micro models.",
            hint=f"Pass {label}:tflite:int8.",
        )
    for key in ("inputs", "outputs"):
        dtype = _tensor_spec(artifact, key).get("dtype")
        if dtype not in IO_DTYPES:
            raise ModelError(
                f"{artifact.path.name}: {key} are {dtype}; "
                "Espruino's tensorflow reads and writes int8 or float32 tensors",
                hint=f"Pass {label}:tflite:int8.",
            )
    size = artifact.size
    arena = mcu.arena_bytes
    hint = "Pick a smaller model (or a smaller export of it)."
    if size + (arena or 0) + TFDATA_BYTES > mcu.ram_bytes:
        raise ModelError(
            f"{label} does not fit {target.name}: the model alone is {size:,} B and Espruino "
            f"copies it into RAM beside the arena ({arena or 0:,} B) and TFLM "
            f"(~{TFDATA_BYTES:,} B): {size + (arena or 0) + TFDATA_BYTES:,} B > "
            f"{mcu.ram_bytes:,} B of JS memory",
            hint=hint,
        )
    needed = measure_arena(artifact.path.read_bytes())
    if arena is None:
        arena = -(-int(needed * 1.25) // 1024) * 1024
    if needed > arena:
        raise ModelError(
            f"{label} needs a {needed:,} B tensor arena; {target.name} gives {arena:,} B "
            "([mcu].arena_bytes)",
            hint=f"Raise arena_bytes in {target.source} if RAM allows, or pick a smaller model.",
        )
    ram = size + arena + TFDATA_BYTES
    if ram > mcu.ram_bytes:
        raise ModelError(
            f"{label} does not fit {target.name}: model {size:,} B + arena {arena:,} B + "
            f"TFLM ~{TFDATA_BYTES:,} B = {ram:,} B > {mcu.ram_bytes:,} B of JS memory",
            hint=hint,
        )
    return Fit(size, needed, arena, ram, mcu.ram_bytes)


# --- the console ------------------------------------------------------------------------


def _open(target: Target) -> EspruinoConsole:
    from edgetool.transport.ble_uart import open_nus_port

    _, ble = _settings(target)
    port = open_nus_port(ble)
    console = EspruinoConsole(port, getattr(port, "description", ble.address), ble.timeout)
    try:
        console.reset_line()
    except EdgetoolError:
        console.close()
        raise
    return console


def _facts(console: EspruinoConsole) -> dict[str, Any]:
    raw = console.evaluate(FACTS_JS)
    if not isinstance(raw, dict):
        raise DeviceError(f"{console.description}: unexpected facts reply {raw!r}")
    memory = raw.get("m") or {}
    block = int(memory.get("blocksize") or 0)
    link = "tcp bridge" if console.description.startswith("NUS bridge") else "bleak"
    facts: dict[str, Any] = {
        "firmware": raw.get("v"),
        "board": raw.get("b"),
        "memory_free_bytes": int(memory.get("free") or 0) * block,
        "memory_total_bytes": int(memory.get("total") or 0) * block,
        "block_size": block,
        "storage_free_bytes": raw.get("s"),
        "tensorflow": bool(raw.get("t")),
        "link": link,
    }
    if raw.get("x"):
        facts["synthetic"] = True
    return facts


def bangle_facts(target: Target) -> tuple[str, dict[str, Any]]:
    """What the watch says about itself (for `targets check`)."""
    console = _open(target)
    try:
        return console.description, _facts(console)
    finally:
        console.close()


# --- upload -----------------------------------------------------------------------------


def _stored(console: EspruinoConsole, name: str) -> list[int] | None:
    reply = console.evaluate(
        "(function(f){return f===undefined?null:[f.length,E.CRC32(f)]})"
        f'(require("Storage").read("{name}"))',
        timeout=console.timeout + 30,
    )
    return reply if isinstance(reply, list) else None


def upload(console: EspruinoConsole, artifact: Artifact, obs: Observer) -> PutResult:
    """The model into Storage as base64 lines, verified by CRC32 on the watch."""
    name = storage_name(artifact.sha256)
    data = artifact.path.read_bytes()
    want = [len(data), zlib.crc32(data)]
    if _stored(console, name) == want:
        result = PutResult(name, artifact.sha256, len(data), 0, True, 0.0)
        obs.pushed(artifact.path.name, result)
        return result
    progress = obs.pushing(artifact.path.name, len(data))
    started, sent_before = time.monotonic(), console.stats.sent
    for offset in range(0, len(data), CHUNK_BYTES):
        b64 = base64.b64encode(data[offset : offset + CHUNK_BYTES]).decode("ascii")
        size = f",{len(data)}" if offset == 0 else ""
        ok = console.evaluate(f'require("Storage").write("{name}",atob("{b64}"),{offset}{size})')
        if ok is not True:
            raise TransferError(
                f"{console.description}: Storage.write failed at byte {offset} of {name}",
                hint="Is Storage full? Free space with the Bangle App Loader, then retry.",
            )
        if progress is not None:
            progress(min(offset + CHUNK_BYTES, len(data)), len(data))
    got = _stored(console, name)
    if got != want:
        console.execute(f'require("Storage").erase("{name}")')
        raise TransferError(
            f"{console.description}: {name} did not verify on the watch (length, CRC32 "
            f"{got!r}, expected {want!r}); the copy was erased",
            hint="Retry; move the watch closer if it keeps happening.",
        )
    result = PutResult(
        name,
        artifact.sha256,
        len(data),
        console.stats.sent - sent_before,
        False,
        time.monotonic() - started,
    )
    obs.pushed(artifact.path.name, result)
    return result


# --- input, bench program, parity ---------------------------------------------------------


def program_input(artifact: Artifact, settings: RunSettings) -> np.ndarray:
    """What the watch is given: --input (or seeded uniform [0, 1) floats) quantized with
    the input's scale/zero point; for a stepped model the float32 window it steps through
    (--input [1, steps, channels], or seeded normal values in IMU range)."""
    layout = StepLayout.of(artifact.manifest)
    if layout is not None:
        if settings.input is not None:
            return layout.window(np.load(settings.input)).ravel()
        rng = np.random.default_rng(settings.seed)
        return (rng.standard_normal((layout.steps, layout.channels)) * 4).astype(np.float32).ravel()
    spec = _tensor_spec(artifact, "inputs")
    value = next(iter(input_tensors(artifact, settings).values()))
    if spec.get("dtype") == "float32":
        return value.astype(np.float32).ravel()
    quant = spec.get("quantization") or {}
    scale, zero = float(quant.get("scale") or 1.0), int(quant.get("zero_point") or 0)
    q = np.clip(np.round(value / scale) + zero, -128, 127)
    return np.asarray(q, dtype=np.int8).ravel()


def _js_values(values: np.ndarray) -> list[str]:
    if values.dtype == np.float32:
        return [repr(float(v)) for v in values]  # shortest text that rounds back exactly
    return [str(int(v)) for v in values]


def load_program(
    console: EspruinoConsole, artifact: Artifact, name: str, fit: Fit, x: np.ndarray
) -> None:
    """Copy the model into a flat RAM buffer, create the interpreter, fill the input (or
    a stepped model's window) and define the bench dispatcher."""
    console.execute(
        f"var ET={{m:new Uint8Array({artifact.size})}};"
        f'ET.m.set(new Uint8Array(require("Storage").readArrayBuffer("{name}")));'
        f'ET.tf=require("tensorflow").create({fit.arena_bytes},ET.m.buffer)',
        timeout=console.timeout + 30,
    )
    layout = StepLayout.of(artifact.manifest)
    into = "ET.tf.getInput()"
    if layout is not None:
        console.execute(f"ET.w=new Float32Array({x.size})")
        into = "ET.w"
    per_line = INPUT_VALUES // 4 if x.dtype == np.float32 else INPUT_VALUES
    text = _js_values(x)
    for start in range(0, len(text), per_line):
        console.execute(f"{into}.set([{','.join(text[start : start + per_line])}],{start})")
    if layout is None:
        console.execute(dispatcher())
    else:
        console.execute(stepped_program(layout))
        console.execute(dispatcher("ET.run()", "ET.r()"))


def reference_output(artifact: Artifact, x: np.ndarray) -> np.ndarray:
    """LiteRT on the host, same input (stepped: the same window, step by step): the
    parity reference."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # builtin kernels without the XNNPACK delegate: closest to TFLM's, and no INFO line
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(artifact.path), experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def invoke(value: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp["index"], value.reshape(inp["shape"]).astype(inp["dtype"]))
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(out["index"])).ravel()

    layout = StepLayout.of(artifact.manifest)
    if layout is not None:
        return run_window(invoke, layout, x.reshape(layout.steps, layout.channels))
    return invoke(x)


def _stepped_section(artifact: Artifact) -> dict[str, Any]:
    layout = StepLayout.of(artifact.manifest)
    if layout is None:
        return {}
    note = f"one sample = one whole window: {layout.steps} invokes with the state copied between"
    return {"stepped": {**asdict(layout), "sample": note}}


# --- deploy ---------------------------------------------------------------------------------


def deploy_bangle(
    target: Target,
    artifact: Artifact | None,
    settings: RunSettings,
    results_root: Path,
    obs: Observer,
) -> DeployOutcome:
    mcu, _ = _settings(target)
    if artifact is None:
        raise ModelError(f"target {target.name} needs a model: pass --model")
    fit = check_fit(target, artifact)
    x = program_input(artifact, settings)
    console = _open(target)
    try:
        facts = _facts(console)
        obs.connected(
            f"{console.description}  Espruino {facts['firmware']} on {facts['board']}  "
            f"RAM {fit.ram_needed:,} B / {facts['memory_free_bytes']:,} free"
        )
        if not facts["tensorflow"]:
            raise DeviceError(
                f"{console.description}: this firmware has no `tensorflow` module",
                hint="Flash a Bangle.js 2 firmware built with TENSORFLOW (the default build).",
            )
        if facts["memory_free_bytes"] and fit.ram_needed > facts["memory_free_bytes"]:
            raise ModelError(
                f"the watch has {facts['memory_free_bytes']:,} B of JS memory free; the model "
                f"needs {fit.ram_needed:,} B (model {fit.model_bytes:,} + arena "
                f"{fit.arena_bytes:,} + TFLM ~{TFDATA_BYTES:,})",
                hint="Load the default clock (fewer widgets/apps in RAM), or a smaller model.",
            )
        push = upload(console, artifact, obs)
        synthetic = bool(facts.get("synthetic"))
        writer = open_run(
            results_root,
            target,
            artifact.path.stem,
            settings,
            console.description,
            artifact_info(artifact),
            TargetInfo(
                emulated=False,
                synthetic=synthetic,
                time_base=TIME_BASE,
                board=mcu.board,
                flash=mcu.flash,
            ),
            RunManifest(
                extra={"fit": asdict(fit), "upload": asdict(push), **_stepped_section(artifact)}
            ),
        )
        info = DeviceInfo(
            f"{target.name} (Espruino {facts['firmware']})",
            "espruino-tflm",
            artifact.path.stem,
            {
                "board": mcu.board,
                "firmware": str(facts["firmware"]),
                "tick-hz": "1000000",
                "timer": "getTime()",
                "arena": str(fit.arena_bytes),
            },
        )
        summary = _measure(console, info, artifact, settings, writer, obs, fit, x)
        return DeployOutcome(writer.dir, writer.run_id, writer.manifest, summary, [push])
    finally:
        console.close()


def _measure(
    console: EspruinoConsole,
    info: DeviceInfo,
    artifact: Artifact,
    settings: RunSettings,
    writer: RunWriter,
    obs: Observer,
    fit: Fit,
    x: np.ndarray,
) -> Summary:
    stepped = StepLayout.of(artifact.manifest) is not None

    def check(raw: bytes) -> tuple[dict[str, Any], str | None]:
        want = reference_output(artifact, x)
        got = np.frombuffer(raw, dtype=want.dtype.newbyteorder("<"))
        same = got.shape == want.shape
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64)) if same else None
        atol = PARITY_LSB if want.dtype == np.int8 or stepped else PARITY_FLOAT_ATOL
        parity = {
            "reference": "LiteRT (ai_edge_litert) on the host, same input"
            + (", stepped through the same window" if stepped else ""),
            "max_abs": float(diff.max()) if diff is not None and diff.size else None,
            "atol": atol,
            "ok": bool(diff is not None and (diff <= atol).all()),
            "outputs": got.tolist(),
            "reference_outputs": want.tolist(),
        }
        problem = f"watch outputs differ from LiteRT by {parity['max_abs']} (tolerance {atol:g})"
        return parity, None if parity["ok"] else problem

    def prepare() -> ParityCheck:
        load_program(console, artifact, storage_name(artifact.sha256), fit, x)
        return check

    return measure_bench(
        console, info, settings, writer, obs, prepare,
        time_base=TIME_BASE, samples_per_batch=BATCH,
    )  # fmt: skip


FLOW = DeployFlow(
    deploy_bangle,
    lambda target: watch_facts(*bangle_facts(target)),
    ":tflite:int8",
    supports=frozenset({"--input", "--duration"}),
    refusal="Bangle.js runs TFLite Micro inside Espruino: one thread, no outputs kept, "
    "no meter, no profile",
)
"""Bangle.js 2 over BLE UART: TFLite Micro in Espruino, driven from its REPL."""
