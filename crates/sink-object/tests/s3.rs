//! Against a real S3-compatible server (Garage). `cargo xtask test` starts one
//! and sets AUDIT_S3_ENDPOINT and friends; plain `cargo test` skips with a message.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use audit_core::testing::{read_verified, sample_entry, Harness};
use audit_core::{AuditLog, HealthState, Record, Sink, SinkSpec, WriterConfig};
use sink_object::{ObjectSink, ObjectSinkConfig, S3Options, Service};

fn s3_env() -> Result<S3Options, String> {
    let var = |k: &str| {
        std::env::var(k)
            .map_err(|_| format!("{k} is not set; run `cargo xtask test` to start a local Garage"))
    };
    Ok(S3Options {
        endpoint: Some(var("AUDIT_S3_ENDPOINT")?),
        bucket: var("AUDIT_S3_BUCKET")?,
        region: Some(var("AUDIT_S3_REGION").unwrap_or_else(|_| "garage".into())),
        access_key_id: Some(var("AWS_ACCESS_KEY_ID")?),
        secret_access_key: Some(var("AWS_SECRET_ACCESS_KEY")?),
    })
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

struct S3 {
    prefix: String,
}

#[async_trait]
impl Harness for S3 {
    async fn open(&self, name: &str) -> Arc<dyn Sink> {
        let service = Service::S3(s3_env().expect("S3 environment"));
        Arc::new(
            ObjectSink::open(ObjectSinkConfig::new(
                name,
                service,
                self.prefix.clone(),
                name,
            ))
            .await
            .expect("open s3 sink"),
        )
    }
}

audit_core::conformance_tests!(if s3_env().map(drop), S3 { prefix: unique("conformance") });

#[tokio::test]
async fn missing_bucket_and_wrong_credentials_are_clear_errors() {
    let Ok(mut opts) = s3_env() else {
        audit_core::testing::skip_or_fail(
            "missing_bucket_and_wrong_credentials_are_clear_errors",
            "no S3 endpoint",
        );
        return;
    };
    opts.bucket = "no-such-bucket".into();
    let mut config = ObjectSinkConfig::new("s3", Service::S3(opts.clone()), "p", "log");
    config.retries = 0;
    let err = ObjectSink::open(config).await.expect_err("missing bucket");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-bucket") && msg.contains("s3"),
        "{msg}"
    );
    let mut opts = s3_env().expect("env");
    opts.secret_access_key = Some("wrong".into());
    let mut config = ObjectSinkConfig::new("s3", Service::S3(opts), "p", "log");
    config.retries = 0;
    let err = ObjectSink::open(config)
        .await
        .expect_err("wrong credentials");
    assert!(err.to_string().contains("s3 bucket"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_degrades_the_sink_and_it_catches_up_with_no_gaps() {
    let Some(bin) = sink_object::garage::find_binary() else {
        audit_core::testing::skip_or_fail(
            "an_outage_degrades_the_sink_and_it_catches_up_with_no_gaps",
            "no garage binary (cargo install garage --locked)",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut garage =
        sink_object::garage::Garage::start(&bin, &dir.path().join("garage")).expect("start garage");
    let opts = S3Options {
        endpoint: Some(garage.endpoint.clone()),
        bucket: garage.bucket.clone(),
        region: Some(garage.region.clone()),
        access_key_id: Some(garage.key_id.clone()),
        secret_access_key: Some(garage.secret.clone()),
    };
    let mut oc = ObjectSinkConfig::new("s3", Service::S3(opts), "outage", "log-1");
    oc.retries = 1;
    oc.op_timeout = Duration::from_secs(2);
    let s3 = Arc::new(ObjectSink::open(oc).await.expect("open s3"));
    let file = Arc::new(
        sink_file::FileSink::open(sink_file::FileSinkConfig::new(
            "file",
            dir.path().join("file"),
        ))
        .await
        .expect("file"),
    );
    let config = WriterConfig {
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        ..WriterConfig::default()
    };
    let log = AuditLog::open(
        config,
        vec![
            SinkSpec::required(file.clone()),
            SinkSpec::optional(s3.clone()).with_timeout(Duration::from_secs(3)),
        ],
    )
    .await
    .expect("log");
    for i in 0..40 {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.caught_up().await;
    garage.stop();
    for i in 40..120 {
        log.append(&sample_entry(i))
            .await
            .expect("the log keeps going without the object store");
    }
    // The failed or timed-out write marks the sink degraded; wait for that state.
    let mut health = log.subscribe_health();
    let h = health
        .wait_for(|h| h.sinks[1].state == HealthState::Degraded)
        .await
        .expect("health")
        .clone();
    assert!(h.sinks[1].records_behind > 0, "{h:?}");
    assert_eq!(h.sinks[0].state, HealthState::Healthy);
    garage.restart().expect("restart garage");
    log.caught_up().await;
    log.close().await;
    let a: Vec<Record> = read_verified(file.as_ref()).await;
    let b: Vec<Record> = read_verified(s3.as_ref()).await;
    assert_eq!(a.len(), 120);
    assert_eq!(
        a.iter().map(|r| r.text().to_vec()).collect::<Vec<_>>(),
        b.iter().map(|r| r.text().to_vec()).collect::<Vec<_>>()
    );
}

/// One log under a fresh prefix, which several sinks may open.
struct OneLog {
    opts: S3Options,
    prefix: String,
}

impl OneLog {
    /// `None`, after saying so, without an endpoint.
    fn new(test: &str) -> Option<Self> {
        let Ok(opts) = s3_env() else {
            audit_core::testing::skip_or_fail(test, "no S3 endpoint");
            return None;
        };
        Some(Self {
            opts,
            prefix: unique(test),
        })
    }

    async fn open(&self) -> ObjectSink {
        self.try_open().await.expect("open")
    }

    async fn try_open(&self) -> Result<ObjectSink, audit_core::SinkError> {
        ObjectSink::open(ObjectSinkConfig::new(
            "s3",
            Service::S3(self.opts.clone()),
            self.prefix.clone(),
            "log",
        ))
        .await
    }
}

fn batch(records: &[Record]) -> audit_core::RecordBatch {
    audit_core::RecordBatch::new(records.to_vec()).expect("batch")
}

/// Two writers of one log on a remote store, where there is no lock: the
/// segment after a given head has one key whatever its length, so the second
/// writer to continue that head is refused, however its batches are cut.
#[tokio::test]
async fn a_second_writer_cannot_fork_the_log() {
    let Some(log) = OneLog::new("a_second_writer_cannot_fork_the_log") else {
        return;
    };
    // Garage ignores If-None-Match, so the sink takes a lease: while one
    // writer holds it, a second one cannot even open the log, before and
    // after the first one's writes.
    let a = log.open().await;
    assert!(matches!(
        log.try_open().await,
        Err(audit_core::SinkError::InUse { .. })
    ));
    let ours = audit_core::testing::sample_records(None, 8);
    a.append(&batch(&ours[..5])).await.expect("a writes 1..5");
    assert!(matches!(
        log.try_open().await,
        Err(audit_core::SinkError::InUse { .. })
    ));
    a.append(&batch(&ours[5..])).await.expect("a writes 6..8");
    assert_eq!(a.head().await.expect("head"), Some(ours[7].head()));
}

/// A write that landed although the writer saw it fail (a timeout, or a
/// retry that the store answers with 412) leaves the writer's own records
/// under the key it tries again: those are taken as written, never refused
/// and never stored twice.
#[tokio::test]
async fn a_segment_already_holding_the_batch_is_taken_as_written() {
    let Some(log) = OneLog::new("a_segment_already_holding_the_batch_is_taken_as_written") else {
        return;
    };
    // A retry of a write that landed, sent by the same sink, is taken as
    // written; a second sink on the log is refused by the lease first.
    let landed = log.open().await;
    let ours = audit_core::testing::sample_records(None, 8);
    landed.append(&batch(&ours[..5])).await.expect("1..5");
    assert!(matches!(
        log.try_open().await,
        Err(audit_core::SinkError::InUse { .. })
    ));
    landed.append(&batch(&ours[5..])).await.expect("6..8");
    assert_eq!(landed.head().await.expect("head"), Some(ours[7].head()));
}
