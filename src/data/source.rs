//! Where the evaluation and calibration corpora come from: a local data directory (`data`) or the
//! Hugging Face hub's dataset repos: the files the published SparseGPT/GPTQ datautils load,
//! fetched with hf-hub into the standard cache (HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN,
//! as for models).
//!
//! | corpus | role | dataset @ revision | file |
//! |---|---|---|---|
//! | wikitext2 | eval | Salesforce/wikitext @ main | wikitext-2-raw-v1/test-00000-of-00001.parquet (`text`) |
//! | wikitext2 | calibration | Salesforce/wikitext @ main | wikitext-2-raw-v1/train-00000-of-00001.parquet (`text`) |
//! | ptb | eval | ptb-text-only/ptb_text_only @ refs/convert/parquet | penn_treebank/test/0000.parquet (`sentence`) |
//! | ptb | calibration | ptb-text-only/ptb_text_only @ refs/convert/parquet | penn_treebank/train/0000.parquet (`sentence`) |
//! | c4 | eval | allenai/c4 @ main | en/c4-validation.00000-of-00008.json.gz |
//! | c4 | calibration | allenai/c4 @ main | en/c4-train.00000-of-01024.json.gz |
//!
//! The strings are built as datautils builds them, and equal what `data` builds from a data
//! directory holding the same content: WikiText-2 test rows joined with "\n\n" (train rows with
//! " "), PTB sentences joined with " ", the first 1100 C4 validation documents joined with " "
//! (at most 256 windows once tokenised), and every C4 train document, in file order.
//!
//! A download is checked before it is used: its sha256 against the hub's LFS etag where there
//! is one, then its content (a parquet file must hold the string column, a gzip file must
//! decompress to the end with a good CRC). A file that fails is removed from the cache, so that
//! no later run trusts it. [`DataSource::check_available`] does all of this up front, before
//! any model work, and lists every missing file in one line. The zero-shot tasks' files
//! (`tasks::files`) go through the same resolution ([`HubFile`], `resolve_hub_files`).

use super::formats::{
    check_gz_jsonl, check_parquet_column, check_parquet_columns, is_unsupported, read_gz_jsonl_texts,
    read_parquet_rows, read_parquet_strings,
};
use super::{self as data, Corpus, SeqLen, C4_EVAL_DOCS};
use crate::hub::{one_line, CacheLookup, FetchError, HubClient, HubConfig};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a corpus is used for in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Eval,
    Calibration,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Eval => "eval",
            Role::Calibration => "calibration",
        }
    }
}

/// One corpus in one role: what a run needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Need {
    pub corpus: Corpus,
    pub role: Role,
}

impl Need {
    pub fn eval(corpus: Corpus) -> Self {
        Need { corpus, role: Role::Eval }
    }
    pub fn calibration(corpus: Corpus) -> Self {
        Need { corpus, role: Role::Calibration }
    }
}

/// The needs of a run: the calibration source (if it compresses) and the evaluation corpora.
pub fn needs(eval: &[Corpus], calibration: Option<Corpus>) -> Vec<Need> {
    let mut out: Vec<Need> = calibration.map(Need::calibration).into_iter().collect();
    for &c in eval {
        if !out.contains(&Need::eval(c)) {
            out.push(Need::eval(c));
        }
    }
    out
}

/// How a hub file is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Parquet, one string column read.
    Parquet { column: &'static str },
    /// Gzipped JSON lines with a "text" field.
    JsonLinesGz,
    /// Parquet read row by row (the zero-shot tasks' files): these top-level columns needed.
    ParquetRows { columns: &'static [&'static str] },
}

/// One file of a hub dataset repo at a revision, in a format: what the cache, the download
/// and the checks need to know of it (corpora and task files alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubFile {
    pub repo: &'static str,
    pub revision: &'static str,
    pub path: &'static str,
    pub format: Format,
}

impl HubFile {
    pub fn hub_repo(&self) -> hf_hub::Repo {
        hf_hub::Repo::with_revision(self.repo.to_string(), hf_hub::RepoType::Dataset, self.revision.to_string())
    }

