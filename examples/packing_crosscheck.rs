//! Writes what the library's packing (`sparsegpt_mi::output::packing`) produces for fixed
//! pseudo-random codes, and the f16 bits the exports store for scales (`half`), as JSON, for
//! checks/crosscheck_packing.py to compare with compressed-tensors' own pack/unpack, an
//! independent Python implementation of the GPTQ layout and torch's f16 rounding. Run by
//! checks/crosscheck_packing.sh:
//!   cargo run --example packing_crosscheck -- OUT.json

use sparsegpt_mi::output::packing::*;
use std::fmt::Write as _;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn codes(&mut self, n: usize, bits: u32) -> Vec<u8> {
        (0..n).map(|_| (self.next() % (1 << bits)) as u8).collect()
    }
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    let mut s = String::from("[");
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write!(s, "{x}").unwrap();
    }
    s.push(']');
    s
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: packing_crosscheck OUT.json");
    let mut rng = Rng(0x5eed);
    let shapes = [(3usize, 192usize), (5, 200), (2, 1000), (64, 33), (1, 7)];
    let mut ct = Vec::new();
    let mut ctz = Vec::new();
    let mut gptq = Vec::new();
    for bits in 1..=8u32 {
        for &(rows, cols) in &shapes {
            let codes = rng.codes(rows * cols, bits);
            let packed = pack_ct_rows(&codes, rows, cols, bits).unwrap();
            ct.push(format!(
                "{{\"bits\":{bits},\"rows\":{rows},\"cols\":{cols},\"codes\":{},\"packed\":{}}}",
                list(&codes),
                list(&packed)
            ));
            // zero points [out = cols][groups = rows], packed along the output dimension
            let zeros = rng.codes(rows * cols, bits);
            let zp = pack_ct_zero_points(&zeros, cols, rows, bits).unwrap();
            ctz.push(format!(
                "{{\"bits\":{bits},\"out\":{cols},\"groups\":{rows},\"zeros\":{},\"packed\":{}}}",
                list(&zeros),
                list(&zp)
            ));
            if GPTQ_BITS.contains(&bits) {
                // codes [out = rows][in = cols]; zeros [groups = 3][out]
                let q = pack_gptq_qweight(&codes, rows, cols, bits).unwrap();
                let z = rng.codes(3 * rows, bits);
                let qz = pack_gptq_qzeros(&z, 3, rows, bits, GptqZeros::V1).unwrap();
                gptq.push(format!(
                    "{{\"bits\":{bits},\"out\":{rows},\"in\":{cols},\"codes\":{},\"qweight\":{},\"groups\":3,\"zeros\":{},\"qzeros\":{}}}",
                    list(&codes),
                    list(&q),
                    list(&z),
                    list(&qz)
                ));
            }
        }
    }
    // f32 → f16: special values, every f16 midpoint ± 1 ulp sample, and random bit patterns.
    let mut f32s: Vec<u32> =
        vec![0, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x477f_e000, 0x477f_efff, 0x477f_f000, 0x3380_0000, 0x3300_0000];
    for _ in 0..200_000 {
        let b = rng.next() as u32;
        if f32::from_bits(b).is_nan() {
            continue;
        }
        f32s.push(b);
    }
    for _ in 0..100_000 {
        // values in the f16 range, where rounding matters
        let x = (rng.next() % 0x7fff_ffff) as f32 / 0x7fff_ffff as f32
            * 70000.0
            * if rng.next().is_multiple_of(2) { 1.0 } else { -1.0 };
        let e = (rng.next() % 30) as i32 - 24;
        f32s.push((x * 2f32.powi(e) / 65536.0).to_bits());
    }
    let f16s: Vec<u16> = f32s.iter().map(|&b| half::f16::from_f32(f32::from_bits(b)).to_bits()).collect();
    let json = format!(
        "{{\"ct_rows\":[{}],\"ct_zero_points\":[{}],\"gptq\":[{}],\"f16\":{{\"f32_bits\":{},\"f16_bits\":{}}}}}",
        ct.join(","),
        ctz.join(","),
        gptq.join(","),
        list(&f32s),
        list(&f16s)
    );
    std::fs::write(&path, json).unwrap();
    eprintln!(
        "wrote {} ct rows, {} ct zero points, {} gptq, {} f16 cases to {path}",
        ct.len(),
        ctz.len(),
        gptq.len(),
        f32s.len()
    );
}
