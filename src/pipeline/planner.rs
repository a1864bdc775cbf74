//! The contract between the pipeline and a planner: after a layer's calibration pass, the
//! planner decides for each linear its quantization scheme and sweep order. The pipeline
//! knows no planning algorithm; `crate::mixed` implements them.

use super::moments::ChannelMoments;
use crate::model::{InputSite, LinearKind};
use crate::solver::LinearScheme;
use anyhow::Result;
use candle_core::Device;

/// What a planner wants recorded during the calibration pass, beside the Hessian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlannerNeeds {
    /// Σ x xᵀ and Σ x of every linear input in f64.
    pub channel_moments: bool,
    /// Calibration tokens to keep per linear input (0 = none).
    pub reservoir: usize,
    /// The linears' weights on the host (`LinearWeights::weight`; empty when not asked for,
    /// which saves a device-to-host copy of every layer when the GPU solves).
    pub weights: bool,
}

/// One linear that reads the planned input.
pub struct LinearWeights<'a> {
    pub kind: LinearKind,
    pub rows: usize,
    /// rows × cols, row-major, on the host (empty unless the planner's needs ask for it).
    pub weight: &'a [f32],
}

/// What the planner sees of one input site of one layer after the calibration pass.
pub struct SiteContext<'a> {
    pub layer: usize,
    pub site: InputSite,
    /// The input's width: the columns of every linear reading it.
    pub cols: usize,
    /// The diagonal of H = 2/n Σ x xᵀ, undamped.
    pub hessian_diag: &'a [f64],
    /// H itself (`HessianSource::host_matrix` forms it on the host, shared with the host
    /// solver), where the pipeline has it.
    pub hessian: Option<&'a super::hessian::Hessian>,
    pub moments: Option<&'a ChannelMoments>,
    /// Stored calibration tokens of this input, if asked for.
    pub reservoir: Option<&'a [Vec<f32>]>,
    /// The linears reading this input, in the order the published code visits them.
    pub linears: Vec<LinearWeights<'a>>,
}

/// How one linear is to be solved.
pub struct LinearPlan {
    pub scheme: LinearScheme,
    /// The planner's own account of its decision, for the result JSON.
    pub report: Option<serde_json::Value>,
    /// Time spent planning this linear.
    pub plan_seconds: f64,
}

pub trait Planner: Sync {
    fn needs(&self) -> PlannerNeeds;

    /// Prepares what planning uses on `device` before the first layer (e.g. loads device
    /// kernels), so that it is not counted as planning time.
    fn warm_up(&self, _device: &Device) -> Result<()> {
        Ok(())
    }

    /// Plans every linear reading one input site: one plan per `ctx.linears`, in order.
    fn plan_site(&self, ctx: &SiteContext) -> Result<Vec<LinearPlan>>;
}
