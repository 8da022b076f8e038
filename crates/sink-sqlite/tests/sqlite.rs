//! Queries, append-only triggers, and bad databases.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use audit_core::testing::{read_verified, sample_entry, sample_records};
use audit_core::{AuditLog, RecordBatch, RecordReader, Sink, SinkError, SinkSpec, WriterConfig};
use rusqlite::Connection;
use sink_sqlite::{Query, SqliteLog, SqliteSink, SqliteSinkConfig};

async fn filled(path: &Path, n: u64) -> Arc<SqliteSink> {
    let sink = Arc::new(
        SqliteSink::open(SqliteSinkConfig::new("db", path))
            .await
            .expect("open"),
    );
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(sink.clone())],
    )
    .await
    .expect("log");
    for i in 0..n {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.close().await;
    sink
}

#[tokio::test]
async fn queries_use_the_indexed_columns_and_carry_seq_and_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = filled(&dir.path().join("q.db"), 200).await;
    let stored = read_verified(sink.as_ref()).await;
    let q = Query {
        agent: Some("agent-03".into()),
        decision: Some("allow".into()),
        ..Query::default()
    };
    let rows = sink.log().query(&q).await.expect("query");
    let expected: Vec<u64> = (0..200u64)
        .filter(|i| i % 17 == 3 && i % 10 != 0)
        .map(|i| i + 1)
        .collect();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), expected);
    for r in &rows {
        let rec = &stored[(r.seq - 1) as usize];
        assert_eq!(r.record_hash, rec.hash().to_hex());
        assert_eq!(r.record.as_slice(), rec.text());
    }
    let tool = sink
        .log()
        .query(&Query {
            tool: Some("send_email".into()),
            limit: Some(3),
            ..Query::default()
        })
        .await
        .expect("query");
    assert_eq!(tool.len(), 3);
    let first = &stored[0];
    let v: serde_json::Value = serde_json::from_slice(first.text()).expect("json");
    let ts = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().expect("ts"))
        .expect("rfc3339");
    let ns = ts.timestamp_nanos_opt().expect("ns");
    let window = sink
        .log()
        .query(&Query {
            since_ns: Some(ns),
            until_ns: Some(ns + 1),
            ..Query::default()
        })
        .await
        .expect("query");
    assert!(window.iter().any(|r| r.seq == 1));
    let by_request = sink
        .log()
        .query(&Query {
            request_id: Some(v["request_id"].as_str().expect("id").into()),
            ..Query::default()
        })
        .await
        .expect("query");
    assert_eq!(by_request.len(), 1);
}

/// Each row's `(seq, record_hash, prev_hash)` as SQL reads them from `from`.
fn hash_columns(path: &Path, from: &str) -> Vec<(u64, String, String)> {
    let c = Connection::open(path).expect("open");
    let mut stmt = c
        .prepare(&format!(
            "SELECT seq, record_hash, prev_hash FROM {from} ORDER BY seq"
        ))
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn expected_hash_columns(records: &[audit_core::Record]) -> Vec<(u64, String, String)> {
    records
        .iter()
        .map(|r| (r.seq(), r.hash().to_hex().to_string(), r.prev().to_string()))
        .collect()
}

#[tokio::test]
async fn rows_hold_the_hashes_only_in_the_text_and_a_view_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.db");
    filled(&path, 50).await;
    // The view finds the hashes at offsets counted in characters from the
    // end, so a record with multi-byte characters must not shift them.
    let sink = filled(&path, 0).await;
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(sink.clone())],
    )
    .await
    .expect("log");
    let mut wide = sample_entry(50);
    wide.agent_id = "agënt-ü-漢字-🦀".into();
    log.append(&wide).await.expect("append");
    log.close().await;
    let stored = read_verified(sink.as_ref()).await;
    assert_eq!(stored.len(), 51);
    assert_eq!(stored[0].prev().to_string(), "genesis");
    assert_eq!(
        hash_columns(&path, "record_hashes"),
        expected_hash_columns(&stored)
    );
    let rows = sink
        .log()
        .query(&Query {
            agent: Some(wide.agent_id.clone()),
            ..Query::default()
        })
        .await
        .expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record_hash, stored[50].hash().to_hex().as_str());
    let c = Connection::open(&path).expect("open");
    let version: i32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, sink_sqlite::schema::SCHEMA_VERSION);
    let columns: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_xinfo('records')")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(
        !columns.iter().any(|c| c.ends_with("hash")),
        "the table has no hash columns, not even virtual ones: {columns:?}"
    );
}

