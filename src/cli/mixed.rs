//! The mixed-precision flags of `prune` (and `mi`), checked and turned into the library's
//! `MixedConfig`. The mode follows from three flags, as the mission's command spells it:
//! - baseline: no `--target-avg-bits` (uniform `--wbits`);
//! - enhanced: `--use-mi-grouping 0 --target-avg-bits B`;
//! - mi: `--use-mi-grouping 1 --target-avg-bits B`;
//! - random: `--grouping random --target-avg-bits B`;
//! - scales: `--grouping-use scales` (uniform `--wbits`, `--groupsize` groups chosen by
//!   `--grouping`: spectral = MI, random, range, contiguous).
//!
//! The study's controls (`--order`, `--uniform-in-mixed-order`, `--importance`,
//! `--redundancy-discount`, `--leftover`, `--partition-seed`) and the n:m channel sets
//! (`--nm-permutation`) are options of these modes.

use super::values::{BitObjective, BitPolicy, GroupingMethod, Importance, MiMethod, NmPermutation, SweepOrder};
use anyhow::{bail, Result};
use clap::Args;
use serde::{Serialize, Serializer};
use sparsegpt_mi::mixed::bit_alloc::BitBudget;
use sparsegpt_mi::mixed::nm_sets::NmConfig;
use sparsegpt_mi::mixed::{GroupCount, MixedConfig, Mode, PlanOptions, ScaleSource};
use sparsegpt_mi::model::family::HeadLayout;
use sparsegpt_mi::solver::scheme::metadata_bits;

