//! `self-check`: the GPU solver against the host solver on random layers, for machines
//! where the test suite cannot run (a GPU host without Rust). Prints a table and writes JSON.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone)]
pub struct SelfCheckArgs {
    /// Layer shapes rows×cols to compare on, e.g. 768x768,3072x768,768x3072.
    #[arg(long, default_value = "256x512,768x768,3072x768,768x3072")]
    pub shapes: String,
    /// Write the comparisons here (JSON).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Only these settings (comma-separated names), e.g. sgpt50w4; default all.
    #[arg(long)]
    pub settings: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The solver settings the check covers: the reference's runs plus grouped mixed precision.
#[cfg(feature = "cuda")]
fn settings(cols: usize) -> Vec<(&'static str, sparsegpt_mi::solver::SolverConfig)> {
    use sparsegpt_mi::solver::{ColumnGroup, QuantScheme, ScalePrecision, SolverConfig, Sparsity};
    let base = SolverConfig { sparsity: Sparsity::Unstructured(0.5), ..SolverConfig::published() };
    let mut groups = Vec::new();
    let (mut start, mut k) = (0, 0);
    while start < cols {
        let len = [100, 37, 200, 64, 91][k % 5].min(cols - start);
        groups.push(ColumnGroup { start, len, bits: [2, 3, 4, 5][k % 4] });
        start += len;
        k += 1;
    }
    vec![
        ("sgpt50", base.clone()),
        ("sgpt50w4", SolverConfig { quant: QuantScheme::PerRow { bits: 4, sym: false }, ..base.clone() }),
        ("sgpt24", SolverConfig { sparsity: Sparsity::NM { n: 2, m: 4 }, ..base.clone() }),
        (
            "gptq3",
            SolverConfig {
                sparsity: Sparsity::Dense,
                quant: QuantScheme::PerRow { bits: 3, sym: false },
                ..base.clone()
            },
        ),
        (
            "gptq2g128",
            SolverConfig {
                sparsity: Sparsity::Dense,
                quant: QuantScheme::Grouped { bits: 2, sym: false, size: 128 },
                ..base.clone()
            },
        ),
        (
            "gptq4actorder",
            SolverConfig {
                sparsity: Sparsity::Dense,
                quant: QuantScheme::PerRow { bits: 4, sym: true },
                act_order: true,
                ..base.clone()
            },
        ),
        (
            // Grids on f16 scales, as f16 checkpoints are solved (SolverConfig::scale_precision).
            "gptq3g128f16",
            SolverConfig {
                sparsity: Sparsity::Dense,
                quant: QuantScheme::Grouped { bits: 3, sym: false, size: 128 },
                scale_precision: ScalePrecision::F16,
                ..base.clone()
            },
        ),
        ("sgpt50mixed", SolverConfig { quant: QuantScheme::Mixed { groups, sym: false }, ..base }),
    ]
}

#[cfg(feature = "cuda")]
pub fn run(args: SelfCheckArgs) -> Result<()> {
    use anyhow::Context;
    let device = candle_core::Device::new_cuda(0).context("self-check needs a CUDA device")?;
    let shapes: Vec<(usize, usize)> = args
        .shapes
        .split(',')
        .map(|s| {
            let (r, c) = s.split_once('x').context("shape as ROWSxCOLS")?;
            Ok((r.trim().parse()?, c.trim().parse()?))
        })
        .collect::<Result<_>>()?;
    // Loads the kernels (PTX JIT) outside the timed runs.
    sparsegpt_mi::solver::cuda::compare_with_host(&device, 8, 128, &settings(128)[0].1, args.seed)?;
    let mut rows = Vec::new();
    println!(
        "| setting | rows×cols | fraction differing | max |Δw| | loss Δ | scales differing | pruned device / host | device s | host s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(r, c) in &shapes {
        for (name, cfg) in settings(c) {
            if args.settings.as_deref().is_some_and(|only| !only.split(',').any(|s| s.trim() == name)) {
                continue;
            }
            let cmp = sparsegpt_mi::solver::cuda::compare_with_host(&device, r, c, &cfg, args.seed)?;
            println!(
                "| {name} | {r}×{c} | {:.2e} | {:.2e} | {:.2e} | {:.2e} | {} / {} | {:.3} | {:.3} |",
                cmp.fraction_differing,
                cmp.max_abs_difference,
                cmp.loss_relative_difference,
                cmp.grid_scales_differing,
                cmp.pruned_device,
                cmp.pruned_host,
                cmp.device_s,
                cmp.host_s
            );
            rows.push(serde_json::json!({ "setting": name, "comparison": cmp }));
        }
    }
    if let Some(path) = &args.json {
        sparsegpt_mi::output::atomic::write_json_atomic(
            path,
            &serde_json::json!({ "device": "cuda:0", "seed": args.seed, "runs": rows }),
        )?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
pub fn run(_args: SelfCheckArgs) -> Result<()> {
    anyhow::bail!(
        "self-check compares the GPU solver with the host one: this binary was built without the cuda feature"
    )
}
