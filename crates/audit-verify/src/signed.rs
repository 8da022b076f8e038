//! What the signatures in one log prove: the trusted key history, coverage of
//! the records by seals and checkpoints, the log's identity, freshness, and
//! the witness. Fed by the classifier, one signed record at a time.

use std::collections::BTreeMap;

use audit_core::checkpoint::{
    verify_checkpoint, verify_rotation, verify_seal, NoteError, PublicKey, Seal,
};
use audit_core::seal_mac::{decode_mac, SealMacKey};
use audit_core::{Hash32, Location};

use crate::finding::{CheckpointAge, Finding, FindingClass, Findings, Severity};
use crate::witness::WitnessNote;

/// What a checkpoint, seal or key-rotation record claims, read in the parallel stage.
pub(crate) struct Special {
    pub record_type: SpecialType,
    pub checkpoint_seq: Option<u64>,
    pub sealed_seq: Option<u64>,
    pub head_hash: Option<String>,
    pub new_key: Option<String>,
    /// The `log_id` member of a checkpoint or rotation record.
    pub log_id: Option<String>,
    /// The `key_id` member of a checkpoint record.
    pub key_id: Option<String>,
    pub note: Option<String>,
    /// A MAC seal's `stretch` member.
    pub stretch: Option<u64>,
    /// A MAC seal's `mac` member.
    pub mac: Option<String>,
    /// A MAC seal's `writer_mac` member (only the writer can check it).
    pub writer_mac: Option<String>,
    /// Why the record has none of its type's shapes (docs/FORMAT.md
    /// section 9): its members are then all `None`.
    pub shape_error: Option<String>,
}

/// The signed record types.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpecialType {
    Checkpoint,
    Seal,
    KeyRotation,
}

impl SpecialType {
    pub fn from_record_type(t: &str) -> Option<Self> {
        match t {
            "checkpoint" => Some(Self::Checkpoint),
            "seal" => Some(Self::Seal),
            "key_rotation" => Some(Self::KeyRotation),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Checkpoint => "checkpoint",
            Self::Seal => "seal",
            Self::KeyRotation => "key rotation",
        }
    }
}

/// What the auditor brings: the key history and the expectations.
pub(crate) struct Expect {
    /// Trusted keys, oldest first (a key history when there are several).
    pub keys: Vec<PublicKey>,
    /// MAC keys, which check the MAC seals.
    pub mac_keys: Vec<SealMacKey>,
    /// The writer's own MAC keys, when the auditor holds the private keys.
    pub writer_mac_keys: Vec<SealMacKey>,
    /// The log's identity, when the auditor knows it.
    pub log_id: Option<String>,
    /// The newest checkpoint must be younger than this many seconds.
    pub max_age_secs: Option<u64>,
    /// The witness's notes, not yet signature-checked.
    pub witness: Vec<WitnessNote>,
    /// The verifier's clock, Unix seconds.
    pub now: i64,
    /// `--strict`: an unsigned tail is an error, however short.
    pub strict: bool,
}

/// Signatures by a key the auditor does not hold, waiting for a trusted
/// rotation note that names it.
struct Deferred {
    count: u64,
    first_seq: u64,
    location: String,
}

/// The most records after the last valid signature of a log with no valid
/// seal that are only a warning: the stretch the writer states with its
/// default batch limit (8,192 records, plus markers for up to 8 sinks).
/// Checkpoint-only logs (written before seals) checkpoint far more often.
pub(crate) const UNSEALED_TAIL_BOUND: u64 = 8_210;

