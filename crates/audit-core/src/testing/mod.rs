//! The conformance kit every backend runs, a fault-injecting sink wrapper,
//! and entry generators for tests and benchmarks.
//!
//! A backend crate runs the whole kit from `tests/conformance.rs`:
//!
//! ```ignore
//! audit_core::conformance_tests!(my_backend_tests::Harness::new());
//! ```

pub mod crash;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::chain::{encode_entry_body, ChainChecker, Link, Sequencer};
use crate::entry::AuditEntry;
use crate::record::{ChainHead, Record};
use crate::sink::{
    RecordBatch, RecordCursor, RecordReader, Sink, SinkCapabilities, SinkError, StoredRecord,
};
use crate::writer::{AuditLog, Receipt, SinkSpec, WriterConfig};

/// Opens sinks for the kit.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens the sink stored under `name`, creating it empty the first time.
    /// Opening the same name again after the previous handle was dropped must
    /// reopen the same storage.
    async fn open(&self, name: &str) -> Arc<dyn Sink>;
}

/// A realistic entry of about 600 bytes once chained; `i` varies its content.
pub fn sample_entry(i: u64) -> AuditEntry {
    let mut e = AuditEntry::new(uuid::Uuid::from_u128(
        0x5eed_0000_0000_4000_8000_0000_0000_0000 | u128::from(i),
    ));
    e.agent_id = format!("agent-{:02}", i % 17);
    e.delegation_chain = format!(
        "user:alice@example.com>agent-{:02}>subagent-{:03}",
        i % 17,
        i % 101
    );
    e.task_session_id = format!("sess-{}", i % 23);
    e.tool_called =
        ["read_file", "create_ticket", "send_email", "query_db"][(i % 4) as usize].into();
    e.arguments = serde_json::json!({
        "path": format!("/srv/p{}/r{}.csv", i % 31, i),
        "limit": 100 + (i % 50),
        "score": (i as f64) / 7.0,
    })
    .into();
    e.authorization_decision = if i.is_multiple_of(10) {
        "deny"
    } else {
        "allow"
    }
    .into();
    e.policy_matched = Some(format!("policy-{}", i % 9));
    e.anomaly_flags = if i.is_multiple_of(13) {
        vec!["unusual_hour".into()]
    } else {
        Vec::new()
    };
    e.latency_ms = i % 250;
    e.upstream_status = Some(200);
    e
}

/// `n` sealed records continuing `head`, made from [`sample_entry`].
pub fn sample_records(head: Option<ChainHead>, n: u64) -> Vec<Record> {
    let mut seq = Sequencer::resume(head);
    let mut body = Vec::new();
    (0..n)
        .map(|i| {
            body.clear();
            encode_entry_body(&sample_entry(seq.next_seq() + i), &mut body)
                .expect("serializable entry");
            seq.seal(&body)
        })
        .collect()
}

/// Reads a whole reader and checks it is one valid chain from sequence 1:
/// every record well-formed, every hash matching, every link holding.
/// Returns the records. Panics with a precise message otherwise.
pub async fn read_verified(reader: &dyn RecordReader) -> Vec<Record> {
    let items = read_all(reader, 0).await;
    let mut checker = ChainChecker::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let rec = Record::from_text(&item.text)
            .unwrap_or_else(|e| panic!("record at {} does not verify: {e}", item.location));
        match checker.push(rec.seq(), rec.prev(), rec.hash()) {
            Link::Starts | Link::Continues => {}
            other => panic!(
                "record {} at {} breaks the chain: {other:?}",
                rec.seq(),
                item.location
            ),
        }
        out.push(rec);
    }
    out
}

/// Reads every stored item from `from_seq` on.
pub async fn read_all(reader: &dyn RecordReader, from_seq: u64) -> Vec<StoredRecord> {
    let mut cursor: Box<dyn RecordCursor> = reader.read_from(from_seq).await.expect("open reader");
    let mut out = Vec::new();
    while let Some(batch) = cursor.next_batch(333).await.expect("read batch") {
        out.extend(batch);
    }
    out
}

async fn append(sink: &dyn Sink, records: &[Record]) {
    let batch = RecordBatch::new(records.to_vec()).expect("contiguous");
    sink.append(&batch)
        .await
        .unwrap_or_else(|e| panic!("append failed: {e}"));
}

/// Appended records read back byte for byte, and the head is the last one.
pub async fn append_then_read_back(h: &dyn Harness) {
    let sink = h.open("read-back").await;
    let recs = sample_records(None, 25);
    append(sink.as_ref(), &recs[..10]).await;
    append(sink.as_ref(), &recs[10..]).await;
    assert_eq!(sink.head().await.expect("head"), Some(recs[24].head()));
    let back = read_all(sink.as_ref(), 0).await;
    assert_eq!(back.len(), 25);
    for (a, b) in recs.iter().zip(&back) {
        assert_eq!(
            a.text(),
            &b.text[..],
            "record {} differs at {}",
            a.seq(),
            b.location
        );
    }
}

