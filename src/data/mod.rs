//! The evaluation corpora and the calibration documents. This module reads them from a data
//! directory; `source` chooses between a data directory and the Hugging Face hub.
//!
//! Layout (that of ../shared/data, see its SOURCES.md):
//! - `wikitext2/wiki.test.raw`: WikiText-2 raw test split, one row a line, empty rows as " "
//! - `ptb/ptb.test.txt`: Mikolov PTB test split
//! - `c4/c4-validation*.jsonl`: C4 en validation documents, JSON lines with "text", in
//!   file-name order
//! - `c4/c4-train*.jsonl`: C4 en train documents, likewise (calibration source)
//!
//! Each corpus is turned into one string exactly as SparseGPT/GPTQ's datautils do.

pub mod calibration;
pub mod formats;
pub mod py_random;
pub mod source;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub use crate::protocol::SeqLen;
/// C4 evaluation: the first 1100 validation documents, at most 256 windows (of the run's length).
pub const C4_EVAL_DOCS: usize = 1100;
pub const C4_EVAL_WINDOWS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Corpus {
    WikiText2,
    Ptb,
    C4,
}

impl Corpus {
    pub const ALL: [Corpus; 3] = [Corpus::WikiText2, Corpus::Ptb, Corpus::C4];

    pub fn name(self) -> &'static str {
        match self {
            Corpus::WikiText2 => "wikitext2",
            Corpus::Ptb => "ptb",
            Corpus::C4 => "c4",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name.trim() {
            "wikitext2" => Ok(Corpus::WikiText2),
            "ptb" => Ok(Corpus::Ptb),
            "c4" => Ok(Corpus::C4),
            other => bail!("unknown dataset '{other}': choose from wikitext2, ptb, c4"),
        }
    }

