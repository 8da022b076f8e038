//! Sources that must not be misread: SQLite rows keyed outside the chain, a
//! database named as a file log, missing or foreign paths, and a verify that
//! must leave what it reads exactly as it found it. Each test runs the
//! `audit-verify` binary, as an operator would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_core::testing::sample_entry;
use audit_core::{AuditLog, RecordReader, SinkSpec, WriterConfig};
use rusqlite::Connection;
use sink_file::{FileSink, FileSinkConfig};
use sink_sqlite::{Query, SqliteLog, SqliteSink, SqliteSinkConfig};

/// Runs `audit-verify` with `args`, killing it if it has not finished within
/// a minute (a reader that loops must fail the test, not hang it).
fn verify(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_audit-verify"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn audit-verify");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            child.kill().expect("kill");
            let out = child.wait_with_output().expect("output");
            panic!(
                "audit-verify {args:?} did not finish within a minute; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A closed SQLite log of `n` records, written by the sink.
async fn sqlite_log(path: &Path, n: u64) {
    let sink = SqliteSink::open(SqliteSinkConfig::new("db", path))
        .await
        .expect("open");
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(Arc::new(sink))],
    )
    .await
    .expect("log");
    for i in 0..n {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.close().await;
}

/// A closed file log of `n` records, written by the sink.
async fn file_log(dir: &Path, n: u64) {
    let sink = FileSink::open(FileSinkConfig::new("file", dir))
        .await
        .expect("open");
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(Arc::new(sink))],
    )
    .await
    .expect("log");
    for i in 0..n {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.close().await;
}

/// A directory entry's type, size, mode, mtime (seconds, nanoseconds) and
/// bytes.
type Entry = (String, u64, u32, i64, i64, Vec<u8>);

/// Every entry under `dir`, recursively: what a verify must leave as it was.
fn listing(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("stat");
            let bytes = if m.is_file() {
                std::fs::read(&p).expect("read")
            } else {
                Vec::new()
            };
            if m.is_dir() {
                todo.push(p.clone());
            }
            out.insert(
                p,
                (
                    format!("{:?}", m.file_type()),
                    m.len(),
                    m.mode(),
                    m.mtime(),
                    m.mtime_nsec(),
                    bytes,
                ),
            );
        }
    }
    out
}

/// Inserts a copy of record `of`'s row under key `key`, with the sink's
/// triggers in place (they stop UPDATE and DELETE, not INSERT).
fn insert_copy(db: &Path, key: i64, of: i64) -> rusqlite::Result<usize> {
    let conn = Connection::open(db)?;
    conn.execute(
        "INSERT INTO records (seq, record, ts_ns, agent_id, tool_called, authorization_decision, \
         request_id, task_session_id) SELECT ?1, record, ts_ns, agent_id, tool_called, \
         authorization_decision, request_id, task_session_id FROM records WHERE seq = ?2",
        rusqlite::params![key, of],
    )
}

/// Makes `db`'s `records` table accept what the current schema refuses, as
/// an older version 2 database (created before `CHECK (seq > 0)`) does:
/// the same table without the check, rows and triggers kept.
fn drop_seq_check(db: &Path) {
    let conn = Connection::open(db).expect("open");
    conn.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_master SET sql = replace(sql, 'CHECK (seq > 0)', '')
             WHERE type = 'table' AND name = 'records';
         PRAGMA writable_schema = OFF;",
    )
    .expect("drop the check");
}

