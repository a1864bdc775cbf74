//! The corpora from the hub's dataset repos, against a local stand-in hub
//! (tests/common/hub_server.rs) serving files made from ../shared/data at test time
//! (tests/common/hub_files.rs). Library API only; every hub setting is passed explicitly
//! (HubConfig::new), never through the process environment.

mod common;

use common::hub_files::{self as hf, C4, C4_TRAIN, C4_VALID, PTB, PTB_REVISION, PTB_TEST, WIKITEXT, WIKI_TEST};
use common::hub_server::{sha256_hex, HubServer};
use sparsegpt_mi::data::source::{needs, DataSource, DatasetFile, FileProvenance, Need, Role};
use sparsegpt_mi::data::Corpus;
use sparsegpt_mi::hub::{CacheLookup, HubClient, HubConfig};
use std::path::Path;

const UNREACHABLE: &str = "http://127.0.0.1:9";

fn hub(endpoint: &str, cache: &Path) -> DataSource {
    DataSource::hub(HubConfig::new(endpoint, cache)).unwrap()
}

fn offline(cache: &Path) -> DataSource {
    DataSource::hub(HubConfig::new(UNREACHABLE, cache).with_offline(true)).unwrap()
}

fn local() -> DataSource {
    DataSource::local(hf::data_dir())
}

fn all_needs() -> Vec<Need> {
    let mut n = needs(&Corpus::ALL, None);
    n.extend(Corpus::ALL.map(Need::calibration));
    n
}

fn served() -> HubServer {
    let s = HubServer::start();
    hf::serve_all(&s);
    s
}

/// The error of a result, as main prints it ("{:#}"), asserted to be one line.
fn err_line<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    let e = format!("{:#}", r.expect_err("should fail"));
    assert!(!e.contains('\n'), "more than one line: {e}");
    eprintln!("[error line] {e}");
    e
}

/// What the cache holds for a hub file (no request).
fn cached(cache: &Path, need: Need) -> CacheLookup {
    let f = DatasetFile::of(need);
    HubClient::new(HubConfig::new(UNREACHABLE, cache).with_offline(true)).unwrap().lookup(&f.hub_repo(), f.path)
}

fn files_named(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn hub_text_equals_data_dir_text_for_every_corpus_and_role() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let src = hub(&server.endpoint(), cache.path());
    let prov = src.check_available(&all_needs()).unwrap();
    assert_eq!(prov.len(), 6);
    for p in &prov {
        let f = DatasetFile::of(Need { corpus: sparsegpt_mi::data::Corpus::parse(p.corpus).unwrap(), role: p.role });
        match &p.files[..] {
            [FileProvenance::Hub { repo, revision, file, commit, endpoint }] => {
                assert_eq!((repo.as_str(), revision.as_str(), file.as_str()), (f.repo, f.revision, f.path));
                assert_eq!(commit, &server.commit_of(true, f.repo));
                assert_eq!(endpoint, &server.endpoint());
            }
            other => panic!("{other:?}"),
        }
    }
    let json = serde_json::to_value(&prov[0]).unwrap();
    assert_eq!(json["files"][0]["source"], "hub");
    assert_eq!(json["role"], "eval");

    let local = local();
    for c in Corpus::ALL {
        let (h, l) = (src.eval_text(c).unwrap(), local.eval_text(c).unwrap());
        assert!(h == l, "{}: eval text differs ({} vs {} chars)", c.name(), h.len(), l.len());
        let (h, l) = (src.calibration_documents(c).unwrap(), local.calibration_documents(c).unwrap());
        assert!(h == l, "{}: calibration documents differ ({} vs {} docs)", c.name(), h.len(), l.len());
    }
    // The protocol's shapes, for the record: 4358 WikiText-2 rows joined with "\n\n"
    // (1294336 chars, SOURCES.md), 1100 C4 validation documents, 1000 C4 train documents.
    assert_eq!(src.eval_text(Corpus::WikiText2).unwrap().chars().count(), 1294336);
    assert_eq!(src.calibration_documents(Corpus::C4).unwrap().len(), 1000);

    // The PTB revision went out URL-encoded.
    let log = server.requests();
    assert!(log
        .iter()
        .any(|r| r.path.contains("/datasets/ptb-text-only/ptb_text_only/resolve/refs%2Fconvert%2Fparquet/")));
    assert!(log.iter().all(|r| !r.path.contains("resolve/refs/convert")));
    // Standard cache layout, the ref of a revision with '/' included.
    let ptb_dir = cache.path().join("datasets--ptb-text-only--ptb_text_only");
    assert_eq!(
        std::fs::read_to_string(ptb_dir.join("refs/refs/convert/parquet")).unwrap(),
        server.commit_of(true, PTB)
    );
}

