//! Files that lie about their contents, hostile sizes, damaged downloads, colliding outputs,
//! long names and choices that would make a run impossible: each class is refused in one line
//! before any work (or, for legal input, accepted), never with a panic or an abort, and leaves
//! nothing behind. One test per class, several cases each (issue 29).

mod common;

use common::hub_server::HubServer;
use sparsegpt_mi::hub::HubConfig;
use sparsegpt_mi::model::files::resolve_model_with;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(common::bin())
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env("SPARSEGPT_MI_DATA_DIR", common::data_dir())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Exit 1, one stderr line "error: …" holding `needle`, and the folder as it was.
fn refused(dir: &Path, args: &[&str], needle: &str) {
    let before = listing(dir);
    let (code, err) = run_in(dir, args);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(code, 1, "{args:?}: exit {code}: {err}");
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got:\n{err}");
    assert!(lines[0].starts_with("error:") && lines[0].contains(needle), "{args:?}: '{needle}' not in: {err}");
    assert_eq!(listing(dir), before, "{args:?} left something behind");
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// opt-mini-b copied to `dir/name`, config.json edited by `edit`.
fn model_copy(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    {
        std::fs::copy(common::fixture("opt-mini-b").join(f), to.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(to.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(to.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    name.to_string()
}

const QUICK: [&str; 6] = ["--nsamples", "1", "--max-windows", "1", "--eval-datasets", "wikitext2"];

#[test]
fn sizes_read_from_files_are_checked_not_wrapped() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let huge = |key: &'static str| move |c: &mut serde_json::Value| c[key] = u64::MAX.into();
    for (key, needle) in [
        ("num_hidden_layers", "num_hidden_layers 18446744073709551615 is beyond this tool's limit"),
        ("max_position_embeddings", "max_position_embeddings 18446744073709551615 is beyond this tool's limit"),
        ("vocab_size", "vocab_size 18446744073709551615 is beyond"),
        ("ffn_dim", "ffn_dim 18446744073709551615 is beyond"),
    ] {
        let m = model_copy(w, key, huge(key));
        refused(w, &["eval", &m, "--max-windows", "1"], needle);
        refused(w, &["prune", &m, "--json", "r.json", "--minlayer", "0"], needle);
        std::fs::remove_dir_all(w.join(&m)).unwrap();
    }
    // Sizes within each limit whose product is not.
    let m = model_copy(w, "wide", |c| {
        c["max_position_embeddings"] = (1u64 << 24).into();
        c["hidden_size"] = 8192.into();
        c["num_attention_heads"] = 1.into();
    });
    refused(w, &["eval", &m], "max_position_embeddings × hidden_size (16777218 × 8192) is beyond");
    std::fs::remove_dir_all(w.join(&m)).unwrap();
    // A vocabulary smaller than the tokenizer's ids: named before the model loads.
    let m = model_copy(w, "small_vocab", |c| c["vocab_size"] = 1000.into());
    refused(w, &["eval", &m, "--max-windows", "1"], "but config.json's vocab_size is 1000");
    refused(w, &["prune", &m, "--json", "r.json"], "the tokenizer does not belong to this model");
}

/// `parquet` (one row group of `rows` rows, fewer than 64) with its footer's file-level row
/// count replaced by `claim` (compact thrift: FileMetaData's field 3, an i64 zigzag varint,
/// the first `0x16 <rows·2>` of the footer).
fn parquet_claiming(parquet: &[u8], rows: usize, claim: i64) -> Vec<u8> {
    let n = parquet.len();
    let flen = u32::from_le_bytes(parquet[n - 8..n - 4].try_into().unwrap()) as usize;
    let footer = &parquet[n - 8 - flen..n - 8];
    let at = footer.windows(2).position(|w| w == [0x16, (rows * 2) as u8]).expect("num_rows field") + 1;
    let mut zz = ((claim << 1) ^ (claim >> 63)) as u64;
    let mut new_footer = footer[..at].to_vec();
    loop {
        let b = (zz & 0x7f) as u8;
        zz >>= 7;
        new_footer.push(if zz == 0 { b } else { b | 0x80 });
        if zz == 0 {
            break;
        }
    }
    new_footer.extend(&footer[at + 1..]);
    let mut out = parquet[..n - 8 - flen].to_vec();
    out.extend(&new_footer);
    out.extend((new_footer.len() as u32).to_le_bytes());
    out.extend(b"PAR1");
    out
}

/// An HF cache under `home` with Salesforce/wikitext at a fixed commit: the path of its
/// WikiText-2 test parquet file, for the caller to write.
fn cached_wikitext2_file(home: &Path) -> PathBuf {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = home.join("hub/datasets--Salesforce--wikitext");
    let file = repo.join("snapshots").join(commit).join("wikitext-2-raw-v1/test-00000-of-00001.parquet");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    file
}

/// `eval` of fixture B on one WikiText-2 window from the offline hub cache under `home`, run in
/// `cwd`; it must fail with exit 1 and one stderr line, without a panic: that line.
fn eval_offline_refused(home: &Path, cwd: &Path) -> String {
    let out = Command::new(common::bin())
        .current_dir(cwd)
        .args(["eval", common::fixture("opt-mini-b").to_str().unwrap(), "--datasets", "wikitext2"])
        .args(["--max-windows", "1"])
        .env_remove("SPARSEGPT_MI_DATA_DIR")
        .env_remove("RUST_BACKTRACE")
        .env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<String> = err.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    for bad in ["panicked", "capacity overflow", "internal error"] {
        assert!(!err.contains(bad), "{err}");
    }
    assert_eq!((out.status.code(), lines.len()), (Some(1), 1), "{err}");
    lines[0].clone()
}

#[test]
fn a_parquet_footer_claiming_2_to_the_62_rows_is_refused_before_allocating() {
    let home = tempfile::tempdir().unwrap();
    let file = cached_wikitext2_file(home.path());
    let rows: Vec<Option<String>> = (0..3).map(|i| Some(format!(" = Heading {i} = \n"))).collect();
    let good = common::hub_files::parquet_strings("text", &rows, 3);
    let t = tempfile::tempdir().unwrap();
    let eval = || eval_offline_refused(home.path(), t.path());
    for (claim, needle) in
        [(1i64 << 62, "it states 4611686018427387904 rows, its row groups 3"), (-5, "it states -5 rows")]
    {
        std::fs::write(&file, parquet_claiming(&good, 3, claim)).unwrap();
        let e = eval();
        assert!(e.contains("corrupt parquet footer") && e.contains(needle), "{claim}: {e}");
        assert!(listing(t.path()).is_empty());
    }
}

/// A PyTorch zip checkpoint whose data.pkl is `pickle` (stored, as torch.save writes).
fn write_pth(path: &Path, pickle: &[u8]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pickle).unwrap();
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

#[test]
fn hostile_pickles_are_refused_without_recursion_or_allocation() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let m = model_copy(w, "pth", |_| {});
    std::fs::remove_file(w.join(&m).join("model.safetensors")).unwrap();
    let bin = w.join(&m).join("pytorch_model.bin");
    // 400 KB of nested 1-tuples: candle would recurse 400 000 deep.
    let mut nested = vec![0x80, 2, b'N'];
    nested.extend(std::iter::repeat_n(0x85u8, 400_000));
    nested.push(b'.');
    write_pth(&bin, &nested);
    refused(w, &["eval", &m, "--max-windows", "1"], "objects nested over 1000 deep");
    // MARK-nested tuples, and the memo doubling a tuple 40 times.
    let mut marks = vec![0x80, 2];
    marks.extend(std::iter::repeat_n(b'(', 5000));
    marks.push(b')');
    marks.extend(std::iter::repeat_n(b't', 5000));
    write_pth(&bin, &marks);
    refused(w, &["eval", &m, "--max-windows", "1"], "objects nested over 1000 deep");
    let mut bomb = vec![0x80, 2, b'N', b'q', 0];
    for _ in 0..40 {
        bomb.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
    }
    bomb.push(b'.');
    write_pth(&bin, &bomb);
    refused(w, &["eval", &m, "--max-windows", "1"], "builds over 16777216 objects");
    // A string longer than the pickle.
    let mut long = vec![0x80, 2, b'X'];
    long.extend(u32::MAX.to_le_bytes());
    long.push(b'.');
    write_pth(&bin, &long);
    refused(w, &["eval", &m, "--max-windows", "1"], "a string of 4294967295 bytes");
}

#[test]
fn outputs_that_collide_are_refused_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let m = common::fixture("opt-mini-b");
    let m = m.to_str().unwrap();
    fn with<'a>(m: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        [&["prune", m], &QUICK[..], extra].concat()
    }
    let prune = |extra: &[&'static str]| with(m, extra);
    refused(w, &prune(&["--json", "res", "--save", "res"]), "--json res and --save res name the same path");
    refused(w, &prune(&["--json", "res", "--save", "res/model"]), "lies inside --json res");
    refused(w, &prune(&["--json", "out/r.json", "--save", "out"]), "--json out/r.json lies inside --save out");
    refused(w, &prune(&["--json", "a/../res", "--save", "res"]), "name the same path");
    refused(w, &["eval", m, "--json", "x", "--logits-out", "x"], "--json x and --logits-out x name the same path");
    refused(w, &["eval", m, "--json", "x", "--logits-out", "./x"], "name the same path");
    refused(w, &["eval", m, "--json", "x", "--logits-out", "x/l.json"], "lies inside --json x");
    // An output onto the input model's own files.
    let copy = model_copy(w, "mine", |_| {});
    refused(w, &["eval", &copy, "--json", "mine/config.json"], "is the input model's");
    // A mount point as --save (/proc here: the check refuses it whatever the filesystem).
    refused(w, &prune(&["--save", "/proc", "--overwrite"]), "--save /proc: is a mount point");
}

#[test]
fn names_near_name_max_are_accepted() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let m = common::fixture("opt-mini-b");
    let long = format!("{}.json", "r".repeat(250)); // 255 bytes
    let (code, err) =
        run_in(w, &["eval", m.to_str().unwrap(), "--max-windows", "1", "--datasets", "wikitext2", "--json", &long]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(w.join(&long)).unwrap()).unwrap();
    assert!(j["results"][0]["ppl"].as_f64().unwrap() > 1.0);
    assert_eq!(listing(w), vec![long.clone()], "temporaries left");
    // A 256-byte name is the filesystem's refusal, in one line, before any work.
    refused(w, &["eval", m.to_str().unwrap(), "--json", &format!("{long}x")], "--json");
    // A --save folder of 255 bytes: its temporary sibling's name is shortened to fit.
    let dir = "s".repeat(255);
    let (code, err) = run_in(
        w,
        &["prune", m.to_str().unwrap(), "--nsamples", "1", "--eval-datasets", "", "--json", "r.json", "--save", &dir],
    );
    assert_eq!(code, 0, "{err}");
    assert!(w.join(&dir).join("model.safetensors").is_file() && w.join(&dir).join("config.json").is_file());
    let mut want = vec![dir.clone(), format!("{dir}/.sparsegpt-mi-export"), long, "r.json".to_string()];
    want.extend(
        std::fs::read_dir(w.join(&dir))
            .unwrap()
            .flatten()
            .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy())),
    );
    want.sort();
    want.dedup();
    assert_eq!(listing(w), want, "temporaries left");
    refused(
        w,
        &["prune", m.to_str().unwrap(), "--nsamples", "1", "--json", "r2.json", "--save", &format!("{dir}x")],
        "--save",
    );
}

