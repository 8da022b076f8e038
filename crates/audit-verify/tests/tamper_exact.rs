//! The exact tamper matrix: each tampering of a file log, at its first,
//! a middle and its last record, with the exact set of findings it must
//! produce (class, severity, sequence), nothing more and nothing less. A
//! matrix that accepts any matching finding lets a wrong extra finding, or a
//! right one at the wrong record, through.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use audit_core::testing::{read_verified, sample_entry};
use audit_core::{encode_entry_body, AuditLog, Record, Sequencer, Sink, SinkSpec, WriterConfig};
use audit_verify::{verify, FindingClass as C, Report, Severity as S, Source, VerifyOptions};

const N: u64 = 30;

async fn file_log(dir: &Path) -> (PathBuf, Vec<Record>) {
    let sink: Arc<dyn Sink> = Arc::new(
        sink_file::FileSink::open(sink_file::FileSinkConfig::new("f", dir))
            .await
            .expect("open"),
    );
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(sink.clone())],
    )
    .await
    .expect("open");
    for i in 0..N {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.close().await;
    let recs = read_verified(sink.as_ref()).await;
    let seg = sink_file::segments::list_segments(dir).expect("list")[0]
        .path
        .clone();
    (seg, recs)
}

/// Record `seq` rewritten with other content and a recomputed hash.
fn forged(records: &[Record], seq: u64) -> Vec<u8> {
    let prev = (seq > 1).then(|| records[(seq - 2) as usize].head());
    let mut e = sample_entry(7_000 + seq);
    e.agent_id = "mallory".into();
    let mut body = Vec::new();
    encode_entry_body(&e, &mut body).expect("ser");
    Sequencer::resume(prev).seal(&body).line().to_vec()
}

type Found = (C, S, Option<u64>);

fn sorted(mut f: Vec<Found>) -> Vec<Found> {
    f.sort_by_key(|(c, s, q)| (format!("{c:?}"), format!("{s:?}"), *q));
    f
}

fn findings(r: &Report) -> Vec<Found> {
    sorted(
        r.sources[0]
            .findings
            .iter()
            .map(|f| (f.class, f.severity, f.seq))
            .collect(),
    )
}

/// What each tampering of record `p` (of `N`) must produce, exactly. Without
/// a key, a rewrite of the last record and a cut at a record boundary leave
/// a self-consistent log: nothing to find (docs/THREAT_MODEL.md).
fn expected(case: &str, p: u64) -> Vec<Found> {
    let last = p == N;
    match case {
        "edit in place" => vec![(C::Modified, S::Error, Some(p))],
        "rewrite, hash recomputed" if last => vec![],
        "rewrite, hash recomputed" => vec![(C::Modified, S::Error, Some(p))],
        "delete" if last => vec![],
        "delete" => vec![(C::Deleted, S::Error, Some(p))],
        "duplicate" => vec![(C::Duplicated, S::Error, Some(p))],
        "swap with the next" if last => vec![(C::Reordered, S::Error, Some(p - 1))],
        "swap with the next" => vec![(C::Reordered, S::Error, Some(p))],
        "break the JSON" => vec![(C::Malformed, S::Error, Some(p))],
        "cut mid-line" => vec![(C::Truncated, S::Warning, None)],
        other => panic!("no expectation for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampering_gives_exactly_its_findings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, recs) = file_log(&dir.path().join("log")).await;
    let original: Vec<Vec<u8>> = std::fs::read(&seg)
        .expect("read")
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let src = Source::File(dir.path().join("log"));
    type Edit = Box<dyn Fn(&mut Vec<Vec<u8>>, usize)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "edit in place",
            Box::new(|l, i| {
                let t = String::from_utf8(l[i].clone()).expect("utf8");
                l[i] = t.replacen("agent-", "agent_", 1).into_bytes();
            }),
        ),
        ("rewrite, hash recomputed", Box::new(|_, _| {})),
        (
            "delete",
            Box::new(|l, i| {
                l.remove(i);
            }),
        ),
        (
            "duplicate",
            Box::new(|l, i| {
                let d = l[i].clone();
                l.insert(i + 1, d);
            }),
        ),
        (
            "swap with the next",
            Box::new(|l, i| {
                let j = if i + 1 < l.len() { i + 1 } else { i - 1 };
                l.swap(i, j);
            }),
        ),
        (
            "break the JSON",
            Box::new(|l, i| {
                let t = String::from_utf8(l[i].clone()).expect("utf8");
                l[i] = t
                    .replacen("\"agent_id\":", "\"agent_id\"::", 1)
                    .into_bytes();
            }),
        ),
        (
            "cut mid-line",
            Box::new(|l, i| {
                l.truncate(i + 1);
                let half = l[i].len() / 2;
                l[i].truncate(half);
            }),
        ),
    ];
    for (name, edit) in &cases {
        for i in [0usize, 9, (N - 1) as usize] {
            let mut l = original.clone();
            if *name == "rewrite, hash recomputed" {
                l[i] = forged(&recs, i as u64 + 1);
            } else {
                edit(&mut l, i);
            }
            std::fs::write(&seg, l.concat()).expect("write");
            let r = verify(std::slice::from_ref(&src), &VerifyOptions::default())
                .await
                .expect("verify");
            let want = expected(name, i as u64 + 1);
            assert_eq!(
                findings(&r),
                sorted(want.clone()),
                "{name} at record {}:\n{}",
                i + 1,
                r.human()
            );
            assert_eq!(
                r.ok,
                want.iter().all(|(_, s, _)| *s == S::Warning),
                "{name} at {}",
                i + 1
            );
        }
    }
    std::fs::write(&seg, original.concat()).expect("restore");
}

