//! Deterministic mutation fuzzing of every reader of untrusted bytes, on the stable toolchain:
//! one target per reader (safetensors header and tensors, PyTorch pickle, parquet, gzipped
//! JSON lines, config.json with a packed `quantization_config`, tokenizer.json, the packed
//! export readers), seeds made from the fixtures and corpora in ../shared, inputs mutated by
//! the tool's own xoshiro (bit flips, interesting bytes and integers, cuts, repeats, splices).
//! A reader may refuse an input; it may not panic (caught here and counted as a finding).
//!
//! `cargo test --test fuzz` runs a short pass (FUZZ_ITERS, default 150 inputs a target, a few
//! seconds in all); `checks/fuzz_campaign.sh` runs a long one and records its executions and
//! findings (test_results/fuzz/). FUZZ_FINDINGS=DIR writes each panicking input there.

mod common;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

type Rng = rand_xoshiro::Xoshiro256Plus;

fn iters() -> usize {
    std::env::var("FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(150)
}

/// One mutation of `input`, with `seeds` for splicing.
fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    let mut pick = |n: usize| if n == 0 { 0 } else { (rng.next_u64() % n as u64) as usize };
    let len = input.len();
    match pick(9) {
        0 if len > 0 => {
            let i = pick(len);
            input[i] ^= 1 << pick(8);
        }
        1 if len > 0 => {
            let i = pick(len);
            input[i] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'[', b'(', b'.'][pick(10)];
        }
        2 if len >= 8 => {
            // An interesting little-endian integer over 1, 2, 4 or 8 bytes (sizes, counts, offsets).
            let w = [1, 2, 4, 8][pick(4)];
            let i = pick(len - w + 1);
            let v: u64 = [0, 1, u64::MAX, i64::MAX as u64, 1 << 31, 1 << 32, 1 << 62, 0xffff_fffe][pick(8)];
            input[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
        }
        3 if len > 0 => input.truncate(pick(len)),
        4 if len > 0 => {
            // Remove a chunk.
            let a = pick(len);
            let b = (a + 1 + pick(64)).min(len);
            input.drain(a..b);
        }
        5 if len > 0 => {
            // Repeat a chunk in place.
            let a = pick(len);
            let b = (a + 1 + pick(64)).min(len);
            let chunk = input[a..b].to_vec();
            let at = pick(len);
            input.splice(at..at, chunk.iter().copied().cycle().take(chunk.len() * (1 + pick(8))));
        }
        6 if !seeds.is_empty() => {
            // Splice in part of another seed.
            let other = &seeds[pick(seeds.len())];
            if !other.is_empty() {
                let a = pick(other.len());
                let b = (a + 1 + pick(256)).min(other.len());
                let at = pick(len + 1);
                input.splice(at..at, other[a..b].iter().copied());
            }
        }
        7 if len > 0 => {
            // A decimal number in text made huge or negative (JSON sizes).
            if let Some(i) = (0..len).map(|k| (pick(len) + k) % len).find(|&i| input[i].is_ascii_digit()) {
                let s: &[u8] = [&b"18446744073709551615"[..], b"-1", b"0", b"4294967296", b"1e400"][pick(5)];
                input.splice(i..i + 1, s.iter().copied());
            }
        }
        _ => {
            if len > 0 {
                let i = pick(len);
                input[i] = pick(256) as u8;
            }
        }
    }
}

/// Runs `target` on `iters()` mutants of the seeds (the seeds first); returns (executions,
/// panics). Panicking inputs are written to FUZZ_FINDINGS when set.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8])) -> (usize, usize) {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let mut rng = Rng::seed_from_u64(name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    let seed_offset: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    for _ in 0..seed_offset {
        rng.next_u64();
    }
    let (mut runs, mut panics) = (0, 0);
    let t0 = std::time::Instant::now();
    for i in 0..iters() + seeds.len() {
        let mut input = seeds[i % seeds.len()].clone();
        if i >= seeds.len() {
            for _ in 0..1 + rng.next_u64() % 4 {
                mutate(&mut input, &seeds, &mut rng);
            }
        }
        runs += 1;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input))).is_err() {
            panics += 1;
            if let Ok(dir) = std::env::var("FUZZ_FINDINGS") {
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(Path::new(&dir).join(format!("{name}-{i}.bin")), &input);
            }
        }
    }
    println!("fuzz target {name}: {runs} executions, {panics} panics, {:.1} s", t0.elapsed().as_secs_f64());
    (runs, panics)
}

