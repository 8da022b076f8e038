//! The writer: group-committed appends fanned out to several sinks.
//!
//! [`AuditLog`] is what a service calls. One driver task owns the chain head;
//! producers serialize their entries in their own tasks and queue the bodies;
//! the driver seals whatever is queued into one batch, hands the batch to every
//! sink at once and resolves each receipt when its durability policy is met.
//!
//! # How the sinks' answers combine
//! - A receipt under [`Durability::Threshold`] resolves once at least
//!   `min_durable_sinks` sinks hold the record durably.
//! - A receipt under [`Durability::AllRequired`] also waits for every
//!   [`Role::Required`] sink, and fails as soon as one of them fails or times out.
//! - A sink that fails or exceeds its timeout falls behind. Its missing records
//!   stay in memory, then in a bounded spool, and are replayed in order when it
//!   answers again, so no sink ever holds a hole.
//! - A batch that no sink stored, and that no sink may still be storing, is
//!   rolled back: its sequence numbers are reused and its producers get an error.
//!   A batch that some sink stored, or may be storing (timed out), stays in the
//!   chain even when its producers get an error: see [`AppendError::NotDurable`].

mod health;
mod retention;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use health::{HealthSnapshot, HealthState, SinkHealth};
pub use retention::SpoolConfig;

use crate::chain::{encode_entry_body_checked, encode_marker_body, PreparedBody, Sequencer};
use crate::checkpoint::{rotation_body, Checkpoint, KeyPair, Seal};
use crate::entry::AuditEntry;
use crate::entry_json::EncodeError;
use crate::record::{ChainHead, Hash32, Record};
use crate::seal_mac::SealMacKey;
use crate::sink::{RecordBatch, Sink, SinkError};
use retention::{JobSource, Retention};

/// Whether a sink must hold every record for a fail-closed receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// [`Durability::AllRequired`] receipts wait for this sink.
    Required,
    /// The sink counts toward the threshold but never blocks a receipt.
    Optional,
}

/// When a receipt resolves: the caller's fail-closed or fail-open choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Fail closed: every required sink and at least the threshold.
    AllRequired,
    /// Fail open: at least the threshold, whichever sinks they are.
    Threshold,
}

/// What `append` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room (back-pressure).
    Block,
    /// Fail at once with [`AppendError::QueueFull`].
    FailFast,
}

/// One sink in the fan-out, with its role and timeout.
#[derive(Clone)]
pub struct SinkSpec {
    /// The backend.
    pub sink: Arc<dyn Sink>,
    /// Required or optional.
    pub role: Role,
    /// How long one batch may take on this sink before it counts as failed.
    pub timeout: Duration,
    /// The least time between the starts of two writes to this sink (zero by
    /// default: a sink takes what has been sealed as soon as its previous
    /// write ends). Records sealed in between go in the next write, so a
    /// replica paced this way makes fewer, larger writes and leaves more of
    /// the machine to the sinks that receipts wait for. The sink trails by up
    /// to this long; a receipt that needs it (it is required, or the
    /// threshold counts on it) waits up to this long more, and a batch counts
    /// as timed out on it only after this plus `timeout`. Closing the log
    /// does not wait for the interval.
    pub min_write_interval: Duration,
}

impl SinkSpec {
    /// A required sink with a 5-second timeout.
    pub fn required(sink: Arc<dyn Sink>) -> Self {
        Self {
            sink,
            role: Role::Required,
            timeout: Duration::from_secs(5),
            min_write_interval: Duration::ZERO,
        }
    }

    /// An optional sink with a 5-second timeout.
    pub fn optional(sink: Arc<dyn Sink>) -> Self {
        Self {
            role: Role::Optional,
            ..Self::required(sink)
        }
    }

    /// The same spec with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same spec with another [`min_write_interval`](Self::min_write_interval).
    pub fn with_min_write_interval(mut self, interval: Duration) -> Self {
        self.min_write_interval = interval;
        self
    }
}

/// The writer's settings. The defaults are safe: every required sink is
/// waited for, and the queue blocks when full.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most records in one batch.
    pub batch_max_records: usize,
    /// Most bytes in one batch (a single larger record still goes alone).
    pub batch_max_bytes: usize,
    /// How long the driver waits for more entries before closing a batch.
    /// Zero closes a batch as soon as the queue is empty; batches still grow
    /// while the previous one is being made durable.
    pub linger: Duration,
    /// Entries that may wait in the queue.
    pub queue_capacity: usize,
    /// What `append` does when the queue is full.
    pub when_full: WhenFull,
    /// At least this many sinks must hold a record for any receipt.
    pub min_durable_sinks: usize,
    /// The durability of entries whose decision has no rule below.
    pub default_durability: Durability,
    /// Per `authorization_decision` value, e.g. `deny` → `AllRequired`.
    pub durability_by_decision: HashMap<String, Durability>,
    /// Consecutive successes that bring a degraded sink back to healthy.
    pub recovery_successes: u64,
    /// The largest record accepted, in bytes.
    pub max_record_bytes: usize,
    /// Memory for records a lagging sink still lacks.
    pub retention_memory_bytes: usize,
    /// Disk for records a lagging sink still lacks, beyond memory.
    pub spool: Option<SpoolConfig>,
    /// Signed checkpoints written into the chain, if any.
    pub checkpoints: Option<CheckpointConfig>,
    /// Most records sent to a lagging sink in one catch-up append. Larger than
    /// a batch, so a sink that writes slowly (an object store with one segment
    /// a second) can drain what it missed.
    pub catch_up_max_records: usize,
    /// Most bytes sent to a lagging sink in one catch-up append.
    pub catch_up_max_bytes: usize,
    /// The first retry delay after a sink fails; it doubles up to `retry_max`.
    pub retry_min: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// How often a sink that was dropped from the log (unavailable at
    /// start-up, failed its start-up backfill, or fell behind by more than
    /// retention holds) is asked for its head. When it answers with a record
    /// of this chain, it is backfilled from a live sink and rejoins the log,
    /// degraded until its run of successes. `None` keeps it out until the log
    /// restarts or `audit resync`.
    pub rejoin_interval: Option<Duration>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            batch_max_records: 8192,
            batch_max_bytes: 8 << 20,
            linger: Duration::ZERO,
            queue_capacity: 65_536,
            when_full: WhenFull::Block,
            min_durable_sinks: 1,
            default_durability: Durability::AllRequired,
            durability_by_decision: HashMap::new(),
            recovery_successes: 3,
            max_record_bytes: 16 << 20,
            retention_memory_bytes: 64 << 20,
            spool: None,
            checkpoints: None,
            catch_up_max_records: 131_072,
            catch_up_max_bytes: 64 << 20,
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            rejoin_interval: Some(Duration::from_secs(30)),
        }
    }
}

impl WriterConfig {
    /// The most records a writer with this configuration and `sinks` sinks
    /// puts between two consecutive `seal` records: the stretch a seal note
    /// announces (docs/FORMAT.md section 9).
    ///
    /// A batch holds at most `batch_max_records` entries, at most
    /// [`markers_per_batch`](Self::markers_per_batch) `sink_gap` or
    /// `sink_rejoined` markers (more wait for the next batch), at most one
    /// `key_rotation` and at most one `checkpoint`, and then its seal; nothing
    /// else chains records. So the bound is
    /// `batch_max_records + 2 × sinks + 2`.
    pub fn max_stretch(&self, sinks: usize) -> u64 {
        self.batch_max_records as u64 + Self::markers_per_batch(sinks) as u64 + 2
    }

