//! Perplexity as the published SparseGPT/GPTQ `opt_eval` measures it: the corpus as one
//! token stream with one BOS at its start, non-overlapping `seqlen` windows, the tail
//! dropped; each window's mean next-token NLL (seqlen − 1 predictions); PPL = exp of the
//! mean over windows.

use crate::data::{source::DataSource, Corpus};
use crate::model::OptModel;
use crate::protocol::SeqLen;
use anyhow::Result;
use candle_core::Tensor;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Perplexity {
    pub dataset: String,
    pub ppl: f64,
    pub windows: usize,
    /// Windows the full corpus holds (before --max-windows).
    pub windows_available: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub window_mean_nll: Vec<f64>,
}

/// Mean NLL of one window of token ids.
pub fn window_nll(model: &OptModel, ids: &[u32]) -> Result<f64> {
    Ok(windows_nll(model, &[ids])?[0])
}

/// Mean NLL of each of several equal-length windows, run as one batch.
pub fn windows_nll(model: &OptModel, windows: &[&[u32]]) -> Result<Vec<f64>> {
    windows_nll_layerwise(model, windows, windows.len())
}

/// Mean NLL of each of several equal-length windows, `per_pass` windows per forward pass,
/// layer by layer over all passes: each decoder layer is brought to the compute device
/// once for all the windows (what makes an offloaded model's evaluation cost one upload of
/// its layers, as the published `opt_eval` does), while the passes' hidden states wait.
pub fn windows_nll_layerwise(model: &OptModel, windows: &[&[u32]], per_pass: usize) -> Result<Vec<f64>> {
    let s = windows[0].len();
    let mask = model.causal_mask(s)?;
    let passes: Vec<&[&[u32]]> = windows.chunks(per_pass.max(1)).collect();
    // Each pass's ids as one (batch × seq) run: embedded here, the loss targets at the end.
    let ids: Vec<Vec<u32>> = passes.iter().map(|ws| ws.iter().flat_map(|w| w.iter().copied()).collect()).collect();
    let mut states = passes
        .iter()
        .zip(&ids)
        .map(|(ws, flat)| model.embed(&Tensor::from_slice(flat, (ws.len(), s), &model.device)?))
        .collect::<Result<Vec<_>>>()?;
    for layer in &model.layers {
        let layer = layer.to_device(&model.device)?;
        for h in states.iter_mut() {
            *h = layer.forward(h, &mask, None)?;
        }
    }
    // One copy of the head on the device for all passes (under --offload it lives on the host).
    let head = if model.device.is_cuda() { Some(model.head_on_device()?) } else { None };
    let mut nlls = Vec::with_capacity(windows.len());
    for ((ws, flat), h) in passes.iter().zip(&ids).zip(&states) {
        nlls.extend(pass_nlls(model, head.as_ref(), ws, flat, h)?);
    }
    Ok(nlls)
}

/// Mean NLL of each window of one pass from its last hidden states `h` (batch, seq, hidden);
/// `flat`: the pass's windows one after another; `head`: the LM head on the GPU, where the
/// model computes there.
fn pass_nlls(
    model: &OptModel,
    head: Option<&Tensor>,
    windows: &[&[u32]],
    flat: &[u32],
    h: &Tensor,
) -> Result<Vec<f64>> {
    let s = windows[0].len();
    if let Some(head) = head {
        // All windows' losses on the device, one transfer (per-window calls synchronise
        // the GPU several times per window).
        let sums = model.batch_nll_sums_with(head, h, flat, s)?;
        return Ok(sums.into_iter().map(|sum| sum / (s - 1) as f64).collect());
    }
    windows
        .iter()
        .enumerate()
        .map(|(b, ids)| {
            let (sum, count) = model.sequence_nll(&h.narrow(0, b, 1)?, ids)?;
            Ok(sum / count as f64)
        })
        .collect()
}

/// Windows whose hidden states wait while an offloaded model's layers visit the device
/// once for all of them: 128 windows of opt-6.7b's 4096-wide states are 2 GiB in f16 (the
/// published `opt_eval` keeps all of a corpus's windows).
pub const OFFLOADED_WINDOWS_PER_VISIT: usize = 128;

/// Windows per forward pass (evaluation and calibration): batches amortise kernel launches
/// on the GPU; on the CPU one window at a time keeps memory low and results independent of
/// batching.
pub fn windows_per_pass(device: &candle_core::Device) -> usize {
    if device.is_cuda() {
        8
    } else {
        1
    }
}

/// exp(mean of window NLLs).
pub fn ppl_from_window_nlls(nlls: &[f64]) -> f64 {
    (nlls.iter().sum::<f64>() / nlls.len() as f64).exp()
}

pub fn perplexity(
    model: &OptModel,
    dataset: &str,
    tokens: &[u32],
    seqlen: usize,
    max_windows: Option<usize>,
) -> Result<Perplexity> {
    let available = tokens.len() / seqlen;
    if available == 0 {
        anyhow::bail!("{dataset}: {} tokens hold no {seqlen}-token window", tokens.len());
    }
    let windows = max_windows.map_or(available, |m| m.min(available));
    let t0 = std::time::Instant::now();
    let pb = crate::progress::bar(windows, dataset);
    let mut nlls = Vec::with_capacity(windows);
    let all: Vec<&[u32]> = (0..windows).map(|w| &tokens[w * seqlen..(w + 1) * seqlen]).collect();
    let per_pass = windows_per_pass(&model.device);
    let per_visit = if model.is_offloaded() { OFFLOADED_WINDOWS_PER_VISIT.max(per_pass) } else { per_pass };
    for batch in all.chunks(per_visit) {
        let first = nlls.len();
        let batch_nlls = windows_nll_layerwise(model, batch, per_pass)?;
        if let Some(w) = batch_nlls.iter().position(|v| !v.is_finite()) {
            let message = format!(
                "non-finite logits in window {} of {dataset} (mean NLL {}): the model's activations overflowed {:?}",
                first + w,
                batch_nlls[w],
                model.dtype
            );
            return Err(match model.dtype {
                candle_core::DType::F16 => crate::advice::advised(message, crate::advice::Remedy::F32Compute),
                _ => anyhow::anyhow!(message),
            });
        }
        nlls.extend(batch_nlls);
        pb.inc(batch.len() as u64);
    }
    pb.finish_and_clear();
    Ok(Perplexity {
        dataset: dataset.to_string(),
        ppl: ppl_from_window_nlls(&nlls),
        windows,
        windows_available: available,
        tokens: windows * seqlen,
        seconds: t0.elapsed().as_secs_f64(),
        window_mean_nll: nlls,
    })
}

/// Evaluates every corpus in `seqlen`-token windows; token streams are read (and missing files
/// reported) before any model work.
pub fn evaluate_all(
    model: &OptModel,
    tok: &tokenizers::Tokenizer,
    corpora: &[Corpus],
    source: &DataSource,
    seqlen: SeqLen,
    max_windows: Option<usize>,
) -> Result<Vec<Perplexity>> {
    let streams = corpora.iter().map(|&c| Ok((c, source.eval_tokens(c, tok, seqlen)?))).collect::<Result<Vec<_>>>()?;
    streams.iter().map(|(c, ids)| perplexity(model, c.name(), ids, seqlen.get(), max_windows)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ppl_is_exp_of_mean_window_nll() {
        let p = super::ppl_from_window_nlls(&[1.0, 3.0]);
        assert!((p - 2f64.exp()).abs() < 1e-12);
    }
}