#[derive(Args, Clone, Debug, Serialize)]
pub struct MiArgs {
    /// 1 = group input channels by mutual information (needs --target-avg-bits). Not
    /// recommended on the models studied: no better than random groups at dense 4-bit, worse
    /// at 50% + 4-bit (README, "Does MI grouping pay?").
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub use_mi_grouping: u8,
    /// Average bits per weight, scale/zero metadata included; off = uniform --wbits.
    #[arg(long)]
    pub target_avg_bits: Option<f64>,
    /// Groups per linear: a number, or "auto" (best silhouette among 2,3,4,5,6,8,10,12,14,16).
    #[arg(long, default_value = "10", value_parser = parse_group_count)]
    #[serde(serialize_with = "group_count_as_flag")]
    pub n_groups: GroupCount,
    #[arg(long, default_value_t = 2)]
    pub min_bits: u32,
    #[arg(long, default_value_t = 8)]
    pub max_bits: u32,
    /// MI estimator: corr (Gaussian, from the Hessian's moments), hist or knn (from a reservoir).
    #[arg(long, value_enum, default_value_t = MiMethod::Corr)]
    pub mi_method: MiMethod,
    /// Channel grouping: spectral, hierarchical, kmeans, or random (control).
    #[arg(long, value_enum, default_value_t = GroupingMethod::Spectral)]
    pub grouping: GroupingMethod,
    /// How bits are spread over groups: optimal (default) or thresholds (design notes).
    #[arg(long, value_enum, default_value_t = BitPolicy::Optimal)]
    pub bit_policy: BitPolicy,
    /// Tokens kept per linear input for the hist/knn estimators.
    #[arg(long, default_value_t = 2048)]
    pub reservoir: usize,
    /// What a channel partition is used for: bits (mixed precision) or scales (uniform
    /// --wbits, scale groups of --groupsize columns chosen by --grouping: spectral = MI,
    /// random, range = k-means on column weight ranges, contiguous = static GPTQ groups).
    #[arg(long, value_enum, default_value_t = GroupingUse::Bits)]
    pub grouping_use: GroupingUse,
    /// Sweep order of a mixed mode: mixed (groups by importance, columns by H_jj) or
    /// identity (each column in its place on its group's grid; with --act-order, act-order).
    #[arg(long, value_enum, default_value_t = SweepOrder::Mixed)]
    pub order: SweepOrder,
    /// Uniform --wbits (and --groupsize) in the column order the mixed mode would sweep:
    /// the effect of the order alone.
    #[arg(long)]
    pub uniform_in_mixed_order: bool,
    /// Column importance for the allocator: diag (H_jj·ΣW²), obs (ΣW²/[H⁻¹]_jj), or mi-obs
    /// (H_jj·(1 − R²) with R² from the --mi-method estimate).
    #[arg(long, value_enum, default_value_t = Importance::Diag)]
    pub importance: Importance,
    /// What the allocator minimises: legacy (Σ importance·4^(−bits), metadata counted) or
    /// cost-model (each group's expected OBS loss from its own weight range per row, under
    /// the stored bits including the column → group map; the plan report then gives each
    /// linear's planned loss beside the solve's loss).
    #[arg(long, value_enum, default_value_t = BitObjective::Legacy)]
    #[serde(skip_serializing_if = "is_legacy")]
    pub bit_objective: BitObjective,
    /// Group importance discounted by redundancy r as I·(1 − r/2).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub redundancy_discount: OnOff,
    /// Bits left under the target after whole-group steps: spend (move single columns between
    /// groups, to within a bit per row) or keep (whole-group steps only: up to a group's size short).
    #[arg(long, value_enum, default_value_t = Leftover::Spend)]
    pub leftover: Leftover,
    /// Seed of random partitions, random scale groups and random n:m sets (default: --seed).
    #[arg(long)]
    pub partition_seed: Option<u64>,
    /// n:m channel sets (with --prunen/--prunem): none (consecutive columns, the default, as
    /// published), mi (redundant channels together), random, magnitude (apex-style channel-swap
    /// search: it helped 2:4 alone but hurt 2:4 + 4-bit on a fixture; README).
    #[arg(long, value_enum, default_value_t = NmPermutation::None)]
    pub nm_permutation: NmPermutation,
    /// With --nm-permutation: deployable n:m. Each set permutation is folded into the rows of
    /// the linears producing the input (fc2/down: fc1 or gate/up rows; the attention output:
    /// v rows, so its sets stay inside heads), and the saved and evaluated model carries the
    /// pattern in its own column order; inputs on the residual stream (q/k/v, fc1, gate/up)
    /// get consecutive sets.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fold_permutations: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupingUse {
    Bits,
    Scales,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Leftover {
    Spend,
    Keep,
}

/// Runs with the default objective record no `bit_objective` (their JSON stays as before).
fn is_legacy(o: &BitObjective) -> bool {
    *o == BitObjective::Legacy
}

fn parse_group_count(s: &str) -> std::result::Result<GroupCount, String> {
    match s {
        "auto" => Ok(GroupCount::Auto),
        _ => match s.parse::<usize>() {
            Ok(0) => Err("need at least one group".into()),
            Ok(k) => Ok(GroupCount::Fixed(k)),
            Err(_) => Err("neither a number nor 'auto'".into()),
        },
    }
}

/// As the user typed it ("10", "auto"), so result files record the flag.
fn group_count_as_flag<S: Serializer>(g: &GroupCount, s: S) -> std::result::Result<S::Ok, S::Error> {
    match g {
        GroupCount::Auto => s.serialize_str("auto"),
        GroupCount::Fixed(k) => s.serialize_str(&k.to_string()),
    }
}

impl MiArgs {
    pub fn mode(&self) -> Mode {
        if self.grouping_use == GroupingUse::Scales {
            return Mode::Scales;
        }
        match (self.target_avg_bits, self.use_mi_grouping, self.grouping) {
            (None, _, _) => Mode::Baseline,
            (Some(_), _, GroupingMethod::Random) => Mode::Random,
            (Some(_), 0, _) => Mode::ImportanceRank,
            (Some(_), _, _) => Mode::Mi,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.min_bits < 2 || self.max_bits > 8 || self.min_bits > self.max_bits {
            bail!("--min-bits {} --max-bits {}: need 2 <= min <= max <= 8", self.min_bits, self.max_bits);
        }
        match self.target_avg_bits {
            Some(t) => {
                if !(t >= self.min_bits as f64 && t <= self.max_bits as f64) {
                    bail!(
                        "--target-avg-bits {t} is outside --min-bits {} .. --max-bits {}",
                        self.min_bits,
                        self.max_bits
                    );
                }
            }
            None if self.grouping_use == GroupingUse::Scales => {}
            None => {
                if self.use_mi_grouping == 1 || self.grouping == GroupingMethod::Random {
                    bail!("MI grouping and the random control spread a bit budget: give --target-avg-bits");
                }
            }
        }
        if self.reservoir < 16 && self.mi_method != MiMethod::Corr {
            bail!("--reservoir {} is too small for the {:?} estimator (at least 16)", self.reservoir, self.mi_method);
        }
        let scale_only = matches!(self.grouping, GroupingMethod::Range | GroupingMethod::Contiguous);
        match self.grouping_use {
            GroupingUse::Scales => {
                if self.target_avg_bits.is_some() {
                    bail!("--grouping-use scales keeps uniform --wbits: drop --target-avg-bits");
                }
                if matches!(self.grouping, GroupingMethod::Hierarchical | GroupingMethod::Kmeans) {
                    bail!("scale groups come from --grouping spectral (MI), random, range or contiguous");
                }
            }
            GroupingUse::Bits if scale_only => {
                bail!("--grouping {:?} makes scale groups: add --grouping-use scales", self.grouping)
            }
            GroupingUse::Bits => {}
        }
        let mixed = matches!(self.mode(), Mode::ImportanceRank | Mode::Mi | Mode::Random);
        let options_in_use = self.order != SweepOrder::Mixed
            || self.uniform_in_mixed_order
            || self.importance != Importance::Diag
            || self.redundancy_discount == OnOff::Off
            || self.leftover == Leftover::Keep;
        if options_in_use && !mixed {
            bail!("--order, --uniform-in-mixed-order, --importance, --redundancy-discount and --leftover are options of the mixed modes (give --target-avg-bits)");
        }
        if self.bit_objective != BitObjective::Legacy {
            if !mixed {
                bail!("--bit-objective is an option of the mixed modes (give --target-avg-bits)");
            }
            if self.bit_policy != BitPolicy::Optimal {
                bail!("--bit-objective cost-model allocates its own way: not with --bit-policy thresholds");
            }
        }
        if self.uniform_in_mixed_order && self.order == SweepOrder::Identity {
            bail!("--uniform-in-mixed-order takes the mixed order: not with --order identity");
        }
        Ok(())
    }

    fn options(&self) -> PlanOptions {
        PlanOptions {
            order: self.order.into(),
            uniform_in_mixed_order: self.uniform_in_mixed_order,
            importance: self.importance.into(),
            redundancy_discount: self.redundancy_discount == OnOff::On,
            spend_leftover: self.leftover == Leftover::Spend,
            partition_seed: self.partition_seed,
            scale_source: match self.grouping {
                GroupingMethod::Random => ScaleSource::Random,
                GroupingMethod::Range => ScaleSource::Range,
                GroupingMethod::Contiguous => ScaleSource::Contiguous,
                _ => ScaleSource::Mi,
            },
            bit_objective: self.bit_objective.into(),
        }
    }

    /// The n:m channel sets of `--nm-permutation` (None when off), for a model of `heads`.
    pub fn nm_config(&self, n: usize, m: usize, seed: u64, heads: HeadLayout) -> Option<NmConfig> {
        (self.nm_permutation != NmPermutation::None && m > 0).then(|| NmConfig {
            method: self.nm_permutation.into(),
            n,
            m,
            mi_method: self.mi_method.into(),
            reservoir: self.reservoir,
            seed: self.partition_seed.unwrap_or(seed),
            fold: self.fold_permutations.then_some(heads),
        })
    }

    /// `min_width`: the narrowest linear input of the model.
    pub fn validate_shapes(&self, min_width: usize) -> Result<()> {
        if matches!(self.mode(), Mode::Baseline | Mode::Scales) {
            return Ok(());
        }
        if let (GroupCount::Auto, Some(t)) = (self.n_groups, self.target_avg_bits) {
            // Auto picks among counts the budget pays for on each width: at least two must fit
            // the narrowest one.
            let budget = BitBudget { target_avg_bits: t, min_bits: self.min_bits, max_bits: self.max_bits };
            if budget.affordable_groups(min_width) < 2 {
                let floor = self.min_bits as f64 + 2.0 * metadata_bits(self.min_bits) / min_width as f64;
                bail!(
                    "--n-groups auto: --target-avg-bits {t} cannot pay for even 2 groups on {min_width}-wide layers (their scale/zero metadata at --min-bits {} cost {floor:.4} bits/weight); raise the target or lower --min-bits",
                    self.min_bits
                );
            }
        }
        if let GroupCount::Fixed(k) = self.n_groups {
            if k > min_width {
                bail!("--n-groups {k} exceeds the layer width {min_width}");
            }
            // The narrowest linear must afford K groups at min bits with their metadata.
            let floor = self.min_bits as f64 + k as f64 * metadata_bits(self.min_bits) / min_width as f64;
            if let Some(t) = self.target_avg_bits {
                if floor > t + 1e-9 {
                    bail!(
                        "--target-avg-bits {t} cannot pay for {k} groups on {min_width}-wide layers: their scale/zero metadata at --min-bits {} alone cost {floor:.4} bits/weight; use fewer --n-groups or a higher target",
                        self.min_bits
                    );
                }
            }
        }
        Ok(())
    }

    /// The library's configuration of these flags for `mode` (None in baseline mode).
    pub fn config(&self, mode: Mode, sym: bool, seed: u64) -> Option<MixedConfig> {
        (mode != Mode::Baseline).then(|| MixedConfig {
            mode,
            groups: self.n_groups,
            budget: BitBudget {
                target_avg_bits: self.target_avg_bits.unwrap_or(16.0),
                min_bits: self.min_bits,
                max_bits: self.max_bits,
            },
            mi_method: self.mi_method.into(),
            // The control takes its group sizes from the default clustering.
            clustering: if self.grouping == GroupingMethod::Random { GroupingMethod::Spectral } else { self.grouping }
                .into(),
            bit_policy: self.bit_policy.into(),
            reservoir: self.reservoir,
            sym,
            seed,
            options: self.options(),
        })
    }
}
