//! The writer under fault injection: hysteresis, timeouts, catch-up, no gaps.

use std::sync::Arc;
use std::time::Duration;

use audit_core::testing::{append_concurrently, read_verified, sample_entry, Fault, FaultySink};
use audit_core::{
    AppendError, AuditLog, Durability, HealthState, MemorySink, OpenError, Record, Sink, SinkSpec,
    SpoolConfig, WhenFull, WriterConfig,
};

fn quick_retry() -> WriterConfig {
    WriterConfig {
        retry_min: Duration::ZERO,
        retry_max: Duration::ZERO,
        ..WriterConfig::default()
    }
}

async fn open_required_and_optional(
    config: WriterConfig,
    required: Arc<dyn Sink>,
    optional: Arc<dyn Sink>,
) -> AuditLog {
    AuditLog::open(
        config,
        vec![SinkSpec::required(required), SinkSpec::optional(optional)],
    )
    .await
    .expect("open")
}

async fn append_range(log: &AuditLog, range: std::ops::Range<u64>) {
    for i in range {
        log.append(&sample_entry(i)).await.expect("append");
    }
}

fn texts(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.text().to_vec()).collect()
}

/// Records the writer's health transition events.
#[derive(Clone, Default)]
struct Transitions(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Transitions {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct V(String);
        impl tracing::field::Visit for V {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if matches!(
                    field.name(),
                    "message" | "sink" | "from" | "to" | "successes" | "failures"
                ) {
                    self.0.push_str(&format!("{}={:?} ", field.name(), value));
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.record_debug(field, &value);
            }
        }
        let mut v = V(String::new());
        event.record(&mut v);
        if v.0.contains("audit sink") {
            self.0
                .lock()
                .expect("lock")
                .push(v.0.trim().replace('"', ""));
        }
    }
}

#[tokio::test]
async fn hysteresis_transitions_happen_exactly_as_specified() {
    use tracing_subscriber::layer::SubscriberExt;
    let events = Transitions::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let b = FaultySink::new(b_inner.clone());
    let log = AuditLog::open(
        quick_retry(),
        vec![SinkSpec::required(a.clone()), SinkSpec::required(b.clone())],
    )
    .await
    .expect("open");
    b.set(Fault::FailNext(2));
    let mut i = 0;
    while log.health().sinks[1].state != HealthState::Healthy || i < 2 {
        let _ = log
            .append_with(&sample_entry(i), Durability::AllRequired)
            .await;
        i += 1;
        assert!(i < 100, "sink b never recovered");
    }
    let h = log.health();
    assert_eq!(h.sinks[1].total_failures, 2);
    assert_eq!(h.sinks[1].consecutive_failures, 0);
    assert!(h.sinks[1].consecutive_successes >= 3);
    assert!(h.sinks[1]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("on purpose")));
    let json = serde_json::to_value(&h).expect("health serializes");
    assert_eq!(json["sinks"][1]["state"], "healthy");
    log.close().await;
    assert_eq!(
        events.0.lock().expect("lock").clone(),
        vec![
            "message=audit sink degraded sink=b from=Healthy to=Degraded failures=1".to_string(),
            "message=audit sink recovered sink=b from=Degraded to=Healthy successes=3".to_string(),
        ]
    );
    assert_eq!(
        texts(&read_verified(a.as_ref()).await),
        texts(&read_verified(b_inner.as_ref()).await)
    );
}

#[tokio::test(start_paused = true)]
async fn hung_optional_sink_does_not_delay_appends() {
    let a = Arc::new(MemorySink::new("a"));
    let b = FaultySink::new(Arc::new(MemorySink::new("b")));
    let timeout = Duration::from_millis(500);
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![
            SinkSpec::required(a.clone()),
            SinkSpec::optional(b.clone()).with_timeout(timeout),
        ],
    )
    .await
    .expect("open");
    b.set(Fault::Hang);
    let start = tokio::time::Instant::now();
    for i in 0..20 {
        log.append(&sample_entry(i))
            .await
            .expect("append succeeds without the optional sink");
    }
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "appends waited for the hung sink"
    );
    b.set(Fault::None);
    log.caught_up().await;
    log.close().await;
}