/// Inputs earlier campaigns found panicking a reader (tests/fuzz_findings/PREFIX*): kept as
/// seeds, each checked to be refused by `refused`.
fn findings(prefix: &str, refused: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_findings");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            let b = std::fs::read(e.path()).unwrap();
            assert!(refused(&b), "{} is not refused", e.path().display());
            out.push(b);
        }
    }
    out
}

/// A file in a fresh temporary directory holding `bytes`.
fn file_of(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn assert_clean(name: &str, (runs, panics): (usize, usize)) {
    assert!(runs > 0);
    assert_eq!(panics, 0, "{name}: {panics} of {runs} inputs panicked (FUZZ_FINDINGS=DIR keeps them)");
}

/// A small safetensors file: the first tensors of fixture opt-rand-postln's checkpoint that
/// hold at most `max_elems` elements.
fn small_safetensors(max_elems: usize) -> Vec<u8> {
    let bytes = std::fs::read(common::fixture("opt-rand-postln").join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut keep: Vec<_> =
        st.tensors().into_iter().filter(|(_, t)| t.shape().iter().product::<usize>() <= max_elems).collect();
    keep.sort_by(|a, b| a.0.cmp(&b.0));
    keep.truncate(6);
    safetensors::serialize(keep, None).unwrap()
}

#[test]
fn fuzz_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = vec![small_safetensors(256), small_safetensors(64)];
    let r = fuzz("safetensors", seeds, |b| {
        let p = file_of(dir.path(), "model.safetensors", b);
        let _ = sparsegpt_mi::model::weights::check_safetensors_structure(&p);
        let _ = sparsegpt_mi::model::weights::Weights::load(&[p], candle_core::DType::F32, &candle_core::Device::Cpu);
    });
    assert_clean("safetensors", r);
}

/// A PyTorch zip (`torch.save` layout) with one float tensor `w` of `n` elements.
fn pth_zip(pickle: &[u8], storage: &[u8]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pickle).unwrap();
    z.start_file("archive/data/0", opts).unwrap();
    z.write_all(storage).unwrap();
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap().into_inner()
}

/// torch.save({"w": torch.zeros(2)})'s data.pkl (protocol 2).
const STATE_DICT_PICKLE: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x02tq\x07QK\x00K\x02\x85q\x08K\x01\x85q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.";

#[test]
fn fuzz_pickle() {
    let dir = tempfile::tempdir().unwrap();
    // The seed reads back as a tensor: the target is exercised past the pickle.
    let seed = pth_zip(STATE_DICT_PICKLE, &[0u8; 8]);
    let p = file_of(dir.path(), "seed.bin", &seed);
    let w =
        sparsegpt_mi::model::weights::Weights::load(&[p], candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    assert_eq!(w.get("w").unwrap().dims(), [2]);
    // Mutating the pickle alone (inside a valid zip) reaches the unpickler, not just the zip reader.
    let load = |b: &[u8]| {
        let p = file_of(dir.path(), "pytorch_model.bin", &pth_zip(b, &[0u8; 8]));
        sparsegpt_mi::model::weights::Weights::load(&[p], candle_core::DType::F32, &candle_core::Device::Cpu)
    };
    let mut seeds = vec![STATE_DICT_PICKLE.to_vec()];
    seeds.extend(findings("pickle_", |b| load(b).is_err()));
    let r1 = fuzz("pickle", seeds, |b| {
        let _ = sparsegpt_mi::model::pickle_check::check_pickle(b);
        let p = file_of(dir.path(), "pytorch_model.bin", &pth_zip(b, &[0u8; 8]));
        let _ = sparsegpt_mi::model::weights::Weights::load(&[p], candle_core::DType::F32, &candle_core::Device::Cpu);
    });
    let r2 = fuzz("pytorch_zip", vec![seed], |b| {
        let p = file_of(dir.path(), "pytorch_model.bin", b);
        let _ = sparsegpt_mi::model::weights::Weights::load(&[p], candle_core::DType::F32, &candle_core::Device::Cpu);
    });
    assert_clean("pickle", r1);
    assert_clean("pytorch_zip", r2);
}

fn wikitext_rows(n: usize) -> Vec<Option<String>> {
    let text = std::fs::read_to_string(common::data_dir().join("wikitext2/wiki.test.raw")).unwrap();
    text.lines().take(n).map(|l| Some(format!("{l}\n"))).collect()
}

#[test]
fn fuzz_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let mut seeds = vec![
        common::hub_files::parquet_strings("text", &wikitext_rows(40), 16),
        common::hub_files::parquet_strings_with(
            "text",
            &wikitext_rows(12),
            5,
            parquet::basic::Compression::UNCOMPRESSED,
        ),
    ];
    seeds.extend(findings("parquet_", |b| {
        let p = file_of(dir.path(), "found.parquet", b);
        sparsegpt_mi::data::formats::read_parquet_strings(&p, "text").is_err()
    }));
    let r = fuzz("parquet", seeds, |b| {
        let p = file_of(dir.path(), "f.parquet", b);
        let _ = sparsegpt_mi::data::formats::check_parquet_column(&p, "text");
        let _ = sparsegpt_mi::data::formats::read_parquet_strings(&p, "text");
    });
    assert_clean("parquet", r);
}

