//! Reading packed checkpoints back: GPTQ (`quant_method: "gptq"`) and compressed-tensors
//! (`quant_method: "compressed-tensors"`, `pack-quantized`), detected from config.json's
//! `quantization_config` and dequantized on load into dense `P.weight` tensors, in the dtype
//! of the stored scales (as the engines compute them: `scale · (q − zero)` rounded once to
//! that dtype). The bit-level reading here is written from docs/formats.md on its own, apart
//! from the exporter's packer (`output::packing`), so reading an export back checks the
//! packer too. Bad input (unknown method, widths the format does not define, shapes that
//! do not fit) is an error naming the tensor.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// A GPTQ checkpoint's settings.
#[derive(Clone, Debug)]
pub struct GptqSettings {
    pub bits: u32,
    /// None: one group per row (`group_size: -1`).
    pub group_size: Option<usize>,
    /// `checkpoint_format` "gptq" (v1: stored zero = zero − 1) or "gptq_v2".
    pub v1_zeros: bool,
    /// `desc_act`: true, columns are grouped by `g_idx` (act-order), which must then be
    /// stored; false, a stored `g_idx` must be the plain `j / group_size` (engines ignore it);
    /// absent, a stored `g_idx` is read as it is.
    pub desc_act: Option<bool>,
    /// GPTQModel's `dynamic`: (regex, negative, overrides) in file order.
    pub dynamic: Vec<(regex::Regex, bool, Value)>,
}

/// One compressed-tensors scheme (a `config_groups` entry's weights).
#[derive(Clone, Debug)]
pub struct CtScheme {
    pub targets: Vec<String>,
    pub bits: u32,
    pub symmetric: bool,
    pub group_size: Option<usize>,
    /// `actorder` says the groups are permuted (`"group"`, `"dynamic"`, or `true`): each linear
    /// then needs its `weight_g_idx`; otherwise a stored one must be the plain order.
    pub permuted_groups: bool,
}

#[derive(Clone, Debug)]
pub enum PackedFormat {
    Gptq(GptqSettings),
    CompressedTensors(Vec<CtScheme>),
}

fn python_regex(pattern: &str) -> Result<regex::Regex> {
    // Python's re.match anchors at the start only.
    regex::Regex::new(&format!("^(?:{pattern})")).map_err(|e| anyhow!("bad regex '{pattern}': {e}"))
}

/// A bit width from config.json: an integer in `allowed`, read without truncation.
fn bits_of(v: Option<&Value>, key: &str, allowed: &[u32], allowed_text: &str) -> Result<u32> {
    let raw = v.with_context(|| format!("no {key}"))?;
    match raw.as_u64().and_then(|b| u32::try_from(b).ok()) {
        Some(b) if allowed.contains(&b) => Ok(b),
        _ => bail!("{key} {raw} {} not supported ({allowed_text})", if key == "num_bits" { "is" } else { "are" }),
    }
}

fn group_size_of(v: Option<&Value>, what: &str) -> Result<Option<usize>> {
    match v.and_then(Value::as_i64) {
        None | Some(-1) => Ok(None),
        Some(g) if g > 0 => Ok(Some(g as usize)),
        Some(g) => bail!("{what} {g} is neither positive nor -1"),
    }
}

