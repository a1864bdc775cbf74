//! Zero-shot tasks end to end on fixture opt-mini-a (CPU, f32) with the hand-written task files
//! of tests/data/tasks (each dataset's parquet schema; checks/make_task_files.py): the batched
//! engine's log-likelihoods against a plain full-sequence forward of each request, the per-item
//! decisions and metrics against those log-likelihoods, and the hub path (local stand-in hub)
//! against the data-directory path.

mod common;

use candle_core::{DType, Tensor, D};
use common::hub_server::HubServer;
use sparsegpt_mi::data::source::{DataSource, FileProvenance};
use sparsegpt_mi::hub::HubConfig;
use sparsegpt_mi::model::tokenizer::{BOS_ID, BOS_TOKEN};
use sparsegpt_mi::tasks::encode::Encoder;
use sparsegpt_mi::tasks::evaluate::evaluate_task;
use sparsegpt_mi::tasks::files::{hub_file, load_tasks, local_path};
use sparsegpt_mi::tasks::items::Item;
use sparsegpt_mi::tasks::metrics::{argmax_first, mean};
use sparsegpt_mi::tasks::Task;
use std::path::PathBuf;

/// A served repo's files: (path in the repo, bytes).
type ServedFiles = Vec<(String, Vec<u8>)>;

fn task_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn encoder(tok: &tokenizers::Tokenizer) -> Encoder<'_> {
    Encoder { tokenizer: tok, bos_text: Some(BOS_TOKEN.into()), prefix_token_id: BOS_ID }
}

/// Σ log-softmax of the continuation tokens from one unbatched forward of context +
/// continuation, and whether each is the argmax: the computation lm-eval's HF backend does at
/// batch size 1.
fn reference_score(model: &sparsegpt_mi::model::OptModel, ctx: &[u32], cont: &[u32]) -> (f64, bool) {
    let whole: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    let input = &whole[..whole.len() - 1];
    let logits = model.forward(&Tensor::from_slice(input, (1, input.len()), &model.device).unwrap()).unwrap();
    let logp =
        candle_nn::ops::log_softmax(&logits.squeeze(0).unwrap().to_dtype(DType::F64).unwrap(), D::Minus1).unwrap();
    let rows: Vec<Vec<f64>> = logp.to_vec2().unwrap();
    let first = input.len() - cont.len();
    let mut sum = 0.0;
    let mut greedy = true;
    for (k, &t) in cont.iter().enumerate() {
        let row = &rows[first + k];
        sum += row[t as usize];
        greedy &= argmax_first(row) == t as usize;
    }
    (sum, greedy)
}

#[test]
fn batched_scores_equal_unbatched_forward_and_decide_acc() {
    let (model, tok) = common::load("opt-mini-a");
    let enc = encoder(&tok);
    let data = load_tasks(&DataSource::local(task_dir()), &Task::ALL, None).unwrap();
    let mut worst: f64 = 0.0;
    for d in &data {
        let r = evaluate_task(&model, &enc, d).unwrap();
        assert_eq!(r.n, d.items.len());
        assert!(r.n >= 3, "{:?}", d.task);
        for (item, res) in d.items.iter().zip(&r.items) {
            for (k, req) in item.requests().iter().enumerate() {
                let t = enc.encode_request(req).unwrap();
                let (ll, greedy) = reference_score(&model, &t.context, &t.continuation);
                // f32 forward, batched with padding vs alone: the same up to f32 rounding of
                // sums over a few dozen tokens.
                let diff = (ll - res.loglik[k]).abs();
                worst = worst.max(diff / ll.abs().max(1.0));
                assert!(diff <= 2e-5 * ll.abs().max(1.0), "{:?}: {ll} vs {}", d.task, res.loglik[k]);
                assert_eq!(greedy, res.greedy[k], "{:?}", d.task);
            }
            match item {
                Item::Choice { choices, gold, .. } => {
                    assert_eq!(res.acc, argmax_first(&res.loglik) == *gold);
                    if let Some(norm) = res.acc_norm {
                        let per_char: Vec<f64> =
                            res.loglik.iter().zip(choices).map(|(l, c)| l / c.chars().count() as f64).collect();
                        assert_eq!(norm, argmax_first(&per_char) == *gold);
                    }
                }
                Item::Loglikelihood { .. } => assert_eq!(res.acc, res.greedy[0]),
            }
        }
        let accs: Vec<f64> = r.items.iter().map(|i| i.acc as u8 as f64).collect();
        assert_eq!(r.acc, mean(&accs));
        assert_eq!(
            r.acc_norm.is_some(),
            matches!(d.task, Task::Piqa | Task::ArcEasy | Task::ArcChallenge | Task::Hellaswag | Task::Openbookqa)
        );
        if d.task == Task::LambadaOpenai {
            let lls: Vec<f64> = r.items.iter().map(|i| i.loglik[0]).collect();
            assert!((r.perplexity.unwrap() - (-mean(&lls)).exp()).abs() < 1e-9);
            assert!(r.perplexity_stderr.unwrap().unwrap() > 0.0);
        }
    }
    eprintln!("largest relative difference batched vs unbatched: {worst:.2e}");
}

