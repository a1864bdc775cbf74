//! How each decoder linear is stored in a packed checkpoint: its codes at one uniform width,
//! its grids as groups of one size (`group_size`, the last group may be short) named per
//! input column by `g_idx`, or, where the format cannot hold it, dense.
//!
//! From a solved linear's grids (`LinearGrids`, in sweep order):
//! * **width**: the smallest width the format defines that holds every grid
//!   (`packing::smallest_uniform_width`; GPTQ 2/3/4/8, compressed-tensors 1–8). A grid of
//!   fewer bits is re-expressed exactly at that width (`packing::widen_code`): an asymmetric
//!   code and zero are unchanged, a symmetric one shifts so it stays symmetric.
//! * **groups**: both formats give every group of a linear the same size `g` (the last may be
//!   shorter). Grids of the uniform schemes are such groups already (`--groupsize g`, or one
//!   per row). Mixed-precision grids (the MI / enhanced / random modes: different sizes, in a
//!   permuted column order) are split into chunks of `g` = the gcd of their lengths (all but
//!   the last), each chunk keeping its grid's scale and zero point, which is exact; `g_idx`
//!   names each column's chunk. Chunks that are the natural groups swept in another order
//!   (group-aware act-order, static groups) take their group's number: `g_idx = j / g`, no map.
//! * **validity** (docs/formats.md): GPTQ loaders find a column's group through `g_idx`, but
//!   the kernels engines serve with (vLLM's exllama-derived `gptq_gemm`, marlin) sort the
//!   columns by `g_idx` and then take group k to be the sorted rows `k·g .. (k+1)·g` with
//!   `g = in / groups`, changing group only every 32 inputs; so chunked mixed-precision
//!   grids are written only when every chunk has the same size `g`, a multiple of 32.
//!   compressed-tensors has no `g_idx` in current releases (its "group" act-order was
//!   removed): groups must be `j / g` over the natural column order, and `g` must divide
//!   the width. A linear neither holds is stored dense (f16, unquantized) and listed as such.
//! * **linears sharing an input** (`InputSite`): vLLM serves q, k and v as one `qkv_proj`
//!   and gate and up as one `gate_up_proj` (the family's `fused` table), whose `g_idx` and
//!   scheme are shared, so linears reading one input are stored alike: at the widest width
//!   among them, with equal groups and `g_idx`, or all dense.

use super::codes::{CodeStore, LinearCodes};
use super::packing::{self, GPTQ_BITS};
use crate::model::family::Family;
use crate::model::{InputSite, LinearKind};
use anyhow::{anyhow, Result};
use serde::Serialize;

/// The two packed formats, as far as storage decisions go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Gptq,
    CompressedTensors,
}

impl Container {
    pub fn widths(self) -> &'static [u32] {
        match self {
            Container::Gptq => &GPTQ_BITS,
            Container::CompressedTensors => &[1, 2, 3, 4, 5, 6, 7, 8],
        }
    }
}

/// A linear as a packed format stores it: uniform width, groups of `group_size`.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedLinear {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    /// None: one group per row (per-channel, `group_size: -1`).
    pub group_size: Option<usize>,
    pub groups: usize,
    pub sym: bool,
    /// `[rows][cols]`, each below `2^bits`.
    pub codes: Vec<u8>,
    /// `[rows][groups]`.
    pub scales: Vec<f32>,
    /// `[rows][groups]`, each below `2^bits`.
    pub zeros: Vec<u8>,
    /// The group of each input column (`[cols]`).
    pub g_idx: Vec<i32>,
}

impl PackedLinear {
    /// Whether `g_idx[j] = j / group_size` (no column permutation).
    pub fn contiguous(&self) -> bool {
        packing::g_idx_is_contiguous(&self.g_idx, self.group_size)
    }

