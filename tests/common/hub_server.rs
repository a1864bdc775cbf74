//! A stand-in for the Hugging Face hub on 127.0.0.1, std only, for tests.
//!
//! Serves model repos at `/{repo}/resolve/{revision}/{file}` and dataset repos at
//! `/datasets/{repo}/resolve/{revision}/{file}` (the revision URL-encoded when it holds '/',
//! e.g. `refs%2Fconvert%2Fparquet`; the commit hash works as a revision too), answering GET and
//! HEAD as the hub does for what hf-hub reads:
//! - small files: 200, or 206 for a Range request, with `etag` (40 hex), `x-repo-commit`,
//!   `content-length`, `content-range`;
//! - files of at least `lfs_threshold` bytes: 302 to an absolute `/lfs/<sha256>` URL, the 302
//!   carrying `x-repo-commit`, `x-linked-etag` (the sha256, as the hub's LFS etag) and
//!   `x-linked-size`; the LFS URL serves the bytes (Range → 206, past the end → 416);
//! - a renamed repo (`alias`): 307 with a relative `Location` to the new name;
//! - 404 with `x-error-code` RepoNotFound / RevisionNotFound / EntryNotFound (the last with
//!   `x-repo-commit`, as the hub sends it).
//!
//! Faults for tests: cut a file's response body after n bytes (n times), serve a file's bytes
//! damaged in transit (headers and etag of the good bytes), ignore Range on resumption.
//! Every request is logged (method, path, Range, Authorization) so that a test can count them.
#![allow(dead_code)]

use sha2::Digest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Logged {
    /// The Host header.
    pub host: Option<String>,
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Clone)]
struct ServedFile {
    bytes: Arc<Vec<u8>>,
    sha256: String,
}

struct ServedRepo {
    dataset: bool,
    id: String,
    revision: String,
    commit: String,
    files: BTreeMap<String, ServedFile>,
}

#[derive(Default)]
struct Faults {
    /// file path in its repo → (body bytes sent before the cut, cuts left)
    cut: HashMap<String, (usize, usize)>,
    corrupt: HashSet<String>,
    ignore_range: bool,
}

struct Inner {
    repos: Mutex<Vec<ServedRepo>>,
    aliases: Mutex<Vec<(bool, String, String)>>,
    log: Mutex<Vec<Logged>>,
    faults: Mutex<Faults>,
    lfs_threshold: AtomicUsize,
    /// Host name put in LFS redirects ("127.0.0.1", or "localhost" to be another host to a client).
    lfs_host: Mutex<String>,
    addr: SocketAddr,
}