impl PackedFormat {
    /// The packed format config.json declares, if any.
    pub fn from_config_file(path: &Path) -> Result<Option<Self>> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        match v.get("quantization_config") {
            None | Some(Value::Null) => Ok(None),
            Some(q) => Self::from_json(q).map(Some).with_context(|| format!("{}: quantization_config", path.display())),
        }
    }

    pub fn from_json(q: &Value) -> Result<Self> {
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
        match method {
            "gptq" => {
                let bits = bits_of(q.get("bits"), "GPTQ bits", &[2, 3, 4, 8], "2, 3, 4 or 8")?;
                let desc_act = match q.get("desc_act") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(other) => bail!("desc_act {other} is neither true nor false"),
                };
                let format = q
                    .get("checkpoint_format")
                    .or_else(|| q.get("format"))
                    .and_then(Value::as_str)
                    .unwrap_or("gptq")
                    .to_lowercase();
                let v1_zeros = match format.as_str() {
                    "gptq" => true,
                    "gptq_v2" => false,
                    other => bail!("GPTQ checkpoint_format '{other}' is not supported (gptq, gptq_v2)"),
                };
                let mut dynamic = Vec::new();
                if let Some(d) = q.get("dynamic").and_then(Value::as_object) {
                    for (pat, ov) in d {
                        let (neg, raw) = match (pat.strip_prefix("-:"), pat.strip_prefix("+:")) {
                            (Some(r), _) => (true, r),
                            (None, Some(r)) => (false, r),
                            (None, None) => (false, pat.as_str()),
                        };
                        dynamic.push((python_regex(raw)?, neg, ov.clone()));
                    }
                }
                Ok(PackedFormat::Gptq(GptqSettings {
                    bits,
                    group_size: group_size_of(q.get("group_size"), "group_size")?,
                    v1_zeros,
                    desc_act,
                    dynamic,
                }))
            }
            "compressed-tensors" => {
                let status = q.get("quantization_status").and_then(Value::as_str).unwrap_or("compressed");
                if status != "compressed" {
                    bail!("compressed-tensors quantization_status '{status}': only compressed checkpoints are read");
                }
                let top_format = q.get("format").and_then(Value::as_str);
                let groups = q.get("config_groups").and_then(Value::as_object).context("no config_groups")?;
                let mut schemes = Vec::new();
                for (name, g) in groups {
                    let format = g.get("format").and_then(Value::as_str).or(top_format).unwrap_or("");
                    if format != "pack-quantized" {
                        bail!("config group {name}: format '{format}' is not supported (pack-quantized)");
                    }
                    let w = g.get("weights").with_context(|| format!("config group {name} has no weights"))?;
                    let bits = bits_of(w.get("num_bits"), "num_bits", &[1, 2, 3, 4, 5, 6, 7, 8], "1 to 8")
                        .map_err(|e| anyhow!("config group {name}: {e}"))?;
                    let ty = w.get("type").and_then(Value::as_str).unwrap_or("int");
                    if ty != "int" {
                        bail!("config group {name}: type '{ty}' is not supported (int)");
                    }
                    let strategy = w.get("strategy").and_then(Value::as_str).unwrap_or("");
                    let group_size = match strategy {
                        "channel" => None,
                        "group" => Some(
                            group_size_of(w.get("group_size"), "group_size")?
                                .with_context(|| format!("config group {name}: group strategy without group_size"))?,
                        ),
                        other => bail!("config group {name}: strategy '{other}' is not supported (channel, group)"),
                    };
                    let targets = g
                        .get("targets")
                        .and_then(Value::as_array)
                        .map(|t| t.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    let permuted_groups = match w.get("actorder") {
                        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                        Some(Value::Bool(true)) => true,
                        Some(Value::String(a)) if a == "group" || a == "dynamic" => true,
                        Some(Value::String(a)) if a == "weight" || a == "static" => false,
                        Some(other) => bail!(
                            "config group {name}: actorder {other} is not one of null, \"group\", \"weight\", \"static\", \"dynamic\""
                        ),
                    };
                    schemes.push(CtScheme {
                        targets,
                        bits,
                        symmetric: w.get("symmetric").and_then(Value::as_bool).unwrap_or(true),
                        group_size,
                        permuted_groups,
                    });
                }
                Ok(PackedFormat::CompressedTensors(schemes))
            }
            "" => bail!("no quant_method"),
            other => bail!("quant_method '{other}' is not supported (gptq, compressed-tensors)"),
        }
    }
}

/// The `bits`-wide field `i` of a little-endian bit stream held by `word(w)`.
#[inline]
fn stream_field(word: impl Fn(usize) -> u32, i: usize, bits: usize) -> u32 {
    let bit = i * bits;
    let (w, off) = (bit / 32, bit % 32);
    let mut v = u64::from(word(w)) >> off;
    if off + bits > 32 {
        v |= u64::from(word(w + 1)) << (32 - off);
    }
    (v & ((1u64 << bits) - 1)) as u32
}

