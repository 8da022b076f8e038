//! One writer per log on stores that do not enforce conditional writes.
//!
//! Garage accepts `If-None-Match: *` and overwrites anyway, so two writers
//! continuing the same head both "create" the next segment and the later
//! PUT silently replaces the earlier one, whose writer has already issued
//! receipts. The sink finds this out at start-up ([`conditional_writes_enforced`])
//! and, on such a store, writes only while it holds a lease
//! ([`Lease`]). docs/OBJECT_STORAGE.md gives the argument and its assumptions.

use std::time::{Duration, Instant, SystemTime};

use audit_core::SinkError;
use opendal::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::reader::ObjectLog;

/// Lease timestamps are the store's `Last-Modified`, which S3 gives to the
/// second: a lease counts as live for this much longer than its TTL.
const TIMESTAMP_SLACK: Duration = Duration::from_secs(2);

/// A random id (128 bits, hex) for probe and lease keys.
fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether the store refuses a second create of one key with
/// `If-None-Match: *`: creates `<log dir>probe/<random>` twice, and the
/// second must fail with a condition error. The probe is deleted after; where
/// the credentials may not delete (a WORM setup), it stays, a few bytes per
/// start-up, and is never read.
pub(crate) async fn conditional_writes_enforced(log: &ObjectLog) -> Result<bool, SinkError> {
    if !log.op.info().capability().write_with_if_not_exists {
        return Ok(false);
    }
    let dir = format!("{}probe/", log.dir);
    let key = format!("{dir}{}", random_id());
    let create = || {
        log.op
            .write_with(&key, b"probe".to_vec())
            .if_not_exists(true)
    };
    match create().await {
        Ok(_) => {}
        // A fresh random key that exists: nothing can be concluded, and the
        // safe answer is "not enforced".
        Err(e) if e.kind() == ErrorKind::ConditionNotMatch => return Ok(false),
        Err(e) => return Err(log.error("write (conditional-write probe)", &key, e)),
    }
    let enforced = match create().await {
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::ConditionNotMatch => true,
        Err(e) => return Err(log.error("write (conditional-write probe)", &key, e)),
    };
    if let Err(e) = log.op.delete(&key).await {
        tracing::debug!(sink = %log.name, %key, error = %e, "could not delete the conditional-write probe; leaving it");
    }
    // On the fs service the probe's directory is a real one; an empty one is
    // removed, a non-empty one (a probe left by another writer) is kept.
    let _ = log.op.delete(&dir).await;
    if !enforced {
        tracing::info!(sink = %log.name, "the store ignores If-None-Match; this writer writes only while it holds the log's lease");
    }
    Ok(enforced)
}

/// What a lease object holds.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseBody {
    writer: String,
    /// Set when the writer gave the lease up (closed, or refused to start).
    released: bool,
}

/// This writer's lease on the log: the object `<log dir>lease/<writer id>`.
///
/// To take or renew it the writer (1) writes its lease object, then (2)
/// lists `lease/`: if any other writer's lease is live (its `Last-Modified`
/// less than the TTL before this writer's own, and not released), it gives
/// its own up and refuses. Of two writers doing this at once, the one that
/// lists second sees the other's lease, so at most one proceeds (both may
/// refuse). A writer writes a segment only while its lease is valid by its
/// own clock, with time to spare for the write to finish, and does not
/// acknowledge a write that finished after that.
#[derive(Debug)]
pub(crate) struct Lease {
    key: String,
    writer: String,
    ttl: Duration,
    /// The longest a segment write may take (every retry and backoff): a write
    /// starts only if it ends before the lease does.
    write_budget: Duration,
    /// When the lease lapses by this writer's clock: the instant before the
    /// last successful renewal's write was sent, plus the TTL. `None` when
    /// not held.
    valid_until: Option<Instant>,
}

impl Lease {
    /// A lease for a new writer of `log` (not yet taken). The TTL is at least
    /// three write budgets: a segment write (a check and a PUT, two budgets)
    /// starts only with that much of the lease left, and the rest is time
    /// between renewals.
    pub(crate) fn new(log: &ObjectLog, ttl: Duration, write_budget: Duration) -> Self {
        let writer = random_id();
        Self {
            key: format!("{}lease/{writer}", log.dir),
            writer,
            ttl: ttl.max(write_budget * 3),
            write_budget,
            valid_until: None,
        }
    }