#[tokio::test(start_paused = true)]
async fn hung_sink_needed_for_threshold_fails_append_at_its_timeout() {
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let b = FaultySink::new(b_inner.clone());
    let timeout = Duration::from_millis(500);
    let config = WriterConfig {
        min_durable_sinks: 2,
        ..WriterConfig::default()
    };
    let log = AuditLog::open(
        config,
        vec![
            SinkSpec::required(a.clone()),
            SinkSpec::optional(b.clone()).with_timeout(timeout),
        ],
    )
    .await
    .expect("open");
    b.set(Fault::Hang);
    let start = tokio::time::Instant::now();
    let err = log
        .append(&sample_entry(1))
        .await
        .expect_err("threshold of 2 cannot be met");
    assert_eq!(start.elapsed(), timeout);
    assert!(
        matches!(
            err,
            AppendError::NotDurable {
                seq: 1,
                kept: true,
                ..
            }
        ),
        "{err}"
    );
    // The next append does not wait for the hung sink again.
    let start = tokio::time::Instant::now();
    let err = log.append(&sample_entry(2)).await.expect_err("still hung");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(err, AppendError::NotDurable { seq: 2, .. }));
    assert_eq!(log.health().sinks[1].state, HealthState::Degraded);
    b.set(Fault::None);
    log.caught_up().await;
    let r = log
        .append(&sample_entry(3))
        .await
        .expect("both sinks answer again");
    assert_eq!(r.seq, 3);
    log.close().await;
    assert_eq!(
        texts(&read_verified(a.as_ref()).await),
        texts(&read_verified(b_inner.as_ref()).await)
    );
}

#[tokio::test(start_paused = true)]
async fn a_paced_replica_takes_what_was_sealed_meanwhile_in_one_write() {
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let b = FaultySink::new(b_inner.clone());
    let interval = Duration::from_millis(100);
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![
            SinkSpec::required(a.clone()),
            SinkSpec::optional(b.clone()).with_min_write_interval(interval),
        ],
    )
    .await
    .expect("open");
    let start = tokio::time::Instant::now();
    append_range(&log, 0..10).await;
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "appends waited for the replica"
    );
    log.caught_up().await;
    assert_eq!(b.history(), vec![(1, 1, true), (2, 10, true)]);
    assert_eq!(b.call_starts(), vec![start, start + interval]);
    // Appends spread over time: never two writes within the interval.
    for i in 10..40 {
        log.append(&sample_entry(i)).await.expect("append");
        tokio::time::advance(Duration::from_millis(30)).await;
    }
    log.caught_up().await;
    let starts = b.call_starts();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= interval, "{starts:?}");
    }
    assert!(starts.len() <= 2 + 30 * 30 / 100 + 1, "{starts:?}");
    log.close().await;
    assert_eq!(
        texts(&read_verified(a.as_ref()).await),
        texts(&read_verified(b_inner.as_ref()).await)
    );
}

#[tokio::test(start_paused = true)]
async fn a_paced_required_sink_is_waited_for_not_timed_out() {
    let a = Arc::new(MemorySink::new("a"));
    let interval = Duration::from_millis(200);
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(a.clone())
            .with_timeout(Duration::from_millis(50))
            .with_min_write_interval(interval)],
    )
    .await
    .expect("open");
    let start = tokio::time::Instant::now();
    log.append(&sample_entry(0)).await.expect("first write");
    assert_eq!(start.elapsed(), Duration::ZERO);
    let r = log
        .append(&sample_entry(1))
        .await
        .expect("held back by the interval, which is not a timeout");
    assert_eq!((r.seq, start.elapsed()), (2, interval));
    let health = log.health();
    assert_eq!(health.sinks[0].state, HealthState::Healthy);
    assert_eq!(health.sinks[0].total_failures, 0);
    log.close().await;
}