    /// The most markers one batch takes: a sink can be dropped and rejoin
    /// while one batch is in flight, so two per sink is what a batch normally
    /// needs; a longer backlog goes into the batches after it.
    pub fn markers_per_batch(sinks: usize) -> usize {
        2 * sinks.max(1)
    }

    /// The durability an entry gets from its decision.
    pub fn durability_for(&self, entry: &AuditEntry) -> Durability {
        self.durability_by_decision
            .get(&entry.authorization_decision)
            .copied()
            .unwrap_or(self.default_durability)
    }
}

/// Signed checkpoints: when the writer signs the chain head, and where else it
/// publishes the signature.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The signing key.
    pub key: Arc<KeyPair>,
    /// The log's identity, the first line of every checkpoint note.
    pub log_id: String,
    /// A checkpoint after at most this many entries and markers, whatever
    /// the batching (a batch ends where a checkpoint is due). The `seal`
    /// ending each batch is not counted.
    pub every_records: u64,
    /// A checkpoint at least this often while records arrive.
    pub every: Duration,
    /// A checkpoint this often while idle, so a quiet period can be told apart
    /// from a cut-off.
    pub heartbeat: Duration,
    /// A witness directory, ideally on other (WORM) storage: checkpoint notes
    /// are also written there as `checkpoint-<seq>.note`, never overwritten.
    pub witness_dir: Option<std::path::PathBuf>,
    /// The newest checkpoint goes to the witness at most this often (and
    /// always at clean shutdown).
    pub witness_interval: Duration,
    /// The key being replaced. At start-up, if the log's last seal (or, in a
    /// log without seals, its last checkpoint) is signed by this key, the
    /// writer chains a `key_rotation` record announcing `key`, signed by this
    /// key and cosigned by `key`; once the log is signed by `key`, a restart
    /// with this still set rotates nothing. Seals signed by this key are also
    /// accepted when start-up authenticates the sinks' tails.
    pub previous_key: Option<Arc<KeyPair>>,
    /// A batch's seal is signed (an Ed25519 note a public verifier checks)
    /// when at least this many records follow the last signed seal; the
    /// other batches end with a MAC seal, which only the writer and an
    /// auditor holding the MAC key can check (docs/FORMAT.md section 9).
    /// 0 signs every seal. The first seal after start-up and the seal of a
    /// batch holding a checkpoint are always signed.
    pub sign_seals_every_records: u64,
    /// A batch's seal is also signed when the last signed seal is this old,
    /// so a public verifier's unsigned tail stays this short in time.
    pub sign_seals_every: Duration,
    /// Adopt a sink that holds records but no seal at all (a log written
    /// without a key). Without a seal its records cannot be told from a
    /// forgery written over the whole log, so by default start-up refuses
    /// such a sink. Set it for the first start with a key on a log written
    /// without one, and unset it after: once the writer has sealed the log,
    /// it is not needed, and left set it lets a wholesale rewrite in.
    pub adopt_unsealed: bool,
}

impl CheckpointConfig {
    /// The stretch a signed seal announces: the most records between two
    /// consecutive signed seals, with `max_stretch` the most between any two
    /// consecutive seals ([`WriterConfig::max_stretch`]). The writer signs
    /// the first seal whose batch ends at least `sign_seals_every_records`
    /// after the last signed one, so the bound is their sum.
    pub fn signed_stretch(&self, max_stretch: u64) -> u64 {
        max_stretch.saturating_add(self.sign_seals_every_records)
    }

    /// Checkpoints every 1,000 records or 10 seconds, a heartbeat every 60 s;
    /// a signed seal at least every 1,024 records or 100 ms.
    pub fn new(key: Arc<KeyPair>, log_id: impl Into<String>) -> Self {
        Self {
            key,
            log_id: log_id.into(),
            every_records: 1000,
            every: Duration::from_secs(10),
            heartbeat: Duration::from_secs(60),
            witness_dir: None,
            witness_interval: Duration::from_secs(1),
            previous_key: None,
            sign_seals_every_records: 1024,
            sign_seals_every: Duration::from_millis(100),
            adopt_unsealed: false,
        }
    }
}

/// Proof that a record is durable under the policy it was appended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The record's sequence.
    pub seq: u64,
    /// The record's hash.
    pub hash: Hash32,
}

/// A queued entry's receipt, resolved once the record is durable under its policy.
#[derive(Debug)]
#[must_use = "the receipt says whether the entry became durable"]
pub struct PendingReceipt {
    rx: oneshot::Receiver<Result<Receipt, AppendError>>,
}

impl std::future::Future for PendingReceipt {
    type Output = Result<Receipt, AppendError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(AppendError::Closed)))
    }
}

/// Why an append did not produce a receipt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The entry could not be serialized.
    #[error("entry could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The entry's `arguments` nest deeper than a record may
    /// ([`crate::MAX_NESTING`] levels); every verifier would call the record
    /// malformed.
    #[error(
        "entry arguments nest deeper than {max} levels, which no record may (FORMAT.md section 5)"
    )]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The record would exceed `max_record_bytes`.
    #[error("record would be {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The queue was full and the log fails fast.
    #[error("audit queue is full ({capacity} entries)")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The log is closed.
    #[error("audit log is closed")]
    Closed,
    /// The policy was not met.
    ///
    /// With `kept` false the record was rolled back and is in no sink. With
    /// `kept` true it stays in the chain, durable on fewer sinks than the policy
    /// asks (or in doubt on a sink that timed out), and will be replayed to the
    /// others: a retry would log the entry twice.
    #[error("record {seq} is not durable under {durability:?} ({}): {detail}", if *kept { "kept in the chain" } else { "rolled back" })]
    NotDurable {
        /// The sequence the record had.
        seq: u64,
        /// The policy that was not met.
        durability: Durability,
        /// Whether the record stays in the chain.
        kept: bool,
        /// Which sinks failed and why.
        detail: String,
    },
}

/// Why the log could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is inconsistent.
    #[error("invalid writer configuration: {0}")]
    Config(String),
    /// Two sinks hold different records at the same sequence.
    #[error("sinks {a} and {b} hold different records at sequence {seq} ({a}: {hash_a}, {b}: {hash_b}); refusing to start")]
    Fork {
        /// The sink with the longer chain.
        a: String,
        /// The other sink.
        b: String,
        /// The sequence where they differ.
        seq: u64,
        /// `a`'s record hash there.
        hash_a: Hash32,
        /// `b`'s record hash there.
        hash_b: Hash32,
    },
    /// A required sink failed during start-up.
    #[error("required sink failed at start-up: {0}")]
    Sink(#[source] SinkError),
    /// A sink's stored records could not be read back as a valid chain.
    #[error("sink {sink}: {detail}")]
    Backfill {
        /// The sink read from or written to.
        sink: String,
        /// What went wrong.
        detail: String,
    },
    /// A sink holds records after the last seal by this log's key (current or
    /// previous) that it cannot cut and no other sink's seal covers: records
    /// this writer never acknowledged, possibly planted.
    #[error("sink {sink}: records {from}..{to} are not sealed by this log's key; refusing to adopt them{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Unsealed {
        /// The sink.
        sink: String,
        /// The first unsealed record.
        from: u64,
        /// The last one (the sink's head).
        to: u64,
        /// Why cutting them was not an option, if it was tried.
        detail: Option<String>,
    },
}

enum Msg {
    Append(Pending),
    Close(oneshot::Sender<()>),
}

struct Pending {
    body: PreparedBody,
    durability: Durability,
    reply: oneshot::Sender<Result<Receipt, AppendError>>,
}

