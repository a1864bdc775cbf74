//! Calibration windows: `nsamples` random windows of the run's length (2048 tokens in the
//! published protocol), each from a random document longer than a window at a random offset, as
//! SparseGPT/GPTQ's datautils draw them.

use super::py_random::PyRandom;
use anyhow::{bail, Result};
use serde::Serialize;

/// Which random generator draws the windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// CPython's Mersenne Twister: the same windows as the published code for the same seed.
    Python,
    /// The tool's own generator (`crate::rng`): an independent stream, for checking that
    /// results do not hinge on one draw.
    Xoshiro,
}

/// Where one calibration window came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WindowSource {
    pub doc: usize,
    pub start: usize,
    /// Document draws needed to hit one longer than the window.
    pub draws: usize,
}

trait IntRng {
    /// Uniform integer in [a, b].
    fn randint(&mut self, a: u64, b: u64) -> u64;
}

impl IntRng for PyRandom {
    fn randint(&mut self, a: u64, b: u64) -> u64 {
        PyRandom::randint(self, a, b)
    }
}

impl IntRng for crate::rng::Rng {
    fn randint(&mut self, a: u64, b: u64) -> u64 {
        a + crate::rng::below(self, b - a + 1)
    }
}

/// Draws `nsamples` windows of `seqlen` tokens from documents given by their token counts.
/// Fails before drawing when no document is long enough or the request exceeds the
/// number of distinct windows the documents hold.
pub fn draw_windows(
    doc_lengths: &[usize],
    nsamples: usize,
    seqlen: usize,
    seed: u64,
    sampler: SamplerKind,
) -> Result<Vec<WindowSource>> {
    if nsamples == 0 {
        bail!("at least one calibration window is needed");
    }
    if doc_lengths.is_empty() {
        bail!("the calibration source has no documents");
    }
    let distinct: usize = doc_lengths.iter().filter(|&&n| n > seqlen).map(|&n| n - seqlen).sum();
    if distinct == 0 {
        bail!("no calibration document is longer than {seqlen} tokens, so no window can be drawn");
    }
    if nsamples > distinct {
        bail!(
            "{nsamples} calibration windows: the number exceeds the {distinct} distinct {seqlen}-token windows the calibration data holds"
        );
    }
    let mut rng: Box<dyn IntRng> = match sampler {
        SamplerKind::Python => Box::new(PyRandom::new(seed)),
        SamplerKind::Xoshiro => Box::new(crate::rng::seeded(seed)),
    };
    let last_doc = (doc_lengths.len() - 1) as u64;
    let mut out = Vec::with_capacity(nsamples);
    for _ in 0..nsamples {
        let mut draws = 0;
        let doc = loop {
            let i = rng.randint(0, last_doc) as usize;
            draws += 1;
            if doc_lengths[i] > seqlen {
                break i;
            }
        };
        let start = rng.randint(0, (doc_lengths[doc] - seqlen - 1) as u64) as usize;
        out.push(WindowSource { doc, start, draws });
    }
    Ok(out)
}

/// Calibration data: token windows and where they came from.
pub struct Calibration {
    pub windows: Vec<Vec<u32>>,
    pub sources: Vec<WindowSource>,
}

/// Tokenises the documents (BOS prepended to each, as datautils' tokenizer call does)
/// and cuts the drawn windows.
pub fn build(
    docs: &[String],
    tok: &tokenizers::Tokenizer,
    nsamples: usize,
    seqlen: usize,
    seed: u64,
    sampler: SamplerKind,
) -> Result<Calibration> {
    let ids: Vec<Vec<u32>> = {
        use rayon::prelude::*;
        docs.par_iter().map(|d| crate::model::tokenizer::encode(tok, d)).collect::<Result<_>>()?
    };
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let sources = draw_windows(&lengths, nsamples, seqlen, seed, sampler)?;
    let windows = sources.iter().map(|s| ids[s.doc][s.start..s.start + seqlen].to_vec()).collect();
    Ok(Calibration { windows, sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_impossible_requests() {
        assert!(draw_windows(&[10, 20], 1, 2048, 0, SamplerKind::Python).is_err());
        assert!(draw_windows(&[2050], 0, 2048, 0, SamplerKind::Python).is_err());
        // 2050-token doc holds starts 0 and 1 only.
        assert!(draw_windows(&[2050], 3, 2048, 0, SamplerKind::Python).is_err());
        assert_eq!(draw_windows(&[2050], 2, 2048, 0, SamplerKind::Python).unwrap().len(), 2);
    }

    #[test]
    fn windows_stay_inside_their_documents_for_both_samplers() {
        let lens = [100, 3000, 2049, 5000];
        for s in [SamplerKind::Python, SamplerKind::Xoshiro] {
            let w = draw_windows(&lens, 50, 2048, 7, s).unwrap();
            for x in &w {
                assert!(lens[x.doc] > 2048);
                assert!(x.start + 2048 < lens[x.doc] + 1);
            }
            assert_eq!(w, draw_windows(&lens, 50, 2048, 7, s).unwrap(), "same seed, same windows");
        }
    }
}
