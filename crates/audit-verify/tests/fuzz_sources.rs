//! A bounded fuzz run over whole hostile sources: segment directories with
//! arbitrary names, sizes and contents, and SQLite databases with arbitrary
//! rows, built from a genuine signed log (seals, MAC seals, checkpoints) cut,
//! flipped, shuffled and mixed with garbage. The verifier must answer every
//! one (a report or a clean error), never panic, and finish within a minute.
//! `PROPTEST_CASES` raises the number of cases (CI runs the default).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use audit_core::checkpoint::KeyPair;
use audit_core::testing::sample_entry;
use audit_core::{AuditLog, CheckpointConfig, MemorySink, SinkSpec, WriterConfig};
use audit_verify::{verify, Source, VerifyOptions};
use proptest::prelude::*;

/// The genuine log the cases are cut from, and its key.
struct Genuine {
    key: Arc<KeyPair>,
    lines: Vec<Vec<u8>>,
}

fn genuine() -> &'static Genuine {
    static G: OnceLock<Genuine> = OnceLock::new();
    G.get_or_init(|| {
        let key = Arc::new(KeyPair::generate("audit.fuzz").expect("key"));
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let lines = rt.block_on(async {
            let mem = MemorySink::new("mem");
            let mut cp = CheckpointConfig::new(key.clone(), "audit.fuzz/log");
            cp.every_records = 15;
            cp.sign_seals_every_records = 8;
            let config = WriterConfig {
                checkpoints: Some(cp),
                batch_max_records: 4,
                ..WriterConfig::default()
            };
            let log = AuditLog::open(config, vec![SinkSpec::required(Arc::new(mem.clone()))])
                .await
                .expect("open");
            for i in 0..60 {
                log.append(&sample_entry(i)).await.expect("append");
            }
            log.close().await;
            mem.records()
                .iter()
                .map(|r| r.text().to_vec())
                .collect::<Vec<_>>()
        });
        Genuine { key, lines }
    })
}

/// One hostile piece of a file: genuine lines (a range, maybe mutated),
/// garbage bytes, NULs or a hole.
#[derive(Debug, Clone)]
enum Piece {
    Lines {
        from: usize,
        len: usize,
        flip: Option<(usize, u8)>,
        newline: bool,
    },
    Garbage(Vec<u8>),
    Zeros(usize),
    Hole(u64),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        6 => (0usize..200, 0usize..40, proptest::option::of((0usize..100_000, any::<u8>())), any::<bool>())
            .prop_map(|(from, len, flip, newline)| Piece::Lines { from, len, flip, newline }),
        2 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Piece::Garbage),
        1 => (0usize..5000).prop_map(Piece::Zeros),
        1 => (60_000u64..(1 << 32)).prop_map(Piece::Hole),
    ]
}

/// Writes `pieces` to `path`; a hole is a seek past the end.
fn write_pieces(path: &Path, pieces: &[Piece]) {
    use std::io::{Seek, SeekFrom, Write};
    let g = genuine();
    let mut f = std::fs::File::create(path).expect("create");
    for p in pieces {
        match p {
            Piece::Lines {
                from,
                len,
                flip,
                newline,
            } => {
                let from = from % g.lines.len();
                let end = (from + len).min(g.lines.len());
                let mut bytes = Vec::new();
                for l in &g.lines[from..end] {
                    bytes.extend_from_slice(l);
                    bytes.push(b'\n');
                }
                if let Some((at, b)) = flip {
                    if !bytes.is_empty() {
                        let at = at % bytes.len();
                        bytes[at] ^= b | 1;
                    }
                }
                if !newline && !bytes.is_empty() {
                    bytes.pop();
                }
                f.write_all(&bytes).expect("write");
            }
            Piece::Garbage(b) => f.write_all(b).expect("write"),
            Piece::Zeros(n) => f.write_all(&vec![0u8; *n]).expect("write"),
            Piece::Hole(n) => {
                f.seek(SeekFrom::Current(*n as i64)).expect("seek");
            }
        }
    }
    // A trailing hole becomes length.
    let end = f.stream_position().expect("pos");
    f.set_len(end).expect("len");
}

/// A segment name: well formed with any sequence, or near misses.
fn segment_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..300).prop_map(|n| format!("audit-{n:020}.jsonl")),
        1 => any::<u64>().prop_map(|n| format!("audit-{n:020}.jsonl")),
        1 => (0u64..300, 1u8..4).prop_map(|(n, k)| format!("audit-{n:020}.{k}.jsonl")),
        1 => "[a-zA-Z0-9._-]{1,30}",
        1 => (0u64..300).prop_map(|n| format!("audit-{n:020}.jsonl.torn-{n}")),
    ]
}

