//! The object sink: one immutable segment object per append, and a head pointer.

use std::time::Instant;

use async_trait::async_trait;
use audit_core::{
    ChainHead, Location, Record, RecordBatch, RecordCursor, RecordReader, Sink, SinkCapabilities,
    SinkError,
};
use opendal::ErrorKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::config::ObjectSinkConfig;
use crate::reader::{segment_key, ObjectLog};

/// The `HEAD` pointer object: a hint that saves a full listing at start-up.
/// It is the only object that is rewritten; the segments are the truth.
#[derive(Debug, Serialize, Deserialize)]
struct HeadPointer {
    key: String,
    seq: u64,
    hash: audit_core::Hash32,
}

struct State {
    head: Option<ChainHead>,
    last_write: Option<Instant>,
    last_pointer: Option<Instant>,
}

/// The `HEAD` pointer is rewritten at most this often: it is only a hint (the
/// listing from it finds newer segments), and every rewrite is one more PUT.
const POINTER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// An audit log in object storage. See the crate docs.
pub struct ObjectSink {
    config: ObjectSinkConfig,
    log: ObjectLog,
    conditional: bool,
    state: Mutex<State>,
    /// On a local filesystem, this writer's claim on the log's directory.
    _lock: Option<audit_core::lock_file::LockFile>,
}

/// The lock file in a log's directory on the `fs` service.
pub const LOCK_FILE_NAME: &str = "audit.lock";

impl std::fmt::Debug for ObjectSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSink")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl ObjectSink {
    /// Connects, checks that the store answers (a missing bucket or wrong
    /// credentials fail here, naming the service and key), and finds the head
    /// from the `HEAD` pointer plus a listing of what came after it.
    ///
    /// On the `fs` service the sink also locks `audit.lock` in the log's
    /// directory, before reading the head: a second writer of the same log on
    /// this machine is refused with [`SinkError::InUse`].
    pub async fn open(config: ObjectSinkConfig) -> Result<Self, SinkError> {
        let log = ObjectLog::open(&config)?;
        let lock = lock_local_log(&config).await?;
        let conditional = log.op.info().capability().write_with_if_not_exists;
        let head = find_head(&log).await?;
        Ok(Self {
            config,
            log,
            conditional,
            state: Mutex::new(State {
                head,
                last_write: None,
                last_pointer: None,
            }),
            _lock: lock,
        })
    }

    /// The reader over the same objects.
    pub fn log(&self) -> &ObjectLog {
        &self.log
    }

    fn head_key(&self) -> String {
        format!("{}HEAD", self.log.dir)
    }

    /// Creates the object `key` unless it exists: `false` when it does. Some
    /// stores (Garage among them) accept If-None-Match but overwrite anyway,
    /// so the key is checked first as well.
    async fn create(&self, key: &str, body: Vec<u8>) -> Result<bool, SinkError> {
        match self.log.op.stat(key).await {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(self.log.error("stat", key, e)),
        }
        let write = self
            .log
            .op
            .write_with(key, body)
            .if_not_exists(self.conditional);
        match write.await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(self.log.error("write", key, e)),
        }
    }

    /// Whether the existing object `key` holds, from its start, records of
    /// `rest` (whose lines are `body`): how many, and the head it leaves,
    /// which is the object's own last record if it holds more than `rest`.
    /// `None` when its bytes are not ours.
    async fn ours_already(
        &self,
        key: &str,
        rest: &[Record],
        body: &[u8],
    ) -> Result<Option<(usize, ChainHead)>, SinkError> {
        let size = self
            .log
            .op
            .stat(key)
            .await
            .map_err(|e| self.log.error("stat", key, e))?
            .content_length();
        if size == 0 {
            return Ok(None);
        }
        let want = size.min(body.len() as u64);
        let held = self
            .log
            .op
            .read_with(key)
            .range(0..want)
            .await
            .map_err(|e| self.log.error("read", key, e))?
            .to_bytes();
        if held.len() as u64 != want || !body.starts_with(&held) {
            return Ok(None);
        }
        if size > body.len() as u64 {
            // All of `rest` is there, and more: the head is the object's last
            // record, which must be a record.
            let line = self.log.last_line(key).await?;
            let last = line.and_then(|l| Record::from_text(&l).ok());
            return Ok(last.map(|r| (rest.len(), r.head())));
        }
        // The object must end where one of our lines ends.
        let mut end = 0;
        for (i, r) in rest.iter().enumerate() {
            end += r.line().len();
            if end as u64 == size {
                return Ok(Some((i + 1, r.head())));
            }
        }
        Ok(None)
    }
}