/// The schema of version 1 databases, as that version created them.
const SCHEMA_V1: &str = r#"
    CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        record_hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        record TEXT NOT NULL,
        ts_ns INTEGER,
        agent_id TEXT,
        tool_called TEXT,
        authorization_decision TEXT,
        request_id TEXT,
        task_session_id TEXT
    );
    CREATE INDEX records_ts_ns ON records(ts_ns);
    CREATE INDEX records_agent_id ON records(agent_id, ts_ns);
    CREATE INDEX records_tool_called ON records(tool_called, ts_ns);
    CREATE INDEX records_decision ON records(authorization_decision, ts_ns);
    CREATE INDEX records_request_id ON records(request_id);
    CREATE INDEX records_task_session_id ON records(task_session_id);
    CREATE TRIGGER records_no_update BEFORE UPDATE ON records
        BEGIN SELECT RAISE(ABORT, 'auditlog: records are append-only'); END;
    CREATE TRIGGER records_no_delete BEFORE DELETE ON records
        BEGIN SELECT RAISE(ABORT, 'auditlog: records are append-only'); END;
    PRAGMA application_id = 1096107092;
    PRAGMA user_version = 1;
"#;

#[tokio::test]
async fn version_1_databases_are_appended_in_their_own_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v1.db");
    Connection::open(&path)
        .expect("open")
        .execute_batch(SCHEMA_V1)
        .expect("create v1");
    // Twice, so the second process resumes a version 1 chain.
    filled(&path, 30).await;
    let sink = filled(&path, 30).await;
    let stored = read_verified(sink.as_ref()).await;
    assert_eq!(stored.len(), 60);
    assert_eq!(
        hash_columns(&path, "records"),
        expected_hash_columns(&stored)
    );
    let c = Connection::open(&path).expect("open");
    let version: i32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 1, "a version 1 database is never rewritten");
    let rows = sink
        .log()
        .query(&Query {
            agent: Some("agent-03".into()),
            ..Query::default()
        })
        .await
        .expect("query");
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(
            r.record_hash,
            stored[(r.seq - 1) as usize].hash().to_hex().as_str()
        );
    }
}

#[tokio::test]
async fn triggers_refuse_update_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    filled(&path, 3).await;
    let conn = Connection::open(&path).expect("open");
    let upd = conn.execute("UPDATE records SET agent_id = 'x' WHERE seq = 1", []);
    assert!(upd.is_err_and(|e| e.to_string().contains("append-only")));
    let del = conn.execute("DELETE FROM records WHERE seq = 2", []);
    assert!(del.is_err_and(|e| e.to_string().contains("append-only")));
}

fn sqlite3(db: &Path, sql: &str) {
    // The sink's own connection may still be closing (and checkpointing) on
    // its thread; wait for its lock instead of failing with SQLITE_BUSY.
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 shell is needed for this test (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn modified_at(path: &Path) -> Vec<(u64, String)> {
    let report = audit_verify::verify(
        &[audit_verify::Source::Sqlite(path.to_path_buf())],
        &audit_verify::VerifyOptions::default(),
    )
    .await
    .expect("verify");
    report.sources[0]
        .findings
        .iter()
        .filter(|f| f.class == audit_verify::FindingClass::Modified)
        .map(|f| (f.seq.unwrap_or(0), f.detail.clone()))
        .collect()
}

#[tokio::test]
async fn verifier_finds_edits_made_after_dropping_the_triggers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edit.db");
    filled(&path, 20).await;
    assert!(modified_at(&path).await.is_empty());
    let drop = "DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete;";
    // The verbatim record text.
    sqlite3(
        &path,
        &format!(
            "{drop} UPDATE records SET record = replace(record, 'agent-', 'agent_') WHERE seq = 7;"
        ),
    );
    let found = modified_at(&path).await;
    assert!(
        found.iter().any(|(s, d)| *s == 7 && d.contains("hash")),
        "{found:?}"
    );
    // An indexed column alone, on a fresh copy.
    let path2 = dir.path().join("edit2.db");
    filled(&path2, 20).await;
    sqlite3(
        &path2,
        &format!("{drop} UPDATE records SET agent_id = 'innocent' WHERE seq = 12;"),
    );
    let found = modified_at(&path2).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 12);
    assert!(found[0].1.contains("agent_id"), "{found:?}");
}

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