/// An untied family (llama-rand-gqa: its own `lm_head`) scores continuations through its LM
/// head, not its token embeddings: the engine's log-softmax equals a plain forward's.
#[test]
fn untied_head_scores_equal_the_plain_forward() {
    use sparsegpt_mi::tasks::score::LoglikelihoodModel;
    let (model, tok) = common::load("llama-rand-gqa");
    assert!(model.lm_head.is_some(), "the fixture's head is untied");
    let ids = |text: &str| tok.encode(text, true).unwrap().get_ids().to_vec();
    let seqs = [ids("The river runs past the old mill and"), ids("A short one")];
    let mut worst: f64 = 0.0;
    for seq in &seqs {
        let cont = &seq[seq.len() - 3..];
        let ctx = &seq[..seq.len() - 3];
        let (want, want_greedy) = reference_score(&model, ctx, cont);
        let input = &seq[..seq.len() - 1];
        let asks: Vec<(usize, u32)> = (0..cont.len()).map(|k| (ctx.len() - 1 + k, cont[k])).collect();
        let got = model.token_scores(&[input], std::slice::from_ref(&asks)).unwrap();
        let ll: f64 = got[0].iter().map(|t| t.logprob).sum();
        let greedy = got[0].iter().all(|t| t.greedy);
        worst = worst.max((ll - want).abs() / want.abs().max(1.0));
        // f32 forward both ways: equal up to f32 rounding of the same sums.
        assert!((ll - want).abs() <= 2e-5 * want.abs().max(1.0), "{ll} vs {want}");
        assert_eq!(greedy, want_greedy);
    }
    eprintln!("largest relative difference engine vs plain forward (untied head): {worst:.2e}");
}

#[test]
fn limit_takes_the_first_documents() {
    let d = load_tasks(&DataSource::local(task_dir()), &[Task::Piqa, Task::Winogrande], Some(2)).unwrap();
    assert_eq!((d[0].items.len(), d[0].available), (2, 5));
    assert_eq!((d[1].items.len(), d[1].available), (2, 4));
    let all = load_tasks(&DataSource::local(task_dir()), &[Task::Piqa], None).unwrap();
    assert_eq!(d[0].items[..], all[0].items[..2]);
}

#[test]
fn hub_task_files_equal_the_data_dir_ones_and_work_offline_once_cached() {
    let server = HubServer::start();
    // One served repo per (repo, revision): ARC's two files share one.
    let mut repos: Vec<(&str, &str, ServedFiles)> = Vec::new();
    for t in Task::ALL {
        let f = hub_file(t);
        let bytes = std::fs::read(task_dir().join(local_path(t))).unwrap();
        match repos.iter_mut().find(|r| r.0 == f.repo && r.1 == f.revision) {
            Some(r) => r.2.push((f.path.to_string(), bytes)),
            None => repos.push((f.repo, f.revision, vec![(f.path.to_string(), bytes)])),
        }
    }
    for (repo, rev, files) in repos {
        server.add_dataset(repo, rev, files);
    }
    let cache = tempfile::tempdir().unwrap();
    let hub = DataSource::hub(HubConfig::new(server.endpoint(), cache.path())).unwrap();
    let from_hub = load_tasks(&hub, &Task::ALL, None).unwrap();
    let local = load_tasks(&DataSource::local(task_dir()), &Task::ALL, None).unwrap();
    for (h, l) in from_hub.iter().zip(&local) {
        assert_eq!(h.items, l.items, "{:?}", h.task);
        let FileProvenance::Hub { repo, revision, file, commit, .. } = &h.provenance else { panic!() };
        let f = hub_file(h.task);
        assert_eq!((repo.as_str(), revision.as_str(), file.as_str()), (f.repo, f.revision, f.path));
        assert_eq!(commit, &server.commit_of(true, f.repo));
    }
    // Offline: the cache serves them, without a request.
    let before = server.request_count();
    let offline = DataSource::hub(HubConfig::new("http://127.0.0.1:9", cache.path()).with_offline(true)).unwrap();
    let again = load_tasks(&offline, &[Task::Boolq, Task::LambadaOpenai], Some(1)).unwrap();
    assert_eq!(again[0].items[0], local[5].items[0]);
    assert_eq!(server.request_count(), before);
    // Offline with a cold cache: one line naming the file and both remedies.
    let cold = tempfile::tempdir().unwrap();
    let offline = DataSource::hub(HubConfig::new("http://127.0.0.1:9", cold.path()).with_offline(true)).unwrap();
    let e = format!("{:#}", load_tasks(&offline, &[Task::Rte], None).err().unwrap());
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("nyu-mll/glue@main:rte/validation-00000-of-00001.parquet") && e.contains("--data-dir"), "{e}");
}

