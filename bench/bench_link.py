#!/usr/bin/env python3
"""Shaped links (issue 22): per shipped profile, how long 1 KB / 10 KB / 100 KB frames take
through `Channel.up` against the ideal rtt/2 + bytes*8/rate, as a ratio measured vs ideal.

A ratio near 1 says the link behaves as its profile; above 1 is TCP's share (slow start
after idle, headers, retransmissions on a lossy link), below 1 is tbf's bucket letting a
small frame out faster than the rate. Each size is sent REPS times, alternating with a
tiny `down` so the connection idles as in a split run's lockstep; the median is reported.
Needs root (network namespaces); `none` runs too, as the unshaped reference.

    python bench/bench_link.py             # ~1 min
    python bench/bench_link.py --reps 11
"""

from __future__ import annotations

import argparse
import os
import statistics

from edgetool.split.link import link_names, load_link, open_link

SIZES = (1_000, 10_000, 100_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    header = f"{'link':6} {'shaper':14} {'bytes':>7} {'median ms':>10} {'ideal ms':>9} {'ratio':>6}"
    print(f"{header}  min..max ms")
    for name in link_names():
        profile = load_link(name)
        with open_link(profile, seed=args.seed) as channel:
            shaper = channel.facts["shaper"]
            for size in SIZES:
                data = os.urandom(size)
                times = []
                for _ in range(args.reps):
                    times.append(channel.up(data))
                    channel.down(b"ack")
                median = statistics.median(times) * 1e3
                ideal = profile.ideal_seconds(size) * 1e3
                ratio = f"{median / ideal:6.2f}" if name != "none" else "     -"
                print(
                    f"{name:6} {shaper:14} {size:7d} {median:10.2f} {ideal:9.2f} {ratio}  "
                    f"{min(times) * 1e3:.2f}..{max(times) * 1e3:.2f}"
                )
        if "packets" in channel.facts:
            print(f"{'':6} {profile.describe()}; packets {channel.facts['packets']}")


if __name__ == "__main__":
    main()