pub struct HubServer {
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn commit_for(id: &str, revision: &str) -> String {
    sha256_hex(format!("{id}@{revision}").as_bytes())[..40].to_string()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

impl HubServer {
    pub fn start() -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            repos: Mutex::new(Vec::new()),
            aliases: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            lfs_threshold: AtomicUsize::new(64 * 1024),
            lfs_host: Mutex::new("127.0.0.1".to_string()),
            addr,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (inner2, stop2) = (inner.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let inner = inner2.clone();
                std::thread::spawn(move || {
                    let _ = handle(&inner, stream);
                });
            }
        });
        HubServer { inner, stop, thread: Some(thread) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    fn add(&self, dataset: bool, id: &str, revision: &str, files: Vec<(String, Vec<u8>)>) -> String {
        let commit = commit_for(id, revision);
        let files = files
            .into_iter()
            .map(|(p, b)| {
                let sha256 = sha256_hex(&b);
                (p, ServedFile { bytes: Arc::new(b), sha256 })
            })
            .collect();
        let mut repos = self.inner.repos.lock().unwrap();
        repos.retain(|r| !(r.dataset == dataset && r.id == id));
        repos.push(ServedRepo {
            dataset,
            id: id.to_string(),
            revision: revision.to_string(),
            commit: commit.clone(),
            files,
        });
        commit
    }

    /// Serves a model repo at revision main; returns its commit.
    pub fn add_model(&self, id: &str, files: Vec<(String, Vec<u8>)>) -> String {
        self.add(false, id, "main", files)
    }

    /// Serves (or replaces) a dataset repo at `revision`; returns its commit.
    pub fn add_dataset(&self, id: &str, revision: &str, files: Vec<(String, Vec<u8>)>) -> String {
        self.add(true, id, revision, files)
    }

    /// Replaces one file of a served repo (same commit).
    pub fn set_file(&self, dataset: bool, id: &str, path: &str, bytes: Vec<u8>) {
        let mut repos = self.inner.repos.lock().unwrap();
        let r = repos.iter_mut().find(|r| r.dataset == dataset && r.id == id).expect("served repo");
        let sha256 = sha256_hex(&bytes);
        r.files.insert(path.to_string(), ServedFile { bytes: Arc::new(bytes), sha256 });
    }

    pub fn remove_file(&self, dataset: bool, id: &str, path: &str) {
        let mut repos = self.inner.repos.lock().unwrap();
        if let Some(r) = repos.iter_mut().find(|r| r.dataset == dataset && r.id == id) {
            r.files.remove(path);
        }
    }

    /// Requests for repo `old` are redirected (307, relative Location) to repo `new`.
    pub fn alias(&self, dataset: bool, old: &str, new: &str) {
        self.inner.aliases.lock().unwrap().push((dataset, old.to_string(), new.to_string()));
    }

    /// The host name LFS redirects point to (same port): "localhost" makes them cross-host.
    pub fn set_lfs_host(&self, host: &str) {
        *self.inner.lfs_host.lock().unwrap() = host.to_string();
    }

    pub fn set_lfs_threshold(&self, bytes: usize) {
        self.inner.lfs_threshold.store(bytes, Ordering::SeqCst);
    }

    /// The next `times` body transfers of `path` (longer than one byte) stop after `after` bytes.
    pub fn cut(&self, path: &str, after: usize, times: usize) {
        self.inner.faults.lock().unwrap().cut.insert(path.to_string(), (after, times));
    }

    /// Serves `path` with damaged bytes, under the headers of the good ones.
    pub fn corrupt_in_transit(&self, path: &str, on: bool) {
        let mut f = self.inner.faults.lock().unwrap();
        if on {
            f.corrupt.insert(path.to_string());
        } else {
            f.corrupt.remove(path);
        }
    }

    /// Answers a Range that starts past 0 with the whole file (200), as a server without
    /// Range support would.
    pub fn ignore_range(&self, on: bool) {
        self.inner.faults.lock().unwrap().ignore_range = on;
    }

    pub fn clear_faults(&self) {
        *self.inner.faults.lock().unwrap() = Faults::default();
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.inner.log.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.inner.log.lock().unwrap().len()
    }

    pub fn clear_log(&self) {
        self.inner.log.lock().unwrap().clear();
    }

    pub fn commit_of(&self, dataset: bool, id: &str) -> String {
        let repos = self.inner.repos.lock().unwrap();
        repos.iter().find(|r| r.dataset == dataset && r.id == id).expect("served repo").commit.clone()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.inner.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Req {
    host: Option<String>,
    method: String,
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Option<Req>> {
    let mut r = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let (mut range, mut authorization, mut host) = (None, None, None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v),
                "authorization" => authorization = Some(v),
                "host" => host = Some(v),
                _ => {}
            }
        }
    }
    Ok(Some(Req { host, method, path, range, authorization }))
}

fn respond_empty(stream: &mut TcpStream, status: &str, headers: &[(String, String)]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())
}

