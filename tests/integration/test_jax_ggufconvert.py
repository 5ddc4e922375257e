"""The GGUF converter on a GGUF written here from a tiny random Llama, the way
llama.cpp's converter writes one (Q and K rows permuted for its RoPE, Q8_0 blocks),
then loaded by the JAX engine and checked against the original weights."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from modelport.domain import ModelFormat, ModelInfo, ModelLoadError, UnsupportedArchitecture
from modelport.ports import EngineOptions

from test_jax_tiny_models import CONFIGS, TOKENS, hf_weights, reference_logits

CONFIG = dict(CONFIGS["llama"], tie_word_embeddings=True, intermediate_size=64)  # rows of whole Q8_0 blocks


def permute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's HF-to-GGUF permutation of Q/K rows (written from its layout:
    per head, the two rotary halves are interleaved)."""
    out, width = weight.shape
    return weight.reshape(heads, 2, out // heads // 2, width).swapaxes(1, 2).reshape(out, width)


def write_gguf(
    path: str, config: dict, weights: dict[str, np.ndarray], *, quantize: bool, architecture: str = "llama"
) -> None:
    import gguf
    from tokenizers import pre_tokenizers

    writer = gguf.GGUFWriter(path, architecture)
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + ["<eos>", "<|im_start|>", "Ġt", "he"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 256 + [3, 3, 1, 1])
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_eos_token_id(256)
    writer.add_bos_token_id(257)
    writer.add_add_bos_token(False)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for name, tensor in weights.items():
        if name.startswith("model.layers."):
            layer, part = name[len("model.layers.") :].split(".", 1)
            target = f"blk.{layer}.{parts[part]}"
            if part == "self_attn.q_proj.weight":
                tensor = permute_rows(tensor, heads)
            elif part == "self_attn.k_proj.weight":
                tensor = permute_rows(tensor, kv)
        else:
            target = names[name]
        if quantize and tensor.ndim == 2:
            data = gguf.quants.quantize(tensor, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(target, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(target, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return hf_weights(CONFIG, np.random.default_rng(7))


@pytest.mark.parametrize("quantize", [False, True], ids=["f32", "q8_0"])
def test_a_gguf_round_trips_to_the_original_weights(weights, tmp_path, quantize) -> None:
    from safetensors.numpy import load_file

    from modelport.adapters.ggufconvert import materialize_hf_folder

    path = str(tmp_path / "tiny.gguf")
    write_gguf(path, CONFIG, weights, quantize=quantize)
    folder = materialize_hf_folder(path, str(tmp_path / "hf"))
    converted = load_file(os.path.join(folder, "model.safetensors"))
    assert set(converted) == set(weights)
    for name, original in weights.items():
        tolerance = 0.0 if not quantize or original.ndim == 1 else 0.01 * np.abs(original).max()
        np.testing.assert_allclose(converted[name], original, atol=tolerance, err_msg=name)
    config = json.load(open(os.path.join(folder, "config.json")))
    assert (config["num_hidden_layers"], config["num_key_value_heads"], config["head_dim"]) == (2, 2, 8)
    assert config["tie_word_embeddings"] is True and config["eos_token_id"] == 256
    tokenizer_config = json.load(open(os.path.join(folder, "tokenizer_config.json")))
    assert tokenizer_config["eos_token"] == "<eos>" and tokenizer_config["bos_token"] == "<|im_start|>"


def test_the_engine_runs_a_converted_gguf_like_the_original(weights, tmp_path) -> None:
    from modelport.adapters.jax import JaxEngine

    path = tmp_path / "tiny.gguf"
    write_gguf(str(path), CONFIG, weights, quantize=False)
    info = ModelInfo(name="tiny-gguf:latest", format=ModelFormat.GGUF, location=str(tmp_path), primary_file="tiny.gguf")
    engine = JaxEngine()
    engine.load(
        info, EngineOptions(num_ctx=64, device="cpu", home=str(tmp_path / "home"), quantize="none")
    )  # float, as the reference (auto is int8 on a CPU)
    assert os.listdir(tmp_path / "home" / "cache" / "hf-from-gguf")
    ours = engine._rt.decoder.forward(np.asarray([TOKENS]))[0]
    expected = reference_logits(CONFIG, weights, TOKENS)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert engine.tokenize("<|im_start|>hi")[0] == 257 and engine.detokenize(engine.tokenize("hi there")) == "hi there"
    assert engine._rt.end_ids == (256,)


def test_other_architectures_and_broken_files_are_refused(weights, tmp_path) -> None:
    from modelport.adapters.ggufconvert import materialize_hf_folder

    path = str(tmp_path / "other.gguf")
    write_gguf(path, CONFIG, weights, quantize=False, architecture="mamba")
    with pytest.raises(UnsupportedArchitecture) as caught:
        materialize_hf_folder(path, str(tmp_path / "out"))
    assert "llama" in str(caught.value)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(ModelLoadError):
        materialize_hf_folder(str(broken), str(tmp_path / "out2"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()
    assert sorted(os.listdir(tmp_path)) == ["broken.gguf", "other.gguf"], "no temporary folder is left"
