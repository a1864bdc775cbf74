//! Command-line interface: `eval`, `prune`, `mi`, `self-check`.

use crate::data::{self, Corpus};
use crate::eval::Perplexity;
use anyhow::Result;
use candle_core::DType;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "sparsegpt-mi", version, about = "One-shot OPT compression: SparseGPT, GPTQ and mutual-information channel grouping")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Perplexity of a model on WikiText-2 / PTB / C4, as the published code measures it.
    Eval(EvalArgs),
    /// One-shot compression (SparseGPT / GPTQ / MI grouping), then evaluation.
    Prune(crate::cli_prune::PruneArgs),
    /// Mutual-information matrix of one linear's input channels: PNG heatmap and JSON.
    Mi(crate::cli_mi::MiInspectArgs),
    /// GPU builds: the device solver against the host solver on random layers.
    SelfCheck(crate::cli_check::SelfCheckArgs),
}

#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Data directory (layout in README.md); default $SPARSEGPT_MI_DATA_DIR or ../shared/data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Evaluate only the first N windows of each dataset (quick looks; the count is reported).
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep decoder layers in host memory and bring one at a time to the device: for models
    /// whose weights do not fit on the GPU (slower: each layer crosses PCIe per pass).
    #[arg(long)]
    pub offload: bool,
    /// Weights and activations: auto (f16 on a GPU, as the published code; f32 on the CPU),
    /// f16 or f32. Hessians and statistics are accumulated in f32/f64 either way.
    #[arg(long, value_enum, default_value_t = ComputeDtype::Auto)]
    pub dtype: ComputeDtype,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeDtype {
    Auto,
    F16,
    F32,
}

impl ComputeDtype {
    pub fn resolve(self, device: &candle_core::Device) -> DType {
        match self {
            ComputeDtype::Auto => compute_dtype(device),
            ComputeDtype::F16 => DType::F16,
            ComputeDtype::F32 => DType::F32,
        }
    }
}

impl CommonArgs {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(data::default_data_dir)
    }

    /// Loads the model onto `device`, offloaded if asked.
    pub fn load_model(&self, files: &crate::hub::ModelFiles, device: &candle_core::Device) -> anyhow::Result<crate::model::OptModel> {
        let dtype = self.dtype.resolve(device);
        if self.offload {
            crate::model::load_model_offloaded(files, device, dtype)
        } else {
            crate::model::load_model(files, device, dtype)
        }
    }
}

#[derive(Args)]
pub struct EvalArgs {
    /// Model directory (HF layout) or hub id such as facebook/opt-125m.
    pub model: String,
    /// Comma-separated: wikitext2, ptb, c4.
    #[arg(long, default_value = "wikitext2,ptb,c4")]
    pub datasets: String,
    /// Also write the logits of the first 128 tokens of the first dataset (first 512 vocabulary
    /// entries of each row, and every row's argmax) as JSON, for comparison with transformers.
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Logits of `ids` for comparison with other implementations: a slice of each row plus argmax.
fn dump_logits(model: &crate::model::OptModel, ids: &[u32], path: &std::path::Path) -> Result<()> {
    let input = candle_core::Tensor::from_vec(ids.to_vec(), (1, ids.len()), &model.device)?;
    let logits = model.forward(&input)?.squeeze(0)?.to_dtype(DType::F32)?;
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let argmax: Vec<usize> = rows
        .iter()
        .map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |m| m.0))
        .collect();
    let slice: Vec<&[f32]> = rows.iter().map(|r| &r[..512.min(r.len())]).collect();
    crate::report::write_json_atomic(path, &serde_json::json!({"input_ids": ids, "logits": slice, "argmax": argmax}))
}

#[derive(Serialize)]
struct EvalReport {
    command: String,
    model: String,
    device: String,
    /// The dtype the model ran in (weights and activations).
    dtype: String,
    load_seconds: f64,
    results: Vec<Perplexity>,
}

/// The dtype the model runs in: f32 on the CPU; f16 weights and activations on the GPU,
/// as the published code runs.
pub fn compute_dtype(device: &candle_core::Device) -> DType {
    if device.is_cuda() {
        DType::F16
    } else {
        DType::F32
    }
}

/// How reports name a dtype ("f16", "f32").
pub fn dtype_name(dtype: DType) -> String {
    format!("{dtype:?}").to_lowercase()
}

pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Evaluates every dataset; tokens are read (and missing files reported) before any model work.
pub fn evaluate_all(
    model: &crate::model::OptModel,
    tok: &tokenizers::Tokenizer,
    datasets: &[Corpus],
    data_dir: &std::path::Path,
    max_windows: Option<usize>,
) -> Result<Vec<Perplexity>> {
    let streams = datasets
        .iter()
        .map(|&c| Ok((c, data::eval_tokens(c, data_dir, tok)?)))
        .collect::<Result<Vec<_>>>()?;
    streams
        .iter()
        .map(|(c, ids)| crate::eval::perplexity(model, c.name(), ids, data::SEQLEN, max_windows))
        .collect()
}

pub fn print_ppl_table(results: &[Perplexity]) {
    println!("{:<10} {:>12} {:>8} {:>10} {:>9}", "dataset", "ppl", "windows", "tokens", "seconds");
    for r in results {
        println!(
            "{:<10} {:>12.4} {:>8} {:>10} {:>9.1}",
            r.dataset, r.ppl, r.windows, r.tokens, r.seconds
        );
    }
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let datasets = Corpus::parse_list(&args.datasets)?;
    if datasets.is_empty() {
        anyhow::bail!("--datasets is empty: name at least one of wikitext2, ptb, c4");
    }
    if let Some(j) = &args.common.json {
        crate::report::check_writable(j, "--json")?;
    }
    let device = crate::device_from_name(&args.common.device)?;
    let data_dir = args.common.data_dir();
    let t0 = std::time::Instant::now();
    let files = crate::hub::resolve_model(&args.model)?;
    let tok = crate::tokenizer::load(&files.tokenizer)?;
    let model = args.common.load_model(&files, &device)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    if let Some(p) = &args.logits_out {
        let ids = data::eval_tokens(datasets[0], &data_dir, &tok)?;
        dump_logits(&model, &ids[..128.min(ids.len())], p)?;
    }
    let results = evaluate_all(&model, &tok, &datasets, &data_dir, args.common.max_windows)?;
    print_ppl_table(&results);
    if let Some(j) = &args.common.json {
        let report = EvalReport {
            command: command_line(),
            model: args.model.clone(),
            device: args.common.device.clone(),
            dtype: dtype_name(model.dtype),
            load_seconds,
            results,
        };
        crate::report::write_json_atomic(j, &report)?;
    }
    Ok(())
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Eval(a) => run_eval(a),
        Command::Prune(a) => crate::cli_prune::run_prune(a),
        Command::Mi(a) => crate::cli_mi::run_mi_inspect(a),
        Command::SelfCheck(a) => crate::cli_check::run_self_check(a),
    }
}
