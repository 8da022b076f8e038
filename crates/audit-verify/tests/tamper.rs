//! The tamper matrix: for each backend and each class, apply the tampering and
//! check the reported class and sequence.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use audit_core::testing::{read_verified, sample_entry};
use audit_core::{encode_entry_body, AuditLog, Record, Sequencer, Sink, SinkSpec, WriterConfig};
use audit_verify::{verify, FindingClass, Report, Severity, Source, VerifyOptions};
use rusqlite::Connection;

const N: u64 = 30;

async fn write_log(sink: Arc<dyn Sink>) -> Vec<Record> {
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
    read_verified(sink.as_ref()).await
}

/// Record `seq` rewritten with other content and a correctly recomputed hash.
fn forged(records: &[Record], seq: u64, salt: u64) -> Record {
    let prev = (seq > 1).then(|| records[(seq - 2) as usize].head());
    let mut s = Sequencer::resume(prev);
    let mut body = Vec::new();
    let mut e = sample_entry(salt);
    e.agent_id = "mallory".into();
    encode_entry_body(&e, &mut body).expect("ser");
    s.seal(&body)
}

async fn file_log(dir: &Path) -> (PathBuf, Vec<Record>) {
    let sink = sink_file::FileSink::open(sink_file::FileSinkConfig::new("f", dir))
        .await
        .expect("open");
    let recs = write_log(Arc::new(sink)).await;
    let seg = sink_file::segments::list_segments(dir).expect("list")[0]
        .path
        .clone();
    (seg, recs)
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("read");
    data.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).expect("write");
}

async fn check(sources: &[Source]) -> Report {
    verify(sources, &VerifyOptions::default())
        .await
        .expect("verify runs")
}

#[track_caller]
fn assert_finding(report: &Report, source: usize, class: FindingClass, seq: Option<u64>) {
    let s = &report.sources[source];
    assert!(
        s.findings.iter().any(|f| f.class == class && f.seq == seq),
        "expected {class:?} at {seq:?} in {}:\n{}",
        s.source,
        report.human()
    );
    if class != FindingClass::Truncated || s.findings.iter().any(|f| f.severity == Severity::Error)
    {
        assert!(!report.ok || class == FindingClass::Restart);
    }
}