/// The same matrix on an object log (OpenDAL's fs service), whose records
/// span several segment objects: each tampering is made inside the object
/// holding the record, as someone with write access to the bucket would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampering_of_an_object_log_gives_exactly_its_findings() {
    use sink_object::{ObjectSink, ObjectSinkConfig, Service};
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let sink = Arc::new(
        ObjectSink::open(ObjectSinkConfig::new(
            "obj",
            Service::Fs { root: root.clone() },
            "audit",
            "log-1",
        ))
        .await
        .expect("open"),
    );
    let log = AuditLog::open(
        WriterConfig {
            batch_max_records: 5,
            ..WriterConfig::default()
        },
        vec![SinkSpec::required(sink.clone())],
    )
    .await
    .expect("log");
    // Concurrent appends, so that batches (one object each) hold several.
    let log = Arc::new(log);
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(&sample_entry(i)).await.expect("append") })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    log.close().await;
    let recs = read_verified(sink.as_ref()).await;
    assert_eq!(recs.len() as u64, N);
    let keys = sink.log().segment_keys().await.expect("keys");
    assert!(keys.len() >= 3, "{keys:?}");
    let objects: Vec<Vec<Vec<u8>>> = keys
        .iter()
        .map(|k| {
            std::fs::read(root.join(k))
                .expect("read")
                .split_inclusive(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect()
        })
        .collect();
    let restore = || {
        for (k, o) in keys.iter().zip(&objects) {
            std::fs::write(root.join(k), o.concat()).expect("restore");
        }
    };
    let src = Source::Fs {
        root: root.clone(),
        prefix: "audit".into(),
        log_id: None,
    };
    // (object, line) of the first record, one inside the second object,
    // and the last record.
    let last_obj = objects.len() - 1;
    let middle = (1..last_obj)
        .find(|&o| objects[o].len() >= 2)
        .expect("an object of several records");
    let positions = [(0, 0), (middle, 1), (last_obj, objects[last_obj].len() - 1)];
    let seq_at = |o: usize, l: usize| -> u64 {
        objects[..o].iter().map(|x| x.len() as u64).sum::<u64>() + l as u64 + 1
    };
    let mut ran = 0;
    for case in [
        "edit in place",
        "rewrite, hash recomputed",
        "delete",
        "duplicate",
        "swap with the next",
        "break the JSON",
        "cut mid-line",
    ] {
        for &(o, i) in &positions {
            restore();
            let p = seq_at(o, i);
            let mut l = objects[o].clone();
            match case {
                "edit in place" => {
                    let t = String::from_utf8(l[i].clone()).expect("utf8");
                    l[i] = t.replacen("agent-", "agent_", 1).into_bytes();
                }
                "rewrite, hash recomputed" => l[i] = forged(&recs, p),
                "delete" => {
                    l.remove(i);
                }
                "duplicate" => {
                    let d = l[i].clone();
                    l.insert(i + 1, d);
                }
                // Within the object: a swap across objects renames both.
                "swap with the next" if l.len() < 2 => continue,
                "swap with the next" => {
                    let j = if i + 1 < l.len() { i + 1 } else { i - 1 };
                    l.swap(i, j);
                }
                "break the JSON" => {
                    let t = String::from_utf8(l[i].clone()).expect("utf8");
                    l[i] = t
                        .replacen("\"agent_id\":", "\"agent_id\"::", 1)
                        .into_bytes();
                }
                _ => {
                    // Cut mid-line: this object ends inside record p, and
                    // the objects after it are gone.
                    l.truncate(i + 1);
                    let half = l[i].len() / 2;
                    l[i].truncate(half);
                    for k in &keys[o + 1..] {
                        std::fs::remove_file(root.join(k)).expect("remove");
                    }
                }
            }
            if l.is_empty() {
                std::fs::remove_file(root.join(&keys[o])).expect("remove");
            } else {
                std::fs::write(root.join(&keys[o]), l.concat()).expect("write");
            }
            let r = verify(std::slice::from_ref(&src), &VerifyOptions::default())
                .await
                .expect("verify");
            let want = expected(case, p);
            assert_eq!(
                findings(&r),
                sorted(want.clone()),
                "{case} at record {p} (object {o}):\n{}",
                r.human()
            );
            ran += 1;
        }
    }
    restore();
    // Only a swap inside a one-record object is skipped.
    assert!(
        ran >= 19,
        "{ran} cases ran; objects of {:?} records",
        objects.iter().map(Vec::len).collect::<Vec<_>>()
    );
}
