//! The scoring engine: the log-likelihood of each request's continuation tokens and whether
//! they are the greedy ones, as lm-eval's `_loglikelihood_tokens` computes them.
//!
//! A model takes part through one function, [`LoglikelihoodModel::token_scores`]: for a batch
//! of token sequences, the log-softmax of asked target tokens at asked positions and whether
//! each is the position's argmax. Requests are reduced to distinct model inputs (the inputs
//! of choices whose continuations differ only in their last token are one input, as lm-eval's
//! "one-token continuation" cache shares them), sorted longest first (lm-eval's Collator
//! order: by -length, then the tokens), and batched under a token budget with right padding
//! (a causal model's outputs at a position do not see later positions).

use super::encode::TokenRequest;
use crate::model::OptModel;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};
use std::collections::HashMap;

/// One target token at one position: its log-probability and whether it is the argmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    pub logprob: f64,
    pub greedy: bool,
}

/// A request's result: the summed log-likelihood of its continuation and whether every
/// continuation token is the greedy one (lm-eval's `(logprob, is_greedy)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContinuationScore {
    pub loglik: f64,
    pub greedy: bool,
}

/// What the engine needs of a model.
pub trait LoglikelihoodModel {
    /// The longest input (lm-eval's `max_length`: the model's maximum positions).
    fn max_length(&self) -> usize;
    /// Tokens (batch × padded length) per forward pass.
    fn tokens_per_batch(&self) -> usize;
    /// For each sequence of a batch, for each asked `(position, target)`: the log-softmax of
    /// `target` among the logits at `position` (which predict the token after it), and
    /// whether `target` is their first maximum.
    fn token_scores(&self, batch: &[&[u32]], asks: &[Vec<(usize, u32)>]) -> Result<Vec<Vec<TokenScore>>>;
}

impl LoglikelihoodModel for OptModel {
    fn max_length(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn tokens_per_batch(&self) -> usize {
        if self.device.is_cuda() {
            32 * 1024
        } else {
            4 * 1024
        }
    }

    fn token_scores(&self, batch: &[&[u32]], asks: &[Vec<(usize, u32)>]) -> Result<Vec<Vec<TokenScore>>> {
        let s = batch.iter().map(|b| b.len()).max().unwrap_or(0);
        if s == 0 {
            bail!("empty batch");
        }
        let b = batch.len();
        let mut ids = vec![0u32; b * s];
        for (row, seq) in ids.chunks_mut(s).zip(batch) {
            row[..seq.len()].copy_from_slice(seq);
        }
        let mask = self.causal_mask(s)?;
        let mut h = self.embed(&Tensor::from_vec(ids, (b, s), &self.device)?)?;
        for layer in &self.layers {
            h = layer.to_device(&self.device)?.forward(&h, &mask, None)?;
        }
        let e = h.dims()[2];
        let h = h.reshape((b * s, e))?;
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for (i, a) in asks.iter().enumerate() {
            for &(p, t) in a {
                rows.push((i * s + p) as u32);
                targets.push(t);
            }
        }
        let scores = self.row_scores(&h, &rows, &targets)?;
        let mut it = scores.into_iter();
        Ok(asks.iter().map(|a| a.iter().map(|_| it.next().expect("one score per ask")).collect()).collect())
    }
}

impl OptModel {
    /// Log-softmax at `targets` and argmax flags of the LM head over the given rows of the
    /// last hidden states `h` (tokens × hidden), in chunks of rows. On the CPU the
    /// reductions run on the host per row in f64 (the same sums for any thread count); on
    /// the GPU as tensor ops with one transfer per chunk.
    fn row_scores(&self, h: &Tensor, rows: &[u32], targets: &[u32]) -> Result<Vec<TokenScore>> {
        // The LM head: the untied families' own, not the token embeddings.
        let emb_t = self.head_on_device()?.t()?;
        let chunk = 512;
        let mut out = Vec::with_capacity(rows.len());
        for (r, t) in rows.chunks(chunk).zip(targets.chunks(chunk)) {
            let idx = Tensor::from_slice(r, r.len(), &self.device)?;
            let states = self.head_states(&h.index_select(&idx, 0)?)?;
            let logits = states.matmul(&emb_t)?.to_dtype(DType::F32)?;
            if logits.device().is_cpu() {
                out.extend(host_scores(&logits, t)?);
            } else {
                let lse = logits.log_sum_exp(D::Minus1)?.to_vec1::<f32>()?;
                let tgt = Tensor::from_slice(t, (t.len(), 1), &self.device)?;
                let picked = logits.gather(&tgt, 1)?.squeeze(1)?.to_vec1::<f32>()?;
                let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
                for i in 0..t.len() {
                    out.push(TokenScore { logprob: picked[i] as f64 - lse[i] as f64, greedy: argmax[i] == t[i] });
                }
            }
        }
        Ok(out)
    }
}

/// Host reductions of f32 logit rows: max, log-sum-exp in f64, first argmax.
fn host_scores(logits: &Tensor, targets: &[u32]) -> Result<Vec<TokenScore>> {
    use rayon::prelude::*;
    let (_, vocab) = logits.dims2()?;
    let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    Ok(flat
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let (mut arg, mut max) = (0usize, row[0]);
            for (i, &v) in row.iter().enumerate().skip(1) {
                if v > max {
                    (arg, max) = (i, v);
                }
            }
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            let lse = max as f64 + sum.ln();
            TokenScore { logprob: row[t as usize] as f64 - lse, greedy: arg == t as usize }
        })
        .collect())
}

