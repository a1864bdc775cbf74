//! The MI matrix as a picture: a PNG heatmap with a dark-to-bright colour ramp.

use super::mutual_info::SymMatrix;
use anyhow::Result;

/// Maps t ∈ [0, 1] to a dark-to-bright colour ramp (black → purple → orange → yellow).
fn colour(t: f64) -> [u8; 3] {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [0.0, 0.0, 4.0]),
        (0.25, [87.0, 16.0, 110.0]),
        (0.5, [188.0, 55.0, 84.0]),
        (0.75, [249.0, 142.0, 9.0]),
        (1.0, [252.0, 255.0, 164.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    for w in STOPS.windows(2) {
        let ((t0, c0), (t1, c1)) = (w[0], w[1]);
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            return [0, 1, 2].map(|i| (c0[i] + f * (c1[i] - c0[i])).round() as u8);
        }
    }
    [252, 255, 164]
}

/// `m` (already ordered) as an RGB PNG. The colour scale saturates at the 99th
/// percentile of the off-diagonal values, so a few near-duplicate channels do not wash
/// out the block structure.
pub fn heatmap_png(m: &SymMatrix) -> Result<Vec<u8>> {
    let d = m.d;
    let mut off: Vec<f64> = (0..d * d).filter(|k| k / d != k % d).map(|k| m.values[k]).collect();
    off.sort_by(|a, b| a.total_cmp(b));
    let max = off.get((off.len() as f64 * 0.99) as usize).copied().unwrap_or(1.0).max(1e-12);
    let mut pixels = Vec::with_capacity(d * d * 3);
    for k in 0..d * d {
        let v = if k / d == k % d { max } else { m.values[k] };
        pixels.extend_from_slice(&colour(v / max));
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, d as u32, d as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&pixels)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_is_a_png_of_the_matrix_size_and_the_ramp_runs_dark_to_bright() {
        let m = SymMatrix { d: 3, values: vec![1.0, 0.2, 0.0, 0.2, 1.0, 0.5, 0.0, 0.5, 1.0] };
        let png = heatmap_png(&m).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height are the matrix dimension.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 3);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 3);
        let lum = |c: [u8; 3]| c.iter().map(|&v| v as u32).sum::<u32>();
        assert!(lum(colour(0.0)) < lum(colour(0.5)) && lum(colour(0.5)) < lum(colour(1.0)));
    }
}
