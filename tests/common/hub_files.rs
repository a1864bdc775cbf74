//! Test-time converter: the hub's dataset files (parquet for WikiText-2 and PTB, gzipped JSON
//! lines for C4), written with the `parquet` and `flate2` crates from the local files of
//! ../shared/data, and a data directory holding the same content in the local layout.
//!
//! How rows are derived (../shared/data/SOURCES.md and the HF loading scripts):
//! - WikiText-2 rows: "" for a blank line, else the line plus "\n" (wiki.test.raw; no raw train
//!   split is shipped, so the "train" split here is made from wiki.valid.tokens);
//! - PTB sentences: each line of ptb.test.txt stripped (ptb_text_only's `line.strip()`);
//!   "train" is made from ptb.valid.txt;
//! - C4: the JSON lines as they are, one gzip file per split (validation = part0 + part1).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub const WIKITEXT: &str = "Salesforce/wikitext";
pub const PTB: &str = "ptb-text-only/ptb_text_only";
pub const PTB_REVISION: &str = "refs/convert/parquet";
pub const C4: &str = "allenai/c4";

pub const WIKI_TEST: &str = "wikitext-2-raw-v1/test-00000-of-00001.parquet";
pub const WIKI_TRAIN: &str = "wikitext-2-raw-v1/train-00000-of-00001.parquet";
pub const PTB_TEST: &str = "penn_treebank/test/0000.parquet";
pub const PTB_TRAIN: &str = "penn_treebank/train/0000.parquet";
pub const C4_VALID: &str = "en/c4-validation.00000-of-00008.json.gz";
pub const C4_TRAIN: &str = "en/c4-train.00000-of-01024.json.gz";

/// A one-column parquet file of optional strings (snappy, dictionary pages, row groups of
/// `rows_per_group`), as pyarrow/datasets write `optional binary (String)` columns.
pub fn parquet_strings(column: &str, values: &[Option<String>], rows_per_group: usize) -> Vec<u8> {
    parquet_strings_with(column, values, rows_per_group, parquet::basic::Compression::SNAPPY)
}

pub fn parquet_strings_with(
    column: &str,
    values: &[Option<String>],
    rows_per_group: usize,
    compression: parquet::basic::Compression,
) -> Vec<u8> {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(&format!(
            "message schema {{ optional binary {column} (STRING); }}"
        ))
        .unwrap(),
    );
    let props = Arc::new(WriterProperties::builder().set_compression(compression).build());
    let mut w = SerializedFileWriter::new(Vec::new(), schema, props).unwrap();
    for chunk in values.chunks(rows_per_group.max(1)) {
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let vals: Vec<ByteArray> = chunk.iter().flatten().map(|s| ByteArray::from(s.as_bytes().to_vec())).collect();
        let defs: Vec<i16> = chunk.iter().map(|v| v.is_some() as i16).collect();
        col.typed::<ByteArrayType>().write_batch(&vals, Some(&defs), None).unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.into_inner().unwrap()
}

pub fn strings_parquet(column: &str, rows: &[String]) -> Vec<u8> {
    let v: Vec<Option<String>> = rows.iter().cloned().map(Some).collect();
    parquet_strings(column, &v, 1000)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// HF wikitext rows of a raw file (SOURCES.md: row = "" if line.strip()=="" else line+"\n").
pub fn wikitext_rows(raw: &str) -> Vec<String> {
    raw.split_inclusive('\n')
        .map(|l| {
            let body = l.strip_suffix('\n').unwrap_or(l);
            if body.trim().is_empty() {
                String::new()
            } else {
                format!("{body}\n")
            }
        })
        .collect()
}

/// ptb_text_only sentences: every line stripped.
pub fn ptb_sentences(raw: &str) -> Vec<String> {
    raw.lines().map(|l| l.trim().to_string()).collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A data directory with the content the hub files are made from: ../shared/data's files plus
/// wiki.train.raw (= wiki.valid.tokens) and ptb.train.txt (= ptb.valid.txt). Built once per
/// test binary under CARGO_TARGET_TMPDIR.
pub fn data_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = super::data_dir();
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Earlier runs' copies (one per process), once they are an hour old.
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if e.file_name().to_string_lossy().starts_with("hub_data_dir_") && old.is_some_and(|a| a.as_secs() > 3600) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dst = tmp.join(format!("hub_data_dir_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dst);
        for sub in ["wikitext2", "ptb", "c4"] {
            std::fs::create_dir_all(dst.join(sub)).unwrap();
        }
        let copy = |from: &str, to: &str| {
            std::fs::copy(src.join(from), dst.join(to)).unwrap_or_else(|e| panic!("{from}: {e}"));
        };
        copy("wikitext2/wiki.test.raw", "wikitext2/wiki.test.raw");
        copy("wikitext2/wiki.valid.tokens", "wikitext2/wiki.train.raw");
        copy("ptb/ptb.test.txt", "ptb/ptb.test.txt");
        copy("ptb/ptb.valid.txt", "ptb/ptb.train.txt");
        for e in std::fs::read_dir(src.join("c4")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if name.ends_with(".jsonl") {
                copy(&format!("c4/{name}"), &format!("c4/{name}"));
            }
        }
        dst
    })
}

/// The C4 JSON-lines files of the data dir whose names start with `prefix`, in name order,
/// concatenated.
fn c4_concat(dir: &Path, prefix: &str) -> Vec<u8> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join("c4"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".jsonl")
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let mut b = std::fs::read(n).unwrap();
        if !b.ends_with(b"\n") {
            b.push(b'\n');
        }
        out.extend(b);
    }
    out
}

/// A served repo: (repo id, revision, [(path, bytes)]).
pub type RepoFiles = (&'static str, &'static str, Vec<(String, Vec<u8>)>);

/// The hub files, made once, for the three dataset repos.
pub fn hub_repos() -> &'static Vec<RepoFiles> {
    static FILES: OnceLock<Vec<RepoFiles>> = OnceLock::new();
    FILES.get_or_init(|| {
        let d = data_dir();
        let wiki_test = strings_parquet("text", &wikitext_rows(&read(&d.join("wikitext2/wiki.test.raw"))));
        let wiki_train = strings_parquet("text", &wikitext_rows(&read(&d.join("wikitext2/wiki.train.raw"))));
        let ptb_test = strings_parquet("sentence", &ptb_sentences(&read(&d.join("ptb/ptb.test.txt"))));
        let ptb_train = strings_parquet("sentence", &ptb_sentences(&read(&d.join("ptb/ptb.train.txt"))));
        let c4_valid = gzip(&c4_concat(d, "c4-validation"));
        let c4_train = gzip(&c4_concat(d, "c4-train"));
        vec![
            (WIKITEXT, "main", vec![(WIKI_TEST.into(), wiki_test), (WIKI_TRAIN.into(), wiki_train)]),
            (PTB, PTB_REVISION, vec![(PTB_TEST.into(), ptb_test), (PTB_TRAIN.into(), ptb_train)]),
            (C4, "main", vec![(C4_VALID.into(), c4_valid), (C4_TRAIN.into(), c4_train)]),
        ]
    })
}

/// The bytes of one hub file.
pub fn hub_file(path: &str) -> Vec<u8> {
    hub_repos()
        .iter()
        .flat_map(|(_, _, files)| files.iter())
        .find(|(p, _)| p == path)
        .map(|(_, b)| b.clone())
        .expect("a hub file")
}

/// Serves the three dataset repos on `server`.
pub fn serve_all(server: &super::hub_server::HubServer) {
    for (repo, rev, files) in hub_repos() {
        server.add_dataset(repo, rev, files.clone());
    }
}
