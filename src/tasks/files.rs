//! Where each task's documents come from: the parquet file of the dataset repo lm-eval loads
//! (its `dataset_path` / `dataset_name`, the split it evaluates), at a recorded revision,
//! through the hub cache as the corpora are (checked on download: sha256 against the LFS
//! etag, then every row read); or the same file in a data directory as
//! `DIR/tasks/<task>.parquet`.
//!
//! | task | hub dataset @ revision | file (split) |
//! |---|---|---|
//! | piqa | baber/piqa @ refs/convert/parquet | default/validation/0000.parquet |
//! | arc_easy | allenai/ai2_arc @ 210d026f… | ARC-Easy/test-00000-of-00001.parquet |
//! | arc_challenge | allenai/ai2_arc @ 210d026f… | ARC-Challenge/test-00000-of-00001.parquet |
//! | hellaswag | Rowan/hellaswag @ 218ec52e… | data/validation-00000-of-00001.parquet |
//! | winogrande | allenai/winogrande @ 01e74176… | winogrande_xl/validation-00000-of-00001.parquet |
//! | boolq | aps/super_glue @ 3de24cf8… | boolq/validation-00000-of-00001.parquet |
//! | rte | nyu-mll/glue @ main | rte/validation-00000-of-00001.parquet |
//! | openbookqa | allenai/openbookqa @ main | main/test-00000-of-00001.parquet |
//! | lambada_openai | EleutherAI/lambada_openai @ refs/convert/parquet | default/test/0000.parquet |

use super::items::{self, required_columns, Item};
use super::Task;
use crate::data::formats::read_parquet_rows;
use crate::data::source::{read_hub, resolve_hub_files, sha256_file, DataSource, FileProvenance, Format, HubFile};
use crate::hub::one_line;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// The hub file a task reads.
pub fn hub_file(task: Task) -> HubFile {
    let (repo, revision, path) = match task {
        Task::Piqa => ("baber/piqa", "refs/convert/parquet", "default/validation/0000.parquet"),
        Task::ArcEasy => {
            ("allenai/ai2_arc", "210d026faf9955653af8916fad021475a3f00453", "ARC-Easy/test-00000-of-00001.parquet")
        }
        Task::ArcChallenge => {
            ("allenai/ai2_arc", "210d026faf9955653af8916fad021475a3f00453", "ARC-Challenge/test-00000-of-00001.parquet")
        }
        Task::Hellaswag => {
            ("Rowan/hellaswag", "218ec52e09a7e7462a5400043bb9a69a41d06b76", "data/validation-00000-of-00001.parquet")
        }
        Task::Winogrande => (
            "allenai/winogrande",
            "01e74176c63542e6b0bcb004dcdea22d94fb67b5",
            "winogrande_xl/validation-00000-of-00001.parquet",
        ),
        Task::Boolq => {
            ("aps/super_glue", "3de24cf8022e94f4ee4b9d55a6f539891524d646", "boolq/validation-00000-of-00001.parquet")
        }
        Task::Rte => ("nyu-mll/glue", "main", "rte/validation-00000-of-00001.parquet"),
        Task::Openbookqa => ("allenai/openbookqa", "main", "main/test-00000-of-00001.parquet"),
        Task::LambadaOpenai => ("EleutherAI/lambada_openai", "refs/convert/parquet", "default/test/0000.parquet"),
    };
    HubFile { repo, revision, path, format: Format::ParquetRows { columns: required_columns(task) } }
}

/// A task's file in a data directory, relative to it.
pub fn local_path(task: Task) -> String {
    format!("tasks/{}.parquet", task.name())
}

/// A task's documents, read and turned into requests, and where they came from.
pub struct TaskData {
    pub task: Task,
    pub items: Vec<Item>,
    /// Documents in the file (before --limit).
    pub available: usize,
    pub provenance: FileProvenance,
}

const LAYOUT_HINT: &str = "README.md, 'Zero-shot tasks'";

