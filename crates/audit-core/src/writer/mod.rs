//! The writer: group-committed appends fanned out to several sinks.
//!
//! [`AuditLog`] is what a service calls. One driver task owns the chain head;
//! producers serialize their entries in their own tasks and queue the bodies;
//! the driver seals whatever is queued into one batch, hands the batch to every
//! sink at once and resolves each receipt when its durability policy is met.
//!
//! # How the sinks' answers combine
//! - A receipt under [`Durability::Threshold`] resolves once at least
//!   `min_durable_sinks` sinks hold the record durably.
//! - A receipt under [`Durability::AllRequired`] also waits for every
//!   [`Role::Required`] sink, and fails as soon as one of them fails or times out.
//! - A sink that fails or exceeds its timeout falls behind. Its missing records
//!   stay in memory, then in a bounded spool, and are replayed in order when it
//!   answers again, so no sink ever holds a hole.
//! - A batch that no sink stored, and that no sink may still be storing, is
//!   rolled back: its sequence numbers are reused and its producers get an error.
//!   A batch that some sink stored, or may be storing (timed out), stays in the
//!   chain even when its producers get an error: see [`AppendError::NotDurable`].

//!
//! # Layout
//! This module is the public face: [`AuditLog`], its configuration and its
//! errors. One driver task ([`driver`]) runs the log; its concerns each have
//! a module: [`batch`] gathers and chains a batch, [`signer`] signs
//! checkpoints, the key rotation and batch seals and feeds the witness,
//! [`dispatch`] writes batches and catch-up to each sink, [`settle`] turns
//! the sinks' outcomes into receipts, [`rejoin`] brings dropped sinks back,
//! [`retention`] keeps what lagging sinks still lack, and [`startup`]
//! authenticates and reconciles the sinks before the first append
//! ([`backfill`] copies records between sinks for it and for rejoins).

mod backfill;
mod batch;
mod config;
mod dispatch;
mod driver;
mod error;
mod health;
mod rejoin;
mod retention;
mod settle;
mod signer;
mod startup;

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use config::{CheckpointConfig, Durability, Role, SinkSpec, WhenFull, WriterConfig};
pub use error::{AppendError, OpenError};
pub use health::{HealthSnapshot, HealthState, SinkHealth};
pub use retention::SpoolConfig;

use crate::chain::{encode_entry_body_checked, PreparedBody};
use crate::entry::AuditEntry;
use crate::entry_json::EncodeError;
use crate::record::Hash32;
use dispatch::Slot;
use driver::Driver;

/// Proof that a record is durable under the policy it was appended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The record's sequence.
    pub seq: u64,
    /// The record's hash.
    pub hash: Hash32,
}

/// A queued entry's receipt, resolved once the record is durable under its policy.
#[derive(Debug)]
#[must_use = "the receipt says whether the entry became durable"]
pub struct PendingReceipt {
    rx: oneshot::Receiver<Result<Receipt, AppendError>>,
}

impl std::future::Future for PendingReceipt {
    type Output = Result<Receipt, AppendError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(AppendError::Closed)))
    }
}

/// What producers send the driver.
enum Msg {
    Append(Pending),
    Close(oneshot::Sender<()>),
}

/// One queued entry, serialized by its producer.
struct Pending {
    body: PreparedBody,
    durability: Durability,
    reply: oneshot::Sender<Result<Receipt, AppendError>>,
}

