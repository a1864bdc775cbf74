//! `sparsegpt-mi eval`: perplexity of a model, as the published code measures it.

use super::common::{command_line, parse_tasks, print_ppl_table, run_tasks, CommonArgs, ReportArgs};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use clap::Args;
use sparsegpt_mi::data::{source::needs, Corpus};
use sparsegpt_mi::model::{self, OptModel};
use sparsegpt_mi::output::targets::OutputRequest;
use sparsegpt_mi::output::{atomic, summary};
use sparsegpt_mi::tasks::files::load_tasks;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    /// Model directory (HF layout) or hub id such as facebook/opt-125m.
    pub model: String,
    /// Comma-separated: wikitext2, ptb, c4 (default all three, or none when --tasks is given).
    #[arg(long)]
    pub datasets: Option<String>,
    /// Zero-shot tasks scored as lm-evaluation-harness scores them, comma-separated, or all:
    /// piqa, arc_easy, arc_challenge, hellaswag, winogrande, boolq, rte, openbookqa, lambada_openai.
    #[arg(long)]
    pub tasks: Option<String>,
    /// Also write the logits of the first 128 tokens of the first dataset (first 512 vocabulary
    /// entries of each row, and every row's argmax) as JSON, for comparison with transformers.
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let tasks = parse_tasks("--tasks", args.tasks.as_deref(), args.report.limit)?;
    let default_corpora = if tasks.is_empty() { "wikitext2,ptb,c4" } else { "" };
    let corpora = Corpus::parse_list(args.datasets.as_deref().unwrap_or(default_corpora))?;
    if corpora.is_empty() && tasks.is_empty() {
        bail!("--datasets is empty: name at least one of wikitext2, ptb, c4 (or give --tasks)");
    }
    args.report.validate()?;
    if args.logits_out.is_some() && corpora.is_empty() {
        bail!("--logits-out reads the first --datasets corpus: name one");
    }
    let mut outputs = OutputRequest::new();
    if let Some(j) = &args.report.json {
        outputs = outputs.file("--json", j);
    }
    if let Some(p) = &args.logits_out {
        outputs = outputs.file("--logits-out", p);
    }
    let outputs = outputs.check()?;
    let device = args.common.device()?;
    // Data problems surface before any model is downloaded or loaded.
    let source = args.common.data_source()?;
    let data = if corpora.is_empty() { Vec::new() } else { source.check_available(&needs(&corpora, None))? };
    let task_data = load_tasks(&source, &tasks, args.report.limit)?;
    let t0 = std::time::Instant::now();
    let seqlen = args.common.seqlen;
    let files = model::files::resolve_model(&args.model, seqlen)?;
    outputs.check_inputs(&files)?;
    let config = model::read_config(&files.config)?;
    let tok = model::tokenizer::load_for_vocab(&files.tokenizer, config.vocab_size)?;
    let model = args.common.load_model(&files, &device)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    if let Some(p) = outputs.file("--logits-out") {
        let ids = source.eval_tokens(corpora[0], &tok, seqlen)?;
        dump_logits(&model, &ids[..128.min(ids.len())], p)?;
    }
    let results = sparsegpt_mi::eval::evaluate_all(&model, &tok, &corpora, &source, seqlen, args.report.max_windows)?;
    if !results.is_empty() {
        print_ppl_table(&results);
    }
    let task_results = run_tasks(&model, &tok, &task_data)?;
    if let Some(j) = outputs.file("--json") {
        let report = summary::EvalReport {
            command: command_line(),
            model: args.model.clone(),
            device: args.common.device.clone(),
            dtype: summary::dtype_name(model.dtype),
            seqlen,
            load_seconds,
            data,
            results,
            tasks: task_results,
        };
        atomic::write_json_atomic(j, &report)?;
    }
    Ok(())
}

/// Logits of `ids` for comparison with other implementations: a slice of each row plus argmax.
fn dump_logits(model: &OptModel, ids: &[u32], path: &Path) -> Result<()> {
    let input = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &model.device)?;
    let logits = model.forward(&input)?.squeeze(0)?.to_dtype(DType::F32)?;
    if !sparsegpt_mi::numerics::all_finite(&logits)? {
        bail!(
            "--logits-out: non-finite logits for the first {} tokens ({}): the model's activations overflowed {:?}",
            ids.len(),
            sparsegpt_mi::numerics::describe_non_finite(&logits),
            model.dtype
        );
    }
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let argmax: Vec<usize> =
        rows.iter().map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |m| m.0)).collect();
    let slice: Vec<&[f32]> = rows.iter().map(|r| &r[..512.min(r.len())]).collect();
    atomic::write_json_atomic(path, &serde_json::json!({"input_ids": ids, "logits": slice, "argmax": argmax}))
}