#[tokio::test(start_paused = true)]
async fn closing_does_not_wait_for_a_write_interval() {
    let a = Arc::new(MemorySink::new("a"));
    let b = Arc::new(MemorySink::new("b"));
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![
            SinkSpec::required(a.clone()),
            SinkSpec::optional(b.clone()).with_min_write_interval(Duration::from_secs(3600)),
        ],
    )
    .await
    .expect("open");
    append_range(&log, 0..5).await;
    let start = tokio::time::Instant::now();
    log.close().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(read_verified(b.as_ref()).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sink_catches_up_with_same_bytes_and_no_gaps() {
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let b = FaultySink::new(b_inner.clone());
    let log = open_required_and_optional(quick_retry(), a.clone(), b.clone()).await;
    b.set(Fault::FailEvery(3));
    let mut tasks = Vec::new();
    for p in 0..20u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                log.append(&sample_entry(p * 100 + i))
                    .await
                    .expect("optional failures never fail appends");
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
    b.set(Fault::FailAlways);
    for i in 0..50 {
        log.append(&sample_entry(10_000 + i)).await.expect("append");
    }
    assert!(log.health().sinks[1].records_behind > 0);
    b.set(Fault::None);
    log.caught_up().await;
    log.close().await;
    assert!(b.injected_failures() > 0);
    let ra = read_verified(a.as_ref()).await;
    let rb = read_verified(b_inner.as_ref()).await;
    assert_eq!(ra.len(), 550);
    assert_eq!(texts(&ra), texts(&rb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_producers_get_unique_contiguous_receipts() {
    let a = Arc::new(MemorySink::new("a"));
    let b = Arc::new(MemorySink::new("b"));
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(a.clone()), SinkSpec::required(b.clone())],
    )
    .await
    .expect("open");
    let mut receipts = append_concurrently(&log, 1000, 100).await;
    log.close().await;
    receipts.sort_by_key(|r| r.seq);
    assert_eq!(receipts.len(), 100_000);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(
            r.seq,
            i as u64 + 1,
            "receipts are not unique and contiguous"
        );
    }
    for sink in [a, b] {
        let stored = read_verified(sink.as_ref()).await;
        assert_eq!(stored.len(), 100_000);
        for r in &receipts {
            assert_eq!(stored[(r.seq - 1) as usize].hash(), r.hash);
        }
    }
}

#[tokio::test]
async fn restart_continues_the_chain() {
    let a = Arc::new(MemorySink::new("a"));
    let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(a.clone())])
        .await
        .expect("open");
    append_range(&log, 0..10).await;
    log.close().await;
    let head = a.head().await.expect("head").expect("non-empty");
    let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(a.clone())])
        .await
        .expect("reopen");
    let r = log.append(&sample_entry(11)).await.expect("append");
    log.close().await;
    assert_eq!(r.seq, 11);
    let stored = read_verified(a.as_ref()).await;
    assert_eq!(stored[10].prev(), audit_core::PrevHash::Hash(head.hash));
}

#[tokio::test]
async fn start_up_backfills_a_sink_that_is_behind() {
    let a = Arc::new(MemorySink::new("a"));
    let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(a.clone())])
        .await
        .expect("open");
    append_range(&log, 0..50).await;
    log.close().await;
    let b = Arc::new(MemorySink::new("b"));
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(a.clone()), SinkSpec::required(b.clone())],
    )
    .await
    .expect("open with backfill");
    assert_eq!(log.health().sinks[1].durable_seq, 50);
    log.append(&sample_entry(51)).await.expect("append");
    log.close().await;
    assert_eq!(
        texts(&read_verified(a.as_ref()).await),
        texts(&read_verified(b.as_ref()).await)
    );
}

#[tokio::test]
async fn fork_at_start_up_is_refused() {
    let a = Arc::new(MemorySink::new("alpha"));
    let b = Arc::new(MemorySink::new("beta"));
    for (sink, salt) in [(&a, 0u64), (&b, 500)] {
        let log = AuditLog::open(
            WriterConfig::default(),
            vec![SinkSpec::required(sink.clone())],
        )
        .await
        .expect("open");
        for i in 0..5 {
            log.append(&sample_entry(salt + i)).await.expect("append");
        }
        log.close().await;
    }
    let err = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(a.clone()), SinkSpec::required(b.clone())],
    )
    .await
    .expect_err("fork must be refused");
    match &err {
        OpenError::Fork { a, b, seq, .. } => {
            assert_eq!((a.as_str(), b.as_str(), *seq), ("alpha", "beta", 5));
        }
        other => panic!("expected a fork, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("alpha") && msg.contains("beta") && msg.contains("sequence 5"),
        "{msg}"
    );
}

