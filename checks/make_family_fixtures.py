#!/usr/bin/env python3
"""Tiny random checkpoints of every rotary family variant the tool reads, with transformers' own
float32 CPU forward as the reference (tests/family_variants.rs compares the tool's against it).

Each variant is a config dict as the hub (or transformers 5) writes it; transformers builds the
model from it (its initialiser, seeded), the norm weights are then drawn away from 1 so that a
norm applied without its weight, or to the wrong tensor, shows; weights are saved in float32
(safetensors, transformers' tensor names) beside config.json, and reference.json holds the ids of a
fixed input, the logits of its first and last rows, every row's argmax and the mean next-token
NLL (f64 from the f32 logits).

  checks/make_family_fixtures.py OUT_DIR     (tests/data/families; needs torch, transformers)

Written once, committed (about 1.5 MB); the versions used are recorded in each reference.json.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

BASE = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "vocab_size": 256, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "initializer_range": 0.1, "bos_token_id": 1, "eos_token_id": 2, "use_cache": False}

VARIANTS = {
    # Llama 3.1's rope scaling (the hub's keys), grouped-query heads, untied head.
    "llama3_rope_gqa": {**BASE, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                        "num_key_value_heads": 2, "rope_theta": 500000.0, "attention_bias": False,
                        "mlp_bias": False, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
                        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32}},
    # Linear rope scaling, multi-query attention (one K/V head), tied head.
    "llama_linear_mqa_tied": {**BASE, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                              "num_key_value_heads": 1, "rope_theta": 10000.0, "attention_bias": False,
                              "mlp_bias": False, "tie_word_embeddings": True, "torch_dtype": "float32",
                              "rope_scaling": {"type": "linear", "factor": 2.0}},
    # Mistral: an explicit head_dim other than hidden/heads, sliding_window longer than the input.
    "mistral_head_dim": {**BASE, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
                         "num_key_value_heads": 2, "head_dim": 32, "rope_theta": 1000000.0,
                         "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    # Qwen2: q/k/v bias, tied head, the hub's older keys.
    "qwen2_bias_tied": {**BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                        "num_key_value_heads": 2, "rope_theta": 1000000.0, "tie_word_embeddings": True,
                        "use_sliding_window": False, "sliding_window": None, "max_window_layers": 2,
                        "torch_dtype": "bfloat16"},
    # Qwen3: per-head q/k RMSNorm, head_dim 32 over hidden 64 with 4 heads, transformers 5's keys.
    "qwen3_qk_norm": {**BASE, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
                      "num_key_value_heads": 2, "head_dim": 32, "attention_bias": False,
                      "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
                      "max_window_layers": 2, "dtype": "bfloat16",
                      "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}},
}


def build(name, cfg, out):
    torch.manual_seed(sum(map(ord, name)))
    config = transformers.AutoConfig.for_model(**{k: v for k, v in cfg.items() if k not in ("model_type", "architectures")},
                                               model_type=cfg["model_type"])
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif n.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if cfg.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:  # the dict as the hub writes it
        json.dump(cfg, f, indent=2)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, cfg["vocab_size"], (1, 48), generator=g)
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logp = torch.log_softmax(logits.double(), -1)
    nll = -logp[:-1].gather(1, ids[0, 1:, None]).mean().item()
    ref = {"input_ids": ids[0].tolist(), "logits_first_row": logits[0].tolist(),
           "logits_last_row": logits[-1].tolist(), "argmax": logits.argmax(-1).tolist(),
           "mean_nll": nll, "torch": torch.__version__, "transformers": transformers.__version__,
           "what": cfg}
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(f"{name}: {sum(v.numel() for v in state.values())} parameters, mean NLL {nll:.6f}")


if __name__ == "__main__":
    out = sys.argv[1]
    for name, cfg in VARIANTS.items():
        build(name, cfg, out)
