"""Small LLMs for the edge: a tiny LLaMA trained here, or any Hugging Face LLaMA-family
model directory the user supplies, exported to ONNX with a KV cache in four precisions.

Export goes through onnxruntime-genai's model builder (it writes the fused attention
graph, KV cache inputs/outputs and MatMulNBits quantization that onnxruntime's CPU
kernels are tuned for) rather than an exporter of our own:

* ``fp32``  — the builder's float graph.
* ``int8``  — onnxruntime's dynamic quantization of that graph (MatMulInteger: int8
  weights, activations quantized per call).
* ``int4``  — 4-bit block-wise weights (MatMulNBits, ``block_size``), fp32 compute.
* ``w4a8``  — the same 4-bit weights with int8 activations (MatMulNBits accuracy level 4),
  the Agile-Quant style W4A8.

The artifact is one self-contained ``.onnx`` file (external data inlined), so it moves to
a device like every other model. Tokenization stays on the host.

The training corpus is the Python standard library's own source (every machine has it);
quality is measured on ``heldout.txt`` in the recipe folder, a text never trained on.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetool.errors import ConfigError, ModelError
from edgetool.zoo.family import ProgressFn, Samples, register
from edgetool.zoo.recipe import Recipe

LLM_QUANTS = ("fp32", "int8", "int4", "w4a8")
DEFAULT_PROMPT = "def main(argv=None):\n    "
HELDOUT = "heldout.txt"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
_ARCH_KEYS = {
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
}  # fmt: skip


# --- data -----------------------------------------------------------------------------


def stdlib_files(exclude: Sequence[str] = ()) -> list[Path]:
    """The standard library's top-level modules, sorted: the offline training corpus."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = set(exclude)
    return [Path(p) for p in sorted(glob.glob(str(root / "*.py"))) if Path(p).name not in skip]


def corpus_text(recipe: Recipe) -> str:
    exclude = [str(name) for name in recipe.data.get("exclude", [])]
    limit = int(recipe.data.get("max_files", 0))
    files = stdlib_files(exclude)
    if limit:
        files = files[:limit]
    if not files:
        raise ModelError("no standard library sources found for the training corpus")
    return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def heldout_text(model_dir: Path) -> str:
    path = model_dir / HELDOUT
    if not path.is_file():
        raise ModelError(f"{path} missing: the held-out text quality is measured on")
    return path.read_text(encoding="utf-8")


# --- model directory (Hugging Face layout) ----------------------------------------------


def hf_dir(recipe: Recipe, weights_dir: Path | None = None) -> Path:
    """The model's Hugging Face directory: the recipe's `weights` (or an --hf-dir)."""
    return Path(weights_dir or recipe.dir) / recipe.weights


def check_hf_dir(path: Path) -> None:
    """Fail early, in one line, on a directory that is not a usable HF LLaMA checkpoint."""
    if not path.is_dir():
        raise ModelError(f"{path} is not a directory (expected a Hugging Face model directory)")
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path}: no config.json (not a Hugging Face model directory)")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config}: unreadable config ({exc})") from exc
    if not list(path.glob("*.safetensors")) and not list(path.glob("*.bin")):
        raise ModelError(f"{path}: no weights (*.safetensors or *.bin)")
    if not (path / "tokenizer.json").is_file():
        raise ModelError(f"{path}: no tokenizer.json (a fast tokenizer is needed)")
    kind = str(data.get("model_type", ""))
    if kind not in ("llama", "mistral", "qwen2", "phi3", "gemma"):
        raise ModelError(f"{path}: model_type '{kind}' is not a supported decoder (llama, ...)")


def geometry(path: Path) -> dict[str, int]:
    """What a KV-cache decoder's caller must know: layers, KV heads, head size, context."""
    check_hf_dir(path)
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    heads = int(cfg["num_attention_heads"])
    return {
        "layers": int(cfg["num_hidden_layers"]),
        "kv_heads": int(cfg.get("num_key_value_heads") or heads),
        "head_size": int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        "context_length": int(cfg.get("max_position_embeddings", 2048)),
        "vocab_size": int(cfg["vocab_size"]),
    }


def artifact_model_dir(manifest: dict[str, Any]) -> Path:
    """The HF directory an exported LLM came from (its tokenizer and geometry)."""
    from edgetool.zoo.recipe import recipe_of

    if manifest.get("family") == "llm" and manifest.get("model"):
        return hf_dir(recipe_of(manifest))
    raise ModelError("not an LLM artifact made by `edgetool export` (no model directory)")