/// The head survives a reopen, and appends continue the same chain.
pub async fn head_after_reopen(h: &dyn Harness) {
    let recs = sample_records(None, 40);
    {
        let sink = h.open("reopen").await;
        append(sink.as_ref(), &recs[..30]).await;
    }
    let sink = h.open("reopen").await;
    if !sink.capabilities().persistent {
        return;
    }
    assert_eq!(sink.head().await.expect("head"), Some(recs[29].head()));
    append(sink.as_ref(), &recs[30..]).await;
    drop(sink);
    let sink = h.open("reopen").await;
    assert_eq!(sink.head().await.expect("head"), Some(recs[39].head()));
    assert_eq!(read_verified(sink.as_ref()).await.len(), 40);
}

/// Appends `per_producer` sample entries from each of `producers` concurrent
/// tasks (entry `p * per_producer + i` from task `p`), and returns every
/// receipt, in no particular order.
pub async fn append_concurrently(
    log: &AuditLog,
    producers: u64,
    per_producer: u64,
) -> Vec<Receipt> {
    let mut tasks = Vec::new();
    for p in 0..producers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::with_capacity(per_producer as usize);
            for i in 0..per_producer {
                let entry = sample_entry(p * per_producer + i);
                receipts.push(log.append(&entry).await.expect("append"));
            }
            receipts
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.extend(t.await.expect("producer"));
    }
    receipts
}

/// Many producers through the writer: contiguous, ordered, every receipt stored.
pub async fn concurrent_producers_keep_order(h: &dyn Harness) {
    let sink = h.open("concurrent").await;
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(sink.clone())],
    )
    .await
    .expect("open log");
    let receipts = append_concurrently(&log, 32, 50).await;
    log.close().await;
    let stored = read_verified(sink.as_ref()).await;
    assert_eq!(stored.len(), 1600);
    for r in receipts {
        let rec = &stored[(r.seq - 1) as usize];
        assert_eq!(
            rec.hash(),
            r.hash,
            "receipt {} does not match the stored record",
            r.seq
        );
    }
}

/// Batches of 1 and of 10,000 records.
pub async fn batch_sizes(h: &dyn Harness) {
    let sink = h.open("batch-sizes").await;
    let recs = sample_records(None, 10_001);
    append(sink.as_ref(), &recs[..1]).await;
    append(sink.as_ref(), &recs[1..]).await;
    assert_eq!(sink.head().await.expect("head"), Some(recs[10_000].head()));
    assert_eq!(read_verified(sink.as_ref()).await.len(), 10_001);
}

/// 1 MiB arguments, unicode and control characters survive byte for byte.
pub async fn large_and_unusual_entries(h: &dyn Harness) {
    let sink = h.open("unusual").await;
    let mut entries = Vec::new();
    let mut big = sample_entry(1);
    big.arguments = serde_json::json!({ "blob": "x".repeat(1 << 20) }).into();
    entries.push(big);
    let mut uni = sample_entry(2);
    uni.agent_id = "agént-ß-日本語-🦀-עברית-\u{0301}".into();
    uni.arguments = serde_json::json!({ "text": "ctrl:\u{0}\u{1}\u{8}\t\n\r\u{1f}\u{7f} sep:\u{2028}\u{2029} \"quoted\" \\back\\", "emoji": "👩‍👩‍👧" }).into();
    entries.push(uni);
    let mut seq = Sequencer::new();
    let recs: Vec<Record> = entries
        .iter()
        .map(|e| {
            let mut body = Vec::new();
            encode_entry_body(e, &mut body).expect("serialize");
            seq.seal(&body)
        })
        .collect();
    append(sink.as_ref(), &recs).await;
    let back = read_verified(sink.as_ref()).await;
    assert_eq!(back.len(), 2);
    for (a, b) in recs.iter().zip(&back) {
        assert_eq!(a.text(), b.text());
    }
}

/// A reader that starts mid-log, and one that starts past the end.
pub async fn reader_starts_mid_log(h: &dyn Harness) {
    let sink = h.open("mid-log").await;
    let recs = sample_records(None, 100);
    for chunk in recs.chunks(7) {
        append(sink.as_ref(), chunk).await;
    }
    let from_50 = read_all(sink.as_ref(), 50).await;
    assert_eq!(from_50.len(), 51);
    for (item, rec) in from_50.iter().zip(&recs[49..]) {
        assert_eq!(&item.text[..], rec.text());
    }
    assert!(read_all(sink.as_ref(), 101).await.is_empty());
}

