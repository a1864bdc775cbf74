//! Where a model's files come from: a local directory, or the Hugging Face hub through
//! hf-hub's standard cache (HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN are honoured,
//! see `crate::hub`).

use crate::hub::{CacheLookup, FetchError, HubClient, HubConfig};
use crate::protocol::SeqLen;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The tokenizer of a checkpoint: a fast-tokenizer file, or GPT-2 style BPE files
/// (facebook/opt-* repositories ship only vocab.json + merges.txt).
#[derive(Debug, Clone)]
pub enum TokenizerFiles {
    Json(PathBuf),
    VocabMerges { vocab: PathBuf, merges: PathBuf },
}

impl TokenizerFiles {
    /// The file(s), for messages.
    pub fn describe(&self) -> String {
        match self {
            TokenizerFiles::Json(p) => p.display().to_string(),
            TokenizerFiles::VocabMerges { vocab, merges } => format!("{} and {}", vocab.display(), merges.display()),
        }
    }
}

/// Every file a model run needs, resolved to local paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What the user named (directory or hub id), for reports.
    pub source: String,
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    pub tokenizer: TokenizerFiles,
    /// The other small files (tokenizer config, special tokens) worth copying on save.
    pub extra: Vec<PathBuf>,
}

const EXTRA_FILES: [&str; 5] =
    ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"];

/// True where `spec` names a filesystem path rather than an `org/name` hub id.
pub fn looks_like_path(spec: &str) -> bool {
    Path::new(spec).exists()
        || spec.starts_with('/')
        || spec.starts_with('.')
        || spec.starts_with('~')
        || spec.matches('/').count() != 1
}

/// A place files can be fetched from by name; `Ok(None)` means "not there".
trait FileSource {
    fn fetch(&self, name: &str) -> Result<Option<PathBuf>>;
    fn describe(&self) -> String;
    /// Said after "… has no config.json; ".
    fn missing_hint(&self) -> String {
        "is it a Hugging Face model?".to_string()
    }
}

struct LocalDir(PathBuf);

impl FileSource for LocalDir {
    fn fetch(&self, name: &str) -> Result<Option<PathBuf>> {
        let p = self.0.join(name);
        Ok(p.is_file().then_some(p))
    }
    fn describe(&self) -> String {
        format!("directory {}", self.0.display())
    }
}

/// hf-hub's cache only, for HF_HUB_OFFLINE=1.
struct HubCache {
    id: String,
    client: HubClient,
    repo: hf_hub::Repo,
}

impl FileSource for HubCache {
    fn fetch(&self, name: &str) -> Result<Option<PathBuf>> {
        Ok(match self.client.lookup(&self.repo, name) {
            CacheLookup::Present { path, .. } => Some(checked_cache_copy(&self.id, name, path)?),
            _ => None,
        })
    }
    fn describe(&self) -> String {
        format!("hub cache of '{}' (HF_HUB_OFFLINE=1)", self.id)
    }
    fn missing_hint(&self) -> String {
        let what = if self.client.has_snapshot(&self.repo) {
            "its cached snapshot lacks the file".to_string()
        } else {
            format!("nothing of '{}' is in the hub cache {}", self.id, self.client.config().cache_dir.display())
        };
        format!("{what}; connect to the hub (unset HF_HUB_OFFLINE) to download it, or pass a local model directory")
    }
}

/// The hub through the cache. Files the cache holds, or knows to be absent (`.no_exist`,
/// recorded on a 404), are answered without a request; when the hub cannot be reached and the
/// cache holds a snapshot of the repo, the cache answers the rest (a file it lacks counts as
/// absent), so that a cached model keeps working without HF_HUB_OFFLINE.
struct HubOnline {
    id: String,
    client: HubClient,
    repo: hf_hub::Repo,
    /// Set once the hub proved unreachable: the connection error.
    cache_only: std::cell::RefCell<Option<String>>,
}