    /// `scale · (q − zero)` of every weight, in f32 (exact: the product of a stored scale and
    /// a small integer), `[rows][cols]`.
    pub fn dequantized(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.rows * self.cols];
        for o in 0..self.rows {
            for j in 0..self.cols {
                let g = o * self.groups + self.g_idx[j] as usize;
                w[o * self.cols + j] =
                    self.scales[g] * (f32::from(self.codes[o * self.cols + j]) - f32::from(self.zeros[g]));
            }
        }
        w
    }
}

/// How one decoder linear is stored.
#[derive(Clone, Debug)]
pub enum Stored {
    Packed(PackedLinear),
    /// Dense weight (the checkpoint's dtype), with the reason.
    Dense(String),
}

/// One decoder linear's storage decision.
pub struct LinearStorage {
    pub layer: usize,
    pub kind: LinearKind,
    /// Planned bits per weight (payload, no metadata); None when not quantized.
    pub planned_bits: Option<f64>,
    pub stored: Stored,
}

/// What the result JSON says about one linear.
#[derive(Clone, Debug, Serialize)]
pub struct StoredLinearReport {
    pub layer: usize,
    pub name: String,
    pub planned_bits: Option<f64>,
    /// Bits per weight as stored (payload; 16 for an f16 dense weight).
    pub stored_bits: f64,
    /// "packed" or "dense".
    pub stored_as: &'static str,
    pub group_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_dense: Option<String>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Packs a solved linear's codes at `bits` (≥ every grid's width) with its grids as chunks
/// of one size (see the module doc). Returns the packed linear, or why it cannot be packed.
pub fn pack(lc: &LinearCodes, container: Container, bits: u32) -> Result<std::result::Result<PackedLinear, String>> {
    let g = &lc.grids;
    let (rows, cols, n) = (g.rows, g.cols, g.n_grids());
    // The chunk size: the grids' own size for one grid or equal grids, else the gcd of all
    // but the last grid's length.
    let (group_size, derived) = if n == 1 {
        (None, false)
    } else {
        let size = g.lens[..n - 1].iter().fold(0, |a, &l| gcd(a, l));
        let uniform = g.lens[..n - 1].iter().all(|&l| l == size)
            && g.lens[n - 1] <= size
            && g.bits.iter().all(|&b| b == g.bits[0]);
        (Some(size), !uniform)
    };
    if let Some(size) = group_size {
        match container {
            Container::Gptq if derived && !size.is_multiple_of(32) => {
                return Ok(Err(
                    "its column groups have no common size that is a multiple of 32, which GPTQ kernels need".into(),
                ))
            }
            Container::CompressedTensors if !cols.is_multiple_of(size) => {
                return Ok(Err(format!("compressed-tensors groups must divide the width {cols}, {size} does not")))
            }
            _ => {}
        }
    }
    // Chunk index of each grid's first chunk.
    let mut first = Vec::with_capacity(n);
    let mut chunks = 0;
    for &len in &g.lens {
        first.push(chunks);
        chunks += group_size.map_or(1, |s| len.div_ceil(s));
    }
    // g_idx: sweep position p of grid k at offset t is in chunk first[k] + t / size.
    let mut g_idx = vec![0i32; cols];
    let mut grid_of_chunk = vec![0usize; chunks];
    let mut p = 0;
    for (k, &len) in g.lens.iter().enumerate() {
        for t in 0..len {
            let c = first[k] + group_size.map_or(0, |s| t / s);
            g_idx[g.order[p]] = c as i32;
            grid_of_chunk[c] = k;
            p += 1;
        }
    }
    debug_assert_eq!(chunks, packing::num_groups(cols, group_size));
    // Uniform grids that are the natural groups swept in another order (group-aware act-order,
    // static groups) are numbered by their columns, so that the checkpoint needs no column map.
    // Chunks derived from mixed grids keep the sweep's numbering.
    let natural = if derived { None } else { natural_chunk_labels(&g_idx, chunks, group_size) };
    if let Some(label) = natural {
        let mut relabelled = vec![0usize; chunks];
        for (c, &k) in grid_of_chunk.iter().enumerate() {
            relabelled[label[c]] = k;
        }
        grid_of_chunk = relabelled;
        g_idx.iter_mut().for_each(|c| *c = label[*c as usize] as i32);
    }
    if container == Container::CompressedTensors && !packing::g_idx_is_contiguous(&g_idx, group_size) {
        return Ok(Err(
            "its groups are not runs of consecutive input columns, and compressed-tensors has no g_idx".into()
        ));
    }
    // Codes, scales and zeros at the stored width.
    let mut codes = vec![0u8; rows * cols];
    let mut scales = vec![0f32; rows * chunks];
    let mut zeros = vec![0u8; rows * chunks];
    for r in 0..rows {
        for (c, &k) in grid_of_chunk.iter().enumerate() {
            scales[r * chunks + c] = g.scales[r * n + k];
            zeros[r * chunks + c] = widen(0, g.zeros[r * n + k], g.bits[k], bits, g.sym)?.1;
        }
        for j in 0..cols {
            let k = grid_of_chunk[g_idx[j] as usize];
            let q = lc.codes[r * cols + j];
            codes[r * cols + j] = widen(q, g.zeros[r * n + k], g.bits[k], bits, g.sym)?.0;
        }
    }
    Ok(Ok(PackedLinear { rows, cols, bits, group_size, groups: chunks, sym: g.sym, codes, scales, zeros, g_idx }))
}

