"""Tiny random-weight models that real engines load and serve: a llama GGUF for llama.cpp and a
Hugging Face Llama (safetensors + a byte-level BPE tokenizer) for vLLM.

The weights are random, so the text they generate is random bytes (U+FFFD included), but every
step a real model goes through runs: file parsing, tokenizer, chat template, prefill, decode,
streaming, metrics. Both writers are deterministic: the same arguments give the same bytes.

    from tinymodels import write_gguf, write_hf_llama
    write_gguf(Path("/srv/models/tiny.gguf"))                        # 0.5 MB, llama-server --model
    write_gguf(path, width=512, layers=8, heads=8, ff=1408, context=4096)   # ~100 MB, measurable prefill
    snapshot = write_hf_llama(Path(hf_home), "org/tiny-llama")        # vllm serve org/tiny-llama

Needs numpy and gguf (write_gguf), safetensors and tokenizers (write_hf_llama); no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

# A ChatML-style template, the shape most instruct models use: the engines render it with jinja.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# A few SentencePiece word pieces beside the byte tokens, so tokenization is not bytes only.
_GGUF_PIECES = [
    "\u2581the",
    "\u2581a",
    "\u2581hello",
    "\u2581world",
    "\u2581hi",
    "\u2581say",
    "er",
    "in",
    "on",
    "an",
    "\u2581",
    "<|im_start|>",
    "<|im_end|>",
    "\u2581user",
    "\u2581assistant",
    "\u2581system",
    "\u2581is",
    "\u2581of",
    "\u2581to",
    "\u2581and",
    "\u2581count",
    "ing",
]


def _weights(rng: np.random.Generator, *shape: int, scale: float = 0.02) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def write_gguf(
    path: Path,
    *,
    width: int = 64,
    layers: int = 2,
    heads: int = 4,
    ff: int = 128,
    context: int = 512,
    seed: int = 0,
    chat_template: str | None = CHAT_TEMPLATE,
    name: str = "tiny-llama",
) -> Path:
    """Write a llama-architecture GGUF with random F32 weights to `path` and return it.

    Vocabulary: `<unk>`, `<s>`, `</s>`, the 256 `<0xNN>` byte tokens and a few word pieces
    (tokenizer.ggml.model `llama`, byte fallback). `chat_template` lands in
    `tokenizer.chat_template` (None: no template). Size is about 4 * (2*vocab*width +
    layers*(4*width^2 + 3*width*ff)) bytes: 0.46 MB at the defaults, about 104 MB at
    width=512, layers=8, ff=1408.
    """
    import gguf

    if width % heads:
        raise ValueError(f"width {width} is not a multiple of heads {heads}")
    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + _GGUF_PIECES
    types = (
        [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        + [gguf.TokenType.BYTE] * 256
        + [gguf.TokenType.CONTROL if p.startswith("<|") else gguf.TokenType.NORMAL for p in _GGUF_PIECES]
    )
    # Longer pieces score higher: SentencePiece merges prefer them.
    scores = [0.0] * 259 + [-float(i) for i in range(len(_GGUF_PIECES))]
    vocab = len(tokens)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(width // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    # numpy shapes are ggml's ne reversed: [rows = outputs, columns = inputs].
    writer.add_tensor("token_embd.weight", _weights(rng, vocab, width))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(width, dtype=np.float32))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{proj}.weight", _weights(rng, width, width))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(width, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", _weights(rng, ff, width))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", _weights(rng, ff, width))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", _weights(rng, width, ff))
    writer.add_tensor("output_norm.weight", np.ones(width, dtype=np.float32))
    writer.add_tensor("output.weight", _weights(rng, vocab, width))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def _byte_level_tokenizer(specials: list[str]) -> Any:
    """A byte-level BPE tokenizer (GPT-2/Llama 3 style): the 256 byte symbols, no merges, then
    the special tokens; every text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok


def hf_llama_files(
    *,
    width: int = 64,
    layers: int = 2,
    heads: int = 2,
    ff: int = 128,
    context: int = 512,
    seed: int = 0,
    chat_template: str | None = CHAT_TEMPLATE,
) -> dict[str, bytes]:
    """The files of a tiny Hugging Face Llama repository, by name: config.json,
    generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json. Head size is width // heads (vLLM's CPU attention takes 32, 64,
    80 and up: the defaults give 32). `chat_template` None leaves the tokenizer without one,
    like a base model (vLLM then refuses chat requests)."""
    from safetensors.numpy import save

    if width % heads:
        raise ValueError(f"width {width} is not a multiple of heads {heads}")
    if width // heads < 32:
        raise ValueError(
            f"head size {width // heads} (width {width} / heads {heads}): vLLM's CPU attention needs 32 or more"
        )
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    specials = [bos, eos, "<|im_start|>", "<|im_end|>"]
    tok = _byte_level_tokenizer(specials)
    vocab = tok.get_vocab_size()
    bos_id, eos_id = tok.token_to_id(bos), tok.token_to_id(eos)
    rng = np.random.default_rng(seed)
    tensors = {"model.embed_tokens.weight": _weights(rng, vocab, width)}
    for i in range(layers):
        p = f"model.layers.{i}"
        tensors[f"{p}.input_layernorm.weight"] = np.ones(width, dtype=np.float32)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{p}.self_attn.{proj}.weight"] = _weights(rng, width, width)
        tensors[f"{p}.post_attention_layernorm.weight"] = np.ones(width, dtype=np.float32)
        tensors[f"{p}.mlp.gate_proj.weight"] = _weights(rng, ff, width)
        tensors[f"{p}.mlp.up_proj.weight"] = _weights(rng, ff, width)
        tensors[f"{p}.mlp.down_proj.weight"] = _weights(rng, width, ff)
    tensors["model.norm.weight"] = np.ones(width, dtype=np.float32)
    tensors["lm_head.weight"] = _weights(rng, vocab, width)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": width // heads,
        "max_position_embeddings": context,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "initializer_range": 0.02,
        "dtype": "float32",
        "torch_dtype": "float32",
    }
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": eos,
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {
                "content": t,
                "special": True,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            }
            for t in specials
        },
    }
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template

    def js(obj: Any) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()

    return {
        "config.json": js(config),
        "generation_config.json": js({"bos_token_id": bos_id, "eos_token_id": eos_id, "do_sample": False}),
        "model.safetensors": save(tensors, metadata={"format": "pt"}),
        "tokenizer.json": tok.to_str().encode(),
        "tokenizer_config.json": js(tokenizer_config),
        "special_tokens_map.json": js({"bos_token": bos, "eos_token": eos, "pad_token": eos}),
    }


def write_hf_cache(hf_home: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay `files` out as the Hugging Face hub cache does after a download of `repo_id`
    ($HF_HOME/hub/models--ORG--NAME/{refs/main, blobs/, snapshots/REV/}), so
    `HF_HUB_OFFLINE=1` finds them. REV is derived from the content. Returns the snapshot dir."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id {repo_id!r}: expected ORG/NAME")
    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(
        b"".join(name.encode() + b"\0" + hashlib.sha256(data).digest() for name, data in sorted(files.items()))
    ).hexdigest()
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        # The hub names blobs by their ETag: sha256 for LFS files, git's blob sha1 for the others.
        blob = (
            hashlib.sha256(data).hexdigest()
            if name.endswith(".safetensors")
            else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        )
        (repo / "blobs" / blob).write_bytes(data)
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def write_hf_llama(hf_home: Path, repo_id: str, **shape: Any) -> Path:
    """A tiny Llama (hf_llama_files(**shape)) in the Hugging Face cache under `hf_home` as
    `repo_id`; returns the snapshot directory. `vllm serve repo_id` with HF_HOME=hf_home and
    HF_HUB_OFFLINE=1 serves it as if it had been downloaded."""
    return write_hf_cache(hf_home, repo_id, hf_llama_files(**shape))


def write_gguf_lora(
    path: Path,
    *,
    width: int = 64,
    layers: int = 2,
    rank: int = 4,
    alpha: float = 8.0,
    targets: tuple[str, ...] = ("attn_q", "attn_v"),
    seed: int = 1,
) -> Path:
    """Write a LoRA adapter GGUF for write_gguf's model (same width and layers) and return it:
    `general.type = adapter`, `adapter.type = lora`, and per block and target a `.lora_a`
    (rank x width) and `.lora_b` (width x rank) tensor, as llama.cpp's convert_lora_to_gguf.py
    writes them (llama-server --lora)."""
    import gguf

    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for i in range(layers):
        for t in targets:
            # numpy shapes are ggml's ne reversed: lora_a ne = [width, rank], lora_b ne = [rank, width].
            writer.add_tensor(f"blk.{i}.{t}.weight.lora_a", _weights(rng, rank, width))
            writer.add_tensor(f"blk.{i}.{t}.weight.lora_b", _weights(rng, width, rank))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def hf_lora_files(
    *,
    width: int = 64,
    layers: int = 2,
    rank: int = 8,
    alpha: int = 16,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    base: str = "org/tiny-llama",
    seed: int = 1,
) -> dict[str, bytes]:
    """The files of a PEFT LoRA adapter for hf_llama_files' model (same width and layers), by
    name: adapter_config.json and adapter_model.safetensors (`base_model.model.model.layers.N.
    self_attn.<target>.lora_A.weight` rank x width, `lora_B.weight` width x rank), the layout vLLM
    loads with --lora-modules. Written by hand: no peft, no torch."""
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(layers):
        for t in targets:
            key = f"base_model.model.model.layers.{i}.self_attn.{t}"
            tensors[f"{key}.lora_A.weight"] = _weights(rng, rank, width)
            tensors[f"{key}.lora_B.weight"] = _weights(rng, width, rank)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    return {
        "adapter_config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        "adapter_model.safetensors": save(tensors, metadata={"format": "pt"}),
    }