/// The handle a service appends through. Clones share one log.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    config: Arc<WriterConfig>,
    health: watch::Receiver<HealthSnapshot>,
    driver: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the log over `sinks`.
    ///
    /// Reads every sink's head, refuses to start if two sinks disagree at a
    /// sequence they share, backfills sinks that are behind from the most
    /// advanced one, and resumes the chain from there (never from genesis
    /// unless every sink is empty).
    pub async fn open(config: WriterConfig, sinks: Vec<SinkSpec>) -> Result<Self, OpenError> {
        validate(&config, &sinks)?;
        if let Some(spool) = &config.spool {
            // Chunks left by a process that crashed: the sinks they were kept
            // for are backfilled from their replicas at start-up, not from here.
            let dir = spool.dir.clone();
            match tokio::task::spawn_blocking(move || retention::clear_stale_spool(&dir)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not clear stale spool chunks"),
                Err(e) => tracing::warn!(error = %e, "could not clear stale spool chunks"),
            }
        }
        let start = startup::prepare(&config, &sinks).await?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let slots: Vec<Slot> = sinks
            .into_iter()
            .zip(start.sink_states)
            .map(|(spec, st)| Slot::new(spec, st, config.rejoin_interval))
            .collect();
        let snapshot = HealthSnapshot {
            status: HealthState::Healthy,
            head_seq: start.head.map_or(0, |h| h.seq),
            queued: 0,
            sinks: slots.iter().map(|s| s.health.clone()).collect(),
        };
        let (health_tx, health_rx) = watch::channel(snapshot);
        let config = Arc::new(config);
        let driver = Driver::new(
            config.clone(),
            start.head,
            start.rotate,
            slots,
            rx,
            health_tx,
        );
        let handle = tokio::spawn(driver.run());
        Ok(Self {
            tx,
            config,
            health: health_rx,
            driver: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// Appends `entry` with the durability its decision class gets from the
    /// configuration, and resolves when the record is durable under it.
    pub async fn append(&self, entry: &AuditEntry) -> Result<Receipt, AppendError> {
        let durability = self.config.durability_for(entry);
        self.append_with(entry, durability).await
    }

    /// Appends `entry` with an explicit durability.
    pub async fn append_with(
        &self,
        entry: &AuditEntry,
        durability: Durability,
    ) -> Result<Receipt, AppendError> {
        self.enqueue_with(entry, durability).await?.await
    }

    /// Queues `entry` (waiting for room, or failing fast, as configured) and
    /// returns a future for its receipt. Entries queued one after another by
    /// one task get increasing sequence numbers in that order, so a caller can
    /// keep many appends in flight and still log them in input order.
    pub async fn enqueue(&self, entry: &AuditEntry) -> Result<PendingReceipt, AppendError> {
        self.enqueue_with(entry, self.config.durability_for(entry))
            .await
    }

    /// [`AuditLog::enqueue`] with an explicit durability.
    pub async fn enqueue_with(
        &self,
        entry: &AuditEntry,
        durability: Durability,
    ) -> Result<PendingReceipt, AppendError> {
        // Room for the chain members, which the driver appends in place.
        let mut body = Vec::with_capacity(1024);
        encode_entry_body_checked(entry, &mut body).map_err(|e| match e {
            EncodeError::TooDeep => AppendError::TooDeep {
                max: crate::MAX_NESTING,
            },
            EncodeError::Json(e) => AppendError::from(e),
        })?;
        // Chain members add at most 180 bytes.
        let len = body.len() + 180;
        if len > self.config.max_record_bytes {
            return Err(AppendError::TooLarge {
                len,
                max: self.config.max_record_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        let msg = Msg::Append(Pending {
            body: PreparedBody::new(body),
            durability,
            reply,
        });
        match self.config.when_full {
            WhenFull::Block => self.tx.send(msg).await.map_err(|_| AppendError::Closed)?,
            WhenFull::FailFast => self.tx.try_send(msg).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AppendError::QueueFull {
                    capacity: self.config.queue_capacity,
                },
                mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
            })?,
        }
        Ok(PendingReceipt { rx })
    }

    /// The current health, ready to serialize for a /health endpoint.
    pub fn health(&self) -> HealthSnapshot {
        let mut snap = self.health.borrow().clone();
        snap.queued = self.config.queue_capacity.max(1) - self.tx.capacity();
        snap
    }

    /// A receiver that sees every health change; tests wait on it instead of sleeping.
    ///
    /// Drop what `borrow` or `wait_for` returns before awaiting anything else:
    /// it is a read lock, and the writer takes the write lock to publish the
    /// next change before it goes on.
    pub fn subscribe_health(&self) -> watch::Receiver<HealthSnapshot> {
        self.health.clone()
    }

    /// Waits until every sink that is not failed holds the whole chain.
    pub async fn caught_up(&self) {
        let mut rx = self.health.clone();
        // The sender lives as long as the driver; when it is gone there is nothing to wait for.
        let _ = rx.wait_for(HealthSnapshot::caught_up).await;
    }

    /// Stops accepting entries, finishes the queued ones, gives lagging sinks
    /// up to their timeout to catch up, and stops the driver.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.driver.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if let Err(e) = h.await {
                tracing::error!(error = %e, "audit writer task ended abnormally");
            }
        }
    }
}

fn validate(config: &WriterConfig, sinks: &[SinkSpec]) -> Result<(), OpenError> {
    if sinks.is_empty() {
        return Err(OpenError::Config("no sinks configured".into()));
    }
    if config.min_durable_sinks == 0 || config.min_durable_sinks > sinks.len() {
        return Err(OpenError::Config(format!(
            "min_durable_sinks is {} but there are {} sinks",
            config.min_durable_sinks,
            sinks.len()
        )));
    }
    let mut names = HashSet::new();
    for s in sinks {
        if !names.insert(s.sink.name().to_string()) {
            return Err(OpenError::Config(format!(
                "two sinks are named {:?}",
                s.sink.name()
            )));
        }
    }
    if config.batch_max_records == 0 || config.batch_max_bytes == 0 {
        return Err(OpenError::Config("batch limits must be positive".into()));
    }
    Ok(())
}
