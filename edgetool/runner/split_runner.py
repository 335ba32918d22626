#!/usr/bin/env python3
"""edgetool split runner: one file, numpy + onnxruntime (+ zstandard for `+zstd`), Python 3.9+.

Two processes run one split model: `head` on the device (the model up to the cut, then a
codec encodes the crossing tensor) and `tail` on the server (decode, then the rest of the
model). The host drives both in lockstep over their stdin/stdout, one JSON line each way
per inference:

    head:  stdin `go`              -> {"event":"feature","i","head_ns","encode_ns","bytes",
                                       "data"}
    tail:  stdin {"i":K,"data":B64} -> {"event":"result","i","decode_ns","tail_ns","top1",
                                       "reply","reply_bytes"}

Both print a `ready` line first (inputs, the crossing tensor, versions) and one `error`
line (kind bad_model | bad_input | codec | codec_unavailable | runtime_missing) with exit
code 2 on failure; `quit` or EOF ends them with 0. `data` is base64 of the raw payload: the
bytes that cross the link, codec side information included.

The codecs live here once, so the host imports this module for calibration and for codec
quality (edgetool/split/quality.py) and measures exactly what the device sends. It imports
nothing from edgetool: what runs on a Raspberry Pi is this file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

try:
    import numpy as np
except ImportError:  # main() reports it as one error line; the host always has numpy
    np = None  # type: ignore[assignment]

ZSTD_LEVEL = 3
SGQ_GROUPS = 8
SGQ_STRIPES = 4
SGQ_LEVELS = 15  # 4-bit codes 0..15
SGQ_SIDE_SHARE = 8
"""sgq4 keeps its side info (4 bytes per group x stripe) under 1/8 of the tensor's element
count, i.e. under a quarter of its packed 4-bit codes: fewer stripes, then fewer groups,
for small tensors."""

Params = dict[str, Any]


class RunnerError(Exception):
    """One `error` line: `kind` is what the host branches on, `message` what a user reads."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class CodecError(RunnerError):
    """A payload or parameters a codec cannot use (wrong size, missing calibration)."""

    def __init__(self, message: str) -> None:
        super().__init__("codec", message)


# ---------------------------------------------------------------------------------------
# Codecs: calibrate on a batch of features, encode one tensor to bytes, decode it back


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _expect_size(name: str, payload: bytes, size: int, shape: Sequence[int]) -> None:
    if len(payload) != size:
        raise CodecError(
            f"{name} payload is {len(payload)} bytes; shape {_dims_text(shape)} needs {size}"
        )


class Codec:
    """A feature codec. Subclasses override what differs; params are JSON-able dicts."""

    name = ""

    def calibrate(self, features: np.ndarray) -> Params:
        """Parameters from a batch of features (batched on axis 0); most codecs need none."""
        return {}

    def encode(self, x: np.ndarray, params: Params) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes, params: Params, shape: Sequence[int]) -> np.ndarray:
        raise NotImplementedError


class NoCodec(Codec):
    """Device-only: the head is the whole model and nothing crosses."""

    name = "none"

    def encode(self, x: np.ndarray, params: Params) -> bytes:
        return b""

    def decode(self, payload: bytes, params: Params, shape: Sequence[int]) -> np.ndarray:
        raise CodecError("codec none sends nothing: a device-only run has no tail to decode")


