#!/usr/bin/env python3
"""lm-evaluation-harness (its HF backend) against `sparsegpt-mi eval --tasks` on the same model and
the same local task files: per-request log-likelihoods, per-document acc / acc_norm, the task
metrics and their standard errors; and items/s of both (the speed benchmark).

    python3 checks/lm_eval_compare.py --model DIR --tasks-dir DIR/tasks --ours ours.json \
        --dtype float16 --device cuda --batch-size 1 --out compare.md [--json lm_eval.json]

`--tasks-dir` holds `<task>.parquet` files in each dataset's schema (tests/data/tasks, or
`checks/make_task_files.py --repeat N` for a benchmark); lm-eval reads them through its own
task YAMLs (included unchanged) with only the dataset source replaced by the local parquet file.
`--dry-run` replaces the model by a stand-in that tokenizes as HFLM does (the model's
tokenizer.json through `tokenizers`) and returns made-up scores: it checks, without torch, that
lm-eval builds the same requests (token counts per request) and gold answers as this tool.

Needs lm_eval 0.4.13 and its dependencies (see checks/lm_eval_compare.sh for the wheels).
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

TASKS = ["piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "boolq", "rte", "openbookqa", "lambada_openai"]
# The YAML each task comes from (under lm_eval/tasks) and the split it evaluates.
SOURCE = {
    "piqa": ("piqa/piqa.yaml", "validation"),
    "arc_easy": ("arc/arc_easy.yaml", "test"),
    "arc_challenge": ("arc/arc_challenge.yaml", "test"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
    "winogrande": ("winogrande/default.yaml", "validation"),
    "boolq": ("super_glue/boolq/default.yaml", "validation"),
    "rte": ("glue/rte/default.yaml", "validation"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "test"),
    "lambada_openai": ("lambada/lambada_openai.yaml", "test"),
}


def write_task_yamls(tasks, tasks_dir, out_dir):
    """One YAML per task: lm-eval's own, included, with the dataset read from the local parquet
    file as the split the task evaluates (the other splits unset)."""
    import lm_eval.tasks

    root = os.path.dirname(lm_eval.tasks.__file__)
    for t in tasks:
        yml, split = SOURCE[t]
        path = os.path.abspath(os.path.join(tasks_dir, f"{t}.parquet"))
        splits = {"training_split": None, "validation_split": None, "test_split": None}
        splits["test_split" if split == "test" else "validation_split"] = split
        lines = [
            f"include: {os.path.join(root, yml)}",
            f"task: {t}",
            "dataset_path: parquet",
            "dataset_name: null",
            "dataset_kwargs:",
            "  data_files:",
            f"    {split}: {path}",
        ] + [f"{k}: {'null' if v is None else v}" for k, v in splits.items()]
        with open(os.path.join(out_dir, f"{t}.yaml"), "w") as f:
            f.write("\n".join(lines) + "\n")


def standin_lm(model_dir):
    """A TemplateLM that tokenizes as HFLM (tokenizer.encode with its default special tokens, none
    for a string starting with the BOS text; prefix token = BOS) and answers each request with
    its token counts in place of a log-likelihood: for request-construction checks."""
    from lm_eval.api.model import TemplateLM
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    bos = json.load(open(os.path.join(model_dir, "config.json")))["bos_token_id"]

    class StandIn(TemplateLM):
        backend = "causal"

        @property
        def eot_token_id(self):
            return bos

        @property
        def prefix_token_id(self):
            return bos

        def tok_encode(self, string, add_special_tokens=None, **kwargs):
            if add_special_tokens is None:
                add_special_tokens = not string.startswith(tok.decode([bos], skip_special_tokens=False))
            return tok.encode(string, add_special_tokens=add_special_tokens).ids

        def _loglikelihood_tokens(self, requests, **kwargs):
            # The "log-likelihood" carries the request's token counts: -(1000 ctx + cont) / 1e6.
            return [(-(1000 * len(ctx) + len(cont)) / 1e6, False) for _, ctx, cont in requests]

        def loglikelihood_rolling(self, requests, **kwargs):
            raise NotImplementedError

        def generate_until(self, requests, **kwargs):
            raise NotImplementedError

    return StandIn()


def run_lm_eval(args, tasks):
    import lm_eval
    from lm_eval.tasks import TaskManager

    yaml_dir = tempfile.mkdtemp(prefix="lm_eval_tasks_")
    write_task_yamls(tasks, args.tasks_dir, yaml_dir)
    if args.dry_run:
        lm = standin_lm(args.model)
    else:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=args.model, dtype=args.dtype, batch_size=args.batch_size, device=args.device)
    tm = TaskManager(include_path=yaml_dir)
    t0 = time.time()
    res = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, task_manager=tm, log_samples=True, bootstrap_iters=100000, limit=args.limit
    )
    seconds = time.time() - t0
    return res, seconds


def per_request(sample):
    """(loglik, is_greedy) of each request of one logged sample."""
    out = []
    for r in sample["resps"]:
        ll, greedy = r[0] if isinstance(r[0], (list, tuple)) else r
        out.append((float(ll), bool(greedy)))
    return out


def fmt(v):
    if v is None or v == "N/A":
        return "N/A"
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks-dir", required=True)
    ap.add_argument("--ours", required=True, help="sparsegpt-mi eval --tasks ... --json output")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", default="1")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", required=True, help="markdown report")
    ap.add_argument("--json", help="lm-eval's results and samples, as JSON")
    ap.add_argument("--tol", type=float, default=None,
                    help="largest |Δ loglik| per continuation token accepted (default: 1e-4 f32, 0.02 f16/bf16)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--requests-out", help="write lm-eval's requests (context, continuation) and target of every document as JSON")
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    bs = args.batch_size
    args.batch_size = int(bs) if bs.isdigit() else bs
    ours = json.load(open(args.ours))
    res, lm_seconds = run_lm_eval(args, tasks)
    if args.requests_out:
        reqs = {t: [{"requests": s["arguments"], "target": s["target"]}
                    for s in sorted(res["samples"][t], key=lambda s: s["doc_id"])] for t in tasks}
        with open(args.requests_out, "w") as f:
            json.dump({"lm_eval": __import__("importlib.metadata").metadata.version("lm_eval"), "tasks": reqs}, f,
                      indent=1, ensure_ascii=False)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": res["results"], "samples": res["samples"], "seconds": lm_seconds}, f, default=str)
    tol = args.tol if args.tol is not None else (1e-4 if args.dtype in ("float32", "f32") else 0.02)
    ours_by = {t["task"]: t for t in ours["tasks"]}
    out = []
    out.append(f"# lm-evaluation-harness {__import__('importlib.metadata').metadata.version('lm_eval')} (HF backend) vs sparsegpt-mi\n")
    out.append(f"model `{args.model}`, dtype {args.dtype}, device {args.device}, lm-eval batch size {args.batch_size}, "
               f"task files `{args.tasks_dir}`{' (dry run: stand-in model, token counts only)' if args.dry_run else ''}\n")
    out.append("| task | docs | requests | max abs Δ loglik | max abs Δ per token | docs with Δtokens | acc differs | acc_norm differs |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    all_ok = True
    metric_rows = []
    n_docs = 0
    for t in tasks:
        mine = ours_by[t]
        samples = sorted(res["samples"][t], key=lambda s: s["doc_id"])
        if len(samples) != len(mine["items"]):
            all_ok = False
        n_docs += len(samples)
        max_abs = max_tok = 0.0
        acc_d = norm_d = tok_d = nreq = 0
        for s, it in zip(samples, mine["items"]):
            theirs = per_request(s)
            nreq += len(theirs)
            if len(theirs) != len(it["loglik"]):
                all_ok = False
                continue
            if args.dry_run:
                counts = [(round(-ll * 1e6) // 1000, round(-ll * 1e6) % 1000) for ll, _ in theirs]
                if counts != list(zip(it["context_tokens"], it["continuation_tokens"])):
                    tok_d += 1
            else:
                for (ll, _), mll, nt in zip(theirs, it["loglik"], it["continuation_tokens"]):
                    max_abs = max(max_abs, abs(ll - mll))
                    max_tok = max(max_tok, abs(ll - mll) / nt)
                if "acc" in s and float(s["acc"]) != float(it["acc"]):
                    acc_d += 1
                if "acc_norm" in s and it.get("acc_norm") is not None and float(s["acc_norm"]) != float(it["acc_norm"]):
                    norm_d += 1
        out.append(f"| {t} | {len(samples)} | {nreq} | {max_abs:.3g} | {max_tok:.3g} | {tok_d} | {acc_d} | {norm_d} |")
        if max_tok > tol or acc_d or norm_d or tok_d:
            all_ok = False
        m = res["results"][t]
        for name in ("acc", "acc_norm", "perplexity"):
            if f"{name},none" in m:
                metric_rows.append(f"| {t} | {name} | {fmt(m[f'{name},none'])} | {fmt(mine.get(name))} | "
                                   f"{fmt(m.get(f'{name}_stderr,none'))} | {fmt(mine.get(name + '_stderr'))} |")
    out.append("")
    out.append("| task | metric | lm-eval | sparsegpt-mi | lm-eval stderr | sparsegpt-mi stderr |")
    out.append("|---|---|---:|---:|---:|---:|")
    out.extend(metric_rows)
    ours_s = sum(t["seconds"] for t in ours["tasks"] if t["task"] in tasks)
    out.append("")
    out.append(f"Speed: {n_docs} documents; lm-eval {lm_seconds:.2f} s ({n_docs / lm_seconds:.1f} docs/s, "
               f"simple_evaluate after the model is loaded); sparsegpt-mi {ours_s:.2f} s ({n_docs / max(ours_s, 1e-9):.1f} docs/s, "
               f"scoring after load); ratio {lm_seconds / max(ours_s, 1e-9):.2f}x.")
    out.append(f"\nTolerance on |Δ loglik| per continuation token: {tol}. Result: {'AGREE' if all_ok else 'DIFFER'}.")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