    /// The resolve URL, the revision URL-encoded as the hub expects (`refs%2Fconvert%2Fparquet`).
    pub fn url(&self, endpoint: &str) -> String {
        format!(
            "{}/datasets/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            self.repo,
            self.revision.replace('/', "%2F"),
            self.path
        )
    }

    /// `repo@revision:path`, for messages.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.repo, self.revision, self.path)
    }
}

/// One file of a hub dataset repo, tied to the corpus and role it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatasetFile {
    pub corpus: Corpus,
    pub role: Role,
    /// The dataset split the file holds.
    pub split: &'static str,
    pub repo: &'static str,
    pub revision: &'static str,
    pub path: &'static str,
    pub format: Format,
}

const WIKITEXT: &str = "Salesforce/wikitext";
const PTB: &str = "ptb-text-only/ptb_text_only";
const PTB_REVISION: &str = "refs/convert/parquet";
const C4: &str = "allenai/c4";

/// The six files, as the published code loads them.
pub const DATASET_FILES: [DatasetFile; 6] = [
    DatasetFile {
        corpus: Corpus::WikiText2,
        role: Role::Eval,
        split: "test",
        repo: WIKITEXT,
        revision: "main",
        path: "wikitext-2-raw-v1/test-00000-of-00001.parquet",
        format: Format::Parquet { column: "text" },
    },
    DatasetFile {
        corpus: Corpus::WikiText2,
        role: Role::Calibration,
        split: "train",
        repo: WIKITEXT,
        revision: "main",
        path: "wikitext-2-raw-v1/train-00000-of-00001.parquet",
        format: Format::Parquet { column: "text" },
    },
    DatasetFile {
        corpus: Corpus::Ptb,
        role: Role::Eval,
        split: "test",
        repo: PTB,
        revision: PTB_REVISION,
        path: "penn_treebank/test/0000.parquet",
        format: Format::Parquet { column: "sentence" },
    },
    DatasetFile {
        corpus: Corpus::Ptb,
        role: Role::Calibration,
        split: "train",
        repo: PTB,
        revision: PTB_REVISION,
        path: "penn_treebank/train/0000.parquet",
        format: Format::Parquet { column: "sentence" },
    },
    DatasetFile {
        corpus: Corpus::C4,
        role: Role::Eval,
        split: "validation",
        repo: C4,
        revision: "main",
        path: "en/c4-validation.00000-of-00008.json.gz",
        format: Format::JsonLinesGz,
    },
    DatasetFile {
        corpus: Corpus::C4,
        role: Role::Calibration,
        split: "train",
        repo: C4,
        revision: "main",
        path: "en/c4-train.00000-of-01024.json.gz",
        format: Format::JsonLinesGz,
    },
];

impl DatasetFile {
    pub fn of(need: Need) -> &'static DatasetFile {
        DATASET_FILES
            .iter()
            .find(|f| f.corpus == need.corpus && f.role == need.role)
            .expect("every (corpus, role) has a file")
    }

    pub fn hub_file(&self) -> HubFile {
        HubFile { repo: self.repo, revision: self.revision, path: self.path, format: self.format }
    }

    pub fn hub_repo(&self) -> hf_hub::Repo {
        self.hub_file().hub_repo()
    }

    pub fn url(&self, endpoint: &str) -> String {
        self.hub_file().url(endpoint)
    }

    pub fn label(&self) -> String {
        self.hub_file().label()
    }
}

/// Where one file of a corpus came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum FileProvenance {
    Hub {
        repo: String,
        revision: String,
        file: String,
        /// The commit the hub resolved the revision to (`x-repo-commit`), as cached.
        commit: String,
        endpoint: String,
    },
    Local {
        path: String,
        sha256: String,
    },
}

/// Where a corpus came from, for a run's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Provenance {
    pub corpus: &'static str,
    pub role: Role,
    pub files: Vec<FileProvenance>,
}