#[test]
fn c4_eval_tokens_equal_and_stay_within_256_windows() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let tok = tokenizers::Tokenizer::from_file(common::data_dir().join("opt-tokenizer/tokenizer.json")).unwrap();
    let h = hub(&server.endpoint(), cache.path())
        .eval_tokens(Corpus::C4, &tok, sparsegpt_mi::protocol::SeqLen::PUBLISHED)
        .unwrap();
    let l = local().eval_tokens(Corpus::C4, &tok, sparsegpt_mi::protocol::SeqLen::PUBLISHED).unwrap();
    assert_eq!(h, l);
    assert!(h.len() <= 256 * 2048);
    let d =
        sparsegpt_mi::data::eval_tokens(Corpus::C4, hf::data_dir(), &tok, sparsegpt_mi::protocol::SeqLen::PUBLISHED)
            .unwrap();
    assert_eq!(h, d, "DataSource::eval_tokens = data::eval_tokens");
}

#[test]
fn only_the_files_a_run_needs_are_fetched_and_a_second_run_sends_no_request() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let want = [Need::eval(Corpus::WikiText2)];
    hub(&server.endpoint(), cache.path()).check_available(&want).unwrap();
    let wiki_sha = sha256_hex(&hf::hub_file(WIKI_TEST));
    let log = server.requests();
    assert!(!log.is_empty());
    for r in &log {
        assert!(r.path.ends_with(WIKI_TEST) || r.path.ends_with(&wiki_sha), "unexpected request {r:?}");
    }
    assert!(matches!(cached(cache.path(), Need::eval(Corpus::Ptb)), CacheLookup::Unknown));

    server.clear_log();
    let again = hub(&server.endpoint(), cache.path());
    again.check_available(&want).unwrap();
    let text = again.eval_text(Corpus::WikiText2).unwrap();
    assert_eq!(text, local().eval_text(Corpus::WikiText2).unwrap());
    assert_eq!(server.request_count(), 0, "{:?}", server.requests());
}

#[test]
fn warm_cache_works_offline_and_with_the_hub_unreachable() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    hub(&server.endpoint(), cache.path()).check_available(&all_needs()).unwrap();
    drop(server);
    let local = local();
    for src in [offline(cache.path()), hub(UNREACHABLE, cache.path())] {
        let prov = src.check_available(&all_needs()).unwrap();
        assert_eq!(prov.len(), 6);
        for c in Corpus::ALL {
            assert!(src.eval_text(c).unwrap() == local.eval_text(c).unwrap(), "{}", c.name());
        }
        assert!(src.calibration_documents(Corpus::C4).unwrap() == local.calibration_documents(Corpus::C4).unwrap());
    }
}

#[test]
fn cold_cache_offline_or_unreachable_gives_one_line_naming_the_missing_files_and_both_remedies() {
    let cache = tempfile::tempdir().unwrap();
    let want = needs(&[Corpus::WikiText2, Corpus::C4], Some(Corpus::C4));
    let e = err_line(offline(cache.path()).check_available(&want));
    for f in [WIKI_TEST, C4_VALID, C4_TRAIN] {
        assert!(e.contains(f), "{f} not named: {e}");
    }
    assert!(!e.contains(PTB_TEST), "names a file the run does not need: {e}");
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains("unset HF_HUB_OFFLINE") && e.contains("--data-dir"), "{e}");
    assert!(e.contains(&cache.path().display().to_string()), "{e}");

    let e = err_line(hub(UNREACHABLE, cache.path()).check_available(&want));
    assert!(e.contains("cannot reach the Hugging Face hub at http://127.0.0.1:9"), "{e}");
    for f in [WIKI_TEST, C4_VALID, C4_TRAIN] {
        assert!(e.contains(f), "{f} not named: {e}");
    }
    assert!(e.contains("connect to the hub") && e.contains("--data-dir"), "{e}");

    // The text functions say the same when called without the up-front check.
    let e = err_line(offline(cache.path()).eval_text(Corpus::Ptb));
    assert!(e.contains(PTB_TEST) && e.contains("--data-dir"), "{e}");
}

