//! Dispatch: the sinks' slots, the jobs that write to them, and what their
//! results do.
//!
//! Owns each sink's state in the fan-out (durable head, running job, retry
//! backoff, pacing, dropped or not) and the catch-up from retention that
//! keeps a sink that fell behind free of holes. It records each job's
//! outcome on the in-flight batch for settling to read; it resolves no
//! receipt and chains nothing but the `sink_gap` marker of a dropped sink.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::driver::Driver;
use super::health::{log_transition, SinkHealth};
use super::retention::{self, JobSource};
use super::settle::Outcome;
use super::startup::SinkStart;
use super::SinkSpec;
use crate::chain::encode_marker_body;
use crate::record::{Hash32, Record};
use crate::sink::{RecordBatch, Sink, SinkError};

/// A write (or a rejoin's backfill) running on one sink.
pub(super) struct Job {
    pub(super) started: Instant,
    pub(super) first: u64,
    pub(super) hung: bool,
    /// A rejoin: a backfill that may take longer than the sink's timeout.
    pub(super) rejoin: Option<JoinHandle<()>>,
}

/// One sink's place in the fan-out.
pub(super) struct Slot {
    pub(super) spec: SinkSpec,
    pub(super) durable: u64,
    pub(super) job: Option<Job>,
    pub(super) retry_at: Option<Instant>,
    pub(super) failed: bool,
    /// When a dropped sink is next asked whether it can rejoin.
    pub(super) rejoin_at: Option<Instant>,
    /// Where a rejoin that needed more than one stretch started copying.
    pub(super) rejoin_copied_from: Option<u64>,
    pub(super) health: SinkHealth,
    /// When the last write to this sink started, for its `min_write_interval`.
    pub(super) last_write: Option<Instant>,
    /// The delays before the next retries while writes keep failing (None
    /// after a success): exponential from `retry_min` to `retry_max`, with
    /// jitter, so sinks that failed together do not retry in step.
    backoff: Option<ExponentialBackoff>,
}

impl Slot {
    pub(super) fn new(spec: SinkSpec, start: SinkStart, rejoin_interval: Option<Duration>) -> Self {
        let mut health = SinkHealth::new(spec.sink.name().to_string(), spec.role, start.durable);
        let failed = start.failed.is_some();
        if let Some(reason) = start.failed {
            health.fail_permanently(reason);
        }
        Self {
            spec,
            durable: start.durable,
            job: None,
            retry_at: None,
            last_write: None,
            backoff: None,
            failed,
            rejoin_at: rejoin_interval
                .filter(|_| failed)
                .map(|d| Instant::now() + d),
            rejoin_copied_from: None,
            health,
        }
    }

    /// Until when this sink's `min_write_interval` holds back its next write.
    pub(super) fn paced_until(&self) -> Option<Instant> {
        let interval = self.spec.min_write_interval;
        self.last_write
            .filter(|_| !interval.is_zero())
            .map(|t| t + interval)
    }

    /// When a batch started at `started` counts as timed out on this sink:
    /// its write may be held back by the interval first.
    pub(super) fn batch_deadline(&self, started: Instant) -> Instant {
        started + self.spec.min_write_interval + self.spec.timeout
    }

    pub(super) fn name(&self) -> &str {
        self.spec.sink.name()
    }
}

/// A job's result, sent back to the driver.
pub(super) struct JobDone {
    pub(super) slot: usize,
    pub(super) last: u64,
    pub(super) result: Result<(), SinkError>,
    pub(super) rejoin: bool,
}

impl Driver {
    /// Starts the next write to sink `i` if it is free, behind, not waiting
    /// out a retry or its pacing, and not dropped (a dropped sink due to be
    /// asked again starts a rejoin instead).
    pub(super) fn dispatch(&mut self, i: usize) {
        let head = self.head_seq();
        let now = Instant::now();
        let slot = &self.slots[i];
        if slot.failed
            && slot.job.is_none()
            && !self.rx_done
            && slot.rejoin_at.is_some_and(|t| t <= now)
        {
            self.start_rejoin(i);
            return;
        }
        if slot.failed
            || slot.job.is_some()
            || slot.durable >= head
            || slot.retry_at.is_some_and(|t| t > now)
            || (!self.rx_done && slot.paced_until().is_some_and(|t| t > now))
        {
            return;
        }
        let from = slot.durable + 1;
        let max_records = self
            .config
            .catch_up_max_records
            .max(self.config.batch_max_records);
        let max_bytes = self
            .config
            .catch_up_max_bytes
            .max(self.config.batch_max_bytes);
        let Some(source) = self.retention.source(from, max_records, max_bytes) else {
            self.fail_slot(i, format!("records from {from} are no longer retained"));
            return;
        };
        let sink = self.slots[i].spec.sink.clone();
        let done = self.done_tx.clone();
        let max = max_records;
        self.slots[i].last_write = Some(now);
        self.slots[i].job = Some(Job {
            started: now,
            first: from,
            hung: false,
            rejoin: None,
        });
        tokio::spawn(async move {
            let (last, result) = run_job(sink.as_ref(), source, max).await;
            let _ = done.send(JobDone {
                slot: i,
                last,
                result,
                rejoin: false,
            });
        });
    }

