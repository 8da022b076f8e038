//! Copying records from one sink to another, each checked as it is copied:
//! start-up's backfill of sinks that are behind, and a dropped sink's rejoin.

use std::time::Duration;

use super::startup::{record_at, with_timeout};
use super::OpenError;
use crate::record::{ChainHead, PrevHash, Record};
use crate::sink::{RecordBatch, Sink, SinkError};

/// Copies the records of `source` after `after` (the target's head; `None`
/// from genesis) up to `to`, if given, into `target`. Every record is checked
/// as it is copied: its hash is recomputed from its bytes and it must link to
/// the record before it, starting from `after`, so a source cannot hand over
/// edited bytes. Returns the last record copied.
pub(crate) async fn backfill(
    source: &dyn Sink,
    target: &dyn Sink,
    after: Option<ChainHead>,
    to: Option<u64>,
    max: usize,
) -> Result<Option<u64>, OpenError> {
    let bad = |detail: String| OpenError::Backfill {
        sink: source.name().to_string(),
        detail,
    };
    let from = after.map_or(1, |h| h.seq + 1);
    let mut cursor = source.read_from(from).await.map_err(OpenError::Sink)?;
    let mut reached = None;
    let mut last = after;
    while let Some(items) = cursor.next_batch(max).await.map_err(OpenError::Sink)? {
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            let rec = Record::from_text(&item.text)
                .map_err(|e| bad(format!("at {}: {e}", item.location)))?;
            if to.is_some_and(|to| rec.seq() > to) {
                break;
            }
            let links = match last {
                None => rec.seq() == 1 && rec.prev() == PrevHash::Genesis,
                Some(h) => rec.seq() == h.seq + 1 && rec.prev() == PrevHash::Hash(h.hash),
            };
            if !links {
                return Err(bad(format!(
                    "at {}: record {} does not link to record {}",
                    item.location,
                    rec.seq(),
                    last.map_or(0, |h| h.seq)
                )));
            }
            last = Some(rec.head());
            records.push(rec);
        }
        if records.is_empty() {
            if to.is_some() {
                break;
            }
            continue;
        }
        reached = records.last().map(Record::seq);
        let first = records[0].seq();
        let batch = RecordBatch::new(records).ok_or_else(|| {
            bad(format!(
                "records from {first} do not form a contiguous chain"
            ))
        })?;
        target
            .append(&batch)
            .await
            .map_err(|e| OpenError::Backfill {
                sink: target.name().to_string(),
                detail: e.to_string(),
            })?;
        if to.is_some() && reached == to {
            break;
        }
    }
    Ok(reached)
}

/// Brings a sink that was dropped from the log back to record `upto` of the
/// chain, copied from `source` (a live sink that holds it): checks that the
/// sink's head is a record of this chain, then backfills from there.
pub(crate) async fn rejoin(
    source: &dyn Sink,
    target: &dyn Sink,
    upto: u64,
    max: usize,
    timeout: Duration,
) -> Result<(), SinkError> {
    let as_sink_error = |e: OpenError| match e {
        OpenError::Sink(e) => e,
        other => SinkError::Backend {
            sink: target.name().to_string(),
            detail: other.to_string(),
        },
    };
    let head = with_timeout(target, timeout, target.head()).await?;
    let after = match head {
        None => None,
        Some(h) if h.seq > upto => {
            return Err(SinkError::Backend {
                sink: target.name().to_string(),
                detail: format!(
                    "holds up to record {}, beyond {upto} that {} holds; not rejoining",
                    h.seq,
                    source.name()
                ),
            })
        }
        Some(h) => {
            let ours = record_at(source, h.seq).await.map_err(as_sink_error)?;
            if ours.hash() != h.hash {
                return Err(SinkError::Backend {
                    sink: target.name().to_string(),
                    detail: format!(
                        "is not on this chain: its record {} hashes to {}, {} holds {}",
                        h.seq,
                        h.hash,
                        source.name(),
                        ours.hash()
                    ),
                });
            }
            Some(h)
        }
    };
    if after.map_or(0, |h| h.seq) >= upto {
        return Ok(());
    }
    let reached = backfill(source, target, after, Some(upto), max)
        .await
        .map_err(as_sink_error)?;
    if reached != Some(upto) {
        return Err(SinkError::Backend {
            sink: target.name().to_string(),
            detail: format!(
                "{} ended at {reached:?} while copying up to record {upto}",
                source.name()
            ),
        });
    }
    Ok(())
}
