//! Object-storage backend for auditlog, on Apache OpenDAL.
//!
//! Records are stored in immutable segment objects named by their first
//! sequence, `<prefix>/<log id>/segments/<first>.jsonl` (20-digit,
//! zero-padded, so a name sort is chain order; logs written before
//! 2026-11-27 named them `<first>-<last>.jsonl`, and are still read and
//! appended to). Each `append` writes one object; an object is never
//! rewritten. A small `HEAD` object points at a
//! recent segment (it is rewritten at most once a second), so start-up lists
//! only what came after it.
//!
//! One writer per log: on the `fs` service an open sink locks
//! [`LOCK_FILE_NAME`] in the log's directory, so a second writer on the same
//! machine is refused with [`audit_core::SinkError::InUse`]. Remote stores
//! have no lock. There, the segment after a given record has one key however
//! long it is, so two writers continuing the same head write the same key:
//! each append checks that the key is free and creates it with
//! `If-None-Match`, and the second writer is refused. (A key holding the very
//! records being written is the writer's own earlier write, which landed
//! although it saw it fail: it is taken as written.) At start-up the sink
//! probes whether the store really refuses a second create (Garage does
//! not); where it does not, the sink writes only while it holds the log's
//! lease (`<prefix>/<log id>/lease/<writer id>`), so a second writer is
//! refused at start-up instead of overwriting acknowledged segments
//! (docs/OBJECT_STORAGE.md).
//!
//! Services are Cargo features: `services-fs`, `services-s3` (S3 and
//! S3-compatible stores such as Garage), `services-gcs`, `services-azblob`;
//! the in-memory service is always there. Retries with backoff and timeouts
//! come from OpenDAL's layers.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use audit_core::{AuditEntry, AuditLog, SinkSpec, WriterConfig};
//! use sink_object::{ObjectSink, ObjectSinkConfig, Service};
//!
//! let sink = ObjectSink::open(ObjectSinkConfig::new("mem", Service::Memory, "audit", "log-1")).await?;
//! let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(Arc::new(sink))]).await?;
//! log.append(&AuditEntry::new(uuid::Uuid::new_v4())).await?;
//! log.close().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]

mod backend;
mod config;
#[cfg(feature = "testing")]
pub mod garage;
mod lease;
mod reader;

pub use backend::{ObjectSink, LOCK_FILE_NAME};
pub use config::{ObjectSinkConfig, S3Options, Service};
pub use reader::{ObjectLog, SegmentKey};