/// An empty log has no head and reads as nothing.
pub async fn empty_log(h: &dyn Harness) {
    let sink = h.open("empty").await;
    assert_eq!(sink.head().await.expect("head"), None);
    assert!(read_all(sink.as_ref(), 0).await.is_empty());
}

/// A batch that does not continue the head is refused and changes nothing.
pub async fn refuses_batches_that_do_not_link(h: &dyn Harness) {
    let sink = h.open("links").await;
    let recs = sample_records(None, 6);
    let late = RecordBatch::new(recs[1..3].to_vec()).expect("contiguous");
    assert!(matches!(
        sink.append(&late).await,
        Err(SinkError::NotContiguous { .. })
    ));
    assert_eq!(sink.head().await.expect("head"), None);
    append(sink.as_ref(), &recs[..3]).await;
    let other_chain = sample_records(
        Some(crate::record::ChainHead {
            seq: 3,
            hash: crate::record::Hash32([7; 32]),
        }),
        2,
    );
    let forged = RecordBatch::new(other_chain).expect("contiguous");
    assert!(matches!(
        sink.append(&forged).await,
        Err(SinkError::NotContiguous { .. })
    ));
    assert_eq!(sink.head().await.expect("head"), Some(recs[2].head()));
    append(sink.as_ref(), &recs[3..]).await;
    assert_eq!(read_verified(sink.as_ref()).await.len(), 6);
}

/// Expands to one `#[tokio::test]` per conformance case, for the harness
/// built by `$harness` (an expression evaluated afresh in every test).
///
/// `conformance_tests!(if GUARD, HARNESS)` runs each case only when `GUARD`
/// (an expression evaluating to `Result<(), String>`) is `Ok`, and otherwise
/// prints why it skipped, e.g. when no S3 endpoint is configured.
#[macro_export]
macro_rules! conformance_tests {
    (if $guard:expr, $harness:expr) => {
        $crate::conformance_tests!(@cases ($guard) $harness;
            append_then_read_back, head_after_reopen, concurrent_producers_keep_order,
            batch_sizes, large_and_unusual_entries, reader_starts_mid_log, empty_log,
            refuses_batches_that_do_not_link);
    };
    ($harness:expr) => {
        $crate::conformance_tests!(if ::std::result::Result::<(), ::std::string::String>::Ok(()), $harness);
    };
    (@cases ($guard:expr) $harness:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let ::std::result::Result::Err(why) = $guard {
                    $crate::testing::skip_or_fail(stringify!($case), &why);
                    return;
                }
                let harness = $harness;
                $crate::testing::$case(&harness).await;
            }
        )*
    };
}

/// The environment variable that lets a test whose prerequisite is missing
/// (Garage, root, an S3 endpoint) skip. Without it such a test fails: a test
/// that did not run must never count as passed.
pub const ALLOW_SKIP: &str = "AUDIT_ALLOW_SKIP";

