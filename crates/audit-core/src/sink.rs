//! The backend traits: what every sink and every reader must do.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::record::{ChainHead, PrevHash, Record};

/// What a backend can do, declared by the backend. Shared tests and the
/// writer choose behaviour from these flags, never from a backend's name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkCapabilities {
    /// Objects or files are created only if absent (a conditional create).
    pub conditional_create: bool,
    /// The backend rotates its storage into segments.
    pub rotation: bool,
    /// The backend answers indexed queries on entry fields.
    pub indexed_query: bool,
    /// Stored records survive the process (false for the memory backend).
    pub persistent: bool,
    /// The backend can cut its stored tail after a record
    /// ([`Sink::cut_after`]), as a file sink does with a torn write.
    pub cut_tail: bool,
}

impl SinkCapabilities {
    /// Capabilities with only `persistent` set as given.
    pub fn persistent(persistent: bool) -> Self {
        Self {
            persistent,
            ..Self::default()
        }
    }
}

/// Where a stored record sits, for findings and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A line in a file.
    Line {
        /// The file (shared: a reader hands out one per record).
        path: std::sync::Arc<std::path::Path>,
        /// 1-based line number, or 0 where the reader did not count lines
        /// (a sink reading only its last record, from the end of the file).
        line: u64,
        /// Byte offset of the line's first byte.
        offset: u64,
    },
    /// A row of a database table.
    Row {
        /// The database file.
        path: PathBuf,
        /// The row's sequence key.
        rowid: i64,
    },
    /// A line inside an object.
    Object {
        /// The object key.
        key: String,
        /// 1-based line number within the object, or 0 for the object as a
        /// whole or its last line found from the end.
        line: u64,
    },
    /// A position in an in-memory log.
    Memory {
        /// 0-based index.
        index: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line {
                path,
                line: 0,
                offset,
            } => write!(f, "{} (byte {offset})", path.display()),
            Location::Line { path, line, offset } => {
                write!(f, "{}:{line} (byte {offset})", path.display())
            }
            Location::Row { path, rowid } => write!(f, "{} row {rowid}", path.display()),
            Location::Object { key, line: 0 } => f.write_str(key),
            Location::Object { key, line } => write!(f, "{key}:{line}"),
            Location::Memory { index } => write!(f, "memory[{index}]"),
        }
    }
}

/// One stored item as a reader found it: the bytes, unparsed, and where.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Where it was read.
    pub location: Location,
    /// The record text without its newline, usually a zero-copy slice of
    /// the reader's buffer. For a line longer than the reader's limit this is
    /// empty and `oversized` holds its length.
    pub text: bytes::Bytes,
    /// Set when the stored item exceeded the reader's size limit and was skipped.
    pub oversized: Option<u64>,
    /// Set with `oversized` when the skipped item ran through a hole of a
    /// sparse file (zeros that no record holds), whatever its length.
    pub sparse: bool,
    /// The item is the log's last and ended without its terminator: a torn
    /// write. Readers leave it unset for an unterminated line anywhere else,
    /// which is then checked as a record like any other.
    pub incomplete: bool,
    /// Backend-specific facts that must agree with the text, e.g. SQLite's
    /// indexed columns. `None` where the backend stores nothing besides the text.
    pub columns: Option<Vec<(String, Option<String>)>>,
}

impl StoredRecord {
    /// A stored record holding `text` at `location`.
    pub fn new(location: Location, text: impl Into<bytes::Bytes>) -> Self {
        Self {
            location,
            text: text.into(),
            oversized: None,
            sparse: false,
            incomplete: false,
            columns: None,
        }
    }
}

