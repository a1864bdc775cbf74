//! `sparsegpt-mi prune`: flags and defaults as the published `opt.py`.

use super::common::{command_line, parse_tasks, print_ppl_table, run_tasks, CommonArgs, ReportArgs};
use super::mixed::MiArgs;
use super::values::{ActGroups, HessianAccumulation, HinvPrecision, SamplerKind, SaveDtype, SaveFormat};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use serde::Serialize;
use sparsegpt_mi::data::calibration;
use sparsegpt_mi::data::source::{needs, DataSource, Provenance};
use sparsegpt_mi::data::Corpus;
use sparsegpt_mi::mixed;
use sparsegpt_mi::model::family::HeadLayout;
use sparsegpt_mi::model::files::ModelFiles;
use sparsegpt_mi::model::{self, DecoderConfig};
use sparsegpt_mi::output::codes::CodeStore;
use sparsegpt_mi::output::export::{self, PlannedQuantization};
use sparsegpt_mi::output::targets::{CheckedOutputs, OutputRequest};
use sparsegpt_mi::output::{atomic, summary};
use sparsegpt_mi::pipeline::{self, CompressConfig};
use sparsegpt_mi::solver::{QuantScheme, Sparsity, SweepSettings};
use sparsegpt_mi::tasks::files::{load_tasks, TaskData};
use sparsegpt_mi::tasks::Task;
use std::path::PathBuf;
use std::time::Instant;
use tokenizers::Tokenizer;

