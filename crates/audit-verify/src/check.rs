//! Checking one stream of stored records: per-record analysis (parallel) and
//! chain classification (sequential, bounded memory).

use std::collections::HashMap;
use std::path::PathBuf;

use audit_core::checkpoint::{verify_checkpoint, verify_rotation, NoteError, PublicKey};
use audit_core::record::parse_chain_suffix;
use audit_core::{parse_record, record_hash, Hash32, Location, PrevHash, StoredRecord};

use crate::finding::{Finding, FindingClass, Severity};

/// How far back duplicates and insertions are compared, in sequences.
const WINDOW: u64 = 1 << 16;
/// Findings kept per source; the rest are counted.
const MAX_FINDINGS: usize = 10_000;

pub(crate) struct Analyzed {
    location: Location,
    kind: Kind,
}

enum Kind {
    Oversized(u64),
    Torn(u64),
    Malformed { error: String, seq: Option<u64> },
    Record(Rec),
}

/// What a checkpoint or key-rotation record claims, read in the parallel stage.
struct Special {
    record_type: String,
    checkpoint_seq: Option<u64>,
    head_hash: Option<String>,
    note: Option<String>,
}

struct Rec {
    special: Option<Box<Special>>,
    seq: u64,
    prev: PrevHash,
    claimed: Hash32,
    computed: Hash32,
    /// Kept (a shared buffer, not a copy) to read the timestamp of the first
    /// and last records only.
    text: bytes::Bytes,
    column_mismatch: Option<String>,
}

/// Everything about one stored item that does not depend on its neighbours.
pub(crate) fn analyze(item: StoredRecord) -> Analyzed {
    let location = item.location;
    if let Some(len) = item.oversized {
        return Analyzed {
            location,
            kind: Kind::Oversized(len),
        };
    }
    if item.incomplete {
        return Analyzed {
            location,
            kind: Kind::Torn(item.text.len() as u64),
        };
    }
    let text = &item.text;
    let kind = match parse_record(text) {
        Err(e) => Kind::Malformed {
            error: e.to_string(),
            seq: parse_chain_suffix(text).ok().map(|(s, ..)| s),
        },
        Ok(p) => Kind::Record(Rec {
            special: p
                .record_type
                .as_deref()
                .filter(|t| *t == "checkpoint" || *t == "key_rotation")
                .map(|t| {
                    #[derive(serde::Deserialize)]
                    struct Fields {
                        checkpoint_seq: Option<u64>,
                        head_hash: Option<String>,
                        note: Option<String>,
                    }
                    let f: Option<Fields> = serde_json::from_slice(text).ok();
                    Box::new(Special {
                        record_type: t.to_string(),
                        checkpoint_seq: f.as_ref().and_then(|f| f.checkpoint_seq),
                        head_hash: f.as_ref().and_then(|f| f.head_hash.clone()),
                        note: f.and_then(|f| f.note),
                    })
                }),
            seq: p.seq,
            prev: p.prev,
            claimed: p.claimed_hash,
            computed: record_hash(text),
            text: item.text.clone(),
            column_mismatch: item
                .columns
                .as_ref()
                .and_then(|c| columns_disagree(text, c)),
        }),
    };
    Analyzed { location, kind }
}

fn timestamp_of(text: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"timestamp\":\"";
    let head = &text[..text.len().min(256)];
    let at = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = text[at..].iter().position(|&b| b == b'"')? + at;
    std::str::from_utf8(&text[at..end]).ok().map(str::to_owned)
}

/// Compares a backend's index columns with the record they were derived from.
fn columns_disagree(text: &[u8], columns: &[(String, Option<String>)]) -> Option<String> {
    // The same function the SQLite sink derives them with.
    let values = audit_core::sink::index_values(std::str::from_utf8(text).ok()?).ok()?;
    for (name, stored) in columns {
        let expected = values.column(name);
        if &expected != stored {
            return Some(format!(
                "index column {name} holds {} but the record says {}",
                shown(stored.as_deref()),
                shown(expected.as_deref()),
            ));
        }
    }
    None
}

