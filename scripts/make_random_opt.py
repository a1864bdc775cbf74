#!/usr/bin/env python3
"""Writes a random-weight checkpoint with the shapes of a published model, in Hugging Face layout
(config.json, safetensors weights, tokenizer files copied from a fixture), for timing and memory at
scale without a download (the scale benchmarks). No download: the configs below are those of the
hub models, written here as dicts.

    scripts/make_random_opt.py SHAPE OUT_DIR [--tokenizer-from DIR] [--seed 0] [--layers N]
                               [--dtype f16|bf16] [--device auto|cpu|cuda]

SHAPE: OPT's 125m, 1.3b, 6.7b (facebook/opt-*), or a rotary family's: llama-3-8b, llama-3.1-8b
(Llama 3.1's llama3 rope scaling), llama-2-7b, mistral-7b, qwen2.5-7b, qwen3-8b; llama-tiny,
qwen2-tiny, qwen3-tiny and mistral-tiny (a few MB, for checking this script and the tool's exports).

--layers N keeps the widths and draws only N decoder layers (a shallower model of the same
shapes, for per-layer timings within a device call's time limit).

OPT: weights N(0, init_std) as OPT's initialiser draws them, layer norms 1/0, written directly
with safetensors in f16 (--dtype bf16 for bfloat16), tokenizer from ../shared/fixtures/opt-mini-a.
The rotary families: the model is built by transformers from the config dict
(`AutoModelForCausalLM.from_config`, its own initialiser: N(0, initializer_range), norms 1) and
written with `save_pretrained` in bf16 (the dtype these families ship in; --dtype f16 for
float16); tokenizer from ../shared/fixtures/llama-rand-gqa (32000 tokens, `<s>` as BOS: any
vocabulary at least that large holds its ids, and the config's bos/eos ids are set to the
tokenizer's). A tokenizer larger than the shape's vocabulary is refused.

Needs torch and safetensors (and transformers for the rotary families; the GPU machine has all
three); uses the GPU when there is one.
"""
import argparse
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "../../shared/fixtures")

OPT_SHAPES = {
    # hidden, ffn, layers, heads (facebook/opt-*/config.json)
    "125m": (768, 3072, 12, 12),
    "1.3b": (2048, 8192, 24, 32),
    "6.7b": (4096, 16384, 32, 32),
}

_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02,
    "pretraining_tp": 1, "tie_word_embeddings": False, "use_cache": True,
}
# The hub configs' keys that fix a model's shapes and numerics (each repository's config.json).
ROTARY_SHAPES = {
    "llama-3-8b": {  # meta-llama/Meta-Llama-3-8B
        **_LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "bos_token_id": 128000, "eos_token_id": 128001,
    },
    "llama-3.1-8b": {  # meta-llama/Llama-3.1-8B
        **_LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "bos_token_id": 128000, "eos_token_id": 128001,
    },
    "llama-2-7b": {  # meta-llama/Llama-2-7b-hf
        **_LLAMA, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "bos_token_id": 1, "eos_token_id": 2,
    },
    "mistral-7b": {  # mistralai/Mistral-7B-v0.1
        **_LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "sliding_window": 4096, "bos_token_id": 1, "eos_token_id": 2,
    },
    "qwen2.5-7b": {  # Qwen/Qwen2.5-7B (q/k/v carry biases: the family's)
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "max_position_embeddings": 131072, "max_window_layers": 28, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": False,
        "tie_word_embeddings": False, "attention_dropout": 0.0, "initializer_range": 0.02,
        "use_cache": True, "bos_token_id": 151643, "eos_token_id": 151643,
    },
    "qwen3-8b": {  # Qwen/Qwen3-8B (per-head q/k RMSNorm; head_dim given)
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
        "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
        "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "attention_bias": False, "tie_word_embeddings": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_sliding_window": False, "use_cache": True,
        "bos_token_id": 151643, "eos_token_id": 151645,
    },
    # Small models of the same families, for checking this script and the tool on them quickly.
    "llama-tiny": {
        **_LLAMA, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 1024},
        "bos_token_id": 1, "eos_token_id": 2,
    },
    "qwen2-tiny": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "use_sliding_window": False, "tie_word_embeddings": True, "attention_dropout": 0.0,
        "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 2,
    },
    "qwen3-tiny": {  # per-head q/k RMSNorm, head_dim (48) other than hidden / heads (32)
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
        "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 48, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "attention_bias": False, "tie_word_embeddings": True, "use_sliding_window": False,
        "attention_dropout": 0.0, "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 2,
    },
    "mistral-tiny": {  # a sliding window wider than the default 2048-token windows
        **_LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 32000,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "sliding_window": 4096, "bos_token_id": 1, "eos_token_id": 2,
    },
}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
DTYPES = {"f16": (torch.float16, "float16"), "bf16": (torch.bfloat16, "bfloat16")}