#[tokio::test]
async fn bad_databases_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'j'; 8192]).expect("write");
    let err = SqliteSink::open(SqliteSinkConfig::new("db", &junk))
        .await
        .expect_err("junk");
    assert!(
        err.to_string().contains("not a SQLite database") && err.to_string().contains("junk.db"),
        "{err}"
    );
    assert_eq!(file_bytes(&junk), vec![b'j'; 8192]);

    // Another application's schema.
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .expect("open")
        .execute_batch("CREATE TABLE users (id INTEGER);")
        .expect("create");
    let before = file_bytes(&other);
    let err = SqliteSink::open(SqliteSinkConfig::new("db", &other))
        .await
        .expect_err("foreign");
    assert!(
        err.to_string().contains("not an auditlog database") && err.to_string().contains("users"),
        "{err}"
    );
    assert_eq!(file_bytes(&other), before);

    // A newer schema version.
    let newer = dir.path().join("newer.db");
    filled(&newer, 2).await;
    Connection::open(&newer)
        .expect("open")
        .pragma_update(None, "user_version", 99)
        .expect("pragma");
    let err = SqliteSink::open(SqliteSinkConfig::new("db", &newer))
        .await
        .expect_err("newer");
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert!(SqliteLog::open_read_only(&newer).await.is_err());

    // Locked by another writer.
    let locked = dir.path().join("locked.db");
    filled(&locked, 2).await;
    let holder = Connection::open(&locked).expect("open");
    holder.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    let mut cfg = SqliteSinkConfig::new("db", &locked);
    cfg.busy_timeout = std::time::Duration::from_millis(100);
    let err = SqliteSink::open(cfg).await.expect_err("locked");
    assert!(
        err.to_string().contains("locked") && err.to_string().contains("locked.db"),
        "{err}"
    );
    holder.execute_batch("ROLLBACK;").expect("unlock");
}

#[tokio::test]
async fn read_only_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ro.db");
    filled(&path, 2).await;
    // Root ignores permission bits, so make the file immutable instead.
    let immutable = Command::new("chattr")
        .arg("+i")
        .arg(&path)
        .status()
        .is_ok_and(|s| s.success());
    if !immutable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
        {
            audit_core::testing::skip_or_fail(
                "read_only_database_is_refused",
                "chattr +i is unavailable here and root ignores mode 0444",
            );
            return;
        }
    }
    let before = file_bytes(&path);
    let result = SqliteSink::open(SqliteSinkConfig::new("db", &path)).await;
    if immutable {
        let _ = Command::new("chattr").arg("-i").arg(&path).status();
    }
    let err = result.expect_err("read-only");
    let msg = err.to_string();
    assert!(
        msg.contains("ro.db")
            && (msg.contains("read-only")
                || msg.contains("readonly")
                || msg.contains("cannot open")),
        "{msg}"
    );
    assert_eq!(file_bytes(&path), before);
}

#[tokio::test]
async fn records_are_byte_identical_to_the_file_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteSink::open(SqliteSinkConfig::new("db", dir.path().join("b.db")))
        .await
        .expect("open");
    let recs = sample_records(None, 5);
    sink.append(&RecordBatch::new(recs.clone()).expect("batch"))
        .await
        .expect("append");
    let back = read_verified(&sink).await;
    for (a, b) in recs.iter().zip(&back) {
        assert_eq!(a.line(), b.line());
    }
    let err = sink
        .append(&RecordBatch::new(recs[..1].to_vec()).expect("batch"))
        .await
        .expect_err("replay");
    assert!(matches!(err, SinkError::NotContiguous { .. }));
}