/// Where the corpora come from.
#[derive(Clone, Debug)]
pub enum DataSource {
    /// A data directory in the layout of README.md, 'Data directory layout'.
    Local(PathBuf),
    /// The hub's dataset repos through the cache.
    Hub(Box<HubClient>),
}

/// A hub file resolved to a local path.
pub(crate) struct Resolved {
    pub file: HubFile,
    pub path: PathBuf,
    pub commit: String,
}

const LAYOUT_HINT: &str = "README.md, 'Data directory layout'";

impl DataSource {
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        DataSource::Local(dir.into())
    }

    pub fn hub(config: HubConfig) -> Result<Self> {
        Ok(DataSource::Hub(Box::new(HubClient::new(config)?)))
    }

    /// `--data-dir`, else a non-empty `$SPARSEGPT_MI_DATA_DIR`, else the hub: as a function
    /// of its inputs.
    pub fn choose(data_dir: Option<PathBuf>, env_data_dir: Option<PathBuf>, hub: HubConfig) -> Result<Self> {
        match data_dir.or(env_data_dir.filter(|p| !p.as_os_str().is_empty())) {
            Some(dir) => Ok(DataSource::Local(dir)),
            None => DataSource::hub(hub),
        }
    }

    /// [`DataSource::choose`] with SPARSEGPT_MI_DATA_DIR and the hub settings of the environment.
    pub fn from_env(data_dir: Option<PathBuf>) -> Result<Self> {
        DataSource::choose(
            data_dir,
            std::env::var_os("SPARSEGPT_MI_DATA_DIR").map(PathBuf::from),
            HubConfig::from_env(),
        )
    }

    pub fn describe(&self) -> String {
        match self {
            DataSource::Local(d) => format!("data directory {}", d.display()),
            DataSource::Hub(c) => format!(
                "Hugging Face hub at {} (cache {}{})",
                c.config().endpoint,
                c.config().cache_dir.display(),
                if c.config().offline { ", HF_HUB_OFFLINE" } else { "" }
            ),
        }
    }

    /// Makes sure every file the needs call for is at hand (downloading what the cache lacks,
    /// checking what it holds) and returns where each corpus comes from. Meant to run before
    /// any model is downloaded or loaded; fails with one line listing every missing file.
    pub fn check_available(&self, needs: &[Need]) -> Result<Vec<Provenance>> {
        let mut uniq: Vec<Need> = Vec::new();
        for n in needs {
            if !uniq.contains(n) {
                uniq.push(*n);
            }
        }
        match self {
            DataSource::Local(dir) => {
                let mut missing = Vec::new();
                let mut out = Vec::new();
                for &need in &uniq {
                    match local_files(dir, need) {
                        Ok(files) => out.push((need, files)),
                        Err(pattern) => {
                            missing.push(format!("{pattern} ({} {})", need.corpus.name(), need.role.name()))
                        }
                    }
                }
                if !missing.is_empty() {
                    bail!(
                        "data directory {} lacks {}; add the file{} ({LAYOUT_HINT}), or leave out --data-dir and SPARSEGPT_MI_DATA_DIR to download the corpora from the Hugging Face hub",
                        dir.display(),
                        missing.join(", "),
                        if missing.len() == 1 { "" } else { "s" }
                    );
                }
                out.into_iter()
                    .map(|(need, files)| {
                        let files = files
                            .iter()
                            .map(|p| {
                                Ok(FileProvenance::Local { path: p.display().to_string(), sha256: sha256_file(p)? })
                            })
                            .collect::<Result<_>>()?;
                        Ok(Provenance { corpus: need.corpus.name(), role: need.role, files })
                    })
                    .collect()
            }
            DataSource::Hub(client) => Ok(resolve_hub(client, &uniq)?
                .into_iter()
                .zip(&uniq)
                .map(|(r, need)| Provenance {
                    corpus: need.corpus.name(),
                    role: need.role,
                    files: vec![FileProvenance::Hub {
                        repo: r.file.repo.to_string(),
                        revision: r.file.revision.to_string(),
                        file: r.file.path.to_string(),
                        commit: r.commit,
                        endpoint: client.config().endpoint.clone(),
                    }],
                })
                .collect()),
        }
    }

    /// The evaluation string of a corpus, as `data::eval_text` builds it from a data directory.
    pub fn eval_text(&self, corpus: Corpus) -> Result<String> {
        match self {
            DataSource::Local(dir) => data::eval_text(corpus, dir),
            DataSource::Hub(client) => {
                let r = resolve_one(client, Need::eval(corpus))?;
                read_hub(client, &r, |path| match corpus {
                    Corpus::WikiText2 => Ok(read_parquet_strings(path, "text")?.join("\n\n")),
                    Corpus::Ptb => Ok(read_parquet_strings(path, "sentence")?.join(" ")),
                    Corpus::C4 => Ok(read_gz_jsonl_texts(path, C4_EVAL_DOCS)?.join(" ")),
                })
            }
        }
    }

    /// The evaluation token stream (BOS once at the start; C4 cut to 256 windows of `seqlen`
    /// tokens), as `data::eval_tokens`.
    pub fn eval_tokens(&self, corpus: Corpus, tok: &tokenizers::Tokenizer, seqlen: SeqLen) -> Result<Vec<u32>> {
        let text = self.eval_text(corpus)?;
        let ids = crate::model::tokenizer::encode(tok, &text)?;
        Ok(data::cut_to_protocol(corpus, ids, seqlen))
    }

    /// Calibration source documents, as `data::calibration_documents`: every C4 train document
    /// in file order; WikiText-2 train rows joined with " " and PTB train sentences joined
    /// with " ", one document each.
    pub fn calibration_documents(&self, corpus: Corpus) -> Result<Vec<String>> {
        match self {
            DataSource::Local(dir) => data::calibration_documents(corpus, dir),
            DataSource::Hub(client) => {
                let r = resolve_one(client, Need::calibration(corpus))?;
                read_hub(client, &r, |path| match corpus {
                    Corpus::WikiText2 => Ok(vec![read_parquet_strings(path, "text")?.join(" ")]),
                    Corpus::Ptb => Ok(vec![read_parquet_strings(path, "sentence")?.join(" ")]),
                    Corpus::C4 => read_gz_jsonl_texts(path, usize::MAX),
                })
            }
        }
    }
}

