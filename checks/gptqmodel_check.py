#!/usr/bin/env python3
"""A real GPTQ client reads this tool's GPTQ export: transformers loads it through optimum and
GPTQModel with GPTQModel's torch kernel (backend `gptq_torch`, the kernel that runs anywhere),
and every quantized linear's weight as that kernel dequantizes it (`QuantLinear.dequantize_weight`:
its own unpacking of qweight / qzeros / scales / g_idx, v1 zero points converted as GPTQModel
converts them) is compared with the dense export of the same run.

  gptqmodel_check.py --dense DIR --gptq DIR --json OUT [--device cpu|cuda] [--tokens 64]

Pass: every packed linear dequantizes to the dense export's weight exactly (max |ΔW| = 0), the
model's other tensors equal the dense export's, and the logits of both on a fixed input are finite.
Their max |Δ| is printed beside the scale of f16 arithmetic on the same model (the dense export in
f16 against itself in f32): the kernel multiplies in f16 in its own order. Writes --json and exits 1
on a failure.
"""
import argparse
import json
import os
import sys
import time
import traceback

import torch

MODULE_CLASS_HINT = "QuantLinear"


def versions():
    from importlib import metadata

    out = {"torch": torch.__version__}
    for name in ("transformers", "optimum", "gptqmodel"):
        try:
            out[name] = metadata.version(name)
        except Exception as e:  # reported, not fatal
            out[name] = f"not installed: {type(e).__name__}: {e}"
    return out


def fixed_ids(vocab, n):
    g = torch.Generator().manual_seed(0)
    return torch.randint(4, vocab, (1, n), generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense", required=True)
    ap.add_argument("--gptq", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()
    report = {"dense": a.dense, "gptq": a.gptq, "device": a.device, "versions": versions(), "pass": False}
    try:
        from transformers import AutoModelForCausalLM, GPTQConfig

        qc = json.load(open(os.path.join(a.gptq, "config.json")))["quantization_config"]
        report["quantization_config"] = qc
        t0 = time.time()
        dense = AutoModelForCausalLM.from_pretrained(a.dense, dtype=torch.float16).to(a.device).eval()
        model = AutoModelForCausalLM.from_pretrained(
            a.gptq,
            dtype=torch.float16,
            device_map=a.device,
            quantization_config=GPTQConfig(bits=qc["bits"], backend="gptq_torch"),
        ).eval()
        report["load_seconds"] = round(time.time() - t0, 2)
        dense_state = dense.state_dict()
        linears, worst, exact = [], 0.0, True
        kernels = set()
        with torch.no_grad():
            for name, m in model.named_modules():
                if not (hasattr(m, "qweight") and hasattr(m, "dequantize_weight")):
                    continue
                kernels.add(type(m).__module__ + "." + type(m).__name__)
                w = m.dequantize_weight().t().to(torch.float16).cpu()  # [in, out] → [out, in]
                ref = dense_state[f"{name}.weight"].cpu()
                if w.shape != ref.shape:
                    raise ValueError(f"{name}: dequantized shape {tuple(w.shape)}, dense {tuple(ref.shape)}")
                d = (w.float() - ref.float()).abs().max().item()
                same = bool(torch.equal(w, ref))
                linears.append({"name": name, "bits": m.bits, "group_size": m.group_size,
                                "max_abs_dweight": d, "bit_exact": same})
                worst, exact = max(worst, d), exact and same
            # Every other tensor (embeddings, norms, biases, a dense linear, the head) as in the dense export.
            packed_names = {l["name"] for l in linears}
            others_equal, other_diffs = True, []
            for k, v in model.state_dict().items():
                module, leaf = k.rsplit(".", 1)
                if (module in packed_names and leaf != "bias") or k not in dense_state:
                    continue
                if not torch.equal(v.cpu(), dense_state[k].cpu()):
                    others_equal = False
                    other_diffs.append(k)
            ids = fixed_ids(dense.config.vocab_size, a.tokens).to(a.device)
            ld = dense(ids).logits.float()
            lq = model(ids).logits.float()
            dense32 = AutoModelForCausalLM.from_pretrained(a.dense, dtype=torch.float32).to(a.device).eval()
            f16_scale = (dense32(ids).logits.float() - ld).abs().max().item()
        dlogit = (ld - lq).abs().max().item()
        report.update(
            kernels=sorted(kernels),
            linears_compared=len(linears),
            max_abs_dweight=worst,
            weights_bit_exact=exact,
            other_tensors_equal=others_equal,
            other_tensors_differing=other_diffs[:10],
            max_abs_dlogit=dlogit,
            dense_f16_vs_f32_max_abs_dlogit=f16_scale,
            logits_finite=bool(torch.isfinite(lq).all()),
            linears=linears,
        )
        report["pass"] = bool(linears) and exact and others_equal and report["logits_finite"]
    except Exception as e:
        report["error"] = f"{type(e).__name__}: {e}"
        report["traceback"] = traceback.format_exc(limit=6)
    with open(a.json, "w") as fh:
        json.dump(report, fh, indent=2)
    if "error" in report:
        print(f"{a.gptq}: FAIL ({report['error']})")
    else:
        print(f"{a.gptq}: {report['linears_compared']} packed linears through {', '.join(report['kernels'])}: "
              f"max |ΔW| {report['max_abs_dweight']:.3e} (bit-exact {report['weights_bit_exact']}), other tensors "
              f"equal {report['other_tensors_equal']}, max |Δlogit| {report['max_abs_dlogit']:.3e} (dense f16 vs f32: "
              f"{report['dense_f16_vs_f32_max_abs_dlogit']:.3e}) -> "
              f"{'PASS' if report['pass'] else 'FAIL'}")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
