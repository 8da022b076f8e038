//! `audit-verify` on object-storage sources, end to end through the binary:
//! it creates nothing, a source naming no log is an error (exit 2) that says
//! which, and a segment object renamed away from its first record is found.

use std::path::Path;
use std::process::Command;

use audit_core::testing::sample_records;
use audit_core::{RecordBatch, Sink};
use sink_object::{ObjectSink, ObjectSinkConfig, Service};

/// Writes 12 records in segments of 4 under `root`, log `audit/log`.
async fn write_log(root: &Path) {
    let config = ObjectSinkConfig::new(
        "obj",
        Service::Fs {
            root: root.to_path_buf(),
        },
        "audit",
        "log",
    );
    let sink = ObjectSink::open(config).await.expect("open");
    for chunk in sample_records(None, 12).chunks(4) {
        sink.append(&RecordBatch::new(chunk.to_vec()).expect("contiguous"))
            .await
            .expect("append");
    }
}

/// Runs `audit-verify SOURCE`: its exit status and stdout + stderr.
fn verify(source: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-verify"))
        .arg(source)
        .output()
        .expect("run audit-verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Every path under `dir`, with its size, sorted.
fn tree(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let meta = e.metadata().expect("metadata");
            out.push((e.path().display().to_string(), meta.len()));
            if meta.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_missing_fs_root_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-root");
    let (code, text) = verify(&format!("fs:{}?prefix=audit&log=log", missing.display()));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(!missing.exists(), "verify created {}", missing.display());
}

#[tokio::test]
async fn a_wrong_log_or_prefix_is_an_error_naming_the_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path()).await;
    let before = tree(dir.path());
    let root = dir.path().display();
    let (code, text) = verify(&format!("fs:{root}?prefix=audit&log=log"));
    assert_eq!(code, 0, "the right names verify: {text}");
    for (source, names) in [
        (format!("fs:{root}?prefix=audit&log=typo"), "audit/typo/"),
        (format!("fs:{root}?prefix=typo&log=log"), "typo/log/"),
        (format!("fs:{root}?prefix=typo"), "no log"),
    ] {
        let (code, text) = verify(&source);
        assert_eq!(code, 2, "{source}: {text}");
        assert!(
            text.contains(names) && text.contains(&format!("fs:{root}")),
            "{source}: {text}"
        );
    }
    assert_eq!(tree(dir.path()), before, "verify changed the store");
}

/// Issue 18 finding 15: without `log=`, the prefix's only log is verified,
/// and the report names it, so a log planted in place of a deleted one is
/// seen under its own name.
#[tokio::test]
async fn the_report_names_the_log_taken_for_want_of_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path()).await;
    let root = dir.path().display();
    let (code, text) = verify(&format!("fs:{root}?prefix=audit"));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("fs:{root}?prefix=audit&log=log")),
        "{text}"
    );
}

/// A segment object renamed so that its name no longer gives its first
/// record's sequence (the chain itself is intact, and still sorts in order).
#[tokio::test]
async fn a_renamed_segment_object_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path()).await;
    let segments = dir.path().join("audit/log/segments");
    std::fs::rename(
        segments.join("00000000000000000005.jsonl"),
        segments.join("00000000000000000006.jsonl"),
    )
    .expect("rename");
    let (code, text) = verify(&format!("fs:{}?prefix=audit&log=log", dir.path().display()));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("named for sequence 6 but starts with 5")
            && text.contains("00000000000000000006.jsonl"),
        "{text}"
    );
}

/// Logs written before 2026-11-27 name segments `<first>-<last>.jsonl`:
/// both ends are checked, so a segment cut short and renamed to match its
/// first record still disagrees with its name.
#[tokio::test]
async fn an_old_form_segment_name_is_checked_at_both_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path()).await;
    let segments = dir.path().join("audit/log/segments");
    for (first, last) in [(1, 4), (5, 8), (9, 12)] {
        std::fs::rename(
            segments.join(format!("{first:020}.jsonl")),
            segments.join(format!("{first:020}-{last:020}.jsonl")),
        )
        .expect("rename");
    }
    let source = format!("fs:{}?prefix=audit&log=log", dir.path().display());
    let (code, text) = verify(&source);
    assert_eq!(code, 0, "the old names, as written: {text}");
    // The middle segment renamed to claim one record more than it holds.
    std::fs::rename(
        segments.join(format!("{:020}-{:020}.jsonl", 5, 8)),
        segments.join(format!("{:020}-{:020}.jsonl", 5, 9)),
    )
    .expect("rename");
    let (code, text) = verify(&source);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("named as ending at sequence 9 but its last record is 8"),
        "{text}"
    );
}

/// `HEAD` is not read by the verifier: a garbled one changes nothing.
#[tokio::test]
async fn verify_ignores_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path()).await;
    let source = format!("fs:{}?prefix=audit&log=log", dir.path().display());
    let (code, clean) = verify(&source);
    assert_eq!(code, 0, "{clean}");
    std::fs::write(
        dir.path().join("audit/log/HEAD"),
        r#"{"key":"audit/log/segments/zzz.jsonl","seq":99,"hash":"00"}"#,
    )
    .expect("HEAD");
    let (code, text) = verify(&source);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("records: 12"), "{text}");
    assert_eq!(text, clean);
}