/// The failure of a backend operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// An I/O call failed.
    #[error("sink {sink}: {op} {}: {source}", path.display())]
    Io {
        /// The sink.
        sink: String,
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The batch does not continue the sink's chain.
    #[error("sink {sink}: batch starting at {got_seq} (prev {got_prev}) does not continue head {head:?}")]
    NotContiguous {
        /// The sink.
        sink: String,
        /// The sink's durable head.
        head: Option<ChainHead>,
        /// The batch's first sequence.
        got_seq: u64,
        /// The batch's first prev hash.
        got_prev: PrevHash,
    },
    /// Stored data is not a valid chain where the backend needs it to be.
    #[error("sink {sink}: corrupt data at {location}: {detail}")]
    Corrupt {
        /// The sink.
        sink: String,
        /// Where.
        location: Location,
        /// What is wrong.
        detail: String,
    },
    /// A write failed and the sink could not prove the failed batch left no
    /// trace; it refuses further writes until reopened.
    #[error("sink {sink} is poisoned: {detail}")]
    Poisoned {
        /// The sink.
        sink: String,
        /// What happened.
        detail: String,
    },
    /// The backend's own library failed (SQLite, object store…).
    #[error("sink {sink}: {detail}")]
    Backend {
        /// The sink.
        sink: String,
        /// The library's message with context.
        detail: String,
    },
    /// The sink was configured or opened wrongly.
    #[error("sink {sink}: {detail}")]
    Config {
        /// The sink.
        sink: String,
        /// What is wrong.
        detail: String,
    },
    /// Another writer holds the log (see [`crate::lock_file`]).
    #[error(
        "sink {sink}: the log is in use by another writer{}: {} is locked",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        path.display()
    )]
    InUse {
        /// The sink.
        sink: String,
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, when it recorded one.
        holder: Option<u32>,
    },
    /// The backend does not support this operation.
    #[error("sink {sink}: {op} is not supported by this backend")]
    Unsupported {
        /// The sink.
        sink: String,
        /// The operation.
        op: &'static str,
    },
    /// A failure injected by a test.
    #[error("sink {sink}: injected fault: {detail}")]
    Injected {
        /// The sink.
        sink: String,
        /// The fault.
        detail: String,
    },
}

impl SinkError {
    /// True when the failed append is known to have left nothing behind, so the
    /// writer may reuse the sequence numbers. `Poisoned` is the one exception.
    pub fn is_clean(&self) -> bool {
        !matches!(self, SinkError::Poisoned { .. })
    }
}

/// A contiguous run of records: the unit of I/O. A backend writes it with one
/// fsync, one transaction or one object.
#[derive(Debug, Clone, Default)]
pub struct RecordBatch {
    records: Vec<Record>,
}

impl RecordBatch {
    /// A batch of `records`, which must be contiguous (each links to the one
    /// before it). Returns `None` for an empty or broken run.
    pub fn new(records: Vec<Record>) -> Option<Self> {
        let first = records.first()?;
        let mut last = first.head();
        for r in &records[1..] {
            if r.seq() != last.seq + 1 || r.prev() != PrevHash::Hash(last.hash) {
                return None;
            }
            last = r.head();
        }
        Some(Self { records })
    }

    /// The records, in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The first record.
    pub fn first(&self) -> &Record {
        &self.records[0]
    }

    /// The last record.
    pub fn last(&self) -> &Record {
        &self.records[self.records.len() - 1]
    }

    /// Total stored bytes, newlines included.
    pub fn byte_len(&self) -> usize {
        self.records.iter().map(|r| r.line().len()).sum()
    }

    /// Checks that this batch continues `head`, for a sink named `sink`.
    pub fn check_continues(&self, sink: &str, head: Option<ChainHead>) -> Result<(), SinkError> {
        let first = self.first();
        let ok = match head {
            None => first.seq() == 1 && first.prev() == PrevHash::Genesis,
            Some(h) => first.seq() == h.seq + 1 && first.prev() == PrevHash::Hash(h.hash),
        };
        if ok {
            Ok(())
        } else {
            Err(SinkError::NotContiguous {
                sink: sink.to_string(),
                head,
                got_seq: first.seq(),
                got_prev: first.prev(),
            })
        }
    }
}

