//! Why an append or the log's start failed.

use super::Durability;
use crate::record::Hash32;
use crate::sink::SinkError;

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