#[derive(Args, Clone, Serialize)]
pub struct PruneArgs {
    /// Model directory (HF layout) or hub id such as facebook/opt-125m.
    pub model: String,
    /// Calibration source: c4 (the papers'), wikitext2 or ptb.
    #[arg(default_value = "c4")]
    pub dataset: String,
    /// Target unstructured sparsity in [0, 1); 0 with --prunen 0 = no pruning.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub sparsity: f64,
    /// N of N:M semi-structured sparsity (0 = off).
    #[arg(long, default_value_t = 0)]
    pub prunen: usize,
    /// M of N:M semi-structured sparsity.
    #[arg(long, default_value_t = 0)]
    pub prunem: usize,
    /// Weight bits, 2..8; 16 = no quantization.
    #[arg(long, default_value_t = 16)]
    pub wbits: u32,
    /// Columns per quantization group (-1 = one grid per row).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub groupsize: i64,
    /// Symmetric quantization.
    #[arg(long)]
    pub sym: bool,
    /// GPTQ act-order: quantize columns by decreasing Hessian diagonal (with --groupsize:
    /// group-aware, see --act-groups). Off by default, as published: it helps quantization alone
    /// but hurt SparseGPT 50% + 4-bit on a fixture (README, "Does MI grouping pay?").
    #[arg(long)]
    pub act_order: bool,
    /// With --act-order and --groupsize, how the groups are formed. group-aware (the default;
    /// GPTQModel's act_group_aware): groups stay contiguous column ranges (no g_idx map; every
    /// GPTQ kernel and compressed-tensors load it), swept by their largest Hessian diagonal,
    /// columns inside a group by theirs. dynamic: the published GPTQ's, each group the next
    /// --groupsize columns of the act-order sweep (a g_idx map, desc_act). Group-aware became
    /// the default by study 2's rule (README, "Does MI grouping pay?"); the result JSON records
    /// the one used.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act_groups: Option<ActGroups>,
    /// The same as --act-groups group-aware (the flag earlier runs recorded).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub act_group_aware: bool,
    /// Calibration windows (of --seqlen tokens).
    #[arg(long, default_value_t = 128)]
    pub nsamples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Calibration window sampler: python (same windows as the published code) or xoshiro.
    #[arg(long, value_enum, default_value_t = SamplerKind::Python)]
    pub sampler: SamplerKind,
    /// Dampening, as a fraction of the mean Hessian diagonal.
    #[arg(long, default_value_t = 0.01)]
    pub percdamp: f64,
    #[arg(long, default_value_t = 128)]
    pub blocksize: usize,
    /// Precision of the inverse-Hessian factorisation: f32 as the published code, or f64.
    #[arg(long, value_enum, default_value_t = HinvPrecision::F32)]
    pub hinv_precision: HinvPrecision,
    /// The published code's update order (errors to later blocks once per block, one GEMM)
    /// instead of the default eager one: same arithmetic, other rounding. Host solver only
    /// (the GPU solver always sweeps in that order).
    #[arg(long)]
    pub lazy_updates: bool,
    /// Solve on the host CPU even when the model runs on a GPU (the GPU solver needs cuSOLVER).
    #[arg(long)]
    pub host_solver: bool,
    /// How H is accumulated: running-average (the published `add_batch`: rescaled after every
    /// calibration sequence, in f32) or sum (one f32 sum scaled at the end; the same H up to
    /// rounding).
    #[arg(long, value_enum, default_value_t)]
    pub hessian_accumulation: HessianAccumulation,
    /// GPTQ llama.py's --true-sequential: each input site's linears (q/k/v; the attention
    /// output; fc1 or gate/up; fc2 or down) solved before the next site's calibration pass, so
    /// later sites see the compressed earlier ones. The default for uniform quantization
    /// (--wbits < 16 without a mixed or scales mode), by study 2's rule (README, "Does MI
    /// grouping pay?"); elsewhere, not measured there, the published single pass. The result
    /// JSON records the one used.
    #[arg(long, overrides_with = "no_true_sequential")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub true_sequential: bool,
    /// The published behaviour: one calibration pass per layer for all its linears, as the
    /// published SparseGPT and GPTQ code (opt.py; llama.py without --true-sequential) make.
    #[arg(long, overrides_with = "true_sequential")]
    #[serde(skip)]
    pub no_true_sequential: bool,
    /// Keep solved weights and quantization scales in the compute dtype (`--dtype`) instead of
    /// rounding them to the checkpoint's: what the published code does when it runs in that
    /// dtype (its float32 CPU runs keep f32 weights of a bf16 checkpoint). Without it the
    /// evaluated model is the one `--save` stores.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_compute_dtype: bool,
    /// Compress layers i with minlayer <= i < maxlayer.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub minlayer: i64,
    #[arg(long, default_value_t = 1000)]
    pub maxlayer: i64,
    /// Magnitude pruning baseline instead of SparseGPT.
    #[arg(long)]
    pub gmp: bool,
    /// Save the compressed model (HF layout) to this directory: a new one, an empty one, or a
    /// previous export of this tool (replaced).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// How --save stores it: dense (floats, the default), gptq or compressed-tensors (packed
    /// checkpoints serving engines load; see README "Saving").
    #[arg(long, value_enum)]
    pub save_format: Option<SaveFormat>,
    /// Store the model in this dtype instead of the checkpoint's (f16, bf16, f32): every weight
    /// is rounded to it on load, compressed weights and quantization scales are fitted in it,
    /// and --save writes it (e.g. f16 for a GPTQ export of a bf16 model). The compute dtype
    /// (--dtype) must hold it exactly: the same dtype, or f32.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_dtype: Option<SaveDtype>,
    /// Let --save replace an existing directory that is not a previous export, and
    /// everything in it.
    #[arg(long)]
    pub overwrite: bool,
    /// Datasets to evaluate after compression (empty = none).
    #[arg(long, default_value = "wikitext2,ptb,c4")]
    pub eval_datasets: String,
    /// Zero-shot tasks to score after compression, as `eval --tasks` (comma-separated, or all).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_tasks: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub mi: MiArgs,
    #[command(flatten)]
    #[serde(skip)]
    pub report: ReportArgs,
    #[command(flatten)]
    #[serde(skip)]
    pub common: CommonArgs,
}