class FloatCodec(Codec):
    """Raw little-endian floats (fp32, or fp16 with its ~1e-3 relative rounding)."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)

    def encode(self, x: np.ndarray, params: Params) -> bytes:
        return bytes(np.ascontiguousarray(x, dtype=self.dtype).tobytes())

    def decode(self, payload: bytes, params: Params, shape: Sequence[int]) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        _expect_size(self.name, payload, size, shape)
        return np.frombuffer(payload, dtype=self.dtype).astype(np.float32).reshape(shape)


class Int8Codec(Codec):
    """Per-tensor affine int8: one (scale, zero_point) from calibration, codes clipped to
    [-128, 127]. Inside the calibrated range (widened to hold 0, so ReLU zeros stay exact)
    the error is at most scale/2; nothing but the codes crosses."""

    name = "int8"

    def calibrate(self, features: np.ndarray) -> Params:
        values = _f32(features)
        low = min(float(values.min()), 0.0) if values.size else 0.0
        high = max(float(values.max()), 0.0) if values.size else 0.0
        scale = (high - low) / 255.0 if high > low else 1.0
        return {"scale": scale, "zero_point": round(-low / scale) - 128}

    def _params(self, params: Params) -> tuple[float, int]:
        try:
            scale, zero_point = float(params["scale"]), int(params["zero_point"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(
                "int8 needs calibration parameters {scale, zero_point} (--params)"
            ) from exc
        if not scale > 0:
            raise CodecError(f"int8 scale must be > 0, got {scale}")
        return scale, zero_point

    def encode(self, x: np.ndarray, params: Params) -> bytes:
        scale, zero_point = self._params(params)
        codes = np.rint(_f32(x) / np.float32(scale)) + zero_point
        return bytes(np.clip(codes, -128, 127).astype(np.int8).tobytes())

    def decode(self, payload: bytes, params: Params, shape: Sequence[int]) -> np.ndarray:
        scale, zero_point = self._params(params)
        _expect_size("int8", payload, int(np.prod(shape, dtype=np.int64)), shape)
        codes = np.frombuffer(payload, dtype=np.int8).astype(np.float32)
        return ((codes - zero_point) * np.float32(scale)).reshape(shape)


def _nchw(x: np.ndarray) -> np.ndarray:
    """A view as [batch, channels, rows, rest]: axis 1 is the channel axis and axis 2 the
    rows for rank >= 3; below that the last axis holds the channels and there is one row."""
    if x.ndim >= 3:
        return x.reshape(x.shape[0], x.shape[1], x.shape[2], -1)
    flat = x.reshape(-1, x.shape[-1] if x.ndim else 1)
    return flat[:, :, None, None]


def _from_nchw(view: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    if len(shape) >= 3:
        return view.reshape(shape)
    return view[:, :, 0, 0].reshape(shape)


def _fp16_floor(value: float) -> np.float16:
    """The largest fp16 <= value, so a group's fp16 minimum never cuts off its lowest value."""
    low = np.float16(value)
    if float(low) > value:
        low = np.nextafter(low, np.float16(-np.inf))
    return low


def _fp16_ceil(value: float) -> np.float16:
    high = np.float16(value)
    if float(high) < value:
        high = np.nextafter(high, np.float16(np.inf))
    return high


def _stripes(rows: int, count: int) -> list[slice]:
    """`count` contiguous row ranges as even as possible (np.array_split's rule)."""
    count = max(1, min(count, rows))
    base, extra = divmod(rows, count)
    bounds, start = [], 0
    for k in range(count):
        end = start + base + (1 if k < extra else 0)
        bounds.append(slice(start, end))
        start = end
    return bounds


