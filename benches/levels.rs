//! Level counts of solved weights (`solver::scheme::max_levels`) at opt-6.7b's fc1 and fc2
//! shapes, as the pipeline runs them after every linear: weights stored in f16, no
//! quantization (one grid per row) and 4-bit g128 (one grid per 128 columns).
//!
//!     cargo bench --bench levels --profile dev   (the optimised profile the tests build)
use sparsegpt_mi::solver::QuantScheme;
use std::time::Instant;

fn main() {
    let threads = rayon::current_num_threads();
    for (rows, cols) in [(16384usize, 4096usize), (4096, 16384)] {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                half::f16::from_f32(u * 0.05).to_f32()
            })
            .collect();
        for (name, quant) in [
            ("unquantized", QuantScheme::None),
            ("4-bit g128", QuantScheme::Grouped { bits: 4, sym: false, size: 128 }),
        ] {
            let t = Instant::now();
            let levels = sparsegpt_mi::solver::scheme::max_levels(&w, cols, &quant, None);
            println!(
                "{rows}x{cols} {name}: {:.3} s on {threads} threads (max levels per row {}, per grid {})",
                t.elapsed().as_secs_f64(),
                levels.0,
                levels.1
            );
        }
    }
}