/// A column value for a finding: quoted, and cut short when long, so that a
/// hostile value cannot flood the report.
fn shown(value: Option<&str>) -> String {
    const SHOWN: usize = 120;
    let Some(v) = value else {
        return "NULL".into();
    };
    if v.len() <= SHOWN {
        return format!("{v:?}");
    }
    let mut cut = SHOWN;
    while !v.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}… ({} bytes)", &v[..cut], v.len())
}

struct Gap {
    from: u64,
    to: u64,
    filled: u64,
    finding: Option<usize>,
}

/// The sequential half: links, gaps, duplicates, restarts.
pub(crate) struct Classifier {
    strict: bool,
    pub findings: Vec<Finding>,
    pub omitted: u64,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub head: Option<(u64, Hash32)>,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    pub chains: u64,
    seen_max: u64,
    last_text: Option<bytes::Bytes>,
    /// The last WINDOW sequences seen, indexed by `seq % WINDOW`.
    ring: Vec<Option<(u64, Hash32, PrevHash)>>,
    /// Further records that claimed a sequence already in the ring.
    conflicts: HashMap<u64, Vec<Hash32>>,
    gaps: Vec<Gap>,
    /// Segment files and the first sequence their names promise.
    segment_starts: HashMap<PathBuf, u64>,
    signatures: Option<Signatures>,
}

/// Signature checking state: the keys, what was signed, and the witness.
pub(crate) struct Signatures {
    current: Vec<PublicKey>,
    retired: Vec<PublicKey>,
    last_signed: Option<u64>,
    witness: Option<Witness>,
}

/// The latest checkpoint held by a witness, not yet signature-checked.
pub(crate) struct Witness {
    pub location: String,
    pub note: String,
    pub seq: u64,
    pub head: Hash32,
    pub seen: Option<Hash32>,
}

impl Signatures {
    pub(crate) fn new(keys: Vec<PublicKey>, witness: Option<Witness>) -> Self {
        Self {
            current: keys,
            retired: Vec::new(),
            last_signed: None,
            witness,
        }
    }
}

impl Classifier {
    pub(crate) fn new(
        strict: bool,
        segment_starts: HashMap<PathBuf, u64>,
        signatures: Option<Signatures>,
    ) -> Self {
        Self {
            signatures,
            strict,
            findings: Vec::new(),
            omitted: 0,
            records: 0,
            first_seq: None,
            last_seq: None,
            head: None,
            first_time: None,
            last_time: None,
            chains: 0,
            seen_max: 0,
            last_text: None,
            ring: vec![None; WINDOW as usize],
            conflicts: HashMap::new(),
            gaps: Vec::new(),
            segment_starts,
        }
    }

    fn find(
        &mut self,
        class: FindingClass,
        severity: Severity,
        seq: Option<u64>,
        location: &Location,
        detail: String,
    ) -> Option<usize> {
        if self.findings.len() >= MAX_FINDINGS {
            self.omitted += 1;
            return None;
        }
        self.findings.push(Finding {
            class,
            severity,
            seq,
            location: location.to_string(),
            detail,
        });
        Some(self.findings.len() - 1)
    }

