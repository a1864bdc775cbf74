#!/usr/bin/env python3
"""Runs the published SparseGPT / GPTQ algorithm classes on a fixture, with opt.py's layer loop
(llama.py's for Llama-like families, `--true-sequential` as llama.py's flag), local data and the
papers' protocol, and writes a JSON comparable to `sparsegpt-mi prune`.

The published modules (sparsegpt.py + quant.py of IST-DASLab/sparsegpt, gptq.py + quant.py of
IST-DASLab/gptq) are imported at run time from --published DIR; they are fetched, never
committed. This file is only the driver: opt.py's loop (catch layer-0 inputs; per layer one
calibration pass with hooks, solve every linear, recompute outputs), written for transformers 5.
"""
import argparse, json, os, random, sys, time

import torch
import torch.nn as nn


def c4_documents(data_dir, prefix):
    """The "text" of every JSON line of data_dir/c4/<prefix>*.jsonl, files in name order."""
    docs = []
    c4 = os.path.join(data_dir, "c4")
    for name in sorted(os.listdir(c4)):
        if name.startswith(prefix) and name.endswith(".jsonl"):
            with open(os.path.join(c4, name)) as f:
                docs += [json.loads(l)["text"] for l in f if l.strip()]
    return docs


def calibration(tok, data_dir, nsamples, seed, seqlen=2048):
    docs = c4_documents(data_dir, "c4-train")
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            enc = tok(docs[i], return_tensors="pt").input_ids
            if enc.shape[1] > seqlen:
                break
        i = random.randint(0, enc.shape[1] - seqlen - 1)
        out.append(enc[:, i:i + seqlen])
    return out


def eval_tokens(tok, data_dir, dataset, seqlen=2048):
    if dataset == "wikitext2":
        rows = []
        with open(os.path.join(data_dir, "wikitext2/wiki.test.raw"), newline="") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]
        for body in lines:
            rows.append("" if body.strip() == "" else body + "\n")
        text = "\n\n".join(rows)
    elif dataset == "ptb":
        with open(os.path.join(data_dir, "ptb/ptb.test.txt")) as f:
            text = " ".join(l.strip() for l in f)
    else:
        text = " ".join(c4_documents(data_dir, "c4-validation")[:1100])
    ids = tok(text, return_tensors="pt").input_ids
    if dataset == "c4":
        ids = ids[:, :256 * seqlen]
    return ids


def find_linears(module):
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.Linear)}


def hold_scales_in(quantizer_cls, dtype):
    """This tool's one deviation from quant.py (src/solver/quantizer.rs, ScalePrecision): the
    grid's scale rounded to the checkpoint's dtype (to nearest even; a positive scale that rounds
    to 0 becomes the dtype's smallest positive value) and the zero point computed from the rounded
    scale, clamped to 0..maxq. Weight grids without the MSE search only (what the harness uses)."""
    find_params = quantizer_cls.find_params

    def rounded(self, x, weight=False):
        find_params(self, x, weight)
        assert weight and not self.mse and self.maxq > 0, "--scale-dtype: weight min-max grids only"
        shape = self.scale.shape
        s = self.scale.flatten()
        r = s.to(dtype).float()
        r = torch.where((r == 0) & (s > 0), torch.tensor(2.0 ** (-24 if dtype == torch.float16 else -133),
                                                         device=r.device), r)
        if not self.sym:
            xf = x.flatten(1)
            xmin = torch.minimum(xf.min(1)[0], torch.zeros_like(r))
            xmax = torch.maximum(xf.max(1)[0], torch.zeros_like(r))
            xmin[(xmin == 0) & (xmax == 0)] = -1
            self.zero = torch.clamp(torch.round(-xmin / r), 0, self.maxq).reshape(shape)
        self.scale = r.reshape(shape)

    quantizer_cls.find_params = rounded


