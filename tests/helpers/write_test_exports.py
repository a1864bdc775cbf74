#!/usr/bin/env python3
"""TEST AID, not the tool's exporter: writes a dense, a GPTQ and a compressed-tensors export of
the SAME quantization codes of an OPT checkpoint, so scripts/check_exports.py can be tested
without the Rust exporter.

Each decoder linear (q/k/v/out_proj, fc1, fc2) gets GPTQ's min-max grid per (row, group), RTN
(no Hessian): scale rounded to f16 first, q = clamp(round(w / scale) + zero, 0, maxq), and the
dense weight is f16(scale · (q − zero)), which is exactly what an engine computes from the packed
files (f16 scale times a small integer, rounded once). The packed layouts follow docs/formats.md;
the packing here is a bit-level numpy implementation written from that document, independent of
src/output/packing.rs.

  write_test_exports.py --model DIR --out OUT [--bits 4] [--group-size 64|-1] [--sym]
                        [--act-order] [--mixed] [--formats dense,gptq,ct]

--act-order: groups are runs of a column order (columns by decreasing L2 norm, a stand-in for
H_jj), so g_idx is not j // group_size; compressed-tensors >= 2026-08 cannot hold that (its
"group" actorder was removed), so with --act-order and a group size the ct export is skipped.
--mixed: fc1/fc2 at 8 bits and attention at --bits (several config_groups; GPTQ "dynamic").
"""
import argparse
import json
import math
import os
import re
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

LINEAR_RE = re.compile(r"^(.*\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc1|fc2))\.weight$")


def stream_pack(vals, bits):
    """Little-endian bit stream along the last axis: value i at stream bits [i*bits, (i+1)*bits),
    word w = stream bits [32w, 32w+32), LSB first. Returns int32 [..., ceil(n*bits/32)]."""
    vals = np.asarray(vals, dtype=np.uint64)
    assert vals.max(initial=0) < (1 << bits)
    n = vals.shape[-1]
    nw = math.ceil(n * bits / 32)
    bitarr = (vals[..., None] >> np.arange(bits, dtype=np.uint64)) & 1  # [..., n, bits]
    bitarr = bitarr.reshape(*vals.shape[:-1], n * bits)
    pad = nw * 32 - n * bits
    if pad:
        bitarr = np.concatenate([bitarr, np.zeros((*vals.shape[:-1], pad), np.uint64)], axis=-1)
    bitarr = bitarr.reshape(*vals.shape[:-1], nw, 32)
    words = (bitarr << np.arange(32, dtype=np.uint64)).sum(axis=-1, dtype=np.uint64)
    return words.astype(np.uint32).view(np.int32)


def minmax_grid(w, bits, sym):
    """GPTQ quant.py find_params on rows of w [out, k] -> (scale, zero) per row, f32."""
    maxq = 2 ** bits - 1
    xmin = np.minimum(w.min(axis=1), 0)
    xmax = np.maximum(w.max(axis=1), 0)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
    both0 = (xmin == 0) & (xmax == 0)
    xmin = np.where(both0, -1, xmin)
    xmax = np.where(both0, 1, xmax)
    scale = (xmax - xmin) / maxq
    zero = np.full_like(scale, (maxq + 1) / 2) if sym else np.round(-xmin / scale)
    return scale.astype(np.float32), zero.astype(np.float32)


def quantize_linear(w, bits, group_size, sym, act_order):
    """w [out, in] f32 -> dict(codes [out,in] u8, scale16 [out,G] f16, zeros [out,G] u8, g_idx [in])."""
    out_dim, in_dim = w.shape
    maxq = 2 ** bits - 1
    order = np.argsort(-np.linalg.norm(w, axis=0), kind="stable") if act_order else np.arange(in_dim)
    gs = in_dim if group_size == -1 else group_size
    groups = math.ceil(in_dim / gs)
    g_idx = np.empty(in_dim, np.int32)
    scale16 = np.empty((out_dim, groups), np.float16)
    zeros = np.empty((out_dim, groups), np.uint8)
    codes = np.empty((out_dim, in_dim), np.uint8)
    for k in range(groups):
        cols = order[k * gs:(k + 1) * gs]
        g_idx[cols] = k
        s, z = minmax_grid(w[:, cols], bits, sym)
        s16 = s.astype(np.float16)
        s16 = np.where(s16 == 0, np.float16(6e-8), s16)
        sf = s16.astype(np.float32)
        q = np.clip(np.round(w[:, cols] / sf[:, None]) + z[:, None], 0, maxq)
        codes[:, cols] = q.astype(np.uint8)
        scale16[:, k] = s16
        zeros[:, k] = z.astype(np.uint8)
    deq = (scale16.astype(np.float32)[:, g_idx] * (codes.astype(np.float32) - zeros.astype(np.float32)[:, g_idx]))
    return dict(codes=codes, scale16=scale16, zeros=zeros, g_idx=g_idx, dense=deq.astype(np.float16),
                groups=groups, bits=bits)


def gptq_tensors(prefix, qd, bias):
    bits, codes, zeros = qd["bits"], qd["codes"], qd["zeros"]
    mask = (1 << bits) - 1
    t = {
        f"{prefix}.qweight": np.ascontiguousarray(stream_pack(codes, bits).T),  # [in*b/32, out]
        f"{prefix}.qzeros": stream_pack((zeros.T.astype(np.int64) - 1) & mask, bits),  # v1
        f"{prefix}.scales": np.ascontiguousarray(qd["scale16"].T),  # [G, out]
        f"{prefix}.g_idx": qd["g_idx"].astype(np.int32),
    }
    if bias is not None:
        t[f"{prefix}.bias"] = bias
    return t


