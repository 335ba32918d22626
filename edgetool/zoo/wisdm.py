"""Smartwatch activity windows for L2MU: the WISDM 2019 raw watch files, or a seeded
synthetic set of the same shape when the dataset is not on disk.

Both come out as float32 windows [N, 40, 6] (2 s at 20 Hz; accelerometer x/y/z in m/s²,
then gyroscope x/y/z in rad/s) with int64 labels 0..6 in :data:`ACTIVITIES` order.

Recipe `[data]` table (read by :func:`load_windows`):

* ``source = "synthetic"`` (default): ``per_class`` windows of each activity (300),
  generated with ``seed``; split stratified with ``split_seed``.
* ``source = "wisdm"``: ``path`` to the dataset's ``raw/watch`` folder (the one holding
  ``accel/`` and ``gyro/``), or ``$EDGETOOL_WISDM_DIR`` when set. Split by *subject*,
  so no person is in both training and test data.
* ``split_seed`` (0), ``val_fraction`` (0.1), ``test_fraction`` (0.2).

WISDM raw records are ``subject,activity,timestamp_ns,x,y,z;`` one per line, one file
per subject and sensor (``data_1600_accel_watch.txt``). The dataset (Weiss, UCI 2019)
is CC BY 4.0: cite it when you publish numbers from it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetool.errors import ConfigError, ModelError
from edgetool.zoo.datasets import split_indices

WISDM_DIR_ENV = "EDGETOOL_WISDM_DIR"
STEPS = 40  # 2 s windows at 20 Hz
RATE_HZ = 20.0
CHANNELS = 6
# The 7 hand activities of the L2MU paper, with their WISDM activity codes.
ACTIVITIES: tuple[tuple[str, str], ...] = (
    ("P", "dribbling"),
    ("O", "catch"),
    ("F", "typing"),
    ("Q", "writing"),
    ("R", "clapping"),
    ("G", "brushing teeth"),
    ("S", "folding clothes"),
)
_CODE_TO_LABEL = {code: i for i, (code, _) in enumerate(ACTIVITIES)}
_MAX_PAIR_GAP_NS = 25_000_000  # accel/gyro samples further apart than half a period: no pair
_MAX_STEP_GAP_NS = 100_000_000  # a window may not span a recording gap longer than 2 periods
_FILE = re.compile(r"data_(\d+)_(accel|gyro)_watch\.txt$")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Windows:
    x: FloatArray  # [N, 40, 6]
    y: IntArray  # [N]
    subjects: IntArray  # [N]; -1 for synthetic windows


@dataclass(frozen=True)
class WindowSplits:
    train: Windows
    val: Windows
    test: Windows
    source: str


# --- WISDM raw files ------------------------------------------------------------------


def read_raw(path: Path) -> dict[tuple[int, str], npt.NDArray[np.float64]]:
    """One raw sensor file -> {(subject, activity code): [n, 4] (t_ns, x, y, z) by time}.

    Malformed lines are an error naming the line: silently skipping them would change
    the windows without anyone noticing.
    """
    rows: dict[tuple[int, str], list[tuple[float, float, float, float]]] = {}
    try:
        text = path.read_text(encoding="ascii", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read WISDM file {path}: {exc}") from exc
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip().rstrip(";").strip()
        if not line:
            continue
        fields = line.split(",")
        try:
            if len(fields) != 6:
                raise ValueError(f"{len(fields)} fields, expected 6")
            subject, code = int(fields[0]), fields[1].strip()
            record = (float(fields[2]), float(fields[3]), float(fields[4]), float(fields[5]))
        except ValueError as exc:
            raise ModelError(f"{path}:{lineno}: not a WISDM record ({exc}): {line[:60]!r}") from exc
        rows.setdefault((subject, code), []).append(record)
    out = {}
    for key, values in rows.items():
        arr = np.asarray(values, dtype=np.float64)
        out[key] = arr[np.argsort(arr[:, 0], kind="stable")]
    return out


def pair_streams(
    accel: npt.NDArray[np.float64], gyro: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """[n, 7] (t_ns, ax, ay, az, gx, gy, gz): each accel sample with the nearest gyro one.

    The watch logs the two sensors independently, so their timestamps never coincide.
    """
    if len(accel) == 0 or len(gyro) == 0:
        return np.zeros((0, 7))
    t = accel[:, 0]
    right = np.clip(np.searchsorted(gyro[:, 0], t), 0, len(gyro) - 1)
    left = np.clip(right - 1, 0, len(gyro) - 1)
    nearest = np.where(np.abs(gyro[left, 0] - t) <= np.abs(gyro[right, 0] - t), left, right)
    keep = np.abs(gyro[nearest, 0] - t) <= _MAX_PAIR_GAP_NS
    return np.concatenate([accel[keep], gyro[nearest[keep], 1:]], axis=1)


def window(paired: npt.NDArray[np.float64], steps: int = STEPS) -> FloatArray:
    """Non-overlapping windows of `steps` samples that span no recording gap."""
    out: list[npt.NDArray[np.float64]] = []
    start = 0
    while start + steps <= len(paired):
        chunk = paired[start : start + steps]
        gaps = np.diff(chunk[:, 0])
        if np.all((gaps > 0) & (gaps <= _MAX_STEP_GAP_NS)):
            out.append(chunk[:, 1:])
            start += steps
        else:
            start += int(np.argmax((gaps <= 0) | (gaps > _MAX_STEP_GAP_NS))) + 1
    if not out:
        return np.zeros((0, steps, CHANNELS), dtype=np.float32)
    return np.stack(out).astype(np.float32)


def load_wisdm(folder: Path) -> Windows:
    """Every 7-activity window of every subject with both an accel and a gyro file."""
    files: dict[int, dict[str, Path]] = {}
    for sensor in ("accel", "gyro"):
        for path in sorted((folder / sensor).glob("data_*_watch.txt")):
            match = _FILE.search(path.name)
            if match:
                files.setdefault(int(match.group(1)), {})[match.group(2)] = path
    pairs = {s: f for s, f in files.items() if {"accel", "gyro"} <= set(f)}
    if not pairs:
        raise ModelError(
            f"no WISDM watch files under {folder}",
            hint="point data.path (or $EDGETOOL_WISDM_DIR) at wisdm-dataset/raw/watch, "
            "the folder holding accel/data_1600_accel_watch.txt and gyro/...",
        )
    xs: list[FloatArray] = []
    ys: list[int] = []
    subjects: list[int] = []
    for subject, sensors in sorted(pairs.items()):
        accel, gyro = read_raw(sensors["accel"]), read_raw(sensors["gyro"])
        for (subj, code), acc in sorted(accel.items()):
            label = _CODE_TO_LABEL.get(code)
            if label is None or (subj, code) not in gyro:
                continue
            windows = window(pair_streams(acc, gyro[(subj, code)]))
            xs.append(windows)
            ys += [label] * len(windows)
            subjects += [subject] * len(windows)
    if not ys:
        raise ModelError(f"{folder}: no complete 2 s windows of the 7 hand activities")
    return Windows(
        np.concatenate(xs),
        np.asarray(ys, dtype=np.int64),
        np.asarray(subjects, dtype=np.int64),
    )


# --- synthetic activities -------------------------------------------------------------

# Per activity: base frequency (Hz), accel amplitude per axis (m/s²), gyro amplitude per
# axis (rad/s), wrist tilt (rad, how gravity falls on x/z), waveform sharpness (0 = sine,
# toward 1 = impulsive, like hands meeting), and irregularity (random-walk share).
_PATTERNS: tuple[tuple[float, tuple[float, ...], tuple[float, ...], float, float, float], ...] = (
    (1.8, (2.0, 7.0, 2.0), (3.0, 1.0, 0.5), 0.3, 0.3, 0.1),  # dribbling
    (0.6, (4.0, 2.0, 4.0), (1.0, 2.0, 1.0), 0.9, 0.0, 0.3),  # catch
    (5.0, (0.4, 0.3, 0.5), (0.2, 0.2, 0.1), 1.4, 0.0, 0.1),  # typing
    (2.8, (0.9, 0.6, 0.2), (0.3, 0.2, 0.6), 1.2, 0.0, 0.2),  # writing
    (2.4, (9.0, 1.5, 1.5), (1.0, 3.0, 1.0), 0.1, 0.8, 0.1),  # clapping
    (4.0, (0.8, 3.0, 2.5), (1.0, 4.0, 1.0), 0.5, 0.1, 0.1),  # brushing teeth
    (0.9, (2.5, 2.0, 2.5), (1.5, 1.5, 1.5), 0.7, 0.0, 0.7),  # folding clothes
)
GRAVITY = 9.81


def synthetic(per_class: int, seed: int) -> Windows:
    """Seeded windows with 7 distinguishable (but jittered and noisy) activity patterns."""
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS) / RATE_HZ
    xs: list[FloatArray] = []
    ys: list[int] = []
    for label, (freq, acc_amp, gyr_amp, tilt, sharp, walk) in enumerate(_PATTERNS):
        for _ in range(per_class):
            f = freq * rng.uniform(0.75, 1.25)
            phase = rng.uniform(0, 2 * np.pi, size=6)
            wave = np.sin(2 * np.pi * f * t[:, None] + phase)
            wave = np.sign(wave) * np.abs(wave) ** (1.0 / (1.0 + 4.0 * sharp))
            drift = np.cumsum(rng.normal(0.0, 1.0, size=(STEPS, 6)), axis=0)
            drift /= np.maximum(np.abs(drift).max(axis=0), 1e-6)
            signal = (1 - walk) * wave + walk * drift
            amps = np.asarray(acc_amp + gyr_amp) * rng.uniform(0.7, 1.3, size=6)
            a = tilt + rng.normal(0.0, 0.25)
            gravity = GRAVITY * np.asarray([np.sin(a), rng.normal(0.0, 0.1), np.cos(a)])
            noise = rng.normal(0.0, 1.0, size=(STEPS, 6)) * np.asarray([0.3] * 3 + [0.08] * 3)
            sample = signal * amps + noise
            sample[:, :3] += gravity
            xs.append(sample.astype(np.float32))
            ys.append(label)
    return Windows(
        np.stack(xs), np.asarray(ys, dtype=np.int64), np.full(len(ys), -1, dtype=np.int64)
    )


# --- recipe entry point ---------------------------------------------------------------


def _take(w: Windows, idx: IntArray) -> Windows:
    return Windows(w.x[idx], w.y[idx], w.subjects[idx])


def _subject_split(
    w: Windows, seed: int, val_fraction: float, test_fraction: float
) -> tuple[IntArray, IntArray, IntArray]:
    subjects = np.unique(w.subjects)
    order = subjects[np.random.default_rng(seed).permutation(len(subjects))]
    n_test = max(1, round(len(order) * test_fraction)) if len(order) > 2 else 0
    n_val = max(1, round(len(order) * val_fraction)) if len(order) > 2 else 0
    if n_test == 0:
        raise ModelError("WISDM data needs at least 3 subjects to split by subject")
    test_s, val_s = order[:n_test], order[n_test : n_test + n_val]
    parts = (
        ~np.isin(w.subjects, np.concatenate([test_s, val_s])),
        np.isin(w.subjects, val_s),
        np.isin(w.subjects, test_s),
    )
    train, val, test = (np.flatnonzero(p).astype(np.int64) for p in parts)
    return train, val, test


@functools.lru_cache(maxsize=4)
def _cached(source: str, location: str, per_class: int, seed: int, fractions: str) -> WindowSplits:
    split_seed, val_fraction, test_fraction = (float(v) for v in fractions.split(","))
    if source == "wisdm":
        data = load_wisdm(Path(location))
        tr, va, te = _subject_split(data, int(split_seed), val_fraction, test_fraction)
        label = f"WISDM 2019 watch (CC BY 4.0), {len(np.unique(data.subjects))} subjects"
    else:
        data = synthetic(per_class, seed)
        tr, va, te = split_indices(data.y, int(split_seed), val_fraction, test_fraction)
        label = f"synthetic smartwatch activities (seed {seed}, {per_class} per class)"
    return WindowSplits(_take(data, tr), _take(data, va), _take(data, te), source=label)


def load_windows(data: Mapping[str, Any], base: Path) -> WindowSplits:
    """The recipe's `[data]` table -> train/val/test windows (cached per process)."""
    source = str(data.get("source", "synthetic"))
    fractions = ",".join(
        str(float(data.get(k, d)))
        for k, d in (("split_seed", 0), ("val_fraction", 0.1), ("test_fraction", 0.2))
    )
    if source == "synthetic":
        return _cached(
            source, "", int(data.get("per_class", 300)), int(data.get("seed", 0)), fractions
        )
    if source != "wisdm":
        raise ConfigError(f"data.source must be 'synthetic' or 'wisdm', not '{source}'")
    location = os.environ.get(WISDM_DIR_ENV) or data.get("path")
    if not location:
        raise ConfigError(
            "data.source = 'wisdm' needs data.path or $EDGETOOL_WISDM_DIR "
            "(the dataset's raw/watch folder)"
        )
    folder = Path(str(location)).expanduser()
    if not folder.is_absolute():
        folder = base / folder
    if not folder.is_dir():
        raise ConfigError(f"WISDM folder {folder} does not exist")
    return _cached(source, str(folder), 0, 0, fractions)