#[tokio::test]
async fn batch_stored_nowhere_is_rolled_back_without_a_gap() {
    let inner = Arc::new(MemorySink::new("only"));
    let only = FaultySink::new(inner.clone());
    let log = AuditLog::open(quick_retry(), vec![SinkSpec::required(only.clone())])
        .await
        .expect("open");
    log.append(&sample_entry(0)).await.expect("first");
    only.set(Fault::FailNext(1));
    let err = log
        .append(&sample_entry(1))
        .await
        .expect_err("injected failure");
    assert!(
        matches!(
            err,
            AppendError::NotDurable {
                seq: 2,
                kept: false,
                ..
            }
        ),
        "{err}"
    );
    let r = log
        .append(&sample_entry(2))
        .await
        .expect("append after failure");
    assert_eq!(
        r.seq, 2,
        "the failed record's sequence must be reused, not skipped"
    );
    log.close().await;
    assert_eq!(read_verified(inner.as_ref()).await.len(), 2);
}

#[tokio::test]
async fn retention_overflow_drops_the_lagging_sink_with_a_gap_marker() {
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let b = FaultySink::new(b_inner.clone());
    let config = WriterConfig {
        retention_memory_bytes: 8 * 1024,
        ..quick_retry()
    };
    let log = open_required_and_optional(config.clone(), a.clone(), b.clone()).await;
    log.append(&sample_entry(0)).await.expect("append");
    b.set(Fault::FailAlways);
    append_range(&log, 1..60).await;
    let health = log.health();
    assert_eq!(health.sinks[1].state, HealthState::Failed);
    log.close().await;
    let stored = read_verified(a.as_ref()).await;
    let marker = stored
        .iter()
        .find(|r| r.text().starts_with(b"{\"record_type\":\"sink_gap\""))
        .expect("a gap marker is chained");
    let m: serde_json::Value = serde_json::from_slice(marker.text()).expect("json");
    assert_eq!(m["sink"], "b");
    assert_eq!(m["lacks_from"], 2);
    // Start-up backfills the dropped sink from the healthy replica.
    b.set(Fault::None);
    let log = open_required_and_optional(config, a.clone(), b.clone()).await;
    log.close().await;
    assert_eq!(
        texts(&read_verified(a.as_ref()).await),
        texts(&read_verified(b_inner.as_ref()).await)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_holds_what_memory_cannot_and_replays_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let b = FaultySink::new(b_inner.clone());
    let config = WriterConfig {
        retention_memory_bytes: 16 * 1024,
        spool: Some(SpoolConfig {
            dir: dir.path().join("spool"),
            max_bytes: 64 << 20,
        }),
        ..quick_retry()
    };
    let log = open_required_and_optional(config, a.clone(), b.clone()).await;
    b.set(Fault::FailAlways);
    append_range(&log, 0..400).await;
    let spooled = std::fs::read_dir(dir.path().join("spool"))
        .expect("spool dir")
        .count();
    assert!(
        spooled > 0,
        "records beyond the memory limit go to the spool"
    );
    assert_ne!(log.health().sinks[1].state, HealthState::Failed);
    b.set(Fault::None);
    log.caught_up().await;
    log.close().await;
    assert_eq!(
        texts(&read_verified(a.as_ref()).await),
        texts(&read_verified(b_inner.as_ref()).await)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool"))
            .expect("spool dir")
            .count(),
        0,
        "spool is emptied once replayed"
    );
}

#[tokio::test]
async fn spool_chunks_left_by_a_crashed_process_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).expect("mkdir");
    std::fs::write(spool.join("spool-00000000000000000001-0.jsonl"), b"{}\n").expect("stale");
    std::fs::write(spool.join("notes.txt"), b"not ours").expect("other");
    let config = WriterConfig {
        spool: Some(SpoolConfig {
            dir: spool.clone(),
            max_bytes: 1 << 20,
        }),
        ..WriterConfig::default()
    };
    let log = AuditLog::open(
        config,
        vec![SinkSpec::required(Arc::new(MemorySink::new("a")))],
    )
    .await
    .expect("open");
    log.close().await;
    let mut left: Vec<String> = std::fs::read_dir(&spool)
        .expect("spool dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["notes.txt".to_string()]);
}

