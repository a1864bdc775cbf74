//! Packing quantized codes into the int32 words of the two checkpoint formats serving
//! engines load: the GPTQ checkpoint format ("gptq", v1 zero points) and compressed-tensors'
//! "pack-quantized" format. Pure functions on plain slices; see
//! docs/formats.md for the file layout, the config JSON and the sources each claim rests on.
//!
//! # Conventions used throughout
//!
//! * A *code* is the unsigned integer the GPTQ min-max quantizer produces:
//!   `q ∈ [0, 2^bits − 1]`, with a per (output row, group) `scale` and integer `zero`
//!   (`0..=2^bits − 1`; symmetric grids have `zero = 2^(bits−1)`), and
//!   `dequantized = scale · (q − zero)`.
//! * Codes and weights are given row-major as `[out][in]`, like a torch `nn.Linear.weight`
//!   (row = output channel, column = input channel). Per-group values (`scales`, `zeros`)
//!   are given as `[out][groups]` unless a function says otherwise.
//! * Every packed layout here is the same primitive: a **little-endian bit stream**. Value
//!   `i` of a sequence occupies stream bits `[i·bits, (i+1)·bits)`, and int32 word `w` holds
//!   stream bits `[32w, 32w + 32)` with stream bit `32w` in the word's least significant
//!   bit. For 2, 4 and 8 bits this is "32/bits values per word, the first value in the low
//!   bits"; for 3 bits values straddle words (value 10 has its low 2 bits in bits 30–31 of
//!   word 0 and its high bit in bit 0 of word 1), which is exactly AutoGPTQ's 3-bit
//!   `10 | 1 | 10 | 1 | 10` layout of 32 values in 3 words and compressed-tensors' (≥ the
//!   June 2026 "dense packing" change, e.g. 0.20.1) layout. A sequence of `n` values takes
//!   `ceil(n·bits / 32)` words; unused high bits of the last word are zero.
//! * Words are returned as `i32` (the files store int32); the bit pattern is what matters.

use std::fmt;

/// An argument that does not fit the layout (wrong length, code out of range, bad width).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackError(pub String);

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PackError {}

fn err<T>(msg: String) -> Result<T, PackError> {
    Err(PackError(msg))
}

/// Bit widths the GPTQ checkpoint format defines (AutoGPTQ/GPTQModel QuantLinear: 2, 3, 4, 8).
pub const GPTQ_BITS: [u32; 4] = [2, 3, 4, 8];

fn check_gptq_bits(bits: u32) -> Result<(), PackError> {
    if GPTQ_BITS.contains(&bits) {
        Ok(())
    } else {
        err(format!("the GPTQ format holds 2, 3, 4 or 8 bits, not {bits}"))
    }
}

fn check_ct_bits(bits: u32) -> Result<(), PackError> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        err(format!("compressed-tensors pack-quantized holds 1 to 8 bits, not {bits}"))
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), PackError> {
    if got == want {
        Ok(())
    } else {
        err(format!("{what}: {got} values, expected {want}"))
    }
}

fn check_codes(what: &str, values: &[u8], bits: u32) -> Result<(), PackError> {
    let max = (1u32 << bits) - 1;
    match values.iter().position(|&v| u32::from(v) > max) {
        None => Ok(()),
        Some(i) => err(format!("{what}[{i}] = {} does not fit in {bits} bits", values[i])),
    }
}

/// Words a little-endian bit stream of `n` values of `bits` bits takes: `ceil(n·bits/32)`.
pub fn stream_words(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// Writes value `i` of `values(i)` (i < n) into a stream of `n_words` words (see module
/// doc). Values must already fit in `bits` bits.
fn pack_stream(n: usize, bits: u32, n_words: usize, values: impl Fn(usize) -> u8) -> Vec<u32> {
    let mut words = vec![0u32; n_words];
    for i in 0..n {
        let bit = i * bits as usize;
        let v = u64::from(values(i)) << (bit % 32);
        let w = bit / 32;
        words[w] |= v as u32;
        if (bit % 32) + bits as usize > 32 {
            words[w + 1] |= (v >> 32) as u32;
        }
    }
    words
}

// ---------------------------------------------------------------------------------------
// GPTQ checkpoint format
// ---------------------------------------------------------------------------------------

/// Rows of a GPTQ `qweight` for `in_dim` input channels: `ceil(in_dim·bits/32)`.
///
/// The reference loaders (AutoGPTQ and GPTQModel `QuantLinear`) allocate
/// `in_features // 32 * bits` rows, so a file they load needs `in_dim % 32 == 0` (then this
/// is exactly `in_dim·bits/32`); see [`gptq_shape_supported`].
pub fn gptq_qweight_rows(in_dim: usize, bits: u32) -> usize {
    stream_words(in_dim, bits)
}

/// Columns of a GPTQ `qzeros` for `out_dim` output channels: `ceil(out_dim·bits/32)`
/// (loaders: `out_features // 32 * bits`, so they need `out_dim % 32 == 0`).
pub fn gptq_qzeros_cols(out_dim: usize, bits: u32) -> usize {
    stream_words(out_dim, bits)
}

/// Quantization groups along the input dimension: `ceil(in_dim / group_size)`, one for
/// per-channel quantization (`group_size == None`, written as `group_size: -1`). The last
/// group is short when `group_size` does not divide `in_dim`.
pub fn num_groups(in_dim: usize, group_size: Option<usize>) -> usize {
    match group_size {
        None => 1,
        Some(g) => in_dim.div_ceil(g),
    }
}

/// GPTQ `qweight`: int32, row-major `[gptq_qweight_rows(in_dim, bits)][out_dim]`.
///
/// `codes` are `[out_dim][in_dim]` (torch Linear layout), each `< 2^bits`. Packed along
/// the INPUT dimension: column `o` of `qweight` is the little-endian bit stream of
/// `codes[o][0..in_dim]`, so for 4 bits word `qweight[r][o]` holds inputs `8r .. 8r+7` of
/// output `o`, input `8r` in bits 0–3 (AutoGPTQ `qlinear_cuda_old.pack`:
/// `qweight[row] |= intweight[j] << (bits·(j − i))`), and for 3 bits 32 inputs fill 3 words
/// with values 10 and 21 split across words (the `10 | 1 | 10 | 1 | 10` scheme).
pub fn pack_gptq_qweight(codes: &[u8], out_dim: usize, in_dim: usize, bits: u32) -> Result<Vec<i32>, PackError> {
    check_gptq_bits(bits)?;
    check_len("codes", codes.len(), out_dim * in_dim)?;
    check_codes("codes", codes, bits)?;
    let rows = gptq_qweight_rows(in_dim, bits);
    let mut q = vec![0i32; rows * out_dim];
    for o in 0..out_dim {
        let row = &codes[o * in_dim..(o + 1) * in_dim];
        let col = pack_stream(in_dim, bits, rows, |i| row[i]);
        for (r, w) in col.into_iter().enumerate() {
            q[r * out_dim + o] = w as i32;
        }
    }
    Ok(q)
}

/// Which zero-point convention a GPTQ `qzeros` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GptqZeros {
    /// `checkpoint_format: "gptq"` (v1, what AutoGPTQ wrote and vLLM / transformers read):
    /// each field holds `(zero − 1) mod 2^bits`; readers add 1 back per field
    /// (`zeros = (field + 1) & maxq`). A zero of 0 is stored as `maxq`; see
    /// [`gptq_v1_zero_hazard`].
    V1,
    /// `checkpoint_format: "gptq_v2"` (GPTQModel's internal form): the zero as it is.
    V2,
}