fn ints(t: &Tensor, name: &str) -> Result<Vec<i64>> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::I32 => t.to_vec1::<i32>()?.into_iter().map(i64::from).collect(),
        DType::I64 => t.to_vec1::<i64>()?,
        DType::U32 => t.to_vec1::<u32>()?.into_iter().map(i64::from).collect(),
        other => bail!("{name} is {other:?}, expected an integer tensor"),
    })
}

fn words(t: &Tensor, name: &str) -> Result<Vec<u32>> {
    if t.dtype() != DType::I32 && t.dtype() != DType::U32 {
        bail!("{name} is {:?}, expected int32", t.dtype());
    }
    Ok(ints(t, name)?.into_iter().map(|v| v as u32).collect())
}

fn floats(t: &Tensor, name: &str) -> Result<(Vec<f32>, DType)> {
    let dt = t.dtype();
    if !matches!(dt, DType::F16 | DType::BF16 | DType::F32) {
        bail!("{name} is {dt:?}, expected a float tensor");
    }
    Ok((t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?, dt))
}

/// `a · b` for sizes read from a checkpoint: an error naming what, never a wrapped product.
fn mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b).with_context(|| format!("{what}: {a} × {b} overflows"))
}

/// The most elements a dequantized linear may have (2^36, as model::config's tensor limit).
const MAX_LINEAR_ELEMENTS: usize = 1 << 36;

/// A tensor's 2-D shape, or an error naming it (a 0-dimensional or 3-D tensor in its place).
fn dims2_of(t: &Tensor, name: &str) -> Result<(usize, usize)> {
    match *t.dims() {
        [a, b] => Ok((a, b)),
        ref d => bail!("{name} has shape {d:?}, expected a matrix"),
    }
}

fn expect_shape(t: &Tensor, name: &str, want: &[usize], what: &str) -> Result<()> {
    if t.dims() != want {
        bail!("{name} has shape {:?}, expected {want:?} ({what})", t.dims());
    }
    Ok(())
}

fn take(map: &mut HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    map.remove(name).with_context(|| format!("packed linear is missing {name}"))
}

/// A float in `dtype` (round to nearest even), as an f32.
fn round_to(x: f32, dtype: DType) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(x).to_f32(),
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// The dense weight `[out][in]` = `scale[o][g_idx[j]] · (q − zero)`, rounded to `dtype`.
fn dense_weight(
    out: usize,
    inp: usize,
    code: impl Fn(usize, usize) -> u32 + Sync,
    zero: impl Fn(usize, usize) -> f32 + Sync,
    scale: impl Fn(usize, usize) -> f32 + Sync,
    g_idx: &[usize],
    dtype: DType,
) -> Result<Tensor> {
    let mut w = vec![0f32; out * inp];
    w.par_chunks_mut(inp).enumerate().for_each(|(o, row)| {
        for (j, x) in row.iter_mut().enumerate() {
            let g = g_idx[j];
            *x = round_to(scale(o, g) * (code(o, j) as f32 - zero(o, g)), dtype);
        }
    });
    Ok(Tensor::from_vec(w, (out, inp), &Device::Cpu)?.to_dtype(dtype)?)
}

fn check_g_idx(g: Vec<i64>, groups: usize, name: &str) -> Result<Vec<usize>> {
    if let Some(&bad) = g.iter().find(|&&x| usize::try_from(x).map_or(true, |x| x >= groups)) {
        bail!("{name} holds group {bad}, but there are {groups} groups");
    }
    Ok(g.into_iter().map(|x| x as usize).collect())
}

/// The group of column `j` without act-order: `j / group_size` (one group per row: 0).
fn plain_group(j: usize, group_size: Option<usize>) -> usize {
    group_size.map_or(0, |g| j / g)
}