fn options(with_key: bool) -> VerifyOptions {
    let g = genuine();
    if !with_key {
        return VerifyOptions::default();
    }
    VerifyOptions {
        public_keys: vec![g.key.public()],
        mac_keys: vec![g.key.seal_mac_key()],
        ..VerifyOptions::default()
    }
}

/// Runs the verifier within a minute; a panic fails the case, and so does
/// running past the minute.
fn run(source: Source, with_key: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let opts = options(with_key);
    let out = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), verify(&[source], &opts)).await
    });
    match out {
        Err(_) => panic!("verify did not finish within a minute"),
        // A clean error (nothing readable, say) is an answer too.
        Ok(Err(e)) => assert!(!e.to_string().is_empty()),
        Ok(Ok(report)) => assert_eq!(report.sources.len(), 1),
    }
}

/// An arbitrary SQLite row: any key, text cut from the genuine log or
/// garbage, index columns that may disagree.
#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    line: usize,
    flip: Option<(usize, u8)>,
    garbage: Option<Vec<u8>>,
    agent: Option<String>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop_oneof![4 => 1i64..120, 1 => any::<i64>()],
        0usize..200,
        proptest::option::of((0usize..2000, any::<u8>())),
        proptest::option::weighted(0.2, prop::collection::vec(any::<u8>(), 0..200)),
        proptest::option::weighted(0.2, "[a-z]{0,8}"),
    )
        .prop_map(|(seq, line, flip, garbage, agent)| Row {
            seq,
            line,
            flip,
            garbage,
            agent,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn hostile_segment_directories_get_an_answer(
        files in prop::collection::vec((segment_name(), prop::collection::vec(piece(), 0..6)), 0..5),
        with_key in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, pieces) in &files {
            write_pieces(&dir.path().join(name), pieces);
        }
        run(Source::File(dir.path().to_path_buf()), with_key);
    }

    #[test]
    fn hostile_single_files_get_an_answer(
        pieces in prop::collection::vec(piece(), 0..8),
        with_key in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.jsonl");
        write_pieces(&path, &pieces);
        run(Source::File(path), with_key);
    }

    #[test]
    fn hostile_sqlite_rows_get_an_answer(
        keep in 0usize..80,
        rows in prop::collection::vec(row(), 0..20),
        deletes in prop::collection::vec(0i64..120, 0..5),
        with_key in any::<bool>(),
    ) {
        let g = genuine();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("audit.db");
        // The sink's own schema, with the genuine log's first records.
        let rt = tokio::runtime::Runtime::new().expect("rt");
        rt.block_on(async {
            let sink = sink_sqlite::SqliteSink::open(sink_sqlite::SqliteSinkConfig::new("db", &db))
                .await
                .expect("open");
            let records: Vec<audit_core::Record> = g.lines[..keep.min(g.lines.len())]
                .iter()
                .map(|l| audit_core::Record::from_text(l).expect("record"))
                .collect();
            if !records.is_empty() {
                use audit_core::Sink;
                sink.append(&audit_core::RecordBatch::new(records).expect("batch"))
                    .await
                    .expect("append");
            }
        });
        drop(rt);
        // An attacker with the database: triggers and checks out of the way.
        let conn = rusqlite::Connection::open(&db).expect("conn");
        conn.execute_batch("DROP TRIGGER IF EXISTS records_no_update; DROP TRIGGER IF EXISTS records_no_delete;")
            .expect("drop triggers");
        for seq in deletes {
            conn.execute("DELETE FROM records WHERE seq = ?1", [seq]).expect("delete");
        }
        for r in rows {
            let mut text = match &r.garbage {
                Some(b) => b.clone(),
                None => g.lines[r.line % g.lines.len()].clone(),
            };
            if let Some((at, b)) = r.flip {
                if !text.is_empty() {
                    let at = at % text.len();
                    text[at] ^= b | 1;
                }
            }
            let text = String::from_utf8_lossy(&text).into_owned();
            // Rows the schema's CHECK refuses stay out, as they would.
            let _ = conn.execute(
                "INSERT OR REPLACE INTO records (seq, record, agent_id) VALUES (?1, ?2, ?3)",
                rusqlite::params![r.seq, text, r.agent],
            );
        }
        drop(conn);
        run(Source::Sqlite(db), with_key);
    }
}