def ct_tensors(prefix, qd, bias, sym):
    bits = qd["bits"]
    out_dim, in_dim = qd["codes"].shape
    t = {
        # stored field = signed + 2^(bits-1) = the unsigned code
        f"{prefix}.weight_packed": stream_pack(qd["codes"], bits),  # [out, ceil(in*b/32)]
        f"{prefix}.weight_scale": qd["scale16"],  # [out, G]
        f"{prefix}.weight_shape": np.array([out_dim, in_dim], np.int64),
    }
    if not sym:  # packed along the output dim: [ceil(out*b/32), G]
        t[f"{prefix}.weight_zero_point"] = np.ascontiguousarray(stream_pack(qd["zeros"].T, bits).T)
    if bias is not None:
        t[f"{prefix}.bias"] = bias
    return t


def copy_side_files(src, dst):
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if f.endswith(".json") or f.endswith(".txt"):
            if f not in ("reference_logits.json", "training.json"):
                shutil.copy(os.path.join(src, f), os.path.join(dst, f))


def write_config(dst, extra):
    p = os.path.join(dst, "config.json")
    cfg = json.load(open(p))
    cfg.update(extra)
    json.dump(cfg, open(p, "w"), indent=2, sort_keys=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--sym", action="store_true")
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--mixed", action="store_true", help="fc1/fc2 at 8 bits")
    ap.add_argument("--formats", default="dense,gptq,ct")
    a = ap.parse_args()
    formats = a.formats.split(",")

    sd = load_file(os.path.join(a.model, "model.safetensors"))
    quant = {}
    for k in sorted(sd):
        m = LINEAR_RE.match(k)
        if not m:
            continue
        prefix = m.group(1)
        bits = 8 if (a.mixed and prefix.endswith(("fc1", "fc2"))) else a.bits
        quant[prefix] = quantize_linear(sd[k].astype(np.float32), bits, a.group_size, a.sym, a.act_order)
    bits_of = {p: q["bits"] for p, q in quant.items()}
    print(f"quantized {len(quant)} linears: " + ", ".join(f"{b} bits × {list(bits_of.values()).count(b)}"
                                                        for b in sorted(set(bits_of.values()))))

    def rest(skip_suffixes):
        return {k: v for k, v in sd.items() if not any(k == f"{p}.{s}" for p in quant for s in skip_suffixes)}

    if "dense" in formats:
        d = os.path.join(a.out, "dense")
        copy_side_files(a.model, d)
        t = dict(sd)
        for p, q in quant.items():
            t[f"{p}.weight"] = q["dense"]
        save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    if "gptq" in formats:
        d = os.path.join(a.out, "gptq")
        copy_side_files(a.model, d)
        t = rest(["weight", "bias"])
        for p, q in quant.items():
            t.update(gptq_tensors(p, q, sd.get(f"{p}.bias")))
        save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        qc = {"quant_method": "gptq", "bits": a.bits, "group_size": a.group_size, "desc_act": a.act_order,
              "sym": a.sym, "true_sequential": True, "static_groups": False, "damp_percent": 0.01,
              "checkpoint_format": "gptq"}
        if a.mixed:  # GPTQModel / vLLM per-module override (not read by transformers)
            qc["dynamic"] = {r"+:.*\.fc[12]$": {"bits": 8}}
        write_config(d, {"quantization_config": qc})
        json.dump(qc, open(os.path.join(d, "quantize_config.json"), "w"), indent=2, sort_keys=True)

    if "ct" in formats:
        if a.act_order and a.group_size != -1:
            print("ct: skipped (act-order groups need g_idx; compressed-tensors 0.20 removed actorder='group')")
        else:
            d = os.path.join(a.out, "ct")
            copy_side_files(a.model, d)
            t = rest(["weight", "bias"])
            for p, q in quant.items():
                t.update(ct_tensors(p, q, sd.get(f"{p}.bias"), a.sym))
            save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
            groups = {}
            for p, b in sorted(bits_of.items()):
                groups.setdefault(b, []).append(p)
            config_groups = {}
            for i, (b, targets) in enumerate(sorted(groups.items())):
                config_groups[f"group_{i}"] = {
                    "targets": targets,
                    "weights": {"num_bits": b, "type": "int", "symmetric": a.sym,
                                "strategy": "channel" if a.group_size == -1 else "group",
                                "group_size": None if a.group_size == -1 else a.group_size,
                                "dynamic": False, "actorder": None},
                    "input_activations": None, "output_activations": None, "format": "pack-quantized"}
            qc = {"quant_method": "compressed-tensors", "format": "pack-quantized",
                  "quantization_status": "compressed", "config_groups": config_groups,
                  "ignore": ["lm_head"], "kv_cache_scheme": None, "global_compression_ratio": None,
                  "sparsity_config": {}, "transform_config": {}, "version": "0.20.1"}
            write_config(d, {"quantization_config": qc})
    print(f"wrote {', '.join(formats)} under {a.out}")


if __name__ == "__main__":
    sys.exit(main())
