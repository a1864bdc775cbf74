//! GPTQ's min-max quantizer (`quant.py`): asymmetric or symmetric, one scale and zero
//! point per output row (or per row and column group), round half to even as torch does.

/// Scale and zero point of one row (or row × group); `maxq` = 2^bits − 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero: f32,
    pub maxq: f32,
}

/// `Quantizer.find_params` for one row of weights.
pub fn find_params(x: &[f32], bits: u32, sym: bool) -> QuantParams {
    let maxq = ((1u32 << bits) - 1) as f32;
    let mut xmin = x.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
    let mut xmax = x.iter().copied().fold(f32::NEG_INFINITY, f32::max).max(0.0);
    if sym {
        xmax = xmax.max(xmin.abs());
        if xmin < 0.0 {
            xmin = -xmax;
        }
    }
    if xmin == 0.0 && xmax == 0.0 {
        xmin = -1.0;
        xmax = 1.0;
    }
    let scale = (xmax - xmin) / maxq;
    let zero = if sym { (maxq + 1.0) / 2.0 } else { (-xmin / scale).round_ties_even() };
    QuantParams { scale, zero, maxq }
}

/// `quantize(x, scale, zero, maxq)`: the dequantized value on the grid.
#[inline]
pub fn quantize(x: f32, p: &QuantParams) -> f32 {
    let q = ((x / p.scale).round_ties_even() + p.zero).clamp(0.0, p.maxq);
    p.scale * (q - p.zero)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_grid_covers_min_and_max() {
        let row = [-1.0f32, 0.2, 0.5, 2.0];
        let p = find_params(&row, 2, false);
        assert!((p.scale - 1.0).abs() < 1e-7);
        assert_eq!(p.zero, 1.0);
        assert_eq!(quantize(-1.0, &p), -1.0);
        assert_eq!(quantize(2.0, &p), 2.0);
        assert_eq!(quantize(0.5, &p), 0.0, "0.5 rounds half to even");
        assert_eq!(quantize(0.0, &p), 0.0, "zero stays exactly zero");
        let distinct: std::collections::BTreeSet<u32> =
            (0..100).map(|i| quantize(i as f32 / 20.0 - 2.0, &p).to_bits()).collect();
        assert!(distinct.len() <= 4);
    }

    #[test]
    fn symmetric_grid_is_centred() {
        let p = find_params(&[-3.0, 1.0], 4, true);
        assert_eq!(p.zero, 8.0);
        assert!((p.scale - 6.0 / 15.0).abs() < 1e-7);
        assert_eq!(quantize(0.0, &p), 0.0);
    }

    #[test]
    fn all_zero_row_gets_unit_range() {
        let p = find_params(&[0.0, 0.0], 3, false);
        assert!((p.scale - 2.0 / 7.0).abs() < 1e-7);
    }
}
