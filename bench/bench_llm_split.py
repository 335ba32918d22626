#!/usr/bin/env python3
"""tiny-llama split between a device and a cloud: bytes per generated token, measured.

CE-CoLLM's point (REFERENCES.md, "Split computing") is that in cloud-edge LLM inference
transmitting context dominates. This script generates `--tokens` tokens greedily with the
exported fp32 tiny-llama (`edgetool export tiny-llama --quant fp32`, onnxruntime, one
thread) after a `--context`-token prompt from the held-out text, and measures from the
real tensors what a device -> cloud split carries, per design:

(a) ids      the cloud runs the whole model: the prompt's token ids once, then one id
             per token (2 bytes: the vocabulary has 1,024 entries, uint16 holds it);
(b) hidden@k the device runs layers [0, k), the cloud [k, L): one hidden-state row per
             token (edgetool/split/llm.py un-fuses the builder's residual add to cut the
             KV-cache graph there; each side keeps its own layers' KV cache);
(c) kv       the device runs the whole model and the cloud mirrors its KV cache: the new
             K/V rows of every layer per token; the handover is the whole cache, which lets
             the cloud continue with no prefill of its own.

Every tensor goes through the split codecs (`edgetool.runner.split_runner.encode`, the
bytes the device would send, side info included), calibrated on the prompt's tensors;
the per-token figures are the mean over the generated tokens, which calibration never
saw. "Handover" is the context the cloud needs to take over after the prompt: the ids,
the prompt's hidden states at the cut (the cloud rebuilds its own cache), or the prompt's
whole KV cache. Top-1 agreement: the cloud side fed the *decoded* tensors, teacher-forced
on the fp32 tokens, against those tokens: for (b) the tail over all generated tokens, for
(c) the whole model continuing from the decoded cache (its own new rows are exact).

Transfer time per token is a model, not a measurement: bytes * 8 / rate + RTT with the
shipped link profiles' figures (links/*.toml, themselves assumptions); the decode step
time measured in the same run gives the scale.

    python bench/bench_llm_split.py [--tokens 128] [--context 128]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _common import Result, scratch

CODECS = ("fp32", "fp16", "int8", "sgq4", "fp32+zstd", "fp16+zstd", "int8+zstd", "sgq4+zstd")
LINKS = ("wifi", "lte", "ble")
ID_BYTES = 2


@dataclass
class Row:
    """One design x codec: what crosses per token and for the handover, and its cost."""

    design: str
    codec: str
    per_token: float
    handover: int
    agreement: float
    encode_us: float = 0.0
    notes: list[str] = field(default_factory=list)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1e3


def reference(path: Any, head_size: int, prompt: np.ndarray, tokens: int) -> dict[str, Any]:
    """Greedy fp32 generation: the tokens, the prompt's cache, the final cache, timings."""
    from edgetool.split.llm import Stepper

    full = Stepper(path, head_size)
    logits, prefill_ms = timed(lambda: full.step(prompt[None]))
    prompt_cache = dict(full.past)
    ref = [int(np.argmax(logits[0, -1]))]
    steps = []
    for _ in range(tokens - 1):
        logits, ms = timed(lambda: full.step(np.array([[ref[-1]]], np.int64)))
        steps.append(ms)
        ref.append(int(np.argmax(logits[0, -1])))
    return {
        "tokens": ref,
        "prompt_cache": prompt_cache,
        "cache": dict(full.past),
        "prefill_ms": prefill_ms,
        "step_ms": statistics.median(steps),
    }


def hidden_rows(
    path: Any, layer: int, head_size: int, prompt: np.ndarray, ref: list[int]
) -> dict[str, Any]:
    """The head's hidden states for the prompt and each generated token; the halves."""
    from edgetool.split.llm import Stepper, split_at_layer

    head_proto, tail_proto = split_at_layer(path, layer)
    head = Stepper(head_proto, head_size)
    prompt_hidden = head.step(prompt[None])[0]
    rows, steps = [], []
    for token in ref[:-1]:
        row, ms = timed(lambda t=token: head.step(np.array([[t]], np.int64)))
        rows.append(row[0])
        steps.append(ms)
    return {
        "prompt": prompt_hidden,
        "rows": rows,
        "tail": tail_proto,
        "head_step_ms": statistics.median(steps),
    }


def hidden_design(
    layer: int, data: dict[str, Any], ref: list[int], head_size: int, codec: str
) -> Row:
    from edgetool.runner import split_runner
    from edgetool.split.llm import Stepper

    params = split_runner.calibrate(codec, data["prompt"])
    handover = split_runner.encode(codec, data["prompt"], params)
    start = time.perf_counter()
    payloads = [split_runner.encode(codec, row, params) for row in data["rows"]]
    encode_us = (time.perf_counter() - start) * 1e6 / max(len(payloads), 1)
    tail = Stepper(data["tail"], head_size)
    hidden = split_runner.decode(codec, handover, params, data["prompt"].shape)
    preds = [int(np.argmax(tail.step(hidden[None])[0, -1]))]
    for payload, row in zip(payloads, data["rows"], strict=True):
        decoded = split_runner.decode(codec, payload, params, row.shape)
        preds.append(int(np.argmax(tail.step(decoded[None])[0, -1])))
    agree = float(np.mean(np.asarray(preds) == np.asarray(ref)))
    per_token = statistics.mean(len(p) for p in payloads)
    return Row(f"hidden@{layer}", codec, per_token, len(handover), agree, encode_us)


