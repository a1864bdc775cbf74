//! A task end to end on a model: requests → tokens → scores → per-item decisions → metrics,
//! and lm-eval's results table.

use super::encode::{Encoder, TokenRequest};
use super::files::TaskData;
use super::items::Item;
use super::metrics::{bootstrap_stderr, choice_decision, mean, mean_stderr, perplexity, BOOTSTRAP_ITERS};
use super::score::{score_requests, LoglikelihoodModel};
use super::{OutputType, Task};
use crate::data::source::FileProvenance;
use anyhow::{anyhow, Result};
use serde::Serialize;

/// One document's scores.
#[derive(Clone, Debug, Serialize)]
pub struct ItemResult {
    /// Each request's summed continuation log-likelihood (choices in order).
    pub loglik: Vec<f64>,
    pub greedy: Vec<bool>,
    /// The gold choice (multiple choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold: Option<usize>,
    pub acc: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<bool>,
    /// Tokens of each request's context and continuation.
    pub context_tokens: Vec<usize>,
    pub continuation_tokens: Vec<usize>,
}

/// A task's metrics, as lm-eval reports them (stderr None where it writes "N/A").
#[derive(Clone, Debug, Serialize)]
pub struct TaskResult {
    pub task: Task,
    pub version: &'static str,
    pub n: usize,
    /// Documents in the file (n is fewer under --limit).
    pub available: usize,
    pub acc: f64,
    pub acc_stderr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm_stderr: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// lm-eval's bootstrap (100000 resamples, Python's seeded draws reproduced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity_stderr: Option<Option<f64>>,
    pub requests: usize,
    pub seconds: f64,
    pub items_per_second: f64,
    pub data: FileProvenance,
    pub items: Vec<ItemResult>,
}

/// Scores one task's items with a progress bar.
pub fn evaluate_task(model: &dyn LoglikelihoodModel, encoder: &Encoder, data: &TaskData) -> Result<TaskResult> {
    let t0 = std::time::Instant::now();
    let task = data.task;
    let mut token_requests: Vec<TokenRequest> = Vec::new();
    for (i, item) in data.items.iter().enumerate() {
        for r in item.requests() {
            token_requests.push(encoder.encode_request(r).map_err(|e| anyhow!("{} document {i}: {e}", task.name()))?);
        }
    }
    let pb = crate::progress::bar(token_requests.len(), task.name());
    let scores =
        score_requests(model, &token_requests, |n| pb.inc(n as u64)).map_err(|e| anyhow!("{}: {e}", task.name()))?;
    pb.finish_and_clear();
    let mut next = 0;
    let mut items = Vec::with_capacity(data.items.len());
    for item in &data.items {
        let k = item.requests().len();
        let (s, toks) = (&scores[next..next + k], &token_requests[next..next + k]);
        next += k;
        let loglik: Vec<f64> = s.iter().map(|x| x.loglik).collect();
        let greedy: Vec<bool> = s.iter().map(|x| x.greedy).collect();
        let (gold, acc, acc_norm) = match item {
            Item::Choice { choices, gold, .. } => {
                let (acc, norm) = choice_decision(&loglik, choices, *gold);
                let reports_norm = matches!(task.output_type(), OutputType::MultipleChoice { acc_norm: true });
                (Some(*gold), acc, reports_norm.then_some(norm))
            }
            Item::Loglikelihood { .. } => (None, greedy[0], None),
        };
        items.push(ItemResult {
            loglik,
            greedy,
            gold,
            acc,
            acc_norm,
            context_tokens: toks.iter().map(|t| t.context.len()).collect(),
            continuation_tokens: toks.iter().map(|t| t.continuation.len()).collect(),
        });
    }
    let accs: Vec<f64> = items.iter().map(|i| i.acc as u8 as f64).collect();
    let norms: Option<Vec<f64>> = items.iter().map(|i| i.acc_norm.map(|b| b as u8 as f64)).collect();
    let (ppl, ppl_stderr) = if task.output_type() == OutputType::Loglikelihood {
        let lls: Vec<f64> = items.iter().map(|i| i.loglik[0]).collect();
        (Some(perplexity(&lls)), Some(bootstrap_stderr(perplexity, &lls, BOOTSTRAP_ITERS)))
    } else {
        (None, None)
    };
    let seconds = t0.elapsed().as_secs_f64();
    Ok(TaskResult {
        task,
        version: task.version(),
        n: items.len(),
        available: data.available,
        acc: mean(&accs),
        acc_stderr: mean_stderr(&accs),
        acc_norm: norms.as_deref().map(mean),
        acc_norm_stderr: norms.as_deref().map(mean_stderr),
        perplexity: ppl,
        perplexity_stderr: ppl_stderr,
        requests: token_requests.len(),
        seconds,
        items_per_second: items.len() as f64 / seconds.max(1e-9),
        data: data.provenance.clone(),
        items,
    })
}

/// lm-eval's results table (`utils.make_table`: markdown, values and stderr to 4 places,
/// "N/A" where there is no stderr, zero-shot, no filter).
pub fn table(results: &[TaskResult]) -> String {
    let header = ["Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"];
    let mut rows: Vec<[String; 9]> = Vec::new();
    let fmt = |v: f64| format!("{v:.4}");
    let se = |s: Option<f64>| s.map_or("   N/A".to_string(), fmt);
    for r in results {
        // Metrics in name order, the task's name on its first row only (as make_table).
        let mut metrics: Vec<(&str, &str, f64, Option<f64>)> = vec![("acc", "↑", r.acc, r.acc_stderr)];
        if let (Some(v), Some(s)) = (r.acc_norm, r.acc_norm_stderr) {
            metrics.push(("acc_norm", "↑", v, s));
        }
        if let (Some(v), Some(s)) = (r.perplexity, r.perplexity_stderr) {
            metrics.push(("perplexity", "↓", v, s));
        }
        for (k, (name, dir, v, s)) in metrics.into_iter().enumerate() {
            rows.push([
                if k == 0 { r.task.name().to_string() } else { String::new() },
                r.version.to_string(),
                "none".into(),
                "0".into(),
                name.into(),
                dir.into(),
                fmt(v),
                "±".into(),
                se(s),
            ]);
        }
    }
    let width: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].chars().count()]).max().unwrap_or(0).max(1))
        .collect();
    let right = [false, true, false, true, false, false, true, false, true];
    let cell = |s: &str, c: usize| {
        let pad = width[c] - s.chars().count();
        if right[c] {
            format!("{}{s}", " ".repeat(pad))
        } else {
            format!("{s}{}", " ".repeat(pad))
        }
    };
    let line = |cells: Vec<String>| format!("|{}|", cells.join("|"));
    let mut out = vec![
        line((0..9).map(|c| cell(header[c], c)).collect()),
        line(
            (0..9)
                .map(|c| if right[c] { format!("{}:", "-".repeat(width[c] - 1)) } else { "-".repeat(width[c]) })
                .collect(),
        ),
    ];
    out.extend(rows.iter().map(|r| line((0..9).map(|c| cell(&r[c], c)).collect())));
    out.join("\n") + "\n"
}
