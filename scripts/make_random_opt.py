#!/usr/bin/env python3
"""Writes a random-weight OPT checkpoint with the shapes of facebook/opt-1.3b or opt-6.7b, in
Hugging Face layout (config.json, model.safetensors in f16, tokenizer files copied from a
fixture), for the scale benchmark (issue 5). No download: the configs below are those of the
hub models; weights are N(0, init_std) as OPT's initialiser draws them, layer norms 1/0.

    scripts/make_random_opt.py 1.3b OUT_DIR [--tokenizer-from DIR] [--seed 0] [--layers N]

--layers N keeps the widths and draws only N decoder layers (a shallower model of the same
shapes, for per-layer timings within a device call's time limit).

Needs torch and safetensors (the GPU machine has both); uses the GPU when there is one.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

SHAPES = {
    # hidden, ffn, layers, heads (facebook/opt-*/config.json)
    "125m": (768, 3072, 12, 12),
    "1.3b": (2048, 8192, 24, 32),
    "6.7b": (4096, 16384, 32, 32),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--tokenizer-from", default=os.path.join(os.path.dirname(__file__), "../../shared/fixtures/opt-mini-a"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: the model's)")
    a = ap.parse_args()
    hidden, ffn, layers, heads = SHAPES[a.shape]
    layers = a.layers or layers
    vocab, positions, std = 50272, 2048, 0.02
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev).manual_seed(a.seed)

    def normal(*shape):
        return (torch.randn(*shape, generator=gen, device=dev) * std).half().cpu()

    t = {
        "model.decoder.embed_tokens.weight": normal(vocab, hidden),
        "model.decoder.embed_positions.weight": normal(positions + 2, hidden),
        "model.decoder.final_layer_norm.weight": torch.ones(hidden, dtype=torch.float16),
        "model.decoder.final_layer_norm.bias": torch.zeros(hidden, dtype=torch.float16),
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
            t[f"{p}.{name}.bias"] = torch.zeros(o, dtype=torch.float16)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            t[f"{p}.{ln}.weight"] = torch.ones(hidden, dtype=torch.float16)
            t[f"{p}.{ln}.bias"] = torch.zeros(hidden, dtype=torch.float16)

    os.makedirs(a.out, exist_ok=True)
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
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
        "torch_dtype": "float16",
        "_random_weights": f"scripts/make_random_opt.py {a.shape} --seed {a.seed} --layers {layers}",
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        src = os.path.join(a.tokenizer_from, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(a.out, name))
    params = sum(v.numel() for v in t.values())
    print(f"{a.out}: opt-{a.shape} shapes, {layers} layers, {params / 1e9:.2f} B parameters, random (seed {a.seed})")


if __name__ == "__main__":
    main()
