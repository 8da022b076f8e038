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
    /// On a store that ignores `If-None-Match`: this writer's lease, without
    /// which it writes nothing.
    lease: Option<crate::lease::Lease>,
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
    /// Whether the service takes `If-None-Match` at all.
    conditional: bool,
    /// Whether the store was seen to refuse a second create of one key.
    enforced: bool,
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
    ///
    /// It then probes whether the store refuses a second create of one key
    /// (`If-None-Match`); where it does not (Garage), it takes the log's
    /// lease before reading the head, and a live lease of another writer is
    /// [`SinkError::InUse`] (docs/OBJECT_STORAGE.md).
    pub async fn open(config: ObjectSinkConfig) -> Result<Self, SinkError> {
        let log = ObjectLog::open(&config)?;
        let lock = lock_local_log(&config).await?;
        let conditional = log.op.info().capability().write_with_if_not_exists;
        // Where a second create of a key is not refused, two writers can both
        // "create" the next segment and the later PUT replaces the earlier,
        // acknowledged one: such a store is written only under a lease,
        // taken before the head is read so that the head includes every
        // write of the lease's previous holder.
        let enforced = crate::lease::conditional_writes_enforced(&log).await?;
        let mut lease = None;
        if !enforced {
            let mut l = crate::lease::Lease::new(&log, config.lease_ttl, config.write_budget());
            // Two writers starting at once may each see the other's lease
            // and both refuse (each then gives its own up): try again twice
            // after a random pause, so that one of them usually wins. A live
            // holder is still there each time, and refuses the newcomer.
            let mut attempt = 0;
            loop {
                match l.acquire(&log).await {
                    Err(SinkError::InUse { .. }) if attempt < 2 => {
                        attempt += 1;
                        let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
                        tokio::time::sleep(std::time::Duration::from_millis(50 + jitter * 2)).await;
                    }
                    other => break other?,
                }
            }
            lease = Some(l);
        }
        let head = match find_head(&log).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(l) = lease.as_mut() {
                    l.release(&log).await;
                }
                return Err(e);
            }
        };
        Ok(Self {
            config,
            log,
            conditional,
            enforced,
            state: Mutex::new(State {
                lease,
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

impl Drop for ObjectSink {
    /// Releases the lease, if this writer holds one, so that the next writer
    /// need not wait for it to expire. Best effort: it needs a Tokio runtime
    /// (on a current-thread one the release is only spawned, and may not run
    /// before the process exits); a lease left behind expires after its TTL.
    fn drop(&mut self) {
        let Some(mut lease) = self.state.get_mut().lease.take() else {
            return;
        };
        let log = self.log.clone();
        let release = async move {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), lease.release(&log)).await;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => drop(handle.spawn(release)),
            _ => tokio::task::block_in_place(|| handle.block_on(release)),
        }
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

/// The head of the log: the last record of its last segment by listing.
///
/// `HEAD` only saves the full listing. It is trusted only as far as the
/// listing bears it out: it must name a segment of this log, and then either
/// the listing after it shows newer segments (the newest of which is the
/// last segment) or, when nothing is newer, its segment's last record must be
/// the very record it names. Anything else (a key outside the log, a made-up
/// name such as `segments/zzz.jsonl` that sorts after every real segment, a
/// stale or forged seq/hash) is ignored and the log is listed whole: a
/// writer resuming from a record that is not the log's last would hand out
/// its sequences a second time.
async fn find_head(log: &ObjectLog) -> Result<Option<ChainHead>, SinkError> {
    if let Some(hint) = read_pointer(log).await? {
        if let Some(seg) = log.segment_of_this_log(&hint.key) {
            let newer = log.segments(Some(&seg.key)).await?;
            if let Some(last) = newer.last() {
                return head_of(log, last).await.map(Some);
            }
            // Nothing after HEAD's key: its segment is the last one only if
            // it exists and ends with the record HEAD names.
            match log.op.stat(&seg.key).await {
                Ok(_) => {
                    let head = head_of(log, &seg).await?;
                    if head.seq == hint.seq && head.hash == hint.hash {
                        return Ok(Some(head));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(log.error("stat", &seg.key, e)),
            }
        }
        tracing::warn!(sink = %log.name, key = %hint.key, "HEAD does not name this log's last segment; ignoring it and listing the log");
    }
    match log.segments(None).await?.last() {
        Some(last) => head_of(log, last).await.map(Some),
        None => Ok(None),
    }
}

/// Reads the `HEAD` hint. A hint of a few dozen bytes: a larger object is
/// not read, and one that does not parse is ignored, as is an absent one. (A
/// ranged read past the end is an error on S3, so the size comes first.)
async fn read_pointer(log: &ObjectLog) -> Result<Option<HeadPointer>, SinkError> {
    let head_key = format!("{}HEAD", log.dir);
    Ok(match log.op.stat(&head_key).await {
        Ok(meta) if meta.content_length() <= 64 * 1024 => match log.op.read(&head_key).await {
            Ok(b) => serde_json::from_slice(&b.to_bytes()).ok(),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(log.error("read", &head_key, e)),
        },
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(log.error("stat", &head_key, e)),
    })
}

/// The last record of segment `seg`, which must be a record its name allows
/// (at or after the first sequence it promises; the very last one for the
/// old `<first>-<last>` form): a segment that ends before its name starts is
/// a planted or renamed object, and appending after its record would reuse
/// sequences the log already holds.
async fn head_of(log: &ObjectLog, seg: &crate::reader::SegmentKey) -> Result<ChainHead, SinkError> {
    let corrupt = |detail: String| SinkError::Corrupt {
        sink: log.name.clone(),
        location: Location::Object {
            key: seg.key.clone(),
            line: 0,
        },
        detail,
    };
    let Some(last_line) = log.last_line(&seg.key).await? else {
        return Err(corrupt(format!(
            "the last line is longer than {} bytes; refusing to append after it",
            crate::reader::MAX_LINE
        )));
    };
    let rec = Record::from_text(&last_line).map_err(|e| {
        corrupt(format!(
            "the last record does not verify, refusing to append after it: {e}"
        ))
    })?;
    let fits = match seg.last {
        Some(last) => rec.seq() == last,
        None => rec.seq() >= seg.first,
    };
    if !fits {
        return Err(corrupt(format!(
            "the segment is named for sequence {} but ends with record {}; refusing to append after it",
            seg.first,
            rec.seq()
        )));
    }
    Ok(rec.head())
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
        c.conditional_create = self.enforced;
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
            // Only a write that ends before the lease can lapse is started,
            // so that none of this writer's PUTs lands after another writer
            // may have taken the log over.
            if let Some(lease) = state.lease.as_mut() {
                lease.ensure(&self.log).await?;
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
        if let Some(lease) = &state.lease {
            if !lease.covers(Instant::now()) {
                // The write may have landed, but after another writer could
                // have taken the log: no receipt may rest on it. A retry of
                // the same records finds them (ours_already) if they stayed.
                return Err(SinkError::Backend {
                    sink: self.config.name.clone(),
                    detail: format!(
                        "{}: the write of {key} finished after this writer's lease lapsed; not acknowledging it",
                        self.log.describe
                    ),
                });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ObjectSinkConfig, Service};
    use audit_core::testing::sample_records;

    /// A memory log holding `recs` in segments of `per` records, and `HEAD`.
    async fn memory_log(recs: &[Record], per: usize, head: serde_json::Value) -> ObjectLog {
        let log = ObjectLog::open(&ObjectSinkConfig::new("m", Service::Memory, "p", "l"))
            .expect("memory log");
        for chunk in recs.chunks(per) {
            let body: Vec<u8> = chunk.iter().flat_map(|r| r.line().to_vec()).collect();
            let key = segment_key(&log.dir, chunk[0].seq());
            log.op.write(&key, body).await.expect("write segment");
        }
        log.op
            .write("p/l/HEAD", head.to_string().into_bytes())
            .await
            .expect("write HEAD");
        log
    }

    /// Through the memory operator: HEAD is used only when it names this
    /// log's last segment and the record it ends with.
    #[tokio::test]
    async fn head_is_a_hint_the_listing_must_bear_out() {
        let recs = sample_records(None, 9);
        let last = Some(recs[8].head());
        let hint = |key: &str, r: &Record| serde_json::json!({"key": key, "seq": r.seq(), "hash": r.hash()});
        // A good hint, a stale one (newer segments after it), another log's
        // key, a made-up name sorting last, a name a real segment has but
        // a record it does not end with.
        for head in [
            hint("p/l/segments/00000000000000000007.jsonl", &recs[8]),
            hint("p/l/segments/00000000000000000001.jsonl", &recs[2]),
            hint("p/other/segments/00000000000000000001.jsonl", &recs[2]),
            hint("p/l/segments/zzz.jsonl", &recs[2]),
            hint("p/l/segments/00000000000000000007.jsonl", &recs[6]),
            hint("p/l/segments/99999999999999999999.jsonl", &recs[2]),
        ] {
            let log = memory_log(&recs, 3, head.clone()).await;
            // The object HEAD names, where it is not a real one, holds old records.
            if let Some(key) = head["key"]
                .as_str()
                .filter(|k| k.ends_with("zzz.jsonl") || k.contains("other"))
            {
                let body: Vec<u8> = recs[..3].iter().flat_map(|r| r.line().to_vec()).collect();
                log.op.write(key, body).await.expect("plant");
            }
            assert_eq!(find_head(&log).await.expect("head"), last, "HEAD {head}");
        }
    }
}