/// Replaces the packed tensors of every quantized linear in `map` (a checkpoint's tensors by
/// file name) by its dense `weight`.
pub fn dequantize(map: &mut HashMap<String, Tensor>, format: &PackedFormat) -> Result<()> {
    match format {
        PackedFormat::Gptq(s) => {
            let prefixes: Vec<String> =
                map.keys().filter_map(|k| k.strip_suffix(".qweight").map(str::to_string)).collect();
            if prefixes.is_empty() {
                bail!("quantization_config says gptq, but no tensor is a qweight");
            }
            for p in prefixes {
                let w = dequantize_gptq(map, &p, s)?;
                map.insert(format!("{p}.weight"), w);
            }
        }
        PackedFormat::CompressedTensors(schemes) => {
            let prefixes: Vec<String> =
                map.keys().filter_map(|k| k.strip_suffix(".weight_packed").map(str::to_string)).collect();
            if prefixes.is_empty() {
                bail!("quantization_config says compressed-tensors, but no tensor is a weight_packed");
            }
            for p in prefixes {
                let w = dequantize_ct(map, &p, schemes)?;
                map.insert(format!("{p}.weight"), w);
            }
        }
    }
    Ok(())
}

/// The module name engines match patterns against (`model.decoder.…`).
fn module_name(prefix: &str) -> String {
    if prefix.starts_with("model.") {
        prefix.to_string()
    } else {
        format!("model.{prefix}")
    }
}

fn dequantize_gptq(map: &mut HashMap<String, Tensor>, p: &str, s: &GptqSettings) -> Result<Tensor> {
    let module = module_name(p);
    let (mut bits, mut group_size) = (s.bits, s.group_size);
    if let Some((_, neg, ov)) = s.dynamic.iter().find(|(re, _, _)| re.is_match(&module)) {
        if *neg {
            bail!("{p}.qweight is packed, but `dynamic` excludes {module} from quantization");
        }
        if ov.get("bits").is_some() {
            bits = bits_of(ov.get("bits"), "GPTQ bits", &[2, 3, 4, 8], "2, 3, 4 or 8")
                .map_err(|e| anyhow!("{module}: {e}"))?;
        }
        if ov.get("group_size").is_some() {
            group_size = group_size_of(ov.get("group_size"), "group_size")?;
        }
    }
    let (qn, zn, sn, gn) = (format!("{p}.qweight"), format!("{p}.qzeros"), format!("{p}.scales"), format!("{p}.g_idx"));
    let qweight = take(map, &qn)?;
    let qzeros = take(map, &zn)?;
    let scales = take(map, &sn)?;
    let g_idx = map.remove(&gn);
    let (groups, out) = dims2_of(&scales, &sn)?;
    let (qrows, _) = dims2_of(&qweight, &qn)?;
    let b = bits as usize;
    let inp = match &g_idx {
        Some(g) if g.rank() == 1 => g.elem_count(),
        Some(g) => bail!("{gn} has shape {:?}, expected one group per input column", g.dims()),
        None if s.desc_act == Some(true) => {
            bail!("{gn} is missing, but quantization_config's desc_act is true (act-order needs each column's group)")
        }
        None => mul(qrows, 32, &qn)? / b,
    };
    let what = format!("in {inp}, out {out}, {bits} bits, {groups} groups");
    expect_shape(&qweight, &qn, &[mul(inp, b, &what)?.div_ceil(32), out], &what)?;
    expect_shape(&qzeros, &zn, &[groups, mul(out, b, &what)?.div_ceil(32)], &what)?;
    if mul(out, inp, &what)? > MAX_LINEAR_ELEMENTS || inp == 0 || out == 0 {
        bail!("{qn}: {what} is not a linear this tool reads (empty, or over {MAX_LINEAR_ELEMENTS} weights)");
    }
    let want_groups = group_size.map_or(1, |g| inp.div_ceil(g));
    if groups != want_groups {
        bail!("{sn} has {groups} groups, but group_size {group_size:?} on {inp} inputs implies {want_groups}");
    }
    let g_idx = match g_idx {
        Some(g) => {
            let g_idx = check_g_idx(ints(&g, &gn)?, groups, &gn)?;
            if s.desc_act == Some(false) {
                if let Some(j) = (0..inp).find(|&j| g_idx[j] != plain_group(j, group_size)) {
                    bail!(
                        "{gn} puts column {j} in group {}, but quantization_config's desc_act is false, so engines read group {} (act-order checkpoints say desc_act: true)",
                        g_idx[j],
                        plain_group(j, group_size)
                    );
                }
            }
            g_idx
        }
        None => (0..inp).map(|j| plain_group(j, group_size)).collect(),
    };
    let qw = words(&qweight, &qn)?;
    let qz = words(&qzeros, &zn)?;
    let (sc, dtype) = floats(&scales, &sn)?;
    let zcols = (out * b).div_ceil(32);
    let mask = (1u32 << bits) - 1;
    let zeros: Vec<f32> = (0..groups * out)
        .map(|k| {
            let (g, o) = (k / out, k % out);
            let field = stream_field(|c| qz[g * zcols + c], o, b);
            (if s.v1_zeros { (field + 1) & mask } else { field }) as f32
        })
        .collect();
    dense_weight(
        out,
        inp,
        |o, j| stream_field(|r| qw[r * out + o], j, b),
        |o, g| zeros[g * out + o],
        |o, g| sc[g * out + o],
        &g_idx,
        dtype,
    )
}

