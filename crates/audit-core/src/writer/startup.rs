//! Start-up: read every head, authenticate every tail against the log's
//! seals, refuse forks, backfill sinks that are behind.

use std::time::Duration;

use super::{CheckpointConfig, OpenError, Role, SinkSpec, SinkStart, WriterConfig};
use crate::checkpoint::{verify_checkpoint, verify_rotation, verify_seal, PublicKey, Seal};
use crate::record::{ChainHead, PrevHash, Record};
use crate::seal_mac::{decode_mac, SealMacKey};
use crate::sink::{RecordBatch, Sink, SinkError};

pub(super) struct Start {
    pub head: Option<ChainHead>,
    pub sink_states: Vec<SinkStart>,
    /// The log is still signed by the previous key: chain a key rotation.
    pub rotate: bool,
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
        signers = authenticate_all(config, cp, sinks, &mut heads).await?;
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
        let copied = backfill(
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

/// What the scan of one sink's chain found.
struct Scanned {
    /// The sink's head when it was read.
    head: ChainHead,
    /// The last record that is a valid seal of this log, and its signer.
    last_seal: Option<(ChainHead, PublicKey)>,
    /// The first `seal` record after `last_seal` that is not valid.
    bad_seal_after: Option<u64>,
    /// Some `seal` record is stored at all.
    any_seal: bool,
    /// In a log without seals, who signed the last valid checkpoint (or the
    /// key the last valid rotation announced): the key it is signed by.
    /// With seals, the last seal's signer says that.
    unsealed_signer: Option<PublicKey>,
    /// The key seals are made with at this point of the scan: the signer of
    /// the last valid signed seal or checkpoint, or the key the last valid
    /// rotation announced. A MAC seal counts only by this key's MAC keys,
    /// so a retired key cannot seal records after its rotation.
    signer: Option<PublicKey>,
    /// A MAC seal came before any signed record of the scan: it could not
    /// be checked, and the scan must start earlier.
    unbound_mac: bool,
    /// The last valid checkpoint record: a log from before seals that ends
    /// with one (a clean close writes it) is signed through its head.
    checkpointed: Option<ChainHead>,
}

/// Authenticates every available sink's tail (docs/FORMAT.md section 9): the
/// records after a sink's last valid seal must be covered by another sink's
/// seal, or be cut; a sink that cannot cut them refuses start-up. Updates
/// `heads` after cuts and returns, per sink, the key its log is signed by.
async fn authenticate_all(
    config: &WriterConfig,
    cp: &CheckpointConfig,
    sinks: &[SinkSpec],
    heads: &mut [Result<Option<ChainHead>, SinkError>],
) -> Result<Vec<Option<PublicKey>>, OpenError> {
    let mut own = vec![cp.key.clone()];
    own.extend(cp.previous_key.clone());
    let keys = Trusted {
        public: own.iter().map(|k| k.public()).collect(),
        macs: own
            .iter()
            .map(|k| (k.seal_mac_key(), k.writer_mac_key(), k.public()))
            .collect(),
    };
    let max_stretch = config.max_stretch(sinks.len());
    let mut scans: Vec<Option<Scanned>> = Vec::with_capacity(sinks.len());
    for (spec, head) in sinks.iter().zip(heads.iter_mut()) {
        let Ok(Some(h)) = *head else {
            scans.push(None);
            continue;
        };
        let sink = spec.sink.as_ref();
        // No timeout, as for the backfill: a log from before seals is read
        // whole once, and that may take longer than one batch may.
        match scan(sink, h, &keys, &cp.log_id, cp.signed_stretch(max_stretch)).await {
            Ok(found) => scans.push(Some(found)),
            Err(e) if spec.role == Role::Required => return Err(e),
            Err(e) => {
                // As if it had not answered: it stays out until it rejoins.
                *head = Err(SinkError::Backend {
                    sink: sink.name().to_string(),
                    detail: format!("cannot authenticate its records: {e}"),
                });
                scans.push(None);
            }
        }
    }
    let mut signers = vec![None; sinks.len()];
    for i in 0..sinks.len() {
        let Some(found) = &scans[i] else { continue };
        signers[i] = match &found.last_seal {
            Some((_, key)) => Some(key.clone()),
            None => found.unsealed_signer.clone(),
        };
        let head = found.head;
        let sealed = found.last_seal.as_ref().map(|(h, _)| *h);
        if sealed.is_some_and(|s| s.seq == head.seq) {
            continue;
        }
        let from = sealed.map_or(1, |s| s.seq + 1);
        // Another sink's seal covers this head if that sink's sealed chain
        // holds the very same record: catch-up and backfill copy records in
        // chunks that need not end at a seal.
        let mut covered = false;
        for (j, other) in scans.iter().enumerate() {
            let Some((their_seal, _)) = other.as_ref().and_then(|o| o.last_seal.as_ref()) else {
                continue;
            };
            if j == i || their_seal.seq < head.seq {
                continue;
            }
            if record_at(sinks[j].sink.as_ref(), head.seq)
                .await
                .is_ok_and(|r| r.head() == head)
            {
                covered = true;
                break;
            }
        }
        if covered {
            continue;
        }
        let sink = sinks[i].sink.as_ref();
        let unsealed = |detail: Option<String>| OpenError::Unsealed {
            sink: sink.name().to_string(),
            from,
            to: head.seq,
            detail,
        };
        if sealed.is_none() && !found.any_seal {
            // A log from before seals that ends with a valid checkpoint of
            // this log (as a clean close leaves it) is signed through its
            // head: adopted.
            // Only by the current key: a leaked retired key could sign a
            // checkpoint over a whole forged log.
            if found.checkpointed == Some(head)
                && found.unsealed_signer.as_ref() == Some(&cp.key.public())
            {
                continue;
            }
            // A log written without a key, or records after the last
            // checkpoint of a log from before seals: nothing to tell them
            // from a forgery. Adopted only when the operator says so.
            if !cp.adopt_unsealed {
                let why = match found.checkpointed {
                    Some(c) if c == head => "the sink holds no seal, and its last checkpoint is signed by the previous key, which may have leaked; if this log was written by a release before seals, start once with adopt_unsealed = true in [log.checkpoints]".to_string(),
                    Some(c) => format!("the sink holds no seal, and records {}..{} come after its last valid checkpoint, so they cannot be told from a forgery; if this log was written by a release before seals, start once with adopt_unsealed = true in [log.checkpoints]", c.seq + 1, head.seq),
                    None => "the sink holds no seal and no valid checkpoint, so its records cannot be told from a forgery; if this log was written without a key, start once with adopt_unsealed = true in [log.checkpoints]".into(),
                };
                return Err(unsealed(Some(why)));
            }
            tracing::warn!(
                sink = sink.name(),
                head = head.seq,
                "sink holds no seal at all; adopting its records unauthenticated (adopt_unsealed)"
            );
            continue;
        }
        if let Some(bad) = found.bad_seal_after {
            // A crash leaves entries without their seal, never a seal that
            // does not verify: this was written by someone else.
            return Err(unsealed(Some(format!(
                "record {bad} is a seal that does not verify with this log's keys"
            ))));
        }
        let Some(sealed) = sealed else {
            return Err(unsealed(Some("no seal in the log verifies".into())));
        };
        if !sink.capabilities().cut_tail {
            return Err(unsealed(Some(
                "the sink cannot cut them; remove them by hand after inspecting them".into(),
            )));
        }
        tracing::warn!(
            sink = sink.name(),
            from,
            to = head.seq,
            "records after the last seal were never acknowledged; cutting them"
        );
        sink.cut_after(sealed.seq)
            .await
            .map_err(|e| unsealed(Some(format!("cutting them failed: {e}"))))?;
        let now = with_timeout(sink, sinks[i].timeout, sink.head())
            .await
            .map_err(OpenError::Sink)?;
        if now != Some(sealed) {
            return Err(unsealed(Some(format!(
                "after cutting, its head is {:?}, not record {}",
                now.map(|h| h.seq),
                sealed.seq
            ))));
        }
        heads[i] = Ok(now);
    }
    check_witness(cp, &own, sinks, heads).await?;
    Ok(signers)
}

/// The writer's own keys, current and previous, and the MAC keys of each.
struct Trusted {
    public: Vec<PublicKey>,
    /// Per key: the auditors' MAC key, the writer's own, and the key.
    macs: Vec<(SealMacKey, SealMacKey, PublicKey)>,
}

/// The newest checkpoint in the witness directory, signed by one of this
/// writer's keys for this log, must be in the log: the most advanced sink
/// must reach it, and every sink that reaches it must hold the very record
/// it signed. A log cut back before it (and, say, continued with a leaked
/// retired key), or rewritten, is refused: the witness is the one copy of
/// the log's signed history its storage's attacker cannot write.
async fn check_witness(
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
    // first that verifies is the one; a bounded number of tries.
    let keys: Vec<PublicKey> = own.iter().map(|k| k.public()).collect();
    let mut names = names;
    names.sort_by_key(|n| std::cmp::Reverse(n.0));
    let found = names.iter().take(4096).find_map(|(_, path)| {
        let meta = std::fs::symlink_metadata(path).ok()?;
        if !meta.is_file() || meta.len() > 64 * 1024 {
            return None;
        }
        let note = std::fs::read_to_string(path).ok()?;
        match verify_checkpoint(&note, &keys) {
            Ok((c, _)) if c.log_id == cp.log_id => Some((path.clone(), c)),
            _ => None,
        }
    });
    let Some((path, witnessed)) = found else {
        return Ok(());
    };
    let reach = heads
        .iter()
        .filter_map(|h| h.as_ref().ok().copied().flatten())
        .map(|h| h.seq)
        .max()
        .unwrap_or(0);
    if reach < witnessed.seq {
        return Err(OpenError::Config(format!(
            "the witness {} holds a checkpoint of record {}, but the longest sink ends at record {reach}: the log was cut or replaced; refusing to continue it",
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
    }
    Ok(())
}

/// Reads the end of a sink's chain and finds its last valid seal. Signed
/// seals come at least every `max_stretch` records (the signed stretch), so
/// the last `max_stretch + 2` records hold one (and the record it signs),
/// which binds the MAC seals after it to their key, unless the tail is
/// longer than a writer with this configuration leaves; then, and for a log
/// without seals, the whole chain is read.
async fn scan(
    sink: &dyn Sink,
    head: ChainHead,
    keys: &Trusted,
    log_id: &str,
    max_stretch: u64,
) -> Result<Scanned, OpenError> {
    let window = head.seq.saturating_sub(max_stretch + 1).max(1);
    let mut found = scan_from(sink, head, window, keys, log_id).await?;
    // Sealed by a retired key: was it retired before? Only a scan from the
    // start can tell (a leaked old key must not seal records after its
    // rotation); the writer's first start after a rotation pays for it.
    let by_retired = found
        .last_seal
        .as_ref()
        .is_some_and(|(_, k)| keys.public.first() != Some(k));
    if (found.last_seal.is_none() || found.unbound_mac || by_retired) && window > 1 {
        found = scan_from(sink, head, 1, keys, log_id).await?;
    }
    Ok(found)
}

async fn scan_from(
    sink: &dyn Sink,
    head: ChainHead,
    from: u64,
    keys: &Trusted,
    log_id: &str,
) -> Result<Scanned, OpenError> {
    let bad = |detail: String| OpenError::Backfill {
        sink: sink.name().to_string(),
        detail,
    };
    let mut found = Scanned {
        head,
        last_seal: None,
        bad_seal_after: None,
        any_seal: false,
        unsealed_signer: None,
        signer: None,
        unbound_mac: false,
        checkpointed: None,
    };
    let mut prev: Option<Record> = None;
    let mut cursor = sink.read_from(from).await.map_err(OpenError::Sink)?;
    'read: while let Some(items) = cursor.next_batch(4096).await.map_err(OpenError::Sink)? {
        for item in items {
            // Hash-checked: the hashes the seals sign are the recomputed ones.
            let rec = Record::from_text(&item.text)
                .map_err(|e| bad(format!("at {}: {e}", item.location)))?;
            let expected = prev.as_ref().map_or(from, |p| p.seq() + 1);
            if rec.seq() != expected
                || prev
                    .as_ref()
                    .is_some_and(|p| rec.prev() != PrevHash::Hash(p.hash()))
            {
                return Err(bad(format!(
                    "at {}: record {} does not continue record {}",
                    item.location,
                    rec.seq(),
                    expected - 1
                )));
            }
            if let Some(p) = &prev {
                note_signature(&mut found, p, &rec, keys, log_id);
            } else if rec.text().starts_with(SEAL_PREFIX) {
                found.any_seal = true;
            }
            let at_head = rec.seq() >= head.seq;
            prev = Some(rec);
            if at_head {
                break 'read;
            }
        }
    }
    match prev {
        Some(p) if p.head() == head => Ok(found),
        other => Err(bad(format!(
            "its head is record {}, but reading it back ended at {:?}",
            head.seq,
            other.map(|p| p.seq())
        ))),
    }
}

const SEAL_PREFIX: &[u8] = b"{\"record_type\":\"seal\"";

/// Updates `found` with `rec`, whose predecessor is `prev`, if it is a seal,
/// a checkpoint or a key rotation.
fn note_signature(
    found: &mut Scanned,
    prev: &Record,
    rec: &Record,
    trusted: &Trusted,
    log_id: &str,
) {
    let keys = &trusted.public[..];
    let text = rec.text();
    let is_seal = text.starts_with(SEAL_PREFIX);
    let is_checkpoint = text.starts_with(b"{\"record_type\":\"checkpoint\"");
    let is_rotation = text.starts_with(b"{\"record_type\":\"key_rotation\"");
    if !(is_seal || is_checkpoint || is_rotation) {
        return;
    }
    let record_type = if is_seal {
        "seal"
    } else if is_checkpoint {
        "checkpoint"
    } else {
        "key_rotation"
    };
    // A marker with a member too many (or one missing, or of another type)
    // is nobody's signature: its extra members would ride along unsigned.
    let fields = crate::marker::MarkerFields::parse(record_type, text)
        .ok()
        .flatten()
        .map(|(_, f)| f);
    let note = fields.as_ref().and_then(|f| f.note.as_deref());
    // What the record must sign: the record right before it.
    let signs_prev =
        |seq: u64, hash| seq == prev.seq() && hash == prev.hash() && rec.seq() == prev.seq() + 1;
    if is_seal {
        found.any_seal = true;
        let signed = note
            .and_then(|n| verify_seal(n, keys).ok())
            .filter(|(seal, key)| {
                seal.log_id == log_id
                    && fields.as_ref().and_then(|f| f.sealed_seq) == Some(seal.seq)
                    && signs_prev(seal.seq, seal.head)
                    && found.signer.as_ref().is_none_or(|s| s == key)
            });
        // A MAC seal: both MACs of the seal of the record before it, by the
        // MAC keys of the key seals are made with here (see `signer`). The
        // writer's own MAC is what makes it one of ours: the auditors' MAC
        // key, which others may hold, cannot make it.
        let mac = |found: &mut Scanned| {
            let f = fields.as_ref()?;
            if f.note.is_some() || f.sealed_seq != Some(prev.seq()) {
                return None;
            }
            let Some(signer) = found.signer.clone() else {
                found.unbound_mac = true;
                return None;
            };
            let mac = decode_mac(f.mac.as_deref()?)?;
            let writer_mac = decode_mac(f.writer_mac.as_deref()?)?;
            let seal = Seal {
                log_id: log_id.to_string(),
                seq: prev.seq(),
                head: prev.hash(),
                max_stretch: f.stretch?,
            };
            trusted
                .macs
                .iter()
                .find(|(a, w, public)| {
                    *public == signer && w.verifies(&seal, &writer_mac) && a.verifies(&seal, &mac)
                })
                .map(|(_, _, public)| (seal, public.clone()))
        };
        if let Some((_, key)) = &signed {
            found.signer = Some(key.clone());
        }
        let valid = signed.or_else(|| mac(found));
        match valid {
            Some((_, key)) => {
                found.last_seal = Some((rec.head(), key));
                found.bad_seal_after = None;
            }
            None => {
                found.bad_seal_after.get_or_insert(rec.seq());
            }
        }
    } else if is_checkpoint {
        if let Some((c, key)) = note.and_then(|n| verify_checkpoint(n, keys).ok()) {
            let members_agree = fields.as_ref().is_some_and(|f| {
                f.checkpoint_seq == Some(c.seq)
                    && f.log_id.as_deref() == Some(log_id)
                    && f.head_hash == Some(c.head.to_hex())
                    && f.key_id == Some(key.id_hex())
            });
            let by_signer = found.signer.as_ref().is_none_or(|s| *s == key);
            if c.log_id == log_id && members_agree && by_signer && signs_prev(c.seq, c.head) {
                found.signer = Some(key.clone());
                found.unsealed_signer = Some(key);
                found.checkpointed = Some(rec.head());
            }
        }
    } else if let Some((new, _)) = note.and_then(|n| verify_rotation(n, keys).ok()) {
        // From a rotation on, the key it announces is the log's. It must be
        // signed by the key sealing the log here and lead to another key:
        // a leaked retired key must not "rotate" to itself to seal again.
        let members_agree = fields.as_ref().is_some_and(|f| {
            f.new_key == Some(new.to_vkey()) && f.log_id.as_deref() == Some(log_id)
        });
        let by_signer = match &found.signer {
            Some(s) => {
                *s != new
                    && note.is_some_and(|n| verify_rotation(n, std::slice::from_ref(s)).is_ok())
            }
            None => true,
        };
        if keys.contains(&new) && members_agree && by_signer {
            found.signer = Some(new.clone());
            found.unsealed_signer = Some(new);
        }
    }
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
