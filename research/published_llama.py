#!/usr/bin/env python3
"""Runs the published `llama.py` (IST-DASLab/sparsegpt's for SparseGPT, IST-DASLab/gptq's for GPTQ)
on a local Llama checkpoint with local data, and writes a JSON for research/llama_bench_table.py.

    research/published_llama.py MODEL_DIR --published DIR --method sparsegpt|gptq [--sparsity 0.5]
        [--wbits 4] --data-dir DIR [--eval wikitext2] [--max-windows N] --json OUT

--published DIR holds the repository's llama.py, its solver (sparsegpt.py or gptq.py), quant.py,
modelutils.py and datautils.py: fetched and carried, never committed. Its own `get_llama`,
`llama_sequential` and `llama_eval` run as its `__main__` block calls them (model on the CPU, each
decoder layer visiting the GPU; the published code's memory behaviour), with its global `args` set
from these flags. Two things differ, both for running offline on transformers 5:
- the calibration windows and evaluation tokens come from --data-dir, drawn as its datautils'
  `get_c4` draws them (research/published_harness.py: Python's `random` seeded with --seed over the
  C4 train documents; C4 evaluation cut to 256 windows), tokenized with the checkpoint's
  tokenizer.json (its datautils asks the hub for a slow tokenizer);
- transformers 5 hands the decoder layers the rotary cos/sin (`position_embeddings`) computed once
  by the model; llama.py calls each layer with its attention mask (and position ids) only, as the
  transformers it was written for allowed, so a layer called without them computes them for
  positions 0.. with the model's own rotary embedding.
Timing: compress = `llama_sequential`'s wall time (catching layer-0 inputs, moving layers, the
calibration passes, solving; CUDA synchronised); peak GPU memory = torch.cuda.max_memory_allocated
over it (and over the whole run); evaluation tokens/s = windows × seqlen over `llama_eval`'s wall
time (the same windows this tool evaluates with --max-windows).
"""
import argparse, contextlib, copy, io, json, os, re, sys, time, types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from published_harness import calibration, eval_tokens  # noqa: E402


def rotary_when_missing(model):
    """Decoder layers called without `position_embeddings` (as llama.py calls them) compute them
    for positions 0..s-1 with a copy of the model's rotary embedding on the layer input's device."""
    cls = type(model.model.layers[0])
    original = cls.forward
    rotary = model.model.rotary_emb
    cache = {}

    def forward(self, hidden_states, *args, **kwargs):
        if kwargs.get("position_embeddings") is None:
            s, device = hidden_states.shape[1], hidden_states.device
            key = (str(device), hidden_states.dtype, s)
            if key not in cache:
                emb = copy.deepcopy(rotary).to(device)
                cache[key] = emb(hidden_states, torch.arange(s, device=device).unsqueeze(0))
            kwargs["position_embeddings"] = cache[key]
        return original(self, hidden_states, *args, **kwargs)

    cls.forward = forward


def published_args(a):
    """The global `args` llama.py's functions read (both repositories' names)."""
    return types.SimpleNamespace(
        nsamples=a.nsamples, seed=a.seed, percdamp=a.percdamp, sparsity=a.sparsity, prunen=0, prunem=0,
        blocksize=a.blocksize, gmp=False, wbits=a.wbits, minlayer=-1, maxlayer=1000, prune_only="",
        invert=False, true_sequential=a.true_sequential, groupsize=a.groupsize, sym=a.sym,
        act_order=a.act_order, static_groups=False, nearest=False, log_wandb=False,
    )


def last_number(text):
    found = re.findall(r"[-+]?\d+\.\d+(?:[eE][-+]?\d+)?|nan|inf", text)
    return float(found[-1]) if found else float("nan")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--published", required=True, help="directory of the published llama.py and its modules")
    p.add_argument("--method", choices=["sparsegpt", "gptq"], required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--sparsity", type=float, default=0.0)
    p.add_argument("--wbits", type=int, default=16)
    p.add_argument("--groupsize", type=int, default=-1)
    p.add_argument("--sym", action="store_true")
    p.add_argument("--act-order", action="store_true")
    p.add_argument("--true-sequential", action="store_true")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--percdamp", type=float, default=0.01)
    p.add_argument("--blocksize", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--eval", default="wikitext2")
    p.add_argument("--max-windows", type=int, default=None)
    p.add_argument("--json", required=True)
    a = p.parse_args()
    if a.method == "gptq" and a.wbits >= 16:
        sys.exit("published_llama.py: GPTQ quantizes: give --wbits")
    sys.path.insert(0, os.path.abspath(a.published))
    import llama as published  # the published llama.py
    from transformers import AutoTokenizer

    published.args = published_args(a)
    # The published code's device (cuda:0); the CPU only to check this driver where there is no GPU.
    cuda = torch.cuda.is_available()
    dev = published.DEV if cuda else torch.device("cpu")
    if not cuda:
        torch.cuda.synchronize = lambda *_, **__: None  # the solvers time themselves with it

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def peak_mib():
        return torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")

    t = time.time()
    model = published.get_llama(a.model)
    model.seqlen = a.seqlen
    model.eval()
    rotary_when_missing(model)
    tok = AutoTokenizer.from_pretrained(a.model)
    load_s = time.time() - t
    t = time.time()
    calib = [(x, None) for x in calibration(tok, a.data_dir, a.nsamples, a.seed, a.seqlen)]
    calib_s = time.time() - t
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t = time.time()
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        published.llama_sequential(model, calib, dev)
    sync()
    compress_s = time.time() - t
    peak_compress = peak_mib()
    result = {"args": vars(a), "times": {"load_s": load_s, "calib_s": calib_s, "compress_s": compress_s},
              "peak_gpu_mib": peak_compress, "ppl": {}, "eval_windows": {}, "eval_seconds": {},
              "eval_tokens_per_s": {}, "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0) if cuda else "cpu"}
    linears = [m.weight for layer in model.model.layers for m in published.find_layers(layer).values()]
    result["zero_fraction"] = sum((w == 0).sum().item() for w in linears) / sum(w.numel() for w in linears)
    for ds in [d for d in a.eval.split(",") if d]:
        ids = eval_tokens(tok, a.data_dir, ds, a.seqlen)
        windows = ids.shape[1] // a.seqlen
        if a.max_windows is not None:
            windows = min(windows, a.max_windows)
        testenc = types.SimpleNamespace(input_ids=ids[:, : windows * a.seqlen])
        out = io.StringIO()
        sync()
        t = time.time()
        with contextlib.redirect_stdout(out):
            if a.method == "sparsegpt":
                published.llama_eval(model, testenc, dev, ds)
            else:
                published.llama_eval(model, testenc, dev)
        sync()
        dt = time.time() - t
        log.write(out.getvalue())
        result["ppl"][ds] = last_number(out.getvalue())
        result["eval_windows"][ds] = windows
        result["eval_seconds"][ds] = dt
        result["eval_tokens_per_s"][ds] = windows * a.seqlen / dt
    result["peak_gpu_mib_all"] = peak_mib()
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    with open(a.json[:-5] + ".published.log", "w") as f:
        f.write(log.getvalue())
    print(json.dumps({k: result[k] for k in ("times", "peak_gpu_mib", "ppl", "eval_tokens_per_s", "zero_fraction")}))


if __name__ == "__main__":
    main()