/// The handle a service appends through. Clones share one log.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    config: Arc<WriterConfig>,
    health: watch::Receiver<HealthSnapshot>,
    driver: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the log over `sinks`.
    ///
    /// Reads every sink's head, refuses to start if two sinks disagree at a
    /// sequence they share, backfills sinks that are behind from the most
    /// advanced one, and resumes the chain from there (never from genesis
    /// unless every sink is empty).
    pub async fn open(config: WriterConfig, sinks: Vec<SinkSpec>) -> Result<Self, OpenError> {
        validate(&config, &sinks)?;
        if let Some(spool) = &config.spool {
            // Chunks left by a process that crashed: the sinks they were kept
            // for are backfilled from their replicas at start-up, not from here.
            let dir = spool.dir.clone();
            match tokio::task::spawn_blocking(move || retention::clear_stale_spool(&dir)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not clear stale spool chunks"),
                Err(e) => tracing::warn!(error = %e, "could not clear stale spool chunks"),
            }
        }
        let start = startup::prepare(&config, &sinks).await?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let n_sinks = sinks.len();
        let slots: Vec<Slot> = sinks
            .into_iter()
            .zip(start.sink_states)
            .map(|(spec, st)| Slot::new(spec, st, config.rejoin_interval))
            .collect();
        let snapshot = HealthSnapshot {
            status: HealthState::Healthy,
            head_seq: start.head.map_or(0, |h| h.seq),
            queued: 0,
            sinks: slots.iter().map(|s| s.health.clone()).collect(),
        };
        let (health_tx, health_rx) = watch::channel(snapshot);
        let config = Arc::new(config);
        let next_seq = start.head.map_or(1, |h| h.seq + 1);
        // Sinks that could not join at start-up are out of the log from the
        // first record on: the chain says so.
        let start_gaps: Vec<Vec<u8>> = slots
            .iter()
            .filter(|s| s.failed)
            .filter_map(|s| {
                let reason = s.health.last_error.as_deref().unwrap_or("unavailable");
                gap_marker(s.name(), s.durable + 1, next_seq - 1, reason)
            })
            .collect();
        let driver = Driver {
            retention: Retention::new(
                next_seq,
                config.retention_memory_bytes,
                config.spool.clone(),
            ),
            config: config.clone(),
            seq: Sequencer::resume(start.head),
            rx,
            rx_done: false,
            close_waiters: Vec::new(),
            done_tx,
            done_rx,
            slots,
            inflight: None,
            markers: start_gaps,
            health: health_tx,
            close_deadline: None,
            last_batch_entries: 0,
            // Whether a restarted log's tail is signed is unknown: sign it at
            // the next opportunity.
            since_checkpoint: u64::from(start.head.is_some()),
            last_checkpoint: Instant::now(),
            checkpoint_due: false,
            rotation_pending: start.rotate,
            max_stretch: config.max_stretch(n_sinks),
            markers_per_batch: WriterConfig::markers_per_batch(n_sinks),
            final_checkpoint_written: false,
            seal_mac: config
                .checkpoints
                .as_ref()
                .map(|cp| (cp.key.seal_mac_key(), cp.key.writer_mac_key())),
            last_signed_seal: None,
            witness_writes: Vec::new(),
            witness_pending: None,
            last_witness: None,
        };
        let handle = tokio::spawn(driver.run());
        Ok(Self {
            tx,
            config,
            health: health_rx,
            driver: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// Appends `entry` with the durability its decision class gets from the
    /// configuration, and resolves when the record is durable under it.
    pub async fn append(&self, entry: &AuditEntry) -> Result<Receipt, AppendError> {
        let durability = self.config.durability_for(entry);
        self.append_with(entry, durability).await
    }

    /// Appends `entry` with an explicit durability.
    pub async fn append_with(
        &self,
        entry: &AuditEntry,
        durability: Durability,
    ) -> Result<Receipt, AppendError> {
        self.enqueue_with(entry, durability).await?.await
    }

    /// Queues `entry` (waiting for room, or failing fast, as configured) and
    /// returns a future for its receipt. Entries queued one after another by
    /// one task get increasing sequence numbers in that order, so a caller can
    /// keep many appends in flight and still log them in input order.
    pub async fn enqueue(&self, entry: &AuditEntry) -> Result<PendingReceipt, AppendError> {
        self.enqueue_with(entry, self.config.durability_for(entry))
            .await
    }

    /// [`AuditLog::enqueue`] with an explicit durability.
    pub async fn enqueue_with(
        &self,
        entry: &AuditEntry,
        durability: Durability,
    ) -> Result<PendingReceipt, AppendError> {
        // Room for the chain members, which the driver appends in place.
        let mut body = Vec::with_capacity(1024);
        encode_entry_body_checked(entry, &mut body).map_err(|e| match e {
            EncodeError::TooDeep => AppendError::TooDeep {
                max: crate::MAX_NESTING,
            },
            EncodeError::Json(e) => AppendError::from(e),
        })?;
        // Chain members add at most 180 bytes.
        let len = body.len() + 180;
        if len > self.config.max_record_bytes {
            return Err(AppendError::TooLarge {
                len,
                max: self.config.max_record_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        let msg = Msg::Append(Pending {
            body: PreparedBody::new(body),
            durability,
            reply,
        });
        match self.config.when_full {
            WhenFull::Block => self.tx.send(msg).await.map_err(|_| AppendError::Closed)?,
            WhenFull::FailFast => self.tx.try_send(msg).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AppendError::QueueFull {
                    capacity: self.config.queue_capacity,
                },
                mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
            })?,
        }
        Ok(PendingReceipt { rx })
    }

    /// The current health, ready to serialize for a /health endpoint.
    pub fn health(&self) -> HealthSnapshot {
        let mut snap = self.health.borrow().clone();
        snap.queued = self.config.queue_capacity.max(1) - self.tx.capacity();
        snap
    }

    /// A receiver that sees every health change; tests wait on it instead of sleeping.
    ///
    /// Drop what `borrow` or `wait_for` returns before awaiting anything else:
    /// it is a read lock, and the writer takes the write lock to publish the
    /// next change before it goes on.
    pub fn subscribe_health(&self) -> watch::Receiver<HealthSnapshot> {
        self.health.clone()
    }

    /// Waits until every sink that is not failed holds the whole chain.
    pub async fn caught_up(&self) {
        let mut rx = self.health.clone();
        // The sender lives as long as the driver; when it is gone there is nothing to wait for.
        let _ = rx.wait_for(HealthSnapshot::caught_up).await;
    }

    /// Stops accepting entries, finishes the queued ones, gives lagging sinks
    /// up to their timeout to catch up, and stops the driver.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.driver.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if let Err(e) = h.await {
                tracing::error!(error = %e, "audit writer task ended abnormally");
            }
        }
    }
}

fn validate(config: &WriterConfig, sinks: &[SinkSpec]) -> Result<(), OpenError> {
    if sinks.is_empty() {
        return Err(OpenError::Config("no sinks configured".into()));
    }
    if config.min_durable_sinks == 0 || config.min_durable_sinks > sinks.len() {
        return Err(OpenError::Config(format!(
            "min_durable_sinks is {} but there are {} sinks",
            config.min_durable_sinks,
            sinks.len()
        )));
    }
    let mut names = HashSet::new();
    for s in sinks {
        if !names.insert(s.sink.name().to_string()) {
            return Err(OpenError::Config(format!(
                "two sinks are named {:?}",
                s.sink.name()
            )));
        }
    }
    if config.batch_max_records == 0 || config.batch_max_bytes == 0 {
        return Err(OpenError::Config("batch limits must be positive".into()));
    }
    Ok(())
}

mod startup;

/// What start-up learned about one sink.
pub(crate) struct SinkStart {
    durable: u64,
    failed: Option<String>,
}

#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    Stored,
    Failed { clean: bool, reason: String },
    TimedOut,
}