/// The local files a need reads, or the missing path (pattern) relative to the directory.
fn local_files(dir: &Path, need: Need) -> std::result::Result<Vec<PathBuf>, &'static str> {
    let single = |rel: &'static str| {
        let p = dir.join(rel);
        if p.is_file() {
            Ok(vec![p])
        } else {
            Err(rel)
        }
    };
    match (need.corpus, need.role) {
        (Corpus::WikiText2, Role::Eval) => single("wikitext2/wiki.test.raw"),
        (Corpus::WikiText2, Role::Calibration) => single("wikitext2/wiki.train.raw"),
        (Corpus::Ptb, Role::Eval) => single("ptb/ptb.test.txt"),
        (Corpus::Ptb, Role::Calibration) => single("ptb/ptb.train.txt"),
        (Corpus::C4, Role::Eval) => data::c4_files(dir, "c4-validation").map_err(|_| "c4/c4-validation*.jsonl"),
        (Corpus::C4, Role::Calibration) => data::c4_files(dir, "c4-train").map_err(|_| "c4/c4-train*.jsonl"),
    }
}

fn resolve_one(client: &HubClient, need: Need) -> Result<Resolved> {
    Ok(resolve_hub(client, &[need])?.pop().expect("one need, one file"))
}

/// Reads a resolved hub file; a file that turns out unreadable is removed from the cache.
pub(crate) fn read_hub<T>(client: &HubClient, r: &Resolved, read: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    read(&r.path).map_err(|e| {
        let removed = !is_unsupported(&e) && client.forget(&r.path).is_ok();
        anyhow!(
            "{} (from the hub cache): {}{}",
            r.file.label(),
            one_line(&format!("{e:#}")),
            if removed { "; removed it from the cache, so the next run downloads it again" } else { "" }
        )
    })
}

