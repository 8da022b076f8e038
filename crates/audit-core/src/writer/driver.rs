//! The driver: the one task that owns the chain head and runs the writer.
//!
//! Its event loop takes appends from the queue, sink jobs' results and
//! timer ticks; after each event it settles what it can, dispatches what is
//! due and relieves retention. The work itself lives in the modules named
//! for it: batching ([`super::batch`]), signing ([`super::signer`]), sink
//! jobs ([`super::dispatch`]), settling receipts ([`super::settle`]) and
//! rejoins ([`super::rejoin`]). The driver owns the state they share, the
//! timer and shutdown; it signs nothing itself (that is the signer's) and
//! reaches a sink only through a dispatched job.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::dispatch::{gap_marker, JobDone, Slot};
use super::health::{log_transition, HealthSnapshot};
use super::retention::{self, Retention};
use super::settle::{InFlight, Outcome};
use super::signer::Signer;
use super::{Msg, WriterConfig};
use crate::chain::Sequencer;
use crate::record::ChainHead;

pub(super) struct Driver {
    pub(super) config: Arc<WriterConfig>,
    pub(super) seq: Sequencer,
    pub(super) retention: Retention,
    pub(super) rx: mpsc::Receiver<Msg>,
    pub(super) rx_done: bool,
    pub(super) close_waiters: Vec<oneshot::Sender<()>>,
    pub(super) done_tx: mpsc::UnboundedSender<JobDone>,
    done_rx: mpsc::UnboundedReceiver<JobDone>,
    pub(super) slots: Vec<Slot>,
    pub(super) inflight: Option<InFlight>,
    /// Bodies of non-entry records waiting for the next batch.
    pub(super) markers: Vec<Vec<u8>>,
    health: watch::Sender<HealthSnapshot>,
    close_deadline: Option<Instant>,
    /// Entries in the previous batch: how many producers may be about to return.
    pub(super) last_batch_entries: usize,
    /// The most markers one batch takes, which `max_stretch` counts on.
    pub(super) markers_per_batch: usize,
    /// Checkpoints, the key rotation, batch seals and the witness.
    pub(super) signer: Signer,
}