/// One distinct model input and the requests reading it.
struct Group {
    input: Vec<u32>,
    /// Distinct (position, target) pairs asked of this input, sorted.
    asks: Vec<(usize, u32)>,
}

/// Every request's continuation score, in the requests' order; `progress` is told after each
/// batch how many requests it finished.
pub fn score_requests(
    model: &dyn LoglikelihoodModel,
    requests: &[TokenRequest],
    mut progress: impl FnMut(usize),
) -> Result<Vec<ContinuationScore>> {
    let max_length = model.max_length();
    let mut groups: Vec<Group> = Vec::new();
    let mut by_input: HashMap<Vec<u32>, usize> = HashMap::new();
    // Per request: its group and its (position, target) pairs.
    let mut members: Vec<(usize, Vec<(usize, u32)>)> = Vec::with_capacity(requests.len());
    for r in requests {
        if r.continuation.len() > max_length {
            bail!(
                "a continuation of {} tokens is longer than the model's {max_length} positions",
                r.continuation.len()
            );
        }
        let input = r.input(max_length);
        let first = input.len() + 1 - r.continuation.len();
        let wanted: Vec<(usize, u32)> = r.continuation.iter().enumerate().map(|(k, &t)| (first - 1 + k, t)).collect();
        let g = *by_input.entry(input.clone()).or_insert_with(|| {
            groups.push(Group { input, asks: Vec::new() });
            groups.len() - 1
        });
        groups[g].asks.extend(&wanted);
        members.push((g, wanted));
    }
    for g in &mut groups {
        g.asks.sort_unstable();
        g.asks.dedup();
    }
    let mut requests_of: Vec<usize> = vec![0; groups.len()];
    for (g, _) in &members {
        requests_of[*g] += 1;
    }
    // Longest first, then by tokens: a fixed order whatever the requests' order.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        groups[b].input.len().cmp(&groups[a].input.len()).then(groups[a].input.cmp(&groups[b].input))
    });
    let budget = model.tokens_per_batch();
    let mut scores: Vec<Vec<TokenScore>> = vec![Vec::new(); groups.len()];
    let mut start = 0;
    while start < order.len() {
        let longest = groups[order[start]].input.len();
        let per_batch = (budget / longest.max(1)).max(1);
        let batch: Vec<usize> = order[start..(start + per_batch).min(order.len())].to_vec();
        let inputs: Vec<&[u32]> = batch.iter().map(|&g| groups[g].input.as_slice()).collect();
        let asks: Vec<Vec<(usize, u32)>> = batch.iter().map(|&g| groups[g].asks.clone()).collect();
        let got = model.token_scores(&inputs, &asks)?;
        for (&g, s) in batch.iter().zip(got) {
            scores[g] = s;
        }
        progress(batch.iter().map(|&g| requests_of[g]).sum());
        start += batch.len();
    }
    members
        .iter()
        .map(|(g, wanted)| {
            let group = &groups[*g];
            let mut loglik = 0.0;
            let mut greedy = true;
            for w in wanted {
                let i = group.asks.binary_search(w).expect("asked");
                let s = scores[*g][i];
                if !s.logprob.is_finite() {
                    bail!(
                        "non-finite log-likelihood ({}) of a continuation token: the model's activations overflowed",
                        s.logprob
                    );
                }
                loglik += s.logprob;
                greedy &= s.greedy;
            }
            Ok(ContinuationScore { loglik, greedy })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose log-probability of target t at position p of a sequence is
    /// -(p + t + first token) / 10, greedy when t is even; it records its batches.
    struct Toy {
        batches: std::cell::RefCell<Vec<usize>>,
    }

    impl LoglikelihoodModel for Toy {
        fn max_length(&self) -> usize {
            6
        }
        fn tokens_per_batch(&self) -> usize {
            12
        }
        fn token_scores(&self, batch: &[&[u32]], asks: &[Vec<(usize, u32)>]) -> Result<Vec<Vec<TokenScore>>> {
            self.batches.borrow_mut().push(batch.len());
            Ok(batch
                .iter()
                .zip(asks)
                .map(|(seq, a)| {
                    a.iter()
                        .map(|&(p, t)| TokenScore {
                            logprob: -((p as u32 + t + seq[0]) as f64) / 10.0,
                            greedy: t % 2 == 0,
                        })
                        .collect()
                })
                .collect())
        }
    }

    #[test]
    fn continuations_are_scored_at_their_positions_sorted_and_shared() {
        let toy = Toy { batches: Default::default() };
        let reqs = vec![
            // input [1, 5, 6], continuation [6, 8] at positions 1, 2.
            TokenRequest { context: vec![1, 5], continuation: vec![6, 8] },
            // input [1, 5, 6] again (last token differs): one model input for both.
            TokenRequest { context: vec![1, 5], continuation: vec![6, 9] },
            // longer than max_length 6: input = last 7 tokens less the last = [3..8].
            TokenRequest { context: vec![1, 2, 3, 4, 5, 6], continuation: vec![7, 8] },
        ];
        let mut done = 0;
        let s = score_requests(&toy, &reqs, |n| done += n).unwrap();
        assert_eq!(done, 3);
        assert!((s[0].loglik - (-(1.0 + 6.0 + 1.0) / 10.0 - (2.0 + 8.0 + 1.0) / 10.0)).abs() < 1e-12);
        assert!(s[0].greedy);
        assert!((s[1].loglik - (-(1.0 + 6.0 + 1.0) / 10.0 - (2.0 + 9.0 + 1.0) / 10.0)).abs() < 1e-12);
        assert!(!s[1].greedy);
        // Truncated input [2, 3, 4, 5, 6, 7]: targets 7, 8 at positions 4, 5, first token 2.
        assert!((s[2].loglik - (-(4.0 + 7.0 + 2.0) / 10.0 - (5.0 + 8.0 + 2.0) / 10.0)).abs() < 1e-12);
        // Two distinct inputs (lengths 6 and 3) under a 12-token budget: one batch of 2.
        assert_eq!(*toy.batches.borrow(), vec![2]);
    }
}