class Sgq4Codec(Codec):
    """4-bit stripe-wise group quantisation in the SGQ spirit.

    Calibration sorts the channels by their value range over the calibration features and
    cuts that order into G groups, so channels of similar spread share a scale. At encode
    time each group is split into S stripes of rows and every group x stripe gets its own
    (min, scale) from this tensor, carried as fp16 side info ahead of the codes; codes are
    packed two per byte (high nibble first, a zero nibble pads an odd count). Error per
    value is at most that group x stripe's scale/2.
    Payload: G*S*4 bytes of side info, then ceil(numel/2) bytes of codes."""

    name = "sgq4"

    def calibrate(self, features: np.ndarray) -> Params:
        view = _nchw(_f32(features))
        channels, rows = view.shape[1], view.shape[2]
        per_channel = view.transpose(1, 0, 2, 3).reshape(channels, -1)
        spread = (
            per_channel.max(axis=1) - per_channel.min(axis=1)
            if per_channel.shape[1]
            else np.zeros(channels, dtype=np.float32)
        )
        order = [int(c) for c in np.argsort(spread, kind="stable")]
        numel = channels * rows * view.shape[3]
        groups, stripes = min(SGQ_GROUPS, channels), min(SGQ_STRIPES, rows)
        budget = max(1, numel // (SGQ_SIDE_SHARE * 4))  # (min, scale) pairs allowed
        while groups * stripes > budget and stripes > 1:
            stripes -= 1
        while groups * stripes > budget and groups > 1:
            groups -= 1
        return {
            "groups": [order[part] for part in _group_slices(len(order), groups)],
            "stripes": stripes,
        }

    def _layout(self, params: Params, channels: int) -> tuple[list[list[int]], int]:
        groups = params.get("groups")
        if groups is None:  # uncalibrated: channels in their own order
            order = list(range(channels))
            groups = [order[part] for part in _group_slices(channels, SGQ_GROUPS)]
        try:
            layout = [[int(c) for c in group] for group in groups]
            stripes = int(params.get("stripes", SGQ_STRIPES))
        except (TypeError, ValueError) as exc:
            raise CodecError("sgq4 parameters need groups (lists of channels) and stripes") from exc
        if sorted(c for group in layout for c in group) != list(range(channels)) or stripes < 1:
            calibrated = sum(len(group) for group in layout)
            raise CodecError(
                f"sgq4 parameters are for {calibrated} channels, the tensor has {channels} "
                "(calibrated on another cut?)"
            )
        return [g for g in layout if g], stripes

    def _blocks(self, view: np.ndarray, params: Params) -> list[tuple[list[int], slice]]:
        groups, stripes = self._layout(params, view.shape[1])
        rows = _stripes(view.shape[2], stripes)
        return [(group, stripe) for group in groups for stripe in rows]

    def encode(self, x: np.ndarray, params: Params) -> bytes:
        view = _nchw(_f32(x))
        side: list[np.float16] = []
        codes: list[np.ndarray] = []
        for group, stripe in self._blocks(view, params):
            block = view[:, group, stripe, :].ravel()
            if not block.size:
                side += [np.float16(0), np.float16(0)]
                continue
            low = _fp16_floor(float(block.min()))
            step = _fp16_ceil((float(block.max()) - float(low)) / SGQ_LEVELS)
            if not (np.isfinite(low) and np.isfinite(step)):
                raise CodecError("sgq4 feature values are beyond fp16's range (±65504)")
            side += [low, step]
            scaled = (block - np.float32(low)) / np.float32(step) if step > 0 else block * 0
            codes.append(np.clip(np.rint(scaled), 0, SGQ_LEVELS).astype(np.uint8))
        flat = np.concatenate(codes) if codes else np.zeros(0, dtype=np.uint8)
        if flat.size % 2:
            flat = np.append(flat, np.uint8(0))
        packed = (flat[0::2] << 4) | flat[1::2]
        return np.asarray(side, dtype="<f2").tobytes() + packed.astype(np.uint8).tobytes()

    def decode(self, payload: bytes, params: Params, shape: Sequence[int]) -> np.ndarray:
        view = _nchw(np.zeros(tuple(shape), dtype=np.float32))
        blocks = self._blocks(view, params)
        numel = view.size
        size = 4 * len(blocks) + (numel + 1) // 2
        _expect_size("sgq4", payload, size, shape)
        side = np.frombuffer(payload, dtype="<f2", count=2 * len(blocks)).astype(np.float32)
        packed = np.frombuffer(payload, dtype=np.uint8, offset=4 * len(blocks))
        flat = np.empty(packed.size * 2, dtype=np.uint8)
        flat[0::2], flat[1::2] = packed >> 4, packed & 0x0F
        at = 0
        for k, (group, stripe) in enumerate(blocks):
            target = view[:, group, stripe, :]
            count = target.size
            values = side[2 * k] + flat[at : at + count].astype(np.float32) * side[2 * k + 1]
            view[:, group, stripe, :] = values.reshape(target.shape)
            at += count
        return _from_nchw(view, shape)


def _group_slices(count: int, groups: int) -> list[slice]:
    return _stripes(count, groups) if count else []


class ZstdCodec(Codec):
    """Another codec's payload through zstd (python-zstandard, level 3): lossless, so the
    error is the inner codec's; zstandard is imported only when such a codec is used."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name = inner.name + "+zstd"

    def calibrate(self, features: np.ndarray) -> Params:
        return self.inner.calibrate(features)

    def encode(self, x: np.ndarray, params: Params) -> bytes:
        compressor = zstandard_module().ZstdCompressor(level=ZSTD_LEVEL)
        return bytes(compressor.compress(self.inner.encode(x, params)))

    def decode(self, payload: bytes, params: Params, shape: Sequence[int]) -> np.ndarray:
        zstd = zstandard_module()
        try:
            raw = zstd.ZstdDecompressor().decompress(payload)
        except zstd.ZstdError as exc:
            raise CodecError(f"{self.name} payload is not a zstd frame: {exc}") from exc
        return self.inner.decode(bytes(raw), params, shape)


def zstandard_module() -> Any:
    """python-zstandard, or a `codec_unavailable` error naming the pip package."""
    try:
        import zstandard
    except ImportError as exc:
        raise RunnerError(
            "codec_unavailable",
            f"the +zstd codecs need the Python package zstandard for {sys.executable} "
            f"(pip install zstandard): {exc}",
        ) from exc
    return zstandard


def _registry() -> dict[str, Codec]:
    plain: list[Codec] = [
        NoCodec(),
        FloatCodec("fp32", "<f4"),
        FloatCodec("fp16", "<f2"),
        Int8Codec(),
        Sgq4Codec(),
    ]
    compressed: list[Codec] = [ZstdCodec(c) for c in plain if c.name != "none"]
    return {c.name: c for c in plain + compressed}


_CODECS = _registry() if np is not None else {}
CODECS: tuple[str, ...] = tuple(_CODECS)


def get_codec(name: str) -> Codec:
    codec = _CODECS.get(name)
    if codec is None:
        raise CodecError(f"unknown codec {name!r} (known: {', '.join(CODECS)})")
    return codec


def calibrate(codec: str, features: np.ndarray) -> Params:
    """JSON-able parameters for `codec` from features batched on axis 0."""
    return get_codec(codec).calibrate(np.asarray(features))


def encode(codec: str, x: np.ndarray, params: Params | None) -> bytes:
    """The payload that crosses the link for `x`, side info included."""
    return get_codec(codec).encode(np.asarray(x), params or {})


def decode(
    codec: str,
    payload: bytes,
    params: Params | None,
    shape: Sequence[int],
    dtype: str = "float32",
) -> np.ndarray:
    """The tensor `encode` sent, as `dtype`; CodecError when the payload does not fit."""
    out = get_codec(codec).decode(payload, params or {}, [int(d) for d in shape])
    return out.astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------
# The processes


def emit(event: str, **fields: Any) -> None:
    fields["event"] = event
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def last_line(exc: BaseException) -> str:
    """onnxruntime raises multi-line C++ messages; the last line says why."""
    lines = str(exc).strip().splitlines()
    return lines[-1][:300] if lines else type(exc).__name__


def _dims_text(shape: Sequence[Any]) -> str:
    return "x".join(str(d) for d in shape)


def parse_dims(text: str) -> list[int]:
    parts = re.split(r"[x,]", text.strip().lower())
    if not text.strip() or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{text!r} is not a shape like 1x16x7x7 (positive integers)")
    return [int(p) for p in parts]


def shape_arg(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.rpartition("=")
    try:
        return (name.strip() if sep else ""), parse_dims(dims)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def dims_arg(text: str) -> list[int]:
    try:
        return parse_dims(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


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


def versions() -> dict[str, str | None]:
    """What this process runs on; zstandard's version without importing it (metadata)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    found["numpy"] = np.__version__ if np is not None else None
    try:
        import onnxruntime

        found["onnxruntime"] = str(onnxruntime.__version__)
    except Exception:  # a broken install is as missing as an absent one
        found["onnxruntime"] = None
    try:
        from importlib.metadata import version

        found["zstandard"] = version("zstandard")
    except Exception:
        found["zstandard"] = None
    return found


class Session:
    """An onnxruntime session on the CPU, created as device_runner.py creates its own
    (intra-op threads from --threads, one inter-op thread, warnings off)."""

    def __init__(self, path: str, threads: int) -> None:
        try:
            import onnxruntime as ort
        except Exception as exc:
            raise RunnerError(
                "runtime_missing", f"onnxruntime is not installed for {sys.executable} ({exc})"
            ) from exc
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise RunnerError(
                "bad_model", f"onnxruntime cannot load {os.path.basename(path)}: {last_line(exc)}"
            ) from exc
        self.inputs = [
            {"name": i.name, "shape": list(i.shape), "dtype": ONNX_DTYPES.get(i.type, i.type)}
            for i in self.session.get_inputs()
        ]
        self.outputs = [
            {"name": o.name, "shape": list(o.shape), "dtype": ONNX_DTYPES.get(o.type, o.type)}
            for o in self.session.get_outputs()
        ]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return [np.asarray(v) for v in self.session.run(None, feeds)]
        except Exception as exc:
            raise RunnerError("bad_input", f"inference failed: {last_line(exc)}") from exc


def _fixed(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def resolve_shape(
    spec: dict[str, Any], given: dict[str, list[int]], source: str = "--input-shape"
) -> list[int]:
    """An input's concrete shape: --input-shape, else the declared one with a symbolic
    leading (batch) dim as 1, as device_runner.py does; other symbolic dims must be given."""
    declared = spec["shape"]
    if spec["name"] in given:
        shape = given[spec["name"]]
        if len(shape) != len(declared) or any(
            _fixed(d) and d != s for d, s in zip(declared, shape)
        ):
            raise RunnerError(
                "bad_input",
                f"input {spec['name']!r} expects shape {_dims_text(declared)}, "
                f"{source} gives {_dims_text(shape)}",
            )
        return list(shape)
    shape = []
    for k, dim in enumerate(declared):
        if _fixed(dim):
            shape.append(int(dim))
        elif k == 0 and len(declared) >= 2:
            shape.append(1)
        else:
            raise RunnerError(
                "bad_input",
                f"input {spec['name']!r} has unknown dim {dim!r} in {_dims_text(declared)}: "
                f"give it with --input-shape {spec['name']}=...",
            )
    return shape


def random_inputs(
    specs: list[dict[str, Any]], seed: int, given: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """Inputs generated exactly as device_runner.py's make_inputs does for a file-less run:
    one default_rng(seed) drawn in input order, floats uniform in [-1, 1), integer and bool
    inputs zeros (their values are often indices that random numbers would overrun)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = resolve_shape(spec, given)
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feeds[spec["name"]] = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        else:
            feeds[spec["name"]] = np.zeros(shape, dtype=dtype)
    return feeds


def file_inputs(specs: list[dict[str, Any]], path: str) -> list[dict[str, np.ndarray]]:
    """The feeds of an --input .npz (array per input name) or .npy (the only input). An
    array with N samples where the model takes a batch of 1 gives N feeds, used in turn."""
    source = os.path.basename(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = (
            {specs[0]["name"]: loaded}
            if isinstance(loaded, np.ndarray) and len(specs) == 1
            else {k: loaded[k] for k in loaded.files}
        )
    except Exception as exc:
        raise RunnerError("bad_input", f"cannot read input {source}: {last_line(exc)}") from exc
    names = [s["name"] for s in specs]
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise RunnerError(
            "bad_input",
            f"{source} must hold one array per input ({', '.join(names)}); "
            f"missing {missing or 'none'}, extra {extra or 'none'}",
        )
    counts = set()
    for spec in specs:
        array, declared = arrays[spec["name"]], spec["shape"]
        if array.ndim != len(declared) or any(
            _fixed(d) and d != s for d, s in list(zip(declared, array.shape))[1:]
        ):
            raise RunnerError(
                "bad_input",
                f"input {spec['name']!r} expects shape {_dims_text(declared)}, "
                f"{source} holds {_dims_text(array.shape)}",
            )
        counts.add(array.shape[0] if declared and declared[0] == 1 else 1)
    if len(counts) != 1 or 0 in counts:
        raise RunnerError("bad_input", f"{source}: inputs hold different numbers of samples")
    count = counts.pop()
    feeds = []
    for k in range(count):
        feed = {}
        for spec in specs:
            array = arrays[spec["name"]]
            sample = array[k : k + 1] if count > 1 else array
            feed[spec["name"]] = np.ascontiguousarray(sample.astype(spec["dtype"], copy=False))
        feeds.append(feed)
    return feeds


def describe(name: str, array: np.ndarray) -> dict[str, Any]:
    return {"name": name, "shape": list(array.shape), "dtype": str(array.dtype)}


def load_params(path: str | None) -> Params:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            params = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CodecError(f"cannot read codec parameters {os.path.basename(path)}: {exc}") from exc
    if not isinstance(params, dict):
        raise CodecError(f"codec parameters {os.path.basename(path)} are not a JSON object")
    return params


def check_codec(name: str, role: str) -> Codec:
    """The codec, checked before any model loads: unknown names and a missing zstandard
    fail first, and `none` only makes sense for a head."""
    codec = get_codec(name)
    if isinstance(codec, ZstdCodec):
        zstandard_module()
    if role == "tail" and isinstance(codec, NoCodec):
        raise CodecError("codec none is device-only: no tail runs (use the head alone)")
    return codec


class Head:
    """The device side: run the head (or pass the input through), encode the feature."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.codec = check_codec(args.codec, "head")
        self.params = load_params(args.params)
        given = dict(args.input_shape)
        self.session: Session | None = None
        if args.model == "-":
            specs = self._identity_specs(args, given)
        else:
            self.session = Session(args.model, args.threads)
            specs = self.session.inputs
            if len(self.session.outputs) != 1 and not isinstance(self.codec, NoCodec):
                raise RunnerError(
                    "bad_model",
                    f"a head must have one output (the crossing tensor); "
                    f"{os.path.basename(args.model)} has {len(self.session.outputs)}",
                )
        if "" in given:
            if len(specs) != 1:
                raise RunnerError("bad_input", "--input-shape without a name needs one input")
            given[specs[0]["name"]] = given.pop("")
        self.feeds = (
            file_inputs(specs, args.input)
            if args.input
            else [random_inputs(specs, args.seed, given)]
        )
        # One untimed run: it checks the inputs, warms the session up, and gives the
        # crossing tensor's concrete shape for the ready line.
        feature = self.feature(self.feeds[0])
        self.feature_name = (
            specs[0]["name"] if self.session is None else self.session.outputs[0]["name"]
        )
        self.ready = {
            "inputs": [describe(n, a) for n, a in self.feeds[0].items()],
            "feature": describe(self.feature_name, feature),
        }

    @staticmethod
    def _identity_specs(
        args: argparse.Namespace, given: dict[str, list[int]]
    ) -> list[dict[str, Any]]:
        """An identity head takes one float32 input, named and shaped by --input-shape or
        by the --input file, and sends it as the feature (the server-only baseline)."""
        if args.input:
            try:
                loaded = np.load(args.input, allow_pickle=False)
                arrays = (
                    {"input": loaded}
                    if isinstance(loaded, np.ndarray)
                    else {k: loaded[k] for k in loaded.files}
                )
            except Exception as exc:
                raise RunnerError("bad_input", f"cannot read input: {last_line(exc)}") from exc
            if len(arrays) != 1:
                raise RunnerError("bad_input", "an identity head (--model -) takes one input")
            name, array = next(iter(arrays.items()))
            shape: list[Any] = [1, *array.shape[1:]] if array.ndim >= 2 else list(array.shape)
            return [{"name": name, "shape": shape, "dtype": "float32"}]
        if len(given) != 1:
            raise RunnerError(
                "bad_input",
                "an identity head (--model -) needs its input's shape: "
                "--input-shape NAME=1x3x32x32 or --input FILE",
            )
        name, shape = next(iter(given.items()))
        return [{"name": name or "input", "shape": shape, "dtype": "float32"}]

    def feature(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.session is None:
            return next(iter(feeds.values()))
        return self.session.run(feeds)[0]

    def step(self, index: int) -> dict[str, Any]:
        feeds = self.feeds[index % len(self.feeds)]
        clock = time.perf_counter_ns
        start = clock()
        feature = self.feature(feeds)
        head_ns = clock() - start
        start = clock()
        payload = self.codec.encode(feature, self.params)
        encode_ns = clock() - start
        line: dict[str, Any] = {"i": index, "head_ns": head_ns, "encode_ns": encode_ns}
        line["bytes"] = len(payload)
        if not isinstance(self.codec, NoCodec):
            line["data"] = base64.b64encode(payload).decode("ascii")
        return line


def top1_of(output: np.ndarray) -> int | None:
    """The class of the first sample when the output is [batch, classes]; else None."""
    if output.ndim != 2 or output.shape[1] == 0:
        return None
    return int(np.argmax(output[0]))


class Tail:
    """The server side: decode a payload, run the tail, reply with its outputs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.codec = check_codec(args.codec, "tail")
        self.params = load_params(args.params)
        self.shape, self.dtype = list(args.shape), args.dtype
        try:
            np.dtype(self.dtype)
        except TypeError as exc:
            raise RunnerError("bad_input", f"--dtype {self.dtype!r} is not a dtype") from exc
        self.session = Session(args.model, args.threads)
        if len(self.session.inputs) != 1:
            raise RunnerError(
                "bad_model",
                f"a tail must have one input (the crossing tensor); "
                f"{os.path.basename(args.model)} has {len(self.session.inputs)}",
            )
        spec = self.session.inputs[0]
        resolve_shape(spec, {spec["name"]: self.shape}, "--shape")
        self.input_name, self.input_dtype = spec["name"], spec["dtype"]
        self.ready = {
            "inputs": [{"name": spec["name"], "shape": self.shape, "dtype": spec["dtype"]}],
            "feature": {"name": spec["name"], "shape": self.shape, "dtype": self.dtype},
        }

    def step(self, message: dict[str, Any]) -> dict[str, Any]:
        index = message.get("i")
        try:
            payload = base64.b64decode(str(message["data"]), validate=True)
        except (KeyError, binascii.Error, ValueError) as exc:
            raise RunnerError("bad_input", f"line {index}: no base64 `data` ({exc})") from exc
        clock = time.perf_counter_ns
        start = clock()
        feature = decode(self.codec.name, payload, self.params, self.shape, self.dtype)
        decode_ns = clock() - start
        start = clock()
        outputs = self.session.run({self.input_name: feature.astype(self.input_dtype)})
        tail_ns = clock() - start
        reply = b"".join(np.ascontiguousarray(o, dtype="<f4").tobytes() for o in outputs)
        return {
            "i": index,
            "decode_ns": decode_ns,
            "tail_ns": tail_ns,
            "top1": top1_of(outputs[0]) if outputs else None,
            "reply": base64.b64encode(reply).decode("ascii"),
            "reply_bytes": len(reply),
        }


def _lines() -> Any:
    """stdin lines until EOF or `quit` (blank lines skipped)."""
    for raw in sys.stdin:
        line = raw.strip()
        if line == "quit":
            return
        if line:
            yield line


def cmd_head(args: argparse.Namespace) -> int:
    head = Head(args)
    emit("ready", **head.ready, versions=versions())
    for index, line in enumerate(_lines()):
        if line != "go":
            raise RunnerError("bad_input", f"the head expects `go` or `quit`, got {line[:40]!r}")
        emit("feature", **head.step(index))
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    tail = Tail(args)
    emit("ready", **tail.ready, versions=versions())
    for line in _lines():
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise RunnerError("bad_input", f"not a JSON line: {line[:40]!r}") from exc
        if not isinstance(message, dict):
            raise RunnerError("bad_input", f"not a JSON object: {line[:40]!r}")
        emit("result", **tail.step(message))
    return 0


class Parser(argparse.ArgumentParser):
    """Usage errors as the one error line the host parses, not argparse's text."""

    def error(self, message: str) -> Any:
        raise RunnerError("bad_input", message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="split_runner", description="edgetool split runner (head / tail)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    head = sub.add_parser("head", help="run the head and encode the crossing tensor")
    head.add_argument("--model", required=True, help="head .onnx, or - for an identity head")
    head.add_argument("--input", default=None, help=".npz with an array per input (or .npy)")
    head.add_argument("--input-shape", type=shape_arg, action="append", default=[])
    head.add_argument("--seed", type=int, default=0)
    tail = sub.add_parser("tail", help="decode the crossing tensor and run the tail")
    tail.add_argument("--model", required=True, help="tail .onnx")
    tail.add_argument("--shape", type=dims_arg, required=True, help="crossing tensor, 1x16x7x7")
    tail.add_argument("--dtype", default="float32")
    for command in (head, tail):
        command.add_argument("--codec", required=True)
        command.add_argument("--params", default=None, help="codec parameters (JSON)")
        command.add_argument("--threads", type=int, default=0)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"head": cmd_head, "tail": cmd_tail}


def main(argv: list[str] | None = None) -> int:
    try:
        if np is None:
            raise RunnerError("runtime_missing", f"numpy is not installed for {sys.executable}")
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except RunnerError as exc:
        emit("error", kind=exc.kind, message=exc.message)
        return 2
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the host must always get one parseable line
        emit("error", kind="internal", message=f"{type(exc).__name__}: {exc}")
        return 3


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        os._exit(141)
