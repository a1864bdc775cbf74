//! The Hugging Face hub client shared by models (`model::files`) and datasets (`data::source`).
//!
//! - [`HubConfig`]: endpoint, cache directory, offline flag and token, read from HF_ENDPOINT,
//!   HF_HOME, HF_HUB_OFFLINE and HF_TOKEN ([`HubConfig::from_env`]), or given explicitly
//!   ([`HubConfig::new`]) so that tests need not touch the process environment.
//! - [`HubClient::lookup`]: what hf-hub's cache knows about a file without any request,
//!   including huggingface_hub's `.no_exist/<commit>/<file>` markers for files known to be absent.
//! - [`HubClient::download`]: hf-hub's download (into `blobs/<etag>.part`, renamed to
//!   `blobs/<etag>` once complete, then linked from `snapshots/<commit>/<file>`), with its errors
//!   sorted into [`FetchError`] kinds; a 404 for a file of an existing repo is recorded as a
//!   `.no_exist` marker, as huggingface_hub does, so that a later run need not ask again.
//! - [`HubClient::forget`]: removes a cached file (snapshot link and blob) that turned out bad.

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo};
use std::path::{Path, PathBuf};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to reach the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// The hub cache (hf-hub's and huggingface_hub's layout): `$HF_HOME/hub`.
    pub cache_dir: PathBuf,
    /// HF_HUB_OFFLINE: answer from the cache only, never send a request.
    pub offline: bool,
    pub token: Option<String>,
    /// Progress bars for downloads (on stderr).
    pub progress: bool,
    /// How often hf-hub retries (resuming) a download whose transfer broke off.
    pub retries: usize,
}

/// True for the values huggingface_hub reads as true ("1", "true", "yes", "on", any case).
pub fn env_flag(value: Option<&str>) -> bool {
    matches!(value.map(|v| v.trim().to_ascii_lowercase()).as_deref(), Some("1" | "true" | "yes" | "on"))
}

impl HubConfig {
    /// Online, no token, no progress bars, 2 retries.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            cache_dir: cache_dir.into(),
            offline: false,
            token: None,
            progress: false,
            retries: 2,
        }
    }

    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub fn with_retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// The configuration the environment gives, as a pure function of the variables:
    /// HF_ENDPOINT (default https://huggingface.co), HF_HOME (cache `$HF_HOME/hub`, default
    /// `$HOME/.cache/huggingface/hub`), HF_HUB_OFFLINE, HF_TOKEN. The token file is not read
    /// here (see [`HubConfig::from_env`]).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let nonempty = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let endpoint = nonempty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let cache_dir = match (nonempty("HF_HOME"), nonempty("HOME")) {
            (Some(home), _) => PathBuf::from(home).join("hub"),
            (None, Some(home)) => PathBuf::from(home).join(".cache/huggingface/hub"),
            (None, None) => PathBuf::from(".cache/huggingface/hub"),
        };
        HubConfig::new(endpoint, cache_dir)
            .with_offline(env_flag(var("HF_HUB_OFFLINE").as_deref()))
            .with_token(nonempty("HF_TOKEN").map(|t| t.trim().to_string()))
    }

    /// [`HubConfig::from_vars`] over the process environment; without HF_TOKEN, the token
    /// file `$HF_HOME/token` (as hf-hub reads it); progress bars when stderr is a terminal.
    pub fn from_env() -> Self {
        let mut c = HubConfig::from_vars(|k| std::env::var(k).ok());
        if c.token.is_none() {
            c.token = Cache::new(c.cache_dir.clone()).token();
        }
        c.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        c
    }
}

/// What the cache knows about one file of a repo at a revision, without a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLookup {
    /// `snapshots/<commit>/<file>` exists.
    Present { path: PathBuf, commit: String },
    /// `.no_exist/<commit>/<file>`: the hub said the file is not in that commit.
    Absent { commit: String },
    /// Nothing cached for this file (or this revision).
    Unknown,
}

