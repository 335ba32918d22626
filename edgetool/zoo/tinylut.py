"""TinyLUT-S super-resolution (Y channel) as int8 look-up tables, plus an FSRCNN baseline.

TinyLUT replaces a small CNN by 1-D tables so inference is integer indexing only:

* dynamic discretization: each 8-bit pixel x splits into its 6 MSBs (x >> 2) and 2 LSBs
  (x & 3), two branches with their own tables whose outputs are summed at the end;
* separable mapping, depthwise: each of the 9 taps of the 3x3 neighbourhood has a 1-D
  table to C=16 channels; h = clip(round(sum_t / 9) + residual, -128, 127), the residual
  being the centre pixel's MSB value (4*(x >> 2) - 128) in the MSB branch;
* learned clip scale alpha: v = clip(round(h * alpha_c), -Q, Q) shrinks the next index
  range from 256 to L = 2Q+1 entries (straight-through rounding in training);
* pointwise: per input channel a 1-D table to C outputs, p = round(sum_c / 16);
* up-sampling: v' = clip(round(p * beta_c), -Q, Q), per channel a table to r*r sub-pixels;
* the four-rotation ensemble sums the two branches over the four 90° rotations and the
  result is a residual over nearest-neighbour upscaling:
  sr = clip(round(sum / 16) + nearest(x), 0, 255).

Training learns the tables directly (float, rounded with a straight-through estimator, so
`to_luts` is exact); a piecewise-linear slope gives the later index inputs a gradient.
Quant "fp32" is that network with unrounded float tables; quant "int8" is the LUT
artifact: `lut_reference` (numpy) and `build_lut_onnx` (standard ONNX ops), bit-exact.
Value range of every artifact: input "lr" float32 [1,1,H,W] holding 0..255 (rounded and
clipped on entry), output "sr" float32 [1,1,rH,rW] holding 0..255 (integers for int8).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from edgetool.zoo import images
from edgetool.zoo.family import ProgressFn, Samples, register
from edgetool.zoo.onnx_graph import serialize_graph
from edgetool.zoo.recipe import Recipe
from edgetool.zoo.tinylut_c import kernel_source
from edgetool.zoo.tinylut_maps import CENTER, TAPS, clip_map, subpixel_of_rotation, tap_of_offset

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Luts = dict[str, np.ndarray]

MSB_LEVELS = 64
LSB_LEVELS = 4
UNIT = 64.0
"""Tables are stored as parameters / UNIT so Adam's step is ~lr * UNIT table units."""
LUT_KEYS = ("dw_msb", "dw_lsb", "pw", "up")
PRODUCER = "edgetool.zoo.tinylut"


