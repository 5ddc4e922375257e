"""all-MiniLM-L6-v2 written out as a GGUF file (f32), for the GGUF engine's embeddings.

The bundled model is a safetensors folder; llama.cpp reads BERT models from GGUF, with
llama.cpp's tensor names and its WordPiece vocabulary convention (word-initial pieces
carry a leading U+2581, continuation pieces lose their '##').
"""

from __future__ import annotations

import json
from pathlib import Path

from support.tiny_llama import minilm_folder


def _phantom_space(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def build(path: Path) -> Path:
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    folder = minilm_folder()
    config = json.loads((folder / "config.json").read_text())
    layers = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, layers)
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(layers)
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([_phantom_space(t) for t in vocab])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t.startswith("[") and t.endswith("]") else gguf.TokenType.NORMAL for t in vocab]
    )
    writer.add_token_type_count(config.get("type_vocab_size", 2))
    for add, token in (
        (writer.add_cls_token_id if hasattr(writer, "add_cls_token_id") else writer.add_bos_token_id, "[CLS]"),
        (writer.add_sep_token_id, "[SEP]"),
        (writer.add_unk_token_id, "[UNK]"),
        (writer.add_pad_token_id, "[PAD]"),
        (writer.add_mask_token_id, "[MASK]"),
    ):
        add(vocab.index(token))

    for name, tensor in load_file(str(folder / "model.safetensors")).items():
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:  # the pooler and position ids: llama.cpp needs neither
            continue
        writer.add_tensor(target, np.ascontiguousarray(tensor, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