/// Whether a compressed-tensors target names `module` (equal, `re:` regex, or a class name).
fn target_matches(target: &str, module: &str) -> Result<bool> {
    if let Some(re) = target.strip_prefix("re:") {
        return Ok(python_regex(re)?.is_match(module));
    }
    Ok(target == module || target == "Linear")
}

fn dequantize_ct(map: &mut HashMap<String, Tensor>, p: &str, schemes: &[CtScheme]) -> Result<Tensor> {
    let module = module_name(p);
    let mut scheme = None;
    for s in schemes {
        for t in &s.targets {
            if target_matches(t, &module)? || target_matches(t, p)? {
                scheme = Some(s);
            }
        }
        if scheme.is_some() {
            break;
        }
    }
    let s = scheme.with_context(|| format!("{p}.weight_packed is packed, but no config group targets {module}"))?;
    let (pn, sn, zn, shn, gn) = (
        format!("{p}.weight_packed"),
        format!("{p}.weight_scale"),
        format!("{p}.weight_zero_point"),
        format!("{p}.weight_shape"),
        format!("{p}.weight_g_idx"),
    );
    let packed = take(map, &pn)?;
    let scale = take(map, &sn)?;
    let shape = ints(&take(map, &shn)?, &shn)?;
    let zp = map.remove(&zn);
    let g_idx = map.remove(&gn);
    let [out, inp] = shape[..] else { bail!("{shn} holds {shape:?}, expected [out, in]") };
    let size = |v: i64| usize::try_from(v).ok().filter(|&v| v > 0);
    let (Some(out), Some(inp)) = (size(out), size(inp)) else {
        bail!("{shn} holds {shape:?}, expected two positive sizes")
    };
    let b = s.bits as usize;
    let (_, cols) = dims2_of(&packed, &pn)?;
    if mul(out, inp, &format!("{shn} {shape:?}"))? > MAX_LINEAR_ELEMENTS {
        bail!("{shn} holds {shape:?}: over {MAX_LINEAR_ELEMENTS} weights, more than this tool reads in one linear");
    }
    let groups = s.group_size.map_or(1, |g| inp.div_ceil(g));
    let what = format!("weight_shape [{out}, {inp}], {b} bits, {groups} groups");
    // Rows are one bit stream (compressed-tensors ≥ its dense-packing change); releases
    // before it put 32 // bits fields in each word. The shapes differ for 3, 5, 6, 7 bits.
    let stream_cols = mul(inp, b, &what)?.div_ceil(32);
    let per_word = 32 / b;
    let legacy = cols != stream_cols && cols == inp.div_ceil(per_word);
    let cols = if legacy { inp.div_ceil(per_word) } else { stream_cols };
    expect_shape(&packed, &pn, &[out, cols], &what)?;
    expect_shape(&scale, &sn, &[out, groups], &what)?;
    let field = move |word: &dyn Fn(usize) -> u32, i: usize| -> u32 {
        if legacy {
            (word(i / per_word) >> ((i % per_word) * b)) & ((1u32 << b) - 1)
        } else {
            stream_field(word, i, b)
        }
    };
    let offset = 1i64 << (b - 1);
    let zeros: Vec<f32> = if s.symmetric {
        if zp.is_some() {
            bail!("{zn} is present, but the scheme is symmetric");
        }
        vec![offset as f32; out * groups]
    } else {
        let zp = zp.with_context(|| format!("asymmetric scheme, but {zn} is missing"))?;
        let zrows = if legacy { out.div_ceil(per_word) } else { mul(out, b, &what)?.div_ceil(32) };
        expect_shape(&zp, &zn, &[zrows, groups], &what)?;
        let z = words(&zp, &zn)?;
        (0..out * groups)
            .map(|k| {
                let (o, g) = (k / groups, k % groups);
                field(&|w| z[w * groups + g], o) as f32
            })
            .collect()
    };
    let g_idx = match g_idx {
        Some(g) if g.dims() != [inp] => bail!("{gn} has shape {:?}, expected [{inp}] ({what})", g.dims()),
        Some(g) => {
            let g_idx = check_g_idx(ints(&g, &gn)?, groups, &gn)?;
            if !s.permuted_groups {
                if let Some(j) = (0..inp).find(|&j| g_idx[j] != plain_group(j, s.group_size)) {
                    bail!(
                        "{gn} puts column {j} in group {}, but the config group's actorder does not permute groups, so engines read group {}",
                        g_idx[j],
                        plain_group(j, s.group_size)
                    );
                }
            }
            g_idx
        }
        None if s.permuted_groups => {
            bail!(
                "{gn} is missing, but the config group's actorder permutes groups: each linear needs its weight_g_idx"
            )
        }
        None => (0..inp).map(|j| plain_group(j, s.group_size)).collect(),
    };
    let pw = words(&packed, &pn)?;
    let (sc, dtype) = floats(&scale, &sn)?;
    // Stored fields are signed values + 2^(bits−1) for codes and zero points alike, so
    // (q_s − zp_s) · scale = (field − zero field) · scale.
    dense_weight(
        out,
        inp,
        |o, j| field(&|w| pw[o * cols + w], j),
        |o, g| zeros[o * groups + g],
        |o, g| sc[o * groups + g],
        &g_idx,
        dtype,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_fields_by_hand() {
        // 4 bits: word 0x76543210 holds 0..7 from the low bits.
        let w = [0x7654_3210u32];
        assert_eq!((0..8).map(|i| stream_field(|k| w[k], i, 4)).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
        // 3 bits: field 10 is bits 30–31 of word 0 and bit 0 of word 1.
        let w = [0b11u32 << 30, 0b1];
        assert_eq!(stream_field(|k| w[k], 10, 3), 0b111);
        assert_eq!(stream_field(|k| w[k], 9, 3), 0);
    }

    fn t_i32(v: Vec<i32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A 4-bit GPTQ linear, in 16, out 8, one group, codes 0..16 per row, as a checkpoint map.
    fn gptq_map(g_idx: Option<Vec<i32>>) -> HashMap<String, Tensor> {
        let qweight: Vec<i32> = (0..2 * 8).map(|k| if k < 8 { 0x7654_3210 } else { 0xfedc_ba98u32 as i32 }).collect();
        let mut m = HashMap::new();
        m.insert("l.qweight".into(), t_i32(qweight, &[2, 8]));
        m.insert("l.qzeros".into(), t_i32(vec![0x7777_7777; 1], &[1, 1]));
        m.insert("l.scales".into(), Tensor::ones((1, 8), DType::F16, &Device::Cpu).unwrap());
        if let Some(g) = g_idx {
            let n = g.len();
            m.insert("l.g_idx".into(), t_i32(g, &[n]));
        }
        m
    }

    fn gptq(desc_act: Option<bool>, group_size: Option<usize>) -> GptqSettings {
        GptqSettings { bits: 4, group_size, v1_zeros: false, desc_act, dynamic: vec![] }
    }

    #[test]
    fn gptq_config_and_tensors_must_agree() {
        // As written: weights (q − 7), row j = j − 7.
        let w = dequantize_gptq(&mut gptq_map(None), "l", &gptq(Some(false), None)).unwrap();
        let row: Vec<f32> = w.to_dtype(DType::F32).unwrap().get(0).unwrap().to_vec1().unwrap();
        assert_eq!(row, (0..16).map(|j| j as f32 - 7.0).collect::<Vec<_>>());
        // Act-order without g_idx; a g_idx that is not the plain order without act-order.
        let e = dequantize_gptq(&mut gptq_map(None), "l", &gptq(Some(true), None)).unwrap_err().to_string();
        assert!(e.contains("l.g_idx is missing, but quantization_config's desc_act is true"), "{e}");
        let mut two = vec![0; 8];
        two.extend([1; 8]);
        let mut map = gptq_map(Some(two.clone()));
        map.insert("l.scales".into(), Tensor::ones((2, 8), DType::F16, &Device::Cpu).unwrap());
        map.insert("l.qzeros".into(), t_i32(vec![0x7777_7777; 2], &[2, 1]));
        dequantize_gptq(&mut map.clone(), "l", &gptq(Some(false), Some(8))).unwrap();
        let mut swapped = two.clone();
        swapped.swap(0, 15);
        map.insert("l.g_idx".into(), t_i32(swapped, &[16]));
        let e = dequantize_gptq(&mut map.clone(), "l", &gptq(Some(false), Some(8))).unwrap_err().to_string();
        assert!(e.contains("l.g_idx puts column 0 in group 1, but quantization_config's desc_act is false"), "{e}");
        dequantize_gptq(&mut map, "l", &gptq(Some(true), Some(8))).unwrap();
        // A 0-dimensional qweight, a 2-D g_idx, a group count the config does not imply.
        let mut map = gptq_map(None);
        map.insert("l.qweight".into(), Tensor::new(5i32, &Device::Cpu).unwrap());
        let e = dequantize_gptq(&mut map, "l", &gptq(Some(false), None)).unwrap_err().to_string();
        assert!(e.contains("l.qweight has shape [], expected a matrix"), "{e}");
        let mut map = gptq_map(None);
        map.insert("l.g_idx".into(), t_i32(vec![0; 16], &[4, 4]));
        let e = dequantize_gptq(&mut map, "l", &gptq(Some(true), None)).unwrap_err().to_string();
        assert!(e.contains("l.g_idx has shape [4, 4]"), "{e}");
        let e = dequantize_gptq(&mut gptq_map(None), "l", &gptq(Some(false), Some(4))).unwrap_err().to_string();
        assert!(e.contains("l.scales has 1 groups, but group_size Some(4) on 16 inputs implies 4"), "{e}");
    }

    #[test]
    fn compressed_tensors_sizes_are_checked_not_wrapped() {
        let scheme = CtScheme {
            targets: vec!["Linear".into()],
            bits: 4,
            symmetric: true,
            group_size: None,
            permuted_groups: false,
        };
        for (shape, needle) in [
            (vec![768i64, 1 << 62], "overflows"),
            (vec![768, 1 << 61], "overflows"),
            (vec![1 << 20, 1 << 20], "more than this tool reads"),
            (vec![-1, 16], "expected two positive sizes"),
            (vec![8, 16, 1], "expected [out, in]"),
        ] {
            let mut m = HashMap::new();
            m.insert("l.weight_packed".into(), t_i32(vec![], &[768, 0]));
            m.insert("l.weight_scale".into(), Tensor::ones((768, 1), DType::F16, &Device::Cpu).unwrap());
            let n = shape.len();
            m.insert("l.weight_shape".into(), Tensor::from_vec(shape.clone(), n, &Device::Cpu).unwrap());
            let e = dequantize_ct(&mut m, "l", std::slice::from_ref(&scheme)).unwrap_err().to_string();
            assert!(e.contains(needle), "{shape:?}: {e}");
        }
        let mut m = HashMap::new();
        m.insert("l.weight_packed".into(), Tensor::new(0i32, &Device::Cpu).unwrap());
        m.insert("l.weight_scale".into(), Tensor::ones((8, 1), DType::F16, &Device::Cpu).unwrap());
        m.insert("l.weight_shape".into(), Tensor::new(&[8i64, 16], &Device::Cpu).unwrap());
        let e = dequantize_ct(&mut m, "l", std::slice::from_ref(&scheme)).unwrap_err().to_string();
        assert!(e.contains("l.weight_packed has shape [], expected a matrix"), "{e}");
    }

    #[test]
    fn compressed_tensors_g_idx_agrees_with_its_config_groups_actorder() {
        // 8 × 16, 4 bits, groups of 8, symmetric: one word row per 8 columns, all fields 8 (zero).
        let linear = |g_idx: Option<Vec<i32>>| {
            let mut m = HashMap::new();
            m.insert("l.weight_packed".into(), t_i32(vec![0x8888_8888u32 as i32; 16], &[8, 2]));
            m.insert("l.weight_scale".into(), Tensor::ones((8, 2), DType::F16, &Device::Cpu).unwrap());
            m.insert("l.weight_shape".into(), Tensor::new(&[8i64, 16], &Device::Cpu).unwrap());
            if let Some(g) = g_idx {
                m.insert("l.weight_g_idx".into(), t_i32(g, &[16]));
            }
            m
        };
        let scheme = |permuted_groups| CtScheme {
            targets: vec!["Linear".into()],
            bits: 4,
            symmetric: true,
            group_size: Some(8),
            permuted_groups,
        };
        let plain: Vec<i32> = (0..16).map(|j| j / 8).collect();
        let mut swapped = plain.clone();
        swapped.swap(0, 15);
        dequantize_ct(&mut linear(None), "l", &[scheme(false)]).unwrap();
        dequantize_ct(&mut linear(Some(plain)), "l", &[scheme(false)]).unwrap();
        dequantize_ct(&mut linear(Some(swapped.clone())), "l", &[scheme(true)]).unwrap();
        let e = dequantize_ct(&mut linear(None), "l", &[scheme(true)]).unwrap_err().to_string();
        assert!(e.contains("l.weight_g_idx is missing, but the config group's actorder permutes groups"), "{e}");
        let e = dequantize_ct(&mut linear(Some(swapped)), "l", &[scheme(false)]).unwrap_err().to_string();
        assert!(e.contains("l.weight_g_idx puts column 0 in group 1, but the config group's actorder"), "{e}");
        // The config's actorder is read as compressed-tensors writes it.
        let ct = |actorder: serde_json::Value| {
            PackedFormat::from_json(&serde_json::json!({"quant_method": "compressed-tensors", "config_groups": {"g": {
                "format": "pack-quantized", "targets": ["Linear"],
                "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 8, "actorder": actorder}}}}))
        };
        for (a, permuted) in
            [(serde_json::Value::Null, false), ("weight".into(), false), ("group".into(), true), (true.into(), true)]
        {
            let Ok(PackedFormat::CompressedTensors(s)) = ct(a.clone()) else { panic!("{a}") };
            assert_eq!(s[0].permuted_groups, permuted, "{a}");
        }
        assert!(ct("sideways".into()).unwrap_err().to_string().contains("actorder \"sideways\""));
    }

    #[test]
    fn bit_widths_are_read_without_truncation() {
        let e = PackedFormat::from_json(&serde_json::json!({"quant_method": "gptq", "bits": 4294967300u64}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("GPTQ bits 4294967300 are not supported"), "{e}");
        let e = PackedFormat::from_json(&serde_json::json!({"quant_method": "gptq", "bits": 4, "desc_act": "yes"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("desc_act \"yes\""), "{e}");
    }

    #[test]
    fn configs_are_checked() {
        let ok = serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "gptq",
                                     "dynamic": {"-:^model\\.decoder\\.layers\\.0\\.fc1$": {}}});
        let PackedFormat::Gptq(g) = PackedFormat::from_json(&ok).unwrap() else { panic!() };
        assert_eq!((g.bits, g.group_size, g.v1_zeros), (4, Some(128), true));
        assert!(g.dynamic[0].0.is_match("model.decoder.layers.0.fc1") && g.dynamic[0].1);
        for (bad, needle) in [
            (serde_json::json!({"quant_method": "awq", "bits": 4}), "quant_method 'awq'"),
            (serde_json::json!({"quant_method": "gptq", "bits": 5}), "bits 5 are not supported"),
            (serde_json::json!({"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"}), "marlin"),
            (
                serde_json::json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
                    "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 9, "type": "int", "strategy": "channel"}}}}),
                "num_bits 9",
            ),
            (
                serde_json::json!({"quant_method": "compressed-tensors", "format": "float-quantized",
                    "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8}}}}),
                "float-quantized",
            ),
        ] {
            let e = PackedFormat::from_json(&bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
