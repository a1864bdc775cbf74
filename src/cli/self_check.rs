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

/// One setting the check covers: the run's sweep settings, the linear's quantization and the
/// precision its scales are held in.
#[cfg(feature = "cuda")]
struct Setting {
    name: &'static str,
    settings: sparsegpt_mi::solver::SweepSettings,
    quant: sparsegpt_mi::solver::QuantScheme,
    scale_precision: sparsegpt_mi::solver::ScalePrecision,
}

/// The solver settings the check covers: the reference's runs plus grouped mixed precision.
#[cfg(feature = "cuda")]
fn settings(cols: usize) -> Vec<Setting> {
    use sparsegpt_mi::solver::{ColumnGroup, QuantScheme, ScalePrecision, Sparsity, SweepSettings};
    let sgpt50 = SweepSettings { sparsity: Sparsity::Unstructured(0.5), ..SweepSettings::published() };
    let dense = SweepSettings::published();
    let mut groups = Vec::new();
    let (mut start, mut k) = (0, 0);
    while start < cols {
        let len = [100, 37, 200, 64, 91][k % 5].min(cols - start);
        groups.push(ColumnGroup { start, len, bits: [2, 3, 4, 5][k % 4] });
        start += len;
        k += 1;
    }
    let setting = |name, settings: &SweepSettings, quant| Setting {
        name,
        settings: settings.clone(),
        quant,
        scale_precision: ScalePrecision::F32,
    };
    vec![
        setting("sgpt50", &sgpt50, QuantScheme::None),
        setting("sgpt50w4", &sgpt50, QuantScheme::PerRow { bits: 4, sym: false }),
        setting(
            "sgpt24",
            &SweepSettings { sparsity: Sparsity::NM { n: 2, m: 4 }, ..sgpt50.clone() },
            QuantScheme::None,
        ),
        setting("gptq3", &dense, QuantScheme::PerRow { bits: 3, sym: false }),
        setting("gptq2g128", &dense, QuantScheme::Grouped { bits: 2, sym: false, size: 128 }),
        setting(
            "gptq4actorder",
            &SweepSettings { act_order: true, ..dense.clone() },
            QuantScheme::PerRow { bits: 4, sym: true },
        ),
        // Grids on f16 scales, as f16 checkpoints are solved (solver::SweepSpec::scale_precision).
        Setting {
            scale_precision: ScalePrecision::F16,
            ..setting("gptq3g128f16", &dense, QuantScheme::Grouped { bits: 3, sym: false, size: 128 })
        },
        setting("sgpt50mixed", &sgpt50, QuantScheme::Mixed { groups, sym: false }),
    ]
}

/// The device solver against the host solver on one random rows × cols layer.
#[cfg(feature = "cuda")]
fn compare(
    device: &candle_core::Device,
    rows: usize,
    cols: usize,
    setting: &Setting,
    seed: u64,
) -> Result<sparsegpt_mi::solver::cuda::Comparison> {
    use sparsegpt_mi::solver::{LinearScheme, SweepSpec};
    let scheme = LinearScheme::uniform(setting.quant.clone());
    let spec = SweepSpec { settings: &setting.settings, scheme: &scheme, scale_precision: setting.scale_precision };
    sparsegpt_mi::solver::cuda::compare_with_host(device, rows, cols, spec, seed)
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
    compare(&device, 8, 128, &settings(128)[0], args.seed)?;
    let mut rows = Vec::new();
    println!(
        "| setting | rows×cols | fraction differing | max |Δw| | loss Δ | scales differing | pruned device / host | device s | host s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(r, c) in &shapes {
        for setting in settings(c) {
            let name = setting.name;
            if args.settings.as_deref().is_some_and(|only| !only.split(',').any(|s| s.trim() == name)) {
                continue;
            }
            let cmp = compare(&device, r, c, &setting, args.seed)?;
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
