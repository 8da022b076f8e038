//! Authenticating the sinks' tails at start-up (docs/FORMAT.md section 9):
//! the records after a sink's last valid seal are covered by another sink's
//! seal, cut, or refused; never adopted, backfilled or signed over.

use super::super::{CheckpointConfig, OpenError, Role, SinkSpec, WriterConfig};
use super::witness::check_witness;
use super::{record_at, with_timeout};
use crate::checkpoint::{verify_checkpoint, verify_rotation, verify_seal, PublicKey, Seal};
use crate::record::{ChainHead, PrevHash, Record};
use crate::seal_mac::{decode_mac, SealMacKey};
use crate::sink::{Sink, SinkError};

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
pub(super) async fn authenticate_all(
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