/// New chunk numbers under which `g_idx` becomes `j / size`, where every chunk is one natural
/// group of `size` columns (whatever the order they were swept in); None otherwise.
fn natural_chunk_labels(g_idx: &[i32], chunks: usize, group_size: Option<usize>) -> Option<Vec<usize>> {
    let size = group_size?;
    let mut label = vec![usize::MAX; chunks];
    for (j, &c) in g_idx.iter().enumerate() {
        let natural = j / size;
        match &mut label[c as usize] {
            l if *l == usize::MAX => *l = natural,
            l if *l != natural => return None,
            _ => {}
        }
    }
    // Every chunk names a different natural group (counts match, so the labels are a permutation).
    let mut seen = vec![false; chunks];
    for &l in &label {
        if l >= chunks || std::mem::replace(&mut seen[l], true) {
            return None;
        }
    }
    Some(label)
}

fn widen(q: u8, zero: f32, from: u32, to: u32, sym: bool) -> Result<(u8, u8)> {
    packing::widen_code(q, zero as u8, from, to, sym).map_err(|e| anyhow!("{e}"))
}

/// The storage of every decoder linear of a `family` model with `layers` layers in `container`.
pub fn plan(codes: &CodeStore, layers: usize, family: &Family, container: Container) -> Result<Vec<LinearStorage>> {
    let mut out = Vec::new();
    for layer in 0..layers {
        let mut decided: Vec<Decided> = Vec::new();
        for &kind in family.linears {
            let lc = codes.get(layer, kind);
            let stored = match &lc {
                None => Stored::Dense("not quantized".into()),
                Some(lc) => {
                    let max_bits = *lc.grids.bits.iter().max().expect("a grid");
                    match packing::smallest_uniform_width(max_bits, container.widths()) {
                        None => Stored::Dense(format!("the format holds no width of {max_bits} bits or more")),
                        Some(b) => match pack(lc, container, b)? {
                            Ok(p) => Stored::Packed(p),
                            Err(why) => Stored::Dense(why),
                        },
                    }
                }
            };
            decided.push((kind, lc, stored));
        }
        for site in InputSite::ALL {
            let members: Vec<usize> = (0..decided.len()).filter(|&i| decided[i].0.input_site() == site).collect();
            if members.len() > 1 {
                let served = fused_description(family, &members, &decided);
                unify_site(&mut decided, &members, &served, container)?;
            }
        }
        for (kind, lc, stored) in decided {
            let planned_bits = lc.map(|lc| {
                let g = &lc.grids;
                g.lens.iter().zip(&g.bits).map(|(&l, &b)| (l * b as usize) as f64).sum::<f64>() / g.cols as f64
            });
            out.push(LinearStorage { layer, kind, planned_bits, stored });
        }
    }
    Ok(out)
}

