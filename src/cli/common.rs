//! Flags every subcommand that loads a model shares, and small printing helpers.

use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;
use sparsegpt_mi::data::source::DataSource;
use sparsegpt_mi::eval::Perplexity;
use sparsegpt_mi::model::{self, files::ModelFiles, OptModel};
use sparsegpt_mi::protocol::SeqLen;
use sparsegpt_mi::tasks::encode::Encoder;
use sparsegpt_mi::tasks::evaluate::{evaluate_task, table, TaskResult};
use sparsegpt_mi::tasks::files::TaskData;
use sparsegpt_mi::tasks::Task;
use std::path::PathBuf;

/// Where the model runs and where the data comes from.
#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Data directory (layout in README.md); default $SPARSEGPT_MI_DATA_DIR, else the corpora
    /// are fetched from the Hugging Face hub's dataset repos into the HF cache.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Keep decoder layers in host memory and bring one at a time to the device: for models
    /// whose weights do not fit on the GPU (slower: each layer crosses PCIe per pass).
    #[arg(long)]
    pub offload: bool,
    /// Weights and activations: auto (on a GPU: OPT in f16 as the published code, the rotary
    /// families in the checkpoint's dtype, bf16 where config.json names none; f32 on the CPU),
    /// f16 or f32. Hessians and statistics are accumulated in f32/f64 either way.
    #[arg(long, value_enum, default_value_t = ComputeDtype::Auto)]
    pub dtype: ComputeDtype,
    /// Tokens per window, calibration and evaluation alike: 2048 as the published protocol
    /// (Wanda's Llama-2 runs use 4096); at least 2, at most the model's max_position_embeddings.
    #[arg(long, default_value_t = SeqLen::PUBLISHED, value_parser = parse_seqlen)]
    pub seqlen: SeqLen,
}

/// `--seqlen`'s value, checked on its own (against the model when its config is read).
fn parse_seqlen(value: &str) -> std::result::Result<SeqLen, String> {
    let tokens: usize = value.trim().parse().map_err(|_| format!("'{value}' is not a token count"))?;
    SeqLen::new(tokens).map_err(|e| e.to_string())
}

/// What `eval` and `prune` report, and how much of it.
#[derive(Args, Clone)]
pub struct ReportArgs {
    /// Evaluate only the first N windows of each dataset (quick looks; the count is reported).
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Score only the first N documents of each zero-shot task (a quick look).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeDtype {
    Auto,
    F16,
    F32,
}

impl ReportArgs {
    /// Checks before any work: a run must evaluate something (its result file is checked
    /// with the command's other outputs, `output::targets`).
    pub fn validate(&self) -> Result<()> {
        if self.max_windows == Some(0) {
            anyhow::bail!("--max-windows 0 evaluates nothing: give at least 1 (or leave it out for every window)");
        }
        if self.limit == Some(0) {
            anyhow::bail!("--limit 0 scores nothing: give at least 1 (or leave it out for every document)");
        }
        Ok(())
    }
}

impl CommonArgs {
    /// Where the corpora come from: --data-dir, else $SPARSEGPT_MI_DATA_DIR, else the hub.
    pub fn data_source(&self) -> Result<DataSource> {
        DataSource::from_env(self.data_dir.clone())
    }

    pub fn device(&self) -> Result<Device> {
        device_from_name(&self.device)
    }

    pub fn dtype(&self, device: &Device, config: &model::DecoderConfig) -> DType {
        match self.dtype {
            ComputeDtype::Auto => model::auto_dtype(device, config),
            ComputeDtype::F16 => DType::F16,
            ComputeDtype::F32 => DType::F32,
        }
    }

    /// Loads the model onto `device`, offloaded if asked.
    pub fn load_model(&self, files: &ModelFiles, device: &Device) -> Result<OptModel> {
        self.load_model_stored_as(files, device, None)
    }

    /// Loads the model, stored in `stored_as` instead of the checkpoint's dtype if given
    /// (`model::LoadOptions::stored_as`).
    pub fn load_model_stored_as(
        &self,
        files: &ModelFiles,
        device: &Device,
        stored_as: Option<DType>,
    ) -> Result<OptModel> {
        let dtype = self.dtype(device, &model::read_config(&files.config)?);
        model::load(files, device, model::LoadOptions { dtype, offload: self.offload, stored_as })
    }
}

/// The compute device named by a `--device` flag value.
pub fn device_from_name(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !candle_core::utils::cuda_is_available() {
                anyhow::bail!("--device cuda: this binary was built without CUDA; rebuild with `--features cuda` (scripts/build_cuda.sh)");
            }
            Device::new_cuda(0).map_err(|e| anyhow::anyhow!("--device cuda: cannot open GPU 0: {e}"))
        }
        other => anyhow::bail!("unknown --device '{other}': use cpu or cuda"),
    }
}

/// The zero-shot tasks a run names (`--tasks` / `--eval-tasks`), checked with `--limit`.
pub fn parse_tasks(flag: &str, list: Option<&str>, limit: Option<usize>) -> Result<Vec<Task>> {
    match list {
        Some(l) => Task::parse_list(l).map_err(|e| anyhow::anyhow!("{flag}: {e}")),
        None if limit.is_some() => anyhow::bail!("--limit counts documents of zero-shot tasks: give {flag} too"),
        None => Ok(Vec::new()),
    }
}

/// Scores every task's documents on the model, printing lm-eval's table.
pub fn run_tasks(model: &OptModel, tok: &tokenizers::Tokenizer, data: &[TaskData]) -> Result<Vec<TaskResult>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    // OPT's tokenizer: `</s>` is the BOS it prepends and lm-eval's prefix token.
    let encoder = Encoder {
        tokenizer: tok,
        bos_text: Some(model::tokenizer::BOS_TOKEN.to_string()),
        prefix_token_id: model::tokenizer::BOS_ID,
    };
    let results = data.iter().map(|d| evaluate_task(model, &encoder, d)).collect::<Result<Vec<_>>>()?;
    print!("{}", table(&results));
    Ok(results)
}

pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

pub fn print_ppl_table(results: &[Perplexity]) {
    println!("{:<10} {:>12} {:>8} {:>10} {:>9}", "dataset", "ppl", "windows", "tokens", "seconds");
    for r in results {
        println!("{:<10} {:>12.4} {:>8} {:>10} {:>9.1}", r.dataset, r.ppl, r.windows, r.tokens, r.seconds);
    }
}
