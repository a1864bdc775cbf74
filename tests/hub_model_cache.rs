//! Model resolution through the hub cache: a facebook/opt-style repo (pytorch_model.bin,
//! vocab.json + merges.txt, no tokenizer.json) from the local stand-in hub, then from the cache
//! alone with the hub unreachable (without HF_HUB_OFFLINE); its pytorch_model.bin verified at
//! download (LFS sha256, then the zip and pickle's structure) and again, structurally, when a
//! later run finds it cached. Library API with explicit HubConfig, and the binary for what a
//! user sees.

mod common;

use common::hub_server::HubServer;
use sparsegpt_mi::hub::HubConfig;
use sparsegpt_mi::model::files::{resolve_model_with, ModelFiles, TokenizerFiles};
use sparsegpt_mi::protocol::SeqLen;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const UNREACHABLE: &str = "http://127.0.0.1:9";
const ID: &str = "testorg/opt-tiny";

/// Fixture opt-rand-postln's weights as a PyTorch zip with facebook/opt-*'s key names (no
/// `model.` prefix), written once by tests/helpers/write_pth.py.
fn pytorch_bin() -> &'static [u8] {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hub_model_cache_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("pytorch_model.bin");
        let helper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/write_pth.py");
        let st = Command::new("python3")
            .arg(helper)
            .arg(common::fixture("opt-rand-postln").join("model.safetensors"))
            .arg(&out)
            .arg("--strip-model-prefix")
            .status()
            .expect("python3 is needed to write the PyTorch-format fixture");
        assert!(st.success());
        let bytes = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

fn facebook_layout(weights: &[u8]) -> Vec<(String, Vec<u8>)> {
    let fx = common::fixture("opt-rand-postln");
    let mut files: Vec<(String, Vec<u8>)> = ["config.json", "vocab.json", "merges.txt"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(fx.join(f)).unwrap()))
        .collect();
    // Large: served through LFS, its sha256 as the etag.
    files.push(("pytorch_model.bin".into(), weights.to_vec()));
    files
}

/// `zip` with the entry `name` replaced by `bytes` (every entry stored, as torch.save writes).
fn zip_with_entry(zip: &[u8], name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut src = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut found = false;
    for i in 0..src.len() {
        let mut e = src.by_index(i).unwrap();
        let entry = e.name().unwrap().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.start_file(entry.as_str(), opts).unwrap();
        if entry == name {
            found = true;
            out.write_all(bytes).unwrap();
        } else {
            out.write_all(&data).unwrap();
        }
    }
    assert!(found, "no entry {name}");
    out.finish().unwrap().into_inner()
}

fn check(files: &ModelFiles) {
    assert!(files.config.ends_with("config.json") && files.config.is_file());
    assert_eq!(files.weights.len(), 1);
    assert!(files.weights[0].ends_with("pytorch_model.bin"));
    assert!(
        matches!(&files.tokenizer, TokenizerFiles::VocabMerges { vocab, merges } if vocab.is_file() && merges.is_file())
    );
}

fn err_line<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    let e = format!("{:#}", r.expect_err("should fail"));
    assert!(!e.contains('\n'), "{e}");
    e
}

/// Every file under `dir` (links included), for "nothing of it is cached".
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// What a cache holds of a served pytorch_model.bin: snapshot entries of that name, and blobs
/// (complete or partial) named by the served bytes' sha256 (hf-hub's empty `.lock` beside a
/// blob holds none of its bytes).
fn bin_cached(cache: &Path, served: &[u8]) -> Vec<PathBuf> {
    let sha = common::hub_server::sha256_hex(served);
    files_under(&cache.join("models--testorg--opt-tiny"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name == "pytorch_model.bin" || name == sha || name == format!("{sha}.part")
        })
        .collect()
}

/// `eval ID` through the binary with `env`: exit status and the non-empty stderr lines.
fn eval_cli(env: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let t = tempfile::tempdir().unwrap();
    let mut c = Command::new(common::bin());
    c.current_dir(t.path())
        .args(["eval", ID, "--max-windows", "1", "--datasets", "ptb"])
        .env("SPARSEGPT_MI_DATA_DIR", common::data_dir())
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
    let lines = err.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    (out.status.code(), lines)
}