type Decided = (LinearKind, Option<std::sync::Arc<LinearCodes>>, Stored);

/// How the reasons name linears sharing an input: "q, k and v are served fused (vLLM's
/// qkv_proj", in the fused module's order where the family's table names one.
fn fused_description(family: &Family, members: &[usize], decided: &[Decided]) -> String {
    let kinds: Vec<LinearKind> = members.iter().map(|&i| decided[i].0).collect();
    let fused = family.fused_with(kinds[0]).filter(|f| kinds.iter().all(|k| f.parts.contains(k)));
    let ordered: Vec<LinearKind> = fused.map_or(kinds.clone(), |f| f.parts.to_vec());
    let short = |k: &LinearKind| {
        let leaf = k.path().rsplit('.').next().unwrap_or_default();
        leaf.strip_suffix("_proj").unwrap_or(leaf).to_string()
    };
    let names: Vec<String> = ordered.iter().map(short).collect();
    let list = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    };
    match fused {
        Some(f) => format!("{list} are served fused (vLLM's {}", f.path.rsplit('.').next().unwrap_or(f.path)),
        None => format!("{list} read one input (engines may serve them fused"),
    }
}

/// Linears reading one input stored alike (module doc): the widest width among them, equal
/// groups and g_idx, or all dense. `served` opens the reason ("q, k and v are served fused
/// (vLLM's qkv_proj").
fn unify_site(decided: &mut [Decided], members: &[usize], served: &str, container: Container) -> Result<()> {
    let packed: Vec<&PackedLinear> = members
        .iter()
        .filter_map(|&i| match &decided[i].2 {
            Stored::Packed(p) => Some(p),
            Stored::Dense(_) => None,
        })
        .collect();
    if packed.is_empty() {
        return Ok(());
    }
    let why = if packed.len() < members.len() {
        Some(format!("{served}) and one of them cannot be packed"))
    } else {
        let bits = packed.iter().map(|p| p.bits).max().expect("packed");
        let mut repacked = Vec::new();
        for &i in members {
            if let Stored::Packed(p) = &decided[i].2 {
                if p.bits == bits {
                    repacked.push(None);
                    continue;
                }
            }
            let lc = decided[i].1.as_ref().expect("packed linears have codes");
            repacked.push(Some(pack(lc, container, bits)?.map_err(|e| anyhow!("{e}"))?));
        }
        for (&i, p) in members.iter().zip(repacked) {
            if let Some(p) = p {
                decided[i].2 = Stored::Packed(p);
            }
        }
        let shapes: Vec<(Option<usize>, &Vec<i32>)> = members
            .iter()
            .filter_map(|&i| match &decided[i].2 {
                Stored::Packed(p) => Some((p.group_size, &p.g_idx)),
                Stored::Dense(_) => None,
            })
            .collect();
        let alike = shapes.windows(2).all(|w| w[0] == w[1]);
        (!alike).then(|| format!("{served}, one g_idx) and their groups differ"))
    };
    if let Some(why) = why {
        for &i in members {
            if let Stored::Packed(_) = decided[i].2 {
                decided[i].2 = Stored::Dense(why.clone());
            }
        }
    }
    Ok(())
}

