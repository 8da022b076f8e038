//! Start-up: read every head, authenticate every tail against the log's
//! seals, refuse forks, backfill sinks that are behind.
//!
//! Runs once, before the driver exists, and decides where the chain resumes
//! and which sinks join. Authenticating the tails is [`authenticate`]'s, the
//! witness directory's check [`witness`]'s, and copying records between
//! sinks [`super::backfill`]'s.

mod authenticate;
mod witness;

use std::time::Duration;

use super::{OpenError, Role, SinkSpec, WriterConfig};
use crate::checkpoint::PublicKey;
use crate::record::{ChainHead, Record};
use crate::sink::{Sink, SinkError};

/// What start-up learned about one sink.
pub(crate) struct SinkStart {
    pub(super) durable: u64,
    pub(super) failed: Option<String>,
}

pub(super) struct Start {
    pub head: Option<ChainHead>,
    pub sink_states: Vec<SinkStart>,
    /// The log is still signed by the previous key: chain a key rotation.
    pub rotate: bool,
}

pub(super) async fn with_timeout<T>(
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
        let head = with_timeout(spec.sink.as_ref(), spec.timeout, spec.sink.head()).await;
        // A head no real log reaches is not continued: the sequence would
        // run out of its 64 bits. Refused like an unreadable head, so an
        // optional sink holding one drops out instead of leading.
        heads.push(match head {
            Ok(Some(h)) if h.seq > crate::chain::MAX_HEAD_SEQUENCE => Err(SinkError::Backend {
                sink: spec.sink.name().to_string(),
                detail: format!(
                    "its last record has sequence {}, beyond 2^63 that no log reaches: forged or corrupt; refusing to continue from it",
                    h.seq
                ),
            }),
            other => other,
        });
    }
    // With a key, no head is trusted (adopted, copied, signed over) before the
    // records after its last seal are authenticated or cut.
    let mut signers: Vec<Option<PublicKey>> = vec![None; sinks.len()];
    if let Some(cp) = &config.checkpoints {
        signers = authenticate::authenticate_all(config, cp, sinks, &mut heads).await?;
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
    // Rotate only while the log is still signed by the key being retired: a
    // restart after the rotation finds the new key's seals and rotates nothing.
    let rotate = config
        .checkpoints
        .as_ref()
        .and_then(|cp| cp.previous_key.as_ref())
        .is_some_and(|old| signers[leader].as_ref() == Some(&old.public()));
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
        let after = heads[i].as_ref().ok().copied().flatten();
        let copied = super::backfill::backfill(
            leader_sink,
            spec.sink.as_ref(),
            after,
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
        rotate,
    })
}

pub(super) async fn record_at(sink: &dyn Sink, seq: u64) -> Result<Record, OpenError> {
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