/// The signature state of one log.
pub(crate) struct Signed {
    history: Vec<PublicKey>,
    mac_keys: Vec<SealMacKey>,
    writer_mac_keys: Vec<SealMacKey>,
    /// The last MAC seal that could not be checked (no MAC key given).
    unchecked_mac: Option<u64>,
    current: Vec<PublicKey>,
    retired: Vec<PublicKey>,
    log_id: Option<String>,
    log_id_given: bool,
    /// The last sequence a valid signature covers.
    covered: u64,
    any_valid: bool,
    /// The bound stated by the last valid seal: most records between two seals.
    stretch: Option<u64>,
    /// The sequence of the last valid seal.
    last_seal: Option<u64>,
    /// The keys rotations led to so far.
    rotated_to: Vec<PublicKey>,
    newest_checkpoint: Option<(u64, i64)>,
    /// The key of the last valid signature.
    last_key: Option<PublicKey>,
    /// The key seals are made with here: the last valid signature's, or
    /// the one the last valid rotation announced. A MAC seal is checked
    /// with this key's MAC key only, so a retired key's MAC key cannot seal
    /// records after its rotation.
    sealing_key: Option<PublicKey>,
    deferred: BTreeMap<(String, String), Deferred>,
    /// The signers of rotations by keys the auditor does not hold.
    deferred_rotations: Vec<Vec<(String, String)>>,
    /// Keys (name, ID) a trusted rotation vouches for, whose public halves
    /// the auditor may not hold: a witness note signed by one is not an
    /// error, but it cannot be checked and counts for nothing.
    vouched: std::collections::BTreeSet<(String, String)>,
    max_age_secs: Option<u64>,
    now: i64,
    strict: bool,
    witness: Vec<WitnessNote>,
    /// Per witness note: the hash seen at its sequence, and whether record
    /// seq + 1 holds the very note.
    witness_seen: Vec<(Option<Hash32>, bool)>,
}

fn find(findings: &mut Findings, class: FindingClass, seq: u64, loc: &str, detail: String) {
    findings.push(Finding {
        class,
        severity: Severity::Error,
        seq: Some(seq),
        location: loc.to_string(),
        detail,
    });
}

/// The (name, key ID) of every signature line of a note, unverified.
fn signers(note: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let Some(at) = note.rfind("\n\n") else {
        return Vec::new();
    };
    note[at + 2..]
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("\u{2014} ")?;
            let (name, sig) = rest.split_once(' ')?;
            let raw = base64::engine::general_purpose::STANDARD.decode(sig).ok()?;
            let id: String = raw.get(..4)?.iter().map(|b| format!("{b:02x}")).collect();
            Some((name.to_string(), id))
        })
        .collect()
}

/// The origin line of a note, unverified.
fn origin(note: &str) -> &str {
    note.split('\n').next().unwrap_or("")
}

impl Signed {
    pub fn new(expect: Expect) -> Self {
        let n = expect.witness.len();
        Self {
            current: expect.keys.clone(),
            history: expect.keys,
            mac_keys: expect.mac_keys,
            writer_mac_keys: expect.writer_mac_keys,
            unchecked_mac: None,
            retired: Vec::new(),
            log_id_given: expect.log_id.is_some(),
            log_id: expect.log_id,
            covered: 0,
            any_valid: false,
            stretch: None,
            last_seal: None,
            rotated_to: Vec::new(),
            newest_checkpoint: None,
            last_key: None,
            sealing_key: None,
            deferred: BTreeMap::new(),
            deferred_rotations: Vec::new(),
            vouched: std::collections::BTreeSet::new(),
            max_age_secs: expect.max_age_secs,
            now: expect.now,
            strict: expect.strict,
            witness: expect.witness,
            witness_seen: vec![(None, false); n],
        }
    }

    /// Called for every record, so the witness check sees the records it names.
    pub fn saw(&mut self, seq: u64, hash: Hash32, special: Option<&Special>) {
        for (w, seen) in self.witness.iter().zip(self.witness_seen.iter_mut()) {
            if w.seq == seq && seen.0.is_none() {
                seen.0 = Some(hash);
            }
            if w.seq.checked_add(1) == Some(seq)
                && special.is_some_and(|s| {
                    s.record_type == SpecialType::Checkpoint && s.note.as_deref() == Some(&w.note)
                })
            {
                seen.1 = true;
            }
        }
    }