#[test]
fn unknown_repo_revision_or_file_is_one_clear_line() {
    let server = HubServer::start();
    let cache = tempfile::tempdir().unwrap();
    // No allenai/c4 at all (the hub answers 401 RepoNotFound without a token).
    let e = err_line(hub(&server.endpoint(), cache.path()).check_available(&[Need::eval(Corpus::C4)]));
    assert!(e.contains("dataset repository 'allenai/c4' not found") && e.contains("HTTP 401"), "{e}");

    // The repo without the validation file: 404 EntryNotFound, recorded as .no_exist.
    let commit = server.add_dataset(C4, "main", vec![(C4_TRAIN.into(), hf::hub_file(C4_TRAIN))]);
    let e = err_line(hub(&server.endpoint(), cache.path()).check_available(&[Need::eval(Corpus::C4)]));
    assert!(e.contains("has no file 'en/c4-validation.00000-of-00008.json.gz'") && e.contains("HTTP 404"), "{e}");
    assert!(cache.path().join("datasets--allenai--c4/.no_exist").join(&commit).join(C4_VALID).is_file());
    assert!(matches!(cached(cache.path(), Need::eval(Corpus::C4)), CacheLookup::Absent { .. }));

    // PTB served only at main: no refs/convert/parquet revision.
    server.add_dataset(PTB, "main", vec![(PTB_TEST.into(), hf::hub_file(PTB_TEST))]);
    let e = err_line(hub(&server.endpoint(), cache.path()).eval_text(Corpus::Ptb));
    assert!(e.contains("has no revision 'refs/convert/parquet'"), "{e}");
}

#[test]
fn corrupt_or_truncated_parquet_is_refused_and_not_left_in_the_cache() {
    let server = served();
    let good = hf::hub_file(WIKI_TEST);
    let need = Need::eval(Corpus::WikiText2);
    for (what, bytes) in [
        ("garbage", b"this is not a parquet file at all".repeat(4000)),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("small garbage", b"PAR1 nope".to_vec()),
    ] {
        let cache = tempfile::tempdir().unwrap();
        server.set_file(true, WIKITEXT, WIKI_TEST, bytes);
        let e = err_line(hub(&server.endpoint(), cache.path()).check_available(&[need]));
        assert!(e.contains(WIKI_TEST) && e.contains("parquet"), "{what}: {e}");
        assert!(e.contains("removed it from the hub cache"), "{what}: {e}");
        assert_eq!(cached(cache.path(), need), CacheLookup::Unknown, "{what}: left in the cache");
        assert!(
            files_named(&cache.path().join("datasets--Salesforce--wikitext/blobs"), "")
                .iter()
                .all(|p| { p.extension().is_some_and(|x| x == "lock") }),
            "{what}: a blob is left"
        );

        // Once the hub serves the good file, the same cache gets it.
        server.set_file(true, WIKITEXT, WIKI_TEST, good.clone());
        let src = hub(&server.endpoint(), cache.path());
        assert_eq!(src.eval_text(Corpus::WikiText2).unwrap(), local().eval_text(Corpus::WikiText2).unwrap());
    }
}

#[test]
fn a_cached_file_found_corrupt_is_removed_and_fetched_again() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let need = Need::eval(Corpus::WikiText2);
    hub(&server.endpoint(), cache.path()).check_available(&[need]).unwrap();
    let CacheLookup::Present { path, .. } = cached(cache.path(), need) else { panic!("not cached") };
    std::fs::write(std::fs::canonicalize(&path).unwrap(), b"damaged on disk").unwrap();
    let e = err_line(offline(cache.path()).check_available(&[need]));
    assert!(e.contains("is unusable") && e.contains("removed it"), "{e}");
    assert_eq!(cached(cache.path(), need), CacheLookup::Unknown);
    let src = hub(&server.endpoint(), cache.path());
    assert_eq!(src.eval_text(Corpus::WikiText2).unwrap(), local().eval_text(Corpus::WikiText2).unwrap());
}

