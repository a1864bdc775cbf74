//! The result JSON of `eval` and `prune`, and the run-level figures it carries.

use crate::data::calibration::WindowSource;
use crate::data::source::Provenance;
use crate::eval::Perplexity;
use crate::mixed::Mode;
use crate::pipeline::{LinearReport, PhaseTimes};
use crate::protocol::SeqLen;
use candle_core::DType;
use serde::Serialize;
use std::collections::BTreeMap;

/// Bits of a whole run: averages over all quantized weights.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BitSummary {
    pub quantized: bool,
    pub avg_bits: f64,
    pub avg_bits_with_metadata: f64,
    pub max_linear_bits_with_metadata: f64,
}

impl BitSummary {
    /// `wbits`: the run's uniform width, reported (up to 16) when nothing was quantized.
    pub fn from_reports(reports: &[LinearReport], wbits: u32) -> Self {
        let mut n = 0f64;
        let (mut b, mut m, mut mx) = (0f64, 0f64, 0f64);
        for r in reports {
            if let (Some(bits), Some(meta)) = (r.avg_bits, r.avg_bits_with_metadata) {
                let w = (r.rows * r.cols) as f64;
                n += w;
                b += bits * w;
                m += meta * w;
                mx = mx.max(meta);
            }
        }
        if n == 0.0 {
            return BitSummary { quantized: false, avg_bits: 16.0f64.min(wbits as f64), ..Default::default() };
        }
        BitSummary {
            quantized: true,
            avg_bits: b / n,
            avg_bits_with_metadata: m / n,
            max_linear_bits_with_metadata: mx,
        }
    }

    pub fn describe(&self) -> String {
        if self.quantized {
            format!("{:.4} bits/weight ({:.4} with scale/zero metadata)", self.avg_bits, self.avg_bits_with_metadata)
        } else {
            "not quantized".to_string()
        }
    }
}

/// Fraction of zero weights over all compressed linears.
pub fn zero_fraction(reports: &[LinearReport]) -> f64 {
    weighted(reports, |l| l.zero_fraction)
}

/// Fraction of weights the pruning masks set to zero, over all compressed linears.
pub fn pruned_fraction(reports: &[LinearReport]) -> f64 {
    weighted(reports, |l| l.pruned_fraction)
}

fn weighted(reports: &[LinearReport], f: impl Fn(&LinearReport) -> f64) -> f64 {
    let total: usize = reports.iter().map(|l| l.rows * l.cols).sum();
    let sum: f64 = reports.iter().map(|l| f(l) * (l.rows * l.cols) as f64).sum();
    if total > 0 {
        sum / total as f64
    } else {
        0.0
    }
}

/// `eval`'s result.
#[derive(Serialize)]
pub struct EvalReport {
    pub command: String,
    pub model: String,
    pub device: String,
    /// The dtype the model ran in (weights and activations).
    pub dtype: String,
    /// Tokens per evaluation window.
    pub seqlen: SeqLen,
    pub load_seconds: f64,
    /// Where each corpus came from (hub repo, file and commit, or local path and sha256).
    pub data: Vec<Provenance>,
    pub results: Vec<Perplexity>,
    /// Zero-shot tasks (`--tasks`): metrics, per-document scores, where each file came from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<crate::tasks::evaluate::TaskResult>,
}

/// `prune`'s result; `A` is the run's settings as the caller records them.
#[derive(Serialize)]
pub struct PruneReport<A: Serialize> {
    pub command: String,
    pub model: String,
    pub args: A,
    pub device: String,
    /// The dtype the model ran in (weights and activations).
    pub dtype: String,
    /// Tokens per window, calibration and evaluation alike.
    pub seqlen: SeqLen,
    pub mode: Mode,
    pub ppl: BTreeMap<String, f64>,
    pub eval: Vec<Perplexity>,
    pub zero_fraction: f64,
    pub pruned_fraction: f64,
    pub bits: BitSummary,
    pub times: PhaseTimes,
    pub load_s: f64,
    pub calibration_s: f64,
    pub peak_rss_mib: f64,
    pub calibration_windows: Vec<WindowSource>,
    /// Where each corpus came from (hub repo, file and commit, or local path and sha256).
    pub data: Vec<Provenance>,
    pub linears: Vec<LinearReport>,
    /// Zero-shot tasks after compression (`--eval-tasks`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<crate::tasks::evaluate::TaskResult>,
    /// What `--save` wrote: format, bytes on disk by kind, per-linear storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<super::export::SaveReport>,
}

/// How reports name a dtype ("f16", "f32").
pub fn dtype_name(dtype: DType) -> String {
    format!("{dtype:?}").to_lowercase()
}

/// The process's peak resident memory (VmHWM), MiB; 0 where /proc is not there.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: usize, cols: usize, zero_fraction: f64, bits: Option<(f64, f64)>) -> LinearReport {
        LinearReport {
            layer: 0,
            name: "fc1".into(),
            rows,
            cols,
            zero_fraction,
            pruned_fraction: zero_fraction,
            loss: 0.0,
            solve_seconds: 0.0,
            plan_seconds: 0.0,
            avg_bits: bits.map(|b| b.0),
            avg_bits_with_metadata: bits.map(|b| b.1),
            max_distinct_per_row: 0,
            max_distinct_per_group: 0,
            plan: None,
            fold: None,
        }
    }

    #[test]
    fn run_figures_are_weighted_by_linear_size() {
        let r = [report(10, 10, 0.5, Some((4.0, 4.2))), report(10, 30, 0.0, Some((2.0, 2.6)))];
        assert!((zero_fraction(&r) - 0.125).abs() < 1e-12);
        assert!((pruned_fraction(&r) - 0.125).abs() < 1e-12);
        let b = BitSummary::from_reports(&r, 4);
        assert!(b.quantized);
        assert!((b.avg_bits - 2.5).abs() < 1e-12);
        assert!((b.avg_bits_with_metadata - (4.2 + 3.0 * 2.6) / 4.0).abs() < 1e-12);
        assert_eq!(b.max_linear_bits_with_metadata, 4.2);
        let dense = BitSummary::from_reports(&[report(4, 4, 0.5, None)], 16);
        assert!(!dense.quantized);
        assert_eq!(dense.avg_bits, 16.0);
    }
}