/// A FIFO where the database or its WAL should be is refused with an error
/// that names it, by the sink and by the reader; SQLite would block on it.
#[tokio::test]
async fn fifo_database_or_wal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.db");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let err = SqliteSink::open(SqliteSinkConfig::new("db", &fifo))
        .await
        .expect_err("a FIFO is not a database");
    assert!(err.to_string().contains("fifo.db is a FIFO"), "{err}");
    let err = SqliteLog::open_read_only(&fifo)
        .await
        .expect_err("nor for reading");
    assert!(err.to_string().contains("fifo.db is a FIFO"), "{err}");

    let real = dir.path().join("real.db");
    filled(&real, 2).await;
    let wal = dir.path().join("real.db-wal");
    let _ = std::fs::remove_file(&wal);
    assert!(Command::new("mkfifo")
        .arg(&wal)
        .status()
        .expect("mkfifo")
        .success());
    let err = SqliteSink::open(SqliteSinkConfig::new("db", &real))
        .await
        .expect_err("a FIFO WAL");
    assert!(err.to_string().contains("real.db-wal is a FIFO"), "{err}");
    let err = SqliteLog::open_read_only(&real)
        .await
        .expect_err("a FIFO WAL, for reading");
    assert!(err.to_string().contains("real.db-wal is a FIFO"), "{err}");
}

/// Several MiB of records, so the checkpoint thread copies the WAL back while
/// batches commit and a reader reads: every record stays, in order, and the
/// database reopens at the same head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_concurrent_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let sink = SqliteSink::open(SqliteSinkConfig::new("db", &path))
        .await
        .expect("open");
    let records = sample_records(None, 8_000);
    let reader = SqliteLog::open_read_only(&path).await.expect("reader");
    let reads = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 8_000 {
            seen = read_verified(&reader).await.len();
        }
    });
    for chunk in records.chunks(64) {
        sink.append(&RecordBatch::new(chunk.to_vec()).expect("batch"))
            .await
            .expect("append");
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), reads)
        .await
        .expect("the reader sees every record")
        .expect("reader task");
    drop(sink);
    let reopened = SqliteSink::open(SqliteSinkConfig::new("db", &path))
        .await
        .expect("reopen");
    assert_eq!(
        reopened.head().await.expect("head"),
        Some(records[7_999].head())
    );
    let stored = read_verified(&reopened).await;
    assert_eq!(stored.len(), 8_000);
    assert!(stored
        .iter()
        .zip(&records)
        .all(|(s, r)| s.text() == r.text()));
}

#[tokio::test]
async fn an_oversized_index_column_is_a_short_finding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.db");
    filled(&path, 5).await;
    // 64 MiB in one index column: more than any record may hold.
    sqlite3(
        &path,
        "DROP TRIGGER records_no_update; \
         UPDATE records SET agent_id = hex(zeroblob(33554432)) WHERE seq = 3;",
    );
    let found = modified_at(&path).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 3);
    assert!(found[0].1.contains("agent_id"), "{}", &found[0].1[..200]);
    assert!(
        found[0].1.len() < 1000,
        "the finding quotes the column whole: {} bytes",
        found[0].1.len()
    );
    // The reader hands out at most the record limit plus one byte of it.
    let log = SqliteLog::open_read_only(&path).await.expect("open");
    let mut cursor = log.read_from(3).await.expect("read");
    let items = cursor.next_batch(1).await.expect("row").expect("some");
    let columns = items[0].columns.clone().expect("columns");
    let agent = columns
        .iter()
        .find(|(c, _)| c == "agent_id")
        .and_then(|(_, v)| v.as_ref())
        .expect("agent_id");
    assert_eq!(agent.len(), (16 << 20) + 1);
}

/// One writer per database: a second SQLite sink on it is refused, in this
/// process and in another.
#[tokio::test]
async fn a_second_writer_is_refused_in_this_process_and_another() {
    audit_core::testing::one_writer(
        "a_second_writer_is_refused_in_this_process_and_another",
        |dir| async move {
            std::fs::create_dir_all(&dir).map_err(|e| SinkError::Backend {
                sink: "db".into(),
                detail: e.to_string(),
            })?;
            SqliteSink::open(SqliteSinkConfig::new("db", dir.join("audit.db")))
                .await
                .map(|s| Arc::new(s) as Arc<dyn Sink>)
        },
    )
    .await;
}