def fail(message):
    print(f"make_random_opt.py: {message}", file=sys.stderr)
    sys.exit(2)


def tokenizer_size(directory):
    """Token ids the tokenizer of `directory` can emit: its vocabulary plus added tokens."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.exists(path):
        path = os.path.join(directory, "vocab.json")
        return len(json.load(open(path))) if os.path.exists(path) else None
    t = json.load(open(path))
    ids = list(t["model"]["vocab"].values()) if isinstance(t["model"]["vocab"], dict) else range(len(t["model"]["vocab"]))
    ids = list(ids) + [a["id"] for a in t.get("added_tokens", [])]
    return max(ids) + 1 if ids else 0


def copy_tokenizer(src, out, vocab):
    """Copies the tokenizer files of `src`, refusing one whose ids do not fit `vocab`."""
    size = tokenizer_size(src)
    if size is None:
        fail(f"--tokenizer-from {src}: no tokenizer.json or vocab.json there")
    if size > vocab:
        fail(f"--tokenizer-from {src}: its {size} token ids do not fit the shape's vocab_size {vocab}")
    for name in TOKENIZER_FILES:
        p = os.path.join(src, name)
        if os.path.exists(p):
            shutil.copyfile(p, os.path.join(out, name))
    return size


def write_opt(a, out, dtype, dtype_name, dev):
    hidden, ffn, layers, heads = OPT_SHAPES[a.shape]
    layers = a.layers or layers
    vocab, positions, std = 50272, 2048, 0.02
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    from safetensors.torch import save_file

    def normal(*shape):
        return (torch.randn(*shape, generator=gen, device=dev) * std).to(dtype).cpu()

    t = {
        "model.decoder.embed_tokens.weight": normal(vocab, hidden),
        "model.decoder.embed_positions.weight": normal(positions + 2, hidden),
        "model.decoder.final_layer_norm.weight": torch.ones(hidden, dtype=dtype),
        "model.decoder.final_layer_norm.bias": torch.zeros(hidden, dtype=dtype),
    }
    for i in range(layers):
        p = f"model.decoder.layers.{i}"
        for name, (o, n) in {
            "self_attn.q_proj": (hidden, hidden),
            "self_attn.k_proj": (hidden, hidden),
            "self_attn.v_proj": (hidden, hidden),
            "self_attn.out_proj": (hidden, hidden),
            "fc1": (ffn, hidden),
            "fc2": (hidden, ffn),
        }.items():
            t[f"{p}.{name}.weight"] = normal(o, n)
            t[f"{p}.{name}.bias"] = torch.zeros(o, dtype=dtype)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            t[f"{p}.{ln}.weight"] = torch.ones(hidden, dtype=dtype)
            t[f"{p}.{ln}.bias"] = torch.zeros(hidden, dtype=dtype)

    save_file(t, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "activation_function": "relu",
        "do_layer_norm_before": True,
        "enable_bias": True,
        "layer_norm_elementwise_affine": True,
        "hidden_size": hidden,
        "word_embed_proj_dim": hidden,
        "ffn_dim": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": positions,
        "vocab_size": vocab,
        "bos_token_id": 2,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "init_std": std,
        "tie_word_embeddings": True,
        "torch_dtype": dtype_name,
        "_random_weights": f"scripts/make_random_opt.py {a.shape} --seed {a.seed} --layers {layers}"
        + (f" --dtype {a.dtype}" if a.dtype != "f16" else ""),
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    copy_tokenizer(a.tokenizer_from or os.path.join(FIXTURES, "opt-mini-a"), out, vocab)
    params = sum(v.numel() for v in t.values())
    return f"opt-{a.shape} shapes, {layers} layers, {params / 1e9:.2f} B parameters"


def rotary_config(a, tokenizer_dir):
    """The shape's config dict, with --layers and the tokenizer's special ids applied."""
    c = dict(ROTARY_SHAPES[a.shape])
    if a.layers:
        c["num_hidden_layers"] = a.layers
        if "max_window_layers" in c:
            c["max_window_layers"] = a.layers
    # The copied tokenizer's BOS/EOS, where its fixture's config.json names them.
    fixture_config = os.path.join(tokenizer_dir, "config.json")
    if os.path.exists(fixture_config):
        fc = json.load(open(fixture_config))
        for key in ("bos_token_id", "eos_token_id"):
            if isinstance(fc.get(key), int):
                c[key] = fc[key]
    return c


def write_rotary(a, out, dtype, dtype_name, dev):
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer_dir = a.tokenizer_from or os.path.join(FIXTURES, "llama-rand-gqa")
    keys = rotary_config(a, tokenizer_dir)
    # Tokenizer first: a refusal costs nothing.
    copy_tokenizer(tokenizer_dir, out, keys["vocab_size"])
    model_type = keys["model_type"]
    config = AutoConfig.for_model(model_type, **{k: v for k, v in keys.items() if k != "model_type"})
    torch.manual_seed(a.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(dtype).eval()
    model.save_pretrained(out, safe_serialization=True)
    # The dtype under the hub's key and transformers 5's (from_config may have recorded the default
    # float32), and how the weights were made.
    with open(os.path.join(out, "config.json")) as f:
        written = json.load(f)
    written["torch_dtype"] = written["dtype"] = dtype_name
    written["_random_weights"] = (f"scripts/make_random_opt.py {a.shape} --seed {a.seed} "
                                  f"--layers {keys['num_hidden_layers']} --dtype {a.dtype}")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(written, f, indent=2)
    params = sum(p.numel() for p in model.parameters())
    layers = keys["num_hidden_layers"]
    return f"{a.shape} shapes ({model_type}), {layers} layers, {params / 1e9:.2f} B parameters, {dtype_name}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=sorted(OPT_SHAPES) + sorted(ROTARY_SHAPES))
    ap.add_argument("out")
    ap.add_argument("--tokenizer-from", default=None,
                    help="directory whose tokenizer files are copied (default: opt-mini-a for OPT, llama-rand-gqa otherwise)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: the model's)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                    help="stored dtype (default: f16 for OPT, bf16 for the rotary families)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where the weights are drawn (auto: the GPU when there is one)")
    a = ap.parse_args()
    if a.layers is not None and a.layers < 1:
        fail(f"--layers {a.layers}: give at least 1")
    opt = a.shape in OPT_SHAPES
    a.dtype = a.dtype or ("f16" if opt else "bf16")
    dtype, dtype_name = DTYPES[a.dtype]
    dev = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(a.out, exist_ok=True)
    what = (write_opt if opt else write_rotary)(a, a.out, dtype, dtype_name, dev)
    print(f"{a.out}: {what}, random (seed {a.seed})")


if __name__ == "__main__":
    main()