#[test]
fn parquet_without_the_column_or_with_a_null_is_refused() {
    let server = served();
    let rows: Vec<String> = vec!["a\n".into(), String::new(), "b\n".into()];
    let cache = tempfile::tempdir().unwrap();
    server.set_file(true, WIKITEXT, WIKI_TEST, hf::strings_parquet("content", &rows));
    let e = err_line(hub(&server.endpoint(), cache.path()).eval_text(Corpus::WikiText2));
    assert!(e.contains("has no column 'text' (its columns: content)"), "{e}");
    assert_eq!(cached(cache.path(), Need::eval(Corpus::WikiText2)), CacheLookup::Unknown);

    let cache = tempfile::tempdir().unwrap();
    let with_null = vec![Some("a\n".to_string()), None, Some("b\n".to_string())];
    server.set_file(true, WIKITEXT, WIKI_TEST, hf::parquet_strings("text", &with_null, 1000));
    let e = err_line(hub(&server.endpoint(), cache.path()).eval_text(Corpus::WikiText2));
    assert!(e.contains("column 'text' row 1 is null"), "{e}");

    // Empty strings are rows like any other (WikiText's blank lines).
    let cache = tempfile::tempdir().unwrap();
    server.set_file(true, WIKITEXT, WIKI_TEST, hf::strings_parquet("text", &rows));
    assert_eq!(hub(&server.endpoint(), cache.path()).eval_text(Corpus::WikiText2).unwrap(), "a\n\n\n\n\nb\n");

    // Uncompressed parquet reads too (one row per row group here).
    let cache = tempfile::tempdir().unwrap();
    let v: Vec<Option<String>> = rows.iter().cloned().map(Some).collect();
    let plain = hf::parquet_strings_with("text", &v, 1, parquet::basic::Compression::UNCOMPRESSED);
    server.set_file(true, WIKITEXT, WIKI_TEST, plain);
    assert_eq!(hub(&server.endpoint(), cache.path()).eval_text(Corpus::WikiText2).unwrap(), "a\n\n\n\n\nb\n");
}

#[test]
fn corrupt_gzip_is_refused_and_not_left_in_the_cache() {
    let server = served();
    let good = hf::hub_file(C4_VALID);
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff; // the CRC32 in the gzip trailer
    let mut bad_middle = good.clone();
    for b in &mut bad_middle[n / 2..n / 2 + 32] {
        *b ^= 0x5a;
    }
    let need = Need::eval(Corpus::C4);
    for (what, bytes) in [
        ("truncated", good[..n / 2].to_vec()),
        ("bad crc", bad_crc),
        ("damaged deflate data", bad_middle),
        ("not gzip", b"{\"text\": \"plain json lines\"}\n".repeat(10)),
    ] {
        let cache = tempfile::tempdir().unwrap();
        server.set_file(true, C4, C4_VALID, bytes);
        let e = err_line(hub(&server.endpoint(), cache.path()).check_available(&[need]));
        assert!(e.contains(C4_VALID) && e.contains("gzip"), "{what}: {e}");
        assert_eq!(cached(cache.path(), need), CacheLookup::Unknown, "{what}: left in the cache");
    }
    server.set_file(true, C4, C4_VALID, good);
}

#[test]
fn bytes_damaged_in_transit_fail_the_sha256_check_and_are_dropped() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let need = Need::eval(Corpus::WikiText2);
    server.corrupt_in_transit(WIKI_TEST, true);
    let e = err_line(hub(&server.endpoint(), cache.path()).check_available(&[need]));
    assert!(e.contains("differs from the hub's") && e.contains(&sha256_hex(&hf::hub_file(WIKI_TEST))), "{e}");
    assert_eq!(cached(cache.path(), need), CacheLookup::Unknown);
    server.corrupt_in_transit(WIKI_TEST, false);
    assert_eq!(
        hub(&server.endpoint(), cache.path()).eval_text(Corpus::WikiText2).unwrap(),
        local().eval_text(Corpus::WikiText2).unwrap()
    );
}

#[test]
fn a_cut_download_is_resumed_by_the_retry_within_the_run() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    server.cut(C4_VALID, 100_000, 1);
    let src = hub(&server.endpoint(), cache.path()); // 2 retries
    assert_eq!(src.eval_text(Corpus::C4).unwrap(), local().eval_text(Corpus::C4).unwrap());
    let sha = sha256_hex(&hf::hub_file(C4_VALID));
    let resumed =
        server.requests().into_iter().any(|r| r.path.ends_with(&sha) && r.range.as_deref() == Some("bytes=100000-"));
    assert!(resumed, "no resumed range request: {:?}", server.requests());
}

