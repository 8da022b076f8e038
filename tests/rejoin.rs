//! A real SQLite replica that falls too far behind a real file sink is
//! dropped, rejoins once it answers, and ends byte-identical to the file.

#![cfg(all(feature = "file", feature = "sqlite"))]

use std::sync::Arc;
use std::time::Duration;

use audit_core::testing::{sample_entry, Fault, FaultySink};
use audit_core::{AuditLog, HealthState, SinkSpec, WriterConfig};
use audit_verify::{verify, Source, VerifyOptions};
use sink_file::{FileSink, FileSinkConfig};
use sink_sqlite::{SqliteSink, SqliteSinkConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replica_dropped_for_lag_rejoins_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = Arc::new(
        FileSink::open(FileSinkConfig::new("file", dir.path().join("log")))
            .await
            .expect("file sink"),
    );
    let db = Arc::new(
        SqliteSink::open(SqliteSinkConfig::new("db", dir.path().join("audit.db")))
            .await
            .expect("sqlite sink"),
    );
    let replica = FaultySink::new(db);
    let config = WriterConfig {
        retention_memory_bytes: 32 * 1024,
        rejoin_interval: Some(Duration::from_millis(20)),
        retry_min: Duration::ZERO,
        retry_max: Duration::ZERO,
        ..WriterConfig::default()
    };
    let log = AuditLog::open(
        config,
        vec![
            SinkSpec::required(file.clone()),
            SinkSpec::optional(replica.clone()),
        ],
    )
    .await
    .expect("open");
    replica.set(Fault::FailAlways);
    for i in 0..300 {
        log.append(&sample_entry(i)).await.expect("append");
    }
    assert_eq!(log.health().sinks[1].state, HealthState::Failed);
    replica.set(Fault::None);
    let mut health = log.subscribe_health();
    // The borrow `wait_for` returns must end here: while it lives, the writer
    // cannot publish health, and so cannot go on.
    let rejoined = tokio::time::timeout(
        Duration::from_secs(20),
        health.wait_for(|s| s.sinks[1].state != HealthState::Failed),
    )
    .await
    .map(|r| r.is_ok());
    assert_eq!(rejoined, Ok(true), "{:?}", log.health());
    for i in 300..400 {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.caught_up().await;
    let head = log.health().head_seq;
    log.close().await;
    drop((log, file, replica));
    let report = verify(
        &[
            Source::File(dir.path().join("log")),
            Source::Sqlite(dir.path().join("audit.db")),
        ],
        &VerifyOptions::default(),
    )
    .await
    .expect("verify");
    assert!(report.ok, "{}", report.human());
    for s in &report.sources {
        assert!(s.findings.is_empty(), "{}", report.human());
        assert_eq!(s.last_seq, Some(head), "{}", report.human());
    }
}
