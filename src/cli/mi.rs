//! `sparsegpt-mi mi`: the MI matrix of one linear's input channels, ordered by group, as a
//! PNG heatmap and JSON.

use super::common::CommonArgs;
use super::mixed::MiArgs;
use super::values::{GroupingMethod, SamplerKind};
use anyhow::{Context, Result};
use clap::Args;
use sparsegpt_mi::data::{calibration, source::needs, Corpus};
use sparsegpt_mi::mixed::{self, Mode};
use sparsegpt_mi::model::{self, LinearKind};
use sparsegpt_mi::output::atomic;
use sparsegpt_mi::output::targets::OutputRequest;
use std::path::PathBuf;

#[derive(Args, Clone)]
pub struct MiInspectArgs {
    /// Model directory (HF layout) or hub id.
    pub model: String,
    /// Decoder layer index.
    #[arg(long)]
    pub layer: usize,
    /// Linear: q_proj, k_proj, v_proj, out_proj, fc1 or fc2.
    #[arg(long)]
    pub linear: String,
    #[arg(long, default_value_t = 16)]
    pub nsamples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = SamplerKind::Python)]
    pub sampler: SamplerKind,
    /// Output directory for mi_L<layer>_<linear>.png and .json.
    #[arg(long, default_value = "test_results/mi")]
    pub out: PathBuf,
    #[command(flatten)]
    pub mi: MiArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: MiInspectArgs) -> Result<()> {
    let kind = LinearKind::from_path(&args.linear).ok_or_else(|| {
        anyhow::anyhow!("unknown --linear '{}': use q_proj, k_proj, v_proj, out_proj, fc1 or fc2", args.linear)
    })?;
    if args.nsamples == 0 {
        anyhow::bail!("--nsamples must be at least 1");
    }
    args.mi.validate()?;
    let stem = format!("mi_L{}_{}", args.layer, kind.path().rsplit('.').next().unwrap_or("linear"));
    let png_path = args.out.join(format!("{stem}.png"));
    let json_path = args.out.join(format!("{stem}.json"));
    let outputs =
        OutputRequest::new().folder("--out", &args.out).file("--out", &png_path).file("--out", &json_path).check()?;
    let device = args.common.device()?;
    let source = args.common.data_source()?;
    source.check_available(&needs(&[], Some(Corpus::C4)))?;
    let seqlen = args.common.seqlen;
    let files = model::files::resolve_model(&args.model, seqlen)?;
    outputs.check_inputs(&files)?;
    let config = model::read_config(&files.config)?;
    if args.layer >= config.num_hidden_layers {
        anyhow::bail!(
            "--layer {} is out of range: the model has {} decoder layers",
            args.layer,
            config.num_hidden_layers
        );
    }
    let tok = model::tokenizer::load_for_vocab(&files.tokenizer, config.vocab_size)?;
    let mut model = args.common.load_model(&files, &device)?;
    let docs = source.calibration_documents(Corpus::C4)?;
    let calib = calibration::build(&docs, &tok, args.nsamples, seqlen.get(), args.seed, args.sampler.into())
        .context("--nsamples")?;
    // The grouping MI mode would make (or its random control, if asked for).
    let mode = if args.mi.grouping == GroupingMethod::Random { Mode::Random } else { Mode::Mi };
    let cfg = args.mi.config(mode, false, args.seed).expect("a mixed mode");
    let batch = sparsegpt_mi::eval::windows_per_pass(&device);
    let found = mixed::inspect::inspect(&mut model, &calib.windows, args.layer, kind, &cfg, batch)?;
    let ordered = found.ordered();
    let groups = &found.groups;
    atomic::write_atomic(&png_path, &mixed::heatmap::heatmap_png(&ordered)?)?;
    let json = serde_json::json!({
        "model": args.model,
        "layer": args.layer,
        "linear": kind.path(),
        "channels": ordered.d,
        "nsamples": args.nsamples,
        "seqlen": seqlen,
        "mi_method": cfg.mi_method,
        "grouping": args.mi.grouping,
        "k": groups.sizes().len(),
        "group_sizes": groups.sizes(),
        "labels": groups.labels,
        "silhouette": groups.silhouette,
        "davies_bouldin": groups.davies_bouldin,
        "redundancy": groups.redundancy,
        "mi_seconds": groups.seconds,
        "order": found.order,
        "mi_ordered": ordered.values,
    });
    atomic::write_json_atomic(&json_path, &json)?;
    println!(
        "layer {} {}: {} channels, K = {}, sizes {:?}, silhouette {:.3}, Davies-Bouldin {:.3}",
        args.layer,
        kind.path(),
        ordered.d,
        groups.sizes().len(),
        groups.sizes(),
        groups.silhouette.unwrap_or(0.0),
        groups.davies_bouldin.unwrap_or(0.0)
    );
    println!("wrote {} and {}", png_path.display(), json_path.display());
    Ok(())
}