#[test]
fn fuzz_gzip_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::data_dir().join("c4/c4-train.00000-of-01024.first1000.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().take(6).collect();
    let seeds =
        vec![common::hub_files::gzip(lines.join("\n").as_bytes()), common::hub_files::gzip(lines[0].as_bytes())];
    let r = fuzz("gzip_jsonl", seeds, |b| {
        let p = file_of(dir.path(), "f.json.gz", b);
        let _ = sparsegpt_mi::data::formats::read_gz_jsonl_texts(&p, 4);
        let _ = sparsegpt_mi::data::formats::check_gz_jsonl(&p);
    });
    assert_clean("gzip_jsonl", r);
}

#[test]
fn fuzz_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(common::fixture("opt-mini-b").join("config.json")).unwrap();
    let mut gptq: serde_json::Value = serde_json::from_str(&base).unwrap();
    gptq["quantization_config"] = serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": 64,
        "desc_act": true, "sym": false, "checkpoint_format": "gptq",
        "dynamic": {"-:model\\.decoder\\.layers\\.0\\.fc1": {}, "+:.*fc2": {"bits": 8, "group_size": -1}}});
    let mut ct: serde_json::Value = serde_json::from_str(&base).unwrap();
    ct["quantization_config"] = serde_json::json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
        "quantization_status": "compressed", "config_groups": {"group_0": {"targets": ["Linear", "re:.*q_proj"],
        "weights": {"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group", "group_size": 64}}}});
    let seeds = vec![base.into_bytes(), gptq.to_string().into_bytes(), ct.to_string().into_bytes()];
    let r = fuzz("config_json", seeds, |b| {
        let p = file_of(dir.path(), "config.json", b);
        let _ = sparsegpt_mi::model::OptConfig::from_file(&p);
        let _ = sparsegpt_mi::model::packed::PackedFormat::from_config_file(&p);
    });
    assert_clean("config_json", r);
}

#[test]
fn fuzz_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    // The fixtures' tokenizer with its vocabulary and merges cut to a few entries, so that a
    // mutant parses in milliseconds; and the Llama fixture's as it is (smaller).
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("opt-mini-b").join("tokenizer.json")).unwrap())
            .unwrap();
    let mut small = full.clone();
    let vocab: serde_json::Map<String, serde_json::Value> = full["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, id)| id.as_u64().unwrap() < 300)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    small["model"]["vocab"] = vocab.into();
    small["model"]["merges"] = serde_json::Value::Array(full["model"]["merges"].as_array().unwrap()[..20].to_vec());
    let mut seeds = vec![small.to_string().into_bytes()];
    // Earlier findings (inputs that panicked the tokenizers crate) stay as seeds, refused.
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_findings")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("tokenizer_json") {
            let files = sparsegpt_mi::model::files::TokenizerFiles::Json(e.path());
            let err = sparsegpt_mi::model::tokenizer::load(&files).unwrap_err().to_string();
            assert!(err.contains("not a readable tokenizer.json"), "{err}");
            seeds.push(std::fs::read(e.path()).unwrap());
        }
    }
    let r = fuzz("tokenizer_json", seeds, |b| {
        let p = file_of(dir.path(), "tokenizer.json", b);
        let files = sparsegpt_mi::model::files::TokenizerFiles::Json(p);
        if let Ok(tok) = sparsegpt_mi::model::tokenizer::load_for_vocab(&files, 50272) {
            let _ = sparsegpt_mi::model::tokenizer::encode(&tok, "Hello world, the quick brown fox.");
        }
    });
    assert_clean("tokenizer_json", r);
}