#[tokio::test]
async fn full_queue_fails_fast_when_configured() {
    let inner = Arc::new(MemorySink::new("slow"));
    let slow = FaultySink::new(inner);
    let config = WriterConfig {
        queue_capacity: 1,
        when_full: WhenFull::FailFast,
        ..WriterConfig::default()
    };
    let log = AuditLog::open(config, vec![SinkSpec::required(slow.clone())])
        .await
        .expect("open");
    slow.set(Fault::Hang);
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append(&sample_entry(1)).await }
    });
    slow.wait_for_calls(1).await;
    let second = tokio::spawn({
        let log = log.clone();
        async move { log.append(&sample_entry(2)).await }
    });
    // The second entry now waits in the one-slot queue; wait until it is there.
    while log.health().queued < 1 {
        tokio::task::yield_now().await;
    }
    let err = log
        .append(&sample_entry(3))
        .await
        .expect_err("queue is full");
    assert!(
        matches!(err, AppendError::QueueFull { capacity: 1 }),
        "{err}"
    );
    slow.set(Fault::None);
    assert_eq!(first.await.expect("task").expect("first").seq, 1);
    assert_eq!(second.await.expect("task").expect("second").seq, 2);
    log.close().await;
}

#[tokio::test]
async fn oversized_entry_is_refused_and_nothing_is_written() {
    let a = Arc::new(MemorySink::new("a"));
    let config = WriterConfig {
        max_record_bytes: 4096,
        ..WriterConfig::default()
    };
    let log = AuditLog::open(config, vec![SinkSpec::required(a.clone())])
        .await
        .expect("open");
    let mut e = sample_entry(1);
    e.arguments = serde_json::json!({"blob": "x".repeat(10_000)}).into();
    assert!(matches!(
        log.append(&e).await,
        Err(AppendError::TooLarge { max: 4096, .. })
    ));
    assert_eq!(log.append(&sample_entry(2)).await.expect("append").seq, 1);
    log.close().await;
}

/// Arguments nested deeper than a record may be (FORMAT.md section 5) are
/// refused before anything is written; the deepest allowed nesting is logged
/// and reads back as a well-formed record.
#[tokio::test]
async fn too_deeply_nested_entry_is_refused_and_the_deepest_allowed_is_logged() {
    fn nested(levels: usize) -> serde_json::Value {
        // Built by moving, not with json!, which copies its operands recursively.
        let mut v = serde_json::Value::Array(Vec::new());
        for i in 1..levels {
            v = if i % 2 == 0 {
                serde_json::Value::Array(vec![v])
            } else {
                serde_json::Value::Object([("k".to_string(), v)].into_iter().collect())
            };
        }
        v
    }
    let a = Arc::new(MemorySink::new("a"));
    let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(a.clone())])
        .await
        .expect("open");
    let mut e = sample_entry(1);
    e.arguments = nested(audit_core::MAX_NESTING + 1).into();
    let err = log.append(&e).await.expect_err("too deep");
    assert!(matches!(err, AppendError::TooDeep { max: 128 }), "{err}");
    // Hostile depth is refused without recursing through it.
    e.arguments = nested(100_000).into();
    assert!(matches!(
        log.append(&e).await,
        Err(AppendError::TooDeep { .. })
    ));
    std::mem::forget(std::mem::take(&mut e.arguments)); // serde_json drops recursively
    e.arguments = nested(audit_core::MAX_NESTING).into();
    assert_eq!(log.append(&e).await.expect("deepest allowed").seq, 1);
    log.close().await;
    let stored = a.records();
    assert_eq!(stored.len(), 1);
    audit_core::parse_record(stored[0].text()).expect("a well-formed record");
}

/// Waits, on health changes rather than a clock, until `done` holds; gives up
/// after ten seconds so a broken rejoin fails instead of hanging.
async fn wait_for_health(log: &AuditLog, done: impl Fn(&audit_core::HealthSnapshot) -> bool) {
    let mut rx = log.subscribe_health();
    // The borrow `wait_for` returns is dropped at once: while it lives, the
    // writer cannot publish health.
    let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| done(s)))
        .await
        .map(|r| r.is_ok());
    assert_eq!(
        waited,
        Ok(true),
        "health never got there: {:?}",
        log.health()
    );
}