struct Waiter {
    seq: u64,
    hash: Hash32,
    durability: Durability,
    reply: Option<oneshot::Sender<Result<Receipt, AppendError>>>,
}

struct InFlight {
    first: u64,
    last: u64,
    prev_head: Option<ChainHead>,
    /// Checkpoint notes sealed in this batch, for the witness once it is kept.
    witness_notes: Vec<(u64, String)>,
    /// The batch holds the key rotation, which a rollback must redo.
    rotated: bool,
    marker_bodies: Vec<Vec<u8>>,
    started: Instant,
    outcomes: Vec<Outcome>,
    waiters: Vec<Waiter>,
}

struct Job {
    started: Instant,
    first: u64,
    hung: bool,
    /// A rejoin: a backfill that may take longer than the sink's timeout.
    rejoin: Option<JoinHandle<()>>,
}

struct Slot {
    spec: SinkSpec,
    durable: u64,
    job: Option<Job>,
    retry_at: Option<Instant>,
    failed: bool,
    /// When a dropped sink is next asked whether it can rejoin.
    rejoin_at: Option<Instant>,
    /// Where a rejoin that needed more than one stretch started copying.
    rejoin_copied_from: Option<u64>,
    health: SinkHealth,
    /// When the last write to this sink started, for its `min_write_interval`.
    last_write: Option<Instant>,
}

impl Slot {
    fn new(spec: SinkSpec, start: SinkStart, rejoin_interval: Option<Duration>) -> Self {
        let mut health = SinkHealth::new(spec.sink.name().to_string(), spec.role, start.durable);
        let failed = start.failed.is_some();
        if let Some(reason) = start.failed {
            health.fail_permanently(reason);
        }
        Self {
            spec,
            durable: start.durable,
            job: None,
            retry_at: None,
            last_write: None,
            failed,
            rejoin_at: rejoin_interval
                .filter(|_| failed)
                .map(|d| Instant::now() + d),
            rejoin_copied_from: None,
            health,
        }
    }

    /// Until when this sink's `min_write_interval` holds back its next write.
    fn paced_until(&self) -> Option<Instant> {
        let interval = self.spec.min_write_interval;
        self.last_write
            .filter(|_| !interval.is_zero())
            .map(|t| t + interval)
    }

    /// When a batch started at `started` counts as timed out on this sink:
    /// its write may be held back by the interval first.
    fn batch_deadline(&self, started: Instant) -> Instant {
        started + self.spec.min_write_interval + self.spec.timeout
    }

    fn name(&self) -> &str {
        self.spec.sink.name()
    }
}

struct JobDone {
    slot: usize,
    last: u64,
    result: Result<(), SinkError>,
    rejoin: bool,
}

struct Driver {
    config: Arc<WriterConfig>,
    seq: Sequencer,
    retention: Retention,
    rx: mpsc::Receiver<Msg>,
    rx_done: bool,
    close_waiters: Vec<oneshot::Sender<()>>,
    done_tx: mpsc::UnboundedSender<JobDone>,
    done_rx: mpsc::UnboundedReceiver<JobDone>,
    slots: Vec<Slot>,
    inflight: Option<InFlight>,
    /// Bodies of non-entry records waiting for the next batch.
    markers: Vec<Vec<u8>>,
    health: watch::Sender<HealthSnapshot>,
    close_deadline: Option<Instant>,
    /// Entries in the previous batch: how many producers may be about to return.
    last_batch_entries: usize,
    /// Records since the last checkpoint.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    checkpoint_due: bool,
    rotation_pending: bool,
    /// The stretch every seal note announces ([`WriterConfig::max_stretch`]).
    max_stretch: u64,
    /// The most markers one batch takes, which `max_stretch` counts on.
    markers_per_batch: usize,
    final_checkpoint_written: bool,
    /// The MAC keys of the seals that are not signed: the auditors' and
    /// the writer's own.
    seal_mac: Option<(SealMacKey, SealMacKey)>,
    /// The last signed seal this run, and when it was chained: the next seal
    /// is signed once it is far enough behind (None: none yet this run).
    last_signed_seal: Option<(u64, Instant)>,
    witness_writes: Vec<JoinHandle<()>>,
    witness_pending: Option<(u64, String)>,
    last_witness: Option<Instant>,
}

/// How long a batch waits for the next of the producers that the previous
/// batch's receipts just woke, and for all of them. Far below an fsync; tokio's
/// timers cannot wait this briefly, so the driver yields instead of sleeping.
const STRAGGLER_GAP: std::time::Duration = std::time::Duration::from_micros(40);
const STRAGGLER_WAIT: std::time::Duration = std::time::Duration::from_micros(250);