/// Resolves every need to a cached file, downloading what is missing. Cached files get a
/// cheap check (parquet footer and column, first JSON line); downloads a full one.
fn resolve_hub(client: &HubClient, needs: &[Need]) -> Result<Vec<Resolved>> {
    let files: Vec<HubFile> = needs.iter().map(|&n| DatasetFile::of(n).hub_file()).collect();
    resolve_hub_files(client, &files)
}

/// [`resolve_hub`] for any hub files, in their order: cached ones checked, missing ones
/// downloaded and checked; one error listing every file that is missing offline.
pub(crate) fn resolve_hub_files(client: &HubClient, files: &[HubFile]) -> Result<Vec<Resolved>> {
    let cfg = client.config();
    let mut out = Vec::new();
    let mut missing: Vec<&HubFile> = Vec::new();
    let mut unreachable: Option<String> = None;
    for file in files {
        let repo = file.hub_repo();
        if let CacheLookup::Present { path, commit } = client.lookup(&repo, file.path) {
            if let Err(e) = quick_check(file, &path) {
                if is_unsupported(&e) {
                    bail!(
                        "{} in the hub cache {}: {}",
                        file.label(),
                        cfg.cache_dir.display(),
                        one_line(&format!("{e:#}"))
                    );
                }
                let _ = client.forget(&path);
                bail!(
                    "{} in the hub cache {} is unusable: {}; removed it, so the next run downloads it again",
                    file.label(),
                    cfg.cache_dir.display(),
                    one_line(&format!("{e:#}"))
                );
            }
            out.push(Resolved { file: *file, path, commit });
            continue;
        }
        if cfg.offline || unreachable.is_some() {
            missing.push(file);
            continue;
        }
        match client.download(&repo, file.path) {
            Ok(path) => {
                if let Err(e) = full_check(client, file, &path) {
                    if is_unsupported(&e) {
                        bail!("{} downloaded from {}: {}", file.label(), cfg.endpoint, one_line(&format!("{e:#}")));
                    }
                    let _ = client.forget(&path);
                    bail!(
                        "{} downloaded from {} is unusable: {}; removed it from the hub cache",
                        file.label(),
                        cfg.endpoint,
                        one_line(&format!("{e:#}"))
                    );
                }
                let commit = client.cached_commit(&repo).unwrap_or_default();
                out.push(Resolved { file: *file, path, commit });
            }
            Err(FetchError::Unreachable(e)) => {
                unreachable = Some(e);
                missing.push(file);
            }
            Err(e) => bail!(download_error(cfg, file, &e)),
        }
    }
    if !missing.is_empty() {
        let list = missing.iter().map(|f| f.label()).collect::<Vec<_>>().join(", ");
        let cache = cfg.cache_dir.display();
        match unreachable {
            None => bail!(
                "HF_HUB_OFFLINE is set and the hub cache {cache} lacks {list}; connect to the hub (unset HF_HUB_OFFLINE) to download {}, or pass --data-dir with local copies ({LAYOUT_HINT})",
                if missing.len() == 1 { "it" } else { "them" }
            ),
            Some(e) => bail!(
                "cannot reach the Hugging Face hub at {} ({e}) and the hub cache {cache} lacks {list}; connect to the hub (or set HF_ENDPOINT to a reachable one) to download {}, or pass --data-dir with local copies ({LAYOUT_HINT})",
                cfg.endpoint,
                if missing.len() == 1 { "it" } else { "them" }
            ),
        }
    }
    Ok(out)
}

