//! The start-up check against the witness directory: the newest witnessed
//! checkpoint must be in the log, as signed.

use super::super::{CheckpointConfig, OpenError, SinkSpec};
use super::record_at;
use crate::checkpoint::{verify_checkpoint, PublicKey};
use crate::marker::MarkerFields;
use crate::record::ChainHead;
use crate::sink::SinkError;

/// The newest checkpoint in the witness directory, signed by one of this
/// writer's keys for this log, must be in the log: the most advanced sink
/// must hold the checkpoint record right after the record it signs, and
/// every sink that reaches them must hold the very record it signed and,
/// after it, the checkpoint record holding the very note (as the verifier
/// requires). A cut that keeps the signed record but drops its checkpoint
/// would otherwise be continued, and the next checkpoint would hide it. A log cut back before it (and, say, continued with a leaked
/// retired key), or rewritten, is refused: the witness is the one copy of
/// the log's signed history its storage's attacker cannot write.
pub(super) async fn check_witness(
    cp: &CheckpointConfig,
    own: &[std::sync::Arc<crate::checkpoint::KeyPair>],
    sinks: &[SinkSpec],
    heads: &[Result<Option<ChainHead>, SinkError>],
) -> Result<(), OpenError> {
    let Some(dir) = &cp.witness_dir else {
        return Ok(());
    };
    let names = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let seq = name
                    .strip_prefix("checkpoint-")?
                    .get(..20)?
                    .parse::<u64>()
                    .ok()?;
                Some((seq, e.path()))
            })
            .collect::<Vec<_>>(),
        // No directory yet: nothing witnessed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(OpenError::Config(format!(
                "cannot read the witness directory {}: {e}",
                dir.display()
            )))
        }
    };
    // The newest note signed for this log by this writer's keys: a shared
    // directory holds other logs' notes, and an old key's are the
    // verifier's to check with the whole history. Newest first, so the
    // first that verifies is the one. Every note is tried if need be (the
    // time follows the directory's size): a cap on the tries let another
    // log's notes, filling it, switch the check off.
    let keys: Vec<PublicKey> = own.iter().map(|k| k.public()).collect();
    let mut names = names;
    names.sort_by_key(|n| std::cmp::Reverse(n.0));
    let found = names.iter().find_map(|(_, path)| {
        let meta = std::fs::symlink_metadata(path).ok()?;
        if !meta.is_file() || meta.len() > 64 * 1024 {
            return None;
        }
        let note = std::fs::read_to_string(path).ok()?;
        match verify_checkpoint(&note, &keys) {
            Ok((c, _)) if c.log_id == cp.log_id => Some((path.clone(), c, note)),
            _ => None,
        }
    });
    let Some((path, witnessed, note)) = found else {
        return Ok(());
    };
    let reach = heads
        .iter()
        .filter_map(|h| h.as_ref().ok().copied().flatten())
        .map(|h| h.seq)
        .max()
        .unwrap_or(0);
    let holder = witnessed.seq.saturating_add(1);
    if reach < holder {
        return Err(OpenError::Config(format!(
            "the witness {} holds a checkpoint of record {} (in record {holder}), but the longest sink ends at record {reach}: the log was cut or replaced; refusing to continue it",
            path.display(),
            witnessed.seq
        )));
    }
    for (spec, head) in sinks.iter().zip(heads) {
        let Ok(Some(h)) = head else { continue };
        if h.seq < witnessed.seq {
            continue;
        }
        let rec = record_at(spec.sink.as_ref(), witnessed.seq).await?;
        if rec.hash() != witnessed.head {
            return Err(OpenError::Backfill {
                sink: spec.sink.name().to_string(),
                detail: format!(
                    "record {} is not the one the witness {} signed: the log was rewritten; refusing to continue it",
                    witnessed.seq,
                    path.display()
                ),
            });
        }
        if h.seq < holder {
            continue;
        }
        let rec = record_at(spec.sink.as_ref(), holder).await?;
        let held = MarkerFields::parse("checkpoint", rec.text())
            .ok()
            .flatten()
            .and_then(|(_, f)| f.note)
            .filter(|_| rec.text().starts_with(b"{\"record_type\":\"checkpoint\""));
        if held.as_deref() != Some(note.as_str()) {
            return Err(OpenError::Backfill {
                sink: spec.sink.name().to_string(),
                detail: format!(
                    "record {holder} is not the checkpoint record holding the note the witness {} holds: the log was cut or rewritten; refusing to continue it",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}