impl Driver {
    async fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                Some(done) = self.done_rx.recv() => self.on_done(done),
                msg = self.rx.recv(), if self.inflight.is_none() && !self.rx_done => match msg {
                    Some(Msg::Append(p)) => self.start_batch(vec![p]).await,
                    Some(Msg::Close(w)) => {
                        self.close_waiters.push(w);
                        self.rx.close();
                    }
                    None => {
                        self.rx_done = true;
                        let longest = self.slots.iter().map(|s| s.spec.timeout).max().unwrap_or_default();
                        self.close_deadline = Some(Instant::now() + longest);
                    }
                },
                () = sleep_until_opt(deadline), if deadline.is_some() => self.on_tick(),
            }
            // Markers are chained even while closing: a sink dropped then is
            // recorded like any other, and close waits for no marker.
            if self.inflight.is_none()
                && (!self.markers.is_empty()
                    || ((self.checkpoint_due || self.rotation_pending) && !self.rx_done))
            {
                self.start_batch(Vec::new()).await;
            }
            self.after_event().await;
            if self.rx_done && self.inflight.is_none() && self.markers.is_empty() {
                if self.config.checkpoints.is_some()
                    && !self.final_checkpoint_written
                    && self.head_seq() > 0
                    && self.since_checkpoint > 0
                {
                    // A clean shutdown signs the final head.
                    self.final_checkpoint_written = true;
                    self.checkpoint_due = true;
                    self.start_batch(Vec::new()).await;
                    self.after_event().await;
                    continue;
                }
                let all_done = self
                    .slots
                    .iter()
                    .all(|s| s.failed || s.durable == self.head_seq());
                let expired = self.close_deadline.is_some_and(|d| Instant::now() >= d);
                if all_done || expired {
                    for s in self
                        .slots
                        .iter()
                        .filter(|s| !s.failed && s.durable < self.head_seq())
                    {
                        tracing::warn!(sink = s.name(), durable = s.durable, head = self.head_seq(),
                            "audit log closed while sink is behind; it is backfilled at next start-up");
                    }
                    break;
                }
            }
        }
        // A rejoin still copying must not write to its sink after close.
        for slot in &mut self.slots {
            if let Some(handle) = slot.job.as_mut().and_then(|j| j.rejoin.take()) {
                handle.abort();
            }
        }
        // The final checkpoint always reaches the witness.
        self.flush_witness();
        for h in self.witness_writes.drain(..) {
            let _ = h.await;
        }
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn head_seq(&self) -> u64 {
        self.seq.head().map_or(0, |h| h.seq)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut best: Option<Instant> = self.close_deadline;
        let mut consider = |t: Instant| best = Some(best.map_or(t, |b| b.min(t)));
        if let Some(cp) = &self.config.checkpoints {
            if self.inflight.is_none()
                && !self.rx_done
                && self.head_seq() > 0
                && !self.checkpoint_due
            {
                let wait = if self.since_checkpoint > 0 {
                    cp.every.min(cp.heartbeat)
                } else {
                    cp.heartbeat
                };
                consider(self.last_checkpoint + wait);
            }
        }
        if let Some(f) = &self.inflight {
            for (i, o) in f.outcomes.iter().enumerate() {
                if matches!(o, Outcome::Pending) {
                    consider(self.slots[i].batch_deadline(f.started));
                }
            }
        }
        let head = self.head_seq();
        for s in &self.slots {
            if s.job.is_none() && !s.failed && s.durable < head && !self.rx_done {
                if let Some(t) = s.paced_until() {
                    consider(t);
                }
            }
            if let Some(j) = &s.job {
                if !j.hung && j.rejoin.is_none() {
                    consider(j.started + s.spec.timeout);
                }
            } else if let (true, Some(t)) = (s.failed, s.rejoin_at) {
                if !self.rx_done {
                    consider(t);
                }
            } else if let Some(t) = s.retry_at {
                if !s.failed && s.durable < self.head_seq() {
                    consider(t);
                }
            }
        }
        best
    }

    async fn start_batch(&mut self, pendings: Vec<Pending>) {
        let prev_head = self.seq.head();
        // A checkpoint follows at most `every_records` entries and markers,
        // whatever the batching: the batch ends where the next one is due.
        let checkpoint_room = self.config.checkpoints.as_ref().map(|cp| {
            usize::try_from(cp.every_records.saturating_sub(self.since_checkpoint))
                .unwrap_or(usize::MAX)
                .max(1)
        });
        // A bounded number of markers, so max_stretch holds; the rest wait.
        let take =
            self.markers.len().min(self.markers_per_batch).min(
                checkpoint_room.map_or(usize::MAX, |room| room.saturating_sub(pendings.len())),
            );
        let marker_bodies: Vec<Vec<u8>> = self.markers.drain(..take).collect();
        let first = self.seq.next_seq();
        for body in &marker_bodies {
            let r = self.seq.seal(body);
            self.retention.push(r);
        }
        let mut waiters = Vec::with_capacity(pendings.len().max(self.last_batch_entries));
        let mut bytes = 0usize;
        // Entries are sealed as they arrive: the chain work overlaps the wait
        // for the rest of the batch instead of following it.
        for p in pendings {
            bytes += p.body.len();
            self.seal_pending(p, &mut waiters);
        }
        let linger_until = Instant::now() + self.config.linger;
        let gather_start = std::time::Instant::now();
        let mut last_arrival = gather_start;
        loop {
            if waiters.len() >= self.config.batch_max_records
                || bytes >= self.config.batch_max_bytes
                || checkpoint_room.is_some_and(|room| waiters.len() + marker_bodies.len() >= room)
            {
                break;
            }
            let msg = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Empty)
                    if self.config.linger.is_zero()
                        && waiters.len() < self.last_batch_entries
                        && last_arrival.elapsed() < STRAGGLER_GAP
                        && gather_start.elapsed() < STRAGGLER_WAIT =>
                {
                    // The producers woken by the last batch's receipts are
                    // about to queue again: give them a few microseconds, or
                    // this batch would hold only the fastest of them and the
                    // rest would wait a whole extra fsync.
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Empty) if !self.config.linger.is_zero() => {
                    match tokio::time::timeout_at(linger_until, self.rx.recv()).await {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            match msg {
                Some(Msg::Append(p)) => {
                    bytes += p.body.len();
                    self.seal_pending(p, &mut waiters);
                    last_arrival = std::time::Instant::now();
                }
                Some(Msg::Close(w)) => {
                    self.close_waiters.push(w);
                    self.rx.close();
                }
                None => break,
            }
        }
        self.since_checkpoint += (waiters.len() + marker_bodies.len()) as u64;
        let rotation_was_pending = self.rotation_pending;
        let witness_notes = self.seal_signatures();
        let rotated = rotation_was_pending && !self.rotation_pending;
        if self.seq.next_seq() == first {
            return;
        }
        // Last, so it covers everything this batch chained. A batch holding a
        // checkpoint is signed anyway; its seal is signed too, so a public
        // verifier's last signed seal is never behind the last checkpoint.
        self.seal_batch(!witness_notes.is_empty() || rotated);
        let last = self.seq.next_seq() - 1;
        self.last_batch_entries = waiters.len();
        let now = Instant::now();
        let outcomes = self
            .slots
            .iter()
            .map(|s| {
                if s.failed {
                    Outcome::Failed {
                        clean: true,
                        reason: "failed".into(),
                    }
                } else if s.job.as_ref().is_some_and(|j| j.hung) {
                    Outcome::TimedOut
                } else if s.job.is_none() && s.retry_at.is_some_and(|t| t > now) {
                    Outcome::Failed {
                        clean: true,
                        reason: s
                            .health
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "retrying".into()),
                    }
                } else {
                    Outcome::Pending
                }
            })
            .collect();
        self.inflight = Some(InFlight {
            first,
            last,
            prev_head,
            witness_notes,
            rotated,
            marker_bodies,
            started: now,
            outcomes,
            waiters,
        });
        for i in 0..self.slots.len() {
            self.dispatch(i);
        }
    }

    fn seal_pending(&mut self, p: Pending, waiters: &mut Vec<Waiter>) {
        let r = self.seq.seal_prepared(p.body);
        waiters.push(Waiter {
            seq: r.seq(),
            hash: r.hash(),
            durability: p.durability,
            reply: Some(p.reply),
        });
        self.retention.push(r);
    }

    /// Seals a pending key rotation and, when one is due, a checkpoint of the
    /// current head. Returns the checkpoint notes sealed.
    fn seal_signatures(&mut self) -> Vec<(u64, String)> {
        let Some(cp) = self.config.checkpoints.clone() else {
            return Vec::new();
        };
        let mut notes = Vec::new();
        if self.rotation_pending {
            if let Some(old) = &cp.previous_key {
                #[derive(Serialize)]
                struct Rotation<'a> {
                    timestamp: chrono::DateTime<chrono::Utc>,
                    log_id: &'a str,
                    new_key: String,
                    note: String,
                }
                let new = cp.key.public();
                let body = Rotation {
                    timestamp: chrono::Utc::now(),
                    log_id: &cp.log_id,
                    new_key: new.to_vkey(),
                    // Signed by both keys: the retired one vouches for its
                    // successor, and the successor proves it holds its key.
                    note: cp
                        .key
                        .cosign(&old.sign_note(&rotation_body(&cp.log_id, &new))),
                };
                let mut buf = Vec::new();
                if encode_marker_body("key_rotation", &body, &mut buf).is_ok() {
                    let r = self.seq.seal(&buf);
                    self.retention.push(r);
                    self.checkpoint_due = true;
                }
            }
            self.rotation_pending = false;
        }
        let due = self.checkpoint_due
            || self.since_checkpoint >= cp.every_records
            || (self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= cp.every);
        let Some(head) = self.seq.head() else {
            return notes;
        };
        if !due {
            return notes;
        }
        let checkpoint = Checkpoint {
            log_id: cp.log_id.clone(),
            seq: head.seq,
            head: head.hash,
            time: chrono::Utc::now().timestamp(),
        };
        let note = cp.key.sign_note(&checkpoint.body());
        #[derive(Serialize)]
        struct Fields<'a> {
            timestamp: chrono::DateTime<chrono::Utc>,
            log_id: &'a str,
            checkpoint_seq: u64,
            head_hash: Hash32,
            key_id: String,
            note: &'a str,
        }
        let fields = Fields {
            timestamp: chrono::Utc::now(),
            log_id: &cp.log_id,
            checkpoint_seq: head.seq,
            head_hash: head.hash,
            key_id: cp.key.public().id_hex(),
            note: &note,
        };
        let mut buf = Vec::new();
        if let Err(e) = encode_marker_body("checkpoint", &fields, &mut buf) {
            tracing::error!(error = %e, "cannot encode a checkpoint");
            return notes;
        }
        let r = self.seq.seal(&buf);
        self.retention.push(r);
        notes.push((head.seq, note));
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.checkpoint_due = false;
        notes
    }

    /// Ends the batch with its `seal` record: the writer's signature (or,
    /// between signed seals, its MAC; see [`crate::seal_mac`]) over the
    /// batch's last record, so that at start-up it can tell its own records
    /// from records written into a sink's storage by someone else. Chained
    /// in the same batch, it is durable exactly when the batch is, before any
    /// of the batch's receipts.
    fn seal_batch(&mut self, sign: bool) {
        let (Some(cp), Some((mac_key, writer_key))) = (&self.config.checkpoints, &self.seal_mac)
        else {
            return;
        };
        let Some(head) = self.seq.head() else {
            return;
        };
        let now = Instant::now();
        let sign = sign
            || cp.sign_seals_every_records == 0
            || self.last_signed_seal.is_none_or(|(at, when)| {
                head.seq - at >= cp.sign_seals_every_records
                    || now.duration_since(when) >= cp.sign_seals_every
            });
        let mut seal = Seal {
            log_id: cp.log_id.clone(),
            seq: head.seq,
            head: head.hash,
            max_stretch: self.max_stretch,
        };
        let mut buf = Vec::with_capacity(400);
        let encoded = if sign {
            seal.max_stretch = cp.signed_stretch(self.max_stretch);
            #[derive(Serialize)]
            struct Fields<'a> {
                sealed_seq: u64,
                note: &'a str,
            }
            let note = cp.key.sign_note(&seal.body());
            encode_marker_body(
                "seal",
                &Fields {
                    sealed_seq: head.seq,
                    note: &note,
                },
                &mut buf,
            )
        } else {
            #[derive(Serialize)]
            struct Fields {
                sealed_seq: u64,
                stretch: u64,
                mac: String,
                writer_mac: String,
            }
            encode_marker_body(
                "seal",
                &Fields {
                    sealed_seq: head.seq,
                    stretch: seal.max_stretch,
                    mac: crate::seal_mac::encode_mac(&mac_key.mac(&seal)),
                    writer_mac: crate::seal_mac::encode_mac(&writer_key.mac(&seal)),
                },
                &mut buf,
            )
        };
        match encoded {
            Ok(()) => {
                let r = self.seq.seal_owned(buf);
                if sign {
                    self.last_signed_seal = Some((r.seq(), now));
                }
                self.retention.push(r);
            }
            // Integers and strings: serde_json cannot fail on them.
            Err(e) => tracing::error!(error = %e, "cannot encode a seal"),
        }
    }

    /// Queues the newest kept checkpoint for the witness and publishes it at
    /// most once per `witness_interval`: the witness only needs the latest
    /// signed head, and every publication costs it two fsyncs.
    fn publish_witness(&mut self, notes: &[(u64, String)]) {
        if let Some(latest) = notes.last() {
            self.witness_pending = Some(latest.clone());
        }
        let interval = self
            .config
            .checkpoints
            .as_ref()
            .map_or(Duration::ZERO, |c| c.witness_interval);
        if self.last_witness.is_none_or(|t| t.elapsed() >= interval) {
            self.flush_witness();
        }
    }

    /// Writes the pending checkpoint note to the witness directory.
    fn flush_witness(&mut self) {
        let Some(dir) = self
            .config
            .checkpoints
            .as_ref()
            .and_then(|c| c.witness_dir.clone())
        else {
            return;
        };
        let Some((seq, note)) = self.witness_pending.take() else {
            return;
        };
        self.last_witness = Some(Instant::now());
        self.witness_writes.retain(|h| !h.is_finished());
        self.witness_writes.push(tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::checkpoint::write_witness(&dir, seq, &note) {
                tracing::error!(dir = %dir.display(), seq, error = %e, "cannot publish checkpoint to the witness");
            }
        }));
    }

    fn dispatch(&mut self, i: usize) {
        let head = self.head_seq();
        let now = Instant::now();
        let slot = &self.slots[i];
        if slot.failed
            && slot.job.is_none()
            && !self.rx_done
            && slot.rejoin_at.is_some_and(|t| t <= now)
        {
            self.start_rejoin(i);
            return;
        }
        if slot.failed
            || slot.job.is_some()
            || slot.durable >= head
            || slot.retry_at.is_some_and(|t| t > now)
            || (!self.rx_done && slot.paced_until().is_some_and(|t| t > now))
        {
            return;
        }
        let from = slot.durable + 1;
        let max_records = self
            .config
            .catch_up_max_records
            .max(self.config.batch_max_records);
        let max_bytes = self
            .config
            .catch_up_max_bytes
            .max(self.config.batch_max_bytes);
        let Some(source) = self.retention.source(from, max_records, max_bytes) else {
            self.fail_slot(i, format!("records from {from} are no longer retained"));
            return;
        };
        let sink = self.slots[i].spec.sink.clone();
        let done = self.done_tx.clone();
        let max = max_records;
        self.slots[i].last_write = Some(now);
        self.slots[i].job = Some(Job {
            started: now,
            first: from,
            hung: false,
            rejoin: None,
        });
        tokio::spawn(async move {
            let (last, result) = run_job(sink.as_ref(), source, max).await;
            let _ = done.send(JobDone {
                slot: i,
                last,
                result,
                rejoin: false,
            });
        });
    }

    /// Asks a dropped sink for its head and, if it holds a record of this
    /// chain, backfills it from the live sink furthest ahead. The job runs
    /// without the sink's timeout: a long outage means a long backfill.
    fn start_rejoin(&mut self, i: usize) {
        let source = self
            .slots
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != i && !s.failed && s.durable > 0)
            .max_by_key(|(_, s)| s.durable)
            .map(|(j, _)| j);
        let Some(j) = source else {
            self.slots[i].rejoin_at = self.config.rejoin_interval.map(|d| Instant::now() + d);
            return;
        };
        let upto = self.slots[j].durable;
        let source = self.slots[j].spec.sink.clone();
        let target = self.slots[i].spec.sink.clone();
        let timeout = self.slots[i].spec.timeout;
        let max = self.config.batch_max_records.max(1024);
        let done = self.done_tx.clone();
        tracing::info!(
            sink = target.name(),
            source = source.name(),
            upto,
            "asking a dropped sink to rejoin"
        );
        let handle = tokio::spawn(async move {
            let result =
                startup::rejoin(source.as_ref(), target.as_ref(), upto, max, timeout).await;
            let _ = done.send(JobDone {
                slot: i,
                last: upto,
                result,
                rejoin: true,
            });
        });
        self.slots[i].job = Some(Job {
            started: Instant::now(),
            first: 0,
            hung: false,
            rejoin: Some(handle),
        });
    }

    fn on_rejoin_done(&mut self, i: usize, reached: u64, result: Result<(), SinkError>) {
        let interval = self.config.rejoin_interval;
        match result {
            Ok(()) => {
                // Retention holds what came after `reached` (or nothing came),
                // so ordinary catch-up can take it from here.
                let covered = reached >= self.head_seq()
                    || self.retention.source(reached + 1, 1, usize::MAX).is_some();
                let slot = &mut self.slots[i];
                let copied_from = *slot.rejoin_copied_from.get_or_insert(slot.durable + 1);
                slot.durable = reached;
                if !covered {
                    // The log moved past what retention keeps while the
                    // backfill ran: copy the next stretch at once.
                    slot.rejoin_at = Some(Instant::now());
                    return;
                }
                slot.rejoin_copied_from = None;
                slot.failed = false;
                slot.rejoin_at = None;
                slot.retry_at = None;
                tracing::info!(
                    sink = slot.name(),
                    durable = reached,
                    "dropped sink backfilled; it rejoins the audit log"
                );
                if let Some(t) = slot.health.rejoin() {
                    log_transition(&slot.health, t.from, t.to, None);
                }
                // The chain records the return as it recorded the drop.
                #[derive(Serialize)]
                struct Rejoined<'a> {
                    timestamp: chrono::DateTime<chrono::Utc>,
                    sink: &'a str,
                    copied_from: u64,
                    holds_through: u64,
                }
                let mut body = Vec::new();
                let rejoined = Rejoined {
                    timestamp: chrono::Utc::now(),
                    sink: slot.spec.sink.name(),
                    copied_from,
                    holds_through: reached,
                };
                if encode_marker_body("sink_rejoined", &rejoined, &mut body).is_ok() {
                    self.markers.push(body);
                }
            }
            Err(e) => {
                let slot = &mut self.slots[i];
                tracing::warn!(sink = slot.name(), error = %e, "dropped sink cannot rejoin yet");
                slot.health.last_error = Some(e.to_string());
                slot.health.last_error_at = Some(chrono::Utc::now());
                slot.rejoin_at = interval.map(|d| Instant::now() + d);
            }
        }
    }

    fn on_done(&mut self, done: JobDone) {
        let i = done.slot;
        if done.rejoin {
            self.slots[i].job = None;
            self.on_rejoin_done(i, done.last, done.result);
            return;
        }
        let job = self.slots[i].job.take();
        let job_first = job.as_ref().map_or(0, |j| j.first);
        match done.result {
            Ok(()) => {
                let slot = &mut self.slots[i];
                slot.durable = done.last;
                slot.retry_at = None;
                if let Some(t) = slot.health.success(self.config.recovery_successes) {
                    log_transition(&slot.health, t.from, t.to, None);
                }
            }
            Err(SinkError::NotContiguous { head, .. }) => {
                // The sink holds more (or less) than we thought: a write we
                // counted as failed may have landed. Adopt its head only if it is
                // exactly a record of our chain.
                let ok = head.is_some_and(|h| {
                    h.seq <= self.head_seq() && self.retention_hash(h.seq) == Some(h.hash)
                });
                match head {
                    Some(h) if ok => {
                        tracing::warn!(
                            sink = self.slots[i].name(),
                            seq = h.seq,
                            "sink head moved; resuming from it"
                        );
                        self.slots[i].durable = h.seq;
                    }
                    _ => self.fail_slot(i, format!("sink head {head:?} is not on this chain")),
                }
            }
            Err(e) => {
                let clean = e.is_clean();
                let reason = e.to_string();
                let slot = &mut self.slots[i];
                let backoff = self
                    .config
                    .retry_min
                    .saturating_mul(1u32 << slot.health.consecutive_failures.min(16) as u32)
                    .min(self.config.retry_max);
                slot.retry_at = Some(Instant::now() + backoff);
                if let Some(t) = slot.health.failure(reason.clone()) {
                    log_transition(&slot.health, t.from, t.to, Some(&reason));
                } else {
                    tracing::debug!(sink = slot.name(), error = %reason, "sink write failed");
                }
                if let Some(f) = &mut self.inflight {
                    if matches!(f.outcomes[i], Outcome::Pending | Outcome::TimedOut) {
                        // A job that never reached this batch's records left them untouched.
                        let touched = done.last >= f.first && job_first <= f.last;
                        f.outcomes[i] = Outcome::Failed {
                            clean: clean || !touched,
                            reason,
                        };
                    }
                }
            }
        }
        if let Some(f) = &mut self.inflight {
            if self.slots[i].durable >= f.last {
                f.outcomes[i] = Outcome::Stored;
            }
        }
    }

    fn retention_hash(&self, seq: u64) -> Option<Hash32> {
        match self.retention.source(seq, 1, usize::MAX)? {
            JobSource::Memory(v) => v.first().filter(|r| r.seq() == seq).map(Record::hash),
            JobSource::Spool { .. } => None,
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if let Some(cp) = &self.config.checkpoints {
            let wait = if self.since_checkpoint > 0 {
                cp.every.min(cp.heartbeat)
            } else {
                cp.heartbeat
            };
            if self.inflight.is_none() && self.head_seq() > 0 && now >= self.last_checkpoint + wait
            {
                self.checkpoint_due = true;
            }
        }
        for i in 0..self.slots.len() {
            let timeout = self.slots[i].spec.timeout;
            let mut timed_out = false;
            if let Some(j) = &mut self.slots[i].job {
                if !j.hung && j.rejoin.is_none() && now >= j.started + timeout {
                    j.hung = true;
                    timed_out = true;
                }
            }
            let batch_deadline = self
                .inflight
                .as_ref()
                .map(|f| self.slots[i].batch_deadline(f.started));
            if let Some(f) = &mut self.inflight {
                if matches!(f.outcomes[i], Outcome::Pending)
                    && batch_deadline.is_some_and(|d| now >= d)
                {
                    f.outcomes[i] = Outcome::TimedOut;
                    timed_out = true;
                }
            }
            if timed_out {
                let reason = format!("timed out after {timeout:?}");
                let slot = &mut self.slots[i];
                if let Some(t) = slot.health.failure(reason.clone()) {
                    log_transition(&slot.health, t.from, t.to, Some(&reason));
                }
            }
        }
        if self.close_deadline.is_some_and(|d| now >= d) {
            self.close_deadline = Some(now);
        }
    }

    fn fail_slot(&mut self, i: usize, reason: String) {
        let head = self.head_seq();
        let slot = &mut self.slots[i];
        if slot.failed {
            return;
        }
        slot.failed = true;
        slot.rejoin_at = self.config.rejoin_interval.map(|d| Instant::now() + d);
        tracing::error!(sink = slot.name(), durable = slot.durable, head, reason = %reason, "sink dropped from the audit log");
        if let Some(t) = slot.health.fail_permanently(reason.clone()) {
            log_transition(&slot.health, t.from, t.to, Some(&reason));
        }
        if let Some(body) = gap_marker(slot.spec.sink.name(), slot.durable + 1, head, &reason) {
            self.markers.push(body);
        }
        if let Some(f) = &mut self.inflight {
            if matches!(f.outcomes[i], Outcome::Pending | Outcome::TimedOut) {
                f.outcomes[i] = Outcome::Failed {
                    clean: true,
                    reason,
                };
            }
        }
    }

    async fn after_event(&mut self) {
        // Health first, so a producer that wakes on its receipt sees it.
        self.publish();
        self.evaluate();
        for i in 0..self.slots.len() {
            self.dispatch(i);
        }
        if self.inflight.is_none() {
            self.relieve_retention().await;
        }
        self.publish();
    }

    /// Resolves receipts whose policy is met, and settles the batch once its
    /// fate is known on every sink.
    fn evaluate(&mut self) {
        let Some(f) = &mut self.inflight else { return };
        let k = self.config.min_durable_sinks;
        let mut stored = 0;
        let mut pending = 0;
        let mut required_failed = false;
        let mut required_all_stored = true;
        for (o, s) in f.outcomes.iter().zip(&self.slots) {
            match o {
                Outcome::Stored => stored += 1,
                Outcome::Pending => pending += 1,
                Outcome::Failed { .. } | Outcome::TimedOut => {}
            }
            if s.spec.role == Role::Required {
                match o {
                    Outcome::Stored => {}
                    Outcome::Pending => required_all_stored = false,
                    _ => {
                        required_all_stored = false;
                        required_failed = true;
                    }
                }
            }
        }
        let threshold_met = stored >= k;
        let threshold_impossible = stored + pending < k;
        let mut unresolved = 0;
        for w in &mut f.waiters {
            if w.reply.is_none() {
                continue;
            }
            let (ok, failed) = match w.durability {
                Durability::Threshold => (threshold_met, threshold_impossible),
                Durability::AllRequired => (
                    threshold_met && required_all_stored,
                    threshold_impossible || required_failed,
                ),
            };
            if ok {
                if let Some(tx) = w.reply.take() {
                    let _ = tx.send(Ok(Receipt {
                        seq: w.seq,
                        hash: w.hash,
                    }));
                }
            } else if !failed {
                unresolved += 1;
            }
        }
        // Waiters that failed are answered at settlement, when we know whether
        // their records stay in the chain: at once if some sink stored them,
        // otherwise when no sink may still be storing them.
        let settled = unresolved == 0 && (pending == 0 || stored > 0);
        if !settled {
            return;
        }
        let Some(f) = self.inflight.take() else {
            return;
        };
        let in_doubt = f.outcomes.iter().any(|o| {
            matches!(
                o,
                Outcome::TimedOut | Outcome::Pending | Outcome::Failed { clean: false, .. }
            )
        });
        let kept = stored > 0 || in_doubt;
        let detail = f
            .outcomes
            .iter()
            .zip(&self.slots)
            .filter_map(|(o, s)| match o {
                Outcome::Failed { reason, .. } => Some(format!("{}: {reason}", s.name())),
                Outcome::TimedOut => Some(format!(
                    "{}: timed out after {:?}",
                    s.name(),
                    s.spec.timeout
                )),
                Outcome::Pending => Some(format!("{}: still writing", s.name())),
                Outcome::Stored => None,
            })
            .collect::<Vec<_>>()
            .join("; ");
        if kept && stored > 0 {
            self.publish_witness(&f.witness_notes);
        } else if kept {
            // In doubt: no sink is known to hold the batch, so its
            // checkpoint must not reach the witness (a crash now would
            // leave the witness ahead of every sink, and start-up would
            // refuse the log). A later checkpoint is published instead.
            if !f.witness_notes.is_empty() {
                self.checkpoint_due = true;
            }
        } else {
            // A rolled-back checkpoint or rotation must be made again.
            if !f.witness_notes.is_empty() {
                self.checkpoint_due = true;
            }
            if f.rotated {
                self.rotation_pending = true;
            }
            self.seq = Sequencer::resume(f.prev_head);
            self.retention
                .truncate_after(f.prev_head.map_or(0, |h| h.seq));
            // Markers were not stored either; they go into the next batch.
            let mut bodies = f.marker_bodies;
            bodies.append(&mut self.markers);
            self.markers = bodies;
            tracing::warn!(first = f.first, last = f.last, detail = %detail, "batch stored on no sink; rolled back");
        }
        for w in f.waiters {
            if let Some(tx) = w.reply {
                let _ = tx.send(Err(AppendError::NotDurable {
                    seq: w.seq,
                    durability: w.durability,
                    kept,
                    detail: detail.clone(),
                }));
            }
        }
    }

    /// The lowest durable sequence among live sinks: retention can forget
    /// everything up to it.
    fn live_min(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| !s.failed)
            .map(|s| s.durable)
            .min()
            .unwrap_or_else(|| self.head_seq())
    }

    async fn relieve_retention(&mut self) {
        self.retention.trim_through(self.live_min());
        while let Some((path, records)) = self.retention.spill_plan(self.head_seq() + 1) {
            let p = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                let r = retention::write_chunk(&p, &records);
                (r, records)
            })
            .await;
            match written {
                Ok((Ok(()), records)) => self.retention.add_chunk(path, &records),
                Ok((Err(e), records)) => {
                    tracing::warn!(error = %e, "could not spill to the spool; keeping records in memory");
                    self.retention.unspill(records);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool task failed");
                    break;
                }
            }
        }
        while self.retention.overflowing() {
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.failed && s.durable < self.head_seq())
                .min_by_key(|(_, s)| s.durable)
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            let bytes = self.retention.bytes();
            self.fail_slot(i, format!("retention overflow: {bytes} bytes of records it lacks exceed memory and spool limits"));
            self.retention.trim_through(self.live_min());
        }
    }

    fn publish(&mut self) {
        let head = self.head_seq();
        let threshold = self.config.min_durable_sinks;
        let slots = &mut self.slots;
        self.health.send_if_modified(|snap| {
            let mut changed = snap.head_seq != head;
            snap.head_seq = head;
            for (dst, slot) in snap.sinks.iter_mut().zip(slots.iter_mut()) {
                slot.health.durable_seq = slot.durable;
                slot.health.records_behind = head.saturating_sub(slot.durable);
                if dst.durable_seq != slot.health.durable_seq
                    || dst.records_behind != slot.health.records_behind
                    || dst.state != slot.health.state
                    || dst.total_failures != slot.health.total_failures
                    || dst.consecutive_successes != slot.health.consecutive_successes
                    || dst.last_error != slot.health.last_error
                {
                    *dst = slot.health.clone();
                    changed = true;
                }
            }
            snap.recompute_status(threshold);
            changed
        });
    }
}

