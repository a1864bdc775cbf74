//! Stored calibration tokens of one linear input, for the sample-based MI estimators:
//! reservoir sampling (Algorithm R) of token rows with a fixed seed.

use anyhow::Result;
use candle_core::{DType, Tensor};

pub struct Reservoir {
    cap: usize,
    seen: usize,
    pub rows: Vec<Vec<f32>>,
    rng: crate::rng::Rng,
}

impl Reservoir {
    pub fn new(cap: usize, seed: u64) -> Self {
        Reservoir { cap, seen: 0, rows: Vec::new(), rng: crate::rng::seeded(seed) }
    }

    /// Offers every token row of `x` (…, dim).
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        let d = *x.dims().last().unwrap_or(&0);
        let flat: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for row in flat.chunks(d) {
            self.offer(row);
        }
        Ok(())
    }

    fn offer(&mut self, row: &[f32]) {
        self.seen += 1;
        if self.rows.len() < self.cap {
            self.rows.push(row.to_vec());
        } else {
            let j = crate::rng::below(&mut self.rng, self.seen as u64) as usize;
            if j < self.cap {
                self.rows[j] = row.to_vec();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_capacity_and_every_row_has_a_fair_chance() {
        // 10 rows offered to a reservoir of 2, many times over: each row kept ~1/5 of the time.
        let mut kept = [0usize; 10];
        for seed in 0..2000 {
            let mut r = Reservoir::new(2, seed);
            for v in 0..10 {
                r.offer(&[v as f32]);
            }
            assert_eq!(r.rows.len(), 2);
            for row in &r.rows {
                kept[row[0] as usize] += 1;
            }
        }
        for (v, &k) in kept.iter().enumerate() {
            assert!((300..=500).contains(&k), "row {v} kept {k} times of 2000 (expected ~400)");
        }
    }
}
