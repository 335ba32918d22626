#!/usr/bin/env python3
"""tiny-llama greedy decoding on this CPU: int8 / int4 / W4A8 against fp32.

Each precision is exported the way `edgetool export tiny-llama --quant Q` does (cached)
and run by edgetool's own on-device runner (`device_runner.py generate`, a fresh process
per run, 1 thread): one untimed generation, then `--repeat` timed ones of `--tokens` new
tokens after a fixed prompt from the held-out text. Runs alternate fp32, int8, int4,
w4a8, fp32, ... fp32 (`--reps` each); a run's value is its decode tokens/s, and each
ratio is the median of the bracketed run ratios (see bench/README.md "Method").
Quality (`edgetool verify`: perplexity on the held-out text, next-token top-1
agreement with the fp32 transformers model), artifact size and peak RSS per precision
are printed beside it.

Goal (issue): decode tokens/s of int4 and W4A8 >= 2.0 x fp32 with top-1 agreement >= 90 %.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import Result, arm_ratios, interleave, median

QUANTS = ("fp32", "int8", "int4", "w4a8")
GOAL = 2.0


def generate(model: Path, prompt: Path, tokens: int, repeat: int, head: int) -> dict[str, Any]:
    from edgetool.runner import RUNNER_PATH

    argv = [
        sys.executable, str(RUNNER_PATH), "generate", "--model", str(model),
        "--prompt-ids", str(prompt), "--tokens", str(tokens), "--head-size", str(head),
        "--repeat", str(repeat), "--threads", "1",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    gens = [e for e in events if e["event"] == "generation"]
    summary = next(e for e in events if e["event"] == "summary")
    return {
        "decode_tps": median([(g["new_tokens"] - 1) / (g["decode_ns"] / 1e9) for g in gens]),
        "prefill_tps": median([g["prompt_tokens"] / (g["ttft_ns"] / 1e9) for g in gens]),
        "ttft_ms": median([g["ttft_ns"] / 1e6 for g in gens]),
        "peak_rss": summary["peak_rss"],
        "tokens": gens[0]["tokens"],
    }


def time_decoding(
    models: dict[str, Path], ids: np.ndarray, head: int, args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]], dict[str, float]]:
    """Alternate the precisions (fp32 first: the baseline) for `args.reps` rounds.

    Returns decode tokens/s per run, each precision's last run in full, and the decode
    speed-up against fp32: the inverse of the median bracketed time ratio.
    """
    last: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompt = Path(tmp) / "prompt.npy"
        np.save(prompt, ids)

        def arm(quant: str) -> Any:
            def run(_rep: int) -> float:
                last[quant] = generate(models[quant], prompt, args.tokens, args.repeat, head)
                return float(last[quant]["decode_tps"])

            return run

        series = interleave(args.reps, {q: arm(q) for q in QUANTS}, label="decode tok/s")
    ratios = arm_ratios({q: [1 / v for v in s] for q, s in series.items()}, "fp32")
    return series, last, {q: 1 / r for q, r in ratios.items()}


def random_llama(spec: str, out: Path, tokenizer_dir: Path) -> Path:
    """A random LLaMA of `spec` (HIDDENxLAYERS) saved as an HF directory: decode speed
    of a model that no longer fits in the CPU caches, where weight bytes dominate."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers = (int(v) for v in spec.lower().split("x"))
    heads = max(hidden // 64, 1)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=hidden, intermediate_size=int(hidden * 8 / 3) // 64 * 64,
        num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=max(heads // 3, 1), max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, out / name)
    return out


def speed_only(args: argparse.Namespace) -> int:
    from edgetool.zoo import llm
    from edgetool.zoo.recipe import load_recipe

    recipe = load_recipe("tiny-llama")
    ids = llm.encode(llm.hf_dir(recipe), llm.heldout_text(recipe.dir))[: args.prompt_tokens]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_llama(args.random_llama, Path(tmp) / "hf", llm.hf_dir(recipe))
        head = llm.geometry(model_dir)["head_size"]
        paths = {}
        for quant in QUANTS:
            paths[quant] = Path(tmp) / f"{quant}.onnx"
            print(f"exporting {quant} ...", flush=True)
            llm.build_onnx_file(model_dir, quant, paths[quant], 32)
        sizes = {q: p.stat().st_size for q, p in paths.items()}
        series, last, speedup = time_decoding(paths, ids, head, args)
    params = sizes["fp32"] / 4 / 1e6
    print(f"\nrandom LLaMA {args.random_llama} (~{params:.0f} M parameters), "
          f"{args.prompt_tokens}-token prompt, {args.tokens} new tokens, 1 thread:")  # fmt: skip
    for q in QUANTS:
        print(
            f"{q:<6} decode {median(series[q]):8.2f} tok/s  x{speedup.get(q, 1.0):.2f}  "
            f"prefill {last[q]['prefill_tps']:8.1f} tok/s  {sizes[q] / 1e6:8.1f} MB  "
            f"peak RSS {last[q]['peak_rss'] / 1e6:8.1f} MB"
        )
    worst = min(speedup["int4"], speedup["w4a8"])
    Result(f"llm decode ({args.random_llama} random)", worst, f">= {GOAL}", worst >= GOAL,
           {"speedup": speedup, "bytes": sizes}).emit()  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="ABAB rounds (default 5)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="timed generations per run")
    parser.add_argument(
        "--random-llama",
        metavar="HIDDENxLAYERS",
        help="time a random-weight LLaMA of this size instead (speed only: its quality "
        "figures mean nothing), e.g. 768x12 (~125 M parameters, vocab 32000)",
    )
    args = parser.parse_args(argv)
    if args.random_llama:
        return speed_only(args)

    from edgetool.export.build import export
    from edgetool.export.verify import verify
    from edgetool.zoo import llm
    from edgetool.zoo.recipe import load_recipe

    recipe = load_recipe("tiny-llama")
    model_dir = llm.hf_dir(recipe)
    head = llm.geometry(model_dir)["head_size"]
    ids = llm.encode(model_dir, llm.heldout_text(recipe.dir))[: args.prompt_tokens]
    artifacts = {q: export("tiny-llama", "onnx", q) for q in QUANTS}
    quality = {q: verify(artifacts[q], 16) for q in QUANTS}
    paths = {q: artifacts[q].path for q in QUANTS}
    series, last, speedup = time_decoding(paths, ids, head, args)
    print(f"\n{args.prompt_tokens}-token prompt, {args.tokens} new tokens, 1 thread:")
    print(f"{'quant':<6} {'decode tok/s':>12} {'vs fp32':>8} {'prefill tok/s':>13} "
          f"{'bytes':>10} {'peak RSS':>10} {'top1 agr':>9} {'ppl':>8}")  # fmt: skip
    details: dict[str, Any] = {}
    for q in QUANTS:
        rep = quality[q]
        agree = rep.agreement["top1_agreement"]
        ppl = rep.metric_artifact["perplexity"]
        print(
            f"{q:<6} {median(series[q]):12.1f} {speedup.get(q, 1.0):8.2f} "
            f"{last[q]['prefill_tps']:13.1f} {artifacts[q].size:10,} "
            f"{last[q]['peak_rss'] / 1e6:9.1f}M {agree * 100:8.1f}% {ppl:8.3f}"
        )
        details[q] = {
            "decode_tps": median(series[q]),
            "speedup": speedup.get(q, 1.0),
            "bytes": artifacts[q].size,
            "peak_rss": last[q]["peak_rss"],
            "top1_agreement": agree,
            "perplexity": ppl,
        }
    worst = min(speedup["int4"], speedup["w4a8"])
    met = worst >= GOAL and all(details[q]["top1_agreement"] >= 0.9 for q in ("int4", "w4a8"))
    print(f"\nint4 {speedup['int4']:.2f}x, w4a8 {speedup['w4a8']:.2f}x fp32 decode "
          f"(goal >= {GOAL}) -> {'MET' if met else 'MISSED'}")  # fmt: skip
    Result("llm decode int4|w4a8 / fp32", worst, f">= {GOAL}", met, details).emit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