/// One 4-bit GPTQ linear (in 128, out 16, groups of 64, act-order g_idx) and its config.
fn gptq_linear() -> Vec<u8> {
    let (inp, out, groups) = (128usize, 16usize, 2usize);
    let i32s = |v: Vec<i32>| v.into_iter().flat_map(i32::to_le_bytes).collect::<Vec<u8>>();
    let qweight = i32s((0..inp * 4 / 32 * out).map(|k| (k as i32).wrapping_mul(0x1357_9bdf)).collect());
    let qzeros = i32s(vec![0x7777_7777; groups * out * 4 / 32]);
    let scales: Vec<u8> =
        (0..groups * out).flat_map(|k| half::f16::from_f32(0.01 + k as f32 * 1e-3).to_le_bytes()).collect();
    let g_idx = i32s((0..inp).map(|j| ((j * 37) % inp / 64) as i32).collect());
    let p = "model.decoder.layers.0.fc1";
    let views = vec![
        (
            format!("{p}.qweight"),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![inp * 4 / 32, out], &qweight).unwrap(),
        ),
        (
            format!("{p}.qzeros"),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![groups, out * 4 / 32], &qzeros).unwrap(),
        ),
        (
            format!("{p}.scales"),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![groups, out], &scales).unwrap(),
        ),
        (
            format!("{p}.g_idx"),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![inp], &g_idx).unwrap(),
        ),
    ];
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn fuzz_packed_exports() {
    let dir = tempfile::tempdir().unwrap();
    let format = sparsegpt_mi::model::packed::PackedFormat::from_json(&serde_json::json!({"quant_method": "gptq",
        "bits": 4, "group_size": 64, "desc_act": true, "checkpoint_format": "gptq"}))
    .unwrap();
    let seed = gptq_linear();
    let read = |b: &[u8]| -> anyhow::Result<()> {
        let p = file_of(dir.path(), "model.safetensors", b);
        let mut map: HashMap<String, candle_core::Tensor> =
            candle_core::safetensors::load(&p, &candle_core::Device::Cpu)?;
        sparsegpt_mi::model::packed::dequantize(&mut map, &format)
    };
    read(&seed).unwrap();
    let r = fuzz("packed_gptq", vec![seed], |b| {
        let _ = read(b);
    });
    assert_clean("packed_gptq", r);

    // compressed-tensors, asymmetric 4-bit groups of 32: in 64, out 8.
    let format =
        sparsegpt_mi::model::packed::PackedFormat::from_json(&serde_json::json!({"quant_method": "compressed-tensors",
        "format": "pack-quantized", "quantization_status": "compressed", "config_groups": {"g": {"targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "int", "symmetric": false, "strategy": "group", "group_size": 32}}}}))
        .unwrap();
    let (inp, out, groups) = (64usize, 8usize, 2usize);
    let i32s = |v: Vec<i32>| v.into_iter().flat_map(i32::to_le_bytes).collect::<Vec<u8>>();
    let packed = i32s((0..out * inp * 4 / 32).map(|k| (k as i32).wrapping_mul(0x2468_ace1)).collect());
    let zeros = i32s(vec![0x7777_7777; out * 4 / 32 * groups]);
    let scales: Vec<u8> =
        (0..out * groups).flat_map(|k| half::f16::from_f32(0.02 + k as f32 * 1e-3).to_le_bytes()).collect();
    let shape: Vec<u8> = [out as i64, inp as i64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = "model.decoder.layers.0.fc1";
    fn view(dt: safetensors::Dtype, shape: Vec<usize>, data: &[u8]) -> safetensors::tensor::TensorView<'_> {
        safetensors::tensor::TensorView::new(dt, shape, data).unwrap()
    }
    let seed = safetensors::serialize(
        vec![
            (format!("{p}.weight_packed"), view(safetensors::Dtype::I32, vec![out, inp * 4 / 32], &packed)),
            (format!("{p}.weight_zero_point"), view(safetensors::Dtype::I32, vec![out * 4 / 32, groups], &zeros)),
            (format!("{p}.weight_scale"), view(safetensors::Dtype::F16, vec![out, groups], &scales)),
            (format!("{p}.weight_shape"), view(safetensors::Dtype::I64, vec![2], &shape)),
        ],
        None,
    )
    .unwrap();
    let read = |b: &[u8]| -> anyhow::Result<()> {
        let p = file_of(dir.path(), "ct.safetensors", b);
        let mut map: HashMap<String, candle_core::Tensor> =
            candle_core::safetensors::load(&p, &candle_core::Device::Cpu)?;
        sparsegpt_mi::model::packed::dequantize(&mut map, &format)
    };
    read(&seed).unwrap();
    let r = fuzz("packed_compressed_tensors", vec![seed], |b| {
        let _ = read(b);
    });
    assert_clean("packed_compressed_tensors", r);
}