/// The body of a `sink_gap` record: `sink` was dropped from the log lacking
/// everything from `lacks_from` on.
fn gap_marker(sink: &str, lacks_from: u64, head: u64, reason: &str) -> Option<Vec<u8>> {
    #[derive(Serialize)]
    struct Gap<'a> {
        timestamp: chrono::DateTime<chrono::Utc>,
        sink: &'a str,
        lacks_from: u64,
        head_at_failure: u64,
        reason: &'a str,
    }
    let gap = Gap {
        timestamp: chrono::Utc::now(),
        sink,
        lacks_from,
        head_at_failure: head,
        reason,
    };
    let mut body = Vec::new();
    encode_marker_body("sink_gap", &gap, &mut body).ok()?;
    Some(body)
}

async fn run_job(sink: &dyn Sink, source: JobSource, max: usize) -> (u64, Result<(), SinkError>) {
    let records = match source {
        JobSource::Memory(v) => v,
        JobSource::Spool { path, from, to } => {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || retention::read_chunk(&p, from, to, max))
                .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    return (
                        0,
                        Err(SinkError::Io {
                            sink: sink.name().to_string(),
                            op: "read spool",
                            path,
                            source: e.source,
                        }),
                    )
                }
                Err(e) => {
                    return (
                        0,
                        Err(SinkError::Backend {
                            sink: sink.name().to_string(),
                            detail: format!("spool reader task failed: {e}"),
                        }),
                    )
                }
            }
        }
    };
    let last = records.last().map_or(0, Record::seq);
    let Some(batch) = RecordBatch::new(records) else {
        return (
            0,
            Err(SinkError::Backend {
                sink: sink.name().to_string(),
                detail: "internal: catch-up records are not contiguous".into(),
            }),
        );
    };
    (last, sink.append(&batch).await)
}

fn log_transition(health: &SinkHealth, from: HealthState, to: HealthState, error: Option<&str>) {
    let sink = health.name.as_str();
    let (failures, successes) = (health.consecutive_failures, health.consecutive_successes);
    match to {
        HealthState::Healthy => tracing::info!(sink, ?from, ?to, successes, "audit sink recovered"),
        HealthState::Degraded => {
            tracing::warn!(sink, ?from, ?to, failures, error, "audit sink degraded")
        }
        HealthState::Failed => tracing::error!(sink, ?from, ?to, error, "audit sink failed"),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