impl PruneArgs {
    /// Every check that can fail, before any work starts.
    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.sparsity) {
            bail!("--sparsity {} is outside [0, 1)", self.sparsity);
        }
        if self.prunen != 0 || self.prunem != 0 {
            if self.prunen == 0 || self.prunem == 0 || self.prunen >= self.prunem {
                bail!("--prunen {} --prunem {}: N:M sparsity needs 0 < N < M", self.prunen, self.prunem);
            }
            if self.sparsity != 0.0 {
                bail!("give either --sparsity or --prunen/--prunem, not both");
            }
        }
        if self.wbits != 16 && !(2..=8).contains(&self.wbits) {
            bail!("--wbits {} is outside 2..8 (16 = no quantization)", self.wbits);
        }
        if self.groupsize == 0 || self.groupsize < -1 {
            bail!("--groupsize {} must be positive, or -1 for one grid per row", self.groupsize);
        }
        if self.save_format.is_some() && self.save.is_none() {
            bail!("--save-format needs --save DIR");
        }
        if self.save_dtype.is_some() && self.save.is_none() {
            bail!("--save-dtype needs --save DIR");
        }
        if self.save.is_some() && self.keep_compute_dtype {
            bail!("--keep-compute-dtype evaluates weights that --save would round to the checkpoint's dtype: give one of them");
        }
        if self.nsamples == 0 {
            bail!("--nsamples must be at least 1");
        }
        if self.blocksize == 0 {
            bail!("--blocksize must be at least 1");
        }
        if self.percdamp.is_nan() || self.percdamp <= 0.0 {
            bail!("--percdamp must be positive");
        }
        Corpus::parse(&self.dataset)?;
        Corpus::parse_list(&self.eval_datasets)?;
        self.mi.validate()?;
        let mode = self.mi.mode();
        if mode == mixed::Mode::Scales && (self.wbits >= 16 || self.groupsize <= 0) {
            bail!("--grouping-use scales needs --wbits and --groupsize (the size of every scale group)");
        }
        if self.act_group_aware && self.act_groups == Some(ActGroups::Dynamic) {
            bail!("--act-group-aware is --act-groups group-aware: not with --act-groups dynamic");
        }
        if (self.act_groups.is_some() || self.act_group_aware) && !self.act_groups_apply() {
            let flag = if self.act_groups.is_some() { "--act-groups" } else { "--act-group-aware" };
            bail!("{flag} chooses how --act-order sweeps --groupsize groups: give --act-order, --wbits and --groupsize, without a mixed or scales mode");
        }
        if self.mi.uniform_in_mixed_order && self.wbits >= 16 {
            bail!("--uniform-in-mixed-order quantizes at --wbits: give it");
        }
        if self.mi.nm_permutation != super::values::NmPermutation::None {
            if self.prunem == 0 {
                bail!("--nm-permutation permutes the channels of n:m pruning: give --prunen/--prunem");
            }
            if self.lazy_updates {
                bail!("--nm-permutation needs the eager sweep: not with --lazy-updates");
            }
        } else if self.mi.fold_permutations {
            bail!("--fold-permutations folds the channel sets of --nm-permutation: give --nm-permutation mi|random|magnitude");
        }
        Ok(())
    }

    /// Checks that need the model's shapes. A `--groupsize` that does not divide a width
    /// gives that linear a short last group, as the published code does.
    fn validate_shapes(&self, cfg: &DecoderConfig) -> Result<()> {
        let n = cfg.num_hidden_layers;
        if self.layers(n).is_empty() {
            bail!(
                "--minlayer {} --maxlayer {} selects none of the model's {n} layers (0..{}): nothing would be compressed",
                self.minlayer,
                self.maxlayer,
                n.saturating_sub(1)
            );
        }
        // The linears' input widths (the attention output's differs where heads × head_dim does).
        let mut widths = vec![cfg.hidden_size, cfg.ffn_dim];
        if cfg.q_width() != cfg.hidden_size {
            widths.push(cfg.q_width());
        }
        for &width in &widths {
            if self.prunem > 0 && width % self.prunem != 0 {
                bail!("--prunem {} does not divide the layer width {width}", self.prunem);
            }
        }
        self.mi.validate_shapes(cfg.hidden_size.min(cfg.ffn_dim))?;
        let format = self.save_format();
        let outputs = [cfg.hidden_size, cfg.ffn_dim, cfg.q_width(), cfg.kv_width()];
        export::check_format(format, &self.planned_quantization(), &widths, &outputs)
            .map_err(|r| save_format_refusal(&r))?;
        Ok(())
    }

    /// `--save-dtype`'s checks before any weight is read: the compute dtype holds it exactly,
    /// and the format can store it (the checkpoint's own dtype is checked once it is loaded).
    fn validate_storage(&self, cfg: &DecoderConfig, device: &Device) -> Result<()> {
        let Some(stored) = self.save_dtype.map(|d| export::SaveDtype::from(d).dtype()) else { return Ok(()) };
        let compute = self.common.dtype(device, cfg);
        if !model::holds_exactly(compute, stored) {
            bail!(
                "--save-dtype {}: the model would compute in {compute:?}, which does not hold {stored:?} values exactly (give --dtype f32, or the same dtype)",
                summary::dtype_name(stored)
            );
        }
        export::check_storage(self.save_format(), stored).map_err(|r| save_format_refusal(&r))
    }

    fn save_format(&self) -> export::SaveFormat {
        self.save_format.unwrap_or_default().into()
    }

    /// What the run will quantize, for the save formats' checks.
    fn planned_quantization(&self) -> PlannedQuantization {
        let mixed = self.mi.mode() != mixed::Mode::Baseline;
        PlannedQuantization {
            quantized: !self.gmp && (mixed || self.wbits < 16),
            uniform_bits: (!mixed).then_some(self.wbits),
            group_size: (self.groupsize > 0 && !mixed).then_some(self.groupsize as usize),
            permuted_groups: self.resolved_act_groups() == Some(ActGroups::Dynamic),
        }
    }

    /// Whether `--wbits` is one uniform width (below 16, no mixed or scales mode): where study 2
    /// measured its defaults.
    fn uniform_wbits(&self) -> bool {
        self.wbits < 16 && self.mi.mode() == mixed::Mode::Baseline
    }

    /// Whether the run's act-order sweeps `--groupsize` groups of a uniform scheme, where
    /// `--act-groups` applies (the mixed and scales modes plan their own groups).
    fn act_groups_apply(&self) -> bool {
        self.act_order && self.groupsize > 0 && self.uniform_wbits()
    }

    /// `--act-groups` as the run uses it where it applies: group-aware unless dynamic is asked
    /// for (None elsewhere: act-order, if any, is the published plain sweep).
    fn resolved_act_groups(&self) -> Option<ActGroups> {
        self.act_groups_apply().then(|| self.act_groups.unwrap_or(ActGroups::GroupAware))
    }

    /// Whether each input site gets its own calibration pass: as asked, else for uniform
    /// quantization (the cells study 2 measured it in; `--gmp` makes no calibration pass).
    fn resolved_true_sequential(&self) -> bool {
        if self.no_true_sequential {
            false
        } else {
            self.true_sequential || (self.uniform_wbits() && !self.gmp)
        }
    }

    fn sparsity(&self) -> Sparsity {
        if self.prunen > 0 {
            Sparsity::NM { n: self.prunen, m: self.prunem }
        } else if self.sparsity > 0.0 {
            Sparsity::Unstructured(self.sparsity)
        } else {
            Sparsity::Dense
        }
    }

    fn base_quant(&self) -> QuantScheme {
        if self.wbits >= 16 {
            QuantScheme::None
        } else if self.groupsize > 0 {
            QuantScheme::Grouped { bits: self.wbits, sym: self.sym, size: self.groupsize as usize }
        } else {
            QuantScheme::PerRow { bits: self.wbits, sym: self.sym }
        }
    }

    fn sweep_settings(&self) -> SweepSettings {
        SweepSettings {
            sparsity: self.sparsity(),
            blocksize: self.blocksize,
            percdamp: self.percdamp,
            act_order: self.act_order,
            act_groups: self.resolved_act_groups().map_or(sparsegpt_mi::solver::ActGroups::Dynamic, Into::into),
            hinv_precision: self.hinv_precision.into(),
            lazy_updates: self.lazy_updates,
        }
    }

    /// The layers compressed, as opt.py's `--minlayer`/`--maxlayer` select them.
    fn layers(&self, n_layers: usize) -> std::ops::Range<usize> {
        let n = i64::try_from(n_layers).unwrap_or(i64::MAX);
        let clamp = |v: i64| v.clamp(0, n) as usize;
        clamp(self.minlayer)..clamp(self.maxlayer)
    }

    /// Every path the run writes: the result JSON (given or default) and the export.
    fn outputs(&self) -> OutputRequest {
        let json = self.report.json.clone().unwrap_or_else(|| self.default_json_path());
        let req = OutputRequest::new().file("--json", json);
        match &self.save {
            Some(dir) => req.save_dir("--save", dir, self.overwrite),
            None => req,
        }
    }

    fn default_json_path(&self) -> PathBuf {
        let name = self.model.trim_end_matches('/').rsplit('/').next().unwrap_or("model").to_string();
        let mut tag = format!("{name}_{}", self.mi.mode().name());
        if self.gmp {
            tag.push_str("_gmp");
        }
        if self.prunen > 0 {
            tag.push_str(&format!("_{}of{}", self.prunen, self.prunem));
        } else {
            tag.push_str(&format!("_s{}", self.sparsity));
        }
        tag.push_str(&format!("_w{}", self.wbits));
        if let Some(b) = self.mi.target_avg_bits {
            tag.push_str(&format!("_b{b}"));
        }
        tag.push_str(&format!("_n{}_seed{}.json", self.nsamples, self.seed));
        PathBuf::from("test_results").join(tag)
    }
}

