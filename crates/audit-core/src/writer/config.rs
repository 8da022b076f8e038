//! The writer's configuration: sinks and their roles, batching, durability
//! policies, retention, retries, and checkpoints.
//!
//! Plain data with safe defaults; the driver reads it and nothing changes it
//! after [`super::AuditLog::open`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SpoolConfig;
use crate::checkpoint::KeyPair;
use crate::entry::AuditEntry;
use crate::sink::Sink;

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
    /// The first retry delay after a sink fails; it doubles up to `retry_max`,
    /// each delay with random jitter of up to as much again (capped at
    /// `retry_max`).
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