/// Why a download failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// HF_HUB_OFFLINE is set: no request was sent.
    Offline,
    /// The repo exists but has no such file at that revision (HTTP 404, EntryNotFound).
    EntryNotFound {
        commit: Option<String>,
    },
    /// No such repo, or a private one (the hub answers 401 or 404 with RepoNotFound).
    RepoNotFound {
        status: u16,
    },
    RevisionNotFound {
        status: u16,
    },
    /// 401/403 without RepoNotFound: gated or private, a token is needed.
    Denied {
        status: u16,
    },
    /// Any other HTTP status.
    Status {
        status: u16,
        code: Option<String>,
    },
    /// No connection (refused, DNS, TLS, timeout before an answer).
    Unreachable(String),
    /// The transfer broke off; hf-hub keeps `blobs/<etag>.part` and resumes it next time.
    Interrupted(String),
    /// A leftover `blobs/<etag>.part` is as long as the file or longer, so hf-hub cannot resume
    /// it (HTTP 416 for a Range starting at the end, or its "invalid part file").
    BadPartial,
    /// The server answered without the headers a hub sends (etag, x-repo-commit, content-range).
    NotAHub(String),
    /// Local I/O or anything else.
    Other(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Offline => write!(f, "HF_HUB_OFFLINE is set"),
            FetchError::EntryNotFound { .. } => write!(f, "no such file (HTTP 404)"),
            FetchError::RepoNotFound { status } => {
                write!(f, "repository not found, or private (HTTP {status}); check the name, or set HF_TOKEN")
            }
            FetchError::RevisionNotFound { status } => write!(f, "revision not found (HTTP {status})"),
            FetchError::Denied { status } => {
                write!(f, "access refused (HTTP {status}); a gated or private repository needs HF_TOKEN")
            }
            FetchError::Status { status, code: Some(c) } => write!(f, "HTTP {status} ({c})"),
            FetchError::Status { status, code: None } => write!(f, "HTTP {status}"),
            FetchError::Unreachable(e) => write!(f, "cannot connect: {e}"),
            FetchError::Interrupted(e) => write!(f, "the transfer broke off: {e}"),
            FetchError::BadPartial => write!(f, "a leftover partial download (blobs/*.part) does not fit the file"),
            FetchError::NotAHub(e) => write!(f, "the server does not answer like a Hugging Face hub: {e}"),
            FetchError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// Collapses whitespace (newlines included) so that an error stays one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The hub client: hf-hub's sync API over a [`HubConfig`], with no API object when offline.
#[derive(Clone, Debug)]
pub struct HubClient {
    config: HubConfig,
    api: Option<Api>,
}

impl HubClient {
    pub fn new(config: HubConfig) -> anyhow::Result<Self> {
        let api = if config.offline {
            None
        } else {
            Some(
                ApiBuilder::from_cache(Cache::new(config.cache_dir.clone()))
                    .with_endpoint(config.endpoint.clone())
                    .with_token(config.token.clone())
                    .with_progress(config.progress)
                    .with_retries(config.retries)
                    .build()
                    .map_err(|e| anyhow::anyhow!("cannot set up the hub client: {}", one_line(&e.to_string())))?,
            )
        };
        Ok(HubClient { config, api })
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// `<cache>/<models|datasets>--org--name`.
    pub fn repo_dir(&self, repo: &Repo) -> PathBuf {
        self.config.cache_dir.join(repo.folder_name())
    }

    /// The commit a revision points to in the cache (`refs/<revision>`; a commit hash is its own).
    pub fn cached_commit(&self, repo: &Repo) -> Option<String> {
        let dir = self.repo_dir(repo);
        let rev = repo.revision();
        if is_commit_hash(rev) && dir.join("snapshots").join(rev).is_dir() {
            return Some(rev.to_string());
        }
        let c = std::fs::read_to_string(dir.join("refs").join(rev)).ok()?;
        let c = c.trim();
        (!c.is_empty()).then(|| c.to_string())
    }

    /// True where the cache holds a snapshot for the repo's revision.
    pub fn has_snapshot(&self, repo: &Repo) -> bool {
        self.cached_commit(repo).is_some_and(|c| self.repo_dir(repo).join("snapshots").join(c).is_dir())
    }

    pub fn lookup(&self, repo: &Repo, file: &str) -> CacheLookup {
        let Some(commit) = self.cached_commit(repo) else {
            return CacheLookup::Unknown;
        };
        let dir = self.repo_dir(repo);
        let path = dir.join("snapshots").join(&commit).join(file);
        if path.exists() {
            return CacheLookup::Present { path, commit };
        }
        if dir.join(".no_exist").join(&commit).join(file).is_file() {
            return CacheLookup::Absent { commit };
        }
        CacheLookup::Unknown
    }

    /// Downloads `file` into the cache (whether or not it is cached already) and returns the
    /// snapshot path. Offline: [`FetchError::Offline`], without a request.
    pub fn download(&self, repo: &Repo, file: &str) -> Result<PathBuf, FetchError> {
        let api = self.api.as_ref().ok_or(FetchError::Offline)?;
        self.remove_dangling_link(repo, file);
        api.repo(repo.clone()).download(file).map_err(|e| self.classify(repo, file, e))
    }

    /// hf-hub's `symlink_or_rename` skips an existing link but fails ("File exists") on a
    /// dangling one (its blob deleted): remove such a link before downloading anew.
    fn remove_dangling_link(&self, repo: &Repo, file: &str) {
        if let Some(commit) = self.cached_commit(repo) {
            let p = self.repo_dir(repo).join("snapshots").join(commit).join(file);
            if p.symlink_metadata().is_ok() && !p.exists() {
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    fn classify(&self, repo: &Repo, file: &str, e: ApiError) -> FetchError {
        match e {
            ApiError::TooManyRetries(inner) => self.classify(repo, file, *inner),
            ApiError::RequestError(err) => match *err {
                ureq::Error::Status(status, resp) => {
                    let code = resp.header("x-error-code").map(str::to_string);
                    let commit = resp.header("x-repo-commit").map(str::to_string);
                    match (status, code.as_deref()) {
                        (416, _) => FetchError::BadPartial,
                        (_, Some("RepoNotFound")) => FetchError::RepoNotFound { status },
                        (_, Some("RevisionNotFound")) => FetchError::RevisionNotFound { status },
                        (_, Some("EntryNotFound")) | (404, None) => {
                            if let Some(c) = &commit {
                                self.record_no_exist(repo, c, file);
                            }
                            FetchError::EntryNotFound { commit }
                        }
                        (401 | 403, _) | (_, Some("GatedRepo")) => FetchError::Denied { status },
                        _ => FetchError::Status { status, code },
                    }
                }
                ureq::Error::Transport(t) => FetchError::Unreachable(one_line(&t.to_string())),
            },
            ApiError::IoError(io) => {
                use std::io::ErrorKind::*;
                match io.kind() {
                    UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut => {
                        FetchError::Interrupted(one_line(&io.to_string()))
                    }
                    _ => FetchError::Other(format!("I/O error: {}", one_line(&io.to_string()))),
                }
            }
            e @ (ApiError::MissingHeader(_) | ApiError::InvalidHeader(_) | ApiError::ParseIntError(_)) => {
                FetchError::NotAHub(one_line(&e.to_string()))
            }
            ApiError::InvalidResume => FetchError::BadPartial,
            other => FetchError::Other(one_line(&other.to_string())),
        }
    }

    /// huggingface_hub's record of a file absent at a commit: an empty
    /// `.no_exist/<commit>/<file>`, and `refs/<revision>` set to that commit.
    fn record_no_exist(&self, repo: &Repo, commit: &str, file: &str) {
        let commit = commit.trim();
        if commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return; // not a commit id: never let a header choose a path
        }
        let dir = self.repo_dir(repo);
        let marker = dir.join(".no_exist").join(commit).join(file);
        if let Some(parent) = marker.parent() {
            if std::fs::create_dir_all(parent).is_ok() {
                let _ = std::fs::OpenOptions::new().create(true).append(true).open(&marker);
            }
        }
        let rev = repo.revision();
        if rev != commit && self.cached_commit(repo).as_deref() != Some(commit) {
            let r = dir.join("refs").join(rev);
            if let Some(parent) = r.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::fs::write(r, commit);
        }
    }

    /// The etag under which hf-hub stored a cached file (the blob's name), when the snapshot
    /// entry is a link into `blobs/`. For LFS files it is the content's sha256.
    pub fn blob_etag(&self, snapshot_path: &Path) -> Option<String> {
        let blob = std::fs::canonicalize(snapshot_path).ok()?;
        let parent = blob.parent()?;
        if parent.file_name()? != "blobs" {
            return None;
        }
        Some(blob.file_name()?.to_str()?.to_string())
    }

    /// Removes a cached file: its snapshot entry and the blob it points to, so that no later
    /// run takes it for a good copy.
    pub fn forget(&self, snapshot_path: &Path) -> std::io::Result<()> {
        let blob = std::fs::canonicalize(snapshot_path).ok();
        let cache = std::fs::canonicalize(&self.config.cache_dir).ok();
        if snapshot_path.symlink_metadata().is_ok() {
            std::fs::remove_file(snapshot_path)?;
        }
        if let (Some(blob), Some(cache)) = (blob, cache) {
            let in_blobs = blob.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "blobs");
            if in_blobs && blob.starts_with(&cache) && blob.exists() {
                std::fs::remove_file(&blob)?;
            }
        }
        Ok(())
    }
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl HubClient {
    /// A fresh download's content against the hub's LFS etag (its sha256), where the file
    /// came through LFS; small files carry a git hash and are checked by their reader.
    pub fn check_lfs_sha256(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(etag) = self.blob_etag(path).filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit())) {
            let got = sha256_file(path)?;
            if !got.eq_ignore_ascii_case(&etag) {
                anyhow::bail!("its sha256 {got} differs from the hub's {etag} (a damaged transfer)");
            }
        }
        Ok(())
    }
}

/// For a file read from a hub cache snapshot (`…/models--org--name/snapshots/<commit>/file`):
/// the command that removes it (the snapshot entry and the blob it points to), so that the
/// next run downloads it again. None for any other path.
pub fn cache_removal_hint(path: &Path) -> Option<String> {
    let snapshot_dir =
        path.ancestors().find(|a| a.parent().and_then(Path::file_name).is_some_and(|n| n == "snapshots"))?;
    let repo = snapshot_dir.parent()?.parent()?.file_name()?.to_str()?;
    if !(repo.starts_with("models--") || repo.starts_with("datasets--")) {
        return None;
    }
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let mut cmd = format!("rm {}", quote(path));
    if let Ok(blob) = std::fs::canonicalize(path) {
        if blob != path && blob.parent().and_then(Path::file_name).is_some_and(|n| n == "blobs") {
            cmd.push(' ');
            cmd.push_str(&quote(&blob));
        }
    }
    Some(format!("it is a hub cache copy: `{cmd}` removes it, and the next run downloads it again"))
}

/// `e` with [`cache_removal_hint`] added where `path` is a hub cache copy.
pub fn with_cache_hint(e: anyhow::Error, path: &Path) -> anyhow::Error {
    match cache_removal_hint(path) {
        Some(hint) => anyhow::anyhow!("{}; {hint}", one_line(&format!("{e:#}"))),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn config_from_variables() {
        let c = HubConfig::from_vars(vars(&[("HOME", "/home/u")]));
        assert_eq!(c.endpoint, "https://huggingface.co");
        assert_eq!(c.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert!(!c.offline);
        assert_eq!(c.token, None);

        let c = HubConfig::from_vars(vars(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "/data/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:8080/"),
            ("HF_HUB_OFFLINE", "True"),
            ("HF_TOKEN", " hf_abc \n"),
        ]));
        assert_eq!(c.endpoint, "http://127.0.0.1:8080");
        assert_eq!(c.cache_dir, PathBuf::from("/data/hf/hub"));
        assert!(c.offline);
        assert_eq!(c.token.as_deref(), Some("hf_abc"));

        for (v, want) in [("1", true), ("ON", true), ("yes", true), ("0", false), ("false", false), ("", false)] {
            let c = HubConfig::from_vars(vars(&[("HF_HUB_OFFLINE", v)]));
            assert_eq!(c.offline, want, "HF_HUB_OFFLINE={v}");
        }
        // Empty values count as unset.
        let c = HubConfig::from_vars(vars(&[("HF_ENDPOINT", ""), ("HF_TOKEN", ""), ("HF_HOME", "")]));
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.token, None);
        assert_eq!(c.cache_dir, PathBuf::from(".cache/huggingface/hub"));
    }

    #[test]
    fn hub_cache_copies_are_named_with_the_command_that_removes_them() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("models--org--m");
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        std::fs::write(repo.join("blobs/f00d"), b"x").unwrap();
        std::os::unix::fs::symlink("../../blobs/f00d", repo.join("snapshots/abc/model.safetensors")).unwrap();
        let link = repo.join("snapshots/abc/model.safetensors");
        let hint = cache_removal_hint(&link).unwrap();
        let blob = std::fs::canonicalize(repo.join("blobs/f00d")).unwrap();
        assert_eq!(
            hint,
            format!(
                "it is a hub cache copy: `rm '{}' '{}'` removes it, and the next run downloads it again",
                link.display(),
                blob.display()
            )
        );
        assert_eq!(cache_removal_hint(&t.path().join("model/model.safetensors")), None);
        let e = with_cache_hint(anyhow::anyhow!("bad header"), &link).to_string();
        assert!(e.starts_with("bad header; it is a hub cache copy"), "{e}");
    }

    #[test]
    fn cache_lookup_reads_refs_snapshots_and_no_exist() {
        let t = tempfile::tempdir().unwrap();
        let client = HubClient::new(HubConfig::new("http://127.0.0.1:9", t.path()).with_offline(true)).unwrap();
        let repo = Repo::with_revision("org/ds".into(), hf_hub::RepoType::Dataset, "refs/convert/parquet".into());
        assert_eq!(client.lookup(&repo, "a/b.parquet"), CacheLookup::Unknown);
        let dir = t.path().join("datasets--org--ds");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(dir.join("refs/refs/convert")).unwrap();
        std::fs::write(dir.join("refs/refs/convert/parquet"), commit).unwrap();
        std::fs::create_dir_all(dir.join("snapshots").join(commit).join("a")).unwrap();
        std::fs::write(dir.join("snapshots").join(commit).join("a/b.parquet"), b"x").unwrap();
        std::fs::create_dir_all(dir.join(".no_exist").join(commit)).unwrap();
        std::fs::write(dir.join(".no_exist").join(commit).join("c.json"), b"").unwrap();
        assert!(matches!(client.lookup(&repo, "a/b.parquet"), CacheLookup::Present { commit: c, .. } if c == commit));
        assert_eq!(client.lookup(&repo, "c.json"), CacheLookup::Absent { commit: commit.into() });
        assert_eq!(client.lookup(&repo, "d.json"), CacheLookup::Unknown);
        assert!(client.has_snapshot(&repo));
        assert_eq!(client.download(&repo, "d.json"), Err(FetchError::Offline));
    }
}