/// A format's refusal in terms of the flags that chose the format and the run.
fn save_format_refusal(r: &export::FormatRefusal) -> anyhow::Error {
    use export::FormatRefusal as R;
    match r {
        R::NotQuantized(format) => anyhow::anyhow!(
            "--save-format {} stores quantized weights, and this run does not quantize (give --wbits 2..8 or a mixed-precision mode; or save dense)",
            format.name()
        ),
        R::GptqBits(b) => {
            anyhow::anyhow!("--save-format gptq holds 2, 3, 4 or 8 bits, not --wbits {b} (compressed-tensors holds 1 to 8)")
        }
        R::GptqWidth(w) => anyhow::anyhow!(
            "--save-format gptq: layer width {w} is not a multiple of 32, which GPTQ loaders need for inputs and outputs"
        ),
        R::GroupDoesNotDivide { group, width } => anyhow::anyhow!(
            "--save-format compressed-tensors: --groupsize {group} does not divide the layer width {width}, and the format has no short last group (use --save-format gptq, or a group size dividing every width)"
        ),
        R::ActOrderWithGroups => anyhow::anyhow!(
            "--save-format compressed-tensors cannot hold --act-groups dynamic: its permuted-group act-order (\"group\", with weight_g_idx) was removed in compressed-tensors 0.20 (use --save-format gptq, or the default group-aware act-order)"
        ),
        R::GptqDtype(dtype) => anyhow::anyhow!(
            "--save-format gptq stores f16 scales and weights, and this model is stored in {dtype:?}: give --save-dtype f16 (every weight rounded to f16 before compression), or use --save-format compressed-tensors, which keeps {dtype:?}"
        ),
    }
}

