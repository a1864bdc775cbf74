#!/usr/bin/env python3
"""Loads a directory written by `sparsegpt-mi prune --save` with transformers'
OPTForCausalLM (float32, so only the tools differ, not the precision) and compares its logits
with those `sparsegpt-mi eval --logits-out` wrote for the same tokens.

  check_transformers.py SAVED_DIR OURS_LOGITS.json [--tol 1e-2]   → prints the max |Δ| and exits 1 above tol."""
import argparse, json, sys

import torch
from transformers import OPTForCausalLM

p = argparse.ArgumentParser()
p.add_argument("saved")
p.add_argument("ours")
p.add_argument("--tol", type=float, default=1e-2)
a = p.parse_args()
ours = json.load(open(a.ours))
model = OPTForCausalLM.from_pretrained(a.saved, dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(torch.tensor([ours["input_ids"]])).logits[0]
mine = torch.tensor(ours["logits"])
diff = (logits[:, : mine.shape[1]] - mine).abs().max().item()
argmax_equal = (logits.argmax(-1).tolist() == ours["argmax"])
zeros = sum((m.weight == 0).sum().item() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n)
print(json.dumps({"saved": a.saved, "max_abs_logit_diff": diff, "argmax_equal": argmax_equal,
                  "tokens": len(ours["input_ids"]), "zero_weights_in_layers": zeros, "tol": a.tol}))
sys.exit(0 if diff <= a.tol and argmax_equal else 1)