def kv_design(path: Any, run: dict[str, Any], context: int, kv_heads: int, codec: str) -> Row:
    from edgetool.runner import split_runner
    from edgetool.split.llm import Stepper, kv_cache, kv_rows

    ref = run["tokens"]
    params, handover, cloud_cache = {}, 0, {}
    for name, cache in run["prompt_cache"].items():
        rows = kv_rows(cache, 0)
        params[name] = split_runner.calibrate(codec, rows)
        payload = split_runner.encode(codec, rows, params[name])
        handover += len(payload)
        decoded = split_runner.decode(codec, payload, params[name], rows.shape)
        cloud_cache[name] = kv_cache(decoded, kv_heads)
    sizes, start = [], time.perf_counter()
    for pos in range(context, context + len(ref) - 1):
        sizes.append(
            sum(
                len(split_runner.encode(codec, kv_rows(cache, pos, pos + 1), params[name]))
                for name, cache in run["cache"].items()
            )
        )
    encode_us = (time.perf_counter() - start) * 1e6 / max(len(sizes), 1)
    cloud = Stepper(path, run["head_size"])
    cloud.past = cloud_cache
    preds = [int(np.argmax(cloud.step(np.array([[token]], np.int64))[0, -1])) for token in ref[:-1]]
    agree = float(np.mean(np.asarray(preds) == np.asarray(ref[1:])))
    return Row("kv (all layers)", codec, statistics.mean(sizes), handover, agree, encode_us)


def transfer_ms(size: float, profile: Any) -> float:
    """The model: the payload's bits at the link's rate plus one round trip."""
    return float(size * 8 / profile.bits_per_second * 1e3 + profile.rtt_ms)


def print_tables(rows: list[Row], context: int, links: dict[str, Any]) -> None:
    ids = next(r for r in rows if r.design == "ids")
    print(f"\n| design | codec | B/token | × ids | B/{context}-token handover | × ids "
          "| top-1 agreement | encode µs/token |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r.design} | {r.codec} | {r.per_token:,.1f} | {r.per_token / ids.per_token:,.1f} "
            f"| {r.handover:,} | {r.handover / ids.handover:,.1f} "
            f"| {100 * r.agreement:.1f} % | {r.encode_us:,.0f} |"
        )
    names = list(links)
    print(
        "\nModelled transfer (bytes·8/rate + RTT; "
        + "; ".join(f"{n} {links[n].bandwidth}, RTT {links[n].rtt_ms:g} ms" for n in names)
        + "):\n"
    )
    head = " | ".join(f"ms/token {n}" for n in names)
    hand = " | ".join(f"handover ms {n}" for n in names)
    print(f"| design | codec | {head} | {hand} |")
    print("| --- | --- |" + " ---: |" * (2 * len(names)))
    for r in rows:
        per = " | ".join(f"{transfer_ms(r.per_token, links[n]):,.1f}" for n in names)
        over = " | ".join(f"{transfer_ms(r.handover, links[n]):,.0f}" for n in names)
        print(f"| {r.design} | {r.codec} | {per} | {over} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens (default 128)")
    parser.add_argument("--context", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--codecs", default=",".join(CODECS))
    args = parser.parse_args(argv)
    codecs = args.codecs.split(",")

    from edgetool.export.build import export
    from edgetool.split.link import load_link
    from edgetool.split.llm import decoder_shape
    from edgetool.zoo import llm
    from edgetool.zoo.recipe import load_recipe

    with scratch():
        artifact = export("tiny-llama", "onnx", "fp32")
        path = artifact.path
        recipe = load_recipe("tiny-llama")
        prompt = llm.encode(llm.hf_dir(recipe), llm.heldout_text(recipe.dir))[: args.context]
        shape = decoder_shape(path)
        run = reference(path, shape.head_size, prompt, args.tokens)
        run["head_size"] = shape.head_size
        ref = run["tokens"]
        rows = [Row("ids", "uint16", ID_BYTES, ID_BYTES * len(prompt), 1.0)]
        scale: dict[str, Any] = {
            "prefill_ms": run["prefill_ms"],
            "step_ms": run["step_ms"],
            "head_step_ms": {},
        }
        for layer in range(1, shape.layers):
            data = hidden_rows(path, layer, shape.head_size, prompt, ref)
            scale["head_step_ms"][layer] = data["head_step_ms"]
            rows += [hidden_design(layer, data, ref, shape.head_size, c) for c in codecs]
        rows += [kv_design(path, run, len(prompt), shape.kv_heads, c) for c in codecs]
    links = {name: load_link(name) for name in LINKS}
    print(
        f"tiny-llama fp32 ({shape.layers} layers, hidden {shape.hidden}, {shape.kv_heads} KV "
        f"heads x {shape.head_size}), {len(prompt)}-token prompt, {args.tokens} new tokens, "
        f"onnxruntime 1 thread: prefill {run['prefill_ms']:.2f} ms, decode step "
        f"{run['step_ms']:.3f} ms (median); head step to layer k: "
        + ", ".join(f"k={k} {ms:.3f} ms" for k, ms in scale["head_step_ms"].items())
    )
    print(
        f"raw sizes from the model: hidden row {shape.hidden_bytes()} B, new K/V rows "
        f"{shape.kv_bytes()} B per token ({shape.kv_bytes(1)} B per layer)"
    )
    print_tables(rows, len(prompt), links)
    kv_raw = next(r for r in rows if r.design.startswith("kv") and r.codec == "fp32")
    Result(
        "llm split: kv handover bytes / ids handover",
        kv_raw.handover / rows[0].handover,
        "measured (no goal)",
        True,
        {"scale": scale, "rows": [r.__dict__ for r in rows]},
    ).emit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