pub fn run(args: PruneArgs) -> Result<()> {
    execute(PrunePlan::new(CheckedFlags::new(args)?)?)
}

/// Stage 1: the flags checked on their own, every output path among them; nothing read yet.
struct CheckedFlags {
    args: PruneArgs,
    outputs: CheckedOutputs,
    device: Device,
    calib_source: Corpus,
    eval_sets: Vec<Corpus>,
    tasks: Vec<Task>,
}

impl CheckedFlags {
    fn new(mut args: PruneArgs) -> Result<Self> {
        args.validate()?;
        // The result JSON's args record the act-order groups the run uses, default included.
        args.act_groups = args.resolved_act_groups();
        args.true_sequential = args.resolved_true_sequential();
        args.report.validate()?;
        let outputs = args.outputs().check()?;
        if args.overwrite && outputs.save().is_none() {
            bail!("--overwrite is for --save: give --save DIR");
        }
        let device = args.common.device()?;
        let calib_source = Corpus::parse(&args.dataset)?;
        let eval_sets = Corpus::parse_list(&args.eval_datasets)?;
        let tasks = parse_tasks("--eval-tasks", args.eval_tasks.as_deref(), args.report.limit)?;
        Ok(CheckedFlags { args, outputs, device, calib_source, eval_sets, tasks })
    }
}

/// Stage 2: every input known before the model is loaded — the data the run reads, the model's
/// files, its config and tokenizer — and every check that needs them passed.
struct PrunePlan {
    flags: CheckedFlags,
    source: DataSource,
    data: Vec<Provenance>,
    task_data: Vec<TaskData>,
    files: ModelFiles,
    tok: Tokenizer,
    /// When the model's files began to be resolved (the result's `load_s` counts from here).
    started: Instant,
}

impl PrunePlan {
    fn new(flags: CheckedFlags) -> Result<Self> {
        let args = &flags.args;
        // Data problems surface before any model is downloaded or loaded.
        let source = args.common.data_source()?;
        let data = source.check_available(&needs(&flags.eval_sets, (!args.gmp).then_some(flags.calib_source)))?;
        let task_data = load_tasks(&source, &flags.tasks, args.report.limit)?;
        let started = Instant::now();
        let files = model::files::resolve_model(&args.model, args.common.seqlen)?;
        flags.outputs.check_inputs(&files)?;
        let config = model::read_config(&files.config)?;
        args.validate_shapes(&config)?;
        args.validate_storage(&config, &flags.device)?;
        let tok = model::tokenizer::load_for_vocab(&files.tokenizer, config.vocab_size)?;
        Ok(PrunePlan { flags, source, data, task_data, files, tok, started })
    }
}

