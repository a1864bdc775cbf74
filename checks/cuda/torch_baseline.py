#!/usr/bin/env python3
"""PyTorch baselines on the same GPU, for the numbers of checks/cuda/attention_check.cu and
tests/cuda_forward.rs: torch SDPA (causal, f16) at the harness's attention shapes, and eval
throughput of HF transformers' OPTForCausalLM with random weights shaped like opt-1.3b and
opt-6.7b, run as the published SparseGPT/GPTQ code evaluates (one 2048-token window at a time,
fp16, SDPA attention, logits .float() for the cross-entropy).

  python3 checks/cuda/torch_baseline.py          # on the GPU machine (its python3 has torch)
  python3 checks/cuda/torch_baseline.py --quick  # tiny shapes (a syntax check, runs on a CPU)
"""
import sys
import time

import torch
import torch.nn.functional as F

QUICK = "--quick" in sys.argv
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed(fn, warm=3, iters=20):
    for _ in range(warm):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t) / iters


def sdpa(shapes):
    dt = torch.float16 if DEV == "cuda" else torch.float32
    for b, s, h, d in shapes:
        q, k, v = (torch.rand(b, h, s, d, device=DEV, dtype=dt) * 2 - 1 for _ in range(3))
        sec = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=d**-0.5), iters=3 if QUICK else 20)
        flops = 4 * b * h * s * s * d / 2
        print(f"torch sdpa b={b} s={s} {h}x{d}: {sec * 1e3:8.3f} ms  {flops / sec / 1e12:6.1f} TFLOP/s", flush=True)


def hf_eval(name, hidden, heads, layers, windows=8, seqlen=2048):
    from transformers import OPTConfig, OPTForCausalLM

    dt = torch.float16 if DEV == "cuda" else torch.float32
    cfg = OPTConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers, ffn_dim=4 * hidden,
                    vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=hidden, do_layer_norm_before=True)
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(dt)
    with torch.device(DEV):
        model = OPTForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    print(f"{name}: attention implementation {model.config._attn_implementation}", flush=True)
    ids = torch.randint(0, 50272, (windows, seqlen), device=DEV)

    @torch.no_grad()
    def one_pass():
        nlls = []
        for i in range(windows):
            batch = ids[i:i + 1]
            logits = model(batch).logits
            shift_logits = logits[:, :-1, :].contiguous()
            loss = torch.nn.CrossEntropyLoss()(shift_logits.view(-1, shift_logits.size(-1)).float(), batch[:, 1:].reshape(-1))
            nlls.append(loss.float() * seqlen)
        return torch.stack(nlls).sum().item()

    sec = timed(one_pass, warm=1, iters=1 if QUICK else 3)
    print(f"{name} (random weights) HF eval, one window at a time: {windows * seqlen / sec / 1e3:.1f}k tokens/s", flush=True)
    del model
    if DEV == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0) if DEV == 'cuda' else 'cpu'}")
    if QUICK:
        sdpa([(1, 300, 4, 64)])
        hf_eval("tiny", 64, 4, 2, windows=2, seqlen=128)
    else:
        sdpa([(1, 2048, 32, 64), (8, 2048, 32, 64), (1, 2048, 4, 64), (8, 2048, 32, 80), (1, 2048, 32, 128), (8, 2048, 32, 128)])
        hf_eval("opt-1.3b", 2048, 32, 24)
        hf_eval("opt-6.7b", 4096, 32, 32)
