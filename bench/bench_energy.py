#!/usr/bin/env python3
"""Energy per inference and clock alignment against meters with known ground truth.

The PPK2 and UM25C peers (edgetool.testing.meters) speak the real wire protocols on a pty and
draw a pulse waveform of the host clock; the pulses stand for inferences, so every
window's exact energy is known in closed form. The real drivers read the peers, and the
same code that serves `deploy --energy` integrates the windows. Alignment: the runner's
`clock` command through the local transport and the loopback sshd, whose true offset is
zero (same kernel clock), so the error of each estimate is the estimate itself.

    python bench/bench_energy.py            # ~40 s
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time

from _common import Result, loopback, scratch

from edgetool.events import PowerSample
from edgetool.power import open_meter
from edgetool.power.align import estimate_offset, probe_clock
from edgetool.power.base import host_ns
from edgetool.power.energy import energy_from_trace, group_windows
from edgetool.testing.meters import start_peer
from edgetool.testing.waveform import Pulses

VOLTS = 5.0
HIGH, LOW = 0.5, 0.05


def energy_case(kind: str, period_ms: float, width_ms: float, seconds: float) -> dict[str, float]:
    """One meter, one pulse train: relative errors of total and dynamic mJ per inference."""
    waveform = Pulses(
        period_ns=int(period_ms * 1e6), width_ns=int(width_ms * 1e6), high=HIGH, low=LOW,
        phase_ns=host_ns(),
    )  # fmt: skip
    options = {"port": "", "volts": VOLTS} if kind == "ppk2" else {"port": "", "interval": 0.1}
    with start_peer(kind, waveform, VOLTS) as peer:
        meter = open_meter(kind, {**options, "port": peer.port})
        samples: list[PowerSample] = []
        meter_t0: int | None = None
        peer_start = 0
        try:
            meter.start()
            time.sleep(seconds + 1.5)
            meter.stop()
            samples = meter.samples()
            meter_t0 = getattr(meter, "t0_ns", None)
            peer_start = getattr(peer, "stream_start_ns", 0)
        finally:
            meter.close()
    first = samples[0].t_ns
    run_start = first + 500_000_000
    windows = waveform.pulse_windows(run_start, run_start + int(seconds * 1e9))
    result = energy_from_trace(kind, samples, windows, None)
    groups = group_windows(windows, 10 * _period_ns(samples))
    exact_total = statistics.fmean(VOLTS * waveform.charge(a, b) / n * 1e3 for a, b, n in groups)
    lag_us = float("nan")
    if kind == "ppk2" and meter_t0 is not None:
        lag_us = (meter_t0 - peer_start) / 1e3
    return {
        "windows": len(windows),
        "per_group": result.per_group,
        "total_mj": result.total_mj["mean"],
        "total_err": result.total_mj["mean"] / exact_total - 1,
        "meter_lag_us": lag_us,
    }


def _period_ns(samples: list[PowerSample]) -> float:
    return statistics.median(b.t_ns - a.t_ns for a, b in itertools.pairwise(samples))


def alignment_case(transport_name: str, repeats: int) -> dict[str, float]:
    from edgetool.flows.base import Observer, connect, push
    from edgetool.runner import RUNNER_PATH
    from edgetool.targets import load_target

    target = load_target(transport_name)
    ratios, uncertainties = [], []
    with connect(target) as transport:
        remote = f"{target.workdir}/runner/{RUNNER_PATH.name}"
        push(transport, [(RUNNER_PATH, remote)], Observer())
        for _ in range(repeats):
            est = estimate_offset(
                probe_clock(transport.run([transport.python, remote, "clock"]), 32)
            )
            ratios.append(abs(est.offset_ns) / max(est.uncertainty_ns, 1))
            uncertainties.append(est.uncertainty_ns)
    return {
        "repeats": repeats,
        "max_error_over_uncertainty": max(ratios),
        "median_uncertainty_us": statistics.median(uncertainties) / 1e3,
        "max_uncertainty_us": max(uncertainties) / 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    cases = [
        ("ppk2", 50, 20),
        ("ppk2", 20, 8),
        ("ppk2", 10, 4),
        ("ppk2", 2, 0.5),
        ("ppk2", 0.2, 0.05),
        ("um25c", 10, 4),
        ("um25c", 300, 120),
    ]
    print(f"{'meter':6} {'period':>8} {'width':>8} {'windows':>8} {'per win':>8} "
          f"{'mJ/inf':>9} {'error':>8} {'meter lag':>10}")  # fmt: skip
    energy = []
    for kind, period, width in cases:
        row = energy_case(kind, period, width, args.seconds if kind == "ppk2" else 3 * args.seconds)
        energy.append({"meter": kind, "period_ms": period, "width_ms": width, **row})
        print(
            f"{kind:6} {period:6g}ms {width:6g}ms {row['windows']:8d} {row['per_group']:8.1f} "
            f"{row['total_mj']:9.4f} {100 * row['total_err']:+7.2f}% "
            f"{row['meter_lag_us']:7.0f} µs"
        )
    align = {}
    with scratch():
        align["local"] = alignment_case("local", args.repeats)
        with loopback():
            align["loopback-ssh"] = alignment_case("loopback", args.repeats)
    for name, row in align.items():
        print(
            f"alignment {name:13} |offset error| / uncertainty max "
            f"{row['max_error_over_uncertainty']:.2f}; uncertainty median "
            f"{row['median_uncertainty_us']:.0f} µs, max {row['max_uncertainty_us']:.0f} µs"
        )
    worst = max(abs(r["total_err"]) for r in energy if r["width_ms"] >= 8)
    aligned = all(r["max_error_over_uncertainty"] <= 1.0 for r in align.values())
    Result(
        "energy",
        worst,
        "energy/inference error <= 2 % vs exact for windows >= 8 ms; alignment within uncertainty",
        worst <= 0.02 and aligned,
        {"energy": energy, "alignment": align},
    ).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
