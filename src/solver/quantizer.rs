//! GPTQ's min-max quantizer (`quant.py`): asymmetric or symmetric, one scale and zero
//! point per output row (or per row and column group), round half to even as torch does.
//!
//! Deviation from the published code, on purpose (`ScalePrecision`): the scale can be
//! rounded to the checkpoint's storage dtype before the grid is used. The published code
//! keeps f32 scales in its fake-quantized weights, then writes f16 weights; its own packed
//! export stores the scale in f16, so an engine computing `scale16 · (q − zero)` can differ
//! from the published code's evaluated weight by an f16 ulp wherever rounding the scale
//! matters. Fitting the grid with the stored scale makes the in-process evaluation, the
//! dense export, both packed exports and the engines compute the same weight values.

use candle_core::DType;

/// The precision the grid's scale is held in (`SweepSpec::scale_precision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalePrecision {
    /// f32, as the published code (and f32 checkpoints, whose packed scales stay f32).
    #[default]
    F32,
    /// Rounded to f16 (round to nearest, ties to even), as f16 checkpoints store scales.
    F16,
    /// Rounded to bf16, as bf16 checkpoints store them (compressed-tensors keeps the
    /// weight's dtype for its scales).
    BF16,
}

impl ScalePrecision {
    /// The precision scales of a checkpoint stored in `dtype` are kept in.
    pub fn of_storage(dtype: DType) -> Self {
        match dtype {
            DType::F16 => ScalePrecision::F16,
            DType::BF16 => ScalePrecision::BF16,
            _ => ScalePrecision::F32,
        }
    }

    /// `x` rounded to this precision (as an f32). A positive scale that would round to 0
    /// becomes the smallest positive value of the precision instead (a grid needs a
    /// non-zero step; only groups whose range is below that value's reach this).
    pub fn round_scale(self, x: f32) -> f32 {
        let (r, tiny) = match self {
            ScalePrecision::F32 => return x,
            ScalePrecision::F16 => (half::f16::from_f32(x).to_f32(), half::f16::from_bits(1).to_f32()),
            ScalePrecision::BF16 => (half::bf16::from_f32(x).to_f32(), half::bf16::from_bits(1).to_f32()),
        };
        if r == 0.0 && x > 0.0 {
            tiny
        } else {
            r
        }
    }
}

/// Scale and zero point of one row (or row × group); `maxq` = 2^bits − 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero: f32,
    pub maxq: f32,
}

/// `Quantizer.find_params` for one row of weights, the scale held in `precision`.
///
/// With `ScalePrecision::F32` this is the published code exactly. Otherwise the scale
/// `(xmax − xmin) / maxq` is rounded first and the zero point computed from the rounded
/// scale, `round(−xmin / scale)`, clamped to `0..=maxq` (a rounded-down scale can push it
/// one past `maxq`; with f32 scales the clamp never acts).
pub fn find_params(x: &[f32], bits: u32, sym: bool, precision: ScalePrecision) -> QuantParams {
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
    let scale = precision.round_scale((xmax - xmin) / maxq);
    let zero = if sym { (maxq + 1.0) / 2.0 } else { (-xmin / scale).round_ties_even().clamp(0.0, maxq) };
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

    const F32: ScalePrecision = ScalePrecision::F32;

    #[test]
    fn asymmetric_grid_covers_min_and_max() {
        let row = [-1.0f32, 0.2, 0.5, 2.0];
        let p = find_params(&row, 2, false, F32);
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
        let p = find_params(&[-3.0, 1.0], 4, true, F32);
        assert_eq!(p.zero, 8.0);
        assert!((p.scale - 6.0 / 15.0).abs() < 1e-7);
        assert_eq!(quantize(0.0, &p), 0.0);
    }

    #[test]
    fn all_zero_row_gets_unit_range() {
        let p = find_params(&[0.0, 0.0], 3, false, F32);
        assert!((p.scale - 2.0 / 7.0).abs() < 1e-7);
    }

    #[test]
    fn stored_scales_are_representable_and_keep_the_grid_in_range() {
        let row = [-0.3137f32, 0.0021, 0.2718, 0.1414];
        for (prec, back) in [
            (ScalePrecision::F16, (|s: f32| half::f16::from_f32(s).to_f32()) as fn(f32) -> f32),
            (ScalePrecision::BF16, |s: f32| half::bf16::from_f32(s).to_f32()),
        ] {
            for bits in [2, 3, 4, 8] {
                let p = find_params(&row, bits, false, prec);
                assert_eq!(back(p.scale), p.scale, "{prec:?} {bits}: scale not representable");
                let f = find_params(&row, bits, false, F32);
                assert!((p.scale - f.scale).abs() <= f.scale * 2f32.powi(-8), "{prec:?}: {} vs {}", p.scale, f.scale);
                assert!(p.zero >= 0.0 && p.zero <= p.maxq);
                // Every value on the grid is scale · integer, exact in f32.
                for &x in &row {
                    let v = quantize(x, &p);
                    assert_eq!(v / p.scale, (v / p.scale).round());
                }
            }
        }
        // All weights negative: −xmin/scale is maxq for f32 scales; a bf16 scale rounded
        // down pushes it past maxq, and the zero point is clamped back.
        let x = 1.002f32 * 255.0 / 256.0; // x / 255 = 1.002 · 2^-8, which bf16 rounds to 2^-8
        let neg = [-x, -0.5];
        let p = find_params(&neg, 8, false, ScalePrecision::BF16);
        assert_eq!(p.scale, 2f32.powi(-8));
        assert!(x / p.scale > 255.5, "the unclamped zero would be 256");
        assert_eq!(p.zero, 255.0);
        // A range too small for an f16 step gets the smallest f16 subnormal as its scale.
        let tiny = find_params(&[1e-9f32, -1e-9], 8, false, ScalePrecision::F16);
        assert_eq!(tiny.scale, half::f16::from_bits(1).to_f32());
        assert_eq!(ScalePrecision::of_storage(DType::F16), ScalePrecision::F16);
        assert_eq!(ScalePrecision::of_storage(DType::F32), F32);
    }
}