fn handle(inner: &Inner, mut stream: TcpStream) -> std::io::Result<()> {
    let Some(req) = read_request(&stream)? else { return Ok(()) };
    inner.log.lock().unwrap().push(Logged {
        host: req.host.clone(),
        method: req.method.clone(),
        path: req.path.clone(),
        range: req.range.clone(),
        authorization: req.authorization.clone(),
    });
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return respond_empty(&mut stream, "405 Method Not Allowed", &[]);
    }

    // LFS objects.
    if let Some(sha) = req.path.strip_prefix("/lfs/") {
        let found = {
            let repos = inner.repos.lock().unwrap();
            repos
                .iter()
                .flat_map(|r| r.files.iter())
                .find(|(_, f)| f.sha256 == sha)
                .map(|(p, f)| (p.clone(), f.clone()))
        };
        return match found {
            Some((path, f)) => {
                let headers = vec![("ETag".to_string(), format!("\"{}\"", f.sha256))];
                serve_bytes(inner, &mut stream, &req, &path, &f.bytes, headers, head_only)
            }
            None => respond_empty(&mut stream, "404 Not Found", &[]),
        };
    }

    // /{datasets/}org/name/resolve/{revision}/{file}
    let Some((left, right)) = req.path.split_once("/resolve/") else {
        return respond_empty(&mut stream, "404 Not Found", &[]);
    };
    let left = left.trim_start_matches('/');
    let (dataset, id) = match left.strip_prefix("datasets/") {
        Some(id) => (true, id.to_string()),
        None => (false, left.to_string()),
    };
    let Some((rev_enc, file_enc)) = right.split_once('/') else {
        return respond_empty(&mut stream, "404 Not Found", &[]);
    };
    let (revision, file) = (percent_decode(rev_enc), percent_decode(file_enc));

    let alias = inner
        .aliases
        .lock()
        .unwrap()
        .iter()
        .find(|(d, old, _)| *d == dataset && *old == id)
        .map(|(_, _, new)| new.clone());
    if let Some(new) = alias {
        let prefix = if dataset { "/datasets/" } else { "/" };
        let loc = format!("{prefix}{new}/resolve/{rev_enc}/{file_enc}");
        return respond_empty(&mut stream, "307 Temporary Redirect", &[("Location".into(), loc)]);
    }

    let found = {
        let repos = inner.repos.lock().unwrap();
        match repos.iter().find(|r| r.dataset == dataset && r.id == id) {
            None => Err(("RepoNotFound", None)),
            Some(r) if r.revision != revision && r.commit != revision => Err(("RevisionNotFound", None)),
            Some(r) => match r.files.get(&file) {
                None => Err(("EntryNotFound", Some(r.commit.clone()))),
                Some(f) => Ok((r.commit.clone(), f.clone())),
            },
        }
    };
    let (commit, f) = match found {
        Ok(x) => x,
        Err((code, commit)) => {
            // The hub answers an unknown repo with 401 to a request without a token.
            let status = if code == "RepoNotFound" && req.authorization.is_none() {
                "401 Unauthorized"
            } else {
                "404 Not Found"
            };
            let mut h = vec![("X-Error-Code".to_string(), code.to_string())];
            if let Some(c) = commit {
                h.push(("X-Repo-Commit".to_string(), c));
            }
            return respond_empty(&mut stream, status, &h);
        }
    };
    if f.bytes.len() >= inner.lfs_threshold.load(Ordering::SeqCst) {
        let h = vec![
            (
                "Location".to_string(),
                format!("http://{}:{}/lfs/{}", inner.lfs_host.lock().unwrap(), inner.addr.port(), f.sha256),
            ),
            ("X-Repo-Commit".to_string(), commit),
            ("X-Linked-Etag".to_string(), format!("\"{}\"", f.sha256)),
            ("X-Linked-Size".to_string(), f.bytes.len().to_string()),
            ("ETag".to_string(), format!("\"{}\"", &sha256_hex(f.sha256.as_bytes())[..40])),
        ];
        return respond_empty(&mut stream, "302 Found", &h);
    }
    let headers = vec![("ETag".to_string(), format!("\"{}\"", &f.sha256[..40])), ("X-Repo-Commit".to_string(), commit)];
    serve_bytes(inner, &mut stream, &req, &file, &f.bytes, headers, head_only)
}

fn serve_bytes(
    inner: &Inner,
    stream: &mut TcpStream,
    req: &Req,
    path: &str,
    data: &[u8],
    mut headers: Vec<(String, String)>,
    head_only: bool,
) -> std::io::Result<()> {
    let len = data.len();
    let mut range: Option<(usize, usize)> = None;
    if let Some(r) = req.range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        let (a, b) = r.split_once('-').unwrap_or((r, ""));
        let a: usize = a.trim().parse().unwrap_or(0);
        let b: usize = b.trim().parse().unwrap_or(usize::MAX);
        if a >= len {
            headers.push(("Content-Range".into(), format!("bytes */{len}")));
            return respond_empty(stream, "416 Range Not Satisfiable", &headers);
        }
        range = Some((a, b.min(len - 1)));
    }
    let (ignore_range, corrupt, cut) = {
        let mut f = inner.faults.lock().unwrap();
        let ignore = f.ignore_range;
        let corrupt = f.corrupt.contains(path);
        let probe = matches!(range, Some((a, b)) if b == a);
        let cut = match f.cut.get_mut(path) {
            Some((after, times)) if *times > 0 && !probe && !head_only => {
                *times -= 1;
                Some(*after)
            }
            _ => None,
        };
        (ignore, corrupt, cut)
    };
    if ignore_range && matches!(range, Some((a, _)) if a > 0) {
        range = None;
    }
    let (status, start, end) = match range {
        Some((a, b)) => {
            headers.push(("Content-Range".into(), format!("bytes {a}-{b}/{len}")));
            ("206 Partial Content", a, b + 1)
        }
        None => ("200 OK", 0, len),
    };
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Accept-Ranges: bytes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", end - start));
    stream.write_all(head.as_bytes())?;
    if head_only {
        return Ok(());
    }
    let mut body = data[start..end].to_vec();
    if corrupt {
        // Damage a stretch in the middle of the file, wherever this slice lies.
        for (i, byte) in body.iter_mut().enumerate() {
            let at = start + i;
            if at >= len / 2 && at < len / 2 + 64 {
                *byte ^= 0x5a;
            }
        }
    }
    match cut {
        Some(after) => {
            stream.write_all(&body[..after.min(body.len())])?;
            stream.flush()?;
            let _ = stream.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        None => stream.write_all(&body),
    }
}
