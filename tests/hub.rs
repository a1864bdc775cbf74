//! The hub path, offline: a local HTTP server serves a facebook/opt-style repository
//! (pytorch_model.bin whose keys lack `model.`, vocab.json + merges.txt, no tokenizer.json)
//! under the hub's URL layout; then the same model comes from hf-hub's cache with
//! HF_HUB_OFFLINE=1 and the server gone.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Serves `root` as repository `repo` at revision main: GET with Range, the headers hf-hub reads.
fn serve(root: PathBuf, repo: &str) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let prefix = format!("/{repo}/resolve/main/");
    std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                }
            };
            stream.set_nonblocking(false).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut range_start = 0usize;
            let mut range_end: Option<usize> = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let v = v.trim();
                    let (a, b) = v.split_once('-').unwrap();
                    range_start = a.parse().unwrap();
                    range_end = b.parse().ok();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let file = path.strip_prefix(&prefix).map(|f| root.join(f));
            match file.filter(|f| f.is_file()) {
                Some(f) => {
                    let data = std::fs::read(&f).unwrap();
                    let end = range_end.unwrap_or(data.len() - 1).min(data.len() - 1);
                    let body = &data[range_start..=end];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\netag: \"{:x}\"\r\nx-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\nConnection: close\r\n\r\n",
                        body.len(),
                        range_start,
                        end,
                        data.len(),
                        (data.len() as u64 * 2654435761) ^ f.file_name().unwrap().len() as u64
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body);
                }
                None => {
                    let _ =
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    (addr, stop)
}

fn facebook_style_repo(dir: &Path) {
    let fx = common::fixture("opt-rand-postln");
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(fx.join(f), dir.join(f)).unwrap();
    }
    let helper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/write_pth.py");
    let st = Command::new("python3")
        .arg(helper)
        .arg(fx.join("model.safetensors"))
        .arg(dir.join("pytorch_model.bin"))
        .arg("--strip-model-prefix")
        .status()
        .expect("python3 is needed to write the PyTorch-format fixture");
    assert!(st.success());
}

fn eval_nll(model: &str, env: &[(&str, &str)], json: &Path) -> f64 {
    let mut c = Command::new(common::bin());
    c.args(["eval", model, "--datasets", "ptb", "--max-windows", "1", "--json", json.to_str().unwrap()])
        .args(["--data-dir", common::data_dir().to_str().unwrap()]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    j["results"][0]["window_mean_nll"][0].as_f64().unwrap()
}

#[test]
fn facebook_layout_through_a_local_hub_and_then_the_offline_cache() {
    let t = tempfile::tempdir().unwrap();
    let repo_dir = t.path().join("repo");
    facebook_style_repo(&repo_dir);
    let home = t.path().join("hf_home");
    let json = t.path().join("r.json");
    let local = eval_nll(common::fixture("opt-rand-postln").to_str().unwrap(), &[], &json);

    // A local directory in the facebook layout loads the same model.
    let from_dir = eval_nll(repo_dir.to_str().unwrap(), &[], &json);
    assert!((from_dir - local).abs() < 1e-9, "pytorch_model.bin + vocab/merges: {from_dir} vs {local}");

    let (endpoint, stop) = serve(repo_dir.clone(), "testorg/opt-tiny");
    let env = [("HF_ENDPOINT", endpoint.as_str()), ("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "0")];
    let hub = eval_nll("testorg/opt-tiny", &env, &json);
    assert!((hub - local).abs() < 1e-9, "hub: {hub} vs {local}");
    stop.store(true, Ordering::SeqCst);

    // Offline, from the standard cache layout that the download filled.
    assert!(home.join("hub/models--testorg--opt-tiny/refs/main").is_file());
    let env = [("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1"), ("HF_ENDPOINT", "http://127.0.0.1:9")];
    let cached = eval_nll("testorg/opt-tiny", &env, &json);
    assert!((cached - local).abs() < 1e-9, "cache: {cached} vs {local}");
}