# --- shared helpers ------------------------------------------------------------------


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round forward (half to even, like numpy and ONNX Round), identity backward."""
    return x + (torch.round(x) - x).detach()


def _flip(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.index_select(dim, torch.arange(x.shape[dim] - 1, -1, -1))


def rot90(x: torch.Tensor, k: int) -> torch.Tensor:
    """rot90(x, k) from ops torch.onnx can export (it has no rot90)."""
    k %= 4
    if k == 1:
        return _flip(x.transpose(2, 3), 2)
    if k == 2:
        return _flip(_flip(x, 2), 3)
    if k == 3:
        return _flip(x.transpose(2, 3), 3)
    return x


# --- the trainable network (quant "fp32") ----------------------------------------------


class _LookupSum(torch.autograd.Function):
    """out[p] = sum_c table[idx[p, c]]; gradients by index_add (embedding_bag sorts: slow).

    With `v` given, d out / d v[p, c] is the piecewise-linear slope at idx[p, c].
    Per-column loops and a matmul avoid materialising [P, C, K] tensors (~2x faster).
    """

    @staticmethod
    def forward(
        ctx: Any,
        table: torch.Tensor,
        idx: torch.Tensor,
        v: torch.Tensor | None,
        slope: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(idx, slope)
        ctx.rows = table.shape[0]
        out = table.index_select(0, idx[:, 0])
        for c in range(1, idx.shape[1]):
            out += table.index_select(0, idx[:, c])
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        idx, slope = ctx.saved_tensors
        grad = grad.contiguous()
        grad_table = grad.new_zeros(ctx.rows, grad.shape[1])
        for c in range(idx.shape[1]):
            grad_table.index_add_(0, idx[:, c], grad)
        grad_v = None
        if slope is not None and ctx.needs_input_grad[2]:
            grad_v = (grad @ slope.T).gather(1, idx)
        return grad_table, None, grad_v, None


class TinyLUTNet(nn.Module):
    """TinyLUT-S with learnable float tables; `round_tables` makes it match the LUTs."""

    def __init__(self, scale: int, channels: int = 16, q: int = 13, seed: int = 0):
        super().__init__()
        self.scale = scale
        self.channels = channels
        self.q = q
        self.levels = 2 * q + 1
        self.round_tables = True
        g = torch.Generator().manual_seed(seed)
        c, n, k = channels, self.levels, scale * scale

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g) * 2 - 1

        msb_value = torch.arange(MSB_LEVELS, dtype=torch.float32) * 4 + 2 - 128
        centred = torch.arange(n, dtype=torch.float32) - q
        dw_msb = uniform(TAPS, 1, c) * 0.4 * msb_value[None, :, None]
        dw_lsb = uniform(TAPS, LSB_LEVELS, c) * 2
        pw = uniform(2, c, 1, c) * 6 * centred[None, None, :, None]
        up = uniform(2, c, 1, k) * 0.5 * centred[None, None, :, None]
        self.dw_msb = nn.Parameter(dw_msb / UNIT)
        self.dw_lsb = nn.Parameter(dw_lsb / UNIT)
        self.pw = nn.Parameter(pw / UNIT)
        self.up = nn.Parameter(up / UNIT)
        self.alpha = nn.Parameter(torch.full((2, c), q / 96.0))
        self.beta = nn.Parameter(torch.full((2, c), q / 96.0))

    def table(self, name: str) -> torch.Tensor:
        """Table `name` in int8 units (STE-rounded and clamped when round_tables)."""
        value: torch.Tensor = getattr(self, name) * UNIT
        if self.round_tables:
            value = _round_ste(value.clamp(-128, 127))
        return value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.round().clamp(0, 255)
        n, _, h, w = x.shape
        r = self.scale
        if h == w:  # batch the four rotations
            rotated = torch.cat([rot90(x, k) for k in range(4)])
            y = F.pixel_shuffle(self._core(rotated), r)
            acc = sum(rot90(y[k * n : (k + 1) * n], -k) for k in range(4))
        else:
            acc = sum(rot90(F.pixel_shuffle(self._core(rot90(x, k)), r), -k) for k in range(4))
        assert isinstance(acc, torch.Tensor)
        base = F.interpolate(x, scale_factor=float(r), mode="nearest")
        return (_round_ste(acc / 16) + base).clamp(0, 255)

    def _lookup(self, table: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """sum_c table[c, v_c, :] for v [P, C] (integer-valued, STE gradient)."""
        c, n, k = table.shape
        vi = v.detach().round().long().clamp(0, n - 1)
        flat = vi + torch.arange(c) * n
        if not self.training:
            return F.embedding(flat, table.reshape(c * n, k)).sum(1)
        slope = F.pad(table[:, 1:] - table[:, :-1], (0, 0, 0, 1)).detach()
        out: torch.Tensor = _LookupSum.apply(table.reshape(c * n, k), flat, v, slope.reshape(-1, k))
        return out

    def _core(self, x: torch.Tensor) -> torch.Tensor:
        """[B,1,H,W] integer pixels -> [B, r*r, H, W] residual sub-pixels (one rotation)."""
        b, _, h, w = x.shape
        xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
        nb = torch.stack(
            [xp[:, 0, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], -1
        ).reshape(-1, TAPS)
        msb = torch.floor(nb / 4)
        out: torch.Tensor | None = None
        for branch, (name, idx, size) in enumerate(
            (("dw_msb", msb, MSB_LEVELS), ("dw_lsb", nb - 4 * msb, LSB_LEVELS))
        ):
            table = self.table(name).reshape(TAPS * size, self.channels)
            flat = idx.long() + torch.arange(TAPS) * size
            if self.training:
                s = _LookupSum.apply(table, flat, None, None)
            else:
                s = F.embedding(flat, table).sum(1)
            res = 4 * msb[:, CENTER : CENTER + 1] - 128 if branch == 0 else 0
            hid = (_round_ste(s / 9) + res).clamp(-128, 127)
            v = _round_ste(hid * self.alpha[branch]).clamp(-self.q, self.q) + self.q
            p = _round_ste(self._lookup(self.table("pw")[branch], v) / 16)
            u = _round_ste(p * self.beta[branch]).clamp(-self.q, self.q) + self.q
            y = self._lookup(self.table("up")[branch], u)
            out = y if out is None else out + y
        assert out is not None
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def to_luts(self) -> Luts:
        """The int8 tables (+ float32 clip scales): what the LUT artifact stores."""
        with torch.no_grad():
            luts: Luts = {
                key: getattr(self, key).mul(UNIT).clamp(-128, 127).round().to(torch.int8).numpy()
                for key in LUT_KEYS
            }
            luts["alpha"] = self.alpha.detach().numpy().astype(np.float32)
            luts["beta"] = self.beta.detach().numpy().astype(np.float32)
        luts["scale"] = np.array(self.scale, dtype=np.int64)
        luts["q"] = np.array(self.q, dtype=np.int64)
        return luts


def lut_bytes(luts: Luts) -> dict[str, int]:
    """Storage of the int8 tables, and of the float32 clip scales kept beside them."""
    return {
        "tables": int(sum(luts[k].size for k in LUT_KEYS)),
        "scales": int(luts["alpha"].nbytes + luts["beta"].nbytes),
    }


# --- numpy LUT reference (quant "int8") --------------------------------------------------


def _lut_core(xp: IntArray, luts: Luts) -> IntArray:
    """One rotation: padded integer image [H+2, W+2] -> [H, W, r*r] summed branch outputs."""
    h, w = xp.shape[0] - 2, xp.shape[1] - 2
    q = int(luts["q"])
    nb = np.stack([xp[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    amap, bmap = clip_map(luts["alpha"], q), clip_map(luts["beta"], q)
    c = luts["pw"].shape[1]
    out = np.zeros((h, w, luts["up"].shape[-1]), dtype=np.int64)
    for branch, (key, idx) in enumerate((("dw_msb", nb >> 2), ("dw_lsb", nb & 3))):
        dw = luts[key].astype(np.int64)
        s = sum(dw[t][idx[t]] for t in range(TAPS))  # [H, W, C]
        res = (4 * (nb[CENTER] >> 2) - 128)[..., None] if branch == 0 else 0
        hid = np.clip(np.round(s.astype(np.float32) / np.float32(9)) + res, -128, 127)
        hid = hid.astype(np.int64) + 128
        v = np.stack([amap[branch, ch][hid[..., ch]] for ch in range(c)], -1)
        pw = luts["pw"][branch].astype(np.int64)
        ps = sum(pw[ch][v[..., ch]] for ch in range(c))
        p = np.round(ps.astype(np.float32) / np.float32(16)).astype(np.int64) + 128
        u = np.stack([bmap[branch, ch][p[..., ch]] for ch in range(c)], -1)
        up = luts["up"][branch].astype(np.int64)
        out += sum(up[ch][u[..., ch]] for ch in range(c))
    return out


def lut_reference(x: npt.ArrayLike, luts: Luts) -> FloatArray:
    """Integer LUT inference, explicit rotations: [N,1,H,W] 0..255 -> [N,1,rH,rW]."""
    r = int(luts["scale"])
    batch = np.clip(np.round(np.asarray(x, dtype=np.float32)), 0, 255).astype(np.int64)
    outs = []
    for img in batch[:, 0]:
        h, w = img.shape
        acc = np.zeros((r * h, r * w), dtype=np.int64)
        for rot in range(4):
            xr = np.rot90(img, rot)
            y = _lut_core(np.pad(xr, 1, mode="edge"), luts)
            hh, ww = xr.shape
            hr = y.reshape(hh, ww, r, r).transpose(0, 2, 1, 3).reshape(hh * r, ww * r)
            acc += np.rot90(hr, -rot)
        base = np.repeat(np.repeat(img, r, 0), r, 1)
        res = np.round(acc.astype(np.float32) / np.float32(16))
        outs.append(np.clip(res + base, 0, 255).astype(np.float32))
    return np.stack(outs)[:, None]


# --- the LUT ONNX graph ------------------------------------------------------------------


def combined_tables(luts: Luts) -> dict[str, FloatArray]:
    """Inference-time tables precomputed from the int8 LUTs (not counted as storage).

    g1 [9*256, 4*2*C]: per neighbour offset and full 8-bit value, the depthwise
        contribution to every (rotation, branch, channel), MSB/LSB split and the
        rotated tap assignment baked in, and 9 * the MSB residual on the centre offset;
    pwj [C*L*L, 2*C]: per channel, the pointwise rows of both branches for a joint
        (MSB index, LSB index) -- one lookup instead of two;
    upj [C*L*L, r*r]: the same for the up-sampling tables, the two branches already summed;
    perm [4*r*r, r*r]: 0/1 matrix that un-rotates each rotation's sub-pixels and sums them.
    """
    r = int(luts["scale"])
    k = r * r
    dw = (luts["dw_msb"].astype(np.int64), luts["dw_lsb"].astype(np.int64))
    c = dw[0].shape[-1]
    levels = luts["pw"].shape[2]
    x = np.arange(256)
    g1 = np.zeros((TAPS, 256, 4, 2, c), dtype=np.float32)
    for rot in range(4):
        taps = tap_of_offset(rot)
        for offset in range(TAPS):
            g1[offset, :, rot, 0] = dw[0][taps[offset]][x >> 2]
            g1[offset, :, rot, 1] = dw[1][taps[offset]][x & 3]
    g1[CENTER, :, :, 0] += (9 * (4 * (x >> 2) - 128)).astype(np.float32)[:, None, None]
    pw, up = luts["pw"].astype(np.float32), luts["up"].astype(np.float32)
    pwj = np.concatenate(
        [
            np.broadcast_to(pw[0][:, :, None, :], (c, levels, levels, c)),
            np.broadcast_to(pw[1][:, None, :, :], (c, levels, levels, c)),
        ],
        -1,
    )
    upj = up[0][:, :, None, :] + up[1][:, None, :, :]
    perm = np.zeros((4, k, k), dtype=np.float32)
    for rot in range(4):
        for orig, sub in enumerate(subpixel_of_rotation(rot, r)):
            perm[rot, sub, orig] = 1.0
    return {
        "g1": g1.reshape(TAPS * 256, 8 * c),
        "pwj": np.ascontiguousarray(pwj.reshape(c * levels * levels, 2 * c)),
        "upj": np.ascontiguousarray(upj.reshape(c * levels * levels, k)),
        "perm": perm.reshape(4 * k, k),
    }


def build_lut_onnx(luts: Luts, height: int, width: int, opset: int = 17, bands: int = 1) -> bytes:
    """The LUT inference as a standard-op ONNX graph, bit-exact to `lut_reference`.

    All four rotations and both branches run as one batch: rotation is a permutation of
    the taps (in g1) and of the output sub-pixels (the `perm` MatMul), never an image
    rotation. Three Gathers do all table reads: 9 rows of 128 per pixel (depthwise),
    then 64 rows each for the joint-index pointwise and up-sampling tables. Integer
    values stay in float32 (exact below 2**24) so Div/Round/Clip match numpy.
    """
    from onnx import TensorProto, helper, numpy_helper

    r = int(luts["scale"])
    k = r * r
    q = int(luts["q"])
    levels = 2 * q + 1
    c = luts["pw"].shape[1]
    tables = combined_tables(luts)
    inits: list[Any] = []
    nodes: list[Any] = []
    names: set[str] = set()

    def const(name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        if name not in names:  # shared constants (axes, shapes) are added once
            names.add(name)
            inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def shape(name: str, dims: list[int]) -> str:
        return const(name, dims, np.int64)

    lo = const("lim_lo", -128.0)
    hi = const("lim_hi", 127.0)
    qlo = const("q_lo", float(-q))
    qhi = const("q_hi", float(q))
    zero = const("zero", 0.0)
    top = const("p255", 255.0)
    ax0, ax2 = shape("ax0", [0]), shape("ax2", [2])
    x = node("Round", ["lr"], "x_round")
    x = node("Clip", [x, zero, top], "x_clip")
    x = node("Reshape", [x, shape("s_hw", [height, width])], "x_hw")
    xp = node("Pad", [x, shape("pads", [1, 1, 1, 1])], "x_pad", mode="edge")
    tap_off = const("tap_off", (np.arange(TAPS, dtype=np.float32) * 256).reshape(TAPS, 1, 1))
    alpha = const("alpha", np.tile(luts["alpha"].reshape(1, 2 * c), (4, 1)).reshape(8 * c))
    beta = const("beta", luts["beta"].reshape(2 * c))
    joint_off = const(
        "joint_off", (np.arange(c) * levels * levels + q * levels + q).astype(np.float32)
    )

    def band(y0: int, bh: int, pre: str) -> str:
        """Rows y0..y0+bh of the output as [bh, r, W, r]; `pre` keeps names unique."""
        n = bh * width

        def op(kind: str, inputs: list[str], out: str, **attrs: Any) -> str:
            return node(kind, inputs, pre + out, **attrs)

        planes = []
        for o in range(TAPS):
            dy, dx = divmod(o, 3)
            start = shape(f"{pre}st{o}", [y0 + dy, dx])
            end = shape(f"{pre}en{o}", [y0 + dy + bh, dx + width])
            planes.append(op("Unsqueeze", [op("Slice", [xp, start, end], f"nb{o}"), ax0], f"u{o}"))
        idx = op("Add", [op("Concat", planes, "nb", axis=0), tap_off], "g1_idx_f")
        idx = op("Cast", [idx], "g1_idx_i", to=TensorProto.INT32)
        idx = op("Reshape", [idx, shape(f"{pre}s_9n", [TAPS, n])], "g1_idx")
        g = op("Gather", [const("g1", tables["g1"]), idx], "g1_rows", axis=0)
        hid = op("ReduceSum", [g, ax0], "dw_sum", keepdims=0)  # [n, 4*2*C]
        hid = op("Round", [op("Div", [hid, const("nine", 9.0)], "dw_div")], "dw_round")
        hid = op("Clip", [hid, lo, hi], "dw_clip")
        v = op("Round", [op("Mul", [hid, alpha], "a_mul")], "a_round")
        v = op("Clip", [v, qlo, qhi], "a_clip")

        def joint(src: str, stage: str) -> str:
            """[n, 4*2*C] clipped values -> [n, 4, C] int32 joint (MSB, LSB) row index."""
            t = op("Reshape", [src, shape(f"{pre}s4", [n, 4, 2, c])], f"{stage}_4d")
            m = op("Slice", [t, shape("i0", [0]), shape("i1", [1]), ax2], f"{stage}_msb")
            ls = op("Slice", [t, shape("i1", [1]), shape("i2", [2]), ax2], f"{stage}_lsb")
            m = op("Mul", [m, const("levels", float(levels))], f"{stage}_msb_l")
            j = op("Add", [op("Add", [m, ls], f"{stage}_j"), joint_off], f"{stage}_jo")
            j = op("Cast", [j], f"{stage}_ji", to=TensorProto.INT32)
            return op("Reshape", [j, shape(f"{pre}s3", [n, 4, c])], f"{stage}_idx")

        g = op("Gather", [const("pwj", tables["pwj"]), joint(v, "pw")], "pw_rows", axis=0)
        p = op("ReduceSum", [g, ax2], "pw_sum", keepdims=0)  # [n, 4, 2C]
        p = op("Round", [op("Div", [p, const("sixteen", 16.0)], "pw_div")], "pw_round")
        u = op("Round", [op("Mul", [p, beta], "b_mul")], "b_round")
        u = op("Clip", [u, qlo, qhi], "b_clip")
        g = op("Gather", [const("upj", tables["upj"]), joint(u, "up")], "up_rows", axis=0)
        y = op("ReduceSum", [g, ax2], "up_sum", keepdims=0)  # [n, 4, K]
        y = op("Reshape", [y, shape(f"{pre}s_n4k", [n, 4 * k])], "up_flat")
        y = op("MatMul", [y, const("perm", tables["perm"])], "unrotate")  # [n, K]
        y = op("Round", [op("Div", [y, const("sixteen", 16.0)], "out_div")], "out_round")
        if bands == 1:
            xb = x
        else:
            rows = [shape(f"{pre}r0", [y0]), shape(f"{pre}r1", [y0 + bh]), ax0]
            xb = op("Slice", [x, *rows], "x_band")
        base = op("Reshape", [xb, shape(f"{pre}s_n1", [n, 1])], "base")
        y = op("Clip", [op("Add", [y, base], "out_add"), zero, top], "out_clip")
        y = op("Reshape", [y, shape(f"{pre}s_brr", [bh, width, r, r])], "out_4d")
        return op("Transpose", [y], "out_t", perm=[0, 2, 1, 3])

    edges = [round(i * height / bands) for i in range(bands + 1)]
    parts = [
        band(a, b - a, f"b{i}_" if bands > 1 else "")
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]
    y = parts[0] if bands == 1 else node("Concat", parts, "bands", axis=0)
    node("Reshape", [y, shape("s_out", [1, 1, height * r, width * r])], "sr")

    graph = helper.make_graph(
        nodes,
        f"tinylut_s_x{r}",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 1, height, width])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 1, height * r, width * r])],
        initializer=inits,
    )
    data = serialize_graph(
        graph,
        opset,
        PRODUCER,
        f"TinyLUT-S x{r} int8 LUT inference (4-rotation ensemble), 0..255 in/out.",
    )
    return data


# --- FSRCNN ------------------------------------------------------------------------------


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m) (Dong et al. 2016) on [0,255] Y input, [0,255] output."""

    def __init__(self, scale: int, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d)]
        layers += [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, 1, 9, stride=scale, padding=4, output_padding=scale - 1)
        nn.init.normal_(self.deconv.weight, std=0.001)
        assert self.deconv.bias is not None
        nn.init.zeros_(self.deconv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.deconv(self.body(x / 255.0))
        return (y * 255.0).clamp(0, 255)


# --- training / families -----------------------------------------------------------------


def _scale(recipe: Recipe) -> int:
    return int(recipe.arch.get("scale", 4))


def _input_hw(recipe: Recipe) -> tuple[int, int]:
    shape = recipe.inputs[0].shape
    return int(shape[-2]), int(shape[-1])


def _samples(recipe: Recipe, split: str, count: int) -> Samples:
    r = _scale(recipe)
    h, w = _input_hw(recipe)
    if h != w:
        raise ValueError("super-resolution samples need a square input")
    if split == "test":
        hr = torch.from_numpy(images.tiles(list(images.TEST_IMAGES), h * r)[:count])
    else:
        sampler = images.PatchSampler(r, h, seed=1234)
        hr = sampler.batch(count)[1]
    lr = images.downscale(hr, r)
    return Samples(inputs={"lr": lr.numpy().astype(np.float32)}, targets=hr.numpy())


def _task_metric(outputs: np.ndarray, samples: Samples) -> dict[str, float]:
    lr = samples.inputs["lr"]
    r = outputs.shape[-1] // lr.shape[-1]
    bicubic = images.bicubic_up(torch.from_numpy(lr), r).numpy()
    return {
        "psnr": images.psnr_y(outputs, samples.targets, r),
        "psnr_bicubic": images.psnr_y(bicubic, samples.targets, r),
    }


def _train_loop(
    model: nn.Module, recipe: Recipe, progress: ProgressFn, lr_scale: float = 1.0
) -> float:
    """Adam on MSE of random patches, linear warm-up then cosine decay; the last loss.

    `train.warmup` steps ramp the rate from ~0 (Adam's first steps on freshly
    initialised tables and clip scales are otherwise the largest and noisiest);
    `train.init` (a weights file relative to the recipe dir) warm-starts a second stage;
    `train.scale_lr` sets the rate of the clip scales apart from the tables'.
    """
    cfg = recipe.train
    if cfg.get("init"):
        state = torch.load(recipe.dir / str(cfg["init"]), weights_only=True)
        model.load_state_dict(state)
    seed = int(cfg.get("seed", 0))
    iters = int(cfg.get("iters", 2000))
    batch = int(cfg.get("batch", 16))
    torch.manual_seed(seed)
    data = recipe.data
    sampler = images.PatchSampler(
        _scale(recipe),
        int(data.get("lr_patch", 24)),
        seed,
        names=[str(n) for n in data["images"]] if "images" in data else None,
        min_std=float(data.get("min_std", 0.0)),
        size_power=float(data.get("size_power", 1.0)),
    )
    base_lr = float(cfg.get("lr", 1e-2)) * lr_scale
    # `train.scale_lr`: a separate rate for TinyLUT's clip scales (alpha, beta); default lr
    scale_lr = float(cfg.get("scale_lr", cfg.get("lr", 1e-2))) * lr_scale
    named = list(model.named_parameters())
    scales = [p for n, p in named if n.split(".")[-1] in ("alpha", "beta")]
    others = [p for n, p in named if n.split(".")[-1] not in ("alpha", "beta")]
    groups: list[dict[str, Any]] = [{"params": others, "lr": base_lr}]
    if scales:
        groups.append({"params": scales, "lr": scale_lr})
    opt = torch.optim.Adam(groups, lr=base_lr)
    warmup = int(cfg.get("warmup", 0))

    def rate(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        done = min((i - warmup) / max(iters - warmup, 1), 1.0)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * done))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    model.train()
    loss_value = float("nan")
    every = max(1, iters // 50)
    for it in range(1, iters + 1):
        lr_img, hr = sampler.batch(batch)
        loss = F.mse_loss(model(lr_img) / 255.0, hr / 255.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if it % every == 0 or it == iters:
            progress(it, iters, f"it {it} loss {loss_value:.5f}")
    model.eval()
    return loss_value


def _write_metrics(
    out_dir: Path, metrics: dict[str, Any], test: Samples, loss: float, start: float
) -> dict[str, Any]:
    """Add what every SR training reports (held-out set, loss, time) and write metrics.json."""
    metrics = {
        **metrics,
        "test_images": list(images.TEST_IMAGES),
        "test_tiles": len(test.targets),
        "final_loss": round(loss, 6),
        "train_seconds": round(time.monotonic() - start, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def load_luts(weights_dir: Path) -> Luts:
    with np.load(weights_dir / "weights-luts.npz") as data:
        return {key: data[key] for key in data.files}


def _tinylut_net(recipe: Recipe) -> TinyLUTNet:
    arch = recipe.arch
    return TinyLUTNet(
        _scale(recipe),
        int(arch.get("channels", 16)),
        int(arch.get("q", 13)),
        seed=int(recipe.train.get("seed", 0)),
    )


class LutModule(nn.Module):
    """The int8 LUT inference in torch ops (for litert-torch): same math as the ONNX graph."""

    g1: torch.Tensor
    pwj: torch.Tensor
    upj: torch.Tensor
    perm: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    joint_off: torch.Tensor
    tap_off: torch.Tensor

    def __init__(self, luts: Luts, height: int, width: int):
        super().__init__()
        t = combined_tables(luts)
        self.r = int(luts["scale"])
        self.q = int(luts["q"])
        self.levels = 2 * self.q + 1
        self.c = int(luts["pw"].shape[1])
        self.h, self.w = height, width
        for key, value in t.items():
            self.register_buffer(key, torch.from_numpy(value))
        alpha = np.tile(luts["alpha"].reshape(1, -1), (4, 1)).reshape(-1)
        self.register_buffer("alpha", torch.from_numpy(alpha.astype(np.float32)))
        self.register_buffer("beta", torch.from_numpy(luts["beta"].reshape(-1)))
        c, n, q = self.c, self.levels, self.q
        off = (np.arange(c) * n * n + q * n + q).astype(np.float32)
        self.register_buffer("joint_off", torch.from_numpy(off))
        self.register_buffer("tap_off", torch.arange(TAPS, dtype=torch.float32) * 256)

    def _joint(self, v: torch.Tensor) -> torch.Tensor:
        t = v.reshape(-1, 4, 2, self.c)
        j = t[:, :, 0] * float(self.levels) + t[:, :, 1] + self.joint_off
        return j.to(torch.int32).long()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w, r, q = self.h, self.w, self.r, float(self.q)
        x = lr.round().clamp(0, 255).reshape(1, 1, h, w)
        xp = F.pad(x, (1, 1, 1, 1), mode="replicate")[0, 0]
        nb = torch.stack([xp[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
        idx = (nb.reshape(TAPS, h * w) + self.tap_off[:, None]).to(torch.int32).long()
        s = self.g1[idx].sum(0)  # [HW, 128]
        hid = torch.round(s / 9).clamp(-128, 127)
        v = torch.round(hid * self.alpha).clamp(-q, q)
        p = torch.round(self.pwj[self._joint(v)].sum(2) / 16)  # [HW, 4, 2C]
        u = torch.round(p.reshape(h * w, 4, -1) * self.beta).clamp(-q, q)
        y = self.upj[self._joint(u)].sum(2).reshape(h * w, -1) @ self.perm
        y = (torch.round(y / 16) + x.reshape(h * w, 1)).clamp(0, 255)
        return y.reshape(h, w, r, r).permute(0, 2, 1, 3).reshape(1, 1, h * r, w * r)


@register
class TinyLUTFamily:
    """TinyLUT-S: quant "int8" is the LUT artifact, quant "fp32" the float-table network."""

    name = "tinylut"
    task = "super_resolution"
    native_quants = frozenset({"int8"})  # the LUT graph/module is the int8 model itself

    def train(self, recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        start = time.monotonic()
        model = _tinylut_net(recipe)
        loss = _train_loop(model, recipe, progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out_dir / "weights.pt")
        luts = model.to_luts()
        np.savez(out_dir / "weights-luts.npz", **luts)  # type: ignore[arg-type]
        test = self.samples(recipe, "test", int(recipe.data.get("test_count", 64)))
        int8 = _task_metric(lut_reference(test.inputs["lr"], luts), test)
        model.round_tables = False
        with torch.no_grad():
            fp32 = _task_metric(model(torch.from_numpy(test.inputs["lr"])).numpy(), test)
        sizes = lut_bytes(luts)
        metrics: dict[str, Any] = {
            "psnr": round(int8["psnr"], 3),
            "psnr_fp32": round(fp32["psnr"], 3),
            "psnr_bicubic": round(int8["psnr_bicubic"], 3),
            "lut_bytes": sizes["tables"],
            "lut_kb": round(sizes["tables"] / 1000, 2),
            "scale_bytes": sizes["scales"],
        }
        return _write_metrics(out_dir, metrics, test, loss, start)

    def build_c(
        self, recipe: Recipe, quant: str, described: dict[str, Any], out: Path
    ) -> dict[str, Any] | None:
        """int8: the LUT kernel over the stored tables (edgetool.zoo.tinylut_c), not a
        translation of the ONNX graph; fp32 (the float network) goes the generic way."""
        if quant != "int8":
            return None
        shape = described["inputs"][0]["shape"]
        out.write_text(kernel_source(load_luts(recipe.dir), shape[2], shape[3]))
        return {
            "c_generator": "edgetool TinyLUT LUT kernel (int8 tables, integer arithmetic)",
            "c_options": "tables as const arrays; bit-exact to the ONNX LUT graph",
        }

    def reference(self, recipe: Recipe, weights_dir: Path) -> nn.Module:
        model = _tinylut_net(recipe)
        model.load_state_dict(torch.load(weights_dir / "weights.pt", weights_only=True))
        model.round_tables = False
        return model.eval()

    def samples(self, recipe: Recipe, split: str, count: int) -> Samples:
        return _samples(recipe, split, count)

    def task_metric(self, outputs: np.ndarray, samples: Samples) -> dict[str, float]:
        return _task_metric(outputs, samples)

    def build_onnx(self, recipe: Recipe, weights_dir: Path, quant: str, opset: int) -> bytes | None:
        if quant != "int8":
            return None
        return build_lut_onnx(load_luts(weights_dir), *_input_hw(recipe), opset=opset)

    def export_module(self, recipe: Recipe, weights_dir: Path, quant: str) -> nn.Module:
        if quant == "int8":
            return LutModule(load_luts(weights_dir), *_input_hw(recipe)).eval()
        return self.reference(recipe, weights_dir)

    def reference_fn(
        self, recipe: Recipe, weights_dir: Path, quant: str
    ) -> Callable[[dict[str, np.ndarray]], np.ndarray] | None:
        if quant != "int8":
            return None
        luts = load_luts(weights_dir)

        def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(lut_reference(inputs["lr"], luts), dtype=np.float64)

        return run


@register
class FSRCNNFamily:
    """FSRCNN x r: the latency baseline, trained on the same patches."""

    name = "fsrcnn"
    task = "super_resolution"

    def train(self, recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        start = time.monotonic()
        torch.manual_seed(int(recipe.train.get("seed", 0)))
        model = self._net(recipe)
        loss = _train_loop(model, recipe, progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out_dir / "weights.pt")
        test = self.samples(recipe, "test", int(recipe.data.get("test_count", 64)))
        with torch.no_grad():
            out = model(torch.from_numpy(test.inputs["lr"])).numpy()
        m = _task_metric(out, test)
        metrics: dict[str, Any] = {
            "psnr": round(m["psnr"], 3),
            "psnr_bicubic": round(m["psnr_bicubic"], 3),
            "params": sum(p.numel() for p in model.parameters()),
        }
        return _write_metrics(out_dir, metrics, test, loss, start)

    def _net(self, recipe: Recipe) -> FSRCNN:
        a = recipe.arch
        return FSRCNN(_scale(recipe), int(a.get("d", 56)), int(a.get("s", 12)), int(a.get("m", 4)))

    def reference(self, recipe: Recipe, weights_dir: Path) -> nn.Module:
        model = self._net(recipe)
        model.load_state_dict(torch.load(weights_dir / "weights.pt", weights_only=True))
        return model.eval()

    def samples(self, recipe: Recipe, split: str, count: int) -> Samples:
        return _samples(recipe, split, count)

    def task_metric(self, outputs: np.ndarray, samples: Samples) -> dict[str, float]:
        return _task_metric(outputs, samples)