/// Finds every task's file (one line naming every missing one), reads it and builds the
/// first `limit` items of each: all before any model work, so that a bad file stops the
/// run at once.
pub fn load_tasks(source: &DataSource, tasks: &[Task], limit: Option<usize>) -> Result<Vec<TaskData>> {
    match source {
        DataSource::Local(dir) => {
            let missing: Vec<String> =
                tasks.iter().map(|&t| local_path(t)).filter(|rel| !dir.join(rel).is_file()).collect();
            if !missing.is_empty() {
                bail!(
                    "data directory {} lacks {}; add the file{} (the task's hub parquet file, {LAYOUT_HINT}), or leave out --data-dir and SPARSEGPT_MI_DATA_DIR to download them from the Hugging Face hub",
                    dir.display(),
                    missing.join(", "),
                    if missing.len() == 1 { "" } else { "s" }
                );
            }
            tasks
                .iter()
                .map(|&t| {
                    let path: PathBuf = dir.join(local_path(t));
                    let (items, available) =
                        read_items(t, &path, limit).map_err(|e| anyhow!("{}: {e}", path.display()))?;
                    let provenance =
                        FileProvenance::Local { path: path.display().to_string(), sha256: sha256_file(&path)? };
                    Ok(TaskData { task: t, items, available, provenance })
                })
                .collect()
        }
        DataSource::Hub(client) => {
            let files: Vec<HubFile> = tasks.iter().map(|&t| hub_file(t)).collect();
            let resolved = resolve_hub_files(client, &files)?;
            tasks
                .iter()
                .zip(resolved)
                .map(|(&t, r)| {
                    // A file that does not read is removed from the cache; one whose rows do
                    // not make documents is kept (downloading it again would not help).
                    let rows = read_hub(client, &r, |p| read_parquet_rows(p, required_columns(t)))?;
                    let (items, available) =
                        items_from_rows(t, rows, limit).map_err(|e| anyhow!("{}: {e}", r.file.label()))?;
                    let provenance = FileProvenance::Hub {
                        repo: r.file.repo.to_string(),
                        revision: r.file.revision.to_string(),
                        file: r.file.path.to_string(),
                        commit: r.commit.clone(),
                        endpoint: client.config().endpoint.clone(),
                    };
                    Ok(TaskData { task: t, items, available, provenance })
                })
                .collect()
        }
    }
}

/// The first `limit` rows of a task file as items; and how many rows it holds.
pub fn read_items(task: Task, path: &Path, limit: Option<usize>) -> Result<(Vec<Item>, usize)> {
    let rows = read_parquet_rows(path, required_columns(task))
        .map_err(|e| anyhow!("not a {} task file: {}", task.name(), one_line(&format!("{e:#}"))))?;
    items_from_rows(task, rows, limit)
}

/// The first `limit` of a task file's rows as items; and how many rows it holds.
fn items_from_rows(task: Task, rows: Vec<serde_json::Value>, limit: Option<usize>) -> Result<(Vec<Item>, usize)> {
    if rows.is_empty() {
        bail!("the {} task file holds no rows", task.name());
    }
    let available = rows.len();
    let items = rows
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .enumerate()
        .map(|(i, row)| items::item(task, row).map_err(|e| anyhow!("{} row {i}: {e}", task.name())))
        .collect::<Result<Vec<_>>>()?;
    Ok((items, available))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_has_a_hub_file_and_a_local_name() {
        for t in Task::ALL {
            let f = hub_file(t);
            assert!(f.path.ends_with(".parquet"), "{}", f.path);
            assert_eq!(local_path(t), format!("tasks/{}.parquet", t.name()));
        }
        assert_eq!(
            hub_file(Task::LambadaOpenai).url("https://huggingface.co"),
            "https://huggingface.co/datasets/EleutherAI/lambada_openai/resolve/refs%2Fconvert%2Fparquet/default/test/0000.parquet"
        );
    }
}
