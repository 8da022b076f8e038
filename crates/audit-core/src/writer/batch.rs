//! Batching and sealing: how queued entries become one chained batch.
//!
//! Owns the gathering of a batch (the queue drained up to the batch limits,
//! a few microseconds' wait for the producers the last receipts woke, the
//! optional linger) and the order of its records: markers, entries, what
//! the signer has due, then the seal. It chains records and hands the batch
//! to dispatch; it does not sign (the signer does) or settle receipts.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::driver::Driver;
use super::settle::{InFlight, Outcome, Waiter};
use super::{Msg, Pending};

/// How long a batch waits for the next of the producers that the previous
/// batch's receipts just woke, and for all of them. Far below an fsync; tokio's
/// timers cannot wait this briefly, so the driver yields instead of sleeping.
const STRAGGLER_GAP: std::time::Duration = std::time::Duration::from_micros(40);
const STRAGGLER_WAIT: std::time::Duration = std::time::Duration::from_micros(250);

impl Driver {
    /// Chains `pendings`, then whatever else is queued (up to the batch
    /// limits and the next checkpoint), the waiting markers, what the signer
    /// has due and the batch's seal, and hands the batch to every sink.
    pub(super) async fn start_batch(&mut self, pendings: Vec<Pending>) {
        let prev_head = self.seq.head();
        // A checkpoint follows at most `every_records` entries and markers,
        // whatever the batching: the batch ends where the next one is due.
        let checkpoint_room = self.signer.room();
        // A bounded number of markers, so max_stretch holds; the rest wait.
        let take =
            self.markers.len().min(self.markers_per_batch).min(
                checkpoint_room.map_or(usize::MAX, |room| room.saturating_sub(pendings.len())),
            );
        let marker_bodies: Vec<Vec<u8>> = self.markers.drain(..take).collect();
        let first = self.seq.next_seq();
        for body in &marker_bodies {
            let r = self.seq.seal(body);
            self.retention.push(r);
        }
        let mut waiters = Vec::with_capacity(pendings.len().max(self.last_batch_entries));
        let mut bytes = 0usize;
        // Entries are sealed as they arrive: the chain work overlaps the wait
        // for the rest of the batch instead of following it.
        for p in pendings {
            bytes += p.body.len();
            self.seal_pending(p, &mut waiters);
        }
        let linger_until = Instant::now() + self.config.linger;
        let gather_start = std::time::Instant::now();
        let mut last_arrival = gather_start;
        loop {
            if waiters.len() >= self.config.batch_max_records
                || bytes >= self.config.batch_max_bytes
                || checkpoint_room.is_some_and(|room| waiters.len() + marker_bodies.len() >= room)
            {
                break;
            }
            let msg = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Empty)
                    if self.config.linger.is_zero()
                        && waiters.len() < self.last_batch_entries
                        && last_arrival.elapsed() < STRAGGLER_GAP
                        && gather_start.elapsed() < STRAGGLER_WAIT =>
                {
                    // The producers woken by the last batch's receipts are
                    // about to queue again: give them a few microseconds, or
                    // this batch would hold only the fastest of them and the
                    // rest would wait a whole extra fsync.
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Empty) if !self.config.linger.is_zero() => {
                    match tokio::time::timeout_at(linger_until, self.rx.recv()).await {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            match msg {
                Some(Msg::Append(p)) => {
                    bytes += p.body.len();
                    self.seal_pending(p, &mut waiters);
                    last_arrival = std::time::Instant::now();
                }
                Some(Msg::Close(w)) => {
                    self.close_waiters.push(w);
                    self.rx.close();
                }
                None => break,
            }
        }
        self.signer
            .count((waiters.len() + marker_bodies.len()) as u64);
        let signed = self.signer.sign_due(&mut self.seq, &mut self.retention);
        if self.seq.next_seq() == first {
            return;
        }
        self.signer
            .seal(&mut self.seq, &mut self.retention, &signed);
        let last = self.seq.next_seq() - 1;
        self.last_batch_entries = waiters.len();
        let now = Instant::now();
        let outcomes = self
            .slots
            .iter()
            .map(|s| {
                if s.failed {
                    Outcome::Failed {
                        clean: true,
                        reason: "failed".into(),
                    }
                } else if s.job.as_ref().is_some_and(|j| j.hung) {
                    Outcome::TimedOut
                } else if s.job.is_none() && s.retry_at.is_some_and(|t| t > now) {
                    Outcome::Failed {
                        clean: true,
                        reason: s
                            .health
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "retrying".into()),
                    }
                } else {
                    Outcome::Pending
                }
            })
            .collect();
        self.inflight = Some(InFlight {
            first,
            last,
            prev_head,
            signed,
            marker_bodies,
            started: now,
            outcomes,
            waiters,
        });
        for i in 0..self.slots.len() {
            self.dispatch(i);
        }
    }

    fn seal_pending(&mut self, p: Pending, waiters: &mut Vec<Waiter>) {
        let r = self.seq.seal_prepared(p.body);
        waiters.push(Waiter {
            seq: r.seq(),
            hash: r.hash(),
            durability: p.durability,
            reply: Some(p.reply),
        });
        self.retention.push(r);
    }
}