impl FileSource for HubOnline {
    fn fetch(&self, name: &str) -> Result<Option<PathBuf>> {
        match self.client.lookup(&self.repo, name) {
            CacheLookup::Present { path, .. } => return Ok(Some(checked_cache_copy(&self.id, name, path)?)),
            CacheLookup::Absent { .. } => return Ok(None),
            CacheLookup::Unknown => {}
        }
        if self.cache_only.borrow().is_some() {
            return Ok(None);
        }
        let endpoint = &self.client.config().endpoint;
        match self.client.download(&self.repo, name) {
            Ok(p) => match verify_download(&self.client, name, &p) {
                Ok(()) => Ok(Some(p)),
                Err(e) => {
                    let removed = self.client.forget(&p).is_ok();
                    bail!(
                        "'{}/{name}' downloaded from {endpoint} is unusable: {}{}",
                        self.id,
                        crate::hub::one_line(&format!("{e:#}")),
                        if removed { "; removed it from the hub cache, so the next run downloads it again" } else { "" }
                    )
                }
            },
            Err(FetchError::EntryNotFound { .. }) => Ok(None),
            Err(e @ (FetchError::RepoNotFound { .. } | FetchError::Denied { .. })) => bail!(
                "hub refused access to '{}' ({name}): {e}; check the model id, or set HF_TOKEN for a gated model",
                self.id
            ),
            Err(FetchError::Unreachable(e)) if self.client.has_snapshot(&self.repo) => {
                *self.cache_only.borrow_mut() = Some(e);
                Ok(None)
            }
            Err(FetchError::Unreachable(e)) => bail!(
                "cannot reach the Hugging Face hub at {endpoint} for '{}/{name}': {e}; nothing of '{}' is in the hub cache {}: connect to the hub, or pass a local model directory",
                self.id,
                self.id,
                self.client.config().cache_dir.display()
            ),
            Err(other) => bail!("downloading '{}/{name}' from {endpoint} failed: {other}", self.id),
        }
    }
    fn describe(&self) -> String {
        match &*self.cache_only.borrow() {
            Some(e) => {
                format!("hub cache of '{}' (the hub at {} is unreachable: {e})", self.id, self.client.config().endpoint)
            }
            None => format!("hub repository '{}' at {}", self.id, self.client.config().endpoint),
        }
    }
}

/// The check of a fresh download before it is used: its sha256 against the hub's LFS etag,
/// then its structure ([`check_structure`]).
fn verify_download(client: &HubClient, name: &str, path: &Path) -> Result<()> {
    client.check_lfs_sha256(path)?;
    check_structure(name, path)
}

/// A hub cache copy found on a later run, checked for structure (cheap: no sha256 of the
/// weights) before any work; a damaged one is named with the command that clears it.
fn checked_cache_copy(id: &str, name: &str, path: PathBuf) -> Result<PathBuf> {
    match check_structure(name, &path) {
        Ok(()) => Ok(path),
        Err(e) => {
            let e = anyhow::anyhow!(
                "'{id}/{name}' in the hub cache is damaged: {}",
                crate::hub::one_line(&format!("{e:#}"))
            );
            Err(crate::hub::with_cache_hint(e, &path))
        }
    }
}

/// A model file's structure where it has one that can be read without loading the model:
/// JSON files parse; a safetensors file's header describes exactly its bytes; a PyTorch zip
/// opens, its pickle walks cleanly and its tensor records fit their storages
/// (`model::pickle_check`). Text files (merges.txt) and tokenizer.model have none read here.
pub fn check_structure(name: &str, path: &Path) -> Result<()> {
    if name.ends_with(".json") {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        serde_json::from_reader::<_, serde::de::IgnoredAny>(std::io::BufReader::new(f))
            .map_err(|e| anyhow::anyhow!("not valid JSON ({e})"))?;
    } else if name.ends_with(".safetensors") {
        super::weights::check_safetensors_structure(path)
            .map_err(|e| anyhow::anyhow!("not a readable safetensors file ({e:#})"))?;
    } else if super::weights::is_pytorch_file(name) {
        super::pickle_check::check_structure(path)
            .map_err(|e| anyhow::anyhow!("not a readable PyTorch checkpoint ({e:#})"))?;
    }
    Ok(())
}

/// Resolves a model directory or hub id to local files (hub settings from the environment) for a
/// run over `seqlen`-token windows: a model that cannot attend over them is refused before any
/// weight is fetched.
pub fn resolve_model(spec: &str, seqlen: SeqLen) -> Result<ModelFiles> {
    if looks_like_path(spec) {
        return resolve_model_with(spec, &HubConfig::new(crate::hub::DEFAULT_ENDPOINT, ""), seqlen);
    }
    resolve_model_with(spec, &HubConfig::from_env(), seqlen)
}