fn findings(out: &Output) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    v["sources"][0]["findings"]
        .as_array()
        .expect("findings")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_keyed_zero_or_below_is_an_error_at_its_row() {
    for key in [-1i64, 0] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("audit.db");
        sqlite_log(&db, 3).await;
        drop_seq_check(&db);
        insert_copy(&db, key, 2).expect("insert with the triggers in place");
        let spec = format!("sqlite:{}", db.display());
        let out = verify(&[&spec, "--json"]);
        assert_eq!(out.status.code(), Some(1), "key {key}: {}", text(&out));
        let location = format!("{} row {key}", db.display());
        assert!(
            findings(&out).iter().any(|f| f["class"] == "modified"
                && f["severity"] == "error"
                && f["location"] == location.as_str()
                && f["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("row key {key} holds record 2")))),
            "key {key}: {}",
            text(&out)
        );
        // The human report names the row too.
        let out = verify(&[&spec]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(&location), "{}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_keyed_i64_max_ends_the_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    sqlite_log(&db, 2).await;
    insert_copy(&db, i64::MAX, 1).expect("insert");
    let spec = format!("sqlite:{}", db.display());
    let out = verify(&[&spec, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let location = format!("{} row {}", db.display(), i64::MAX);
    let at_max: Vec<_> = findings(&out)
        .into_iter()
        .filter(|f| f["location"] == location.as_str())
        .collect();
    // Read once, not again and again.
    assert!(!at_max.is_empty(), "{}", text(&out));
    assert!(at_max.len() <= 2, "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_never_returns_a_row_keyed_zero_or_below() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    sqlite_log(&db, 3).await;
    drop_seq_check(&db);
    insert_copy(&db, -1, 1).expect("insert");
    insert_copy(&db, 0, 2).expect("insert");
    let log = SqliteLog::open_read_only(&db).await.expect("open");
    let rows = log.query(&Query::default()).await.expect("query");
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // Same filter as the copied row's: still only the real record.
    let first: serde_json::Value = serde_json::from_slice(&rows[0].record).expect("json");
    let by_request = log
        .query(&Query {
            request_id: first["request_id"].as_str().map(str::to_owned),
            ..Query::default()
        })
        .await
        .expect("query");
    assert_eq!(by_request.iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_still_reads_from_one_past_rows_keyed_below_one() {
    // read_from(n >= 1) serves catch-up and backfill: rows keyed 0 or below
    // are not records, and must not be handed to them.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    sqlite_log(&db, 3).await;
    drop_seq_check(&db);
    insert_copy(&db, -5, 3).expect("insert");
    let log = SqliteLog::open_read_only(&db).await.expect("open");
    let rowids = |from: u64| {
        let log = log.clone();
        async move {
            let mut cursor = log.read_from(from).await.expect("read");
            let mut ids = Vec::new();
            while let Some(batch) = cursor.next_batch(2).await.expect("batch") {
                for item in batch {
                    match item.location {
                        audit_core::Location::Row { rowid, .. } => ids.push(rowid),
                        other => panic!("not a row: {other}"),
                    }
                }
            }
            ids
        }
    };
    assert_eq!(rowids(1).await, [1, 2, 3]);
    assert_eq!(rowids(2).await, [2, 3]);
    assert_eq!(rowids(0).await, [-5, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_databases_refuse_a_row_keyed_zero_or_below() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    sqlite_log(&db, 2).await;
    for key in [-1i64, 0] {
        let err = insert_copy(&db, key, 1).expect_err("refused");
        assert!(err.to_string().contains("CHECK constraint"), "{err}");
    }
    // Still version 2, and still appended to by the sink.
    let conn = Connection::open(&db).expect("open");
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 2);
    drop(conn);
    sqlite_log(&db, 1).await;
    let spec = format!("sqlite:{}", db.display());
    let out = verify(&[&spec]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_database_named_as_a_file_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    sqlite_log(&db, 2).await;
    let bare = db.display().to_string();
    let file = format!("file:{bare}");
    for spec in [&bare, &file] {
        let out = verify(&[spec]);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{bare} is a SQLite database"))
                && err.contains(&format!("sqlite:{bare}")),
            "{spec}: {}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_path_is_exit_2_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-log");
    let bare = missing.display().to_string();
    for spec in [
        bare.clone(),
        format!("file:{bare}"),
        format!("sqlite:{bare}"),
    ] {
        let out = verify(&[&spec]);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{bare} does not exist")),
            "{spec}: {}",
            text(&out)
        );
    }
    assert!(!missing.exists(), "verify created {bare}");
    assert!(listing(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sources_that_are_not_auditlog_databases_are_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A JSONL file.
    let jsonl = dir.path().join("log.jsonl");
    std::fs::write(&jsonl, b"{\"a\":1}\n").expect("write");
    // Another application's database.
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .and_then(|c| {
            c.execute_batch(
                "PRAGMA application_id = 1234; CREATE TABLE records (seq INTEGER PRIMARY KEY);",
            )
        })
        .expect("other");
    // auditlog's marks on a table whose seq is not the rowid: paging by seq
    // would skip rows with a NULL or repeated seq.
    let forged = dir.path().join("forged.db");
    Connection::open(&forged)
        .and_then(|c| {
            c.execute_batch(&format!(
                "PRAGMA application_id = {}; PRAGMA user_version = 2;
                 CREATE TABLE records (seq INT PRIMARY KEY, record TEXT NOT NULL, ts_ns INTEGER,
                     agent_id TEXT, tool_called TEXT, authorization_decision TEXT,
                     request_id TEXT, task_session_id TEXT);",
                sink_sqlite::schema::APPLICATION_ID
            ))
        })
        .expect("forged");
    for (path, says) in [
        (&jsonl, "is not a SQLite database"),
        (&other, "is not an auditlog database"),
        (&forged, "does not have seq as its INTEGER PRIMARY KEY"),
    ] {
        let before = listing(dir.path());
        let spec = format!("sqlite:{}", path.display());
        let out = verify(&[&spec]);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&path.display().to_string()) && err.contains(says),
            "{spec}: {}",
            text(&out)
        );
        assert_eq!(listing(dir.path()), before, "{spec} changed the directory");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_leaves_the_directory_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("file-log");
    file_log(&logs, 5).await;
    let db = dir.path().join("audit.db");
    sqlite_log(&db, 5).await;
    let before = listing(dir.path());
    assert!(
        !before.keys().any(|p| p.to_string_lossy().ends_with("-wal")),
        "the closed database still has a -wal: {:?}",
        before.keys()
    );
    for spec in [
        format!("file:{}", logs.display()),
        logs.display().to_string(),
        format!("sqlite:{}", db.display()),
    ] {
        let out = verify(&[&spec]);
        assert_eq!(out.status.code(), Some(0), "{spec}: {}", text(&out));
        let after = listing(dir.path());
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{spec} created or removed files"
        );
        assert!(after == before, "{spec} changed a file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_sources_create_nothing_and_do_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty_dir = dir.path().join("empty-dir");
    std::fs::create_dir(&empty_dir).expect("mkdir");
    let empty_file = dir.path().join("empty.jsonl");
    std::fs::write(&empty_file, b"").expect("write");
    for spec in [
        format!("file:{}", empty_dir.display()),
        empty_file.display().to_string(),
        format!("sqlite:{}", empty_file.display()),
    ] {
        let before = listing(dir.path());
        let out = verify(&[&spec]);
        // 0 today; 2 ("holds no records") once verify refuses empty sources.
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "{spec}: {}",
            text(&out)
        );
        assert_eq!(listing(dir.path()), before, "{spec} changed the directory");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_database_is_read_through_its_side_files() {
    // While a writer holds the database, its -wal and -shm exist; verify
    // reads through them (and sees records not yet checkpointed).
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    let sink = SqliteSink::open(SqliteSinkConfig::new("db", &db))
        .await
        .expect("open");
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(Arc::new(sink))],
    )
    .await
    .expect("log");
    for i in 0..4 {
        log.append(&sample_entry(i)).await.expect("append");
    }
    let spec = format!("sqlite:{}", db.display());
    let out = verify(&[&spec, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["sources"][0]["records"], 4, "{}", text(&out));
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_database_opened_by_a_writer_mid_read_fails_the_read() {
    // A closed database is read without locks or side files; if a writer
    // opens it meanwhile, what was read may be torn and is not a verdict.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    sqlite_log(&db, 4).await;
    let log = SqliteLog::open_read_only(&db).await.expect("open");
    let mut cursor = log.read_from(0).await.expect("read");
    assert_eq!(
        cursor.next_batch(2).await.expect("batch").map(|b| b.len()),
        Some(2)
    );
    let writer = SqliteSink::open(SqliteSinkConfig::new("db", &db))
        .await
        .expect("writer");
    let err = cursor.next_batch(2).await.expect_err("changed");
    assert!(
        err.to_string()
            .contains("opened by a writer while it was being read"),
        "{err}"
    );
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_database_at_a_path_with_uri_syntax_is_read() {
    // The immutable open names the file by URI: `?`, `#` and `%` in the
    // path must reach SQLite as part of the name.
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("a dir?x=1#y%41");
    std::fs::create_dir(&sub).expect("mkdir");
    let db = sub.join("audit é.db");
    sqlite_log(&db, 3).await;
    let before = listing(dir.path());
    let spec = format!("sqlite:{}", db.display());
    let out = verify(&[&spec, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["sources"][0]["records"], 3, "{}", text(&out));
    assert_eq!(listing(dir.path()), before);
}

/// The standalone verifier reads no config: a second reading of it, laxer
/// than `audit append`'s, would check something else than what is written.
#[test]
fn config_is_refused_here_and_pointed_to_audit_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        "[[sinks]]\nkind = \"file\"\nname = \"f\"\ndir = \"log\"\n",
    )
    .expect("write");
    let out = verify(&["--config", &config.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`audit verify --config"),
        "{}",
        text(&out)
    );
}