/// Source `source` of `report` holds exactly these findings (class,
/// severity, sequence), in any order: nothing more, nothing less.
#[track_caller]
fn assert_exact(report: &Report, source: usize, want: &[(FindingClass, Severity, Option<u64>)]) {
    let key = |f: &(FindingClass, Severity, Option<u64>)| (format!("{:?}{:?}", f.0, f.1), f.2);
    let mut got: Vec<_> = report.sources[source]
        .findings
        .iter()
        .map(|f| (f.class, f.severity, f.seq))
        .collect();
    got.sort_by_key(key);
    let mut want = want.to_vec();
    want.sort_by_key(key);
    assert_eq!(got, want, "{}", report.human());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tamper_matrix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, recs) = file_log(&dir.path().join("log")).await;
    let original = lines(&seg);
    let src = Source::File(dir.path().join("log"));
    assert!(
        check(std::slice::from_ref(&src)).await.ok,
        "the untouched log verifies"
    );

    let edit = |f: &dyn Fn(&mut Vec<Vec<u8>>)| {
        let mut l = original.clone();
        f(&mut l);
        write_lines(&seg, &l);
    };
    // modified: bytes changed in place.
    edit(&|l| {
        l[9] = String::from_utf8(l[9].clone())
            .expect("utf8")
            .replacen("agent-", "agent_", 1)
            .into_bytes()
    });
    assert_finding(
        &check(std::slice::from_ref(&src)).await,
        0,
        FindingClass::Modified,
        Some(10),
    );
    // modified: rewritten with a recomputed hash.
    edit(&|l| l[9] = forged(&recs, 10, 99).line().to_vec());
    assert_finding(
        &check(std::slice::from_ref(&src)).await,
        0,
        FindingClass::Modified,
        Some(10),
    );
    // deleted.
    edit(&|l| {
        l.remove(9);
    });
    assert_finding(
        &check(std::slice::from_ref(&src)).await,
        0,
        FindingClass::Deleted,
        Some(10),
    );
    // inserted: a forged record claiming sequence 10, next to the real one.
    edit(&|l| l.insert(10, forged(&recs, 10, 77).line().to_vec()));
    assert_finding(
        &check(std::slice::from_ref(&src)).await,
        0,
        FindingClass::Inserted,
        Some(10),
    );
    // reordered.
    edit(&|l| l.swap(9, 10));
    assert_finding(
        &check(std::slice::from_ref(&src)).await,
        0,
        FindingClass::Reordered,
        Some(10),
    );
    // duplicated.
    edit(&|l| {
        let d = l[9].clone();
        l.insert(10, d);
    });
    assert_finding(
        &check(std::slice::from_ref(&src)).await,
        0,
        FindingClass::Duplicated,
        Some(10),
    );
    // malformed: broken JSON, chain members intact.
    edit(&|l| {
        l[9] = String::from_utf8(l[9].clone())
            .expect("utf8")
            .replacen("\"agent_id\":", "\"agent_id\"::", 1)
            .into_bytes()
    });
    assert_finding(
        &check(std::slice::from_ref(&src)).await,
        0,
        FindingClass::Malformed,
        Some(10),
    );
    // truncated mid-line.
    edit(&|l| {
        l.truncate(20);
        let half = l[19].len() / 2;
        l[19].truncate(half);
    });
    let r = check(std::slice::from_ref(&src)).await;
    assert!(
        r.sources[0]
            .findings
            .iter()
            .any(|f| f.class == FindingClass::Truncated),
        "{}",
        r.human()
    );

    // truncated against a full copy; forked against a diverging copy.
    edit(&|_| {});
    let copy_dir = dir.path().join("copy");
    std::fs::create_dir(&copy_dir).expect("mkdir");
    let copy = copy_dir.join(seg.file_name().expect("name"));
    write_lines(&copy, &original[..25]);
    let r = check(&[src.clone(), Source::File(copy_dir.clone())]).await;
    assert_finding(&r, 1, FindingClass::Truncated, Some(26));
    assert!(r.sources[0].ok);
    let mut forked_lines = original[..19].to_vec();
    let mut s = Sequencer::resume(Some(recs[18].head()));
    for i in 0..11 {
        let mut body = Vec::new();
        encode_entry_body(&sample_entry(5000 + i), &mut body).expect("ser");
        forked_lines.push(s.seal(&body).line().to_vec());
    }
    write_lines(&copy, &forked_lines);
    let r = check(&[
        src.clone(),
        Source::File(copy_dir.clone()),
        Source::File(seg.clone()),
    ])
    .await;
    // The forked copy is self-consistent (rechained), so nothing tells which
    // history is genuine: a majority is no proof, and every copy that
    // disagrees is named, whatever the listing order.
    for i in 0..3 {
        assert_finding(&r, i, FindingClass::Forked, Some(20));
        assert!(
            r.sources[i].findings[0]
                .detail
                .contains("none is known good"),
            "{}",
            r.human()
        );
    }
}

fn sqlite_exec(path: &Path, sql: &str) {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        "DROP TRIGGER IF EXISTS records_no_update; DROP TRIGGER IF EXISTS records_no_delete;",
    )
    .expect("drop triggers");
    c.execute_batch(sql).expect("tamper");
}