/// [`resolve_model`] with explicit hub settings.
pub fn resolve_model_with(spec: &str, hub: &HubConfig, seqlen: SeqLen) -> Result<ModelFiles> {
    if looks_like_path(spec) {
        let dir = PathBuf::from(spec);
        if !dir.exists() {
            bail!("model directory '{spec}' does not exist; give an existing directory or a hub id such as facebook/opt-125m");
        }
        if !dir.is_dir() {
            bail!("model path '{spec}' is not a directory; give the folder holding config.json and the weights");
        }
        return resolve_from(spec, &LocalDir(dir), seqlen);
    }
    let client = HubClient::new(hub.clone())?;
    let repo = hf_hub::Repo::model(spec.to_string());
    if hub.offline {
        return resolve_from(spec, &HubCache { id: spec.to_string(), client, repo }, seqlen);
    }
    resolve_from(spec, &HubOnline { id: spec.to_string(), client, repo, cache_only: Default::default() }, seqlen)
}

fn resolve_from(spec: &str, src: &dyn FileSource, seqlen: SeqLen) -> Result<ModelFiles> {
    let config = src
        .fetch("config.json")?
        .with_context(|| format!("{} has no config.json; {}", src.describe(), src.missing_hint()))?;
    // Another family's config and tokenizer are checked before any weight is fetched.
    let early_tokenizer = match check_config_early(&config, seqlen)? {
        Some(_) => Some(json_tokenizer(src)?),
        None => None,
    };
    let weights = if let Some(p) = src.fetch("model.safetensors")? {
        vec![p]
    } else if let Some(index) = src.fetch("model.safetensors.index.json")? {
        let mut files = Vec::new();
        for shard in super::weights::shard_files(&index)? {
            files.push(
                src.fetch(&shard)?
                    .with_context(|| format!("{} lacks shard {shard} named by its index", src.describe()))?,
            );
        }
        files
    } else if let Some(p) = src.fetch("pytorch_model.bin")? {
        vec![p]
    } else {
        bail!(
            "{} has no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)",
            src.describe()
        );
    };
    let tokenizer = if let Some(t) = early_tokenizer {
        t
    } else if let Some(p) = src.fetch("tokenizer.json")? {
        TokenizerFiles::Json(p)
    } else {
        match (src.fetch("vocab.json")?, src.fetch("merges.txt")?) {
            (Some(vocab), Some(merges)) => TokenizerFiles::VocabMerges { vocab, merges },
            _ => bail!("{} has no tokenizer: it needs tokenizer.json, or vocab.json and merges.txt", src.describe()),
        }
    };
    let mut extra = Vec::new();
    for name in EXTRA_FILES {
        if let Some(p) = src.fetch(name)? {
            extra.push(p);
        }
    }
    Ok(ModelFiles { source: spec.to_string(), config, weights, tokenizer, extra })
}

/// The family of a config.json that is not OPT's, read and checked (refusals naming the config
/// key); `None` for OPT, whose config is checked when the model loads, as it always was. Any
/// family's config that reads is checked against the run's window length here.
fn check_config_early(config: &Path, seqlen: SeqLen) -> Result<Option<&'static super::Family>> {
    let value: Option<serde_json::Value> =
        std::fs::read_to_string(config).ok().and_then(|t| serde_json::from_str(&t).ok());
    let model_type = value.as_ref().and_then(|v| v.get("model_type")).and_then(|v| v.as_str());
    let fits = |c: &super::DecoderConfig| c.check_sequence_length(seqlen).with_context(|| config.display().to_string());
    if value.is_none() || model_type == Some("opt") {
        if let Ok(opt) = super::config::OptConfig::from_file(config) {
            fits(&opt.into())?;
        }
        return Ok(None);
    }
    let c = super::read_config(config)?;
    fits(&c)?;
    Ok(Some(c.family).filter(|f| !f.is_opt()))
}

/// The rotary families tokenize with their `tokenizer.json` (normalizer, pre-tokenizer and
/// the post-processor that adds their BOS); a sentencepiece `tokenizer.model` alone is refused.
fn json_tokenizer(src: &dyn FileSource) -> Result<TokenizerFiles> {
    if let Some(p) = src.fetch("tokenizer.json")? {
        return Ok(TokenizerFiles::Json(p));
    }
    if src.fetch("tokenizer.model")?.is_some() {
        bail!(
            "{} has tokenizer.model (sentencepiece) but no tokenizer.json: this tool reads fast tokenizers only; save one with transformers (AutoTokenizer.from_pretrained(...).save_pretrained(dir)) and add it",
            src.describe()
        );
    }
    bail!("{} has no tokenizer.json", src.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(!looks_like_path("facebook/opt-125m"));
        assert!(looks_like_path("./facebook/opt-125m"));
        assert!(looks_like_path("../shared/fixtures/opt-mini-a"));
        assert!(looks_like_path("/tmp/model"));
        assert!(looks_like_path("opt-125m"));
    }
}
