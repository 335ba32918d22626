"""A KV-cache decoder cut between layers (edgetool/split/llm.py): head + tail compute what
the whole decoder computes, step after step, each half keeping its own layers' cache.

The fast tests use a 3-layer decoder built here from the ops onnxruntime-genai's model
builder writes (GroupQueryAttention with rotary and a KV cache, SkipSimplifiedLayerNormalization
fusing each residual add); the slow one cuts the zoo's tiny-llama export itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgetool.errors import ModelError, UsageError  # noqa: E402
from edgetool.runner import split_runner  # noqa: E402
from edgetool.split import llm as split_llm  # noqa: E402

VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_SIZE, LAYERS, CONTEXT = 20, 32, 2, 1, 16, 3, 64
"""GroupQueryAttention on the CPU needs a head size that is a multiple of 16."""
FLOAT = TensorProto.FLOAT


def tiny_decoder() -> onnx.ModelProto:
    """Embedding, LAYERS x (norm, fused QKV, GQA, o-proj, skip-norm, MLP), skip-norm, head:
    the builder's layout, named the way its past/present inputs and outputs are."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, *shape: int, scale: float = 0.4) -> str:
        data = rng.normal(0, scale, shape) if len(shape) > 1 else 1 + rng.normal(0, 0.1, shape)
        inits.append(numpy_helper.from_array(data.astype(np.float32), name))
        return name

    angles = np.outer(np.arange(CONTEXT), 1.0 / 10000 ** (np.arange(0, HEAD_SIZE, 2) / HEAD_SIZE))
    inits += [
        numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos_cache"),
        numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin_cache"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array(1, np.int64), "one_scalar"),
    ]
    nodes += [
        helper.make_node("ReduceSum", ["attention_mask", "one"], ["mask_sum"]),
        helper.make_node("Sub", ["mask_sum", "one"], ["seqlens64"]),
        helper.make_node("Cast", ["seqlens64"], ["seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
        helper.make_node("Gather", ["mask_shape", "one_scalar"], ["total64"]),
        helper.make_node("Cast", ["total64"], ["total_len"], to=TensorProto.INT32),
        helper.make_node("Gather", [weight("embed", VOCAB, HIDDEN), "input_ids"], ["x0"]),
        helper.make_node("SimplifiedLayerNormalization", ["x0", weight("norm0", HIDDEN)],
                         ["n0"], axis=-1, epsilon=1e-5, stash_type=1),
    ]  # fmt: skip
    residual, update = "x0", ""
    qkv = (HEADS + 2 * KV_HEADS) * HEAD_SIZE
    for i in range(LAYERS):
        if i:
            nodes.append(
                helper.make_node("SkipSimplifiedLayerNormalization",
                                 [residual, update, weight(f"norm{i}", HIDDEN)],
                                 [f"n{i}", "", "", f"r{i}"], domain="com.microsoft", epsilon=1e-5)
            )  # fmt: skip
            residual = f"r{i}"
        nodes += [
            helper.make_node("MatMul", [f"n{i}", weight(f"qkv{i}", HIDDEN, qkv)], [f"qkv{i}o"]),
            helper.make_node("GroupQueryAttention",
                             [f"qkv{i}o", "", "", f"past_key_values.{i}.key",
                              f"past_key_values.{i}.value", "seqlens_k", "total_len",
                              "cos_cache", "sin_cache"],
                             [f"att{i}", f"present.{i}.key", f"present.{i}.value"],
                             domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS,
                             do_rotary=1),
            helper.make_node("MatMul", [f"att{i}", weight(f"o{i}", HIDDEN, HIDDEN)], [f"o{i}o"]),
            helper.make_node("SkipSimplifiedLayerNormalization",
                             [residual, f"o{i}o", weight(f"post{i}", HIDDEN)],
                             [f"p{i}", "", "", f"s{i}"], domain="com.microsoft", epsilon=1e-5),
            helper.make_node("MatMul", [f"p{i}", weight(f"mlp{i}", HIDDEN, HIDDEN)], [f"m{i}"]),
        ]  # fmt: skip
        residual, update = f"s{i}", f"m{i}"
    nodes += [
        helper.make_node("SkipSimplifiedLayerNormalization",
                         [residual, update, weight("final", HIDDEN)], ["final_n"],
                         domain="com.microsoft", epsilon=1e-5),
        helper.make_node("MatMul", ["final_n", weight("lm_head", HIDDEN, VOCAB)], ["logits"]),
    ]  # fmt: skip
    cache = ["batch_size", KV_HEADS, "past_sequence_length", HEAD_SIZE]
    present = ["batch_size", KV_HEADS, "total_sequence_length", HEAD_SIZE]
    kv = [f"{i}.{part}" for part in ("key", "value") for i in range(LAYERS)]
    graph = helper.make_graph(
        nodes, "tiny-decoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                       ["batch_size", "total_sequence_length"]),
         *(helper.make_tensor_value_info(f"past_key_values.{n}", FLOAT, cache) for n in kv)],
        [helper.make_tensor_value_info("logits", FLOAT,
                                       ["batch_size", "seq", VOCAB]),
         *(helper.make_tensor_value_info(f"present.{n}", FLOAT, present) for n in kv)],
        inits,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 10
    return model


@pytest.fixture(scope="module")
def decoder() -> onnx.ModelProto:
    return tiny_decoder()


def _run_whole(
    model: onnx.ModelProto, prompt: np.ndarray, tokens: list[int], head_size: int = HEAD_SIZE
) -> list[np.ndarray]:
    whole = split_llm.Stepper(model, head_size)
    logits = [whole.step(prompt[None])]
    logits += [whole.step(np.array([[t]], np.int64)) for t in tokens]
    return logits


def test_shape_of_the_decoder(decoder: onnx.ModelProto) -> None:
    shape = split_llm.decoder_shape(decoder)
    assert shape == split_llm.DecoderShape(LAYERS, KV_HEADS, HEAD_SIZE, HIDDEN)
    assert shape.hidden_bytes() == HIDDEN * 4 and shape.hidden_bytes(2) == HIDDEN * 2
    assert shape.kv_bytes() == 2 * LAYERS * KV_HEADS * HEAD_SIZE * 4
    assert shape.kv_bytes(layers=1, itemsize=1) == 2 * KV_HEADS * HEAD_SIZE


@pytest.mark.parametrize("layer", range(1, LAYERS))
def test_head_and_tail_step_like_the_whole_decoder(decoder: onnx.ModelProto, layer: int) -> None:
    prompt, tokens = np.array([3, 1, 4, 1, 5, 9, 2], np.int64), [6, 5, 3]
    expected = _run_whole(decoder, prompt, tokens)
    head_proto, tail_proto = split_llm.split_at_layer(decoder, layer)
    head = split_llm.Stepper(head_proto, HEAD_SIZE)
    tail = split_llm.Stepper(tail_proto, HEAD_SIZE)
    assert head.feed_name == "input_ids" and tail.feed_name == split_llm.HIDDEN
    assert sorted(head.past) == sorted(
        f"past_key_values.{i}.{kv}" for i in range(layer) for kv in ("key", "value")
    )
    assert sorted(tail.past) == sorted(
        f"past_key_values.{i}.{kv}" for i in range(layer, LAYERS) for kv in ("key", "value")
    )
    feeds = [prompt[None], *(np.array([[t]], np.int64) for t in tokens)]
    for feed, want in zip(feeds, expected, strict=True):
        hidden = head.step(feed)
        assert hidden.shape == (1, feed.shape[1], HIDDEN) and hidden.dtype == np.float32
        np.testing.assert_allclose(tail.step(hidden), want, atol=1e-5)
    assert head.length == tail.length == len(prompt) + len(tokens)
    # the tail really reads the crossing tensor: another hidden state, other logits
    assert not np.allclose(tail.step(hidden * 0.5), tail.step(hidden), atol=1e-3)


def test_a_cloud_takes_over_with_the_handed_over_cache(decoder: onnx.ModelProto) -> None:
    """The whole cache, cut to per-token rows and back, continues generation exactly; a
    cache coded to fp16 through the split codecs continues it within fp16's rounding."""
    prompt, tokens = np.array([2, 7, 1, 8, 2, 8], np.int64), [1, 8]
    expected = _run_whole(decoder, prompt, tokens)
    device = split_llm.Stepper(decoder, HEAD_SIZE)
    device.step(prompt[None])
    for codec, atol in (("fp32", 0.0), ("fp16", 2e-2)):
        cloud = split_llm.Stepper(decoder, HEAD_SIZE)
        for name, cache in device.past.items():
            rows = split_llm.kv_rows(cache, 0)
            assert rows.shape == (len(prompt), KV_HEADS * HEAD_SIZE)
            payload = split_runner.encode(codec, rows, None)
            assert len(payload) == rows.size * (4 if codec == "fp32" else 2)
            decoded = split_runner.decode(codec, payload, None, rows.shape)
            cloud.past[name] = split_llm.kv_cache(decoded, KV_HEADS)
            if codec == "fp32":
                np.testing.assert_array_equal(cloud.past[name], cache)
        for token, want in zip(tokens, expected[1:], strict=True):
            np.testing.assert_allclose(
                cloud.step(np.array([[token]], np.int64)), want, atol=max(atol, 1e-5)
            )
    last = split_llm.kv_rows(device.past["past_key_values.0.key"], -1)
    assert last.shape == (1, KV_HEADS * HEAD_SIZE)


def test_bad_cuts_and_models_are_refused(decoder: onnx.ModelProto, tmp_path: Path) -> None:
    for layer in (0, LAYERS):
        with pytest.raises(UsageError, match=f"between 1 and {LAYERS - 1}"):
            split_llm.split_at_layer(decoder, layer)
    plain = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "plain",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )  # fmt: skip
    with pytest.raises(ModelError, match="not a KV-cache decoder"):
        split_llm.decoder_shape(plain)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not an ONNX model"):
        split_llm.decoder_shape(junk)


@pytest.mark.slow
def test_tiny_llama_export_cuts_at_every_layer(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime_genai")
    pytest.importorskip("transformers")
    from edgetool.zoo import llm
    from edgetool.zoo.recipe import load_recipe

    recipe = load_recipe("tiny-llama")
    path = tmp_path / "fp32.onnx"
    llm.build_onnx_file(llm.hf_dir(recipe), "fp32", path)
    shape = split_llm.decoder_shape(path)
    assert shape == split_llm.DecoderShape(4, 2, 32, 128)
    prompt = llm.encode(llm.hf_dir(recipe), llm.DEFAULT_PROMPT)
    expected = _run_whole(split_llm.load(path), prompt, [5, 9], shape.head_size)
    for layer in range(1, shape.layers):
        head_proto, tail_proto = split_llm.split_at_layer(path, layer)
        head = split_llm.Stepper(head_proto, shape.head_size)
        tail = split_llm.Stepper(tail_proto, shape.head_size)
        for feed, want in zip([prompt[None], [[5]], [[9]]], expected, strict=True):
            got = tail.step(head.step(np.asarray(feed, np.int64)))
            np.testing.assert_allclose(got, want, atol=1e-4)