async fn sqlite_log(path: &Path) -> Vec<Record> {
    let sink = sink_sqlite::SqliteSink::open(sink_sqlite::SqliteSinkConfig::new("db", path))
        .await
        .expect("open");
    write_log(Arc::new(sink)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tamper_matrix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = |name: &str| dir.path().join(format!("{name}.db"));
    let sql_text = |r: &Record| {
        String::from_utf8(r.text().to_vec())
            .expect("utf8")
            .replace('\'', "''")
    };

    let p = fresh("intact");
    sqlite_log(&p).await;
    assert!(check(&[Source::Sqlite(p)]).await.ok);

    let p = fresh("modified");
    sqlite_log(&p).await;
    sqlite_exec(
        &p,
        "UPDATE records SET record = replace(record, 'agent-', 'agent_') WHERE seq = 10;",
    );
    // Two facts about one record: its bytes do not hash to its stored hash,
    // and its indexed agent_id no longer says what the text says.
    assert_exact(
        &check(&[Source::Sqlite(p)]).await,
        0,
        &[
            (FindingClass::Modified, Severity::Error, Some(10)),
            (FindingClass::Modified, Severity::Error, Some(10)),
        ],
    );

    let p = fresh("column");
    sqlite_log(&p).await;
    sqlite_exec(
        &p,
        "UPDATE records SET tool_called = 'harmless' WHERE seq = 10;",
    );
    assert_exact(
        &check(&[Source::Sqlite(p)]).await,
        0,
        &[(FindingClass::Modified, Severity::Error, Some(10))],
    );

    let p = fresh("deleted");
    sqlite_log(&p).await;
    sqlite_exec(&p, "DELETE FROM records WHERE seq = 10;");
    assert_exact(
        &check(&[Source::Sqlite(p)]).await,
        0,
        &[(FindingClass::Deleted, Severity::Error, Some(10))],
    );
    // The first and the last record: a missing start is found, a missing
    // last record is a cut at a record boundary (no key, nothing to find).
    let p = fresh("deleted-first");
    sqlite_log(&p).await;
    sqlite_exec(&p, "DELETE FROM records WHERE seq = 1;");
    assert_exact(
        &check(&[Source::Sqlite(p)]).await,
        0,
        &[(FindingClass::Deleted, Severity::Error, Some(1))],
    );
    let p = fresh("modified-last");
    sqlite_log(&p).await;
    sqlite_exec(
        &p,
        &format!(
            "UPDATE records SET record = replace(record, 'agent-', 'agent_') WHERE seq = {N};"
        ),
    );
    assert_exact(
        &check(&[Source::Sqlite(p)]).await,
        0,
        &[
            (FindingClass::Modified, Severity::Error, Some(N)),
            (FindingClass::Modified, Severity::Error, Some(N)),
        ],
    );

    let p = fresh("inserted");
    let recs = sqlite_log(&p).await;
    let f = forged(&recs, 10, 77);
    sqlite_exec(
        &p,
        &format!(
            "INSERT INTO records (seq, record) VALUES (1000, '{}');",
            sql_text(&f)
        ),
    );
    assert_exact(
        &check(&[Source::Sqlite(p)]).await,
        0,
        // And, about the same row: its key is not its record's sequence,
        // and its index columns were left empty.
        &[
            (FindingClass::Inserted, Severity::Error, Some(10)),
            (FindingClass::Modified, Severity::Error, Some(10)),
            (FindingClass::Modified, Severity::Error, Some(10)),
        ],
    );

    let p = fresh("reordered");
    let recs = sqlite_log(&p).await;
    sqlite_exec(&p, &format!(
        "UPDATE records SET record = '{}' WHERE seq = 10; UPDATE records SET record = '{}' WHERE seq = 11;",
        sql_text(&recs[10]),
        sql_text(&recs[9])
    ));
    assert_exact(
        &check(&[Source::Sqlite(p)]).await,
        0,
        // And, about each of the two rows: its key holds the other record,
        // and its index columns are the other record's.
        &[
            (FindingClass::Reordered, Severity::Error, Some(10)),
            (FindingClass::Modified, Severity::Error, Some(10)),
            (FindingClass::Modified, Severity::Error, Some(10)),
            (FindingClass::Modified, Severity::Error, Some(11)),
            (FindingClass::Modified, Severity::Error, Some(11)),
        ],
    );

    let p = fresh("duplicated");
    let recs = sqlite_log(&p).await;
    sqlite_exec(
        &p,
        &format!(
            "INSERT INTO records (seq, record) VALUES (1000, '{}');",
            sql_text(&recs[9])
        ),
    );
    assert_exact(
        &check(&[Source::Sqlite(p)]).await,
        0,
        // And, as for an insertion: the row key, and the empty columns.
        &[
            (FindingClass::Duplicated, Severity::Error, Some(10)),
            (FindingClass::Modified, Severity::Error, Some(10)),
            (FindingClass::Modified, Severity::Error, Some(10)),
        ],
    );

    let p = fresh("malformed");
    sqlite_log(&p).await;
    sqlite_exec(
        &p,
        "UPDATE records SET record = 'not json at all' WHERE seq = 10;",
    );
    let r = check(&[Source::Sqlite(p)]).await;
    assert!(
        r.sources[0]
            .findings
            .iter()
            .any(|f| f.class == FindingClass::Malformed && f.location.contains("row 10")),
        "{}",
        r.human()
    );

    let full = fresh("full");
    sqlite_log(&full).await;
    let short = fresh("short");
    let copy_of_full = |to: &Path| {
        let c = Connection::open(&full).expect("open");
        c.execute("VACUUM INTO ?1", [to.to_str().expect("utf8 path")])
            .expect("copy");
    };
    copy_of_full(&short);
    sqlite_exec(&short, "DELETE FROM records WHERE seq > 25;");
    let r = check(&[Source::Sqlite(full.clone()), Source::Sqlite(short)]).await;
    assert_finding(&r, 1, FindingClass::Truncated, Some(26));

    let other = fresh("fork");
    copy_of_full(&other);
    let recs = read_verified(
        &sink_sqlite::SqliteLog::open_read_only(&other)
            .await
            .expect("open"),
    )
    .await;
    let f = forged(&recs, 20, 1);
    sqlite_exec(&other, &format!("DELETE FROM records WHERE seq >= 20; INSERT INTO records (seq, record) VALUES (20, '{}');", sql_text(&f)));
    let r = check(&[Source::Sqlite(full), Source::Sqlite(other)]).await;
    assert_finding(&r, 1, FindingClass::Forked, Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_sqlite_copies_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = Arc::new(
        sink_file::FileSink::open(sink_file::FileSinkConfig::new("f", dir.path().join("log")))
            .await
            .expect("file"),
    );
    let db = Arc::new(
        sink_sqlite::SqliteSink::open(sink_sqlite::SqliteSinkConfig::new(
            "db",
            dir.path().join("a.db"),
        ))
        .await
        .expect("db"),
    );
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(file), SinkSpec::required(db)],
    )
    .await
    .expect("open");
    for i in 0..100 {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.close().await;
    let r = check(&[
        Source::File(dir.path().join("log")),
        Source::Sqlite(dir.path().join("a.db")),
    ])
    .await;
    assert!(r.ok, "{}", r.human());
    assert_eq!(r.sources[0].head_hash, r.sources[1].head_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_tamper_matrix() {
    use sink_object::{ObjectSink, ObjectSinkConfig, Service};
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |root: PathBuf| async move {
        let config = ObjectSinkConfig::new("obj", Service::Fs { root }, "audit", "log-1");
        Arc::new(ObjectSink::open(config).await.expect("open"))
    };
    let root = dir.path().join("store");
    let sink = open(root.clone()).await;
    // Small batches so the log spans several segment objects.
    let log = AuditLog::open(
        WriterConfig {
            batch_max_records: 5,
            ..WriterConfig::default()
        },
        vec![SinkSpec::required(sink.clone())],
    )
    .await
    .expect("log");
    let mut tasks = Vec::new();
    for i in 0..N {
        tasks.push(log.append(&sample_entry(i)).await.expect("append"));
    }
    log.close().await;
    let src = Source::Fs {
        root: root.clone(),
        prefix: "audit".into(),
        log_id: None,
    };
    assert!(check(std::slice::from_ref(&src)).await.ok);
    let keys = sink.log().segment_keys().await.expect("keys");
    assert!(keys.len() >= 3, "{keys:?}");
    // Overwrite an object's content in place (what an attacker with write access does).
    let victim = root.join(&keys[1]);
    let original = std::fs::read(&victim).expect("read");
    std::fs::write(
        &victim,
        String::from_utf8(original.clone())
            .expect("utf8")
            .replacen("agent-", "agent_", 1),
    )
    .expect("write");
    let r = check(std::slice::from_ref(&src)).await;
    let first_in_victim = Record::from_text(original.split(|&b| b == b'\n').next().expect("line"))
        .expect("record")
        .seq();
    assert_finding(&r, 0, FindingClass::Modified, Some(first_in_victim));
    assert!(
        r.sources[0]
            .findings
            .iter()
            .any(|f| f.location.contains(&keys[1])),
        "{}",
        r.human()
    );
    // Delete an object.
    std::fs::write(&victim, &original).expect("restore");
    std::fs::remove_file(&victim).expect("delete");
    let r = check(std::slice::from_ref(&src)).await;
    assert_finding(&r, 0, FindingClass::Deleted, Some(first_in_victim));
    drop(tasks);
}
