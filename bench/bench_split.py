"""Cut-point tables for bench/RESULTS.md: `edgetool split` per model over the shipped
link profiles, printed as Markdown with each route's end-to-end time as a ratio to the
device-only baseline measured in the same run (this machine is noisy).

    sudo python bench/bench_split.py cbnet@TENSOR,TENSOR entropic-student --links wifi,lte,ble
    python bench/bench_split.py --show RUN_ID ...      # tables of finished runs again

Needs root for the shaped links (network namespaces)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any


def run_split(spec: str, links: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """`NAME` or `NAME@tensor,tensor` (that model's cut points; else --points)."""
    model, _, points = spec.partition("@")
    argv = [sys.executable, "-m", "edgetool", "split", "-m", model, "--json", "-t", args.target]
    argv += ["--server", args.server, "-r", str(args.repeat), "-n", str(args.inferences)]
    argv += ["--points", points or args.points]
    for link in links:
        argv += ["--link", link]
    for codec in args.codecs.split(","):
        argv += ["--codec", codec]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{model}: edgetool split failed ({done.returncode}): {done.stderr.strip()}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def show_run(run: str) -> dict[str, Any]:
    """A finished run's plan and figures, as `edgetool split --json` printed them."""
    argv = [sys.executable, "-m", "edgetool", "results", "show", run, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{run}: edgetool results show failed ({done.returncode}): {done.stderr.strip()}")
    shown = json.loads(done.stdout)
    manifest = shown["manifest"]
    if manifest.get("split") is None:
        sys.exit(f"{run}: not a split run")
    return {
        "run_id": manifest["run_id"],
        "model": manifest["artifact"].get("model") or manifest["artifact"]["name"],
        "plan": manifest["split"],
        "figures": shown["summary"]["split"],
    }


def accuracy(plan: dict[str, Any], cut: str, codec: str) -> str:
    quality = (plan.get("quality", {}).get(cut) or {}).get(codec) or {}
    if quality.get("top1") is not None:
        return f"{100 * quality['top1']:.1f} %"
    if quality.get("psnr_db") is not None:
        return f"{quality['psnr_db']:.2f} dB"
    return ""


def ms(figure: dict[str, Any]) -> str:
    text = f"{figure['estimate_ms']:.3g}"
    return f"{text} [{figure['ci'][0]:.3g}, {figure['ci'][1]:.3g}]" if figure.get("ci") else text


def table(model: str, data: dict[str, Any], top: int) -> str:
    plan, figures = data["plan"], data["figures"]
    out = [f"### {model}  (run {data['run_id']})", ""]
    for link in plan["links"]:
        rows = [r for r in figures["rows"] if r["link"] == link]
        base = next(r for r in rows if r["cut"] == "device-only")["e2e"]["estimate_ms"]
        rows.sort(key=lambda r: r["e2e"]["estimate_ms"])
        profile = plan["links"][link]
        out += [
            f"**{link}** ({profile['bandwidth'] or 'unshaped'}, RTT {profile['rtt_ms']:g} ms, "
            f"shaper {profile.get('facts', {}).get('shaper')})",
            "",
            "| cut | codec | bytes up | device ms | encode ms | up ms | server ms | down ms | "
            "e2e ms p50 [95 % CI] | × device-only | accuracy |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        shown = rows[:top] + [r for r in rows[top:] if r["cut"] in ("device-only", "server-only")]
        for r in shown:
            out.append(
                f"| {r['cut']} | {r['codec']} | {r['bytes']} | {r['device']['estimate_ms']:.3g} | "
                f"{r['encode']['estimate_ms']:.3g} | {r['up']['estimate_ms']:.3g} | "
                f"{r['server']['estimate_ms']:.3g} | {r['down']['estimate_ms']:.3g} | "
                f"{ms(r['e2e'])} "
                f"| {r['e2e']['estimate_ms'] / base:.2f} | {accuracy(plan, r['cut'], r['codec'])} |"
            )
        best = figures["best"][link]
        cross = figures["crossover"][link]
        rate = cross.get("bits_per_second")
        out += [
            "",
            f"best: {best['cut']} · {best['codec']} ({ms(best['e2e'])} ms); crossover: "
            + (
                f"{rate / 1e6:.3g} Mbit/s ({cross['cut']} · {cross['codec']})"
                if rate
                else cross.get("reason", "none")
            ),
            "",
        ]
    return "\n".join(out)


def summary(model: str, data: dict[str, Any]) -> str:
    """Two short tables: bytes and accuracy per cut and codec (link-independent), then per
    link the device-only time, the best offloading route and the crossover bandwidth."""
    plan, figures = data["plan"], data["figures"]
    codecs = plan["codecs"]
    out = [f"#### {model}  (run {data['run_id']})", ""]
    out += ["| cut (shape) | " + " | ".join(codecs) + " |", "|---|" + "---:|" * len(codecs)]
    for cut in plan["cuts"]:
        cells = []
        for codec in codecs:
            quality = (plan["quality"].get(cut["tensor"]) or {}).get(codec) or {}
            size = quality.get("bytes_per_inference")
            cells.append(f"{size:.0f} B · {accuracy(plan, cut['tensor'], codec)}" if size else "")
        shape = "x".join(str(d) for d in cut["shape"])
        out.append(f"| {cut['tensor']} ({shape}) | " + " | ".join(cells) + " |")
    out += [
        "",
        "| link | device-only e2e ms | best offload: cut · codec (bytes up) | its e2e ms "
        "[95 % CI] | × device-only | crossover |",
        "|---|---:|---|---:|---:|---|",
    ]
    for link in plan["links"]:
        rows = [r for r in figures["rows"] if r["link"] == link]
        base = next(r for r in rows if r["cut"] == "device-only")["e2e"]
        offload = min(
            (r for r in rows if r["cut"] != "device-only"), key=lambda r: r["e2e"]["estimate_ms"]
        )
        cross = figures["crossover"][link]
        rate = cross.get("bits_per_second")
        where = f"{rate / 1e6:.3g} Mbit/s ({cross['cut']} · {cross['codec']})" if rate else "never"
        out.append(
            f"| {link} | {ms(base)} | {offload['cut']} · {offload['codec']} ({offload['bytes']} B) "
            f"| {ms(offload['e2e'])} | {offload['e2e']['estimate_ms'] / base['estimate_ms']:.3g} "
            f"| {where} |"
        )
    return "\n".join([*out, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", help="NAME or NAME@tensor,tensor (or run ids)")
    parser.add_argument(
        "--show",
        action="store_true",
        help="the arguments are finished split runs: print their tables",
    )
    parser.add_argument("--target", default="local")
    parser.add_argument("--server", default="local")
    parser.add_argument("--links", default="wifi,lte,ble")
    parser.add_argument("--codecs", default="fp32,fp16,int8,sgq4,int8+zstd,sgq4+zstd")
    parser.add_argument("--points", default="auto")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inferences", type=int, default=10)
    parser.add_argument("--top", type=int, default=8, help="rows per link (baselines always)")
    parser.add_argument(
        "--summary", action="store_true", help="bytes/accuracy and best route per link only"
    )
    args = parser.parse_args()
    for spec in args.models:
        if args.show:
            data = show_run(spec)
            model = data["model"]
        else:
            data = run_split(spec, args.links.split(","), args)
            model = spec.partition("@")[0]
        print(summary(model, data) if args.summary else table(model, data, args.top), flush=True)


if __name__ == "__main__":
    main()