impl Driver {
    /// A driver resuming the chain at `head` (None: an empty log), over
    /// `slots`, fed by `rx`; `rotate` chains the key rotation first.
    pub(super) fn new(
        config: Arc<WriterConfig>,
        head: Option<ChainHead>,
        rotate: bool,
        slots: Vec<Slot>,
        rx: mpsc::Receiver<Msg>,
        health: watch::Sender<HealthSnapshot>,
    ) -> Self {
        let n_sinks = slots.len();
        let next_seq = head.map_or(1, |h| h.seq + 1);
        // Sinks that could not join at start-up are out of the log from the
        // first record on: the chain says so.
        let start_gaps: Vec<Vec<u8>> = slots
            .iter()
            .filter(|s| s.failed)
            .filter_map(|s| {
                let reason = s.health.last_error.as_deref().unwrap_or("unavailable");
                gap_marker(s.name(), s.durable + 1, next_seq - 1, reason)
            })
            .collect();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            retention: Retention::new(
                next_seq,
                config.retention_memory_bytes,
                config.spool.clone(),
            ),
            signer: Signer::new(&config, n_sinks, head.is_some(), rotate),
            markers_per_batch: WriterConfig::markers_per_batch(n_sinks),
            config,
            seq: Sequencer::resume(head),
            rx,
            rx_done: false,
            close_waiters: Vec::new(),
            done_tx,
            done_rx,
            slots,
            inflight: None,
            markers: start_gaps,
            health,
            close_deadline: None,
            last_batch_entries: 0,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                Some(done) = self.done_rx.recv() => self.on_done(done),
                msg = self.rx.recv(), if self.inflight.is_none() && !self.rx_done => match msg {
                    Some(Msg::Append(p)) => self.start_batch(vec![p]).await,
                    Some(Msg::Close(w)) => {
                        self.close_waiters.push(w);
                        self.rx.close();
                    }
                    None => {
                        self.rx_done = true;
                        let longest = self.slots.iter().map(|s| s.spec.timeout).max().unwrap_or_default();
                        self.close_deadline = Some(Instant::now() + longest);
                    }
                },
                () = sleep_until_opt(deadline), if deadline.is_some() => self.on_tick(),
            }
            // Markers are chained even while closing: a sink dropped then is
            // recorded like any other, and close waits for no marker.
            if self.inflight.is_none()
                && (!self.markers.is_empty() || (self.signer.wants_batch() && !self.rx_done))
            {
                self.start_batch(Vec::new()).await;
            }
            self.after_event().await;
            if self.rx_done && self.inflight.is_none() && self.markers.is_empty() {
                if self.signer.take_final(self.head_seq()) {
                    // A clean shutdown signs the final head.
                    self.start_batch(Vec::new()).await;
                    self.after_event().await;
                    continue;
                }
                let all_done = self
                    .slots
                    .iter()
                    .all(|s| s.failed || s.durable == self.head_seq());
                let expired = self.close_deadline.is_some_and(|d| Instant::now() >= d);
                if all_done || expired {
                    for s in self
                        .slots
                        .iter()
                        .filter(|s| !s.failed && s.durable < self.head_seq())
                    {
                        tracing::warn!(sink = s.name(), durable = s.durable, head = self.head_seq(),
                            "audit log closed while sink is behind; it is backfilled at next start-up");
                    }
                    break;
                }
            }
        }
        // A rejoin still copying must not write to its sink after close.
        for slot in &mut self.slots {
            if let Some(handle) = slot.job.as_mut().and_then(|j| j.rejoin.take()) {
                handle.abort();
            }
        }
        self.signer.close().await;
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    pub(super) fn head_seq(&self) -> u64 {
        self.seq.head().map_or(0, |h| h.seq)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut best: Option<Instant> = self.close_deadline;
        let mut consider = |t: Instant| best = Some(best.map_or(t, |b| b.min(t)));
        if self.inflight.is_none() && !self.rx_done {
            if let Some(t) = self.signer.deadline(self.head_seq()) {
                consider(t);
            }
        }
        if let Some(f) = &self.inflight {
            for (i, o) in f.outcomes.iter().enumerate() {
                if matches!(o, Outcome::Pending) {
                    consider(self.slots[i].batch_deadline(f.started));
                }
            }
        }
        let head = self.head_seq();
        for s in &self.slots {
            if s.job.is_none() && !s.failed && s.durable < head && !self.rx_done {
                if let Some(t) = s.paced_until() {
                    consider(t);
                }
            }
            if let Some(j) = &s.job {
                if !j.hung && j.rejoin.is_none() {
                    consider(j.started + s.spec.timeout);
                }
            } else if let (true, Some(t)) = (s.failed, s.rejoin_at) {
                if !self.rx_done {
                    consider(t);
                }
            } else if let Some(t) = s.retry_at {
                if !s.failed && s.durable < self.head_seq() {
                    consider(t);
                }
            }
        }
        best
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.inflight.is_none() {
            self.signer.tick(now, self.head_seq());
        }
        for i in 0..self.slots.len() {
            let timeout = self.slots[i].spec.timeout;
            let mut timed_out = false;
            if let Some(j) = &mut self.slots[i].job {
                if !j.hung && j.rejoin.is_none() && now >= j.started + timeout {
                    j.hung = true;
                    timed_out = true;
                }
            }
            let batch_deadline = self
                .inflight
                .as_ref()
                .map(|f| self.slots[i].batch_deadline(f.started));
            if let Some(f) = &mut self.inflight {
                if matches!(f.outcomes[i], Outcome::Pending)
                    && batch_deadline.is_some_and(|d| now >= d)
                {
                    f.outcomes[i] = Outcome::TimedOut;
                    timed_out = true;
                }
            }
            if timed_out {
                let reason = format!("timed out after {timeout:?}");
                let slot = &mut self.slots[i];
                if let Some(t) = slot.health.failure(reason.clone()) {
                    log_transition(&slot.health, t.from, t.to, Some(&reason));
                }
            }
        }
        if self.close_deadline.is_some_and(|d| now >= d) {
            self.close_deadline = Some(now);
        }
    }

    pub(super) async fn after_event(&mut self) {
        // Health first, so a producer that wakes on its receipt sees it.
        self.publish();
        self.evaluate();
        for i in 0..self.slots.len() {
            self.dispatch(i);
        }
        if self.inflight.is_none() {
            self.relieve_retention().await;
        }
        self.publish();
    }

    /// The lowest durable sequence among live sinks: retention can forget
    /// everything up to it.
    fn live_min(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| !s.failed)
            .map(|s| s.durable)
            .min()
            .unwrap_or_else(|| self.head_seq())
    }

    async fn relieve_retention(&mut self) {
        self.retention.trim_through(self.live_min());
        while let Some((path, records)) = self.retention.spill_plan(self.head_seq() + 1) {
            let p = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                let r = retention::write_chunk(&p, &records);
                (r, records)
            })
            .await;
            match written {
                Ok((Ok(()), records)) => self.retention.add_chunk(path, &records),
                Ok((Err(e), records)) => {
                    tracing::warn!(error = %e, "could not spill to the spool; keeping records in memory");
                    self.retention.unspill(records);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool task failed");
                    break;
                }
            }
        }
        while self.retention.overflowing() {
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.failed && s.durable < self.head_seq())
                .min_by_key(|(_, s)| s.durable)
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            let bytes = self.retention.bytes();
            self.fail_slot(i, format!("retention overflow: {bytes} bytes of records it lacks exceed memory and spool limits"));
            self.retention.trim_through(self.live_min());
        }
    }

    fn publish(&mut self) {
        let head = self.head_seq();
        let threshold = self.config.min_durable_sinks;
        let slots = &mut self.slots;
        self.health.send_if_modified(|snap| {
            let mut changed = snap.head_seq != head;
            snap.head_seq = head;
            for (dst, slot) in snap.sinks.iter_mut().zip(slots.iter_mut()) {
                slot.health.durable_seq = slot.durable;
                slot.health.records_behind = head.saturating_sub(slot.durable);
                if dst.durable_seq != slot.health.durable_seq
                    || dst.records_behind != slot.health.records_behind
                    || dst.state != slot.health.state
                    || dst.total_failures != slot.health.total_failures
                    || dst.consecutive_successes != slot.health.consecutive_successes
                    || dst.last_error != slot.health.last_error
                {
                    *dst = slot.health.clone();
                    changed = true;
                }
            }
            snap.recompute_status(threshold);
            changed
        });
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
