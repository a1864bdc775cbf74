//! Mixed precision, the project's own contribution: a linear's input channels are grouped
//! and each group gets its own bit width under an average bit budget, scale/zero metadata
//! included.
//!
//! Four modes, one code path (`planner`):
//! - baseline: uniform bits, the published algorithms (`UniformPlanner`);
//! - enhanced (`Mode::ImportanceRank`): channels grouped by importance rank (no MI), bits per
//!   group by the allocator;
//! - mi: channels grouped by mutual information (`mutual_info`, `grouping`);
//! - random: MI's group sizes, channels assigned at random (the control MI must beat). The
//!   sizes come from the MI grouping of the control run's own activations (equal to MI
//!   mode's in layer 0; later layers see differently compressed predecessors).
//!
//! The controls that separate the effects of bits, grouping and sweep order (`PlanOptions`):
//! the sweep order of a mixed plan (groups swept by importance, or each column in its place
//! with its group's grid: `SweepOrder::Identity`, a `QuantScheme::Static`), uniform bits in
//! a mixed plan's order, the column importance the allocator uses (`bit_alloc::Importance`),
//! the redundancy discount, whether the allocator spends its leftover bits, and what it
//! minimises (`cost_model::BitObjective`). Two further uses of a channel partition:
//! scale-sharing groups at uniform bits (`Mode::Scales`, `scale_groups`) and the channel
//! sets of n:m pruning (`nm_sets`, any planner).

pub mod bit_alloc;
pub mod cost_model;
pub mod grouping;
pub mod grouping_tensor;
pub mod groups;
pub mod heatmap;
pub mod importance;
pub mod inspect;
pub mod kmeans;
pub mod mutual_info;
pub mod nm_sets;
pub mod planner;
pub mod scale_groups;

use crate::pipeline::planner::Planner;
use crate::solver::{QuantScheme, SweepSettings};
use anyhow::Result;
use bit_alloc::{BitBudget, BitPolicy};
use grouping::GroupingMethod;
use importance::Importance;
use mutual_info::MiMethod;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Baseline,
    /// Channels grouped by importance rank; named "enhanced" on the command line and in results.
    #[serde(rename = "enhanced")]
    ImportanceRank,
    Mi,
    Random,
    /// Uniform bits, scale-sharing groups of equal size chosen by a partition
    /// (`ScaleSource`) instead of contiguous ranges.
    Scales,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::ImportanceRank => "enhanced",
            Mode::Mi => "mi",
            Mode::Random => "random",
            Mode::Scales => "scales",
        }
    }
}

/// How a mixed plan orders the sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepOrder {
    /// Groups most important first, columns by decreasing H_jj inside a group (the mixed
    /// modes' default).
    #[default]
    Mixed,
    /// Each column in its place (natural order, or act-order with `--act-order`), on its
    /// group's grid fitted before the sweep (`QuantScheme::Static`).
    Identity,
}

/// Where the equal-size scale groups of `Mode::Scales` come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleSource {
    /// Spectral embedding of the MI similarity, then a balanced assignment.
    Mi,
    /// Seeded random equal-size partitions.
    Random,
    /// Balanced k-means on each column's weight range (min and max over rows).
    Range,
    /// Column j in group j / size (GPTQ's groups, as static groups: with --act-order,
    /// GPTQ's `static_groups`).
    Contiguous,
}

/// The study's controls and variants of a mixed-precision plan. `Default` is the mixed modes'
/// plan: mixed sweep order, `diag` importance, the redundancy discount, leftover bits spent.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub order: SweepOrder,
    /// The base scheme (`base`) in the sweep order the mixed plan would use.
    pub uniform_in_mixed_order: bool,
    pub importance: Importance,
    /// Group importance discounted by redundancy r as I·(1 − r/2).
    pub redundancy_discount: bool,
    /// Single-column moves after the group allocation (`bit_alloc::spend_leftover`).
    pub spend_leftover: bool,
    /// Seed of random partitions (the random control, random scale groups); None = `seed`.
    pub partition_seed: Option<u64>,
    /// Scale groups' source (`Mode::Scales` only).
    pub scale_source: ScaleSource,
    /// What the allocator minimises (`cost_model`).
    pub bit_objective: cost_model::BitObjective,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            order: SweepOrder::Mixed,
            uniform_in_mixed_order: false,
            importance: Importance::Diag,
            redundancy_discount: true,
            spend_leftover: true,
            partition_seed: None,
            scale_source: ScaleSource::Mi,
            bit_objective: cost_model::BitObjective::Legacy,
        }
    }
}

/// Groups per linear: a fixed number, or the best silhouette among `grouping::AUTO_CANDIDATES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupCount {
    Fixed(usize),
    Auto,
}

/// Everything a mixed-precision planner needs.
#[derive(Clone, Debug)]
pub struct MixedConfig {
    pub mode: Mode,
    pub groups: GroupCount,
    pub budget: BitBudget,
    pub mi_method: MiMethod,
    /// How MI (and the random control's sizes) cluster channels; never `Random` itself.
    pub clustering: GroupingMethod,
    pub bit_policy: BitPolicy,
    /// Tokens kept per linear input for the sample-based MI estimators.
    pub reservoir: usize,
    pub sym: bool,
    pub seed: u64,
    pub options: PlanOptions,
}

impl MixedConfig {
    pub fn partition_seed(&self) -> u64 {
        self.options.partition_seed.unwrap_or(self.seed)
    }
}

/// The planner of a run: `base` (the run's uniform scheme) for every linear in baseline
/// mode, else mixed precision or scale groups; with `nm`, n:m channel sets on top of either.
/// `sweep`: the settings every solve of the run uses.
pub fn planner(
    mode: Mode,
    sweep: &SweepSettings,
    base: QuantScheme,
    mixed: Option<MixedConfig>,
    nm: Option<nm_sets::NmConfig>,
) -> Result<Box<dyn Planner>> {
    let inner: Box<dyn Planner> = match (mode, mixed) {
        (Mode::Baseline, _) | (_, None) => Box::new(planner::UniformPlanner { quant: base }),
        (Mode::Scales, Some(cfg)) => Box::new(planner::ScalePlanner::new(cfg, &base)?),
        (_, Some(cfg)) => Box::new(planner::MixedPlanner::new(cfg, base, sweep)),
    };
    Ok(match nm {
        Some(cfg) if cfg.method != nm_sets::NmPermutation::None => Box::new(nm_sets::NmPlanner { inner, cfg }),
        _ => inner,
    })
}