    /// Checks the note's origin against the log's identity.
    fn identity(&mut self, findings: &mut Findings, s: u64, loc: &str, what: &str, id: &str) {
        match &self.log_id {
            None => self.log_id = Some(id.to_string()),
            Some(expected) if expected != id => {
                let why = if self.log_id_given {
                    "the log id given"
                } else {
                    "the log id of the log's first signed record"
                };
                find(
                    findings,
                    FindingClass::WrongLog,
                    s,
                    loc,
                    format!("{what} is signed for log {id:?}, not {expected:?} ({why})"),
                );
            }
            Some(_) => {}
        }
    }

    fn describe(&self, e: &NoteError) -> String {
        match e {
            NoteError::UnknownKey { name, id }
                if self
                    .retired
                    .iter()
                    .any(|k| k.name() == name && &k.id_hex() == id) =>
            {
                format!("signed by key {name}+{id}, which was no longer current (it had been rotated out)")
            }
            other => other.to_string(),
        }
    }

    /// A valid signature covers the log through `through`.
    fn cover(&mut self, through: u64, key: PublicKey) {
        self.covered = self.covered.max(through);
        self.any_valid = true;
        self.sealing_key = Some(key.clone());
        self.last_key = Some(key);
    }

    /// A valid seal at `s`: the stretch since the previous valid seal must
    /// be within the bound this seal states (the writer seals every batch,
    /// so a longer one lost seals). Checked from the first valid seal on,
    /// since a log may have been written without seals before it.
    fn sealed(&mut self, findings: &mut Findings, s: u64, loc: &str, bound: u64) {
        if let Some(prev) = self.last_seal {
            let between = s.saturating_sub(prev).saturating_sub(1);
            if between > bound {
                find(
                    findings,
                    FindingClass::Unsigned,
                    prev.saturating_add(1),
                    loc,
                    format!(
                        "records {}..{} ({between}) lie between two seals, but the writer seals at least every {bound} records: seals were removed",
                        prev.saturating_add(1),
                        s - 1
                    ),
                );
            }
        }
        self.last_seal = Some(self.last_seal.map_or(s, |p| p.max(s)));
        self.stretch = Some(bound);
    }