    /// Parses a comma-separated list such as "wikitext2,ptb,c4"; empty means none.
    pub fn parse_list(list: &str) -> Result<Vec<Self>> {
        let mut out = Vec::new();
        for name in list.split(',').filter(|s| !s.trim().is_empty()) {
            let c = Corpus::parse(name)?;
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }
}

fn read(path: &Path, what: &str) -> Result<String> {
    if !path.is_file() {
        bail!(
            "{what} not found: expected {} (see README.md, 'Data directory layout', or pass --data-dir)",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The JSON-lines files of `dir/c4` whose names start with `prefix`, sorted by name.
pub fn c4_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let c4 = dir.join("c4");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&c4)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let n = p.file_name().and_then(|s| s.to_str()).unwrap_or("");
                    n.starts_with(prefix) && n.ends_with(".jsonl")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        bail!(
            "C4 data not found: expected {}/{prefix}*.jsonl (see README.md, 'Data directory layout', or pass --data-dir)",
            c4.display()
        );
    }
    Ok(files)
}

/// Reads the "text" field of up to `limit` JSON lines from the files, in order.
fn read_jsonl_texts(files: &[PathBuf], limit: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            if out.len() == limit {
                return Ok(out);
            }
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", f.display(), i + 1))?;
            let t = v
                .get("text")
                .and_then(|t| t.as_str())
                .with_context(|| format!("{} line {}: no \"text\" field", f.display(), i + 1))?;
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// WikiText-2 test as datautils builds it: HF rows ("line\n", or "" for blank lines)
/// joined with "\n\n".
pub fn wikitext2_text(raw: &str) -> String {
    wikitext2_rows(raw).join("\n\n")
}

/// The rows of the HF `wikitext-2-raw-v1` dataset for a raw file.
fn wikitext2_rows(raw: &str) -> Vec<String> {
    raw.split_inclusive('\n')
        .map(|line| {
            let body = line.strip_suffix('\n').unwrap_or(line);
            if body.trim().is_empty() {
                String::new()
            } else {
                format!("{body}\n")
            }
        })
        .collect()
}

/// PTB test as datautils builds it: `ptb_text_only` sentences (stripped lines) joined by " ".
pub fn ptb_text(raw: &str) -> String {
    raw.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// The evaluation string of a corpus.
pub fn eval_text(corpus: Corpus, dir: &Path) -> Result<String> {
    match corpus {
        Corpus::WikiText2 => Ok(wikitext2_text(&read(&dir.join("wikitext2/wiki.test.raw"), "WikiText-2 test")?)),
        Corpus::Ptb => Ok(ptb_text(&read(&dir.join("ptb/ptb.test.txt"), "PTB test")?)),
        Corpus::C4 => {
            let docs = read_jsonl_texts(&c4_files(dir, "c4-validation")?, C4_EVAL_DOCS)?;
            Ok(docs.join(" "))
        }
    }
}

/// The evaluation token stream of a corpus (BOS once at the start; C4 cut to 256 windows of
/// `seqlen` tokens).
pub fn eval_tokens(corpus: Corpus, dir: &Path, tok: &tokenizers::Tokenizer, seqlen: SeqLen) -> Result<Vec<u32>> {
    let text = eval_text(corpus, dir)?;
    let ids = crate::model::tokenizer::encode(tok, &text)?;
    Ok(cut_to_protocol(corpus, ids, seqlen))
}

/// The published protocol's cut of a corpus's token stream: C4 to its first 256 windows.
pub fn cut_to_protocol(corpus: Corpus, mut ids: Vec<u32>, seqlen: SeqLen) -> Vec<u32> {
    if corpus == Corpus::C4 {
        ids.truncate(C4_EVAL_WINDOWS.saturating_mul(seqlen.get()));
    }
    ids
}

/// Calibration source documents, in file order.
pub fn calibration_documents(source: Corpus, dir: &Path) -> Result<Vec<String>> {
    match source {
        Corpus::C4 => read_jsonl_texts(&c4_files(dir, "c4-train")?, usize::MAX),
        // datautils draws WikiText-2/PTB calibration windows from the train split's
        // single string; with only the test/valid files shipped, the caller gets one document.
        // (datautils joins the train rows with " ", unlike the test rows.)
        Corpus::WikiText2 => {
            Ok(vec![wikitext2_rows(&read(&dir.join("wikitext2/wiki.train.raw"), "WikiText-2 train (calibration)")?)
                .join(" ")])
        }
        Corpus::Ptb => Ok(vec![ptb_text(&read(&dir.join("ptb/ptb.train.txt"), "PTB train (calibration)")?)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wikitext_rows_join_like_datautils() {
        // HF rows: " = A = \n", "", " text \n"  → joined with "\n\n".
        let raw = " = A = \n \n text \n";
        assert_eq!(wikitext2_text(raw), " = A = \n\n\n\n\n text \n");
    }

    #[test]
    fn c4_keeps_256_windows_of_the_runs_length_and_the_others_everything() {
        let ids: Vec<u32> = (0..3000).collect();
        let seqlen = SeqLen::new(8).unwrap();
        assert_eq!(cut_to_protocol(Corpus::C4, ids.clone(), seqlen), ids[..256 * 8].to_vec());
        assert_eq!(cut_to_protocol(Corpus::C4, ids.clone(), SeqLen::PUBLISHED).len(), 3000, "shorter than 256 windows");
        assert_eq!(cut_to_protocol(Corpus::WikiText2, ids.clone(), seqlen).len(), 3000);
        assert_eq!(cut_to_protocol(Corpus::Ptb, ids, seqlen).len(), 3000);
    }

    #[test]
    fn ptb_lines_are_stripped_and_space_joined() {
        assert_eq!(ptb_text(" a b \n c <unk> \n"), "a b c <unk>");
    }

    #[test]
    fn dataset_lists_parse_and_reject_unknown_names() {
        assert_eq!(Corpus::parse_list("wikitext2,c4").unwrap(), vec![Corpus::WikiText2, Corpus::C4]);
        assert_eq!(Corpus::parse_list("").unwrap(), vec![]);
        let e = Corpus::parse_list("wikitext2,lambada").unwrap_err().to_string();
        assert!(e.contains("unknown dataset 'lambada'"), "{e}");
    }
}
