//! Mixed precision, the project's own contribution: a linear's input channels are grouped
//! and each group gets its own bit width under an average bit budget, scale/zero metadata
//! included.
//!
//! Four modes, one code path (`planner`):
//! - baseline: uniform bits, the published algorithms (`UniformPlanner`);
//! - enhanced: channels grouped by importance rank (no MI), bits per group by the allocator;
//! - mi: channels grouped by mutual information (`mutual_info`, `grouping`);
//! - random: MI's group sizes, channels assigned at random (the control MI must beat). The
//!   sizes come from the MI grouping of the control run's own activations (equal to MI
//!   mode's in layer 0; later layers see differently compressed predecessors).

pub mod bit_alloc;
pub mod grouping;
pub mod grouping_tensor;
pub mod groups;
pub mod heatmap;
pub mod inspect;
pub mod kmeans;
pub mod mutual_info;
pub mod planner;

use crate::pipeline::planner::Planner;
use crate::solver::QuantScheme;
use bit_alloc::{BitBudget, BitPolicy};
use grouping::GroupingMethod;
use mutual_info::MiMethod;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Baseline,
    Enhanced,
    Mi,
    Random,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Enhanced => "enhanced",
            Mode::Mi => "mi",
            Mode::Random => "random",
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
}

/// The planner of a run: `base` for every linear in baseline mode, else mixed precision.
pub fn planner(mode: Mode, base: QuantScheme, mixed: Option<MixedConfig>) -> Box<dyn Planner> {
    match (mode, mixed) {
        (Mode::Baseline, _) | (_, None) => Box::new(planner::UniformPlanner { quant: base }),
        (_, Some(cfg)) => Box::new(planner::MixedPlanner { cfg }),
    }
}
