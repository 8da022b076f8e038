//! Rejoin: bringing a dropped sink back into the log.
//!
//! Owns the periodic question to a dropped sink (does it answer, with a
//! head on this chain?), its backfill from the live sink furthest ahead,
//! and the `sink_rejoined` marker that records its return. It changes only
//! the rejoining sink's slot; ordinary catch-up takes over from dispatch
//! once retention covers the rest.

use serde::Serialize;
use tokio::time::Instant;

use super::backfill;
use super::dispatch::{Job, JobDone};
use super::driver::Driver;
use super::health::log_transition;
use crate::chain::encode_marker_body;
use crate::sink::SinkError;

impl Driver {
    /// Asks a dropped sink for its head and, if it holds a record of this
    /// chain, backfills it from the live sink furthest ahead. The job runs
    /// without the sink's timeout: a long outage means a long backfill.
    pub(super) fn start_rejoin(&mut self, i: usize) {
        let source = self
            .slots
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != i && !s.failed && s.durable > 0)
            .max_by_key(|(_, s)| s.durable)
            .map(|(j, _)| j);
        let Some(j) = source else {
            self.slots[i].rejoin_at = self.config.rejoin_interval.map(|d| Instant::now() + d);
            return;
        };
        let upto = self.slots[j].durable;
        let source = self.slots[j].spec.sink.clone();
        let target = self.slots[i].spec.sink.clone();
        let timeout = self.slots[i].spec.timeout;
        let max = self.config.batch_max_records.max(1024);
        let done = self.done_tx.clone();
        tracing::info!(
            sink = target.name(),
            source = source.name(),
            upto,
            "asking a dropped sink to rejoin"
        );
        let handle = tokio::spawn(async move {
            let result =
                backfill::rejoin(source.as_ref(), target.as_ref(), upto, max, timeout).await;
            let _ = done.send(JobDone {
                slot: i,
                last: upto,
                result,
                rejoin: true,
            });
        });
        self.slots[i].job = Some(Job {
            started: Instant::now(),
            first: 0,
            hung: false,
            rejoin: Some(handle),
        });
    }

    pub(super) fn on_rejoin_done(&mut self, i: usize, reached: u64, result: Result<(), SinkError>) {
        let interval = self.config.rejoin_interval;
        match result {
            Ok(()) => {
                // Retention holds what came after `reached` (or nothing came),
                // so ordinary catch-up can take it from here.
                let covered = reached >= self.head_seq()
                    || self.retention.source(reached + 1, 1, usize::MAX).is_some();
                let slot = &mut self.slots[i];
                let copied_from = *slot.rejoin_copied_from.get_or_insert(slot.durable + 1);
                slot.durable = reached;
                if !covered {
                    // The log moved past what retention keeps while the
                    // backfill ran: copy the next stretch at once.
                    slot.rejoin_at = Some(Instant::now());
                    return;
                }
                slot.rejoin_copied_from = None;
                slot.failed = false;
                slot.rejoin_at = None;
                slot.retry_at = None;
                tracing::info!(
                    sink = slot.name(),
                    durable = reached,
                    "dropped sink backfilled; it rejoins the audit log"
                );
                if let Some(t) = slot.health.rejoin() {
                    log_transition(&slot.health, t.from, t.to, None);
                }
                // The chain records the return as it recorded the drop.
                #[derive(Serialize)]
                struct Rejoined<'a> {
                    timestamp: chrono::DateTime<chrono::Utc>,
                    sink: &'a str,
                    copied_from: u64,
                    holds_through: u64,
                }
                let mut body = Vec::new();
                let rejoined = Rejoined {
                    timestamp: chrono::Utc::now(),
                    sink: slot.spec.sink.name(),
                    copied_from,
                    holds_through: reached,
                };
                if encode_marker_body("sink_rejoined", &rejoined, &mut body).is_ok() {
                    self.markers.push(body);
                }
            }
            Err(e) => {
                let slot = &mut self.slots[i];
                tracing::warn!(sink = slot.name(), error = %e, "dropped sink cannot rejoin yet");
                slot.health.last_error = Some(e.to_string());
                slot.health.last_error_at = Some(chrono::Utc::now());
                slot.rejoin_at = interval.map(|d| Instant::now() + d);
            }
        }
    }
}
