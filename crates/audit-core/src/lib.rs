//! The core of auditlog: the audit entry, the record format and its BLAKE3
//! hash chain, the [`Sink`] and [`RecordReader`] traits every backend
//! implements, and [`AuditLog`], the group-committing writer that fans each
//! batch out to several sinks.
//!
//! ```
//! use std::sync::Arc;
//! use audit_core::{Arguments, AuditEntry, AuditLog, MemorySink, SinkSpec, WriterConfig};
//!
//! # tokio_test_block_on(async {
//! let sink = Arc::new(MemorySink::new("mem"));
//! let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(sink.clone())])
//!     .await
//!     .expect("open");
//! let mut entry = AuditEntry::new(uuid::Uuid::new_v4());
//! entry.tool_called = "read_file".into();
//! // Bytes the service already has are stored as written (member order,
//! // number spelling), less whitespace.
//! entry.arguments = Arguments::from_json(r#"{"path": "/srv/a.csv", "limit": 1E3}"#).expect("JSON");
//! let receipt = log.append(&entry).await.expect("append");
//! assert_eq!(receipt.seq, 1);
//! log.close().await;
//! let stored = sink.records();
//! assert!(std::str::from_utf8(stored[0].text())
//!     .expect("UTF-8")
//!     .contains(r#""arguments":{"path":"/srv/a.csv","limit":1E3}"#));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```
#![deny(missing_docs)]

pub mod arguments;
pub mod chain;
pub mod checkpoint;
pub mod entry;
mod entry_json;
mod index_columns;
pub mod lock_file;
pub mod marker;
pub mod memory;
pub mod record;
pub mod seal_mac;
pub mod sink;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;
pub mod writer;

pub use arguments::{Arguments, ArgumentsError};
pub use chain::{
    encode_entry_body, encode_marker_body, ChainChecker, Link, PreparedBody, Sequencer,
    MAX_HEAD_SEQUENCE,
};
pub use entry::AuditEntry;
pub use memory::MemorySink;
pub use record::{
    parse_record, record_hash, ChainHead, Hash32, PrevHash, Record, RecordError, RecordFault,
    MAX_NESTING,
};
pub use sink::{
    Location, RecordBatch, RecordCursor, RecordReader, Sink, SinkCapabilities, SinkError,
    StoredRecord,
};
pub use writer::{
    AppendError, AuditLog, CheckpointConfig, Durability, HealthSnapshot, HealthState, OpenError,
    PendingReceipt, Receipt, Role, SinkHealth, SinkSpec, SpoolConfig, WhenFull, WriterConfig,
};
