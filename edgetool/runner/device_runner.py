#!/usr/bin/env python3
"""edgetool on-device runner: one file, stdlib + numpy, Python 3.9+.

Pushed to the device as is, next to the model. Loads an .onnx (onnxruntime) or .tflite
(ai_edge_litert, else tflite_runtime) model, times inferences with perf_counter_ns and
writes JSON lines on stdout: hello, env, model, warmup, sample (batched), summary, error;
with a hwmon power meter also power (batched) and phase (idle, measure) on the same clock.
It imports nothing from edgetool, so what runs on a Raspberry Pi is exactly this file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable

RUNNER_VERSION = "1"
FLUSH_SAMPLES = 256
FLUSH_NS = 250_000_000

ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd4b": "Cortex-A78C",
}


class RunnerError(Exception):
    def __init__(self, kind: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint


_EMIT_LOCK = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    fields["event"] = event
    line = json.dumps(fields, separators=(",", ":")) + "\n"
    with _EMIT_LOCK:  # the power sampler thread emits too: never interleave two lines
        sys.stdout.write(line)
        sys.stdout.flush()


def last_line(exc: BaseException) -> str:
    """Runtimes raise multi-line C++ messages; the last line is the one that says why."""
    lines = str(exc).strip().splitlines()
    return lines[-1][:300] if lines else type(exc).__name__


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip("\x00\n ")
    except OSError:
        return None


def cpu_model() -> str | None:
    info = read_text("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    if "model name" in fields:
        return fields["model name"]
    part = fields.get("cpu part")
    if part:
        return ARM_PARTS.get(part.lower(), "ARM part " + part)
    return fields.get("hardware") or platform.processor() or None


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (read_text("/proc/meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024
    return out


def os_name() -> str:
    for line in (read_text("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name, module in (
        ("numpy", "numpy"),
        ("onnxruntime", "onnxruntime"),
        ("ai_edge_litert", "ai_edge_litert"),
        ("tflite_runtime", "tflite_runtime"),
    ):
        try:
            mod = __import__(module)
            versions[name] = str(getattr(mod, "__version__", "unknown"))
        except Exception:  # a broken install is as missing as an absent one
            versions[name] = None
    return versions


def available_accelerators() -> dict[str, list[str] | None]:
    """What each installed runtime can run a model on here: onnxruntime's execution
    providers (as this build reports them) and the LiteRT delegates --delegate can pick.
    Called after runtime_versions(), so the modules are already imported."""
    found: dict[str, list[str] | None] = {"onnxruntime": None, "litert": None}
    try:
        import onnxruntime as ort

        found["onnxruntime"] = list(ort.get_available_providers())
    except Exception:  # absent or broken: runtime_versions already says so
        pass
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            mod = __import__(module, fromlist=["Interpreter"])
        except Exception:
            continue
        resolver = getattr(mod, "OpResolverType", None)
        found["litert"] = (
            ["xnnpack", "none"]
            if resolver is not None and hasattr(resolver, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
            else []
        )
        break
    return found


def match_provider(name: str, available: list[str]) -> str | None:
    """NAME as one of AVAILABLE: exact, any case, or short ('cuda', 'xnnpack')."""
    wanted = name.strip().lower()
    for provider in available:
        lower = provider.lower()
        if wanted in (lower, lower.removesuffix("executionprovider")):
            return provider
    return None


def resolve_provider(ort: Any, name: str) -> str:
    """The execution provider to ask for ('' = onnxruntime's CPU provider); an
    `ep_unavailable` error naming the available ones when this build has no NAME."""
    available = list(ort.get_available_providers())
    if not name:
        return "CPUExecutionProvider"
    provider = match_provider(name, available)
    if provider is None:
        raise RunnerError(
            "ep_unavailable",
            f"execution provider {name!r} is not available in onnxruntime {ort.__version__} "
            f"here (available: {', '.join(available)})",
        )
    return provider


def session_providers(provider: str) -> list[str]:
    """PROVIDER first; CPU after it for the nodes PROVIDER does not take (as onnxruntime
    partitions a graph), never instead of it."""
    if provider == "CPUExecutionProvider":
        return [provider]
    return [provider, "CPUExecutionProvider"]


def provider_in_use(session: Any, provider: str) -> dict[str, Any]:
    """The providers the session really has. onnxruntime drops a provider that fails to
    initialise (no GPU, a missing driver) with a log line only and runs on CPU: such a
    run would be recorded under a provider it never used, so it is refused."""
    used = list(session.get_providers())
    if provider not in used:
        raise RunnerError(
            "ep_unavailable",
            f"onnxruntime did not start execution provider {provider} (the session has "
            f"{', '.join(used) or 'none'}): refusing to run on a fallback",
            hint="Check the provider's driver and libraries on the device.",
        )
    return {"ep": provider, "providers": used}


def delegate_kwargs(interpreter_cls: Any, runtime: str, delegate: str) -> dict[str, Any]:
    """Interpreter arguments for --delegate. LiteRT applies XNNPACK as a default delegate
    with its AUTO/BUILTIN op resolvers; BUILTIN_WITHOUT_DEFAULT_DELEGATES runs the builtin
    kernels alone. An old runtime without that resolver cannot choose: refused."""
    if not delegate:
        return {}
    module = sys.modules.get(interpreter_cls.__module__)
    resolver = getattr(module, "OpResolverType", None)
    if resolver is None or not hasattr(resolver, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"):
        raise RunnerError(
            "delegate_unavailable",
            f"{runtime} here cannot switch its default delegate (no "
            "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES): --delegate needs ai-edge-litert",
        )
    if delegate == "none":
        return {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    return {"experimental_op_resolver_type": resolver.AUTO}


def delegate_in_use(interp: Any, delegate: str) -> dict[str, Any]:
    """Whether a delegate took part of the graph, from the execution plan after
    allocate_tensors (a delegated partition is one DELEGATE node). With --delegate xnnpack
    a model XNNPACK takes nothing of (integer-only ops it lacks) is refused: its times
    would be builtin kernels recorded as XNNPACK's."""
    details = getattr(interp, "_get_ops_details", None)
    if details is None:
        return {"delegate": delegate or None, "delegated_nodes": None}
    try:
        nodes = sum(1 for op in details() if op.get("op_name") == "DELEGATE")
    except Exception:  # a private API: unknown is recorded as unknown
        return {"delegate": delegate or None, "delegated_nodes": None}
    if delegate == "xnnpack" and nodes == 0:
        raise RunnerError(
            "delegate_unavailable",
            "XNNPACK took no part of this model (every op ran on the builtin kernels): "
            "refusing to record it as an XNNPACK run",
            hint="Run it with --delegate none, or use a float model.",
        )
    return {"delegate": "xnnpack" if nodes else "none", "delegated_nodes": nodes}


def virtualization() -> str | None:
    """'qemu' (or the hypervisor's vendor) when this "device" is a virtual machine, so an
    emulated Cortex-A72 is never reported as a Raspberry Pi; None on bare metal."""
    compatible = read_text("/sys/firmware/devicetree/base/compatible") or ""
    if "dummy-virt" in compatible or "qemu" in compatible.lower():
        return "qemu"
    vendor = " ".join(
        read_text("/sys/class/dmi/id/" + key) or "" for key in ("sys_vendor", "product_name")
    )
    for name in ("QEMU", "KVM", "VMware", "VirtualBox", "Xen", "Microsoft"):
        if name.lower() in vendor.lower():
            return name.lower()
    flags = (read_text("/proc/cpuinfo") or "").split()
    return "vm" if "hypervisor" in flags else None


def device_facts() -> dict[str, Any]:
    mem = meminfo()
    virt = virtualization()
    board = read_text("/proc/device-tree/model")
    if virt == "qemu" and (not board or "dummy-virt" in board):
        board = "QEMU virt machine (emulated)"
    disk = os.statvfs(".")
    return {
        "hostname": socket.gethostname(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "board": board,
        "virtualization": virt,
        "cores": os.cpu_count(),
        "os": os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_path": sys.executable,
        "mem_total": mem.get("MemTotal"),
        "mem_available": mem.get("MemAvailable"),
        "disk_free": disk.f_bavail * disk.f_frsize,
    }


def vcgencmd(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["vcgencmd", *args], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


SYS_ROOT = "/sys"
PROC_ROOT = "/proc"
THROTTLE_BITS = ("under-voltage", "arm-frequency-capped", "throttled", "soft-temperature-limit")
FIRMWARE_THROTTLED = "devices/platform/soc/soc:firmware/get_throttled"


def read_head(path: str, size: int = 4096) -> str | None:
    """A sysfs/procfs file's first bytes with one read(): a sysfs value is at most a page,
    and this is several times cheaper than open() for what runs around every measurement."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, size).decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_int(path: str) -> int | None:
    try:
        return int(read_head(path) or "")
    except ValueError:  # absent, empty, or not a number (some zones answer "N/A")
        return None


def numbered(root: str, prefix: str) -> list[tuple[int, str]]:
    """(n, path) of root/prefixN entries in numeric order: cpu10 sorts after cpu9."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found = []
    for name in names:
        suffix = name[len(prefix) :]
        if name.startswith(prefix) and suffix.isascii() and suffix.isdigit():
            found.append((int(suffix), os.path.join(root, name)))
    return sorted(found)


def cpufreq_state(sys_root: str = SYS_ROOT) -> list[dict[str, Any]] | None:
    """Per-CPU governor and clocks: a capped max or a lagging cur explains slow runs,
    and big.LITTLE boards have several policies, so cpu0 alone does not say it."""
    cpus = []
    for cpu, path in numbered(os.path.join(sys_root, "devices/system/cpu"), "cpu"):
        freq = os.path.join(path, "cpufreq")
        if not os.path.isdir(freq):
            continue
        cpus.append(
            {
                "cpu": cpu,
                "governor": read_head(os.path.join(freq, "scaling_governor")),
                "cur_khz": read_int(os.path.join(freq, "scaling_cur_freq")),
                "min_khz": read_int(os.path.join(freq, "scaling_min_freq")),
                "max_khz": read_int(os.path.join(freq, "scaling_max_freq")),
                "hw_max_khz": read_int(os.path.join(freq, "cpuinfo_max_freq")),
            }
        )
    return cpus or None


def thermal_state(sys_root: str = SYS_ROOT) -> dict[str, float] | None:
    """Every thermal zone by type (°C): the SoC, GPU or PMIC may be the hot one.
    Names are given over all zones, readable or not, so before/after keys match."""
    temps: dict[str, float] = {}
    seen: dict[str, int] = {}
    for zone, path in numbered(os.path.join(sys_root, "class/thermal"), "thermal_zone"):
        kind = read_head(os.path.join(path, "type")) or f"thermal_zone{zone}"
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}_{seen[kind]}"
        millidegrees = read_int(os.path.join(path, "temp"))
        if millidegrees is not None:
            temps[name] = millidegrees / 1000.0
    return temps or None


def decode_throttled(text: str | None) -> dict[str, Any] | None:
    """The Raspberry Pi firmware's throttle bit field ('0x50005' or sysfs's '50005'):
    bits 0-3 are the state now, bits 16-19 the same four since boot."""
    if not text:
        return None
    try:
        value = int(text.strip().split("=")[-1], 16)
    except ValueError:
        return None
    return {
        "raw": hex(value),
        "now": [name for bit, name in enumerate(THROTTLE_BITS) if value >> bit & 1],
        "since_boot": [name for bit, name in enumerate(THROTTLE_BITS) if value >> (16 + bit) & 1],
    }


def throttle_state(vcgencmd_out: str | None, sys_root: str = SYS_ROOT) -> dict[str, Any] | None:
    """Under-voltage and capping silently slow a Pi. vcgencmd's answer (already asked
    for by the caller) first, else the firmware driver's sysfs file."""
    decoded = decode_throttled(vcgencmd_out)
    if decoded is None:
        decoded = decode_throttled(read_head(os.path.join(sys_root, FIRMWARE_THROTTLED)))
    return decoded


def cpu_times(proc_root: str = PROC_ROOT) -> dict[str, int] | None:
    """Aggregate /proc/stat ticks: the host diffs before/after for the steal fraction (a
    VM's host taking the CPU). guest/guest_nice are left out of total: user has them."""
    first = (read_head(os.path.join(proc_root, "stat")) or "").split("\n", 1)[0].split()
    if len(first) < 6 or first[0] != "cpu":
        return None
    try:
        ticks = [int(f) for f in first[1:]]
    except ValueError:
        return None
    return {
        "total": sum(ticks[:8]),
        "steal": ticks[7] if len(ticks) > 7 else 0,
        "idle": ticks[3] + ticks[4],
    }


def cpu_affinity() -> list[int] | None:
    """The CPUs this process may run on: taskset or a container can pin it to fewer."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    try:
        return sorted(getaffinity(0))
    except OSError:
        return None


def process_threads(proc_root: str = PROC_ROOT) -> int | None:
    """This process's OS threads now; after a run, the runtime's effective thread pool."""
    for line in (read_head(os.path.join(proc_root, "self/status"), 16384) or "").splitlines():
        if line.startswith("Threads:"):
            try:
                return int(line.split(":", 1)[1])
            except ValueError:
                return None
    return None


def environment(sys_root: str = SYS_ROOT, proc_root: str = PROC_ROOT) -> dict[str, Any]:
    """Temperature, clocks, governor, throttling, steal, pinning and threads: what makes
    two runs incomparable. Only file reads (plus vcgencmd where it exists): runs around
    every measurement, so it must stay cheap and never raise."""
    env: dict[str, Any] = {"time_ns": time.time_ns()}
    temp = read_text(os.path.join(sys_root, "class/thermal/thermal_zone0/temp"))
    if temp and temp.lstrip("-").isdigit():
        env["temp_c"] = int(temp) / 1000.0
    cpus = cpufreq_state(sys_root)
    first = next((c for c in cpus or [] if c["cpu"] == 0), None)
    env["governor"] = first["governor"] if first else None
    # The same reads as cpus[].cur_khz: one snapshot, and no second pass over sysfs.
    env["freq_khz"] = [c["cur_khz"] for c in cpus or [] if c["cur_khz"] is not None] or None
    throttled = vcgencmd("get_throttled")
    if throttled and "=" in throttled:
        env["throttled"] = throttled.split("=", 1)[1]
    try:
        env["loadavg"] = list(os.getloadavg())
    except OSError:
        env["loadavg"] = None
    env["cpus"] = cpus
    env["thermal"] = thermal_state(sys_root)
    env["throttle"] = throttle_state(throttled, sys_root)
    env["cpu_times"] = cpu_times(proc_root)
    env["affinity"] = cpu_affinity()
    env["process_threads"] = process_threads(proc_root)
    return env


def peak_rss_bytes() -> int:
    """This process's own peak RSS. Linux keeps ru_maxrss across exec, so a runner
    started from a big process (a Python that loaded torch) would report its parent's
    peak; VmHWM belongs to the new address space and starts from zero."""
    status = read_text("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(usage) * (1 if sys.platform == "darwin" else 1024)


class Model:
    """Runtime-neutral view: declared inputs, a prepare step, and the timed call."""

    runtime = ""
    runtime_version = ""
    accelerator: dict[str, Any]
    """What runs the graph as the runtime reports it after loading (see provider_in_use,
    delegate_in_use): recorded with the model, never assumed from what was asked."""
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]

    def prepare(self, feeds: dict[str, Any]) -> None:
        raise NotImplementedError

    def invoke(self) -> None:
        raise NotImplementedError

    def results(self) -> dict[str, Any]:
        raise NotImplementedError


ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OnnxModel(Model):
    def __init__(self, path: str, threads: int, ep: str = "") -> None:
        try:
            import onnxruntime as ort
        except Exception as exc:
            raise RunnerError(
                "runtime_missing",
                f"onnxruntime is not installed for {sys.executable} ({exc})",
            ) from exc
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        provider = resolve_provider(ort, ep)
        try:
            self.session = ort.InferenceSession(
                path, sess_options=options, providers=session_providers(provider)
            )
        except Exception as exc:
            raise RunnerError(
                "bad_model",
                f"onnxruntime cannot load {os.path.basename(path)}: {last_line(exc)}",
            ) from exc
        self.accelerator = provider_in_use(self.session, provider)
        self.runtime = "onnxruntime"
        self.runtime_version = ort.__version__
        self.inputs = [
            {"name": i.name, "shape": list(i.shape), "dtype": ONNX_DTYPES.get(i.type, i.type)}
            for i in self.session.get_inputs()
        ]
        self.outputs = [
            {"name": o.name, "shape": list(o.shape), "dtype": ONNX_DTYPES.get(o.type, o.type)}
            for o in self.session.get_outputs()
        ]
        self._feeds: dict[str, Any] = {}
        self._last: list[Any] = []

    def prepare(self, feeds: dict[str, Any]) -> None:
        self._feeds = feeds

    def invoke(self) -> None:
        self._last = self.session.run(None, self._feeds)

    def results(self) -> dict[str, Any]:
        return {o["name"]: v for o, v in zip(self.outputs, self._last)}


class TfliteModel(Model):
    def __init__(self, path: str, threads: int, delegate: str = "") -> None:
        interpreter_cls: Any = None
        errors = []
        for module, name in (
            ("ai_edge_litert.interpreter", "ai_edge_litert"),
            ("tflite_runtime.interpreter", "tflite_runtime"),
        ):
            try:
                mod = __import__(module, fromlist=["Interpreter"])
                interpreter_cls = mod.Interpreter
                root = __import__(name)
                self.runtime = "litert" if name == "ai_edge_litert" else "tflite_runtime"
                self.runtime_version = str(getattr(root, "__version__", "unknown"))
                break
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        if interpreter_cls is None:
            raise RunnerError(
                "runtime_missing",
                "no TFLite runtime for {} (ai_edge_litert or tflite_runtime): {}".format(
                    sys.executable, "; ".join(errors)
                ),
            )
        try:
            kwargs: dict[str, Any] = {"model_path": path}
            if threads > 0:
                kwargs["num_threads"] = threads
            kwargs.update(delegate_kwargs(interpreter_cls, self.runtime, delegate))
            self.interp = interpreter_cls(**kwargs)
            self.interp.allocate_tensors()
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(
                "bad_model",
                f"{self.runtime} cannot load {os.path.basename(path)}: {str(exc).strip()[:300]}",
            ) from exc

        def describe(detail: dict[str, Any]) -> dict[str, Any]:
            dtype = detail["dtype"]
            # shape_signature keeps a dynamic dim as -1 where shape says 1.
            signature = detail.get("shape_signature")
            shape = detail["shape"] if signature is None or not len(signature) else signature
            info = {
                "name": detail["name"],
                "shape": [int(d) for d in shape],
                "dtype": getattr(dtype, "__name__", str(dtype)),
                "index": int(detail["index"]),
            }
            scale, zero_point = detail.get("quantization", (0.0, 0))
            if scale:  # an int8 model's float I/O is quantized with these
                info["quantization"] = [float(scale), int(zero_point)]
            return info

        self.inputs = [describe(d) for d in self.interp.get_input_details()]
        self.outputs = [describe(d) for d in self.interp.get_output_details()]
        self.accelerator = delegate_in_use(self.interp, delegate)

    def prepare(self, feeds: dict[str, Any]) -> None:
        """Resize dynamic inputs to the feeds' shapes (one allocation), then set them."""
        resized = False
        current = {
            d["index"]: [int(n) for n in d["shape"]] for d in self.interp.get_input_details()
        }
        for spec in self.inputs:
            wanted = [int(n) for n in feeds[spec["name"]].shape]
            if current.get(spec["index"]) != wanted:
                self.interp.resize_tensor_input(spec["index"], wanted)
                resized = True
        if resized:
            self.interp.allocate_tensors()
        for spec in self.inputs:
            self.interp.set_tensor(spec["index"], feeds[spec["name"]])

    def invoke(self) -> None:
        self.interp.invoke()

    def results(self) -> dict[str, Any]:
        """Outputs as real values: quantized ones are dequantized."""
        out = {}
        for spec in self.outputs:
            value = self.interp.get_tensor(spec["index"])
            if spec.get("quantization"):
                scale, zero_point = spec["quantization"]
                value = (value.astype("float32") - zero_point) * scale
            out[spec["name"]] = value
        return out


def load_model(path: str, runtime: str, threads: int, ep: str = "", delegate: str = "") -> Model:
    if not os.path.isfile(path):
        raise RunnerError("bad_model", f"model file not found on device: {path}")
    ext = os.path.splitext(path)[1].lower()
    if runtime == "auto":
        runtime = {".onnx": "onnxruntime", ".tflite": "litert"}.get(ext, "")
    if runtime == "onnxruntime":
        if delegate:
            raise RunnerError("bad_accelerator", "--delegate applies to TFLite models only")
        return OnnxModel(path, threads, ep)
    if runtime == "litert":
        if ep:
            raise RunnerError("bad_accelerator", "--ep applies to ONNX models only")
        return TfliteModel(path, threads, delegate)
    raise RunnerError("bad_model", f"unknown model format {ext!r} (expected .onnx or .tflite)")


def parse_dims(text: str) -> list[int]:
    """'1x3x640x640' (or '1,3,640,640') as [1, 3, 640, 640]; ValueError saying what is
    wrong otherwise."""
    parts = re.split(r"[x,]", text.strip().lower())  # 1x3x8x8, or 1,3,8,8 as export takes
    if not text.strip() or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{text!r} is not a shape like 1x3x640x640 (positive integers)")
    return [int(p) for p in parts]


def parse_shape_arg(text: str) -> tuple[str, list[int]]:
    """'NAME=1x3x640x640' (or '1x3x640x640' for a model's only input: name '')."""
    name, sep, dims = text.rpartition("=")
    return (name.strip() if sep else ""), parse_dims(dims)


def dim_names(declared: list[Any]) -> list[str | None]:
    """Per dim: None when the model fixes it, else its symbolic name ('?' when unnamed)."""
    return [
        None
        if isinstance(d, int) and not isinstance(d, bool) and d > 0
        else (d if isinstance(d, str) and d else "?")
        for d in declared
    ]


def shape_text(shape: list[Any]) -> str:
    return "[" + ", ".join("?" if d is None or d == -1 else str(d) for d in shape) + "]"


def shape_matches(declared: list[Any], actual: tuple[int, ...] | list[int]) -> bool:
    if len(declared) != len(actual):
        return False
    return all(n is not None or d == a for n, d, a in zip(dim_names(declared), declared, actual))


def _check_given(spec: dict[str, Any], shape: list[int], where: str) -> None:
    if not shape_matches(spec["shape"], shape):
        raise RunnerError(
            "input_shape",
            "input {!r} expects shape {}, {} gives {}".format(
                spec["name"], shape_text(spec["shape"]), where, shape_text(shape)
            ),
        )


def resolve_shapes(
    specs: list[dict[str, Any]], given: dict[str, list[int]], skip: tuple[str, ...] = ()
) -> dict[str, tuple[list[int], list[str]]]:
    """The concrete shape of every input (but `skip`: those a file provides) and the dims
    that took the default, from the model's declared shapes and --input-shape values.

    A symbolic dim is never guessed, with one documented exception: the leading dim of an
    input of rank 2 or more (a batch) is 1 when nothing says otherwise."""
    names = [s["name"] for s in specs]
    given = dict(given)
    if "" in given:
        if len(specs) != 1:
            raise RunnerError(
                "input_shape",
                "--input-shape without a name needs a model with one input; this one has "
                f"{len(specs)} ({', '.join(names)}): use --input-shape NAME=DIMS",
            )
        given[names[0]] = given.pop("")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise RunnerError(
            "input_shape",
            f"--input-shape names {', '.join(map(repr, unknown))}, not an input of the model "
            f"(inputs: {', '.join(names)})",
        )
    resolved: dict[str, tuple[list[int], list[str]]] = {}
    for spec in specs:
        name = spec["name"]
        if name in skip:
            continue
        if name in given:
            _check_given(spec, given[name], "--input-shape")
            resolved[name] = (list(given[name]), [])
            continue
        symbolic = dim_names(spec["shape"])
        defaulted = []
        if len(symbolic) >= 2 and symbolic[0] is not None and all(n is None for n in symbolic[1:]):
            defaulted = [str(symbolic[0])]
        elif any(n is not None for n in symbolic):
            example = "x".join(
                str(d) if n is None else ("1" if i == 0 and len(symbolic) >= 2 else n)
                for i, (n, d) in enumerate(zip(symbolic, spec["shape"]))
            )
            missing = [n for n in symbolic if n is not None]
            raise RunnerError(
                "input_shape",
                "input {!r} has unknown {} {} in {}: give {} with --input-shape {}={}".format(
                    name,
                    "dims" if len(missing) > 1 else "dim",
                    ", ".join(str(n) for n in missing),
                    shape_text(spec["shape"]),
                    "them" if len(missing) > 1 else "it",
                    name,
                    example,
                ),
            )
        shape = [1 if n is not None else int(d) for n, d in zip(symbolic, spec["shape"])]
        resolved[name] = (shape, defaulted)
    return resolved


def dtype_problem(np: Any, array: Any, spec: dict[str, Any]) -> str | None:
    """Why `array` cannot feed the input `spec` as is, or None. Never a lossy cast: floats
    between float widths, integers between integer widths when every value fits, and
    float data for a quantized integer input (quantized with its scale) are accepted."""
    want = np.dtype(spec["dtype"])
    have = array.dtype
    if have == want:
        return None
    if have.kind == "f" and want.kind == "f":
        return None
    if have.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        if array.size == 0 or (int(array.min()) >= info.min and int(array.max()) <= info.max):
            return None
        return f"values outside {want}'s range [{info.min}, {info.max}]"
    if have.kind == "f" and want.kind in "iu" and spec.get("quantization"):
        return None
    return f"expects {want}, got {have}"


def check_provided(
    np: Any, specs: list[dict[str, Any]], provided: dict[str, Any], source: str
) -> None:
    """A file's arrays must be exactly the model's inputs, of the right dtype and shape."""
    names = [s["name"] for s in specs]
    extra = sorted(set(provided) - set(names))
    if extra:
        raise RunnerError(
            "bad_input",
            f"{source} has arrays the model does not take: {', '.join(map(repr, extra))} "
            f"(inputs: {', '.join(names)})",
        )
    missing = [n for n in names if n not in provided]
    if missing:
        raise RunnerError(
            "bad_input",
            f"{source} lacks input {', '.join(map(repr, missing))} "
            f"(inputs: {', '.join(names)}; one array per input name)",
        )
    for spec in specs:
        array = provided[spec["name"]]
        problem = dtype_problem(np, array, spec)
        if problem is not None:
            raise RunnerError(
                "bad_input", f"input {spec['name']!r} in {source}: {problem} (not cast)"
            )
        _check_given(spec, list(array.shape), source)


def load_provided(np: Any, model: Model, input_path: str) -> dict[str, Any]:
    """The arrays of an --input .npy (the model's only input) or .npz (by input name)."""
    source = os.path.basename(input_path)
    try:
        loaded = np.load(input_path, allow_pickle=False)
    except Exception as exc:
        raise RunnerError("bad_input", f"cannot read input {source}: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        if len(model.inputs) != 1:
            raise RunnerError(
                "bad_input",
                f"model has {len(model.inputs)} inputs "
                f"({', '.join(i['name'] for i in model.inputs)}); "
                "pass an .npz with one array per input name",
            )
        return {model.inputs[0]["name"]: loaded}
    return {k: loaded[k] for k in loaded.files}


def make_inputs(
    model: Model,
    input_path: str | None,
    seed: int,
    shapes: dict[str, list[int]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The feeds, and what they are (name, shape, dtype, source, defaulted dims): values
    from --input, else random floats (and quantized inputs) and zeros for integer and
    bool inputs, whose values are often indices that random numbers would overrun."""
    import numpy as np

    source = os.path.basename(input_path) if input_path else ""
    provided = load_provided(np, model, input_path) if input_path else {}
    if provided:
        check_provided(np, model.inputs, provided, source)
        for name, dims in (shapes or {}).items():
            name = name or model.inputs[0]["name"]
            if name in provided and list(provided[name].shape) != list(dims):
                raise RunnerError(
                    "input_shape",
                    f"input {name!r}: --input-shape says {'x'.join(map(str, dims))} but "
                    f"{source} holds {'x'.join(map(str, provided[name].shape))}",
                )
    resolved = resolve_shapes(model.inputs, shapes or {}, tuple(provided))
    rng = np.random.default_rng(seed)
    feeds: dict[str, Any] = {}
    described: list[dict[str, Any]] = []
    for spec in model.inputs:
        name = spec["name"]
        dtype = np.dtype(spec["dtype"])
        defaulted: list[str] = []
        if name in provided:
            array = provided[name]
            if array.dtype.kind == "f" and dtype.kind in "iu" and spec.get("quantization"):
                scale, zero_point = spec["quantization"]
                info = np.iinfo(dtype)
                array = np.clip(np.round(array / scale) + zero_point, info.min, info.max)
            feed = np.ascontiguousarray(array.astype(dtype, copy=False))
            origin = "file"
        else:
            shape, defaulted = resolved[name]
            if dtype.kind == "f":
                feed = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
                origin = "random"
            elif dtype.kind in "iu" and spec.get("quantization"):
                # A quantized activation (an image, a signal), not an index: random codes.
                info = np.iinfo(dtype)
                low, high = max(info.min, -128), min(info.max, 127)
                feed = rng.integers(low, high + 1, size=shape).astype(dtype)
                origin = "random"
            else:
                feed = np.zeros(shape, dtype=dtype)
                origin = "zeros"
        feeds[name] = feed
        entry = {"name": name, "shape": list(feed.shape), "dtype": str(feed.dtype)}
        entry["source"] = origin
        if defaulted:
            entry["defaulted"] = defaulted
        described.append(entry)
    return feeds, described


INDEX_ERROR = re.compile(r"out of (data )?bounds|out of range|index|indices", re.IGNORECASE)


def first_inference_error(model: Model, feeds: list[dict[str, Any]], exc: Exception) -> RunnerError:
    """A first inference that fails on an index is the input's fault when the model takes
    integers (ids, positions): say which input and how to give real values."""
    message = f"first inference failed: {last_line(exc)}"
    integers = [
        f
        for f, s in zip(feeds, model.inputs)
        if f["dtype"].startswith(("int", "uint")) and not s.get("quantization")
    ]
    if integers and INDEX_ERROR.search(message):
        which = integers[0]
        if which["source"] == "file":
            hint = f"input {which['name']!r} is {which['dtype']}: are its --input values in range?"
        else:
            hint = (
                f"input {which['name']!r} is {which['dtype']} ({which['source']} here): pass "
                "real values with --input FILE.npz"
            )
        return RunnerError("bad_input", message, hint)
    return RunnerError("inference_failed", message)


def measure(
    invoke: Callable[[], None],
    iterations: int,
    duration: float,
    min_duration: float,
    on_batch: Callable[[int, list[int], list[int]], None],
) -> tuple[int, int]:
    """Time each call; flush batches so a killed run still leaves its samples. Each
    inference's start time is kept too: energy windows and traces need where, not only
    how long."""
    clock = time.perf_counter_ns
    deadline = clock() + int(duration * 1e9) if duration > 0 else 0
    at_least = clock() + int(min_duration * 1e9)
    batch: list[int] = []
    starts: list[int] = []
    first_index = 0
    count = 0
    start = last_flush = clock()
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        batch.append(t1 - t0)
        starts.append(t0)
        count += 1
        if len(batch) >= FLUSH_SAMPLES or t1 - last_flush >= FLUSH_NS:
            on_batch(first_index, batch, starts)
            first_index, batch, starts, last_flush = count, [], [], t1
        if (iterations and count >= iterations and t1 >= at_least) or (deadline and t1 >= deadline):
            break
    if batch:
        on_batch(first_index, batch, starts)
    return count, clock() - start


class HwmonSampler:
    """Reads an INA219/226/260/3221 through Linux hwmon beside the run, on the runner's
    clock, so its samples need no alignment: `power{N}_input` (uW) when the chip has it,
    else `in{N}_input` (mV) x `curr{N}_input` (mA)."""

    def __init__(self, spec: str, channel: int, root: str, rate_hz: float) -> None:
        self.dir = self._find(spec, root)
        self.period = 1.0 / max(rate_hz, 0.1)
        self._fds: dict[str, int] = {}
        for kind, name in (("w", "power"), ("v", "in"), ("a", "curr")):
            path = os.path.join(self.dir, f"{name}{channel}_input")
            if os.path.exists(path):
                self._fds[kind] = os.open(path, os.O_RDONLY)
        if "w" not in self._fds and not ("v" in self._fds and "a" in self._fds):
            raise RunnerError(
                "meter",
                f"{self.dir} has neither power{channel}_input nor in{channel}_input and "
                f"curr{channel}_input: wrong channel?",
            )
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _find(spec: str, root: str) -> str:
        if spec.startswith("/"):
            if not os.path.isdir(spec):
                raise RunnerError("meter", f"no hwmon device at {spec}")
            return spec
        names = []
        for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            name = read_text(os.path.join(root, entry, "name"))
            names.append(f"{entry}={name}")
            if name == spec:
                return os.path.join(root, entry)
        raise RunnerError(
            "meter", f"no hwmon chip named {spec!r} under {root} ({', '.join(names) or 'none'})"
        )

    def _read(self, kind: str) -> float | None:
        fd = self._fds.get(kind)
        if fd is None:
            return None
        return float(os.pread(fd, 64, 0).strip() or b"nan")

    def _loop(self) -> None:
        clock = time.perf_counter_ns
        batch: dict[str, list[Any]] = {"t": [], "w": [], "v": [], "a": []}
        last_flush = next_at = clock()
        stopping = False
        while not stopping:
            stopping = self._stop.is_set()  # one last sample after stop(): covers the run's end
            t = clock()
            microwatts, millivolts, milliamps = self._read("w"), self._read("v"), self._read("a")
            volts = millivolts / 1e3 if millivolts is not None else None
            amps = milliamps / 1e3 if milliamps is not None else None
            if microwatts is not None:
                watts = microwatts / 1e6
            else:
                watts = (volts or 0.0) * (amps or 0.0)
            batch["t"].append((t + clock()) // 2)
            batch["w"].append(watts)
            batch["v"].append(volts)
            batch["a"].append(amps)
            self._first.set()
            if t - last_flush >= FLUSH_NS:
                emit("power", **batch)
                batch = {"t": [], "w": [], "v": [], "a": []}
                last_flush = t
            next_at += int(self.period * 1e9)
            self._stop.wait(max(next_at - clock(), 0) / 1e9)
        if batch["t"]:
            emit("power", **batch)

    def start(self) -> None:
        """Returns once the first sample is in, so every later window is covered."""
        self._thread.start()
        self._first.wait(timeout=5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in self._fds.values():
            os.close(fd)


def idle_phase(seconds: float) -> None:
    """Leave the device idle (model not yet loaded) so the meter sees its idle power."""
    if seconds > 0:
        start = time.perf_counter_ns()
        time.sleep(seconds)
        emit("phase", name="idle", start=start, end=time.perf_counter_ns())


def warmup(invoke: Callable[[], None], count: int, seconds: float) -> tuple[int, float]:
    start = time.perf_counter()
    done = 0
    while done < count or time.perf_counter() - start < seconds:
        invoke()
        done += 1
    return done, time.perf_counter() - start


def emit_hello() -> None:
    emit(
        "hello",
        runner=RUNNER_VERSION,
        device=device_facts(),
        runtimes=runtime_versions(),
        accelerators=available_accelerators(),
    )


def import_numpy() -> Any:
    """numpy, or the runner's `runtime_missing` error naming this interpreter."""
    try:
        import numpy as np
    except Exception as exc:
        raise RunnerError(
            "runtime_missing", f"numpy is not installed for {sys.executable} ({exc})"
        ) from exc
    return np


def timed_load(
    path: str, runtime: str, threads: int, ep: str = "", delegate: str = ""
) -> tuple[Model, float]:
    """The model and how long loading it took, in ms."""
    start = time.perf_counter()
    model = load_model(path, runtime, threads, ep, delegate)
    return model, (time.perf_counter() - start) * 1000


def emit_model(
    model: Model, load_ms: float, threads: int, feeds: list[dict[str, Any]] | None = None
) -> None:
    """What was loaded (with the inputs fed to it), and the device's state just before
    measuring starts."""
    extra = {"feeds": feeds} if feeds is not None else {}
    emit(
        "model",
        runtime=model.runtime,
        runtime_version=model.runtime_version,
        inputs=model.inputs,
        outputs=model.outputs,
        load_ms=load_ms,
        threads=threads,
        rss_after_load=peak_rss_bytes(),
        **model.accelerator,
        **extra,
    )
    emit("env", when="before", **environment())


def cmd_facts(_: argparse.Namespace) -> int:
    emit_hello()
    emit("env", when="now", **environment())
    return 0


def start_sampler(args: argparse.Namespace) -> HwmonSampler | None:
    if not args.hwmon:
        return None
    sampler = HwmonSampler(args.hwmon, args.hwmon_channel, args.hwmon_root, args.power_rate)
    sampler.start()
    return sampler


def _exit_when_stdin_closes() -> None:
    while True:
        try:
            if not os.read(0, 4096):
                break
        except OSError:
            break
    os._exit(129)  # the host (or its connection) is gone: nobody reads what follows


def _exit_at_deadline(seconds: float) -> None:
    time.sleep(seconds)
    # The main thread may hold the emit lock, blocked on a full pipe: do not wait for it.
    if _EMIT_LOCK.acquire(timeout=1.0):
        try:
            message = f"the runner ran past its deadline of {seconds:g} s and stopped itself"
            line = {"event": "error", "kind": "deadline", "message": message}
            sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
    os._exit(124)


def start_lifeline(args: argparse.Namespace) -> None:
    """End this process when the host is gone (`--lifeline`: its stdin, held open by
    the host for the run, closes) or when the run overstays `--deadline` seconds: a
    hung model or a lost host never leaves a runner competing with the next run."""
    if args.lifeline:
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    if args.deadline > 0:
        threading.Thread(target=_exit_at_deadline, args=(args.deadline,), daemon=True).start()
        if hasattr(signal, "alarm"):
            # A backstop the kernel enforces (SIGALRM's default action ends the process)
            # even if this interpreter is stuck in native code holding the GIL.
            signal.alarm(int(args.deadline) + 30)


def cmd_run(args: argparse.Namespace) -> int:
    start_lifeline(args)
    emit_hello()
    np = import_numpy()
    sampler = start_sampler(args)
    try:
        idle_phase(args.idle_seconds)
        return timed_run(args, np)
    finally:
        if sampler is not None:
            sampler.stop()


def cmd_clock(_: argparse.Namespace) -> int:
    """Answer each stdin line with this clock: the host's round trips bound the offset."""
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        emit("clock", t=time.perf_counter_ns())
    return 0


def timed_run(args: argparse.Namespace, np: Any) -> int:
    model, load_ms = timed_load(args.model, args.runtime, args.threads, args.ep, args.delegate)
    feeds, described = make_inputs(model, args.input, args.seed, dict(args.input_shape))
    try:
        model.prepare(feeds)
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError(
            "input_shape", f"the runtime refused the inputs {described}: {last_line(exc)}"
        ) from exc
    emit_model(model, load_ms, args.threads, described)
    first_start = time.perf_counter_ns()
    try:
        model.invoke()
    except Exception as exc:
        raise first_inference_error(model, described, exc) from exc
    first_ns = time.perf_counter_ns() - first_start
    if args.dump_outputs:
        np.savez(args.dump_outputs, **model.results())
    done, seconds = warmup(model.invoke, args.warmup, args.warmup_seconds)
    emit("warmup", count=done, seconds=seconds, first_ns=first_ns)

    def on_batch(first: int, ns: list[int], starts: list[int]) -> None:
        emit("sample", i=first, ns=ns, t=starts)

    measure_start = time.perf_counter_ns()
    count, wall_ns = measure(
        model.invoke, args.iterations, args.duration, args.min_duration, on_batch
    )
    emit("phase", name="measure", start=measure_start, end=time.perf_counter_ns())
    emit("env", when="after", **environment())
    emit("summary", count=count, wall_ns=wall_ns, peak_rss=peak_rss_bytes())
    if args.op_profile:
        emit_op_profile(model, args.model, feeds, args.op_profile)
    return 0


# Per-operator profiles: a separate pass after the timed loop, in a second session with
# the profiler on (onnxruntime turns it on only when a session is created), so the timed
# samples above never include the profiler's overhead. The profiler's JSON (one event per
# node per inference: megabytes for a big model) is summarised here, on the device, and only
# the summary travels to the host.

PROFILE_WARMUP = 2
"""Untimed inferences of the profiling session before the profiled ones (its first call
allocates its arena, which would dominate the first profiled inference)."""
PROFILE_SLICES = 10
"""Profiled inferences whose node slices (offset, duration) are kept for the trace."""
PROFILE_NOTE = "a separate profiling pass after the timed repetitions; not latency figures"


def _by_ts(event: dict[str, Any]) -> float:
    return float(event.get("ts", 0))


def summarize_ort_profile(
    trace: list[dict[str, Any]],
    skip: int,
    calls: list[tuple[int, int]],
    slices: int = PROFILE_SLICES,
) -> dict[str, Any]:
    """onnxruntime's profiler events as per op type and per node sums over the profiled
    inferences (the `model_run` windows after the first `skip`), plus node slices relative to
    each `model_run`'s start for the first `slices` inferences. `calls` are the runner's own
    (device clock start, duration) of each profiled call, so a trace can place the slices."""
    runs = sorted(
        (e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=_by_ts,
    )[skip:]
    kernels = sorted(
        (
            e
            for e in trace
            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
        ),
        key=_by_ts,
    )
    order: dict[str, int] = {}
    nodes: list[dict[str, Any]] = []
    per_run: list[list[list[float]]] = [[] for _ in runs]
    run_index = 0
    for event in kernels:
        ts, dur = float(event["ts"]), float(event.get("dur", 0))
        while run_index < len(runs) and ts > float(runs[run_index]["ts"]) + float(
            runs[run_index].get("dur", 0)
        ):
            run_index += 1
        if run_index >= len(runs):
            break
        start = float(runs[run_index]["ts"])
        if ts < start:
            continue  # a warm-up inference's node
        name = str(event["name"])[: -len("_kernel_time")]
        args = event.get("args") or {}
        if name not in order:
            order[name] = len(nodes)
            nodes.append(
                {
                    "name": name,
                    "op_type": str(args.get("op_name") or "?"),
                    "provider": args.get("provider"),
                    "calls": 0,
                    "total_us": 0.0,
                }
            )
        node = nodes[order[name]]
        node["calls"] += 1
        node["total_us"] += dur
        if run_index < slices:
            per_run[run_index].append([order[name], ts - start, dur])
    count = len(runs)
    model_us = sum(float(r.get("dur", 0)) for r in runs)
    types: dict[str, dict[str, Any]] = {}
    for node in nodes:
        row = types.setdefault(
            node["op_type"], {"op_type": node["op_type"], "nodes": 0, "calls": 0, "total_us": 0.0}
        )
        row["nodes"] += 1
        row["calls"] += node["calls"]
        row["total_us"] += node["total_us"]

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        total_us = row.pop("total_us")
        row["total_ms"] = total_us / 1e3
        row["mean_ms"] = total_us / 1e3 / count if count else None
        row["percent"] = 100.0 * total_us / model_us if model_us > 0 else None
        return row

    return {
        "format": 1,
        "source": "onnxruntime profiler",
        "note": PROFILE_NOTE,
        "inferences": count,
        "warmup": skip,
        "percent_of": "inference",
        "inference_ms": model_us / 1e3 / count if count else None,
        "op_types": [finish(row) for row in types.values()],
        "nodes": [finish(node) for node in nodes],
        "slices": [
            {
                "index": i,
                "start_ns": calls[i][0] if i < len(calls) else None,
                "dur_ns": calls[i][1] if i < len(calls) else None,
                "model_us": float(runs[i].get("dur", 0)),
                "nodes": per_run[i],
            }
            for i in range(min(count, slices))
        ],
    }


def profile_onnx(model: OnnxModel, path: str, feeds: dict[str, Any], count: int) -> dict[str, Any]:
    """Run `count` inferences in a profiled copy of the timed session (same options and
    execution providers) and summarise the profiler's JSON; its file is removed."""
    import shutil
    import tempfile

    import onnxruntime as ort

    session = model.session
    workdir = tempfile.mkdtemp(prefix="edgetool-profile-")
    try:
        options = session.get_session_options()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(workdir, "ort")
        providers = session.get_providers()
        provider_options = session.get_provider_options()
        profiled = ort.InferenceSession(
            path,
            sess_options=options,
            providers=providers,
            provider_options=[provider_options.get(p, {}) for p in providers],
        )
        for _ in range(PROFILE_WARMUP):
            profiled.run(None, feeds)
        calls: list[tuple[int, int]] = []
        clock = time.perf_counter_ns
        for _ in range(count):
            t0 = clock()
            profiled.run(None, feeds)
            calls.append((t0, clock() - t0))
        with open(profiled.end_profiling(), encoding="utf-8") as handle:
            trace = json.load(handle)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(trace, dict):  # some builds wrap the events
        trace = trace.get("traceEvents", [])
    return summarize_ort_profile(trace, PROFILE_WARMUP, calls)


def emit_op_profile(model: Model, path: str, feeds: dict[str, Any], count: int) -> None:
    """The profiling pass's summary as one `op_profile` line; a failure is reported in it
    (the timed run before it stands)."""
    if not isinstance(model, OnnxModel):
        emit(
            "op_profile",
            error=f"{model.runtime}'s Python interpreter exposes no per-operator profiler; "
            "use benchmark_model --enable_op_profiling",
        )
        return
    try:
        emit("op_profile", **profile_onnx(model, path, feeds, count))
    except Exception as exc:
        emit("op_profile", error=f"profiling failed: {last_line(exc)}")


class Generator:
    """Greedy decoding with an ONNX decoder that takes and returns its KV cache.

    Inputs `input_ids`, `attention_mask` and `past_key_values.N.key/value`
    [batch, kv_heads, past, head_size]; outputs `logits` and `present.N.key/value`
    (the layout onnxruntime-genai's model builder writes). Tokenizing stays on the host:
    prompts arrive as token ids and generated ids go back as ids.
    """

    def __init__(self, model: OnnxModel, head_size: int) -> None:
        import numpy as np

        self.np = np
        self.session = model.session
        names = [i["name"] for i in model.inputs]
        self.pasts = [i for i in model.inputs if i["name"].startswith("past_key_values.")]
        if "input_ids" not in names or not self.pasts:
            raise RunnerError(
                "bad_model", "not a KV-cache decoder (needs input_ids and past_key_values.*)"
            )
        self.head_size = head_size
        self.present = {
            p["name"]: p["name"].replace("past_key_values.", "present.") for p in self.pasts
        }
        self.output_names = ["logits", *self.present.values()]
        self.has_mask = "attention_mask" in names

    def _step(self, ids: Any, past: dict[str, Any], total: int) -> tuple[int, dict[str, Any]]:
        np = self.np
        feeds = {"input_ids": ids, **past}
        if self.has_mask:
            feeds["attention_mask"] = np.ones((1, total), dtype=np.int64)
        out = self.session.run(self.output_names, feeds)
        token = int(np.argmax(out[0][0, -1]))
        return token, {name: value for name, value in zip(self.present, out[1:])}

    def generate(self, prompt: Any, new_tokens: int, clock: Callable[[], int]) -> dict[str, Any]:
        """(ttft_ns, per-token decode ns, tokens): prefill + first token, then one per step."""
        np = self.np
        past = {
            p["name"]: np.zeros((1, int(p["shape"][1]), 0, self.head_size), dtype=np.float32)
            for p in self.pasts
        }
        t0 = clock()
        token, past = self._step(prompt[None, :], past, len(prompt))
        ttft = clock() - t0
        tokens, steps = [token], []
        for k in range(1, new_tokens):
            t0 = clock()
            token, past = self._step(np.asarray([[token]], dtype=np.int64), past, len(prompt) + k)
            steps.append(clock() - t0)
            tokens.append(token)
        return {"ttft_ns": ttft, "step_ns": steps, "tokens": tokens}


def cmd_generate(args: argparse.Namespace) -> int:
    start_lifeline(args)
    emit_hello()
    np = import_numpy()
    model, load_ms = timed_load(args.model, "onnxruntime", args.threads, args.ep)
    assert isinstance(model, OnnxModel)
    generator = Generator(model, args.head_size)
    try:
        prompt = np.asarray(np.load(args.prompt_ids, allow_pickle=False), dtype=np.int64).ravel()
    except Exception as exc:
        raise RunnerError("bad_input", f"cannot read prompt ids: {exc}") from exc
    if prompt.size == 0 or args.tokens < 1:
        raise RunnerError("bad_input", "need a non-empty prompt and --tokens >= 1")
    emit_model(model, load_ms, args.threads)
    clock = time.perf_counter_ns
    try:
        first = clock()
        for _ in range(max(args.warmup, 1)):
            warm = generator.generate(prompt, args.tokens, clock)
        warm_s = (clock() - first) / 1e9
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError("inference_failed", f"generation failed: {last_line(exc)}") from exc
    emit("warmup", count=max(args.warmup, 1), seconds=warm_s, first_ns=warm["ttft_ns"])
    index = 0
    start = clock()
    for rep in range(args.repeat):
        result = generator.generate(prompt, args.tokens, clock)
        # Per-token decode latencies are this mode's samples; the rest is per generation.
        if result["step_ns"]:
            emit("sample", i=index, ns=result["step_ns"])
            index += len(result["step_ns"])
        emit(
            "generation",
            repeat=rep,
            prompt_tokens=int(prompt.size),
            new_tokens=len(result["tokens"]),
            ttft_ns=result["ttft_ns"],
            decode_ns=sum(result["step_ns"]),
            tokens=result["tokens"],
        )
    emit("env", when="after", **environment())
    emit("summary", count=index, wall_ns=clock() - start, peak_rss=peak_rss_bytes())
    return 0


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def finite_seconds(text: str) -> float:
    """nan would run forever and inf overflow the deadline: a number of seconds, >= 0."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def shape_arg(text: str) -> tuple[str, list[int]]:
    try:
        return parse_shape_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgetool-runner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("facts", help="print device facts and exit")
    run = sub.add_parser("run", help="time a model")
    run.add_argument("--model", required=True)
    run.add_argument("--runtime", default="auto", choices=["auto", "onnxruntime", "litert"])
    run.add_argument("--iterations", type=int, default=0)
    run.add_argument("--duration", type=finite_seconds, default=0.0)
    run.add_argument(
        "--min-duration", type=float, default=0.0, help="with --iterations: run at least this long"
    )
    run.add_argument("--warmup", type=int, default=10)
    run.add_argument("--warmup-seconds", type=float, default=0.0)
    run.add_argument("--threads", type=int, default=0)
    run.add_argument("--input", default=None)
    run.add_argument("--seed", type=non_negative_int, default=0)
    run.add_argument(
        "--input-shape",
        type=shape_arg,
        action="append",
        default=[],
        help="NAME=1x3x640x640 (or DIMS for the only input): values for symbolic dims",
    )
    run.add_argument("--ep", default="", help="onnxruntime execution provider (default: CPU)")
    run.add_argument(
        "--delegate",
        default="",
        choices=["", "xnnpack", "none"],
        help="LiteRT: XNNPACK on or off (default: the runtime's own choice)",
    )
    run.add_argument("--dump-outputs", default=None)
    run.add_argument(
        "--op-profile",
        type=non_negative_int,
        default=0,
        help="after the timed loop, profile this many inferences per operator (onnxruntime)",
    )
    run.add_argument("--hwmon", default=None, help="hwmon chip name (e.g. ina260) or path")
    run.add_argument("--hwmon-channel", type=int, default=1)
    run.add_argument("--hwmon-root", default="/sys/class/hwmon")
    run.add_argument("--power-rate", type=float, default=100.0, help="hwmon reads per second")
    run.add_argument("--idle-seconds", type=float, default=0.0, help="idle before loading")
    sub.add_parser("clock", help="answer each stdin line with the device clock (alignment)")
    gen = sub.add_parser("generate", help="time greedy generation with a KV-cache LLM")
    gen.add_argument("--model", required=True)
    gen.add_argument("--prompt-ids", required=True, help=".npy of int64 token ids")
    gen.add_argument("--tokens", type=int, default=32, help="new tokens per generation")
    gen.add_argument("--head-size", type=int, required=True)
    gen.add_argument("--repeat", type=int, default=3, help="timed generations")
    gen.add_argument("--warmup", type=int, default=1, help="untimed generations first")
    gen.add_argument("--threads", type=int, default=0)
    gen.add_argument("--ep", default="", help="onnxruntime execution provider (default: CPU)")
    for timed in (run, gen):
        timed.add_argument(
            "--deadline", type=float, default=0.0, help="stop after this many seconds (0: never)"
        )
        timed.add_argument(
            "--lifeline", action="store_true", help="exit when stdin closes (the host is gone)"
        )
    args = parser.parse_args(argv)
    if args.command == "run" and not args.iterations and not args.duration:
        args.iterations = 100
    commands = {"facts": cmd_facts, "run": cmd_run, "generate": cmd_generate, "clock": cmd_clock}
    try:
        return commands[args.command](args)
    except RunnerError as exc:
        extra = {"hint": exc.hint} if exc.hint else {}
        emit("error", kind=exc.kind, message=exc.message, **extra)
        return 2
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        emit("error", kind="interrupted", message="interrupted on the device")
        return 130
    except Exception as exc:  # the host must always get one parseable line
        emit("error", kind="internal", message=f"{type(exc).__name__}: {exc}")
        return 3


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        os._exit(141)
