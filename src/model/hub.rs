//! Where a model's files come from: a local directory, or the Hugging Face hub through
//! hf-hub's standard cache (HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE are honoured).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The tokenizer of a checkpoint: a fast-tokenizer file, or GPT-2 style BPE files
/// (facebook/opt-* repositories ship only vocab.json + merges.txt).
#[derive(Debug, Clone)]
pub enum TokenizerFiles {
    Json(PathBuf),
    VocabMerges { vocab: PathBuf, merges: PathBuf },
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
    repo: hf_hub::CacheRepo,
}

impl FileSource for HubCache {
    fn fetch(&self, name: &str) -> Result<Option<PathBuf>> {
        Ok(self.repo.get(name))
    }
    fn describe(&self) -> String {
        format!("hub cache of '{}' (HF_HUB_OFFLINE=1)", self.id)
    }
}

struct HubOnline {
    id: String,
    endpoint: String,
    repo: hf_hub::api::sync::ApiRepo,
}

impl FileSource for HubOnline {
    fn fetch(&self, name: &str) -> Result<Option<PathBuf>> {
        match self.repo.get(name) {
            Ok(p) => Ok(Some(p)),
            Err(hf_hub::api::sync::ApiError::RequestError(e)) => match *e {
                ureq::Error::Status(404, _) => Ok(None),
                ureq::Error::Status(401 | 403, _) => bail!(
                    "hub refused access to '{}' ({name}); check the model id, or set HF_TOKEN for a gated model",
                    self.id
                ),
                other => bail!(
                    "cannot reach the Hugging Face hub at {} for '{}/{name}': {}; pass a local model directory, or set HF_HUB_OFFLINE=1 to use the cache",
                    self.endpoint,
                    self.id,
                    one_line(&other.to_string())
                ),
            },
            Err(other) => bail!(
                "downloading '{}/{name}' from {} failed: {}",
                self.id,
                self.endpoint,
                one_line(&other.to_string())
            ),
        }
    }
    fn describe(&self) -> String {
        format!("hub repository '{}' at {}", self.id, self.endpoint)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn offline_mode() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").ok().as_deref().map(str::to_ascii_lowercase).as_deref(),
        Some("1" | "true" | "yes" | "on")
    )
}

/// Resolves a model directory or hub id to local files.
pub fn resolve_model(spec: &str) -> Result<ModelFiles> {
    if looks_like_path(spec) {
        let dir = PathBuf::from(spec);
        if !dir.exists() {
            bail!("model directory '{spec}' does not exist; give an existing directory or a hub id such as facebook/opt-125m");
        }
        if !dir.is_dir() {
            bail!("model path '{spec}' is not a directory; give the folder holding config.json and the weights");
        }
        return resolve_from(spec, &LocalDir(dir));
    }
    if offline_mode() {
        let cache = hf_hub::Cache::from_env();
        let repo = cache.model(spec.to_string());
        return resolve_from(spec, &HubCache { id: spec.to_string(), repo });
    }
    let builder =
        hf_hub::api::sync::ApiBuilder::from_env().with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
    let api =
        builder.build().map_err(|e| anyhow::anyhow!("cannot set up the hub client: {}", one_line(&e.to_string())))?;
    let repo = api.model(spec.to_string());
    resolve_from(spec, &HubOnline { id: spec.to_string(), endpoint, repo })
}

fn resolve_from(spec: &str, src: &dyn FileSource) -> Result<ModelFiles> {
    let config = src
        .fetch("config.json")?
        .with_context(|| format!("{} has no config.json; is it a Hugging Face model?", src.describe()))?;
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
    let tokenizer = if let Some(p) = src.fetch("tokenizer.json")? {
        TokenizerFiles::Json(p)
    } else {
        match (src.fetch("vocab.json")?, src.fetch("merges.txt")?) {
            (Some(vocab), Some(merges)) => TokenizerFiles::VocabMerges { vocab, merges },
            _ => bail!("{} has no tokenizer: it needs tokenizer.json, or vocab.json and merges.txt", src.describe()),
        }
    };
    let mut extra = Vec::new();
    for name in EXTRA_FILES {
        if let Some(p) = src.fetch(name).ok().flatten() {
            extra.push(p);
        }
    }
    Ok(ModelFiles { source: spec.to_string(), config, weights, tokenizer, extra })
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
