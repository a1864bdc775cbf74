#!/usr/bin/env python3
"""Loads the exports of one compressed model (any family transformers knows) and compares them with the dense export.

  check_exports.py --dense DIR [--gptq DIR] [--ct DIR] --json OUT [--tol 1e-2]
                   [--device auto|cpu|cuda] [--dtype float16|float32] [--tokens 128]

* dense: AutoModelForCausalLM.from_pretrained.
* ct (compressed-tensors pack-quantized): AutoModelForCausalLM.from_pretrained, which goes through
  transformers' compressed-tensors quantizer (needs the `compressed-tensors` package).
* gptq: through transformers when its GPTQ backend imports (gptqmodel + optimum), with GPTQModel's
  torch kernel where its automatic kernel refuses the shapes; otherwise, or when the export has
  GPTQModel's per-module `dynamic` overrides (which transformers ignores), through the dequantizer below, written from docs/formats.md and independent of the Rust packer:
  qweight / qzeros / scales / g_idx are read with safetensors, the float weight is rebuilt as
  W[o, j] = scales[g_idx[j], o] · (q[o, j] − zero[g_idx[j], o]) in f16 (as the reference kernels
  do) and loaded into a model built from the export's config.

For each quantized export: max |Δ logit| and mean |Δ logit| against the dense export on a fixed
input (the first --tokens tokens of a fixed text, tokenized with the export's tokenizer; fixed
ids if it has none), the fraction of positions whose argmax agrees, and the largest difference
between its (de)quantized linear weights and the dense ones (a packed kernel's as it dequantizes
them). Writes --json, prints a table, and exits 1 if an export fails to load or its max |Δ logit|
exceeds --tol — or, for an export whose weights are bit-exact, twice the dense model's own
dtype-vs-f32 logit difference, when that is larger (2 on usage errors).
With --dense alone it only checks that the dense export loads and runs.
"""
import argparse
import importlib.util
import json
import math
import os
import re
import sys
import time
import traceback

import torch
from safetensors import safe_open

TEXT = (
    "The river town woke slowly that spring. Before the bells, the baker had already lit his ovens, "
    "and the smell of bread drifted past the shuttered windows of the post office, the school and the "
    "small library whose roof leaked every March. Children walked to the ferry in pairs, counting the "
    "boats tied along the quay, while their parents argued about the price of coal, the new bridge that "
    "the council had promised for eleven years, and whether the weather would hold for the fair. Old "
    "Martha, who had kept the lighthouse until the lamp was made electric, still climbed the hill each "
    "evening to watch the ships come in. She wrote their names in a notebook, with the hour and the "
    "direction of the wind, and nobody in the town could remember a day she had missed. In the autumn a "
    "young engineer arrived with drawings of the bridge, and for the first time the arguments in the "
    "tavern turned into questions: how long, how high, and who would pay for it."
)

# The decoder linears of every family: OPT (q/k/v/out_proj, fc1, fc2), the rotary ones (q/k/v/o_proj,
# gate/up/down_proj).
LAYER_LINEAR = re.compile(r"\.layers\.\d+\.(self_attn\.(q|k|v|o|out)_proj|mlp\.(gate|up|down)_proj|fc1|fc2)$")


def pick_device(arg):
    if arg == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return arg


def input_ids(model_dir, n_tokens, vocab_size):
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        ids = tok(TEXT, return_tensors="pt").input_ids[:, :n_tokens]
        if ids.shape[1] >= min(n_tokens, 16):
            return ids, "text"
    except Exception as e:  # no tokenizer files: fall back to fixed ids
        print(f"tokenizer not loaded ({type(e).__name__}: {e}); using fixed ids", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    return torch.randint(4, vocab_size, (1, n_tokens), generator=g), "fixed-ids"


def load_hf(model_dir, dtype, device, **extra):
    from transformers import AutoModelForCausalLM

    # Loaded straight onto a GPU: quantized backends (GPTQModel) pick their kernel for the device
    # the weights are loaded on, and a CPU kernel moved to the GPU afterwards does not run there.
    placement = {"device_map": {"": str(device)}} if str(device).startswith("cuda") else {}
    model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, output_loading_info=True,
                                                       **placement, **extra)
    info = {k: sorted(v) if isinstance(v, (set, list)) else str(v) for k, v in info.items()}
    return model.to(device).eval(), info


# ----- GPTQ dequantizer (docs/formats.md, "GPTQ checkpoint format") -----------------------------


