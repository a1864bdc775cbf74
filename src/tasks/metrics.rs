//! Per-item decisions and their aggregation, as lm-eval's `process_results` and
//! `api/metrics.py` compute them: acc = argmax of the summed log-likelihoods (the first
//! maximum, as `np.argmax`), acc_norm = argmax of log-likelihood / len(choice) in characters;
//! means and their standard error `sample_stddev / sqrt(n)`; LAMBADA's perplexity
//! `exp(-mean(loglik))` with lm-eval's bootstrap standard error (100000 resamples in chunks of
//! 1000, chunk i drawn by Python's `random.Random(i).choices`, reproduced bit for bit).

use crate::data::py_random::PyRandom;

/// The index of the first maximum (`np.argmax` on finite values).
pub fn argmax_first(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// acc and acc_norm of one multiple-choice item: `lls` the summed log-likelihood of each
/// choice, `choices` the choice strings (their lengths in characters, as Python's `len`).
pub fn choice_decision(lls: &[f64], choices: &[String], gold: usize) -> (bool, bool) {
    let norm: Vec<f64> = lls.iter().zip(choices).map(|(&l, c)| l / c.chars().count() as f64).collect();
    (argmax_first(lls) == gold, argmax_first(&norm) == gold)
}

/// Python's `sum(arr) / len(arr)`: summed left to right.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().fold(0.0, |a, &x| a + x) / xs.len() as f64
}

/// `sample_stddev`: Bessel-corrected.
pub fn sample_stddev(xs: &[f64]) -> f64 {
    let mu = mean(xs);
    (xs.iter().fold(0.0, |a, &x| a + (x - mu) * (x - mu)) / (xs.len() - 1) as f64).sqrt()
}

/// `mean_stderr`; None where lm-eval writes "N/A" (fewer than two items).
pub fn mean_stderr(xs: &[f64]) -> Option<f64> {
    (xs.len() > 1).then(|| sample_stddev(xs) / (xs.len() as f64).sqrt())
}

/// The `perplexity` aggregation: exp(-mean of the items' log-likelihoods).
pub fn perplexity(lls: &[f64]) -> f64 {
    (-mean(lls)).exp()
}

/// lm-eval's default `bootstrap_iters`.
pub const BOOTSTRAP_ITERS: usize = 100_000;

/// `bootstrap_stderr(f, xs, iters)`: `iters / 1000` chunks (at most `iters` per chunk), chunk
/// i seeded `random.Random(i)`, each resample `rnd.choices(xs, k=len(xs))`, i.e.
/// `xs[floor(random() * n)]` n times; the sample standard deviation of the statistics. Chunks
/// run in parallel and are collected in order: the same value for any thread count.
pub fn bootstrap_stderr(f: impl Fn(&[f64]) -> f64 + Sync, xs: &[f64], iters: usize) -> Option<f64> {
    use rayon::prelude::*;
    if xs.len() < 2 {
        return None;
    }
    let chunk = iters.min(1000);
    let n = xs.len();
    let stats: Vec<f64> = (0..iters / chunk)
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut rnd = PyRandom::new(i as u64);
            let mut sample = vec![0.0; n];
            (0..chunk)
                .map(|_| {
                    for s in sample.iter_mut() {
                        *s = xs[(rnd.random() * n as f64).floor() as usize];
                    }
                    f(&sample)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Some(sample_stddev(&stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acc_takes_the_first_maximum_and_acc_norm_divides_by_characters() {
        assert_eq!(argmax_first(&[-3.0, -1.0, -1.0]), 1);
        let choices = vec!["a".to_string(), "abcdefghij".to_string()];
        // Summed: -2 beats -5 (acc picks choice 0); per character -0.5 beats -2 (acc_norm picks 1).
        assert_eq!(choice_decision(&[-2.0, -5.0], &choices, 0), (true, false));
        assert_eq!(choice_decision(&[-2.0, -5.0], &choices, 1), (false, true));
        // Characters, not bytes: "é" is one.
        let c2 = vec!["éé".to_string(), "abc".to_string()];
        assert_eq!(choice_decision(&[-2.0, -2.9], &c2, 1), (false, true));
    }

    #[test]
    fn stderr_of_a_mean_as_lm_eval() {
        // [1, 0, 1, 1]: mean 0.75, sample sd sqrt(0.25) = 0.5, stderr 0.25.
        let xs = [1.0, 0.0, 1.0, 1.0];
        assert_eq!(mean(&xs), 0.75);
        assert!((mean_stderr(&xs).unwrap() - 0.25).abs() < 1e-15);
        assert_eq!(mean_stderr(&[1.0]), None);
        assert!((perplexity(&[-1.0, -3.0]) - 2f64.exp()).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_resamples_as_python() {
        // CPython 3.11: random.Random(0).choices([10, 20, 30], k=3) == [30, 30, 20], and the
        // first draw of Random(0).random() is 0.8444218515250481.
        let mut r = PyRandom::new(0);
        assert!((r.random() - 0.8444218515250481).abs() < 1e-16);
        let xs = [10.0, 20.0, 30.0];
        let mut r = PyRandom::new(0);
        let draw: Vec<f64> = (0..3).map(|_| xs[(r.random() * 3.0).floor() as usize]).collect();
        assert_eq!(draw, vec![30.0, 30.0, 20.0]);
        // The bootstrap sd of a mean approaches the population sd / sqrt(n): for [0, 1]
        // repeated (n = 200) that is 0.5 / sqrt(200) = 0.0354.
        let ys: Vec<f64> = (0..200).map(|i| (i % 2) as f64).collect();
        let s = bootstrap_stderr(mean, &ys, 4000).unwrap();
        assert!((s - 0.5 / 200f64.sqrt()).abs() < 0.003, "{s}");
        assert_eq!(bootstrap_stderr(mean, &ys, 4000), Some(s));
    }

    #[test]
    fn perplexity_bootstrap_equals_lm_eval_s() {
        // lm-eval's bootstrap_stderr(perplexity, xs, 100000) (its single-process loop), run
        // in CPython 3.11 on xs = [-(1 + (7i mod 5)) / 3 for i in 0..50]: 0.1816242474974423.
        let xs: Vec<f64> = (0..50).map(|i| -((1 + (i * 7) % 5) as f64) / 3.0).collect();
        let s = bootstrap_stderr(perplexity, &xs, BOOTSTRAP_ITERS).unwrap();
        assert!((s - 0.1816242474974423).abs() < 1e-12, "{s}");
        // lm-eval 0.4.13 itself (simple_evaluate, its multiprocessing bootstrap) on four
        // LAMBADA log-likelihoods: perplexity_stderr 0.0010492849334285625.
        let xs = [-0.017001, -0.018001, -0.014001, -0.013001];
        let s = bootstrap_stderr(perplexity, &xs, BOOTSTRAP_ITERS).unwrap();
        assert!((s - 0.0010492849334285625).abs() < 1e-15, "{s}");
    }
}