/// GPTQ `qzeros`: int32, row-major `[groups][gptq_qzeros_cols(out_dim, bits)]`.
///
/// `zeros` are `[groups][out_dim]` (note: group-major, like the file), each `< 2^bits`.
/// Packed along the OUTPUT dimension: row `g` is the little-endian bit stream over `o` of
/// the stored field (v1: `(zero − 1) mod 2^bits`), so for 4 bits word `qzeros[g][c]`
/// holds outputs `8c .. 8c+7`, output `8c` in bits 0–3; 3 bits use the same cross-word
/// layout as `qweight`.
pub fn pack_gptq_qzeros(
    zeros: &[u8],
    groups: usize,
    out_dim: usize,
    bits: u32,
    convention: GptqZeros,
) -> Result<Vec<i32>, PackError> {
    check_gptq_bits(bits)?;
    check_len("zeros", zeros.len(), groups * out_dim)?;
    check_codes("zeros", zeros, bits)?;
    let mask = ((1u32 << bits) - 1) as u8;
    let cols = gptq_qzeros_cols(out_dim, bits);
    let mut q = Vec::with_capacity(groups * cols);
    for g in 0..groups {
        let row = &zeros[g * out_dim..(g + 1) * out_dim];
        let stored = |o: usize| match convention {
            GptqZeros::V1 => row[o].wrapping_sub(1) & mask,
            GptqZeros::V2 => row[o],
        };
        q.extend(pack_stream(out_dim, bits, cols, stored).into_iter().map(|w| w as i32));
    }
    Ok(q)
}

/// Number of zero points equal to 0 (asymmetric grids only) whose v1 field `maxq` is not
/// the topmost field of its word, for 2/4/8 bits. Such a field is read back correctly by
/// per-field readers (AutoGPTQ, vLLM's GPTQ kernels: `(field + 1) & maxq`), but GPTQModel's
/// v1→v2 conversion for 2/4/8 bits adds `0x…1111` to the whole int32 word, so the carry out
/// of that field adds 1 to the next output's zero (GPTQModel `convert_gptq_v1_to_v2_format_module`,
/// whose comment estimates "~<=13%" of asymmetric v1 checkpoints overflow). 3-bit v1 zeros
/// are corrected per field there, so they are not counted. `zeros` are `[groups][out_dim]`.
pub fn gptq_v1_zero_hazard(zeros: &[u8], out_dim: usize, bits: u32) -> usize {
    if bits == 3 || out_dim == 0 {
        return 0;
    }
    let per_word = (32 / bits) as usize;
    zeros
        .iter()
        .enumerate()
        .filter(|&(k, &z)| z == 0 && (k % out_dim) % per_word != per_word - 1 && (k % out_dim) + 1 < out_dim)
        .count()
}

// ---------------------------------------------------------------------------------------
// g_idx
// ---------------------------------------------------------------------------------------

/// Whether `g_idx` is `j / group_size` (the layout every kernel and compressed-tensors'
/// group strategy assume without a stored `g_idx`).
pub fn g_idx_is_contiguous(g_idx: &[i32], group_size: Option<usize>) -> bool {
    g_idx.iter().enumerate().all(|(j, &g)| i64::from(g) == group_size.map_or(0, |size| (j / size) as i64))
}

// ---------------------------------------------------------------------------------------
// compressed-tensors pack-quantized
// ---------------------------------------------------------------------------------------

/// Columns of `weight_packed` for `in_dim` input channels: `ceil(in_dim·bits/32)`
/// (compressed-tensors ≥ the dense-packing change; older releases used
/// `ceil(in_dim / (32 // bits))`, which differs for 3, 5, 6, 7 bits only).
pub fn ct_packed_cols(in_dim: usize, bits: u32) -> usize {
    stream_words(in_dim, bits)
}

/// compressed-tensors `weight_packed`: int32, row-major `[rows][ct_packed_cols(cols, bits)]`.
///
/// `codes` are `[rows][cols]` = `[out][in]` unsigned codes (`< 2^bits`); each row is the
/// little-endian bit stream of its stored fields, and a field is `signed + 2^(bits−1)`,
/// i.e. the unsigned code (see [`ct_signed`]). For 4 bits: word `[o][c]` holds inputs
/// `8c .. 8c+7`, input `8c` in bits 0–3 (`pack_to_int32`, packed_dim = 1).
pub fn pack_ct_rows(codes: &[u8], rows: usize, cols: usize, bits: u32) -> Result<Vec<i32>, PackError> {
    check_ct_bits(bits)?;
    check_len("codes", codes.len(), rows * cols)?;
    check_codes("codes", codes, bits)?;
    let words = ct_packed_cols(cols, bits);
    let mut out = Vec::with_capacity(rows * words);
    for r in 0..rows {
        let row = &codes[r * cols..(r + 1) * cols];
        out.extend(pack_stream(cols, bits, words, |i| row[i]).into_iter().map(|w| w as i32));
    }
    Ok(out)
}