    /// Checks one signed record at sequence `s`. `seen` tells whether the
    /// log holds record `seq` with hash `h` (None: too far back to know).
    pub fn check(
        &mut self,
        findings: &mut Findings,
        s: u64,
        special: &Special,
        loc: &Location,
        prev: Option<Hash32>,
        seen: &dyn Fn(u64, Hash32) -> Option<bool>,
    ) {
        let loc = loc.to_string();
        let what = special.record_type.name();
        if let Some(e) = &special.shape_error {
            find(findings, FindingClass::Malformed, s, &loc, e.clone());
            return;
        }
        if special.record_type == SpecialType::Seal && special.note.is_none() {
            if let Some(mac) = special.mac.as_deref() {
                self.mac_seal(findings, s, special, mac, &loc, prev, seen);
                return;
            }
        }
        let Some(note) = special.note.as_deref() else {
            find(
                findings,
                FindingClass::Malformed,
                s,
                &loc,
                format!("{what} record without a note"),
            );
            return;
        };
        let keys: Vec<PublicKey> = self.current.clone();
        let result = match special.record_type {
            SpecialType::KeyRotation => verify_rotation(note, &keys).map(|(new, signer)| {
                self.rotated(findings, s, &loc, note, special, new, signer.clone());
                signer
            }),
            SpecialType::Checkpoint => verify_checkpoint(note, &keys).map(|(cp, signer)| {
                // Unsigned members a reader may show must say what the note
                // says: an edit of them is an edit of the log.
                let fields_agree = special.checkpoint_seq == Some(cp.seq)
                    && special.head_hash.as_deref() == Some(cp.head.to_hex().as_str())
                    && special.log_id.as_deref() == Some(cp.log_id.as_str())
                    && special.key_id.as_deref() == Some(signer.id_hex().as_str());
                if !fields_agree {
                    find(
                        findings,
                        FindingClass::Modified,
                        s,
                        &loc,
                        "the checkpoint record's fields disagree with its signed note".into(),
                    );
                }
                self.commits(findings, s, &loc, "checkpoint", cp.seq, cp.head, seen);
                if self.newest_checkpoint.is_none_or(|(q, _)| s > q) {
                    self.newest_checkpoint = Some((s, cp.time));
                }
                self.identity(findings, s, &loc, what, &cp.log_id);
                signer
            }),
            SpecialType::Seal => verify_seal(note, &keys).map(|(seal, signer)| {
                if special.sealed_seq != Some(seal.seq) {
                    find(
                        findings,
                        FindingClass::Modified,
                        s,
                        &loc,
                        "the seal record's sealed_seq disagrees with its signed note".into(),
                    );
                }
                self.commits(findings, s, &loc, "seal", seal.seq, seal.head, seen);
                self.identity(findings, s, &loc, what, &seal.log_id);
                self.sealed(findings, s, &loc, seal.max_stretch);
                signer
            }),
        };
        match result {
            // A rotation note commits to no record: it vouches for a key,
            // not for the records before it, which only a later seal or
            // checkpoint of the chain covers.
            // Nor does it count as the log's last signature for the key
            // history: only a seal or checkpoint shows the log reached a key.
            Ok(_) if special.record_type == SpecialType::KeyRotation => {}
            Ok(signer) => self.cover(s, signer),
            Err(NoteError::UnknownKey { name, id })
                if !self
                    .retired
                    .iter()
                    .any(|k| k.name() == name && k.id_hex() == id) =>
            {
                // Perhaps a key the auditor does not hold but that a later
                // rotation, signed by a key it does hold, names as its
                // predecessor.
                if special.record_type == SpecialType::KeyRotation {
                    self.deferred_rotations.push(signers(note));
                }
                let d = self.deferred.entry((name, id)).or_insert(Deferred {
                    count: 0,
                    first_seq: s,
                    location: loc.clone(),
                });
                d.count += 1;
            }
            Err(e) => {
                let class = if matches!(e, NoteError::Malformed(_)) {
                    FindingClass::Malformed
                } else {
                    FindingClass::BadSignature
                };
                let d = self.describe(&e);
                find(findings, class, s, &loc, format!("{what}: {d}"));
            }
        }
    }

    /// A MAC seal at `s` (docs/FORMAT.md section 9): checked with the MAC
    /// keys when the auditor has them, and then a seal like a signed one
    /// (except that it names no key). Without them it is a record like any
    /// other; only its form is checked, since the writer writes no other.
    #[allow(clippy::too_many_arguments)]
    fn mac_seal(
        &mut self,
        findings: &mut Findings,
        s: u64,
        special: &Special,
        mac: &str,
        loc: &str,
        prev: Option<Hash32>,
        seen: &dyn Fn(u64, Hash32) -> Option<bool>,
    ) {
        let malformed = |findings: &mut Findings, why: &str| {
            find(
                findings,
                FindingClass::Malformed,
                s,
                loc,
                format!("MAC seal: {why}"),
            );
        };
        let writer_mac = special.writer_mac.as_deref().and_then(decode_mac);
        let (Some(sealed_seq), Some(stretch), Some(mac), Some(writer_mac), Some(head)) = (
            special.sealed_seq,
            special.stretch,
            decode_mac(mac),
            writer_mac,
            prev,
        ) else {
            return malformed(
                findings,
                "a MAC seal has `sealed_seq`, `stretch` and base64 32-byte `mac` and `writer_mac`, and follows a record",
            );
        };
        if sealed_seq.checked_add(1) != Some(s) {
            return malformed(findings, "`sealed_seq` is not the record before it");
        }
        // Checked with the MAC key of the key seals are made with here; with
        // no such key known yet (no valid signature before it), or its MAC
        // key not given, it is unchecked and covers nothing.
        let (Some(log_id), Some(key)) = (
            self.log_id.clone(),
            self.sealing_key
                .as_ref()
                .and_then(|public| self.mac_keys.iter().find(|k| k.belongs_to(public))),
        ) else {
            self.unchecked_mac = Some(s);
            return;
        };
        let seal = Seal {
            log_id,
            seq: sealed_seq,
            head,
            max_stretch: stretch,
        };
        let writer_key = self
            .writer_mac_keys
            .iter()
            .find(|k| k.name() == key.name() && k.id_hex() == key.id_hex());
        if writer_key.is_some_and(|w| !w.verifies(&seal, &writer_mac)) {
            return find(
                findings,
                FindingClass::BadSignature,
                s,
                loc,
                format!(
                    "the seal's writer_mac does not verify with the writer's MAC key of {}+{}: not made by the writer (a holder of the auditors' MAC key can make `mac`, not this)",
                    key.name(),
                    key.id_hex()
                ),
            );
        }
        if !key.verifies(&seal, &mac) {
            return find(
                findings,
                FindingClass::BadSignature,
                s,
                loc,
                format!(
                    "the seal's MAC does not verify with the MAC key of {}+{}, the key sealing the log here",
                    key.name(),
                    key.id_hex()
                ),
            );
        }
        self.commits(findings, s, loc, "MAC seal", sealed_seq, head, seen);
        self.sealed(findings, s, loc, stretch);
        // Covered, but it names no key: the key history is told by signed
        // records only, and a log needs one of those to be signed at all.
        self.covered = self.covered.max(s);
    }