#[test]
fn a_task_file_lacking_a_column_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tasks")).unwrap();
    // An ARC file where a piqa file belongs: no goal/sol1/sol2/label.
    std::fs::copy(task_dir().join("tasks/arc_easy.parquet"), dir.path().join("tasks/piqa.parquet")).unwrap();
    let e = format!("{:#}", load_tasks(&DataSource::local(dir.path()), &[Task::Piqa], None).err().unwrap());
    assert!(e.contains("not a piqa task file") && e.contains("'goal'") && e.contains("'label'"), "{e}");
    let e = format!("{:#}", load_tasks(&DataSource::local(dir.path()), &[Task::Boolq], None).err().unwrap());
    assert!(e.contains("lacks tasks/boolq.parquet"), "{e}");
}

/// `prune --eval-tasks` scores the compressed model in memory; `eval --tasks` on its saved
/// export gives the same per-request log-likelihoods (the export holds the same weights), and
/// stdout carries lm-eval's table.
#[test]
fn compressed_in_memory_and_reloaded_export_score_alike() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    // One data directory: the shipped corpora's C4 (calibration) and the task files.
    let data = w.join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(common::data_dir().join("c4"), data.join("c4")).unwrap();
    std::os::unix::fs::symlink(task_dir().join("tasks"), data.join("tasks")).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin()).current_dir(w).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let model = common::fixture("opt-mini-a");
    let (model, data) = (model.to_str().unwrap(), data.to_str().unwrap());
    run(&[
        "prune",
        model,
        "c4",
        "--sparsity",
        "0.5",
        "--wbits",
        "4",
        "--nsamples",
        "2",
        "--eval-datasets",
        "",
        "--eval-tasks",
        "piqa,winogrande,lambada_openai",
        "--limit",
        "3",
        "--data-dir",
        data,
        "--json",
        "p.json",
        "--save",
        "out",
    ]);
    let stdout = run(&[
        "eval",
        "out",
        "--tasks",
        "piqa,winogrande,lambada_openai",
        "--limit",
        "3",
        "--data-dir",
        data,
        "--json",
        "e.json",
    ]);
    assert!(stdout.contains("|Tasks         |Version|Filter|n-shot|Metric    | |  Value| | Stderr|"), "{stdout}");
    assert!(stdout.contains("|winogrande    |      1|none  |     0|acc       |↑|"), "{stdout}");
    let read = |f: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(w.join(f)).unwrap()).unwrap() };
    let (p, e) = (read("p.json"), read("e.json"));
    let (pt, et) = (p["tasks"].as_array().unwrap(), e["tasks"].as_array().unwrap());
    assert_eq!(pt.len(), 3);
    for (a, b) in pt.iter().zip(et) {
        assert_eq!(a["task"], b["task"]);
        assert_eq!(a["n"], 3);
        for (x, y) in a["items"].as_array().unwrap().iter().zip(b["items"].as_array().unwrap()) {
            assert_eq!(x["loglik"], y["loglik"], "{}", a["task"]);
        }
        assert_eq!(a["acc"], b["acc"]);
    }
    assert!(pt[2]["perplexity"].as_f64().unwrap() > 1.0);
}

/// The requests lm-eval 0.4.13 builds for the task files of tests/data/tasks, logged by its own
/// task code (`checks/lm_eval_compare.py --dry-run --requests-out tests/data/lm_eval_requests.json`):
/// every context and continuation string here is the same, and so is the gold answer.
#[test]
fn requests_are_lm_eval_s_strings() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(task_dir().join("lm_eval_requests.json")).unwrap()).unwrap();
    assert_eq!(reference["lm_eval"], "0.4.13");
    let data = load_tasks(&DataSource::local(task_dir()), &Task::ALL, None).unwrap();
    let mut checked = 0;
    for d in &data {
        let docs = reference["tasks"][d.task.name()].as_array().unwrap();
        assert_eq!(docs.len(), d.items.len(), "{:?}", d.task);
        for (doc, item) in docs.iter().zip(&d.items) {
            let theirs: Vec<(String, String)> = doc["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
                .collect();
            let ours: Vec<(String, String)> =
                item.requests().iter().map(|r| (r.context.clone(), r.continuation.clone())).collect();
            assert_eq!(ours, theirs, "{:?}", d.task);
            checked += ours.len();
            // lm-eval logs the gold index, except WinoGrande (its target is the scored suffix).
            if let (Item::Choice { gold, .. }, Some(t)) = (item, doc["target"].as_u64()) {
                assert_eq!(*gold as u64, t, "{:?}", d.task);
            }
        }
    }
    assert_eq!(checked, 86);
}