    fn body(&self, released: bool) -> Vec<u8> {
        serde_json::to_vec(&LeaseBody {
            writer: self.writer.clone(),
            released,
        })
        .unwrap_or_default()
    }

    /// Takes or renews the lease; `SinkError::InUse` naming the other
    /// writer's lease when one is live.
    pub(crate) async fn acquire(&mut self, log: &ObjectLog) -> Result<(), SinkError> {
        self.valid_until = None;
        let sent = Instant::now();
        log.op
            .write(&self.key, self.body(false))
            .await
            .map_err(|e| log.error("write lease", &self.key, e))?;
        let mine = modified(log, &self.key).await?;
        let dir = format!("{}lease/", log.dir);
        let entries = log
            .op
            .list(&dir)
            .await
            .map_err(|e| log.error("list", &dir, e))?;
        for e in entries {
            let key = e.path();
            if key == self.key || key.ends_with('/') {
                continue;
            }
            if !self.is_live(log, key, mine).await? {
                continue;
            }
            // Give ours up, so that the holder's next renewal does not see it
            // and stop too.
            self.release(log).await;
            return Err(SinkError::InUse {
                sink: log.name.clone(),
                path: std::path::PathBuf::from(format!("{} {key}", log.describe)),
                holder: None,
            });
        }
        self.valid_until = Some(sent + self.ttl);
        Ok(())
    }

    /// Whether the lease object `key` of another writer is live: written less
    /// than a TTL (plus the timestamps' slack) before ours, and not released.
    /// Unknown times count as live.
    async fn is_live(
        &self,
        log: &ObjectLog,
        key: &str,
        mine: Option<SystemTime>,
    ) -> Result<bool, SinkError> {
        let theirs = match modified(log, key).await {
            Ok(t) => t,
            // Released and deleted since the listing.
            Err(_) if matches!(log.op.exists(key).await, Ok(false)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if let (Some(mine), Some(theirs)) = (mine, theirs) {
            // Theirs may be newer than ours (a writer that came after us).
            let age = mine.duration_since(theirs).unwrap_or(Duration::ZERO);
            if age >= self.ttl + TIMESTAMP_SLACK {
                return Ok(false);
            }
        }
        let body = match log.op.read(key).await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(log.error("read lease", key, e)),
        };
        Ok(!serde_json::from_slice::<LeaseBody>(&body).is_ok_and(|b| b.released))
    }

    /// Makes sure the lease is held with time for one more segment write (a
    /// `stat` and a PUT, each up to the write budget), renewing
    /// it (or taking it again) when not.
    pub(crate) async fn ensure(&mut self, log: &ObjectLog) -> Result<(), SinkError> {
        let enough = self
            .valid_until
            .is_some_and(|until| Instant::now() + self.write_budget * 2 < until);
        if !enough {
            self.acquire(log).await?;
        }
        Ok(())
    }

    /// Whether a write that finished at `done` did so while the lease held.
    pub(crate) fn covers(&self, done: Instant) -> bool {
        self.valid_until.is_some_and(|until| done < until)
    }

    /// Gives the lease up: deletes the lease object, or where that is not
    /// allowed marks it released. Best effort: a lease left behind only makes
    /// the next writer wait out its TTL.
    pub(crate) async fn release(&mut self, log: &ObjectLog) {
        self.valid_until = None;
        if log.op.delete(&self.key).await.is_ok() {
            return;
        }
        if let Err(e) = log.op.write(&self.key, self.body(true)).await {
            tracing::warn!(sink = %log.name, key = %self.key, error = %e, "could not release the lease; the next writer waits for it to expire");
        }
    }
}

/// The store's modification time of `key`.
async fn modified(log: &ObjectLog, key: &str) -> Result<Option<SystemTime>, SinkError> {
    let meta = log
        .op
        .stat(key)
        .await
        .map_err(|e| log.error("stat", key, e))?;
    Ok(meta.last_modified().map(SystemTime::from))
}