def unpack_stream(words, n, bits):
    """Words int32 [..., W] holding a little-endian bit stream -> values int64 [..., n]:
    value i = stream bits [i*bits, (i+1)*bits), stream bit 32w+k = bit k of word w."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    i = torch.arange(n, dtype=torch.int64)
    start = i * bits
    word, off = start // 32, start % 32
    lo = (w[..., word] >> off)
    nxt = torch.clamp(word + 1, max=w.shape[-1] - 1)
    hi = torch.where(off + bits > 32, w[..., nxt] << (32 - off), torch.zeros_like(lo))
    return (lo | hi) & ((1 << bits) - 1)


def gptq_bits_of(rows, zcols, in_dim, out_dim):
    cands = [b for b in (2, 3, 4, 8) if math.ceil(in_dim * b / 32) == rows and math.ceil(out_dim * b / 32) == zcols]
    if len(cands) != 1:
        raise ValueError(f"cannot tell the bit width: qweight rows {rows} for in {in_dim}, qzeros cols {zcols} for out {out_dim}")
    return cands[0]


def dynamic_bits(qc, module):
    """GPTQModel's `dynamic` overrides ('+:' / plain regex -> overrides, '-:' -> not quantized)."""
    for pat, ov in (qc.get("dynamic") or {}).items():
        neg = pat.startswith("-:")
        raw = pat[2:] if pat.startswith(("+:", "-:")) else pat
        if re.match(raw, module):
            return None if neg else ov.get("bits", qc["bits"])
    return qc["bits"]


def dequantize_gptq(f, prefix, qc):
    qweight = f.get_tensor(f"{prefix}.qweight")
    qzeros = f.get_tensor(f"{prefix}.qzeros")
    scales = f.get_tensor(f"{prefix}.scales")
    g_idx = f.get_tensor(f"{prefix}.g_idx").to(torch.int64)
    in_dim, (groups, out_dim) = g_idx.numel(), scales.shape
    bits = gptq_bits_of(qweight.shape[0], qzeros.shape[1], in_dim, out_dim)
    want = dynamic_bits(qc, prefix)
    if want is not None and want != bits:
        raise ValueError(f"{prefix}: tensors hold {bits} bits, the config says {want}")
    if qzeros.shape[0] != groups or int(g_idx.max()) >= groups or int(g_idx.min()) < 0:
        raise ValueError(f"{prefix}: {groups} groups but qzeros {tuple(qzeros.shape)}, g_idx in [{int(g_idx.min())}, {int(g_idx.max())}]")
    q = unpack_stream(qweight.t().contiguous(), in_dim, bits)  # [out, in]
    z = unpack_stream(qzeros, out_dim, bits)  # [groups, out]
    fmt = str(qc.get("checkpoint_format") or qc.get("format") or "gptq").lower()
    if fmt == "gptq":  # v1: field = zero - 1 (mod 2^bits)
        z = (z + 1) & ((1 << bits) - 1)
    elif fmt != "gptq_v2":
        raise ValueError(f"checkpoint_format {fmt!r} is not gptq / gptq_v2")
    zq = z[g_idx, :].t()  # [out, in]
    s = scales[g_idx, :].t()  # [out, in]
    return s * (q - zq).to(scales.dtype), bits


def load_gptq_own(model_dir, dtype, device):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    qc = getattr(config, "quantization_config", None)
    if isinstance(qc, dict):
        pass
    elif qc is not None:
        qc = qc.to_dict()
    else:
        raise ValueError("config.json has no quantization_config")
    if qc.get("quant_method") != "gptq":
        raise ValueError(f"quant_method {qc.get('quant_method')!r} is not gptq")
    del config.quantization_config
    # Built in `dtype` as from_pretrained builds it: `.to(dtype)` would also cast the rotary
    # families' inv_freq buffers, which transformers keeps in f32.
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    path = os.path.join(model_dir, "model.safetensors")
    state, widths = {}, {}
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        prefixes = sorted(k[: -len(".qweight")] for k in keys if k.endswith(".qweight"))
        for p in prefixes:
            w, bits = dequantize_gptq(f, p, qc)
            state[f"{p}.weight"] = w
            widths[p] = bits
        used = {f"{p}.{s}" for p in prefixes for s in ("qweight", "qzeros", "scales", "g_idx")}
        for k in keys - used:
            state[k] = f.get_tensor(k)
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device).eval(), {"dequantizer": "check_exports.py", "bits": sorted(set(widths.values()))}


