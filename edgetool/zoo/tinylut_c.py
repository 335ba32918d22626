"""TinyLUT's int8 C export: the LUT inference as one integer loop over the stored tables
(37 KB at x4), not emx-onnx-cgen's translation of the ONNX graph (3.4 MB of combined
float tables and ~29 KB of stack per low-res pixel: no real Cortex-M part holds it).

The kernel computes exactly what the ONNX LUT graph and the numpy reference compute
(`tinylut.lut_reference`), so the ONNX graph at the same input shape stays the parity
reference for the firmware. The C text itself needs no torch; the tables are laid out
from `tinylut.load_luts`' arrays when a model file is written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgetool.zoo.tinylut_maps import clip_map, subpixel_of_rotation, tap_of_offset

C_KERNEL = r"""
#include <stddef.h>
#include <stdint.h>
#include <string.h>
/* TinyLUT-S LUT inference on the stored int8 tables (37 KB at x4), every sum exact.
   Tables are stored biased (int8 + 128 as uint8) so four entries load as one 32-bit word
   and add into two words of 16-bit lanes (even and odd bytes): no carries cross lanes,
   as no lane sums more than 32 entries of <= 255. Compile-time TL_C (channels), TL_L
   (clip levels), TL_R (scale). */
enum { C = TL_C, L = TL_L, R = TL_R, K = TL_R * TL_R, CW = TL_C / 4, KW = K / 4 };
_Static_assert(TL_C % 4 == 0 && (TL_R * TL_R) % 4 == 0, "table rows are whole 32-bit words");
#define TL_LANES 0x00FF00FFu
static inline int floordiv18(int a) { return a >= 0 ? a / 18 : -((-a + 17) / 18); }
static inline int rhe16(int a) {  /* a / 16 rounded half to even */
    int q = a >> 4, m = a & 15;
    return q + (m > 8 || (m == 8 && (q & 1)));
}
static inline void add_row(uint32_t *ev, uint32_t *od, const uint8_t *row, int words) {
    for (int i = 0; i < words; i++) {
        uint32_t v;
        memcpy(&v, row + 4 * i, 4);
        ev[i] += v & TL_LANES;
        od[i] += (v >> 8) & TL_LANES;
    }
}
static inline int lane(const uint32_t *ev, const uint32_t *od, int e) {  /* sum of entry e */
    return (int)((((e & 1) ? od : ev)[e >> 2] >> ((e & 2) * 8)) & 0xFFFFu);
}
void tinylut_x(const uint8_t *x, int h, int w,
               const uint8_t *dw_msb, const uint8_t *dw_lsb, const uint8_t *pw, const uint8_t *up,
               const uint8_t *amap, const uint8_t *bmap, const int32_t *taps, const int32_t *perm,
               float *out) {
    for (int py = 0; py < h; py++) for (int px = 0; px < w; px++) {
        int nb[9];
        for (int t = 0; t < 9; t++) {
            int yy = py + t / 3 - 1, xx = px + t % 3 - 1;
            yy = yy < 0 ? 0 : (yy >= h ? h - 1 : yy); xx = xx < 0 ? 0 : (xx >= w ? w - 1 : xx);
            nb[t] = x[yy * w + xx];
        }
        int res = 4 * (nb[4] >> 2) - 128;
        int o[K] = {0};
        for (int rot = 0; rot < 4; rot++) {
            uint32_t yev[KW] = {0}, yod[KW] = {0};
            for (int b = 0; b < 2; b++) {
                uint32_t sev[CW] = {0}, sod[CW] = {0}, aev[CW] = {0}, aod[CW] = {0};
                for (int t = 0; t < 9; t++) {
                    int tap = taps[rot * 9 + t];
                    const uint8_t *row = b == 0 ? dw_msb + (tap * 64 + (nb[t] >> 2)) * C
                                                : dw_lsb + (tap * 4 + (nb[t] & 3)) * C;
                    add_row(sev, sod, row, CW);
                }
                for (int c = 0; c < C; c++) {
                    int s = lane(sev, sod, c) - 9 * 128;
                    int hv = floordiv18(2 * s + 9) + (b == 0 ? res : 0);
                    hv = hv < -128 ? -128 : (hv > 127 ? 127 : hv);
                    int v = amap[(b * C + c) * 256 + hv + 128];
                    add_row(aev, aod, pw + ((b * C + c) * L + v) * C, CW);
                }
                for (int j = 0; j < C; j++) {
                    int u = bmap[(b * C + j) * 256 + rhe16(lane(aev, aod, j) - C * 128) + 128];
                    add_row(yev, yod, up + ((b * C + j) * L + u) * K, KW);
                }
            }
            for (int k = 0; k < K; k++) o[perm[rot * K + k]] += lane(yev, yod, k) - 2 * C * 128;
        }
        int base = nb[4];
        for (int k = 0; k < K; k++) {
            int val = rhe16(o[k]) + base;
            val = val < 0 ? 0 : (val > 255 ? 255 : val);
            out[(size_t)(py * R + k / R) * (w * R) + px * R + k % R] = (float)val;
        }
    }
}
"""

MODEL_ENTRY = r"""
/* edgetool_model for the firmware glue: float 0..255 image -> uint8, then tinylut_x. */
#include <math.h>
static uint8_t tl_pixels[TL_H * TL_W];
void edgetool_model(const float *lr, float *sr) {
    for (int i = 0; i < TL_H * TL_W; i++) {
        float v = nearbyintf(lr[i]); /* half to even, like numpy and ONNX Round */
        tl_pixels[i] = (uint8_t)(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
    }
    tinylut_x(tl_pixels, TL_H, TL_W, tl_dw_msb, tl_dw_lsb, tl_pw, tl_up, tl_amap, tl_bmap,
              tl_taps, tl_perm, sr);
}
"""


def _c_array(ctype: str, name: str, values: np.ndarray) -> str:
    body = ",".join(str(int(v)) for v in np.asarray(values).ravel())
    size = np.asarray(values).size
    return f"static const {ctype} {name}[{size}] __attribute__((aligned(4))) = {{{body}}};\n"


def kernel_tables(luts: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """tinylut_x's table arguments in order, as (C type, name, array): the LUTs biased to
    uint8 (see C_KERNEL), the clip maps, the tap order and sub-pixel permutation."""
    r, q = int(luts["scale"]), int(luts["q"])
    perm = np.zeros((4, r * r), np.int32)
    for rot in range(4):
        for orig, sub in enumerate(subpixel_of_rotation(rot, r)):
            perm[rot, sub] = orig

    def biased(name: str) -> np.ndarray:
        return (np.asarray(luts[name], np.int16) + 128).astype(np.uint8)

    return [
        ("uint8_t", "tl_dw_msb", biased("dw_msb")),
        ("uint8_t", "tl_dw_lsb", biased("dw_lsb")),
        ("uint8_t", "tl_pw", biased("pw")),
        ("uint8_t", "tl_up", biased("up")),
        ("uint8_t", "tl_amap", clip_map(luts["alpha"], q).astype(np.uint8)),
        ("uint8_t", "tl_bmap", clip_map(luts["beta"], q).astype(np.uint8)),
        ("int32_t", "tl_taps", np.array([tap_of_offset(k) for k in range(4)], np.int32)),
        ("int32_t", "tl_perm", perm),
    ]


def kernel_defines(luts: dict[str, Any]) -> dict[str, int]:
    r, q, c = int(luts["scale"]), int(luts["q"]), int(luts["pw"].shape[-1])
    return {"TL_C": c, "TL_L": 2 * q + 1, "TL_R": r}


def kernel_source(luts: dict[str, Any], height: int, width: int) -> str:
    """A firmware model file up to its `edgetool_model` entry point: the kernel and the
    int8 tables as const arrays (the export appends the bench glue, as for any C model)."""
    sizes = {**kernel_defines(luts), "TL_H": height, "TL_W": width}
    defines = "".join(f"#define {key} {value}\n" for key, value in sizes.items())
    return defines + C_KERNEL + "".join(_c_array(*t) for t in kernel_tables(luts)) + MODEL_ENTRY
