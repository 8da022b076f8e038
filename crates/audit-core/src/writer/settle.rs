//! Settling: which receipts a batch's outcomes on the sinks allow.
//!
//! Owns the in-flight batch's per-sink outcomes and its waiting producers,
//! the durability policies (threshold, all required) and the batch's fate:
//! kept, in doubt, or rolled back so its sequence numbers are reused. It
//! reads sink outcomes that dispatch records, and tells the signer the
//! fate of what the batch signed; it starts no job and chains no record.

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::driver::Driver;
use super::signer::Signed;
use super::{AppendError, Durability, Receipt, Role};
use crate::chain::Sequencer;
use crate::record::{ChainHead, Hash32};

/// Where the in-flight batch stands on one sink.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Pending,
    Stored,
    Failed { clean: bool, reason: String },
    TimedOut,
}

/// A producer waiting for its record's receipt.
pub(super) struct Waiter {
    pub(super) seq: u64,
    pub(super) hash: Hash32,
    pub(super) durability: Durability,
    pub(super) reply: Option<oneshot::Sender<Result<Receipt, AppendError>>>,
}

/// The one batch being made durable.
pub(super) struct InFlight {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) prev_head: Option<ChainHead>,
    /// Checkpoints and rotation chained in this batch.
    pub(super) signed: Signed,
    pub(super) marker_bodies: Vec<Vec<u8>>,
    pub(super) started: Instant,
    /// Per sink, in slot order.
    pub(super) outcomes: Vec<Outcome>,
    pub(super) waiters: Vec<Waiter>,
}

impl Driver {
    /// Resolves receipts whose policy is met, and settles the batch once its
    /// fate is known on every sink.
    pub(super) fn evaluate(&mut self) {
        let Some(f) = &mut self.inflight else { return };
        let k = self.config.min_durable_sinks;
        let mut stored = 0;
        let mut pending = 0;
        let mut required_failed = false;
        let mut required_all_stored = true;
        for (o, s) in f.outcomes.iter().zip(&self.slots) {
            match o {
                Outcome::Stored => stored += 1,
                Outcome::Pending => pending += 1,
                Outcome::Failed { .. } | Outcome::TimedOut => {}
            }
            if s.spec.role == Role::Required {
                match o {
                    Outcome::Stored => {}
                    Outcome::Pending => required_all_stored = false,
                    _ => {
                        required_all_stored = false;
                        required_failed = true;
                    }
                }
            }
        }
        let threshold_met = stored >= k;
        let threshold_impossible = stored + pending < k;
        let mut unresolved = 0;
        for w in &mut f.waiters {
            if w.reply.is_none() {
                continue;
            }
            let (ok, failed) = match w.durability {
                Durability::Threshold => (threshold_met, threshold_impossible),
                Durability::AllRequired => (
                    threshold_met && required_all_stored,
                    threshold_impossible || required_failed,
                ),
            };
            if ok {
                if let Some(tx) = w.reply.take() {
                    let _ = tx.send(Ok(Receipt {
                        seq: w.seq,
                        hash: w.hash,
                    }));
                }
            } else if !failed {
                unresolved += 1;
            }
        }
        // Waiters that failed are answered at settlement, when we know whether
        // their records stay in the chain: at once if some sink stored them,
        // otherwise when no sink may still be storing them.
        let settled = unresolved == 0 && (pending == 0 || stored > 0);
        if !settled {
            return;
        }
        let Some(f) = self.inflight.take() else {
            return;
        };
        let in_doubt = f.outcomes.iter().any(|o| {
            matches!(
                o,
                Outcome::TimedOut | Outcome::Pending | Outcome::Failed { clean: false, .. }
            )
        });
        let kept = stored > 0 || in_doubt;
        let detail = f
            .outcomes
            .iter()
            .zip(&self.slots)
            .filter_map(|(o, s)| match o {
                Outcome::Failed { reason, .. } => Some(format!("{}: {reason}", s.name())),
                Outcome::TimedOut => Some(format!(
                    "{}: timed out after {:?}",
                    s.name(),
                    s.spec.timeout
                )),
                Outcome::Pending => Some(format!("{}: still writing", s.name())),
                Outcome::Stored => None,
            })
            .collect::<Vec<_>>()
            .join("; ");
        if kept && stored > 0 {
            self.signer.kept(&f.signed);
        } else if kept {
            self.signer.in_doubt(&f.signed);
        } else {
            self.signer.rolled_back(&f.signed);
            self.seq = Sequencer::resume(f.prev_head);
            self.retention
                .truncate_after(f.prev_head.map_or(0, |h| h.seq));
            // Markers were not stored either; they go into the next batch.
            let mut bodies = f.marker_bodies;
            bodies.append(&mut self.markers);
            self.markers = bodies;
            tracing::warn!(first = f.first, last = f.last, detail = %detail, "batch stored on no sink; rolled back");
        }
        for w in f.waiters {
            if let Some(tx) = w.reply {
                let _ = tx.send(Err(AppendError::NotDurable {
                    seq: w.seq,
                    durability: w.durability,
                    kept,
                    detail: detail.clone(),
                }));
            }
        }
    }
}