#[test]
fn a_cut_download_fails_in_one_line_leaves_only_a_part_file_and_the_next_run_resumes() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let need = Need::eval(Corpus::C4);
    server.cut(C4_VALID, 100_000, 1);
    let no_retry = || DataSource::hub(HubConfig::new(server.endpoint(), cache.path()).with_retries(0)).unwrap();
    let e = err_line(no_retry().check_available(&[need]));
    assert!(e.contains("broke off") && e.contains(C4_VALID) && e.contains("next run resumes"), "{e}");
    assert_eq!(cached(cache.path(), need), CacheLookup::Unknown, "a cut download must not count as cached");
    let parts = files_named(cache.path(), ".part");
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(std::fs::metadata(&parts[0]).unwrap().len(), 100_000);
    // Offline, the partial file is not taken for the file.
    let e = err_line(offline(cache.path()).eval_text(Corpus::C4));
    assert!(e.contains(C4_VALID), "{e}");

    server.clear_log();
    assert_eq!(no_retry().eval_text(Corpus::C4).unwrap(), local().eval_text(Corpus::C4).unwrap());
    assert!(server.requests().iter().any(|r| r.range.as_deref() == Some("bytes=100000-")), "{:?}", server.requests());
    assert!(files_named(cache.path(), ".part").is_empty());
}

#[test]
fn resuming_against_a_server_that_ignores_range_is_caught() {
    // hf-hub appends whatever the resumed request returns: a 200 with the whole file makes
    // the blob too long. The sha256 check refuses it, and the run after that starts afresh.
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let need = Need::eval(Corpus::C4);
    let no_retry = || DataSource::hub(HubConfig::new(server.endpoint(), cache.path()).with_retries(0)).unwrap();
    server.cut(C4_VALID, 100_000, 1);
    err_line(no_retry().check_available(&[need]));
    server.ignore_range(true);
    let e = err_line(no_retry().check_available(&[need]));
    assert!(e.contains("differs from the hub's"), "{e}");
    assert_eq!(cached(cache.path(), need), CacheLookup::Unknown);
    assert_eq!(no_retry().eval_text(Corpus::C4).unwrap(), local().eval_text(Corpus::C4).unwrap());
}

#[test]
fn small_files_without_redirect_and_a_renamed_repo_behind_a_relative_redirect() {
    let server = HubServer::start();
    server.set_lfs_threshold(usize::MAX); // no LFS: 200/206 straight from the resolve URL
    let (_, rev, files) = &hf::hub_repos()[1];
    assert_eq!(*rev, PTB_REVISION);
    // PTB lives under a new name; the old one answers 307 with a relative Location.
    server.add_dataset("ptb-text-only/ptb_text_only_renamed", PTB_REVISION, files.clone());
    server.alias(true, PTB, "ptb-text-only/ptb_text_only_renamed");
    let cache = tempfile::tempdir().unwrap();
    let src = hub(&server.endpoint(), cache.path());
    assert_eq!(src.eval_text(Corpus::Ptb).unwrap(), local().eval_text(Corpus::Ptb).unwrap());
    assert_eq!(src.calibration_documents(Corpus::Ptb).unwrap(), local().calibration_documents(Corpus::Ptb).unwrap());
    assert!(server.requests().iter().any(|r| r.path.contains("ptb_text_only_renamed")));
}

#[test]
fn the_token_is_sent() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let cfg = HubConfig::new(server.endpoint(), cache.path()).with_token(Some("hf_test_token".into()));
    DataSource::hub(cfg).unwrap().check_available(&[Need::eval(Corpus::Ptb)]).unwrap();
    let log = server.requests();
    assert!(!log.is_empty());
    assert!(log.iter().all(|r| r.authorization.as_deref() == Some("Bearer hf_test_token")), "{log:?}");
}

#[test]
fn data_dir_check_lists_missing_files_and_records_sha256() {
    let empty = tempfile::tempdir().unwrap();
    let e =
        err_line(DataSource::local(empty.path()).check_available(&needs(&[Corpus::Ptb, Corpus::C4], Some(Corpus::C4))));
    assert!(
        e.contains("ptb/ptb.test.txt") && e.contains("c4/c4-validation*.jsonl") && e.contains("c4/c4-train*.jsonl"),
        "{e}"
    );
    assert!(e.contains("leave out --data-dir"), "{e}");

    let prov = local().check_available(&[Need::eval(Corpus::C4), Need::eval(Corpus::Ptb)]).unwrap();
    assert_eq!(prov[0].files.len(), 2, "two C4 validation parts");
    for p in &prov {
        for f in &p.files {
            let FileProvenance::Local { path, sha256 } = f else { panic!("{f:?}") };
            assert_eq!(sha256, &sha256_hex(&std::fs::read(path).unwrap()));
        }
    }
    assert_eq!(prov[1].role, Role::Eval);
    let json = serde_json::to_value(&prov[1]).unwrap();
    assert_eq!(json["files"][0]["source"], "local");
    assert_eq!(json["corpus"], "ptb");
}