    /// A signed note at `s` commits to record `seq` with hash `head`.
    #[allow(clippy::too_many_arguments)]
    fn commits(
        &mut self,
        findings: &mut Findings,
        s: u64,
        loc: &str,
        what: &str,
        seq: u64,
        head: Hash32,
        seen: &dyn Fn(u64, Hash32) -> Option<bool>,
    ) {
        if seq.checked_add(1) != Some(s) {
            find(
                findings,
                FindingClass::Modified,
                s,
                loc,
                format!("the signed {what} commits to record {seq}, not to the record before it"),
            );
        }
        if seen(seq, head) != Some(true) {
            find(findings, FindingClass::Modified, seq, loc,
                format!("the chain disagrees with the signed {what} of record {seq}: the log up to it was rewritten and its hashes recomputed"));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rotated(
        &mut self,
        findings: &mut Findings,
        s: u64,
        loc: &str,
        note: &str,
        special: &Special,
        new: PublicKey,
        signer: PublicKey,
    ) {
        self.identity(findings, s, loc, "key rotation", origin(note));
        // The writer rotates to a key once: a second rotation to it is a
        // genuine note copied to move the history's end.
        if self.rotated_to.contains(&new) {
            find(
                findings,
                FindingClass::BadSignature,
                s,
                loc,
                format!(
                    "key rotation to {}+{} again: a rotation is written once, so this is a copy",
                    new.name(),
                    new.id_hex()
                ),
            );
            return;
        }
        self.rotated_to.push(new.clone());
        if special.new_key.as_deref() != Some(new.to_vkey().as_str())
            || special.log_id.as_deref() != Some(origin(note))
        {
            find(
                findings,
                FindingClass::Modified,
                s,
                loc,
                "the key rotation record's new_key or log_id disagrees with its signed note".into(),
            );
        }
        // The new key cosigns its rotation: where it did, its line must
        // verify too (the retired key's line alone may be what was trusted).
        let new_id = (new.name().to_string(), new.id_hex());
        if signer != new && signers(note).contains(&new_id) {
            if let Err(e) = audit_core::checkpoint::verify_note(note, std::slice::from_ref(&new)) {
                find(
                    findings,
                    FindingClass::BadSignature,
                    s,
                    loc,
                    format!("key rotation: the new key's cosignature does not verify: {e}"),
                );
            }
        }
        // With a key history, a rotation signed by a key of it must lead to
        // the next one. (One verified only by its new key's cosignature
        // started from a key the auditor does not hold.)
        let position = (signer != new)
            .then(|| self.history.iter().position(|k| k == &signer))
            .flatten();
        if let Some(pos) = position {
            if let Some(next) = self.history.get(pos + 1) {
                if next != &new {
                    find(findings, FindingClass::BadSignature, s, loc,
                        format!("key rotation from {}+{} leads to {}+{}, but the key history given continues with {}+{}", signer.name(), signer.id_hex(), new.name(), new.id_hex(), next.name(), next.id_hex()));
                }
            }
        }
        // Signatures by the old key that came before, unknown to the auditor,
        // are vouched for by this rotation when it names their key; and so,
        // in turn, are the keys of earlier rotations that key cosigned.
        let mut vouched: Vec<(String, String)> = signers(note);
        loop {
            let before = vouched.len();
            for group in &self.deferred_rotations {
                if group.iter().any(|k| vouched.contains(k)) {
                    for k in group {
                        if !vouched.contains(k) {
                            vouched.push(k.clone());
                        }
                    }
                }
            }
            if vouched.len() == before {
                break;
            }
        }
        self.deferred_rotations
            .retain(|g| !g.iter().any(|k| vouched.contains(k)));
        for k in vouched {
            self.deferred.remove(&k);
            self.vouched.insert(k);
        }
        self.retired.push(signer.clone());
        self.retired.retain(|k| k != &new);
        self.sealing_key = Some(new.clone());
        self.current = vec![new];
    }

    /// Checks at the end of the log: coverage of the tail, key history,
    /// freshness and the witness.
    pub fn finish(&mut self, findings: &mut Findings, records: u64, last: u64) {
        let end = "end of log";
        for ((name, id), d) in std::mem::take(&mut self.deferred) {
            findings.push(Finding {
                class: FindingClass::BadSignature,
                severity: Severity::Error,
                seq: Some(d.first_seq),
                location: d.location,
                detail: format!(
                    "{} record(s) signed by unknown key {name}+{id}, which no trusted key or rotation vouches for",
                    d.count
                ),
            });
        }
        if records > 0 && !self.any_valid {
            find(
                findings,
                FindingClass::Unsigned,
                1,
                end,
                format!("no record of the log's {records} is covered by a valid signature"),
            );
        } else if last > self.covered {
            let tail = last - self.covered;
            match (self.last_seal, self.stretch) {
                (Some(at), Some(bound)) if last - at > bound => find(
                    findings,
                    FindingClass::Unsigned,
                    at.saturating_add(1),
                    end,
                    format!("the last {} record(s) carry no seal, but the writer seals at least every {bound} records", last - at),
                ),
                // No valid seal at all: a log from before seals, or one whose
                // seals were cut away with the tail. Either way no writer
                // leaves more unsigned records than its default bound.
                (None, _) if tail > UNSEALED_TAIL_BOUND => find(
                    findings,
                    FindingClass::Unsigned,
                    self.covered.saturating_add(1),
                    end,
                    format!("the last {tail} record(s) carry no valid signature and the log has no valid seal: more than the {UNSEALED_TAIL_BOUND} a writer leaves unsigned"),
                ),
                _ => {
                    findings.push(Finding {
                        class: FindingClass::UnsignedTail,
                        severity: if self.strict {
                            Severity::Error
                        } else {
                            Severity::Warning
                        },
                        seq: Some(self.covered.saturating_add(1)),
                        location: end.into(),
                        detail: match self.unchecked_mac {
                            Some(m) if m > self.covered => format!("{tail} record(s) after the last valid signature are not covered by one (MAC seals up to record {m} cover them; --mac-key checks those)"),
                            _ => format!("{tail} record(s) after the last valid signature are not covered by one"),
                        },
                    });
                }
            }
        }
        if self.history.len() > 1 && self.any_valid {
            if let (Some(last_key), Some(newest)) = (&self.last_key, self.history.last()) {
                if last_key != newest {
                    find(findings, FindingClass::Truncated, last.saturating_add(1), end,
                        format!("the log's last signature is by key {}+{}, but the key history given ends with {}+{}: the log stops before a rotation", last_key.name(), last_key.id_hex(), newest.name(), newest.id_hex()));
                }
            }
        }
        if let Some(max) = self.max_age_secs {
            match self.newest_checkpoint {
                None => find(
                    findings,
                    FindingClass::Stale,
                    last.saturating_add(1),
                    end,
                    "no valid checkpoint, so the log's freshness cannot be shown".into(),
                ),
                Some((seq, time)) => {
                    let age = self.now - time;
                    if age > i64::try_from(max).unwrap_or(i64::MAX) {
                        find(findings, FindingClass::Stale, seq, end,
                            format!("the newest valid checkpoint (record {seq}) was signed {age} s ago, more than the {max} s allowed: the log's tail may have been cut"));
                    }
                }
            }
        }
        self.finish_witness(findings, last);
    }

    fn finish_witness(&mut self, findings: &mut Findings, last: u64) {
        let keys: Vec<PublicKey> = self
            .current
            .iter()
            .chain(&self.retired)
            .chain(&self.history)
            .cloned()
            .collect();
        // The newest note whose signature verifies, by content.
        let mut newest: Option<usize> = None;
        for (i, w) in self.witness.iter().enumerate() {
            let loc = w.path.display().to_string();
            match verify_checkpoint(&w.note, &keys) {
                // By keys the auditor lacks, one of which a trusted rotation
                // vouches for (on any line): unchecked, counts for nothing.
                Err(NoteError::UnknownKey { .. })
                    if signers(&w.note).iter().any(|k| self.vouched.contains(k)) => {}
                Err(e) => find(
                    findings,
                    FindingClass::BadSignature,
                    w.seq,
                    &loc,
                    format!("witness checkpoint: {e}"),
                ),
                Ok((cp, _)) => {
                    if let Some(expected) = &self.log_id {
                        if &cp.log_id != expected {
                            find(
                                findings,
                                FindingClass::WrongLog,
                                w.seq,
                                &loc,
                                format!(
                                    "witness checkpoint is signed for log {:?}, not {expected:?}",
                                    cp.log_id
                                ),
                            );
                            continue;
                        }
                    }
                    if newest.is_none_or(|n| w.seq > self.witness[n].seq) {
                        newest = Some(i);
                    }
                }
            }
        }
        let Some(n) = newest else { return };
        let w = &self.witness[n];
        let (seen, holds_note) = self.witness_seen[n];
        let loc = w.path.display().to_string();
        if last <= w.seq {
            find(findings, FindingClass::Truncated, last.saturating_add(1), &loc,
                format!("the log ends at record {last}, but the witness holds a signed checkpoint of record {} (stored as record {})", w.seq, w.seq.saturating_add(1)));
        } else if seen != Some(w.head) {
            find(
                findings,
                FindingClass::Forked,
                w.seq,
                &loc,
                format!(
                    "record {} differs from the one the witness's signed checkpoint commits to",
                    w.seq
                ),
            );
        } else if !holds_note {
            find(
                findings,
                FindingClass::Forked,
                w.seq.saturating_add(1),
                &loc,
                format!(
                    "record {} is not the checkpoint record whose note the witness holds",
                    w.seq.saturating_add(1)
                ),
            );
        }
        // Two different signed checkpoints of one record: the writer signed
        // two histories.
        for other in &self.witness {
            if other.seq == w.seq
                && other.note != w.note
                && verify_checkpoint(&other.note, &keys).is_ok_and(|(c, _)| c.head != w.head)
            {
                find(
                    findings,
                    FindingClass::Forked,
                    w.seq,
                    &other.path.display().to_string(),
                    format!(
                        "the witness holds two different signed checkpoints of record {}",
                        w.seq
                    ),
                );
            }
        }
    }

    /// The newest valid checkpoint and its age.
    pub fn newest_checkpoint(&self) -> Option<CheckpointAge> {
        self.newest_checkpoint.map(|(seq, time)| CheckpointAge {
            seq,
            time,
            age_secs: self.now - time,
        })
    }
}
