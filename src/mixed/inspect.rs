//! A look at one linear's input channels: its MI matrix and MI grouping, from a calibration
//! pass through the layers up to it (nothing is compressed).

use super::groups::{mi_groups, mi_matrix, ChannelGroups};
use super::mutual_info::SymMatrix;
use super::MixedConfig;
use crate::model::{LinearKind, OptModel};
use crate::pipeline::planner::{LinearPlan, Planner, PlannerNeeds, SiteContext};
use crate::pipeline::{self, hessian::HessianAccumulation, CompressConfig};
use crate::solver::{LinearScheme, QuantScheme, SweepSettings};
use anyhow::{bail, Result};
use std::sync::Mutex;

pub struct Inspection {
    pub mi: SymMatrix,
    pub groups: ChannelGroups,
    /// Channels sorted by group, then by index: the heatmap's order.
    pub order: Vec<usize>,
}

impl Inspection {
    /// The MI matrix with rows and columns in `order`.
    pub fn ordered(&self) -> SymMatrix {
        let d = self.mi.d;
        SymMatrix { d, values: (0..d * d).map(|k| self.mi.get(self.order[k / d], self.order[k % d])).collect() }
    }
}

/// Captures the MI of one linear's input while the pipeline runs; plans nothing.
struct Capture<'a> {
    kind: LinearKind,
    cfg: &'a MixedConfig,
    found: Mutex<Option<(SymMatrix, ChannelGroups)>>,
}

impl Planner for Capture<'_> {
    fn needs(&self) -> PlannerNeeds {
        super::planner::mixed_needs(self.cfg)
    }

    fn plan_site(&self, ctx: &SiteContext) -> Result<Vec<LinearPlan>> {
        if ctx.linears.iter().any(|l| l.kind == self.kind) {
            let mi = mi_matrix(ctx, self.cfg.mi_method)?;
            let groups = mi_groups(ctx, self.cfg)?;
            *self.found.lock().expect("capture") = Some((mi, groups));
        }
        Ok(ctx
            .linears
            .iter()
            .map(|_| LinearPlan { scheme: LinearScheme::uniform(QuantScheme::None), report: None, plan_seconds: 0.0 })
            .collect())
    }
}

/// The MI matrix and grouping of `kind`'s input in decoder layer `layer`. Layers after it are
/// dropped from `model`.
pub fn inspect(
    model: &mut OptModel,
    calibration: &[Vec<u32>],
    layer: usize,
    kind: LinearKind,
    cfg: &MixedConfig,
    batch: usize,
) -> Result<Inspection> {
    if layer >= model.layers.len() {
        bail!("layer {layer} is out of range: the model has {} decoder layers", model.layers.len());
    }
    // Only layers up to the inspected one are needed; nothing is compressed.
    model.layers.truncate(layer + 1);
    let capture = Capture { kind, cfg, found: Mutex::new(None) };
    let run = CompressConfig {
        sweep: SweepSettings::published(),
        magnitude: false,
        layers: layer..layer + 1,
        batch,
        seed: cfg.seed,
        host_solver: true,
        hessian_accumulation: HessianAccumulation::default(),
        true_sequential: false,
        fold_nm_sets: false,
    };
    pipeline::compress(model, calibration, &run, &capture)?;
    let Some((mi, groups)) = capture.found.into_inner().expect("capture") else {
        bail!("layer {layer} {} was not reached", kind.path());
    };
    let mut order: Vec<usize> = (0..mi.d).collect();
    order.sort_by_key(|&j| (groups.labels[j], j));
    Ok(Inspection { mi, groups, order })
}
