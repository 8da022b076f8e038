//! SQLite backend for auditlog, through rusqlite with bundled SQLite.
//!
//! - WAL mode with `synchronous=FULL` and one transaction per batch; all
//!   SQLite work runs on a dedicated thread, never on the async workers.
//! - WAL checkpoints run on a second thread and connection, after about every
//!   MiB of records, so commits never wait for one; SQLite's own automatic
//!   checkpoint stays on, at 16,000 pages, as a backstop.
//! - A versioned schema (`PRAGMA application_id` marks auditlog databases,
//!   `PRAGMA user_version` the schema version; see [`schema`]).
//! - Table `records`: the sequence as primary key, the verbatim record text
//!   (byte-identical to the file sink's line), indexed columns for queries,
//!   and a view that reads the record and prev hashes from the text.
//!   Triggers abort any UPDATE or DELETE; the verifier still checks every
//!   row's columns against its record, for anyone who drops the triggers.
//! - One writer: an open sink holds an exclusive lock on `<database>.lock`
//!   ([`lock_path`]), so a second writer, in this process or another, is
//!   refused with [`audit_core::SinkError::InUse`] before it reads or changes
//!   the database. Readers (queries, the verifier) take no lock.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use audit_core::{AuditEntry, AuditLog, SinkSpec, WriterConfig};
//! use sink_sqlite::{Query, SqliteSink, SqliteSinkConfig};
//!
//! let path = std::env::temp_dir().join(format!("sink-sqlite-doc-{}.db", std::process::id()));
//! let sink = Arc::new(SqliteSink::open(SqliteSinkConfig::new("db", &path)).await?);
//! let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(sink.clone())]).await?;
//! let mut entry = AuditEntry::new(uuid::Uuid::new_v4());
//! entry.agent_id = "agent-7".into();
//! log.append(&entry).await?;
//! log.close().await;
//! let rows = sink.log().query(&Query { agent: Some("agent-7".into()), ..Query::default() }).await?;
//! assert_eq!(rows[0].seq, 1);
//! # for ext in ["", "-wal", "-shm", ".lock"] { let _ = std::fs::remove_file(format!("{}{ext}", path.display())); }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]

mod backend;
mod error;
mod reader;
pub mod schema;

pub use backend::{lock_path, SqliteSink, SqliteSinkConfig};
pub use reader::{Query, QueryRow, SqliteLog};