@torch.no_grad()
def compress(model, calib, args, dev):
    if args.method == "sparsegpt":
        from sparsegpt import SparseGPT as Solver
    else:
        from gptq import GPTQ as Solver
    from quant import Quantizer
    if args.scale_dtype != "float32":
        hold_scales_in(Quantizer, getattr(torch, args.scale_dtype))
    layers = decoder_layers(model)
    cache = {"inps": [], "kwargs": None}

    class Catcher(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module
        def forward(self, inp, *a, **kwargs):
            cache["inps"].append(inp)
            cache["kwargs"] = kwargs
            raise ValueError

    layers[0] = Catcher(layers[0])
    for batch in calib:
        try:
            model(batch.to(dev))
        except ValueError:
            pass
    layers[0] = layers[0].module
    def perturb(xs, layer_index):
        # One rounding's worth of noise on a layer's inputs (relative 2^perturb_log2: -11 is f16's
        # unit roundoff, -8 bf16's; then rounded back to the run's dtype): the size of the
        # difference between two forward implementations in that dtype.
        seed = args.perturb_inputs if layer_index == 0 else args.perturb_inputs * 1000 + layer_index
        g = torch.Generator(device=dev).manual_seed(seed)
        rel = 2.0 ** args.perturb_log2
        return [(x.float() * (1 + rel * torch.randn(x.shape, generator=g, device=dev))).to(x.dtype) for x in xs]

    if args.perturb_inputs is not None:
        cache["inps"] = perturb(cache["inps"], 0)
    sync(dev)
    t0 = time.time()
    inps, kw = cache["inps"], cache["kwargs"]

    def run(layer, x):
        out = layer(x, **kw)
        return out[0] if isinstance(out, tuple) else out

    for i, layer in enumerate(layers):
        full = find_linears(layer)
        for names in sequential_groups(full, args.true_sequential):
            subset = {n: full[n] for n in names}
            solvers = {}
            for name, lin in subset.items():
                solvers[name] = Solver(lin)
                if args.wbits < 16:
                    solvers[name].quantizer = Quantizer()
                    solvers[name].quantizer.configure(args.wbits, perchannel=True, sym=args.sym, mse=False)
            handles = [subset[n].register_forward_hook(
                (lambda n: lambda _, inp, out: solvers[n].add_batch(inp[0].data, out.data))(n)) for n in subset]
            # --reverse-/--shuffle-hessian-order: the same Hessian up to f32 rounding (add_batch keeps a
            # running average, so only the order of the additions changes), to measure how far
            # rounding alone moves the published code's results.
            order = list(range(len(inps)))
            if args.reverse_hessian_order:
                order.reverse()
            if args.shuffle_hessian_order is not None:
                random.Random(args.shuffle_hessian_order).shuffle(order)
            for j in order:
                run(layer, inps[j])
            for h in handles:
                h.remove()
            for name in subset:
                if args.method == "sparsegpt":
                    solvers[name].fasterprune(args.sparsity, prunen=args.prunen, prunem=args.prunem,
                                              percdamp=args.percdamp, blocksize=args.blocksize)
                else:
                    solvers[name].fasterquant(percdamp=args.percdamp, groupsize=args.groupsize,
                                              actorder=args.act_order, blocksize=args.blocksize)
                solvers[name].free()
        inps = [run(layer, x) for x in inps]
        if args.perturb_inputs is not None and args.perturb_every_layer and i + 1 < len(layers):
            # Two implementations differ at every layer's rounding, not only at the embeddings.
            inps = perturb(inps, i + 1)
    sync(dev)
    return time.time() - t0


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def decoder_layers(model):
    """opt.py's model.model.decoder.layers, llama.py's model.model.layers."""
    inner = model.model
    return inner.decoder.layers if hasattr(inner, "decoder") else inner.layers


# GPTQ llama.py's --true-sequential groups (OPT: the same idea), each solved before the next
# group's calibration pass; without it one pass for all linears of a layer.
TRUE_SEQUENTIAL = {
    "llama": [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"],
              ["mlp.up_proj", "mlp.gate_proj"], ["mlp.down_proj"]],
    "opt": [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.out_proj"],
            ["fc1"], ["fc2"]],
}


def sequential_groups(full, true_sequential):
    if not true_sequential:
        return [list(full)]
    family = "opt" if "fc1" in full else "llama"
    return TRUE_SEQUENTIAL[family]


@torch.no_grad()
def perplexity(model, ids, dev, max_windows=None, seqlen=2048):
    n = ids.shape[1] // seqlen
    if max_windows:
        n = min(n, max_windows)
    nlls = []
    for w in range(n):
        x = ids[:, w * seqlen:(w + 1) * seqlen].to(dev)
        logits = model(x).logits.float()
        loss = nn.functional.cross_entropy(logits[0, :-1], x[0, 1:])
        nlls.append(loss.item())
    return nlls


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--published", required=True, help="dir with the published sparsegpt.py/gptq.py + quant.py")
    p.add_argument("--method", choices=["sparsegpt", "gptq"], default="sparsegpt")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--sparsity", type=float, default=0.0)
    p.add_argument("--prunen", type=int, default=0)
    p.add_argument("--prunem", type=int, default=0)
    p.add_argument("--wbits", type=int, default=16)
    p.add_argument("--groupsize", type=int, default=-1)
    p.add_argument("--sym", action="store_true")
    p.add_argument("--act-order", action="store_true")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--percdamp", type=float, default=0.01)
    p.add_argument("--blocksize", type=int, default=128)
    p.add_argument("--eval", default="wikitext2,ptb,c4")
    p.add_argument("--reverse-hessian-order", action="store_true",
                   help="feed the calibration windows to add_batch last to first (a rounding-only change)")
    p.add_argument("--perturb-inputs", type=int, default=None, metavar="SEED",
                   help="seeded relative noise of 2^--perturb-log2 on the layer-0 inputs (one rounding's worth)")
    p.add_argument("--scale-dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="hold the grids' scales in this dtype as this tool does for checkpoints stored in it "
                        "(float32: the published code)")
    p.add_argument("--perturb-every-layer", action="store_true",
                   help="with --perturb-inputs: perturb every layer's calibration inputs, not only layer 0's")
    p.add_argument("--perturb-log2", type=int, default=-11,
                   help="the perturbation's relative size as a power of 2: -11 f16's unit roundoff, -8 bf16's")
    p.add_argument("--shuffle-hessian-order", type=int, default=None, metavar="SEED",
                   help="feed the calibration windows to add_batch in a seeded random order (rounding-only)")
    p.add_argument("--true-sequential", action="store_true",
                   help="GPTQ llama.py's flag: [k, v, q] -> o -> [up, gate] -> down (OPT: [q, k, v] -> out -> fc1 -> fc2)")
    p.add_argument("--device", default="cuda", help="cuda, or cpu (the llama reference runs: f32 on the CPU)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32", "bfloat16"])
    p.add_argument("--max-windows", type=int, default=None, help="evaluate only the first N windows of each corpus")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    sys.path.insert(0, args.published)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    dev = torch.device(args.device)
    if dev.type == "cpu":
        # The published solvers call torch.cuda.synchronize()/empty_cache(): no-ops on the CPU.
        torch.cuda.synchronize = lambda *a, **k: None
        torch.cuda.empty_cache = lambda *a, **k: None
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(dev).eval()
    model.config.use_cache = False
    # OPT: the slow GPT-2 tokenizer as opt.py; the others: tokenizer.json (fast) as llama.py.
    is_opt = AutoConfig.from_pretrained(args.model).model_type == "opt"
    tok = AutoTokenizer.from_pretrained(args.model, use_fast=not is_opt)
    load_s = time.time() - t
    t = time.time()
    calib = calibration(tok, args.data_dir, args.nsamples, args.seed)
    calib_s = time.time() - t
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    compress_s = compress(model, calib, args, dev)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    result = {"args": vars(args), "times": {"load_s": load_s, "calib_s": calib_s, "compress_s": compress_s},
              "peak_gpu_mib": peak, "ppl": {}, "window_mean_nll": {}, "eval_tokens_per_s": {}}
    lin = [m.weight for l in decoder_layers(model) for m in find_linears(l).values()]
    result["zero_fraction"] = sum((w == 0).sum().item() for w in lin) / sum(w.numel() for w in lin)
    for ds in [d for d in args.eval.split(",") if d]:
        ids = eval_tokens(tok, args.data_dir, ds)
        sync(dev)
        t = time.time()
        nlls = perplexity(model, ids, dev, args.max_windows)
        sync(dev)
        dt = time.time() - t
        result["ppl"][ds] = float(torch.tensor(nlls).mean().exp())
        result["window_mean_nll"][ds] = nlls
        result["eval_tokens_per_s"][ds] = len(nlls) * 2048 / dt
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("times", "peak_gpu_mib", "ppl", "zero_fraction")}))


if __name__ == "__main__":
    main()
