"""LLMs: Hugging Face directories (made here with random weights, offline), ONNX export
with a KV cache in four precisions, and the runner's greedy generation against
transformers' own `generate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime_genai")

from edgetool.errors import ModelError  # noqa: E402
from edgetool.runner import RUNNER_PATH  # noqa: E402
from edgetool.zoo import llm  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer LLaMA with a BPE tokenizer, saved the way the Hub ships models."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("hf") / "tiny"
    text = "\n".join(p.read_text() for p in llm.stdlib_files()[:3])
    tokenizer = llm._train_tokenizer(text, 300)
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>").save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def exported(hf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    for quant in llm.LLM_QUANTS:
        paths[quant] = out / f"{quant}.onnx"
        llm.build_onnx_file(hf_model, quant, paths[quant], block_size=16)
    return paths


def test_geometry_and_checks(hf_model: Path, tmp_path: Path) -> None:
    assert llm.geometry(hf_model) == {
        "layers": 2, "kv_heads": 2, "head_size": 16, "context_length": 256, "vocab_size": 300,
    }  # fmt: skip
    with pytest.raises(ModelError, match=r"no config\.json"):
        llm.check_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelError, match="no weights"):
        llm.check_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable config"):
        llm.check_hf_dir(tmp_path)


def test_exports_are_single_files_with_the_expected_kernels(exported: dict[str, Path]) -> None:
    onnx = pytest.importorskip("onnx")
    ops = {q: {n.op_type for n in onnx.load(str(p)).graph.node} for q, p in exported.items()}
    assert not list(exported["fp32"].parent.glob("*.data"))  # weights inlined
    assert "MatMulNBits" not in ops["fp32"] and "MatMulInteger" in ops["int8"]
    attrs: dict[str, Any] = {}
    for quant in ("int4", "w4a8"):
        node = next(
            n for n in onnx.load(str(exported[quant])).graph.node if n.op_type == "MatMulNBits"
        )
        attrs[quant] = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["int4"]["bits"] == attrs["w4a8"]["bits"] == 4
    assert attrs["int4"]["block_size"] == 16
    assert (attrs["int4"]["accuracy_level"], attrs["w4a8"]["accuracy_level"]) == (1, 4)
    sizes = {q: p.stat().st_size for q, p in exported.items()}
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]


def test_onnx_logits_match_transformers(hf_model: Path, exported: dict[str, Path]) -> None:
    model = llm.load_model(hf_model)
    ids = llm.encode(hf_model, "def main():\n    return 0\n" * 4)[None, :40]
    want = llm.torch_logits(model)(ids)
    head = llm.geometry(hf_model)["head_size"]
    got = llm.onnx_logits(exported["fp32"], head)(ids)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-3)
    for quant in ("int8", "int4", "w4a8"):
        quantized = llm.onnx_logits(exported[quant], head)(ids)
        assert np.mean(quantized.argmax(-1) == want.argmax(-1)) >= 0.8, quant


def _runner_generate(model: Path, prompt: Path, tokens: int, head: int) -> list[dict[str, Any]]:
    argv = [
        sys.executable, str(RUNNER_PATH), "generate", "--model", str(model),
        "--prompt-ids", str(prompt), "--tokens", str(tokens), "--head-size", str(head),
        "--repeat", "2", "--threads", "1",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_runner_greedy_generation_matches_transformers(
    hf_model: Path, exported: dict[str, Path], tmp_path: Path
) -> None:
    ids = llm.encode(hf_model, "import os\nimport sys\n\ndef")[:12]
    np.save(tmp_path / "prompt.npy", ids)
    head = llm.geometry(hf_model)["head_size"]
    events = _runner_generate(exported["fp32"], tmp_path / "prompt.npy", 20, head)
    gens = [e for e in events if e["event"] == "generation"]
    samples = [e for e in events if e["event"] == "sample"]
    summary = next(e for e in events if e["event"] == "summary")
    assert len(gens) == 2 and all(g["new_tokens"] == 20 for g in gens)
    assert gens[0]["tokens"] == gens[1]["tokens"]  # greedy is deterministic
    assert sum(len(s["ns"]) for s in samples) == summary["count"] == 2 * 19
    assert all(g["ttft_ns"] > 0 and g["decode_ns"] > 0 for g in gens)
    model = llm.load_model(hf_model)
    with torch.no_grad():
        want = model.generate(
            torch.from_numpy(ids[None, :]), max_new_tokens=20, do_sample=False,
            min_new_tokens=20, pad_token_id=0,
        )[0, len(ids):].tolist()  # fmt: skip
    assert gens[0]["tokens"] == want


def test_runner_generate_rejects_a_model_without_kv_cache(tmp_path: Path) -> None:
    from tests.conftest import TINY_ONNX

    np.save(tmp_path / "prompt.npy", np.arange(4))
    events = [
        e
        for e in (
            json.loads(line)
            for line in subprocess.run(
                [sys.executable, str(RUNNER_PATH), "generate", "--model", str(TINY_ONNX),
                 "--prompt-ids", str(tmp_path / "prompt.npy"), "--head-size", "8"],
                capture_output=True, text=True, check=False,
            ).stdout.splitlines()
        )
        if e["event"] == "error"
    ]  # fmt: skip
    assert events and events[0]["kind"] == "bad_model" and "KV-cache" in events[0]["message"]


def test_cli_exports_verifies_and_deploys_a_user_hf_directory(
    cli: Any, home: Path, hf_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's path for their own model: export llm --hf-dir, verify, deploy."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exported = cli("export", "llm", "--hf-dir", str(hf_model), "--quant", "fp32", "--json")
    assert exported.code == 0, exported.stderr
    manifest = exported.json()["manifest"]
    assert manifest["family"] == "llm" and manifest["quant"] == "fp32"
    assert manifest["model"].startswith("hf-tiny-")
    path = exported.json()["path"]
    again = cli("export", "llm", "--hf-dir", str(hf_model), "--quant", "fp32", "--json")
    assert again.json()["path"] == path  # cached by content
    checked = cli("verify", path, "--samples", "4", "--json")
    assert checked.code == 0, checked.stderr
    report = checked.json()
    assert report["agreement"]["top1_agreement"] == 1.0
    assert "perplexity" in report["metric_artifact"]
    deployed = cli("deploy", "-m", path, "--prompt", "import os\n", "--tokens", "6", "-n", "2",
                   "--json")  # fmt: skip
    assert deployed.code == 0, deployed.stderr
    data = deployed.json()
    assert data["summary"]["generation"]["new_tokens"] == 6
    assert isinstance(data["generated_text"], str)


def test_cli_llm_export_errors(cli: Any, home: Path, tmp_path: Path) -> None:
    from tests.conftest import assert_one_line_error

    assert_one_line_error(cli("export", "llm", "--hf-dir", str(tmp_path)), 3, "no config.json")
    missing = cli("export", "llm")
    assert missing.code == 2 and "--hf-dir" in missing.stderr
    assert_one_line_error(cli("export", "tiny-llama", "--format", "tflite"), 3, "exports as onnx")