def load_gptq_hf(model_dir, bits, dtype, device, entry, check):
    """GPTQ through transformers + GPTQModel with the kernel GPTQModel picks, then `check(model)`.
    Where that kernel refuses the layer shapes, at load or in the forward (its fast kernels need
    widths divisible by their tiles: Machete refuses 64-wide K/V projections on CUDA, the AVX-512
    CPU kernels 704-wide inputs), GPTQModel's torch kernel, which takes any shape: the refusal is
    recorded in the entry, and a checkpoint that is wrong fails under the torch kernel too."""
    try:
        model, info = load_hf(model_dir, dtype, device)
        entry["loader"] = "transformers (gptqmodel, auto kernel)"
        return model, info, check(model)
    except Exception as e:  # kernels refuse shapes with NotImplementedError or RuntimeError
        from transformers import GPTQConfig

        entry["auto_kernel_refused"] = f"{type(e).__name__}: {e}"
        model, info = load_hf(model_dir, dtype, device,
                              quantization_config=GPTQConfig(bits=bits, backend="gptq_torch"))
        entry["loader"] = "transformers (gptqmodel, torch kernel: the auto kernel refused the shapes)"
        return model, info, check(model)


def gptq_backend_available():
    return importlib.util.find_spec("gptqmodel") is not None and importlib.util.find_spec("optimum") is not None


# ----- comparison -------------------------------------------------------------------------------


def linear_weights(model):
    """Every decoder linear's weight [out, in] as the loader holds it; a packed kernel's (GPTQModel's
    QuantLinear: qweight + dequantize_weight(), [in, out]) as it dequantizes it."""
    out = {}
    with torch.no_grad():
        for n, m in model.named_modules():
            if not LAYER_LINEAR.search(n):
                continue
            if isinstance(m, torch.nn.Linear):
                out[n] = m.weight.detach()
            elif hasattr(m, "qweight") and hasattr(m, "dequantize_weight"):
                out[n] = m.dequantize_weight().t().detach()
    return out


def dense_rounding(dense_dir, dense_logits, ids, device):
    """max |logits in the run's dtype − logits in f32| of the dense export: the size of the
    difference arithmetic order alone makes in that dtype."""
    model, _ = load_hf(dense_dir, torch.float32, device)
    with torch.no_grad():
        logits = model(ids.to(device)).logits.float()[0].cpu()
    return (logits - dense_logits).abs().max().item()