/// compressed-tensors `weight_zero_point` of an asymmetric linear: int32, row-major
/// `[ct_packed_cols(out_dim, bits)][groups]` (`pack_to_int32(zero_point, bits, packed_dim=0)`).
///
/// `zeros` are `[out_dim][groups]` (the layout of `weight_scale`), unsigned GPTQ zeros
/// `< 2^bits`. Packed along dim 0, the OUTPUT dimension: column `g` is the bit stream over
/// `o` of the stored field, which (signed zero point + 2^(bits−1)) equals the GPTQ zero.
/// Channel strategy: `groups = 1`.
pub fn pack_ct_zero_points(zeros: &[u8], out_dim: usize, groups: usize, bits: u32) -> Result<Vec<i32>, PackError> {
    check_ct_bits(bits)?;
    check_len("zeros", zeros.len(), out_dim * groups)?;
    check_codes("zeros", zeros, bits)?;
    let words = ct_packed_cols(out_dim, bits);
    let mut out = vec![0i32; words * groups];
    for g in 0..groups {
        let col = pack_stream(out_dim, bits, words, |o| zeros[o * groups + g]);
        for (w, v) in col.into_iter().enumerate() {
            out[w * groups + g] = v as i32;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Codes from the solver's dequantized weights, layout helpers, mixed widths
// ---------------------------------------------------------------------------------------

/// Recovers the integer codes of a quantized weight `w` (`[out_dim][in_dim]`, the solver's
/// dequantized output `scale · (q − zero)` computed in f32) from its grids: `scales` and
/// `zeros` are `[out_dim][groups]` (zeros integer-valued, as the quantizer holds them) and
/// `g_idx[j]` is the group of input column `j`. `q = clamp(round_half_even(w / scale) +
/// zero, 0, maxq)`, and each code is checked: `scale · (q − zero)` must give back `w`
/// bit for bit (±0 alike), else an error names the first weight that is not on its grid.
pub fn recover_codes(
    w: &[f32],
    out_dim: usize,
    in_dim: usize,
    scales: &[f32],
    zeros: &[f32],
    g_idx: &[i32],
    bits: u32,
) -> Result<Vec<u8>, PackError> {
    let groups = scales.len().checked_div(out_dim).unwrap_or(0);
    recover_codes_per_group(w, out_dim, in_dim, scales, zeros, g_idx, &vec![bits; groups])
}

/// [`recover_codes`] for groups of different widths (mixed precision): group `g` has
/// `group_bits[g]` bits, so its codes are clamped to (and checked against) `2^bits − 1`.
pub fn recover_codes_per_group(
    w: &[f32],
    out_dim: usize,
    in_dim: usize,
    scales: &[f32],
    zeros: &[f32],
    g_idx: &[i32],
    group_bits: &[u32],
) -> Result<Vec<u8>, PackError> {
    if let Some(&b) = group_bits.iter().find(|&&b| !(1..=8).contains(&b)) {
        return err(format!("codes of {b} bits do not fit in u8"));
    }
    check_len("weights", w.len(), out_dim * in_dim)?;
    check_len("g_idx", g_idx.len(), in_dim)?;
    let groups = group_bits.len();
    check_len("scales", scales.len(), out_dim * groups)?;
    check_len("zeros", zeros.len(), out_dim * groups)?;
    if let Some(&g) = g_idx.iter().find(|&&g| g < 0 || g as usize >= groups) {
        return err(format!("g_idx holds group {g}, but there are {groups} groups"));
    }
    let maxq: Vec<f32> = group_bits.iter().map(|&b| ((1u32 << b) - 1) as f32).collect();
    let mut codes = vec![0u8; w.len()];
    for o in 0..out_dim {
        for j in 0..in_dim {
            let k = g_idx[j] as usize;
            let g = o * groups + k;
            let (s, z) = (scales[g], zeros[g]);
            let x = w[o * in_dim + j];
            let q = ((x / s).round_ties_even() + z).clamp(0.0, maxq[k]);
            if s * (q - z) != x {
                return err(format!(
                    "weight [{o}][{j}] = {x:e} is not on its grid (scale {s:e}, zero {z}): nearest code {q} gives {:e}",
                    s * (q - z)
                ));
            }
            codes[o * in_dim + j] = q as u8;
        }
    }
    Ok(codes)
}

/// Transposes a row-major `[rows][cols]` matrix (e.g. `[out][groups]` scales into GPTQ's
/// `[groups][out]`).
pub fn transpose<T: Copy>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(m.len(), rows * cols, "transpose: {} values for {rows}×{cols}", m.len());
    let mut t = Vec::with_capacity(m.len());
    for c in 0..cols {
        t.extend((0..rows).map(|r| m[r * cols + c]));
    }
    t
}

/// The smallest width in `supported` (ascending or not) that is at least `max_bits`: the
/// uniform width a linear whose column groups have different widths is stored at.
pub fn smallest_uniform_width(max_bits: u32, supported: &[u32]) -> Option<u32> {
    supported.iter().copied().filter(|&b| b >= max_bits).min()
}

/// Re-expresses one code of a `from_bits` grid on a `to_bits ≥ from_bits` grid with the
/// same scale, so that `scale · (q' − zero')` equals `scale · (q − zero)` exactly.
/// Asymmetric: `(q, zero)` unchanged (they fit). Symmetric: the wider symmetric grid's zero
/// is `2^(to−1)`, so both shift by `2^(to−1) − 2^(from−1)`; pass `sym = true` only when
/// `zero == 2^(from−1)`. Returns `(q', zero')`.
pub fn widen_code(q: u8, zero: u8, from_bits: u32, to_bits: u32, sym: bool) -> Result<(u8, u8), PackError> {
    if from_bits > to_bits || to_bits > 8 || from_bits == 0 {
        return err(format!("cannot widen {from_bits} bits to {to_bits}"));
    }
    if u32::from(q) >> from_bits != 0 || u32::from(zero) >> from_bits != 0 {
        return err(format!("code {q} / zero {zero} do not fit in {from_bits} bits"));
    }
    if !sym {
        return Ok((q, zero));
    }
    if u32::from(zero) != 1 << (from_bits - 1) {
        return err(format!("symmetric {from_bits}-bit zero must be {}, not {zero}", 1u32 << (from_bits - 1)));
    }
    let shift = (1u32 << (to_bits - 1)) - (1u32 << (from_bits - 1));
    Ok(((u32::from(q) + shift) as u8, (1u32 << (to_bits - 1)) as u8))
}

/// The layouts read back: decoders and builders that only the tests need (the product writes
/// these formats; `model::packed` reads them independently).
#[cfg(test)]
pub(crate) mod decode {
    use super::*;

    /// Reads value `i` (of `bits` bits) of a little-endian bit stream held by `word(w)`.
    #[inline]
    fn stream_value(word: impl Fn(usize) -> u32, i: usize, bits: u32) -> u8 {
        let bit = i * bits as usize;
        let w = bit / 32;
        let off = bit % 32;
        let mut v = u64::from(word(w)) >> off;
        if off + bits as usize > 32 {
            v |= u64::from(word(w + 1)) << (32 - off);
        }
        (v & ((1u64 << bits) - 1)) as u8
    }

    /// Inverse of [`pack_gptq_qweight`]: codes `[out_dim][in_dim]`.
    pub fn unpack_gptq_qweight(
        qweight: &[i32],
        out_dim: usize,
        in_dim: usize,
        bits: u32,
    ) -> Result<Vec<u8>, PackError> {
        check_gptq_bits(bits)?;
        let rows = gptq_qweight_rows(in_dim, bits);
        check_len("qweight", qweight.len(), rows * out_dim)?;
        let mut codes = vec![0u8; out_dim * in_dim];
        for o in 0..out_dim {
            for i in 0..in_dim {
                codes[o * in_dim + i] = stream_value(|r| qweight[r * out_dim + o] as u32, i, bits);
            }
        }
        Ok(codes)
    }

    /// Inverse of [`pack_gptq_qzeros`]: zeros `[groups][out_dim]` (v1: field + 1 mod 2^bits).
    pub fn unpack_gptq_qzeros(
        qzeros: &[i32],
        groups: usize,
        out_dim: usize,
        bits: u32,
        convention: GptqZeros,
    ) -> Result<Vec<u8>, PackError> {
        check_gptq_bits(bits)?;
        let cols = gptq_qzeros_cols(out_dim, bits);
        check_len("qzeros", qzeros.len(), groups * cols)?;
        let mask = ((1u32 << bits) - 1) as u8;
        let mut zeros = vec![0u8; groups * out_dim];
        for g in 0..groups {
            let row = &qzeros[g * cols..(g + 1) * cols];
            for o in 0..out_dim {
                let field = stream_value(|c| row[c] as u32, o, bits);
                zeros[g * out_dim + o] = match convention {
                    GptqZeros::V1 => field.wrapping_add(1) & mask,
                    GptqZeros::V2 => field,
                };
            }
        }
        Ok(zeros)
    }

    /// Inverse of [`pack_ct_rows`]: unsigned codes `[rows][cols]`.
    pub fn unpack_ct_rows(packed: &[i32], rows: usize, cols: usize, bits: u32) -> Result<Vec<u8>, PackError> {
        check_ct_bits(bits)?;
        let words = ct_packed_cols(cols, bits);
        check_len("weight_packed", packed.len(), rows * words)?;
        let mut codes = vec![0u8; rows * cols];
        for r in 0..rows {
            let row = &packed[r * words..(r + 1) * words];
            for i in 0..cols {
                codes[r * cols + i] = stream_value(|c| row[c] as u32, i, bits);
            }
        }
        Ok(codes)
    }

    /// Inverse of [`pack_ct_zero_points`]: unsigned zeros `[out_dim][groups]`.
    pub fn unpack_ct_zero_points(
        packed: &[i32],
        out_dim: usize,
        groups: usize,
        bits: u32,
    ) -> Result<Vec<u8>, PackError> {
        check_ct_bits(bits)?;
        let words = ct_packed_cols(out_dim, bits);
        check_len("weight_zero_point", packed.len(), words * groups)?;
        let mut zeros = vec![0u8; out_dim * groups];
        for g in 0..groups {
            for o in 0..out_dim {
                zeros[o * groups + g] = stream_value(|w| packed[w * groups + g] as u32, o, bits);
            }
        }
        Ok(zeros)
    }

    /// `g_idx` (int32 `[in_dim]`) for groups of consecutive input channels:
    /// `g_idx[j] = j / group_size` (all 0 for per-channel, `group_size == None`).
    /// The short last group, if any, gets index `ceil(in_dim / group_size) − 1`.
    pub fn g_idx_contiguous(in_dim: usize, group_size: Option<usize>) -> Vec<i32> {
        match group_size {
            None => vec![0; in_dim],
            Some(g) => (0..in_dim).map(|j| (j / g) as i32).collect(),
        }
    }

    /// `g_idx` for act-order (`desc_act`) runs, as AutoGPTQ's `GPTQ.fasterquant` writes it
    /// without `static_groups`: the sweep visits column `order[p]` at position `p`, a new grid
    /// starts every `group_size` positions, so the column's group is `p / group_size`:
    /// `g_idx[order[p]] = p / group_size` (AutoGPTQ: `g_idx = [i // group_size …]` then
    /// `g_idx = g_idx[invperm]`). Scales/zeros of group `k` are those of the k-th grid of the
    /// sweep. (With `static_groups` the grids are fixed on the original column order and
    /// `g_idx` stays `j / group_size`: use [`g_idx_contiguous`].)
    pub fn g_idx_act_order(order: &[usize], group_size: Option<usize>) -> Result<Vec<i32>, PackError> {
        let lens: Vec<usize> = match group_size {
            None => vec![order.len()],
            Some(g) => {
                let n = order.len().div_ceil(g);
                (0..n).map(|k| g.min(order.len() - k * g)).collect()
            }
        };
        g_idx_column_groups(order, &lens)
    }

    /// `g_idx` for column groups that are consecutive runs of the sweep order: group `k`
    /// covers positions `[Σ lens[..k], Σ lens[..=k])` of `order`, so
    /// `g_idx[order[p]] = k` for those `p`. Generalises [`g_idx_act_order`] to groups of
    /// different lengths (the tool's mixed-precision column groups). `order` must be a
    /// permutation of `0..order.len()` and `lens` must add up to its length.
    pub fn g_idx_column_groups(order: &[usize], lens: &[usize]) -> Result<Vec<i32>, PackError> {
        let n = order.len();
        check_len("group lengths (sum)", lens.iter().sum(), n)?;
        let mut g_idx = vec![-1i32; n];
        let mut p = 0;
        for (k, &len) in lens.iter().enumerate() {
            for &j in &order[p..p + len] {
                if j >= n || g_idx[j] != -1 {
                    return err(format!("order is not a permutation of 0..{n} (column {j})"));
                }
                g_idx[j] = k as i32;
            }
            p += len;
        }
        Ok(g_idx)
    }

    /// compressed-tensors' signed value for an unsigned code: `q − 2^(bits−1)`.
    ///
    /// Its int quantization is signed (`q_min = −2^(bits−1)`, `q_max = 2^(bits−1) − 1`), and
    /// `pack_to_int32` stores `signed + 2^(bits−1)`: the stored field of an unsigned GPTQ
    /// code `q` is therefore `q` itself. Zero points are shifted the same way (stored field =
    /// GPTQ `zero`), so `(q_s − zp_s)·scale = (q − zero)·scale` exactly.
    pub fn ct_signed(code: u8, bits: u32) -> i8 {
        (i16::from(code) - (1i16 << (bits - 1))) as i8
    }

    /// Whether the reference GPTQ loaders can hold this linear: their buffers are
    /// `qweight [in // 32 · bits, out]` and `qzeros [groups, out // 32 · bits]`, so both
    /// dimensions must be multiples of 32 (GPTQModel's packer raises otherwise).
    pub fn gptq_shape_supported(in_dim: usize, out_dim: usize) -> bool {
        in_dim.is_multiple_of(32) && out_dim.is_multiple_of(32)
    }
}

#[cfg(test)]
mod tests {
    use super::decode::*;
    use super::*;

    /// xorshift64*: deterministic test data without dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn codes(&mut self, n: usize, bits: u32) -> Vec<u8> {
            (0..n).map(|_| self.below(1 << bits) as u8).collect()
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
        fn permutation(&mut self, n: usize) -> Vec<usize> {
            let mut p: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                p.swap(i, self.below(i as u64 + 1) as usize);
            }
            p
        }
    }

    fn w(x: u32) -> i32 {
        x as i32
    }

    // ----- hand-computed words -----------------------------------------------------------

    #[test]
    fn gptq_qweight_4bit_by_hand() {
        // out = 2, in = 8: one qweight row (8 inputs × 4 bits = 32 bits) per output column.
        // Output 0 has codes 1..8 along the input: input 0 → bits 0–3, …, input 7 → bits
        // 28–31, so the word reads 0x87654321 in hex. Output 1: input 0 = 15, input 7 = 1.
        let codes = [1, 2, 3, 4, 5, 6, 7, 8, /* out 1 */ 15, 0, 0, 0, 0, 0, 0, 1];
        let q = pack_gptq_qweight(&codes, 2, 8, 4).unwrap();
        assert_eq!(q, vec![w(0x8765_4321), w(0x1000_000f)]);
        assert_eq!(unpack_gptq_qweight(&q, 2, 8, 4).unwrap(), codes);
    }

    #[test]
    fn gptq_qweight_4bit_two_rows_are_row_major_over_outputs() {
        // in = 16 → 2 rows; row r holds inputs 8r..8r+7; qweight is [rows][out].
        let mut codes = vec![0u8; 3 * 16];
        codes[8] = 9; // out 0, input 8 → row 1, column 0, bits 0–3
        codes[16 + 15] = 0xa; // out 1, input 15 → row 1, column 1, bits 28–31
        codes[2 * 16 + 1] = 3; // out 2, input 1 → row 0, column 2, bits 4–7
        let q = pack_gptq_qweight(&codes, 3, 16, 4).unwrap();
        assert_eq!(q, vec![0, 0, 0x30, 9, w(0xa000_0000), 0]);
    }

    #[test]
    fn gptq_qweight_3bit_by_hand() {
        // 32 inputs in 3 words (AutoGPTQ's 10 | 1 | 10 | 1 | 10):
        //   word 0: inputs 0..9 at bits 3k, then the LOW 2 bits of input 10 at bits 30–31;
        //   word 1: bit 0 = bit 2 of input 10, inputs 11..20 at bits 3k+1, bit 31 = bit 0 of
        //           input 21;
        //   word 2: bits 0–1 = bits 1–2 of input 21, inputs 22..31 at bits 3k+2.
        // Codes: input 0 = 1, input 10 = 0b101, input 21 = 0b110, input 31 = 0b111, rest 0.
        //   word 0 = 1 | (0b01 << 30)         = 0x4000_0001
        //   word 1 = (0b101 >> 2) | (0 << 31) = 0x0000_0001
        //   word 2 = 0b11 | (0b111 << 29)     = 0xE000_0003   (input 31: 3·9 + 2 = 29)
        let mut codes = vec![0u8; 32];
        codes[0] = 1;
        codes[10] = 0b101;
        codes[21] = 0b110;
        codes[31] = 0b111;
        let q = pack_gptq_qweight(&codes, 1, 32, 3).unwrap();
        assert_eq!(q, vec![w(0x4000_0001), w(0x0000_0001), w(0xe000_0003)]);
        assert_eq!(unpack_gptq_qweight(&q, 1, 32, 3).unwrap(), codes);
    }

    #[test]
    fn gptq_qzeros_v1_by_hand() {
        // groups = 1, out = 8, 4 bits: zeros 1..8 are stored as zero − 1 = 0..7 along the
        // output dimension, output 0 in bits 0–3: 0x76543210.
        let z: Vec<u8> = (1..=8).collect();
        let q = pack_gptq_qzeros(&z, 1, 8, 4, GptqZeros::V1).unwrap();
        assert_eq!(q, vec![w(0x7654_3210)]);
        assert_eq!(unpack_gptq_qzeros(&q, 1, 8, 4, GptqZeros::V1).unwrap(), z);
        // A zero of 0 stores (0 − 1) mod 16 = 15 and nothing else in the word.
        let z = [0, 1, 1, 1, 1, 1, 1, 1];
        let q = pack_gptq_qzeros(&z, 1, 8, 4, GptqZeros::V1).unwrap();
        assert_eq!(q, vec![0xf]);
        assert_eq!(unpack_gptq_qzeros(&q, 1, 8, 4, GptqZeros::V1).unwrap(), z);
        assert_eq!(gptq_v1_zero_hazard(&z, 8, 4), 1);
        assert_eq!(pack_gptq_qzeros(&z, 1, 8, 4, GptqZeros::V2).unwrap(), vec![w(0x1111_1110)]);
    }

    #[test]
    fn gptq_qzeros_two_groups_by_hand() {
        // groups = 2, out = 4 (not a loader-supported width, but the layout is defined):
        // 8-bit zeros, v1 stored zero − 1, 4 outputs per word, output 0 in bits 0–7.
        let z = [1, 2, 3, 0x81, /* group 1 */ 0x10, 0x20, 0x30, 0x40];
        let q = pack_gptq_qzeros(&z, 2, 4, 8, GptqZeros::V1).unwrap();
        assert_eq!(q, vec![w(0x8002_0100), w(0x3f2f_1f0f)]);
    }

    #[test]
    fn ct_rows_4bit_by_hand() {
        // Signed int4 row [-8, -1, 0, 7, 1, 2, 3, 4] is stored shifted by +8 =
        // [0, 7, 8, 15, 9, 10, 11, 12] — the unsigned GPTQ codes — element 0 in bits 0–3:
        // 0xCBA9F870.
        let signed = [-8i8, -1, 0, 7, 1, 2, 3, 4];
        let codes: Vec<u8> = signed.iter().map(|&s| (s + 8) as u8).collect();
        assert_eq!(codes.iter().map(|&c| ct_signed(c, 4)).collect::<Vec<_>>(), signed);
        let p = pack_ct_rows(&codes, 1, 8, 4).unwrap();
        assert_eq!(p, vec![w(0xcba9_f870)]);
        // 9 columns need ceil(36/32) = 2 words; the 9th element starts word 1.
        let mut codes9 = codes.clone();
        codes9.push(5);
        assert_eq!(pack_ct_rows(&codes9, 1, 9, 4).unwrap(), vec![w(0xcba9_f870), 5]);
    }

    #[test]
    fn ct_rows_8bit_and_3bit_by_hand() {
        // 8 bits: [0, 255, 128, 1] → bytes from the low end: 0x0180FF00.
        assert_eq!(pack_ct_rows(&[0, 255, 128, 1], 1, 4, 8).unwrap(), vec![0x0180_ff00]);
        assert_eq!(pack_ct_rows(&[0, 0, 0, 0x80], 1, 4, 8).unwrap(), vec![i32::MIN]);
        // 3 bits, dense: 11 values take ceil(33/32) = 2 words; element 10 = 0b111 sits at
        // stream bits 30..32: bits 30–31 of word 0 and bit 0 of word 1.
        let mut row = vec![0u8; 11];
        row[10] = 7;
        row[1] = 0b010; // bits 3–5 → 0x10
        assert_eq!(pack_ct_rows(&row, 1, 11, 3).unwrap(), vec![w(0xc000_0010), 1]);
    }

    #[test]
    fn ct_zero_points_by_hand() {
        // zeros [out = 3][groups = 2] = [[1, 2], [3, 4], [5, 6]], 4 bits, packed along the
        // output dimension: group 0 = stream (1, 3, 5) = 0x531, group 1 = (2, 4, 6) = 0x642,
        // one word row ([ceil(3·4/32) = 1][2]).
        let z = [1, 2, 3, 4, 5, 6];
        let p = pack_ct_zero_points(&z, 3, 2, 4).unwrap();
        assert_eq!(p, vec![0x531, 0x642]);
        assert_eq!(unpack_ct_zero_points(&p, 3, 2, 4).unwrap(), z);
    }

    // ----- the 3-bit stream is AutoGPTQ's explicit scheme ------------------------------

    /// AutoGPTQ's 3-bit block written out field by field (independent of `pack_stream`).
    fn autogptq_3bit_block(v: &[u8; 32]) -> [u32; 3] {
        let v: Vec<u32> = v.iter().map(|&x| u32::from(x)).collect();
        let mut a = 0u32;
        for (k, &x) in v[..10].iter().enumerate() {
            a |= x << (3 * k);
        }
        a |= (v[10] & 0b11) << 30;
        let mut b = (v[10] >> 2) & 1;
        for k in 0..10 {
            b |= v[11 + k] << (3 * k + 1);
        }
        b |= (v[21] & 1) << 31;
        let mut c = (v[21] >> 1) & 0b11;
        for k in 0..10 {
            c |= v[22 + k] << (3 * k + 2);
        }
        [a, b, c]
    }

    #[test]
    fn three_bit_stream_matches_autogptq_scheme() {
        let mut rng = Rng(7);
        for _ in 0..200 {
            let v: [u8; 32] = std::array::from_fn(|_| rng.below(8) as u8);
            let want = autogptq_3bit_block(&v);
            let got = pack_gptq_qweight(&v, 1, 32, 3).unwrap();
            assert_eq!(got, want.map(|x| x as i32).to_vec());
            // compressed-tensors' dense 3-bit stream is the same bits for a 32-value row.
            assert_eq!(pack_ct_rows(&v, 1, 32, 3).unwrap(), got);
        }
    }

    // ----- round trips ------------------------------------------------------------------

    #[test]
    fn round_trips_all_widths_and_odd_shapes() {
        let mut rng = Rng(42);
        for &bits in &GPTQ_BITS {
            for &in_dim in &[1usize, 31, 32, 33, 192, 200, 1000] {
                for &out_dim in &[1usize, 3, 192] {
                    let codes = rng.codes(out_dim * in_dim, bits);
                    let q = pack_gptq_qweight(&codes, out_dim, in_dim, bits).unwrap();
                    assert_eq!(q.len(), gptq_qweight_rows(in_dim, bits) * out_dim);
                    assert_eq!(unpack_gptq_qweight(&q, out_dim, in_dim, bits).unwrap(), codes);

                    let p = pack_ct_rows(&codes, out_dim, in_dim, bits).unwrap();
                    assert_eq!(p.len(), out_dim * (in_dim * bits as usize).div_ceil(32));
                    assert_eq!(unpack_ct_rows(&p, out_dim, in_dim, bits).unwrap(), codes);

                    for &group_size in &[None, Some(32), Some(64), Some(128)] {
                        let groups = num_groups(in_dim, group_size);
                        let z = rng.codes(groups * out_dim, bits);
                        for conv in [GptqZeros::V1, GptqZeros::V2] {
                            let qz = pack_gptq_qzeros(&z, groups, out_dim, bits, conv).unwrap();
                            assert_eq!(qz.len(), groups * gptq_qzeros_cols(out_dim, bits));
                            assert_eq!(unpack_gptq_qzeros(&qz, groups, out_dim, bits, conv).unwrap(), z);
                        }
                        let zt = transpose(&z, groups, out_dim); // [out][groups]
                        let pz = pack_ct_zero_points(&zt, out_dim, groups, bits).unwrap();
                        assert_eq!(unpack_ct_zero_points(&pz, out_dim, groups, bits).unwrap(), zt);
                    }
                }
            }
        }
        // compressed-tensors also defines 1, 5, 6, 7 bits.
        for bits in [1u32, 5, 6, 7] {
            let codes = rng.codes(3 * 200, bits);
            let p = pack_ct_rows(&codes, 3, 200, bits).unwrap();
            assert_eq!(unpack_ct_rows(&p, 3, 200, bits).unwrap(), codes);
        }
    }

    #[test]
    fn two_four_eight_bits_never_straddle_words() {
        // For widths dividing 32 every value lies inside one word: value i of a row is
        // word i / (32/bits), shift bits · (i mod 32/bits).
        let mut rng = Rng(3);
        for bits in [2u32, 4, 8] {
            let per = (32 / bits) as usize;
            let codes = rng.codes(100, bits);
            let p = pack_ct_rows(&codes, 1, 100, bits).unwrap();
            for (i, &c) in codes.iter().enumerate() {
                let word = p[i / per] as u32;
                assert_eq!((word >> (bits as usize * (i % per))) & ((1 << bits) - 1), u32::from(c));
            }
        }
    }

    /// A test-only min-max grid per (row, group) and the dequantized weight on it.
    struct Linear {
        scales: Vec<f32>, // [out][groups]
        zeros: Vec<f32>,  // [out][groups]
        g_idx: Vec<i32>,
        w: Vec<f32>, // scale · (q − zero), f32
        codes: Vec<u8>,
    }

    fn random_linear(rng: &mut Rng, out_dim: usize, in_dim: usize, bits: u32, g_idx: Vec<i32>, sym: bool) -> Linear {
        let groups = g_idx.iter().map(|&g| g as usize + 1).max().unwrap_or(1);
        let maxq = (1u32 << bits) - 1;
        let mut scales = Vec::new();
        let mut zeros = Vec::new();
        for _ in 0..out_dim * groups {
            scales.push(1e-3 + rng.unit() * 0.05);
            zeros.push(if sym { (1u32 << (bits - 1)) as f32 } else { rng.below(u64::from(maxq) + 1) as f32 });
        }
        let codes = rng.codes(out_dim * in_dim, bits);
        let mut w = vec![0.0f32; out_dim * in_dim];
        for o in 0..out_dim {
            for j in 0..in_dim {
                let g = o * groups + g_idx[j] as usize;
                w[o * in_dim + j] = scales[g] * (f32::from(codes[o * in_dim + j]) - zeros[g]);
            }
        }
        Linear { scales, zeros, g_idx, w, codes }
    }

    /// Dequantizes from unpacked GPTQ tensors the way a g_idx reader does:
    /// `W[o][j] = scales[g_idx[j]][o] · (q[o][j] − zeros[g_idx[j]][o])`.
    fn dequant_gptq(
        q: &[u8],
        zeros_go: &[u8],
        scales_go: &[f32],
        g_idx: &[i32],
        out_dim: usize,
        in_dim: usize,
    ) -> Vec<f32> {
        let mut w = vec![0.0; out_dim * in_dim];
        for o in 0..out_dim {
            for j in 0..in_dim {
                let g = g_idx[j] as usize;
                w[o * in_dim + j] =
                    scales_go[g * out_dim + o] * (f32::from(q[o * in_dim + j]) - f32::from(zeros_go[g * out_dim + o]));
            }
        }
        w
    }

    #[test]
    fn linear_export_round_trip_is_bit_exact() {
        // Weights on a grid → codes → packed GPTQ and compressed-tensors tensors → unpacked
        // → dequantized again: the same f32 bits. Per-channel and grouped (with a short last
        // group for in = 200 and 1000 at 128), contiguous and act-order g_idx.
        let mut rng = Rng(2024);
        for &bits in &GPTQ_BITS {
            for &(out_dim, in_dim) in &[(3usize, 192usize), (192, 200), (5, 1000), (32, 64)] {
                for &group_size in &[None, Some(64), Some(128)] {
                    for act_order in [false, true] {
                        for sym in [false, true] {
                            let order = if act_order { rng.permutation(in_dim) } else { (0..in_dim).collect() };
                            let g_idx = g_idx_act_order(&order, group_size).unwrap();
                            let groups = num_groups(in_dim, group_size);
                            assert_eq!(g_idx.iter().map(|&g| g as usize + 1).max().unwrap(), groups);
                            let l = random_linear(&mut rng, out_dim, in_dim, bits, g_idx, sym);
                            let codes =
                                recover_codes(&l.w, out_dim, in_dim, &l.scales, &l.zeros, &l.g_idx, bits).unwrap();
                            assert_eq!(codes, l.codes);
                            let zeros_u8: Vec<u8> = l.zeros.iter().map(|&z| z as u8).collect();

                            // GPTQ
                            let qweight = pack_gptq_qweight(&codes, out_dim, in_dim, bits).unwrap();
                            let zeros_go = transpose(&zeros_u8, out_dim, groups);
                            let qzeros = pack_gptq_qzeros(&zeros_go, groups, out_dim, bits, GptqZeros::V1).unwrap();
                            let scales_go = transpose(&l.scales, out_dim, groups);
                            let q2 = unpack_gptq_qweight(&qweight, out_dim, in_dim, bits).unwrap();
                            let z2 = unpack_gptq_qzeros(&qzeros, groups, out_dim, bits, GptqZeros::V1).unwrap();
                            let w2 = dequant_gptq(&q2, &z2, &scales_go, &l.g_idx, out_dim, in_dim);
                            assert!(
                                w2.iter().zip(&l.w).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "gptq {bits} bits {out_dim}×{in_dim}"
                            );

                            // compressed-tensors: signed codes and zero points, dequantized as
                            // (q_s − zp_s) · scale.
                            let packed = pack_ct_rows(&codes, out_dim, in_dim, bits).unwrap();
                            let zp = pack_ct_zero_points(&zeros_u8, out_dim, groups, bits).unwrap();
                            let q3 = unpack_ct_rows(&packed, out_dim, in_dim, bits).unwrap();
                            let z3 = unpack_ct_zero_points(&zp, out_dim, groups, bits).unwrap();
                            for o in 0..out_dim {
                                for j in 0..in_dim {
                                    let g = o * groups + l.g_idx[j] as usize;
                                    let qs = f32::from(ct_signed(q3[o * in_dim + j], bits));
                                    let zs = if sym { 0.0 } else { f32::from(ct_signed(z3[g], bits)) };
                                    let v = (qs - zs) * l.scales[g];
                                    assert_eq!(v.to_bits(), l.w[o * in_dim + j].to_bits());
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn recover_codes_rejects_off_grid_weights() {
        let scales = [0.5f32];
        let zeros = [2.0f32];
        assert_eq!(recover_codes(&[-1.0, 0.0, 0.5], 1, 3, &scales, &zeros, &[0, 0, 0], 2).unwrap(), vec![0, 2, 3]);
        assert!(recover_codes(&[0.3], 1, 1, &scales, &zeros, &[0], 2).is_err());
        assert!(recover_codes(&[2.0], 1, 1, &scales, &zeros, &[0], 2).is_err(), "clamped code 3 gives 0.5");
        assert!(recover_codes(&[0.0], 1, 1, &scales, &zeros, &[1], 2).is_err(), "group out of range");
    }

    // ----- g_idx ------------------------------------------------------------------------

    #[test]
    fn g_idx_by_hand() {
        assert_eq!(g_idx_contiguous(5, Some(2)), vec![0, 0, 1, 1, 2]);
        assert_eq!(g_idx_contiguous(3, None), vec![0, 0, 0]);
        // Sweep order 3, 0, 4, 1, 2 with groups of 2: positions 0–1 (columns 3, 0) form
        // group 0, positions 2–3 (columns 4, 1) group 1, position 4 (column 2) group 2.
        assert_eq!(g_idx_act_order(&[3, 0, 4, 1, 2], Some(2)).unwrap(), vec![0, 1, 2, 0, 1]);
        assert_eq!(g_idx_act_order(&[3, 0, 4, 1, 2], None).unwrap(), vec![0; 5]);
        assert_eq!(g_idx_column_groups(&[3, 0, 4, 1, 2], &[1, 3, 1]).unwrap(), vec![1, 1, 2, 0, 1]);
        assert!(g_idx_column_groups(&[0, 0, 1], &[3]).is_err());
        assert!(g_idx_column_groups(&[0, 1, 2], &[2]).is_err());
        let identity: Vec<usize> = (0..200).collect();
        let g = g_idx_act_order(&identity, Some(128)).unwrap();
        assert!(g_idx_is_contiguous(&g, Some(128)));
        assert_eq!(g[199], 1, "short last group");
    }

    // ----- mixed widths -----------------------------------------------------------------

    #[test]
    fn widening_keeps_dequantized_values() {
        assert_eq!(smallest_uniform_width(3, &GPTQ_BITS), Some(3));
        assert_eq!(smallest_uniform_width(5, &GPTQ_BITS), Some(8));
        assert_eq!(smallest_uniform_width(9, &GPTQ_BITS), None);
        for from in 1..=8u32 {
            for to in from..=8u32 {
                for q in 0..(1u32 << from) {
                    for zero in 0..(1u32 << from) {
                        let (q2, z2) = widen_code(q as u8, zero as u8, from, to, false).unwrap();
                        assert_eq!(i32::from(q2) - i32::from(z2), q as i32 - zero as i32);
                    }
                    let zs = 1u32 << (from - 1);
                    let (q2, z2) = widen_code(q as u8, zs as u8, from, to, true).unwrap();
                    assert_eq!(u32::from(z2), 1 << (to - 1));
                    assert!(u32::from(q2) < 1 << to);
                    assert_eq!(i32::from(q2) - i32::from(z2), q as i32 - zs as i32);
                }
            }
        }
        assert!(widen_code(0, 0, 4, 8, true).is_err());
        assert!(widen_code(0, 0, 4, 3, false).is_err());
    }

    // ----- argument checks --------------------------------------------------------------

    #[test]
    fn bad_arguments_are_errors() {
        assert!(pack_gptq_qweight(&[16], 1, 1, 4).is_err(), "code out of range");
        assert!(pack_gptq_qweight(&[0; 5], 1, 4, 4).is_err(), "length");
        assert!(pack_gptq_qweight(&[0; 4], 1, 4, 5).is_err(), "5 bits are not GPTQ");
        assert!(pack_ct_rows(&[0; 4], 1, 4, 9).is_err());
        assert!(pack_ct_rows(&[0; 4], 1, 4, 5).is_ok());
        assert!(unpack_ct_rows(&[0; 3], 1, 100, 4).is_err());
        assert!(gptq_shape_supported(192, 768) && !gptq_shape_supported(200, 192) && !gptq_shape_supported(192, 3));
        assert_eq!(num_groups(200, Some(128)), 2);
        assert_eq!(num_groups(200, None), 1);
        assert_eq!(gptq_qweight_rows(192, 3), 18);
        assert_eq!(ct_packed_cols(192, 3), 18);
        assert_eq!(ct_packed_cols(200, 4), 25);
    }

    #[test]
    fn v1_zero_hazard_counts_non_top_fields() {
        // 4 bits, out = 16: fields 0..7 in word 0, 8..15 in word 1. Zeros of 0 at outputs 7
        // and 15 are top fields (their carry leaves the int32); output 0 and 9 are not.
        let mut z = vec![1u8; 16];
        z[7] = 0;
        z[15] = 0;
        assert_eq!(gptq_v1_zero_hazard(&z, 16, 4), 0);
        z[0] = 0;
        z[9] = 0;
        assert_eq!(gptq_v1_zero_hazard(&z, 16, 4), 2);
        assert_eq!(gptq_v1_zero_hazard(&[0; 32], 32, 3), 0);
    }
}