/// Locks the log's directory when the store is a local filesystem. Remote
/// stores have no such lock; see docs/FORMAT.md on concurrent writers.
#[cfg_attr(not(feature = "services-fs"), allow(unused_variables))]
async fn lock_local_log(
    config: &ObjectSinkConfig,
) -> Result<Option<audit_core::lock_file::LockFile>, SinkError> {
    #[cfg(feature = "services-fs")]
    if let crate::Service::Fs { root } = &config.service {
        let dir = root.join(config.log_dir());
        let name = config.name.clone();
        let locked = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| SinkError::Io {
                    sink: name.clone(),
                    op: "create directory",
                    path: dir.clone(),
                    source,
                })?;
            audit_core::lock_file::LockFile::acquire(&name, &dir.join(LOCK_FILE_NAME))
        })
        .await
        .map_err(|e| SinkError::Backend {
            sink: config.name.clone(),
            detail: format!("the lock task failed: {e}"),
        })??;
        return Ok(Some(locked));
    }
    Ok(None)
}

async fn find_head(log: &ObjectLog) -> Result<Option<ChainHead>, SinkError> {
    let head_key = format!("{}HEAD", log.dir);
    // The pointer is a hint of a few dozen bytes: a larger object is not read,
    // and one that does not parse is ignored, as is an absent one. (A ranged
    // read past the end is an error on S3, so the size comes first.)
    let pointer: Option<HeadPointer> = match log.op.stat(&head_key).await {
        Ok(meta) if meta.content_length() <= 64 * 1024 => match log.op.read(&head_key).await {
            Ok(b) => serde_json::from_slice(&b.to_bytes()).ok(),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(log.error("read", &head_key, e)),
        },
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(log.error("stat", &head_key, e)),
    };
    // Segments written after the pointer was last updated (a crash between
    // the segment write and the pointer write) are found by listing from it.
    let newer = log
        .segments(pointer.as_ref().map(|p| p.key.as_str()))
        .await?;
    let last_key = match (newer.last(), &pointer) {
        (Some(s), _) => s.key.clone(),
        (None, Some(p)) => p.key.clone(),
        (None, None) => return Ok(None),
    };
    let Some(last_line) = log.last_line(&last_key).await? else {
        return Err(SinkError::Corrupt {
            sink: log.name.clone(),
            location: Location::Object {
                key: last_key.clone(),
                line: 0,
            },
            detail: format!(
                "the last line is longer than {} bytes; refusing to append after it",
                crate::reader::MAX_LINE
            ),
        });
    };
    let rec = Record::from_text(&last_line).map_err(|e| SinkError::Corrupt {
        sink: log.name.clone(),
        location: Location::Object {
            key: last_key.clone(),
            line: 0,
        },
        detail: format!("the last record does not verify, refusing to append after it: {e}"),
    })?;
    Ok(Some(rec.head()))
}

#[async_trait]
impl RecordReader for ObjectSink {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        self.log.read_from(from_seq).await
    }
}

#[async_trait]
impl Sink for ObjectSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        let mut c =
            SinkCapabilities::persistent(!matches!(self.config.service, crate::Service::Memory));
        c.conditional_create = self.conditional;
        c.rotation = true;
        c
    }

    async fn head(&self) -> Result<Option<ChainHead>, SinkError> {
        Ok(self.state.lock().await.head)
    }

    async fn append(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        let mut state = self.state.lock().await;
        batch.check_continues(&self.config.name, state.head)?;
        if let Some(t) = state.last_write {
            let due = t + self.config.min_segment_interval;
            tokio::time::sleep_until(due.into()).await;
        }
        let records = batch.records();
        let mut done = 0;
        let mut key = String::new();
        let mut last = batch.last().head();
        while done < records.len() {
            let rest = &records[done..];
            key = segment_key(&self.log.dir, rest[0].seq());
            let mut body = Vec::with_capacity(rest.iter().map(|r| r.line().len()).sum());
            for r in rest {
                body.extend_from_slice(r.line());
            }
            if self.create(&key, body.clone()).await? {
                break;
            }
            // The key is taken. A write of ours that landed although it
            // reported failure (a timeout, a retry answered 412) left these
            // same bytes there: take them as written. Anything else is
            // another writer's segment, which is never overwritten.
            match self.ours_already(&key, rest, &body).await? {
                Some((held, head)) => {
                    tracing::info!(sink = %self.config.name, %key, records = held, "segment already holds these records; an earlier write of them landed");
                    done += held;
                    if done == records.len() {
                        last = head;
                    }
                }
                None => {
                    return Err(SinkError::Corrupt {
                        sink: self.config.name.clone(),
                        location: Location::Object { key, line: 0 },
                        detail: "another writer created the segment after this sink's head, with other records; refusing to overwrite it".into(),
                    })
                }
            }
        }
        state.last_write = Some(Instant::now());
        state.head = Some(last);
        let pointer = HeadPointer {
            key,
            seq: last.seq,
            hash: last.hash,
        };
        let pointer_due = state
            .last_pointer
            .is_none_or(|t| t.elapsed() >= POINTER_INTERVAL);
        if !pointer_due {
            return Ok(());
        }
        state.last_pointer = Some(Instant::now());
        if let Ok(bytes) = serde_json::to_vec(&pointer) {
            let head_key = self.head_key();
            if let Err(e) = self.log.op.write(&head_key, bytes).await {
                // The segment is durable; a stale pointer only costs a longer listing.
                tracing::warn!(sink = %self.config.name, key = %head_key, error = %e, "could not update the head pointer");
            }
        }
        Ok(())
    }
}