#[test]
fn a_leftover_part_file_that_cannot_be_resumed_is_named() {
    let server = served();
    let cache = tempfile::tempdir().unwrap();
    let need = Need::eval(Corpus::C4);
    let no_retry = || DataSource::hub(HubConfig::new(server.endpoint(), cache.path()).with_retries(0)).unwrap();
    server.cut(C4_VALID, 100_000, 1);
    err_line(no_retry().check_available(&[need]));
    let part = files_named(cache.path(), ".part").pop().unwrap();
    let full = hf::hub_file(C4_VALID);
    // As long as the file: the resumed Range starts at the end (416). Longer: hf-hub's
    // "invalid part file". Either way one line naming where the .part file lies.
    for extra in [0usize, 10] {
        let mut b = full.clone();
        b.extend(std::iter::repeat_n(0u8, extra));
        std::fs::write(&part, b).unwrap();
        let e = err_line(no_retry().check_available(&[need]));
        assert!(e.contains("cannot resume") && e.contains("datasets--allenai--c4") && e.contains(".part"), "{e}");
        assert_eq!(cached(cache.path(), need), CacheLookup::Unknown);
    }
    std::fs::remove_file(&part).unwrap();
    assert_eq!(no_retry().eval_text(Corpus::C4).unwrap(), local().eval_text(Corpus::C4).unwrap());
}

#[test]
fn the_stand_in_hub_answers_like_the_hub() {
    let server = HubServer::start();
    let commit =
        server.add_dataset("org/ds", "refs/convert/parquet", vec![("a/small.txt".into(), b"0123456789".to_vec())]);
    let ep = server.endpoint();
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let url = format!("{ep}/datasets/org/ds/resolve/refs%2Fconvert%2Fparquet/a/small.txt");
    let r = agent.head(&url).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.header("x-repo-commit"), Some(commit.as_str()));
    assert!(r.header("etag").is_some_and(|e| e.len() == 42));
    let r = agent.get(&url).set("Range", "bytes=2-4").call().unwrap();
    assert_eq!((r.status(), r.header("content-range").map(str::to_string)), (206, Some("bytes 2-4/10".into())));
    assert_eq!(r.into_string().unwrap(), "234");
    // The commit works as a revision.
    let by_commit = format!("{ep}/datasets/org/ds/resolve/{commit}/a/small.txt");
    assert_eq!(agent.get(&by_commit).call().unwrap().into_string().unwrap(), "0123456789");
    let status = |u: String| match agent.get(&u).set("Range", "bytes=50-").call() {
        Ok(r) => (r.status(), None),
        Err(ureq::Error::Status(s, r)) => (s, r.header("x-error-code").map(str::to_string)),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status(url.clone()), (416, None));
    assert_eq!(
        status(format!("{ep}/datasets/org/ds/resolve/main/a/small.txt")),
        (404, Some("RevisionNotFound".into()))
    );
    assert_eq!(
        status(format!("{ep}/datasets/org/ds/resolve/refs%2Fconvert%2Fparquet/b")),
        (404, Some("EntryNotFound".into()))
    );
    assert_eq!(status(format!("{ep}/datasets/org/none/resolve/main/b")), (401, Some("RepoNotFound".into())));
    assert_eq!(
        status(format!("{ep}/org/ds/resolve/main/a/small.txt")),
        (401, Some("RepoNotFound".into())),
        "a model, not the dataset"
    );
    // Large files: 302 to an absolute LFS URL carrying the hub's LFS headers.
    server.set_lfs_threshold(5);
    let r = agent.get(&url).call().unwrap();
    assert_eq!(r.status(), 302);
    let sha = sha256_hex(b"0123456789");
    assert_eq!(r.header("x-linked-etag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(r.header("location"), Some(format!("{ep}/lfs/{sha}").as_str()));
    assert_eq!(agent.get(&format!("{ep}/lfs/{sha}")).call().unwrap().into_string().unwrap(), "0123456789");
    assert_eq!(server.request_count(), 10);
}