/// Pulls stored records in order, a batch at a time, with bounded memory.
#[async_trait]
pub trait RecordCursor: Send {
    /// The next at most `max` stored items, or `None` at the end.
    ///
    /// # Behavior
    /// Items come in stored order. Malformed items are returned as they are,
    /// not skipped: judging them is the caller's job.
    async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<StoredRecord>>, SinkError>;
}

/// Read access to a stored chain.
#[async_trait]
pub trait RecordReader: Send + Sync {
    /// A cursor over stored items whose sequence is at least `from_seq`
    /// (`1` for every record, malformed items included). `0` reads
    /// everything stored, also what a backend keys below 1 (a SQLite row
    /// keyed 0 or below), which cannot be a record but which a verifier must
    /// see to report.
    ///
    /// # Behavior
    /// Seeking skips items whose sequence is below `from_seq`; it may use the
    /// fixed chain-member layout rather than a full parse.
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError>;
}

/// A backend that stores the chain durably.
///
/// # Behavior
/// - `append` writes a whole batch durably before it returns `Ok`: one fsync,
///   one transaction or one object. It refuses a batch that does not continue
///   its head ([`RecordBatch::check_continues`]), so a sink never holds a hole.
/// - A failed `append` leaves no part of the batch behind unless it returns
///   [`SinkError::Poisoned`]; afterwards the sink refuses writes until reopened.
/// - `head` reports the last durable record, `None` for an empty sink.
/// - Every backend stores a record's [`Record::text`] byte for byte.
#[async_trait]
pub trait Sink: RecordReader {
    /// The sink's name in config, health and errors.
    fn name(&self) -> &str;

    /// What the backend can do.
    fn capabilities(&self) -> SinkCapabilities;

    /// The last durable record.
    async fn head(&self) -> Result<Option<ChainHead>, SinkError>;

    /// Writes `batch` durably.
    async fn append(&self, batch: &RecordBatch) -> Result<(), SinkError>;

    /// Removes every stored record after record `seq`, keeping what it
    /// removes aside for inspection, so the head becomes record `seq`.
    ///
    /// # Behavior
    /// - Start-up calls it, before anything is written, for a tail that no
    ///   seal of this log's key covers: records that were never acknowledged
    ///   (a crash between a non-atomic write and its seal) or were planted.
    /// - Only a backend whose batch write is not atomic can hold such a tail
    ///   after a crash; one that cannot cut returns
    ///   [`SinkError::Unsupported`] (the default) and start-up refuses instead.
    /// - Fails, removing nothing, if record `seq` is not stored.
    async fn cut_after(&self, seq: u64) -> Result<(), SinkError> {
        let _ = seq;
        Err(SinkError::Unsupported {
            sink: self.name().to_string(),
            op: "cutting the stored tail",
        })
    }
}

pub use crate::index_columns::{index_values, IndexValues};

/// The entry fields backends may index for queries, by column name.
pub const INDEX_COLUMNS: &[&str] = &[
    "ts_ns",
    "agent_id",
    "tool_called",
    "authorization_decision",
    "request_id",
    "task_session_id",
];

/// The `ts_ns` column of a record whose `timestamp` member is `ts`: an RFC
/// 3339 time as nanoseconds since the Unix epoch, or `None` if `ts` is not one
/// or lies outside the years 1677–2262 that an `i64` of nanoseconds spans.
pub fn timestamp_ns(ts: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()?
        .timestamp_nanos_opt()
}

/// The value an index column must hold for a record, derived from the
/// record's JSON: strings as themselves, `ts_ns` as the timestamp in
/// nanoseconds since the Unix epoch, and `None` where the member is absent
/// (non-entry records). This states the rule over a parsed record;
/// [`index_values`] computes the same values from the text, and is what
/// backends store and the verifier compares against.
pub fn column_value(record: &serde_json::Value, column: &str) -> Option<String> {
    if column == "ts_ns" {
        let ts = record.get("timestamp")?.as_str()?;
        return timestamp_ns(ts).map(|n| n.to_string());
    }
    match record.get(column)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}