/// The JSON view of the decisions.
pub fn reports(storage: &[LinearStorage], dense_bits: f64) -> Vec<StoredLinearReport> {
    storage
        .iter()
        .map(|s| {
            let (stored_bits, stored_as, group_size, why) = match &s.stored {
                Stored::Packed(p) => (p.bits as f64, "packed", p.group_size, None),
                Stored::Dense(why) => (dense_bits, "dense", None, Some(why.clone())),
            };
            StoredLinearReport {
                layer: s.layer,
                name: s.kind.path().to_string(),
                planned_bits: s.planned_bits,
                stored_bits,
                stored_as,
                group_size,
                why_dense: why,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::family;
    use crate::output::codes::{recover, tests::solve};
    use crate::solver::{ColumnGroup, QuantScheme, Sparsity};

    fn codes_of(quant: QuantScheme, act_order: bool, perm: Option<&[usize]>) -> (Vec<f32>, LinearCodes) {
        let (w, grids) = solve(quant, act_order, Sparsity::Unstructured(0.5), perm);
        let codes = recover(&w, &grids).unwrap();
        (w, LinearCodes { grids, codes })
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn uniform_schemes_pack_as_they_are() {
        // 200 columns in groups of 64: 4 groups, the last of 8 columns.
        let (w, lc) = codes_of(QuantScheme::Grouped { bits: 3, sym: false, size: 64 }, false, None);
        for container in [Container::Gptq, Container::CompressedTensors] {
            let r = pack(&lc, container, 3).unwrap();
            if container == Container::CompressedTensors {
                assert!(r.unwrap_err().contains("divide the width 200"));
                continue;
            }
            let p = r.unwrap();
            assert_eq!((p.bits, p.group_size, p.groups), (3, Some(64), 4));
            assert!(p.contiguous());
            assert!(same_bits(&p.dequantized(), &w));
        }
        let (w, lc) = codes_of(QuantScheme::PerRow { bits: 4, sym: true }, true, None);
        for container in [Container::Gptq, Container::CompressedTensors] {
            let p = pack(&lc, container, 4).unwrap().unwrap();
            assert_eq!((p.group_size, p.groups), (None, 1));
            assert!(p.contiguous(), "act-order with one grid per row needs no g_idx");
            assert!(same_bits(&p.dequantized(), &w));
        }
        // Act-order groups: GPTQ holds them through g_idx, compressed-tensors cannot.
        let (w, lc) = codes_of(QuantScheme::Grouped { bits: 4, sym: false, size: 100 }, true, None);
        let p = pack(&lc, Container::Gptq, 4).unwrap().unwrap();
        assert!(!p.contiguous());
        assert_eq!(p.g_idx, lc.grids.g_idx);
        assert!(same_bits(&p.dequantized(), &w));
        assert!(pack(&lc, Container::CompressedTensors, 4).unwrap().unwrap_err().contains("no g_idx"));
        // A wider width keeps every value.
        let p8 = pack(&lc, Container::Gptq, 8).unwrap().unwrap();
        assert!(same_bits(&p8.dequantized(), &w));
    }

    #[test]
    fn natural_groups_swept_in_another_order_need_no_column_map() {
        // Group-aware act-order's sweep: the natural groups of 40 in the order 3, 0, 4, 1, 2,
        // each one's columns reversed. Every grid is one natural group: both containers store
        // g_idx = j / 40 and the weights exactly.
        let perm: Vec<usize> = [3, 0, 4, 1, 2].iter().flat_map(|&g| (40 * g..40 * g + 40).rev()).collect();
        let (w, lc) = codes_of(QuantScheme::Grouped { bits: 4, sym: false, size: 40 }, false, Some(&perm));
        for container in [Container::Gptq, Container::CompressedTensors] {
            let p = pack(&lc, container, 4).unwrap().unwrap();
            assert!(p.contiguous(), "{container:?}");
            assert!(same_bits(&p.dequantized(), &w), "{container:?}");
        }
        // A chunk that spans two natural groups keeps the sweep's numbering.
        assert_eq!(natural_chunk_labels(&[1, 1, 0, 0], 2, Some(2)), Some(vec![1, 0]));
        assert_eq!(natural_chunk_labels(&[1, 0, 1, 0], 2, Some(2)), None);
        assert_eq!(natural_chunk_labels(&[0, 0, 0, 0], 1, None), None);
    }

    #[test]
    fn mixed_groups_are_chunked_exactly_where_a_common_size_exists() {
        let perm: Vec<usize> = (0..200).map(|k| (k * 77) % 200).collect();
        for sym in [false, true] {
            // Lengths 64, 128, 8: chunks of 64 (1 + 2 + 1 = ceil(200 / 64)), each chunk with its
            // grid's scale; widths 2, 4, 3 stored at 4.
            let groups = vec![
                ColumnGroup { start: 0, len: 64, bits: 2 },
                ColumnGroup { start: 64, len: 128, bits: 4 },
                ColumnGroup { start: 192, len: 8, bits: 3 },
            ];
            let (w, lc) = codes_of(QuantScheme::Mixed { groups, sym }, false, Some(&perm));
            let p = pack(&lc, Container::Gptq, 4).unwrap().unwrap();
            assert_eq!((p.bits, p.group_size, p.groups), (4, Some(64), 4));
            assert!(same_bits(&p.dequantized(), &w), "sym {sym}");
            if sym {
                assert!(p.zeros.iter().all(|&z| z == 8), "symmetric grids stay symmetric at 4 bits");
            }
            // Chunk c's columns, sorted by g_idx, are sweep positions 64c .. 64c + 64.
            for (pos, &j) in perm.iter().enumerate() {
                assert_eq!(p.g_idx[j] as usize, pos / 64);
            }
            // compressed-tensors: permuted columns, no g_idx.
            assert!(pack(&lc, Container::CompressedTensors, 4).unwrap().is_err());
        }
        // Lengths 37, 100, 63: no common size that is a multiple of 32.
        let groups = vec![
            ColumnGroup { start: 0, len: 37, bits: 4 },
            ColumnGroup { start: 37, len: 100, bits: 2 },
            ColumnGroup { start: 137, len: 63, bits: 8 },
        ];
        let (_, lc) = codes_of(QuantScheme::Mixed { groups, sym: false }, false, Some(&perm));
        assert!(pack(&lc, Container::Gptq, 8).unwrap().unwrap_err().contains("multiple of 32"));
        // Equal sizes of 40: a common size, but not one GPTQ kernels step through.
        let groups: Vec<ColumnGroup> =
            (0..5).map(|k| ColumnGroup { start: 40 * k, len: 40, bits: 2 + k as u32 % 2 }).collect();
        let (_, lc) = codes_of(QuantScheme::Mixed { groups, sym: false }, false, Some(&perm));
        assert!(pack(&lc, Container::Gptq, 3).unwrap().is_err());
    }

    #[test]
    fn q_k_v_are_stored_alike() {
        let store = CodeStore::new();
        use crate::pipeline::SolvedSink;
        let put = |kind, quant| {
            let (w, g) = solve(quant, false, Sparsity::Dense, None);
            store.solved(0, kind, &w, Some(&g)).unwrap();
        };
        put(LinearKind::Q, QuantScheme::PerRow { bits: 2, sym: false });
        put(LinearKind::K, QuantScheme::PerRow { bits: 3, sym: false });
        put(LinearKind::V, QuantScheme::PerRow { bits: 4, sym: false });
        put(LinearKind::Fc1, QuantScheme::PerRow { bits: 2, sym: false });
        let decided = plan(&store, 1, &family::OPT, Container::Gptq).unwrap();
        let bits = |k: LinearKind| match &decided.iter().find(|s| s.kind == k).unwrap().stored {
            Stored::Packed(p) => Some(p.bits),
            Stored::Dense(_) => None,
        };
        assert_eq!([bits(LinearKind::Q), bits(LinearKind::K), bits(LinearKind::V)], [Some(4); 3]);
        assert_eq!(bits(LinearKind::Fc1), Some(2));
        assert_eq!(bits(LinearKind::Out), None, "not quantized");
        let q = decided.iter().find(|s| s.kind == LinearKind::Q).unwrap();
        assert_eq!(q.planned_bits, Some(2.0));
        // One of q/k/v not packable: all three dense.
        let groups = vec![ColumnGroup { start: 0, len: 37, bits: 4 }, ColumnGroup { start: 37, len: 163, bits: 2 }];
        put(LinearKind::V, QuantScheme::Mixed { groups, sym: false });
        let decided = plan(&store, 1, &family::OPT, Container::Gptq).unwrap();
        for s in decided.iter().filter(|s| matches!(s.kind, LinearKind::Q | LinearKind::K | LinearKind::V)) {
            assert!(matches!(s.stored, Stored::Dense(_)), "{:?}", s.kind);
        }
        let reps = reports(&decided, 16.0);
        let v = reps.iter().find(|r| r.name == "self_attn.v_proj").unwrap();
        assert_eq!((v.stored_as, v.stored_bits), ("dense", 16.0));
        assert!(v.why_dense.as_ref().unwrap().contains("multiple of 32"));
        assert!(reps
            .iter()
            .find(|r| r.name == "self_attn.q_proj")
            .unwrap()
            .why_dense
            .as_deref()
            .unwrap()
            .starts_with("q, k and v are served fused (vLLM's qkv_proj) and one of them cannot be packed"));
    }

    #[test]
    fn gate_and_up_are_stored_alike_as_q_k_v() {
        use crate::pipeline::SolvedSink;
        let stored = |puts: &[(LinearKind, QuantScheme)]| {
            let store = CodeStore::new();
            for (kind, quant) in puts {
                let (w, g) = solve(quant.clone(), false, Sparsity::Dense, None);
                store.solved(0, *kind, &w, Some(&g)).unwrap();
            }
            plan(&store, 1, &family::LLAMA, Container::Gptq).unwrap()
        };
        let bits = |d: &[LinearStorage], k: LinearKind| match &d.iter().find(|s| s.kind == k).unwrap().stored {
            Stored::Packed(p) => Some((p.bits, p.group_size)),
            Stored::Dense(why) => {
                assert!(why.contains("gate_up_proj") || why == "not quantized", "{why}");
                None
            }
        };
        let per_row = |bits| QuantScheme::PerRow { bits, sym: false };
        let grouped = |size| QuantScheme::Grouped { bits: 4, sym: false, size };
        // Widths 2 and 4 at gate and up: both stored at 4; down (its own input) keeps its 3.
        let d = stored(&[(LinearKind::Gate, per_row(2)), (LinearKind::Up, per_row(4)), (LinearKind::Down, per_row(3))]);
        assert_eq!(d.iter().map(|s| s.kind).collect::<Vec<_>>(), family::LLAMA.linears, "the family's linears");
        assert_eq!([bits(&d, LinearKind::Gate), bits(&d, LinearKind::Up)], [Some((4, None)); 2]);
        assert_eq!(bits(&d, LinearKind::Down), Some((3, None)));
        // Groups of 64 and of 100: no shared g_idx, both dense, with the fused module named.
        let d = stored(&[(LinearKind::Gate, grouped(64)), (LinearKind::Up, grouped(100))]);
        assert_eq!([bits(&d, LinearKind::Gate), bits(&d, LinearKind::Up)], [None, None]);
        let why = reports(&d, 16.0).into_iter().find(|r| r.name == "mlp.up_proj").unwrap().why_dense.unwrap();
        assert_eq!(why, "gate and up are served fused (vLLM's gate_up_proj, one g_idx) and their groups differ");
        // Equal groups: packed alike.
        let d = stored(&[(LinearKind::Gate, grouped(64)), (LinearKind::Up, grouped(64))]);
        assert_eq!([bits(&d, LinearKind::Gate), bits(&d, LinearKind::Up)], [Some((4, Some(64))); 2]);
    }
}
