//! Start-up: read every head, refuse forks, backfill sinks that are behind.

use std::time::Duration;

use super::{OpenError, Role, SinkSpec, SinkStart, WriterConfig};
use crate::record::{ChainHead, Record};
use crate::sink::{RecordBatch, Sink, SinkError};

pub(super) struct Start {
    pub head: Option<ChainHead>,
    pub sink_states: Vec<SinkStart>,
}

async fn with_timeout<T>(
    sink: &dyn Sink,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(SinkError::Backend {
            sink: sink.name().to_string(),
            detail: format!("no answer within {timeout:?} at start-up"),
        }),
    }
}

pub(super) async fn prepare(config: &WriterConfig, sinks: &[SinkSpec]) -> Result<Start, OpenError> {
    let mut heads: Vec<Result<Option<ChainHead>, SinkError>> = Vec::with_capacity(sinks.len());
    for spec in sinks {
        heads.push(with_timeout(spec.sink.as_ref(), spec.timeout, spec.sink.head()).await);
    }
    let mut states: Vec<SinkStart> = Vec::with_capacity(sinks.len());
    for (spec, head) in sinks.iter().zip(&mut heads) {
        match head {
            Ok(h) => states.push(SinkStart {
                durable: h.map_or(0, |h| h.seq),
                failed: None,
            }),
            Err(_) if spec.role == Role::Required => {
                let err = std::mem::replace(head, Ok(None)).expect_err("matched Err");
                return Err(OpenError::Sink(err));
            }
            Err(e) => {
                tracing::error!(sink = spec.sink.name(), error = %e, "optional sink unavailable at start-up; it stays out of the log until it rejoins or the log restarts");
                states.push(SinkStart {
                    durable: 0,
                    failed: Some(format!("unavailable at start-up: {e}")),
                });
            }
        }
    }
    // The most advanced sink leads; among equals, the first configured.
    let mut leader: Option<usize> = None;
    for (i, s) in states.iter().enumerate() {
        if s.failed.is_none() && leader.is_none_or(|l| s.durable > states[l].durable) {
            leader = Some(i);
        }
    }
    let Some(leader) = leader else {
        return Err(OpenError::Config("no sink is available".into()));
    };
    let leader_head = match &heads[leader] {
        Ok(h) => *h,
        Err(_) => None,
    };
    let leader_sink = sinks[leader].sink.as_ref();
    // Fork check: every other sink's head must be a record of the leader's chain.
    for (i, spec) in sinks.iter().enumerate() {
        if i == leader || states[i].failed.is_some() {
            continue;
        }
        let Ok(Some(h)) = heads[i] else { continue };
        let theirs = record_at(leader_sink, h.seq).await?;
        if theirs.hash() != h.hash {
            return Err(OpenError::Fork {
                a: leader_sink.name().to_string(),
                b: spec.sink.name().to_string(),
                seq: h.seq,
                hash_a: theirs.hash(),
                hash_b: h.hash,
            });
        }
    }
    // Backfill.
    let leader_seq = leader_head.map_or(0, |h| h.seq);
    for (i, spec) in sinks.iter().enumerate() {
        if i == leader || states[i].failed.is_some() || states[i].durable >= leader_seq {
            continue;
        }
        let from = states[i].durable + 1;
        tracing::info!(
            sink = spec.sink.name(),
            from,
            to = leader_seq,
            source = leader_sink.name(),
            "backfilling sink"
        );
        let copied = backfill(
            leader_sink,
            spec.sink.as_ref(),
            from,
            Some(leader_seq),
            config.batch_max_records.max(1024),
        )
        .await
        .and_then(|reached| {
            if reached == Some(leader_seq) {
                Ok(())
            } else {
                Err(OpenError::Backfill {
                    sink: leader_sink.name().to_string(),
                    detail: format!(
                        "its head is {leader_seq}, but reading it back ended at {reached:?}"
                    ),
                })
            }
        });
        match copied {
            Ok(()) => states[i].durable = leader_seq,
            Err(e) if spec.role == Role::Required => return Err(e),
            Err(e) => {
                tracing::error!(sink = spec.sink.name(), error = %e, "backfill failed; optional sink stays out of the log until it rejoins or the log restarts");
                states[i].failed = Some(format!("backfill failed: {e}"));
            }
        }
    }
    Ok(Start {
        head: leader_head,
        sink_states: states,
    })
}

async fn record_at(sink: &dyn Sink, seq: u64) -> Result<Record, OpenError> {
    let bad = |detail: String| OpenError::Backfill {
        sink: sink.name().to_string(),
        detail,
    };
    let mut cursor = sink.read_from(seq).await.map_err(OpenError::Sink)?;
    let batch = cursor
        .next_batch(1)
        .await
        .map_err(OpenError::Sink)?
        .unwrap_or_default();
    let item = batch
        .into_iter()
        .next()
        .ok_or_else(|| bad(format!("record {seq} is missing")))?;
    let rec =
        Record::from_text(&item.text).map_err(|e| bad(format!("at {}: {e}", item.location)))?;
    if rec.seq() != seq {
        return Err(bad(format!(
            "expected record {seq} at {}, found {}",
            item.location,
            rec.seq()
        )));
    }
    Ok(rec)
}

/// Copies records `from..` of `source` (up to `to`, if given) into `target`,
/// checking every hash. Returns the last record copied.
pub(crate) async fn backfill(
    source: &dyn Sink,
    target: &dyn Sink,
    from: u64,
    to: Option<u64>,
    max: usize,
) -> Result<Option<u64>, OpenError> {
    let bad = |detail: String| OpenError::Backfill {
        sink: source.name().to_string(),
        detail,
    };
    let mut cursor = source.read_from(from).await.map_err(OpenError::Sink)?;
    let mut reached = None;
    while let Some(items) = cursor.next_batch(max).await.map_err(OpenError::Sink)? {
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            let rec = Record::from_text(&item.text)
                .map_err(|e| bad(format!("at {}: {e}", item.location)))?;
            if to.is_some_and(|to| rec.seq() > to) {
                break;
            }
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
    let from = match head {
        None => 1,
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
            h.seq + 1
        }
    };
    if from > upto {
        return Ok(());
    }
    let reached = backfill(source, target, from, Some(upto), max)
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