#[test]
fn impossible_choices_are_refused_up_front() {
    let t = tempfile::tempdir().unwrap();
    let m = common::fixture("opt-mini-b");
    for (target, needle) in [
        ("2.05", "--n-groups auto: --target-avg-bits 2.05 cannot pay for even 2 groups on 192-wide layers"),
        ("2.1", "cannot pay for even 2 groups"),
    ] {
        refused(
            t.path(),
            &[
                &["prune", m.to_str().unwrap(), "--target-avg-bits", target, "--n-groups", "auto", "--json", "r.json"]
                    [..],
                &QUICK[..],
            ]
            .concat(),
            needle,
        );
    }
}

#[test]
fn model_downloads_are_verified_and_never_left_in_the_cache_damaged() {
    let server = HubServer::start();
    let fixture = common::fixture("opt-mini-b");
    let files: Vec<(String, Vec<u8>)> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(fixture.join(f)).unwrap()))
        .collect();
    server.add_model("testorg/opt-mini-b", files.clone());
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    let hub = HubConfig::new(server.endpoint(), &cache).with_retries(0);
    let blobs = cache.join("models--testorg--opt-mini-b/blobs");
    let sha = common::hub_server::sha256_hex(&files[1].1);
    let blob_cached = || blobs.join(&sha).exists();
    // Damaged in transit under the good file's LFS sha256.
    server.corrupt_in_transit("model.safetensors", true);
    let e = format!(
        "{:#}",
        resolve_model_with("testorg/opt-mini-b", &hub, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap_err()
    );
    assert!(e.contains("model.safetensors' downloaded from") && e.contains("differs from the hub's"), "{e}");
    assert!(e.contains("removed it from the hub cache"), "{e}");
    assert!(!blob_cached(), "the damaged download stays cached");
    // Served damaged under its own sha256 (the hub's copy is bad): the structural read.
    server.clear_faults();
    let mut cut = files[1].1.clone();
    cut.truncate(cut.len() - 100);
    server.set_file(false, "testorg/opt-mini-b", "model.safetensors", cut);
    let e = format!(
        "{:#}",
        resolve_model_with("testorg/opt-mini-b", &hub, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap_err()
    );
    assert!(e.contains("not a readable safetensors file") && e.contains("removed it from the hub cache"), "{e}");
    // A config.json that is not JSON (into a fresh cache: the first run cached the good one).
    server.set_file(false, "testorg/opt-mini-b", "model.safetensors", files[1].1.clone());
    server.set_file(false, "testorg/opt-mini-b", "config.json", b"{\"model_type\": ".to_vec());
    let other = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        resolve_model_with(
            "testorg/opt-mini-b",
            &HubConfig::new(server.endpoint(), other.path()),
            sparsegpt_mi::protocol::SeqLen::PUBLISHED
        )
        .unwrap_err()
    );
    assert!(e.contains("config.json' downloaded from") && e.contains("not valid JSON"), "{e}");
    assert!(!other
        .path()
        .join("models--testorg--opt-mini-b/snapshots")
        .read_dir()
        .unwrap()
        .flatten()
        .any(|s| s.path().join("config.json").exists()));
    // The good files then resolve, from the first cache.
    server.set_file(false, "testorg/opt-mini-b", "config.json", files[0].1.clone());
    let resolved = resolve_model_with("testorg/opt-mini-b", &hub, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap();
    assert_eq!(std::fs::read(&resolved.weights[0]).unwrap(), files[1].1);
    assert!(blob_cached());
    // A cached copy damaged later is named with the command that clears it.
    let blob = std::fs::canonicalize(&resolved.weights[0]).unwrap();
    std::fs::write(&blob, b"damaged on disk").unwrap();
    let t = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .current_dir(t.path())
        .args(["eval", "testorg/opt-mini-b", "--max-windows", "1"])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("SPARSEGPT_MI_DATA_DIR", common::data_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!((out.status.code(), lines.len()), (Some(1), 1), "{err}");
    let want = format!("`rm '{}' '{}'`", resolved.weights[0].display(), blob.display());
    assert!(lines[0].contains("not a readable safetensors file") && lines[0].contains(&want), "{err}");
    // Doing what it says: the next run downloads it again.
    std::fs::remove_file(&resolved.weights[0]).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let again = resolve_model_with("testorg/opt-mini-b", &hub, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap();
    assert_eq!(std::fs::read(&again.weights[0]).unwrap(), files[1].1);
}

/// `dir/model.safetensors` without the tensor `remove`, and with `replace` (name, dtype, shape,
/// bytes) in its place where given; metadata kept.
fn rewrite_tensors(dir: &Path, remove: Option<&str>, replace: Option<(&str, safetensors::Dtype, Vec<usize>, &[u8])>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = st.tensors();
    tensors.retain(|(n, _)| Some(n.as_str()) != remove);
    if let Some((name, dtype, shape, data)) = replace {
        let t = tensors.iter_mut().find(|(n, _)| n == name).unwrap();
        t.1 = safetensors::tensor::TensorView::new(dtype, shape, data).unwrap();
    }
    let out = safetensors::serialize(tensors, meta.metadata().clone()).unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn packed_exports_whose_config_and_tensors_disagree_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let m = common::fixture("opt-mini-b");
    // An act-order GPTQ export of fixture B with dynamic groups (desc_act: true, a g_idx per linear).
    let (code, err) = run_in(
        w,
        &[
            "prune",
            m.to_str().unwrap(),
            "--wbits",
            "4",
            "--groupsize",
            "64",
            "--act-order",
            "--act-groups",
            "dynamic",
            "--nsamples",
            "1",
            "--eval-datasets",
            "",
            "--json",
            "r.json",
            "--save",
            "q",
            "--save-format",
            "gptq",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let cfg = std::fs::read_to_string(w.join("q/config.json")).unwrap();
    assert!(cfg.contains("\"desc_act\": true"), "{cfg}");
    let g = "model.decoder.layers.2.fc1.g_idx";
    let copy = |name: &str| {
        let to = w.join(name);
        std::fs::create_dir(&to).unwrap();
        for e in std::fs::read_dir(w.join("q")).unwrap().flatten() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        to
    };
    // g_idx removed: act-order needs it.
    let d = copy("no_g_idx");
    rewrite_tensors(&d, Some(g), None);
    refused(
        w,
        &["eval", "no_g_idx", "--max-windows", "1"],
        &format!("{g} is missing, but quantization_config's desc_act is true"),
    );
    // A 0-dimensional qweight.
    let d = copy("scalar_qweight");
    let zero = [0u8; 4];
    rewrite_tensors(
        &d,
        None,
        Some(("model.decoder.layers.1.self_attn.q_proj.qweight", safetensors::Dtype::I32, vec![], &zero)),
    );
    refused(w, &["eval", "scalar_qweight", "--max-windows", "1"], "q_proj.qweight has shape [], expected a matrix");
    // bits the config cannot hold without truncation, and a desc_act that is not a boolean.
    for (name, key, value, needle) in [
        ("wide_bits", "bits", serde_json::json!(4294967300u64), "GPTQ bits 4294967300 are not supported"),
        ("odd_desc_act", "desc_act", serde_json::json!("yes"), "desc_act \"yes\" is neither true nor false"),
    ] {
        let d = copy(name);
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
        c["quantization_config"][key] = value;
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
        refused(w, &["eval", name, "--max-windows", "1"], needle);
    }
    // A compressed-tensors export whose weight_shape claims [768, 2^61] (the element count
    // wraps in 64 bits): refused before anything is allocated from it, in eval and prune.
    let (code, err) = run_in(
        w,
        &[
            "prune",
            m.to_str().unwrap(),
            "--wbits",
            "4",
            "--groupsize",
            "64",
            "--nsamples",
            "1",
            "--eval-datasets",
            "",
            "--json",
            "r2.json",
            "--save",
            "ct",
            "--save-format",
            "compressed-tensors",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let shape: Vec<u8> = [768i64, 1 << 61].iter().flat_map(|v| v.to_le_bytes()).collect();
    rewrite_tensors(
        &w.join("ct"),
        None,
        Some(("model.decoder.layers.1.fc1.weight_shape", safetensors::Dtype::I64, vec![2], &shape)),
    );
    let prune_ct: Vec<&str> = [&["prune", "ct", "--json", "r3.json"][..], &QUICK[..]].concat();
    for args in [&["eval", "ct", "--max-windows", "1"][..], &prune_ct[..]] {
        refused(w, args, "model.decoder.layers.1.fc1");
    }
}

#[test]
fn a_cached_dataset_file_that_breaks_its_reader_is_removed_not_kept() {
    let home = tempfile::tempdir().unwrap();
    let file = cached_wikitext2_file(home.path());
    // A parquet file the fuzz campaign found panicking the parquet crate (negative column offsets).
    let found = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_findings/parquet_negative_column_start.parquet");
    std::fs::copy(found, &file).unwrap();
    let t = tempfile::tempdir().unwrap();
    let eval = || eval_offline_refused(home.path(), t.path());
    let e = eval();
    assert!(e.contains("the parquet reader failed on malformed input") && e.contains("removed it"), "{e}");
    assert!(!file.exists(), "the file that broke the reader stays cached");
    // The next run is told the file is missing, not broken again.
    let e = eval();
    assert!(e.contains("HF_HUB_OFFLINE is set and the hub cache") && e.contains("lacks Salesforce/wikitext"), "{e}");
}