fn rejoining() -> WriterConfig {
    WriterConfig {
        rejoin_interval: Some(Duration::from_millis(20)),
        ..quick_retry()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_at_start_up_rejoins_once_it_answers() {
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let b = FaultySink::new(b_inner.clone());
    b.set(Fault::Down);
    let log = open_required_and_optional(rejoining(), a.clone(), b.clone()).await;
    assert_eq!(log.health().sinks[1].state, HealthState::Failed);
    append_range(&log, 0..30).await;
    assert_eq!(log.health().sinks[1].state, HealthState::Failed);
    b.set(Fault::None);
    wait_for_health(&log, |s| {
        s.sinks[1].state != HealthState::Failed && s.sinks[1].durable_seq == s.head_seq
    })
    .await;
    append_range(&log, 30..40).await;
    log.caught_up().await;
    log.close().await;
    let held = texts(&read_verified(b_inner.as_ref()).await);
    assert_eq!(texts(&read_verified(a.as_ref()).await), held);
    let rejoined: Vec<_> = held
        .iter()
        .filter(|t| t.starts_with(b"{\"record_type\":\"sink_rejoined\""))
        .collect();
    assert_eq!(
        held.len(),
        42,
        "the chained drop at start-up, 40 entries and the chained rejoin"
    );
    assert!(
        held[0].starts_with(b"{\"record_type\":\"sink_gap\"")
            && String::from_utf8_lossy(&held[0]).contains("\"sink\":\"b\",\"lacks_from\":1,"),
        "{}",
        String::from_utf8_lossy(&held[0])
    );
    assert_eq!(rejoined.len(), 1);
    let marker = String::from_utf8_lossy(rejoined[0]);
    assert!(
        marker.contains("\"sink\":\"b\",\"copied_from\":1,\"holds_through\":31"),
        "{marker}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_dropped_for_falling_too_far_behind_rejoins_with_every_record() {
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let b = FaultySink::new(b_inner.clone());
    let config = WriterConfig {
        retention_memory_bytes: 16 * 1024,
        ..rejoining()
    };
    let log = open_required_and_optional(config, a.clone(), b.clone()).await;
    b.set(Fault::FailAlways);
    append_range(&log, 0..200).await;
    assert_eq!(
        log.health().sinks[1].state,
        HealthState::Failed,
        "200 entries overflow 16 KiB of retention"
    );
    b.set(Fault::None);
    wait_for_health(&log, |s| {
        s.sinks[1].state != HealthState::Failed && s.sinks[1].durable_seq == s.head_seq
    })
    .await;
    log.append(&sample_entry(200)).await.expect("append");
    log.caught_up().await;
    log.close().await;
    let held = read_verified(b_inner.as_ref()).await;
    assert_eq!(texts(&read_verified(a.as_ref()).await), texts(&held));
    for kind in ["sink_gap", "sink_rejoined"] {
        let prefix = format!("{{\"record_type\":\"{kind}\"");
        assert!(
            held.iter().any(|r| r.text().starts_with(prefix.as_bytes())),
            "the chained {kind} marker is in the rejoined copy too"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_holding_another_chain_never_rejoins() {
    let a = Arc::new(MemorySink::new("a"));
    let b_inner = Arc::new(MemorySink::new("b"));
    let other = audit_core::testing::sample_records(None, 5);
    b_inner
        .append(&audit_core::RecordBatch::new(other.clone()).expect("batch"))
        .await
        .expect("seed b");
    let b = FaultySink::new(b_inner.clone());
    b.set(Fault::Down);
    let log = open_required_and_optional(rejoining(), a.clone(), b.clone()).await;
    for i in 0..10 {
        log.append(&sample_entry(1000 + i)).await.expect("append");
    }
    b.set(Fault::None);
    wait_for_health(&log, |s| {
        s.sinks[1]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not on this chain"))
    })
    .await;
    assert_eq!(log.health().sinks[1].state, HealthState::Failed);
    log.close().await;
    assert_eq!(
        texts(&read_verified(b_inner.as_ref()).await),
        texts(&other),
        "nothing was written to the sink on another chain"
    );
}

/// A sink that holds its first append until released, then claims a head
/// on another chain: the writer drops it, whenever that happens.
struct Liar {
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl audit_core::RecordReader for Liar {
    async fn read_from(
        &self,
        _from_seq: u64,
    ) -> Result<Box<dyn audit_core::RecordCursor>, audit_core::SinkError> {
        Err(audit_core::SinkError::Backend {
            sink: "liar".into(),
            detail: "no reads".into(),
        })
    }
}

#[async_trait::async_trait]
impl Sink for Liar {
    fn name(&self) -> &str {
        "liar"
    }

    fn capabilities(&self) -> audit_core::SinkCapabilities {
        audit_core::SinkCapabilities::persistent(true)
    }

    async fn head(&self) -> Result<Option<audit_core::ChainHead>, audit_core::SinkError> {
        Ok(None)
    }

    async fn append(&self, batch: &audit_core::RecordBatch) -> Result<(), audit_core::SinkError> {
        self.release.notified().await;
        Err(audit_core::SinkError::NotContiguous {
            sink: "liar".into(),
            head: Some(audit_core::ChainHead {
                seq: 1,
                hash: audit_core::Hash32([7; 32]),
            }),
            got_seq: batch.first().seq(),
            got_prev: batch.first().prev(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_when_a_sink_is_dropped_while_closing() {
    // The optional sink is dropped only after the log has stopped taking
    // entries: its `sink_gap` record must still be chained, and close finish.
    let a = Arc::new(MemorySink::new("a"));
    let liar = Arc::new(Liar {
        release: tokio::sync::Notify::new(),
    });
    let config = WriterConfig {
        min_durable_sinks: 1,
        default_durability: Durability::Threshold,
        ..quick_retry()
    };
    let log = open_required_and_optional(config, a.clone(), liar.clone()).await;
    log.append(&sample_entry(0)).await.expect("append");
    let closing = tokio::spawn({
        let log = log.clone();
        async move { log.close().await }
    });
    // Close has been asked for; now the sink answers, with another chain.
    tokio::task::yield_now().await;
    liar.release.notify_one();
    let closed = tokio::time::timeout(Duration::from_secs(10), closing).await;
    assert!(
        matches!(closed, Ok(Ok(()))),
        "close hung: {:?}",
        log.health()
    );
    let stored = read_verified(a.as_ref()).await;
    assert_eq!(stored.len(), 2, "the entry and the chained drop");
    assert!(stored[1]
        .text()
        .starts_with(b"{\"record_type\":\"sink_gap\""));
}

/// A sink whose head is a planted record at sequence `seq`; it stores
/// nothing else.
struct PlantedHead {
    seq: u64,
}

#[async_trait::async_trait]
impl audit_core::RecordReader for PlantedHead {
    async fn read_from(
        &self,
        _from_seq: u64,
    ) -> Result<Box<dyn audit_core::RecordCursor>, audit_core::SinkError> {
        Err(audit_core::SinkError::Backend {
            sink: "planted".into(),
            detail: "no reads".into(),
        })
    }
}

#[async_trait::async_trait]
impl Sink for PlantedHead {
    fn name(&self) -> &str {
        "planted"
    }

    fn capabilities(&self) -> audit_core::SinkCapabilities {
        audit_core::SinkCapabilities::persistent(true)
    }

    async fn head(&self) -> Result<Option<audit_core::ChainHead>, audit_core::SinkError> {
        Ok(Some(audit_core::ChainHead {
            seq: self.seq,
            hash: audit_core::Hash32([3; 32]),
        }))
    }

    async fn append(&self, _batch: &audit_core::RecordBatch) -> Result<(), audit_core::SinkError> {
        Err(audit_core::SinkError::Backend {
            sink: "planted".into(),
            detail: "no writes".into(),
        })
    }
}

/// A last record at u64::MAX made the writer wrap to sequence 0: a head no
/// real log reaches (beyond 2^63) is refused at start-up, naming the sink
/// and the sequence; as an optional sink it drops out instead of leading.
#[tokio::test]
async fn a_head_beyond_2_63_is_refused_not_wrapped() {
    for seq in [u64::MAX, audit_core::MAX_HEAD_SEQUENCE + 1] {
        let err = AuditLog::open(
            WriterConfig::default(),
            vec![SinkSpec::required(Arc::new(PlantedHead { seq }))],
        )
        .await
        .expect_err("a head beyond 2^63 must be refused");
        let text = err.to_string();
        assert!(
            text.contains("planted") && text.contains(&seq.to_string()),
            "{text}"
        );
        let required = Arc::new(MemorySink::new("required"));
        let log = open_required_and_optional(
            WriterConfig::default(),
            required.clone(),
            Arc::new(PlantedHead { seq }),
        )
        .await;
        let r = log.append(&sample_entry(3)).await.expect("append");
        // After the marker recording the sink's absence.
        assert!(r.seq <= 2, "the log starts over, not after {seq}: {r:?}");
        log.close().await;
    }
}