/// Stage 3: the run — load, calibrate, compress, evaluate, save, report — writing only to the
/// paths the checked outputs hand out.
fn execute(plan: PrunePlan) -> Result<()> {
    let PrunePlan { flags, source, data, task_data, files, tok, started } = plan;
    let CheckedFlags { args, outputs, device, calib_source, eval_sets, tasks: _ } = flags;
    let stored_as = args.save_dtype.map(|d| export::SaveDtype::from(d).dtype());
    let mut model = args.common.load_model_stored_as(&files, &device, stored_as)?;
    export::check_storage(args.save_format(), model.storage_dtype).map_err(|r| save_format_refusal(&r))?;
    if args.keep_compute_dtype {
        model.storage_dtype = model.dtype;
    }
    let load_s = started.elapsed().as_secs_f64();
    let seqlen = args.common.seqlen;

    let t0 = Instant::now();
    let calib = if args.gmp {
        calibration::Calibration { windows: vec![], sources: vec![] }
    } else {
        let docs = source.calibration_documents(calib_source)?;
        calibration::build(&docs, &tok, args.nsamples, seqlen.get(), args.seed, args.sampler.into())
            .context("--nsamples")?
    };
    let calibration_s = t0.elapsed().as_secs_f64();

    let cfg = CompressConfig {
        sweep: args.sweep_settings(),
        magnitude: args.gmp,
        layers: args.layers(model.layers.len()),
        batch: sparsegpt_mi::eval::windows_per_pass(&device),
        seed: args.seed,
        host_solver: args.host_solver,
        hessian_accumulation: args.hessian_accumulation.into(),
        true_sequential: args.true_sequential,
        fold_nm_sets: args.mi.fold_permutations,
    };
    let mode = args.mi.mode();
    let mixed_cfg = args.mi.config(mode, args.sym, args.seed);
    let nm = args.mi.nm_config(args.prunen, args.prunem, args.seed, HeadLayout::of(&model.config));
    let planner = mixed::planner(mode, &cfg.sweep, args.base_quant(), mixed_cfg, nm)?;
    // The packed formats need every quantized linear's integer codes.
    let codes = CodeStore::new();
    let (linears, times) = if args.save.is_some() && args.save_format() != export::SaveFormat::Dense {
        pipeline::compress_into(&mut model, &calib.windows, &cfg, &*planner, &codes)?
    } else {
        pipeline::compress(&mut model, &calib.windows, &cfg, &*planner)?
    };

    let zero_fraction = summary::zero_fraction(&linears);
    let pruned_fraction = summary::pruned_fraction(&linears);
    let bits = summary::BitSummary::from_reports(&linears, args.wbits);
    println!(
        "compressed {} linears in {:.1}s: {:.4} pruned, {:.4} zero, {}",
        linears.len(),
        times.total_s,
        pruned_fraction,
        zero_fraction,
        bits.describe()
    );

    let eval = sparsegpt_mi::eval::evaluate_all(&model, &tok, &eval_sets, &source, seqlen, args.report.max_windows)?;
    print_ppl_table(&eval);
    let task_results = run_tasks(&model, &tok, &task_data)?;
    let saved = match outputs.save() {
        Some(target) => {
            let format = args.save_format();
            let request = export::SaveRequest {
                format,
                dtype: model.storage_dtype,
                packed: (format != export::SaveFormat::Dense).then_some(export::PackedRun {
                    codes: &codes,
                    sym: args.sym,
                    sweep: &cfg.sweep,
                    true_sequential: cfg.true_sequential,
                }),
            };
            let saved = export::save(&model, &files, target, &request)?;
            for note in &saved.notes {
                eprintln!("note: {note}");
            }
            println!("saved to {} ({}): {}", target.given.display(), saved.format.name(), saved.sizes.describe());
            Some(saved)
        }
        None => None,
    };
    let report = summary::PruneReport {
        command: command_line(),
        model: args.model.clone(),
        device: args.common.device.clone(),
        dtype: summary::dtype_name(model.dtype),
        seqlen,
        mode,
        ppl: eval.iter().map(|p| (p.dataset.clone(), p.ppl)).collect(),
        eval,
        zero_fraction,
        pruned_fraction,
        bits,
        times,
        load_s,
        calibration_s,
        peak_rss_mib: summary::peak_rss_mib(),
        calibration_windows: calib.sources,
        data,
        linears,
        tasks: task_results,
        saved,
        args,
    };
    let json_path = outputs.file("--json").expect("the result file is one of the outputs");
    atomic::write_json_atomic(json_path, &report)?;
    println!("result: {}", json_path.display());
    Ok(())
}