    pub(crate) fn push(&mut self, a: Analyzed) {
        let loc = a.location;
        let rec = match a.kind {
            Kind::Oversized(len) => {
                self.find(
                    FindingClass::Malformed,
                    Severity::Error,
                    None,
                    &loc,
                    format!("line of {len} bytes exceeds the reader's limit; skipped"),
                );
                return;
            }
            Kind::Torn(len) => {
                self.find(FindingClass::Truncated, Severity::Warning, None, &loc,
                    format!("the log ends mid-line: {len} bytes without a newline (a write that was never acknowledged, or a cut)"));
                return;
            }
            Kind::Malformed { error, seq } => {
                self.find(FindingClass::Malformed, Severity::Error, seq, &loc, error);
                return;
            }
            Kind::Record(r) => r,
        };
        let s = rec.seq;
        self.records += 1;
        if let Location::Line { path, line: 1, .. } = &loc {
            if let Some(&promised) = self.segment_starts.get(path.as_ref()) {
                if promised != s {
                    self.find(
                        FindingClass::Modified,
                        Severity::Error,
                        Some(s),
                        &loc,
                        format!("segment is named for sequence {promised} but starts with {s}"),
                    );
                }
            }
        }
        if let Location::Row { rowid, .. } = &loc {
            if u64::try_from(*rowid).ok() != Some(s) {
                self.find(
                    FindingClass::Modified,
                    Severity::Error,
                    Some(s),
                    &loc,
                    format!("row key {rowid} holds record {s}"),
                );
            }
        }
        if rec.computed != rec.claimed {
            self.find(
                FindingClass::Modified,
                Severity::Error,
                Some(s),
                &loc,
                format!(
                    "stored hash {} but the bytes hash to {}",
                    rec.claimed, rec.computed
                ),
            );
        }
        if let Some(m) = rec.column_mismatch.clone() {
            self.find(FindingClass::Modified, Severity::Error, Some(s), &loc, m);
        }
        if self.first_time.is_none() {
            self.first_time = timestamp_of(&rec.text);
        }
        self.last_text = Some(rec.text.clone());
        self.first_seq = Some(self.first_seq.map_or(s, |f| f.min(s)));
        if rec.prev == PrevHash::Genesis {
            if s != 1 {
                self.find(
                    FindingClass::Malformed,
                    Severity::Error,
                    Some(s),
                    &loc,
                    format!("record {s} claims to start a chain"),
                );
            } else if self.seen_max > 0 {
                let sev = if self.strict {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                self.find(
                    FindingClass::Restart,
                    sev,
                    Some(1),
                    &loc,
                    format!(
                        "unanchored genesis after sequence {}: a new chain starts here",
                        self.seen_max
                    ),
                );
                self.close_gaps();
                self.chains += 1;
                self.seen_max = 0;
                self.ring.iter_mut().for_each(|r| *r = None);
                self.conflicts.clear();
            } else {
                self.chains += 1;
            }
        } else if self.seen_max == 0 && self.chains == 0 {
            self.chains = 1;
            self.find(
                FindingClass::Deleted,
                Severity::Error,
                Some(1),
                &loc,
                format!(
                    "the log starts at sequence {s}; records 1..{} are missing",
                    s - 1
                ),
            );
        }
        if rec.prev != PrevHash::Genesis || s == 1 {
            self.link(&rec, &loc);
        }
        self.seen_max = self.seen_max.max(s);
        self.last_seq = Some(self.last_seq.map_or(s, |l| l.max(s)));
        if self.head.is_none_or(|(hs, _)| s >= hs) {
            self.head = Some((s, rec.claimed));
        }
        let slot = &mut self.ring[(s % WINDOW) as usize];
        match slot {
            Some((seq, h, _)) if *seq == s => {
                if *h != rec.claimed {
                    let c = self.conflicts.entry(s).or_default();
                    if !c.contains(&rec.claimed) {
                        c.push(rec.claimed);
                    }
                }
            }
            _ => *slot = Some((s, rec.claimed, rec.prev)),
        }
        if self.conflicts.len() > 4096 {
            let floor = self.seen_max.saturating_sub(WINDOW);
            self.conflicts.retain(|&k, _| k >= floor);
        }
        if let Some(w) = self.signatures.as_mut().and_then(|g| g.witness.as_mut()) {
            if w.seq == s && w.seen.is_none() {
                w.seen = Some(rec.claimed);
            }
        }
        if let Some(special) = &rec.special {
            self.check_signed(s, special, &loc);
        }
    }

    fn check_signed(&mut self, s: u64, special: &Special, loc: &Location) {
        let Some(sig) = self.signatures.as_mut() else {
            return;
        };
        let Some(note) = special.note.as_deref() else {
            self.find(
                FindingClass::Malformed,
                Severity::Error,
                Some(s),
                loc,
                format!("{} record without a note", special.record_type),
            );
            return;
        };
        let describe = |e: &NoteError, retired: &[PublicKey]| match e {
            NoteError::UnknownKey { name, id }
                if retired
                    .iter()
                    .any(|k| k.name() == name && &k.id_hex() == id) =>
            {
                format!("signed by key {name}+{id}, which was no longer current (it had been rotated out)")
            }
            other => other.to_string(),
        };
        if special.record_type == "key_rotation" {
            match verify_rotation(note, &sig.current) {
                Ok((new, old)) => {
                    sig.retired.push(old);
                    sig.current = vec![new];
                }
                Err(e) => {
                    let d = describe(&e, &sig.retired);
                    self.find(
                        FindingClass::BadSignature,
                        Severity::Error,
                        Some(s),
                        loc,
                        format!("key rotation: {d}"),
                    );
                }
            }
            return;
        }
        match verify_checkpoint(note, &sig.current) {
            Err(e) => {
                let class = if matches!(e, NoteError::Malformed(_)) {
                    FindingClass::Malformed
                } else {
                    FindingClass::BadSignature
                };
                let d = describe(&e, &sig.retired);
                self.find(
                    class,
                    Severity::Error,
                    Some(s),
                    loc,
                    format!("checkpoint: {d}"),
                );
            }
            Ok((cp, _)) => {
                sig.last_signed = Some(s);
                let fields_agree = special.checkpoint_seq == Some(cp.seq)
                    && special.head_hash.as_deref() == Some(cp.head.to_hex().as_str());
                if !fields_agree {
                    self.find(
                        FindingClass::Modified,
                        Severity::Error,
                        Some(s),
                        loc,
                        "the checkpoint record's fields disagree with its signed note".into(),
                    );
                }
                if cp.seq + 1 != s {
                    self.find(FindingClass::Modified, Severity::Error, Some(s), loc,
                        format!("the signed checkpoint commits to record {}, not to the record before it", cp.seq));
                }
                if self.seen_hash(cp.seq, cp.head) == Some(false) {
                    self.find(FindingClass::Modified, Severity::Error, Some(cp.seq), loc,
                        format!("the chain disagrees with the signed checkpoint of record {}: the log up to it was rewritten and its hashes recomputed", cp.seq));
                }
            }
        }
    }

    fn link(&mut self, rec: &Rec, loc: &Location) {
        let s = rec.seq;
        let prev_ok = |me: &Self| -> Option<bool> {
            if s == 1 {
                return Some(rec.prev == PrevHash::Genesis);
            }
            match rec.prev {
                PrevHash::Hash(p) => me.seen_hash(s - 1, p),
                PrevHash::Genesis => Some(false),
            }
        };
        if s == self.seen_max + 1 || self.seen_max == 0 {
            if prev_ok(self) == Some(false) {
                self.find(FindingClass::Modified, Severity::Error, Some(s - 1), loc,
                    format!("record {s} links to a different record {} than the one stored (rewritten with a recomputed hash, or replaced)", s - 1));
            }
        } else if s > self.seen_max + 1 {
            let (from, to) = (self.seen_max + 1, s - 1);
            let detail = if from == to {
                format!("record {from} is missing")
            } else {
                format!("records {from}..{to} are missing")
            };
            let idx = self.find(
                FindingClass::Deleted,
                Severity::Error,
                Some(from),
                loc,
                detail,
            );
            self.gaps.push(Gap {
                from,
                to,
                filled: 0,
                finding: idx,
            });
        } else if let Some(g) = self.gaps.iter_mut().find(|g| g.from <= s && s <= g.to) {
            g.filled += 1;
            let (from, to, filled) = (g.from, g.to, g.filled);
            if let Some(i) = g.finding {
                let f = &mut self.findings[i];
                f.class = FindingClass::Reordered;
                f.detail = if filled == to - from + 1 {
                    format!("records {from}..{to} are stored later, out of order")
                } else {
                    format!(
                        "records {from}..{to} are missing or out of order ({filled} found later)"
                    )
                };
            }
            if prev_ok(self) == Some(false) {
                self.find(
                    FindingClass::Modified,
                    Severity::Error,
                    Some(s - 1),
                    loc,
                    format!("record {s} does not link to the stored record {}", s - 1),
                );
            }
        } else {
            match self.seen_hash(s, rec.claimed) {
                Some(true) => {
                    self.find(
                        FindingClass::Duplicated,
                        Severity::Error,
                        Some(s),
                        loc,
                        format!("record {s} is stored again"),
                    );
                }
                Some(false) => {
                    self.find(
                        FindingClass::Inserted,
                        Severity::Error,
                        Some(s),
                        loc,
                        format!("a second, different record claims sequence {s}"),
                    );
                }
                None => {
                    self.find(
                        FindingClass::Duplicated,
                        Severity::Error,
                        Some(s),
                        loc,
                        format!(
                            "sequence {s} appears again after {}, too far back to compare",
                            self.seen_max
                        ),
                    );
                }
            }
        }
    }

    /// Whether a record with sequence `s` and hash `h` was seen, if `s` is
    /// recent enough to know (`None` otherwise).
    fn seen_hash(&self, s: u64, h: Hash32) -> Option<bool> {
        match self.ring[(s % WINDOW) as usize] {
            Some((seq, first, _)) if seq == s => {
                Some(first == h || self.conflicts.get(&s).is_some_and(|c| c.contains(&h)))
            }
            _ => None,
        }
    }

    fn close_gaps(&mut self) {
        self.gaps.clear();
    }

    /// Timestamps are read from the first and last records only.
    pub(crate) fn finish(&mut self) {
        if let Some(t) = self.last_text.take() {
            self.last_time = timestamp_of(&t);
        }
        let Some(sig) = self.signatures.take() else {
            return;
        };
        let last = self.last_seq.unwrap_or(0);
        let signed = sig.last_signed.unwrap_or(0);
        let here = Location::Object {
            key: "end of log".into(),
            line: last,
        };
        if last > signed {
            self.find(
                FindingClass::UnsignedTail,
                Severity::Warning,
                Some(signed + 1),
                &here,
                format!(
                    "{} record(s) after the last signed checkpoint are not covered by a signature",
                    last - signed
                ),
            );
        }
        if let Some(w) = &sig.witness {
            let keys: Vec<PublicKey> = sig.current.iter().chain(&sig.retired).cloned().collect();
            let wloc = Location::Object {
                key: w.location.clone(),
                line: 1,
            };
            match verify_checkpoint(&w.note, &keys) {
                Err(e) => {
                    self.find(
                        FindingClass::BadSignature,
                        Severity::Error,
                        Some(w.seq),
                        &wloc,
                        format!("witness checkpoint: {e}"),
                    );
                }
                // The checkpoint of record N is itself record N + 1.
                Ok(_) if last <= w.seq => {
                    self.find(FindingClass::Truncated, Severity::Error, Some(last + 1), &wloc,
                        format!("the log ends at record {last}, but the witness holds a signed checkpoint of record {} (stored as record {})", w.seq, w.seq + 1));
                }
                Ok(_) if w.seen.is_some_and(|h| h != w.head) => {
                    self.find(FindingClass::Forked, Severity::Error, Some(w.seq), &wloc,
                        format!("record {} differs from the one the witness's signed checkpoint commits to", w.seq));
                }
                Ok(_) => {}
            }
        }
        self.signatures = Some(sig);
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}
