//! Zero-shot tasks scored as lm-evaluation-harness scores them (its task YAMLs, `api/task.py`,
//! `api/model.py`, `models/huggingface.py` and `api/metrics.py` at the commit named in
//! README.md, 'Zero-shot tasks').
//!
//! The stages: a dataset row (`files`: the hub's parquet file or a data directory's copy) →
//! the task's requests (`items`: context and continuation strings, the gold answer) → token
//! requests (`encode`: lm-eval's `_encode_pair`) → log-likelihoods and greedy flags (`score`:
//! batched by length through [`score::LoglikelihoodModel`]) → per-item decisions and the
//! task's metrics with their standard errors (`metrics`).

pub mod encode;
pub mod evaluate;
pub mod files;
pub mod items;
pub mod metrics;
pub mod score;

use anyhow::{bail, Result};
use serde::Serialize;

/// The tasks, under lm-eval's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Piqa,
    ArcEasy,
    ArcChallenge,
    Hellaswag,
    Winogrande,
    Boolq,
    Rte,
    Openbookqa,
    LambadaOpenai,
}

/// What a task's YAML asks lm-eval to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    /// Several (context, continuation) requests per item; acc (and acc_norm) by argmax.
    MultipleChoice { acc_norm: bool },
    /// One request per item; acc = greedy exact match, perplexity of the continuation.
    Loglikelihood,
}

impl Task {
    pub const ALL: [Task; 9] = [
        Task::Piqa,
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Hellaswag,
        Task::Winogrande,
        Task::Boolq,
        Task::Rte,
        Task::Openbookqa,
        Task::LambadaOpenai,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::Piqa => "piqa",
            Task::ArcEasy => "arc_easy",
            Task::ArcChallenge => "arc_challenge",
            Task::Hellaswag => "hellaswag",
            Task::Winogrande => "winogrande",
            Task::Boolq => "boolq",
            Task::Rte => "rte",
            Task::Openbookqa => "openbookqa",
            Task::LambadaOpenai => "lambada_openai",
        }
    }

    pub fn parse(name: &str) -> Result<Task> {
        let name = name.trim();
        match Task::ALL.iter().find(|t| t.name() == name) {
            Some(&t) => Ok(t),
            None => bail!(
                "unknown task '{name}': choose from {} (or all)",
                Task::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// A comma-separated list ("piqa,arc_easy"), or "all"; repeats dropped, order kept.
    pub fn parse_list(list: &str) -> Result<Vec<Task>> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                for t in Task::ALL {
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
                continue;
            }
            let t = Task::parse(name)?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            bail!("the list names no task: give one or more of {} (or all)", Task::ALL.map(|t| t.name()).join(", "));
        }
        Ok(out)
    }

    pub fn output_type(self) -> OutputType {
        match self {
            Task::Piqa | Task::ArcEasy | Task::ArcChallenge | Task::Hellaswag | Task::Openbookqa => {
                OutputType::MultipleChoice { acc_norm: true }
            }
            Task::Winogrande | Task::Boolq | Task::Rte => OutputType::MultipleChoice { acc_norm: false },
            Task::LambadaOpenai => OutputType::Loglikelihood,
        }
    }

    /// The YAML's `metadata.version`, shown in lm-eval's table.
    pub fn version(self) -> &'static str {
        match self {
            Task::Boolq => "2",
            _ => "1",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_lists_parse_all_and_reject_unknown_names() {
        assert_eq!(Task::parse_list("piqa, arc_easy,piqa").unwrap(), vec![Task::Piqa, Task::ArcEasy]);
        assert_eq!(Task::parse_list("all").unwrap(), Task::ALL.to_vec());
        assert_eq!(Task::parse_list("boolq,all").unwrap()[0], Task::Boolq);
        assert_eq!(Task::parse_list("boolq,all").unwrap().len(), 9);
        let e = Task::parse_list("piqa,mmlu").unwrap_err().to_string();
        assert!(e.starts_with("unknown task 'mmlu': choose from piqa, arc_easy"), "{e}");
        assert!(Task::parse_list(" , ").unwrap_err().to_string().contains("the list names no task"));
        for t in Task::ALL {
            assert_eq!(Task::parse(t.name()).unwrap(), t);
        }
    }
}
