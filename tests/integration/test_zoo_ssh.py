"""Zoo models deployed by name over a real SSH device (the loopback sshd)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_l2mu_by_name_over_ssh_returns_the_reference_spike_counts(
    loopback: dict[str, Any], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("snntorch")
    from edgetool.zoo.family import get_family
    from edgetool.zoo.recipe import load_recipe

    recipe = load_recipe("l2mu-mcu")
    family = get_family("l2mu")
    samples = family.samples(recipe, "test", 1)
    window = samples.inputs["window"]
    np.save(tmp_path / "window.npy", window)
    result = run_cli(
        "deploy", "-t", "loopback", "-m", "l2mu-mcu", "-n", "30", "-r", "2",
        "--input", str(tmp_path / "window.npy"), "--save-outputs", "--json",
        timeout=300,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["manifest"]["artifact"]["model"] == "l2mu-mcu"
    assert data["summary"]["latency"]["count"] == 60  # two repetitions of 30
    # --save-outputs keeps the first repetition's first inference only.
    counts = np.load(Path(data["run_dir"]) / "outputs.npz")["spike_counts"]
    with torch.no_grad():
        expected = family.reference(recipe, recipe.dir)(torch.from_numpy(window)).numpy()
    assert counts.shape == (1, 7)
    np.testing.assert_array_equal(counts, expected)


def test_tiny_llama_generates_over_ssh_like_transformers(loopback: dict[str, Any]) -> None:
    """`deploy --prompt --tokens` over SSH: greedy tokens equal transformers' own."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime_genai")
    from edgetool.zoo import llm
    from edgetool.zoo.recipe import load_recipe

    prompt = "import os\nimport sys\n\n\ndef "
    result = run_cli(
        "deploy", "-t", "loopback", "-m", "tiny-llama:onnx:fp32", "--prompt", prompt,
        "--tokens", "12", "-n", "2", "--json", timeout=300,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = result.json()
    gen = data["summary"]["generation"]
    assert (gen["generations"], gen["new_tokens"]) == (2, 12)
    assert gen["decode_tokens_per_s"] > 0 and gen["ttft_ms"] > 0
    assert data["summary"]["latency"]["count"] == 2 * 11  # decode steps
    tokens = [g["tokens"] for g in data["manifest"]["generations"]]
    assert tokens[0] == tokens[1]
    model_dir = llm.hf_dir(load_recipe("tiny-llama"))
    ids = llm.encode(model_dir, prompt)
    with torch.no_grad():
        want = llm.load_model(model_dir).generate(
            torch.from_numpy(ids[None, :]), max_new_tokens=12, min_new_tokens=12,
            do_sample=False, pad_token_id=0,
        )[0, len(ids):].tolist()  # fmt: skip
    assert tokens[0] == want
    assert data["generated_text"] == llm.load_tokenizer(model_dir).decode(want)


def test_llm_options_are_refused_for_other_models(loopback: dict[str, Any]) -> None:
    result = run_cli("deploy", "-t", "loopback", "-m", "tiny-mlp", "--prompt", "hi")
    assert result.code == 2 and "LLM models only" in result.stderr