def compare(name, model, dense, dense_logits, dense_weights, ids, device):
    with torch.no_grad():
        logits = model(ids.to(device)).logits.float()[0].cpu()
    d = (logits - dense_logits).abs()
    weights = linear_weights(model)
    wdiff, exact = 0.0, True
    if not weights:  # kernels that keep the weight packed (e.g. gptqmodel's QuantLinear)
        wdiff, exact = None, None
    for k, w in dense_weights.items() if weights else ():
        if k not in weights:
            raise ValueError(f"{name}: linear {k} missing after load")
        w2 = weights[k].to(w.dtype)
        wdiff = max(wdiff, (w2.float() - w.float()).abs().max().item())
        exact &= bool(torch.equal(w2, w))
    return {
        "max_abs_dlogit": d.max().item(),
        "mean_abs_dlogit": d.mean().item(),
        "argmax_agreement": (logits.argmax(-1) == dense_logits.argmax(-1)).float().mean().item(),
        "max_abs_dweight": wdiff,
        "weights_bit_exact": exact,
        "linears_compared": len(dense_weights) if weights else 0,
        "finite": bool(torch.isfinite(logits).all()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense", required=True)
    ap.add_argument("--gptq")
    ap.add_argument("--ct")
    ap.add_argument("--json", required=True)
    ap.add_argument("--tol", type=float, default=1e-2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32", "bfloat16"])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--gptq-loader", default="auto", choices=["auto", "transformers", "own"],
                    help="auto: transformers if gptqmodel and optimum import, else the built-in dequantizer")
    a = ap.parse_args()
    device, dtype = pick_device(a.device), getattr(torch, a.dtype)
    torch.manual_seed(0)

    report = {"device": device, "dtype": a.dtype, "tol": a.tol, "torch": torch.__version__, "exports": {}}
    try:
        import transformers

        report["transformers"] = transformers.__version__
    except Exception:
        pass
    if importlib.util.find_spec("compressed_tensors"):
        import compressed_tensors

        report["compressed_tensors"] = compressed_tensors.__version__

    t0 = time.time()
    dense, info = load_hf(a.dense, dtype, device)
    ids, source = input_ids(a.dense, a.tokens, dense.config.vocab_size)
    with torch.no_grad():
        dense_logits = dense(ids.to(device)).logits.float()[0].cpu()
    dense_weights = {k: v for k, v in linear_weights(dense).items()}
    report.update(input=source, tokens=int(ids.shape[1]))
    report["exports"]["dense"] = {"dir": a.dense, "loaded": True, "finite": bool(torch.isfinite(dense_logits).all()),
                                  "missing_keys": info.get("missing_keys", []), "seconds": round(time.time() - t0, 2)}

    failed = not report["exports"]["dense"]["finite"]
    for name, path in (("gptq", a.gptq), ("compressed-tensors", a.ct)):
        if not path:
            continue
        t0 = time.time()
        entry = {"dir": path}
        try:
            def check(model):
                return compare(name, model, dense, dense_logits, dense_weights, ids, device)

            if name == "gptq":
                # transformers applies one GPTQ config to every linear: GPTQModel's per-module
                # `dynamic` overrides (mixed widths) are GPTQModel's and vLLM's, not its.
                qc = json.load(open(os.path.join(path, "config.json"))).get("quantization_config", {})
                dynamic = bool(qc.get("dynamic"))
                use_hf = a.gptq_loader == "transformers" or (
                    a.gptq_loader == "auto" and gptq_backend_available() and not dynamic)
                if use_hf:
                    model, info, result = load_gptq_hf(path, qc.get("bits"), dtype, device, entry, check)
                else:
                    model, info = load_gptq_own(path, dtype, device)
                    why = ""
                    if a.gptq_loader == "auto":
                        why = (" (per-module dynamic overrides: transformers ignores them)" if dynamic
                               else " (gptqmodel/optimum not importable)")
                    entry["loader"] = "check_exports.py dequantizer" + why
                    result = check(model)
            else:
                if not importlib.util.find_spec("compressed_tensors"):
                    raise ImportError("the compressed-tensors package is not installed")
                model, info = load_hf(path, dtype, device)
                entry["loader"] = "transformers (compressed-tensors)"
                result = check(model)
            entry["load_info"] = info
            entry.update(result)
            entry["loaded"] = True
            entry["pass"] = entry["finite"] and entry["max_abs_dlogit"] <= a.tol
            if entry["finite"] and not entry["pass"] and entry["weights_bit_exact"]:
                # The loader holds the dense export's weights bit for bit and its kernel computes
                # differently (a packed kernel dequantizes then multiplies in its own order). Both
                # paths within r of the f32 logits, r the dense model's own dtype rounding, differ
                # by at most 2r: such a kernel passes within that.
                if "dense_rounding_dlogit" not in report:
                    report["dense_rounding_dlogit"] = dense_rounding(a.dense, dense_logits, ids, device)
                entry["pass"] = entry["max_abs_dlogit"] <= 2 * report["dense_rounding_dlogit"]
                entry["passed_on"] = "weights bit-exact; logits within twice the dense model's own dtype rounding"
            del model
        except Exception as e:
            entry.update(loaded=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=4), **{"pass": False})
        entry["seconds"] = round(time.time() - t0, 2)
        failed |= not entry["pass"]
        report["exports"][name] = entry

    report["pass"] = not failed
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(report, fh, indent=2)

    def fmt(x):
        return "n/a" if x is None else f"{x:.3e}"

    print(f"device {device}, {a.dtype}, {report['tokens']} tokens ({source}), tol {a.tol}")
    print(f"{'export':<20} {'max|Δlogit|':>12} {'mean|Δlogit|':>13} {'argmax':>7} {'max|ΔW|':>10} {'W exact':>8}  result")
    for name, e in report["exports"].items():
        if name == "dense":
            print(f"{name:<20} {'(reference)':>12} {'':>13} {'':>7} {'':>10} {'':>8}  {'ok' if e['finite'] else 'NON-FINITE'}")
        elif e.get("loaded"):
            print(f"{name:<20} {e['max_abs_dlogit']:>12.3e} {e['mean_abs_dlogit']:>13.3e} {e['argmax_agreement']:>7.3f} "
                  f"{fmt(e['max_abs_dweight']):>10} {str(e['weights_bit_exact']):>8}  {'PASS' if e['pass'] else 'FAIL'}  [{e['loader']}]")
        else:
            print(f"{name:<20} load failed: {e['error']}")
    print("PASS" if report["pass"] else "FAIL", "->", a.json)
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