/// Skips `test` for `why` if [`ALLOW_SKIP`] is set (saying so on stderr),
/// and fails it otherwise. Call it, then return.
pub fn skip_or_fail(test: &str, why: &str) {
    assert!(
        std::env::var_os(ALLOW_SKIP).is_some(),
        "{test} did not run: {why}. Provide it (`cargo xtask test` installs and starts what the tests need), or set {ALLOW_SKIP}=1 to skip knowingly"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// A tmpfs of a given size, mounted on a fresh directory for a test that
/// needs a small disk to fill, and unmounted when dropped.
pub struct Tmpfs {
    // Kept for its directory, which outlives the mount.
    _base: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `2m`) for `test`.
    /// Mounting needs root: without it the test fails, or skips when
    /// [`ALLOW_SKIP`] is set, and this returns `None` (return then).
    pub fn mount(test: &str, size: &str) -> Option<Self> {
        use std::process::Command;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            skip_or_fail(test, "mounting a tmpfs needs root");
            return None;
        }
        let base = tempfile::tempdir().expect("tempdir");
        let path = base.path().join("mnt");
        std::fs::create_dir(&path).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount tmpfs failed although running as root");
        Some(Self { _base: base, path })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// What a [`FaultySink`] does to the appends it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Pass every append through.
    #[default]
    None,
    /// Fail the next `n` appends, then pass.
    FailNext(u64),
    /// Fail every `k`-th append (counting from 1).
    FailEvery(u64),
    /// Fail every append until the plan changes.
    FailAlways,
    /// Hold every append until the plan changes.
    Hang,
    /// Fail every call, reads and heads as well as appends, as an unreachable
    /// store does.
    Down,
}

/// Wraps a sink and injects failures and hangs into its appends.
pub struct FaultySink {
    inner: Arc<dyn Sink>,
    plan: watch::Sender<Fault>,
    calls: watch::Sender<u64>,
    failures: AtomicU64,
    log: Mutex<Vec<(u64, u64, bool)>>,
    starts: Mutex<Vec<tokio::time::Instant>>,
}

impl FaultySink {
    /// Wraps `inner`, passing everything through at first.
    pub fn new(inner: Arc<dyn Sink>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            plan: watch::channel(Fault::None).0,
            calls: watch::channel(0).0,
            failures: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            starts: Mutex::new(Vec::new()),
        })
    }

    /// Changes the plan; a hang in progress ends when the plan is no longer `Hang`.
    pub fn set(&self, fault: Fault) {
        self.plan.send_replace(fault);
    }

    /// Appends attempted so far.
    pub fn calls(&self) -> u64 {
        *self.calls.borrow()
    }

    /// Waits until at least `n` appends have been attempted.
    pub async fn wait_for_calls(&self, n: u64) {
        let mut rx = self.calls.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Appends failed on purpose so far.
    pub fn injected_failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Every append seen: (first seq, last seq, passed through).
    pub fn history(&self) -> Vec<(u64, u64, bool)> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// When each append was called, on tokio's clock (which a test may pause).
    pub fn call_starts(&self) -> Vec<tokio::time::Instant> {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl RecordReader for FaultySink {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        self.down()?;
        self.inner.read_from(from_seq).await
    }
}

impl FaultySink {
    fn down(&self) -> Result<(), SinkError> {
        if *self.plan.borrow() == Fault::Down {
            return Err(SinkError::Injected {
                sink: self.inner.name().to_string(),
                detail: "the store is down on purpose".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FaultySink {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> SinkCapabilities {
        self.inner.capabilities()
    }

    async fn head(&self) -> Result<Option<ChainHead>, SinkError> {
        self.down()?;
        self.inner.head().await
    }

    async fn cut_after(&self, seq: u64) -> Result<(), SinkError> {
        self.down()?;
        self.inner.cut_after(seq).await
    }

    async fn append(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tokio::time::Instant::now());
        let mut n = 0;
        self.calls.send_modify(|c| {
            *c += 1;
            n = *c;
        });
        let mut rx = self.plan.subscribe();
        let _ = rx.wait_for(|f| *f != Fault::Hang).await;
        let fault = *rx.borrow();
        let fail = match fault {
            Fault::None | Fault::Hang => false,
            Fault::FailAlways | Fault::Down => true,
            Fault::FailEvery(k) => k > 0 && n.is_multiple_of(k),
            Fault::FailNext(left) => {
                if left > 1 {
                    self.plan.send_replace(Fault::FailNext(left - 1));
                } else {
                    self.plan.send_replace(Fault::None);
                }
                left > 0
            }
        };
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push((
            batch.first().seq(),
            batch.last().seq(),
            !fail,
        ));
        if fail {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(SinkError::Injected {
                sink: self.name().to_string(),
                detail: format!("append #{n} failed on purpose"),
            });
        }
        self.inner.append(batch).await
    }
}

/// The environment variable that makes [`one_writer`] the second writer, in
/// a child process: it names the log's directory.
pub const ONE_WRITER_CHILD: &str = "AUDIT_ONE_WRITER_CHILD";

/// Checks a backend's one-writer lock: with a sink open on the log in
/// `dir`, a second one is refused with [`SinkError::InUse`] in this process
/// and in another (this test binary run again as `test_name --exact`, with
/// [`ONE_WRITER_CHILD`] naming `dir`). `open` opens a sink on the log in the
/// directory it is given. Call it from a `#[tokio::test]` named `test_name`.
pub async fn one_writer<F, Fut>(test_name: &str, open: F)
where
    F: Fn(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<Arc<dyn Sink>, crate::SinkError>>,
{
    if let Some(dir) = std::env::var_os(ONE_WRITER_CHILD) {
        // The child: report how the open went by exit status.
        let code = match open(dir.into()).await {
            Err(crate::SinkError::InUse { .. }) => 3,
            Err(e) => {
                eprintln!("second writer: {e}");
                4
            }
            Ok(_) => 0,
        };
        std::process::exit(code);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let first = open(dir.clone()).await.expect("the first sink opens");
    match open(dir.clone()).await {
        Err(crate::SinkError::InUse { .. }) => {}
        Err(e) => panic!("a second sink in this process failed, but not as InUse: {e}"),
        Ok(_) => panic!("a second sink on the same log in this process was not refused"),
    }
    let exe = std::env::current_exe().expect("this test binary");
    let out = std::process::Command::new(exe)
        .args([test_name, "--exact", "--nocapture"])
        .env(ONE_WRITER_CHILD, &dir)
        .output()
        .expect("run the second writer");
    assert_eq!(
        out.status.code(),
        Some(3),
        "a second writer in another process must be refused with InUse; it exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    drop(first);
}