def prompt_file(manifest: dict[str, Any], text: str) -> tuple[Path, int, int]:
    """(.npy of the prompt's token ids, prompt length, head size) for the runner.

    The file lives in the cache under its content hash, so the same prompt is not sent
    to the device twice.
    """
    from edgetool import paths

    model_dir = artifact_model_dir(manifest)
    ids = encode(model_dir, text)
    if ids.size == 0:
        raise ModelError("the prompt encodes to no tokens")
    geo = geometry(model_dir)
    digest = hashlib.sha256(ids.tobytes()).hexdigest()[:16]
    path = paths.cache_dir() / "prompts" / f"prompt-{digest}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        staged = path.with_suffix(".part.npy")
        np.save(staged, ids)
        staged.replace(path)
    return path, int(ids.size), geo["head_size"]


def decode(manifest: dict[str, Any], ids: Sequence[int]) -> str:
    return str(load_tokenizer(artifact_model_dir(manifest)).decode(list(ids)))


def hf_recipe(source: Path) -> Recipe:
    """A recipe for a user's Hugging Face directory, so its exports are cached, verified
    and deployed like a zoo model's. It lives in the cache; its `weights-hf` is a symlink
    to the user's directory (hashed file by file, so a changed model re-exports), and it
    is verified on tiny-llama's held-out text."""
    from edgetool import paths
    from edgetool.zoo.recipe import parse_recipe

    source = source.expanduser().resolve()
    check_hf_dir(source)
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in source.name)[:40]
    name = f"hf-{safe}-{hashlib.sha256(str(source).encode()).hexdigest()[:8]}"
    folder = paths.cache_dir() / "hf-models" / name
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "weights-hf"
    if link.is_symlink() and Path(os.readlink(link)) != source:
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(source, target_is_directory=True)
    held = paths.models_dir() / "tiny-llama" / HELDOUT
    if held.is_file():
        shutil.copyfile(held, folder / HELDOUT)
    else:
        (folder / HELDOUT).write_text(
            "\n\n".join(p.read_text(encoding="utf-8") for p in stdlib_files()[:2]), encoding="utf-8"
        )
    text = (
        f'family = "llm"\ndescription = "Hugging Face model directory {source}"\n'
        'weights = "weights-hf"\n'
        'inputs = [{ name = "input_ids", shape = [1, 128], dtype = "int64" }]\n'
        'outputs = ["logits"]\n\n[export]\nformat = "onnx"\nquant = "fp32"\n'
        "block_size = 32\n"
    )
    recipe_file = folder / "recipe.toml"
    if not recipe_file.is_file() or recipe_file.read_text() != text:
        recipe_file.write_text(text, encoding="utf-8")
    return parse_recipe(recipe_file)


def load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ModelError(f"{path / 'tokenizer.json'}: not a tokenizer ({exc})") from exc


def encode(path: Path, text: str) -> np.ndarray:
    return np.asarray(load_tokenizer(path).encode(text).ids, dtype=np.int64)