    /// A job ended: the sink's durable head moves on, or it fails and waits
    /// out its backoff, or (its head is not where the writer thought) it
    /// resumes from a head on this chain or is dropped.
    pub(super) fn on_done(&mut self, done: JobDone) {
        let i = done.slot;
        if done.rejoin {
            self.slots[i].job = None;
            self.on_rejoin_done(i, done.last, done.result);
            return;
        }
        let job = self.slots[i].job.take();
        let job_first = job.as_ref().map_or(0, |j| j.first);
        match done.result {
            Ok(()) => {
                let slot = &mut self.slots[i];
                slot.durable = done.last;
                slot.retry_at = None;
                slot.backoff = None;
                if let Some(t) = slot.health.success(self.config.recovery_successes) {
                    log_transition(&slot.health, t.from, t.to, None);
                }
            }
            Err(SinkError::NotContiguous { head, .. }) => {
                // The sink holds more (or less) than we thought: a write we
                // counted as failed may have landed. Adopt its head only if it is
                // exactly a record of our chain.
                let ok = head.is_some_and(|h| {
                    h.seq <= self.head_seq() && self.retention_hash(h.seq) == Some(h.hash)
                });
                match head {
                    Some(h) if ok => {
                        tracing::warn!(
                            sink = self.slots[i].name(),
                            seq = h.seq,
                            "sink head moved; resuming from it"
                        );
                        self.slots[i].durable = h.seq;
                    }
                    _ => self.fail_slot(i, format!("sink head {head:?} is not on this chain")),
                }
            }
            Err(e) => {
                let clean = e.is_clean();
                let reason = e.to_string();
                let slot = &mut self.slots[i];
                let (min, max) = (self.config.retry_min, self.config.retry_max);
                let delay = slot
                    .backoff
                    .get_or_insert_with(|| {
                        ExponentialBuilder::default()
                            .with_min_delay(min)
                            .with_max_delay(max)
                            .with_factor(2.0)
                            .with_jitter()
                            .without_max_times()
                            .build()
                    })
                    .next()
                    .unwrap_or(max)
                    .min(max);
                slot.retry_at = Some(Instant::now() + delay);
                if let Some(t) = slot.health.failure(reason.clone()) {
                    log_transition(&slot.health, t.from, t.to, Some(&reason));
                } else {
                    tracing::debug!(sink = slot.name(), error = %reason, "sink write failed");
                }
                if let Some(f) = &mut self.inflight {
                    if matches!(f.outcomes[i], Outcome::Pending | Outcome::TimedOut) {
                        // A job that never reached this batch's records left them untouched.
                        let touched = done.last >= f.first && job_first <= f.last;
                        f.outcomes[i] = Outcome::Failed {
                            clean: clean || !touched,
                            reason,
                        };
                    }
                }
            }
        }
        if let Some(f) = &mut self.inflight {
            if self.slots[i].durable >= f.last {
                f.outcomes[i] = Outcome::Stored;
            }
        }
    }

    fn retention_hash(&self, seq: u64) -> Option<Hash32> {
        match self.retention.source(seq, 1, usize::MAX)? {
            JobSource::Memory(v) => v.first().filter(|r| r.seq() == seq).map(Record::hash),
            JobSource::Spool { .. } => None,
        }
    }

    /// Drops sink `i` from the log: it lacks everything from its durable
    /// head on, the chain records a `sink_gap`, and it is asked to rejoin
    /// every `rejoin_interval`.
    pub(super) fn fail_slot(&mut self, i: usize, reason: String) {
        let head = self.head_seq();
        let slot = &mut self.slots[i];
        if slot.failed {
            return;
        }
        slot.failed = true;
        slot.rejoin_at = self.config.rejoin_interval.map(|d| Instant::now() + d);
        tracing::error!(sink = slot.name(), durable = slot.durable, head, reason = %reason, "sink dropped from the audit log");
        if let Some(t) = slot.health.fail_permanently(reason.clone()) {
            log_transition(&slot.health, t.from, t.to, Some(&reason));
        }
        if let Some(body) = gap_marker(slot.spec.sink.name(), slot.durable + 1, head, &reason) {
            self.markers.push(body);
        }
        if let Some(f) = &mut self.inflight {
            if matches!(f.outcomes[i], Outcome::Pending | Outcome::TimedOut) {
                f.outcomes[i] = Outcome::Failed {
                    clean: true,
                    reason,
                };
            }
        }
    }
}

/// The body of a `sink_gap` record: `sink` was dropped from the log lacking
/// everything from `lacks_from` on.
pub(super) fn gap_marker(sink: &str, lacks_from: u64, head: u64, reason: &str) -> Option<Vec<u8>> {
    #[derive(Serialize)]
    struct Gap<'a> {
        timestamp: chrono::DateTime<chrono::Utc>,
        sink: &'a str,
        lacks_from: u64,
        head_at_failure: u64,
        reason: &'a str,
    }
    let gap = Gap {
        timestamp: chrono::Utc::now(),
        sink,
        lacks_from,
        head_at_failure: head,
        reason,
    };
    let mut body = Vec::new();
    encode_marker_body("sink_gap", &gap, &mut body).ok()?;
    Some(body)
}

async fn run_job(sink: &dyn Sink, source: JobSource, max: usize) -> (u64, Result<(), SinkError>) {
    let records = match source {
        JobSource::Memory(v) => v,
        JobSource::Spool { path, from, to } => {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || retention::read_chunk(&p, from, to, max))
                .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    return (
                        0,
                        Err(SinkError::Io {
                            sink: sink.name().to_string(),
                            op: "read spool",
                            path,
                            source: e.source,
                        }),
                    )
                }
                Err(e) => {
                    return (
                        0,
                        Err(SinkError::Backend {
                            sink: sink.name().to_string(),
                            detail: format!("spool reader task failed: {e}"),
                        }),
                    )
                }
            }
        }
    };
    let last = records.last().map_or(0, Record::seq);
    let Some(batch) = RecordBatch::new(records) else {
        return (
            0,
            Err(SinkError::Backend {
                sink: sink.name().to_string(),
                detail: "internal: catch-up records are not contiguous".into(),
            }),
        );
    };
    (last, sink.append(&batch).await)
}
