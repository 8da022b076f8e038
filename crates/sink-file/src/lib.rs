//! Append-only JSON Lines segment files for auditlog.
//!
//! A [`FileSink`] keeps a directory of segments named
//! `audit-<first sequence>.jsonl`. Every batch is one `write` and one
//! `fdatasync` on a handle that stays open, and new segments are created with
//! mode 0600 and made durable with a directory fsync.
//!
//! - **Preallocation**: zeros are written ahead of the records (8 MiB at a
//!   time by default), so a batch overwrites space the file already has and
//!   its fdatasync flushes data without a new file size: about half the
//!   latency of a plain append on ext4. The zeros are cut off at rotation and
//!   at close; after a crash, readers stop at them (docs/FORMAT.md, section 8).
//!
//! - **Reopen** reads backwards from the end of the last segment, so opening a
//!   large log costs a few reads, not a scan.
//! - **Crash recovery**: a partial last line (a crash or a full disk
//!   mid-write) is moved to `<segment>.torn-<time>` beside the log and the
//!   segment is truncated to its last complete record. A failed write or
//!   fdatasync is undone the same way before the error is returned.
//! - **One writer**: an open sink holds an exclusive lock on
//!   [`LOCK_FILE_NAME`] in its directory, so a second writer, in this process
//!   or another, is refused with [`audit_core::SinkError::InUse`] instead of
//!   overwriting records the first has acknowledged. The kernel drops the lock
//!   when the process ends, however it ends. Readers take no lock.
//! - **Rotation** by size and age; the chain continues across segments.
//! - **The file changing underneath**: before each batch the active segment's
//!   device and inode are compared with the path's. A deleted, renamed or
//!   replaced segment fails that batch (the sink turns degraded) and the next
//!   batch starts a fresh segment linked to the last durable record. Nothing
//!   is ever written into an unlinked inode.
//!
//! [`FileLog`] reads a segment directory or a single seed-format file.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use audit_core::{AuditEntry, AuditLog, SinkSpec, WriterConfig};
//! use sink_file::{FileSink, FileSinkConfig};
//!
//! let dir = std::env::temp_dir().join(format!("sink-file-doc-{}", std::process::id()));
//! let sink = FileSink::open(FileSinkConfig::new("file", &dir)).await?;
//! let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(Arc::new(sink))]).await?;
//! let receipt = log.append(&AuditEntry::new(uuid::Uuid::new_v4())).await?;
//! log.close().await;
//! # std::fs::remove_dir_all(&dir)?;
//! # let _ = receipt;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]

mod backend;
mod config;
#[doc(hidden)]
pub mod fault;
mod reader;
pub mod segments;
mod writer;

pub use backend::FileSink;
pub use config::FileSinkConfig;
pub use reader::FileLog;
pub use writer::LOCK_FILE_NAME;