fn download_error(cfg: &HubConfig, f: &HubFile, e: &FetchError) -> String {
    let ep = &cfg.endpoint;
    match e {
        FetchError::EntryNotFound { .. } => format!(
            "dataset '{}' has no file '{}' at revision '{}' on {ep} (HTTP 404, {}); pass --data-dir with local copies ({LAYOUT_HINT})",
            f.repo,
            f.path,
            f.revision,
            f.url(ep)
        ),
        FetchError::RepoNotFound { status } => format!(
            "dataset repository '{}' not found on {ep} (HTTP {status}); check HF_ENDPOINT, set HF_TOKEN if it is private, or pass --data-dir with local copies ({LAYOUT_HINT})",
            f.repo
        ),
        FetchError::RevisionNotFound { status } => format!(
            "dataset '{}' has no revision '{}' on {ep} (HTTP {status}); pass --data-dir with local copies ({LAYOUT_HINT})",
            f.repo, f.revision
        ),
        FetchError::Interrupted(why) => format!(
            "downloading {} from {ep} broke off ({why}); the partial download stays as a .part file in {}, never used as the file, and the next run resumes it",
            f.label(),
            cfg.cache_dir.display()
        ),
        FetchError::BadPartial => format!(
            "downloading {} from {ep} cannot resume: the partial download in {} (blobs/*.part) is as long as the file or longer; delete that .part file and run again",
            f.label(),
            cfg.cache_dir.join(f.hub_repo().folder_name()).display()
        ),
        other => format!("downloading {} from {ep} failed: {other}", f.label()),
    }
}

/// The check of a cached file on every run: cheap, structure only.
fn quick_check(f: &HubFile, path: &Path) -> Result<()> {
    match f.format {
        Format::Parquet { column } => check_parquet_column(path, column),
        Format::JsonLinesGz => read_gz_jsonl_texts(path, 1).map(drop),
        Format::ParquetRows { columns } => check_parquet_columns(path, columns),
    }
}

/// The check of a fresh download: sha256 against an LFS etag, then the whole content.
fn full_check(client: &HubClient, f: &HubFile, path: &Path) -> Result<()> {
    client.check_lfs_sha256(path)?;
    match f.format {
        Format::Parquet { column } => read_parquet_strings(path, column).map(drop),
        Format::JsonLinesGz => check_gz_jsonl(path),
        Format::ParquetRows { columns } => read_parquet_rows(path, columns).map(drop),
    }
}

pub use crate::hub::sha256_file;

// ---------------------------------------------------------------------------------------------
// Parquet: one string column.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_files_one_per_corpus_and_role() {
        for c in Corpus::ALL {
            for r in [Role::Eval, Role::Calibration] {
                let f = DatasetFile::of(Need { corpus: c, role: r });
                assert_eq!((f.corpus, f.role), (c, r));
            }
        }
        let ptb = DatasetFile::of(Need::eval(Corpus::Ptb));
        assert_eq!(
            ptb.url("https://huggingface.co/"),
            "https://huggingface.co/datasets/ptb-text-only/ptb_text_only/resolve/refs%2Fconvert%2Fparquet/penn_treebank/test/0000.parquet"
        );
        assert_eq!(ptb.hub_repo().folder_name(), "datasets--ptb-text-only--ptb_text_only");
    }

    #[test]
    fn needs_put_calibration_first_and_drop_repeats() {
        let n = needs(&[Corpus::WikiText2, Corpus::C4, Corpus::WikiText2], Some(Corpus::C4));
        assert_eq!(n, vec![Need::calibration(Corpus::C4), Need::eval(Corpus::WikiText2), Need::eval(Corpus::C4)]);
    }

    #[test]
    fn data_dir_flag_then_env_then_hub() {
        let hub = HubConfig::new("http://127.0.0.1:9", "/tmp/x").with_offline(true);
        let pick = |a: Option<&str>, b: Option<&str>| {
            DataSource::choose(a.map(PathBuf::from), b.map(PathBuf::from), hub.clone()).unwrap()
        };
        assert!(matches!(pick(Some("/a"), Some("/b")), DataSource::Local(p) if p == Path::new("/a")));
        assert!(matches!(pick(None, Some("/b")), DataSource::Local(p) if p == Path::new("/b")));
        assert!(matches!(pick(None, Some("")), DataSource::Hub(_)));
        assert!(matches!(pick(None, None), DataSource::Hub(_)));
    }
}