def _train_tokenizer(text: str, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    return tok


def _llama_config(recipe: Recipe) -> Any:
    from transformers import LlamaConfig

    unknown = sorted(set(recipe.arch) - _ARCH_KEYS)
    if unknown:
        raise ConfigError(f"{recipe.name}: unknown arch key '{unknown[0]}'")
    arch: dict[str, Any] = {k: int(v) for k, v in recipe.arch.items()}
    return LlamaConfig(
        **arch, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, rms_norm_eps=1e-5
    )


def _quiet_imports() -> None:
    """transformers pulls in torchao, whose import logs warnings about optional kernels
    (CUDA, Triton) that a CPU machine never has: not the user's business."""
    import logging

    for name in ("torchao", "torch.utils._pytree", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_model(path: Path) -> Any:
    """The fp32 PyTorch reference (transformers), offline, in eval mode."""
    check_hf_dir(path)
    _quiet_imports()
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype="float32"
        )
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load the model: {first}") from exc
    return model.eval()


# --- training ---------------------------------------------------------------------------


def train_tiny(recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
    """Next-token cross-entropy on random windows of the stdlib corpus (seeded)."""
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    cfg = recipe.train
    seed, steps = int(cfg.get("seed", 0)), int(cfg.get("steps", 1000))
    seq, batch = int(cfg.get("seq_len", 128)), int(cfg.get("batch_size", 16))
    started = time.perf_counter()
    text = corpus_text(recipe)
    config = _llama_config(recipe)
    tokenizer = _train_tokenizer(text, config.vocab_size)
    tokens = torch.tensor(tokenizer.encode(text).ids, dtype=torch.long)
    threads = torch.get_num_threads()
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    try:
        model = LlamaForCausalLM(config)
        opt = torch.optim.AdamW(
            model.parameters(), lr=float(cfg.get("lr", 3e-3)), weight_decay=0.01
        )
        warm = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: (
                min(1.0, (s + 1) / warm)
                * 0.5
                * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
            ),
        )
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for step in range(1, steps + 1):
            starts = torch.randint(0, len(tokens) - seq - 1, (batch,), generator=gen)
            chunk = torch.stack([tokens[s : s + seq + 1] for s in starts.tolist()])
            loss = model(input_ids=chunk[:, :-1], labels=chunk[:, :-1].clone()).loss
            # transformers shifts labels itself: labels == inputs is next-token prediction
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 10 == 0 or step == steps:
                progress(step, steps, f"step {step} loss {float(loss.detach()):.3f}")
        model.eval()
    finally:
        torch.set_num_threads(threads)
    target = out_dir / recipe.weights
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(str(target), safe_serialization=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(str(target))
    metrics: dict[str, Any] = {
        "model": recipe.name,
        "seed": seed,
        "steps": steps,
        "corpus": f"Python {sys.version.split()[0]} standard library sources",
        "corpus_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "corpus_tokens": len(tokens),
        "params": int(sum(p.numel() for p in model.parameters())),
        "final_train_loss": round(float(loss.detach()), 4),
    }
    held = encode(target, heldout_text(recipe.dir))
    metrics["heldout_tokens"] = len(held)
    metrics["heldout_perplexity"] = torch_perplexity(model, held, seq)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def windows(tokens: np.ndarray, length: int) -> list[np.ndarray]:
    """Non-overlapping windows of `length` tokens (the last one may be shorter)."""
    return [
        tokens[i : i + length] for i in range(0, len(tokens) - 1, length) if i + 2 <= len(tokens)
    ]


def perplexity(
    logits_fn: Callable[[np.ndarray], np.ndarray], tokens: np.ndarray, length: int
) -> float:
    """exp(mean next-token NLL) over non-overlapping windows (each starts fresh)."""
    nll, count = 0.0, 0
    for win in windows(tokens, length):
        logits = logits_fn(win[None, :]).astype(np.float64)[0]
        top = logits.max(axis=-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
        nll -= float(logp[np.arange(len(win) - 1), win[1:]].sum())
        count += len(win) - 1
    return float(math.exp(nll / max(count, 1)))


def torch_logits(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(model(input_ids=torch.from_numpy(ids)).logits.numpy())

    return run


def torch_perplexity(model: Any, tokens: np.ndarray, length: int) -> float:
    return round(perplexity(torch_logits(model), tokens, length), 4)


# --- export (onnxruntime-genai model builder) --------------------------------------------


def build_onnx_file(
    source: Path,
    quant: str,
    out: Path,
    block_size: int = 32,
    builder_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ONNX with KV cache for `source` (an HF directory) in `quant`, as one file.

    `builder_options` go to the model builder's 4-bit quantizer as its extra options
    (e.g. ``matmul_mixed_precision = "last_matmul:int8"`` keeps the LM head in int8).
    """
    check_hf_dir(source)
    if quant not in LLM_QUANTS:
        raise ModelError(f"LLM quantization '{quant}' unknown (expected {', '.join(LLM_QUANTS)})")
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgetool-genai-") as tmp:
        built = Path(tmp) / "built"
        precision = {"fp32": "fp32", "int8": "fp32", "int4": "int4", "w4a8": "int4"}[quant]
        argv = [
            sys.executable, "-m", "onnxruntime_genai.models.builder",
            "-i", str(source), "-o", str(built), "-p", precision, "-e", "cpu",
            "-c", str(Path(tmp) / "cache"),
        ]  # fmt: skip
        if precision == "int4":
            level = 4 if quant == "w4a8" else 1
            extra = {"accuracy_level": level, "block_size": block_size, **(builder_options or {})}
            argv += ["--extra_options", *(f"{k}={v}" for k, v in extra.items())]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0 or not (built / "model.onnx").is_file():
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise ModelError(
                f"onnxruntime-genai's model builder failed on {source}: "
                f"{lines[-1] if lines else 'no output'}"
            )
        model = onnx.load(str(built / "model.onnx"))  # pulls in model.onnx.data
        single = Path(tmp) / "single.onnx"
        onnx.save(model, str(single), save_as_external_data=False)
        details: dict[str, Any] = {"builder": "onnxruntime-genai model builder"}
        if quant == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(single), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
            )
            details["quantization"] = "onnxruntime dynamic int8 (MatMulInteger)"
        else:
            shutil.move(str(single), out)
            details["quantization"] = {
                "fp32": "none",
                "int4": f"4-bit weights, block {block_size}, fp32 compute (MatMulNBits)",
                "w4a8": (
                    f"4-bit weights, block {block_size}, int8 activations (MatMulNBits level 4)"
                ),
            }[quant]
        genai = json.loads((built / "genai_config.json").read_text())["model"]
    details["llm"] = {
        "layers": genai["decoder"]["num_hidden_layers"],
        "kv_heads": genai["decoder"]["num_key_value_heads"],
        "head_size": genai["decoder"]["head_size"],
        "context_length": genai["context_length"],
        "vocab_size": genai["vocab_size"],
        "bos_token_id": genai.get("bos_token_id"),
        "eos_token_id": genai.get("eos_token_id"),
    }
    return details


def onnx_logits(path: Path, head_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """Full-sequence logits from an exported LLM (empty KV cache): for perplexity."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]

    def run(ids: np.ndarray) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {
            "input_ids": ids.astype(np.int64),
            "attention_mask": np.ones_like(ids, dtype=np.int64),
        }
        for inp in pasts:
            feeds[inp.name] = np.zeros((ids.shape[0], inp.shape[1], 0, head_size), np.float32)
        return np.asarray(sess.run(["logits"], feeds)[0])

    return run


# --- the family ---------------------------------------------------------------------------


@register
class LLMFamily:
    """Decoder-only LLMs (LLaMA family): tiny-llama trained here, or an HF directory."""

    name = "llm"
    task = "language_modeling"
    formats = ("onnx",)
    quants = LLM_QUANTS
    reference_label = "transformers fp32 model"

    def train(self, recipe: Recipe, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        return train_tiny(recipe, out_dir, progress)

    def reference(self, recipe: Recipe, weights_dir: Path) -> Any:
        return load_model(hf_dir(recipe, weights_dir))

    def samples(self, recipe: Recipe, split: str, count: int) -> Samples:
        """Token windows of the held-out text (test) or of the corpus (calibration)."""
        length = int(recipe.inputs[0].shape[-1]) if recipe.inputs else 64
        text = heldout_text(recipe.dir) if split == "test" else corpus_text(recipe)[:200_000]
        ids = encode(hf_dir(recipe), text)
        wins = [w for w in windows(ids, length) if len(w) == length]
        if count > 0:
            wins = wins[:count]
        batch = np.stack(wins) if wins else np.zeros((0, length), dtype=np.int64)
        return Samples({"input_ids": batch}, batch.copy())

    def task_metric(self, outputs: np.ndarray, samples: Samples) -> dict[str, float]:
        """Perplexity of the logits `outputs` [N, T, V] on the windows themselves."""
        targets = samples.targets
        logits = np.asarray(outputs, dtype=np.float64).reshape(*targets.shape, -1)
        top = logits.max(axis=-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
        rows, cols = np.indices(targets[:, 1:].shape)
        nll = -logp[:, :-1][rows, cols, targets[:, 1:]].mean()
        return {"perplexity": float(np.exp(nll))}

    def reference_fn(
        self, recipe: Recipe, weights_dir: Path, quant: str
    ) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """Logits of the fp32 transformers model for every position."""
        logits = torch_logits(self.reference(recipe, weights_dir))
        return lambda inputs: logits(inputs["input_ids"]).astype(np.float64)

    def artifact_runner(self, artifact: Any) -> Callable[[list[np.ndarray]], np.ndarray]:
        """An exported decoder run on whole windows with an empty KV cache."""
        head_size = geometry(artifact_model_dir(artifact.manifest))["head_size"]
        logits = onnx_logits(artifact.path, head_size)
        return lambda feeds: logits(feeds[0]).astype(np.float64)

    def build_onnx(self, recipe: Recipe, weights_dir: Path, quant: str, opset: int) -> bytes | None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model.onnx"
            block = int(recipe.export.get("block_size", 32))
            options = recipe.export.get("builder", {})
            if not isinstance(options, dict):
                raise ConfigError(f"{recipe.name}: [export.builder] must be a table")
            build_onnx_file(hf_dir(recipe, weights_dir), quant, out, block, options)
            return out.read_bytes()