#[test]
fn a_cached_facebook_layout_model_resolves_with_the_hub_unreachable() {
    let server = HubServer::start();
    let commit = server.add_model(ID, facebook_layout(pytorch_bin()));
    let cache = tempfile::tempdir().unwrap();
    let online = HubConfig::new(server.endpoint(), cache.path());
    check(&resolve_model_with(ID, &online, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap());

    // The files the hub said are absent are recorded as huggingface_hub does.
    let no_exist = cache.path().join("models--testorg--opt-tiny/.no_exist").join(&commit);
    for f in ["model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(no_exist.join(f).is_file(), "{f} not recorded");
    }

    // A second run asks nothing.
    server.clear_log();
    check(&resolve_model_with(ID, &online, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap());
    assert_eq!(server.request_count(), 0, "{:?}", server.requests());
    drop(server);

    // Unreachable hub, HF_HUB_OFFLINE unset: answered from the cache.
    let unreachable = HubConfig::new(UNREACHABLE, cache.path());
    check(&resolve_model_with(ID, &unreachable, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap());
    // Also with a cache that has no .no_exist records (filled by an older tool): the
    // connection error makes the cache answer for the files it lacks.
    std::fs::remove_dir_all(cache.path().join("models--testorg--opt-tiny/.no_exist")).unwrap();
    check(&resolve_model_with(ID, &unreachable, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap());
    // And offline.
    check(
        &resolve_model_with(ID, &unreachable.clone().with_offline(true), sparsegpt_mi::protocol::SeqLen::PUBLISHED)
            .unwrap(),
    );
}

#[test]
fn an_intact_pytorch_bin_from_the_hub_loads_as_the_safetensors_it_was_written_from() {
    let server = HubServer::start();
    server.add_model(ID, facebook_layout(pytorch_bin()));
    let cache = tempfile::tempdir().unwrap();
    let files = resolve_model_with(ID, &HubConfig::new(server.endpoint(), cache.path()), SeqLen::PUBLISHED).unwrap();
    check(&files);
    let dev = candle_core::Device::Cpu;
    let from_hub = sparsegpt_mi::model::load_model(&files, &dev, candle_core::DType::F32).unwrap();
    let (local, _) = common::load("opt-rand-postln");
    let ids = candle_core::Tensor::new(&[[2u32, 100, 7, 42, 300, 5]], &dev).unwrap();
    let a = from_hub.forward(&ids).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = local.forward(&ids).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    // The same f16 values through the same computation: equal, not merely close.
    assert_eq!(a, b, "logits of the hub's pytorch_model.bin differ from the fixture's safetensors");
}

#[test]
fn a_damaged_pytorch_bin_at_the_hub_is_refused_and_never_cached() {
    let good = pytorch_bin();
    let mut truncated = good.to_vec();
    truncated.truncate(good.len() / 2);
    // A tensor record that claims more than its storage holds: storage 0's bytes cut to 10.
    let lying = zip_with_entry(good, "archive/data/0", &[0u8; 10]);
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        // (case, bytes served, damaged in transit (the etag of the served bytes kept), refusal)
        (
            "junk under its own sha256",
            vec![7u8; 200_000],
            false,
            "not a readable PyTorch checkpoint (invalid Zip archive",
        ),
        ("damaged in transit under the good sha256", good.to_vec(), true, "differs from the hub's"),
        ("truncated under its own sha256", truncated, false, "not a readable PyTorch checkpoint (invalid Zip archive"),
        ("a lying tensor record under its own sha256", lying, false, "needs more than the 10 bytes its storage holds"),
    ];
    for (what, bytes, in_transit, needle) in cases {
        let server = HubServer::start();
        server.add_model(ID, facebook_layout(&bytes));
        server.corrupt_in_transit("pytorch_model.bin", in_transit);
        let home = tempfile::tempdir().unwrap();
        let cache = home.path().join("hub");
        let e = err_line(resolve_model_with(
            ID,
            &HubConfig::new(server.endpoint(), &cache).with_retries(0),
            SeqLen::PUBLISHED,
        ));
        assert!(e.contains("'testorg/opt-tiny/pytorch_model.bin' downloaded from"), "{what}: {e}");
        assert!(e.contains(needle) && e.contains("removed it from the hub cache"), "{what}: {e}");
        assert_eq!(bin_cached(&cache, &bytes), Vec::<PathBuf>::new(), "{what}: left in the cache");
        // Through the binary: one line, exit 1, before any evaluation; not cached afterwards either.
        let endpoint = server.endpoint();
        let home2 = tempfile::tempdir().unwrap();
        let env =
            [("HF_ENDPOINT", endpoint.as_str()), ("HF_HOME", home2.path().to_str().unwrap()), ("HF_HUB_OFFLINE", "0")];
        let (code, lines) = eval_cli(&env);
        assert_eq!((code, lines.len()), (Some(1), 1), "{what}: {lines:?}");
        assert!(lines[0].starts_with("error:") && lines[0].contains(needle), "{what}: {lines:?}");
        assert_eq!(bin_cached(&home2.path().join("hub"), &bytes), Vec::<PathBuf>::new(), "{what}: left by the binary");
    }
}

#[test]
fn damaged_cached_model_files_are_named_with_the_command_that_clears_them_before_any_work() {
    let server = HubServer::start();
    server.add_model(ID, facebook_layout(pytorch_bin()));
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    let online = HubConfig::new(server.endpoint(), &cache);
    let files = resolve_model_with(ID, &online, SeqLen::PUBLISHED).unwrap();
    let bin_link = files.weights[0].clone();
    let bin_blob = std::fs::canonicalize(&bin_link).unwrap();
    let TokenizerFiles::VocabMerges { vocab, .. } = files.tokenizer.clone() else { panic!("vocab.json expected") };
    let good_bin = std::fs::read(&bin_blob).unwrap();
    let good_vocab = std::fs::read(&vocab).unwrap();
    let offline = HubConfig::new(UNREACHABLE, &cache).with_offline(true);
    let cases: Vec<(&str, &PathBuf, Vec<u8>, &str)> = vec![
        (
            "pytorch_model.bin truncated",
            &bin_link,
            good_bin[..good_bin.len() / 3].to_vec(),
            "not a readable PyTorch checkpoint",
        ),
        (
            "pytorch_model.bin with a lying tensor record",
            &bin_link,
            zip_with_entry(&good_bin, "archive/data/1", &[0u8; 6]),
            "needs more than the 6 bytes its storage holds",
        ),
        ("vocab.json cut short", &vocab, good_vocab[..good_vocab.len() / 2].to_vec(), "not valid JSON"),
    ];
    for (what, link, damaged, needle) in cases {
        let blob = std::fs::canonicalize(link).unwrap();
        let good = std::fs::read(&blob).unwrap();
        std::fs::write(&blob, &damaged).unwrap();
        let rm = format!("`rm '{}' '{}'`", link.display(), blob.display());
        // Offline, online (the cache answers without a request), and through the binary.
        for hub in [&offline, &online] {
            server.clear_log();
            let e = err_line(resolve_model_with(ID, hub, SeqLen::PUBLISHED));
            assert!(e.contains("in the hub cache is damaged") && e.contains(needle), "{what}: {e}");
            assert!(e.contains(&rm), "{what}: {e}");
            assert_eq!(server.request_count(), 0, "{what}: {:?}", server.requests());
        }
        let env = [("HF_HOME", home.path().to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
        let (code, lines) = eval_cli(&env);
        assert_eq!((code, lines.len()), (Some(1), 1), "{what}: {lines:?}");
        assert!(lines[0].contains(needle) && lines[0].contains(&rm), "{what}: {lines:?}");
        // Doing what it says: the next run downloads the file again, and the model resolves.
        std::fs::remove_file(link).unwrap();
        std::fs::remove_file(&blob).unwrap();
        check(&resolve_model_with(ID, &online, SeqLen::PUBLISHED).unwrap());
        assert_eq!(std::fs::read(link).unwrap(), good, "{what}");
    }
    // Intact, offline: resolves as before.
    check(&resolve_model_with(ID, &offline, SeqLen::PUBLISHED).unwrap());
}

#[test]
fn a_model_missing_from_the_cache_is_named_offline_and_when_unreachable() {
    let cache = tempfile::tempdir().unwrap();
    let e = err_line(resolve_model_with(
        ID,
        &HubConfig::new(UNREACHABLE, cache.path()).with_offline(true),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    ));
    assert!(e.contains("no config.json"), "{e}");
    assert!(e.contains("nothing of 'testorg/opt-tiny' is in the hub cache"), "{e}");
    assert!(e.contains("unset HF_HUB_OFFLINE") && e.contains("local model directory"), "{e}");
    assert!(!e.contains("is it a Hugging Face model"), "{e}");

    let e = err_line(resolve_model_with(
        ID,
        &HubConfig::new(UNREACHABLE, cache.path()),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    ));
    assert!(e.contains("cannot reach the Hugging Face hub at http://127.0.0.1:9"), "{e}");
    assert!(e.contains("nothing of 'testorg/opt-tiny' is in the hub cache"), "{e}");
}

#[test]
fn an_unknown_model_repo_is_refused_in_one_line() {
    let server = HubServer::start();
    let cache = tempfile::tempdir().unwrap();
    let e = err_line(resolve_model_with(
        "testorg/nothing-here",
        &HubConfig::new(server.endpoint(), cache.path()),
        sparsegpt_mi::protocol::SeqLen::PUBLISHED,
    ));
    assert!(e.contains("'testorg/nothing-here'") && e.contains("repository not found"), "{e}");
    assert!(!Path::new(&cache.path().join("models--testorg--nothing-here/snapshots")).exists());
}
