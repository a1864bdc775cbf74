//! The tool's own random numbers — reservoir sampling, random channel partitions, k-means
//! starts, the alternative calibration sampler, self-check layers — from one family:
//! xoshiro256+ (rand_xoshiro), seeded through SplitMix64 (`seed_from_u64`). The published
//! code's calibration windows come from CPython's Mersenne Twister instead
//! (`data::py_random`), because they must match its draws bit for bit.

use rand_xoshiro::rand_core::{RngCore, SeedableRng};

pub type Rng = rand_xoshiro::Xoshiro256Plus;

pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Uniform in [0, 1) from the top 53 bits (xoshiro256+'s low bits are its weak ones).
pub fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform integer in [0, n), unbiased (rejection on the top bits of a 64-bit product).
pub fn below(rng: &mut Rng, n: u64) -> u64 {
    assert!(n > 0, "below(0)");
    let zone = n.wrapping_neg() % n; // 2^64 mod n: products whose low half is below it are rejected
    loop {
        let m = rng.next_u64() as u128 * n as u128;
        if (m as u64) >= zone {
            return (m >> 64) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_only_on_the_seed_and_stay_in_range() {
        let (mut a, mut b) = (seeded(7), seeded(7));
        let xs: Vec<u64> = (0..1000).map(|_| below(&mut a, 10)).collect();
        assert_eq!(xs, (0..1000).map(|_| below(&mut b, 10)).collect::<Vec<_>>());
        assert!(xs.iter().all(|&x| x < 10));
        // Every value turns up, none far from 1/10 of the draws.
        for v in 0..10 {
            let c = xs.iter().filter(|&&x| x == v).count();
            assert!((60..=140).contains(&c), "{v}: {c}");
        }
        let u: Vec<f64> = (0..1000).map(|_| uniform(&mut a)).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    }
}
