//! Checking one stream of stored records: per-record analysis (parallel) and
//! chain classification (sequential, bounded memory).

use std::collections::HashMap;
use std::path::PathBuf;

use audit_core::record::parse_chain_suffix;
use audit_core::{parse_record, record_hash, Hash32, Location, PrevHash, StoredRecord};

use crate::finding::{Finding, FindingClass, Findings, Severity};
use crate::signed::{Signed, Special, SpecialType};

/// How far back duplicates and insertions are compared, in sequences.
const WINDOW: u64 = 1 << 16;

pub(crate) struct Analyzed {
    location: Location,
    kind: Kind,
}

enum Kind {
    /// Skipped unread: its length, and whether it ran through a hole.
    Oversized(u64, bool),
    Torn(u64),
    Malformed {
        error: String,
        seq: Option<u64>,
    },
    Record(Rec),
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
        // A torn last line that runs through a hole is still a torn tail (a
        // crash inside preallocated space leaves holes): a warning, as the
        // same bytes written as zeros are.
        if item.incomplete && item.sparse {
            return Analyzed {
                location,
                kind: Kind::Torn(len),
            };
        }
        return Analyzed {
            location,
            kind: Kind::Oversized(len, item.sparse),
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
                .and_then(SpecialType::from_record_type)
                .map(|t| {
                    let parsed = audit_core::marker::MarkerFields::parse(
                        p.record_type.as_deref().unwrap_or_default(),
                        text,
                    );
                    let (fields, shape_error) = match parsed {
                        Ok(Some((_, f))) => (f, None),
                        Ok(None) => Default::default(),
                        Err(e) => (Default::default(), Some(e)),
                    };
                    Box::new(Special {
                        record_type: t,
                        checkpoint_seq: fields.checkpoint_seq,
                        sealed_seq: fields.sealed_seq,
                        head_hash: fields.head_hash,
                        new_key: fields.new_key,
                        log_id: fields.log_id,
                        key_id: fields.key_id,
                        note: fields.note,
                        stretch: fields.stretch,
                        mac: fields.mac,
                        writer_mac: fields.writer_mac,
                        shape_error,
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
    reclassed: bool,
    finding: Option<usize>,
}

/// The last WINDOW sequences seen, for links, duplicates and insertions.
struct Ring {
    /// Indexed by `seq % WINDOW`.
    slots: Vec<Option<(u64, Hash32, PrevHash)>>,
    /// Further records that claimed a sequence already in the ring.
    conflicts: HashMap<u64, Vec<Hash32>>,
}

impl Ring {
    fn new() -> Self {
        Self {
            slots: vec![None; WINDOW as usize],
            conflicts: HashMap::new(),
        }
    }

    fn clear(&mut self) {
        self.slots.iter_mut().for_each(|r| *r = None);
        self.conflicts.clear();
    }

    /// Whether a record with sequence `s` and hash `h` was seen, if `s` is
    /// recent enough to know (`None` otherwise).
    fn seen_hash(&self, s: u64, h: Hash32) -> Option<bool> {
        match self.slots[(s % WINDOW) as usize] {
            Some((seq, first, _)) if seq == s => {
                Some(first == h || self.conflicts.get(&s).is_some_and(|c| c.contains(&h)))
            }
            _ => None,
        }
    }

    fn insert(&mut self, s: u64, h: Hash32, prev: PrevHash, seen_max: u64) {
        let slot = &mut self.slots[(s % WINDOW) as usize];
        match slot {
            Some((seq, first, _)) if *seq == s => {
                if *first != h {
                    let c = self.conflicts.entry(s).or_default();
                    if !c.contains(&h) {
                        c.push(h);
                    }
                }
            }
            _ => *slot = Some((s, h, prev)),
        }
        if self.conflicts.len() > 4096 {
            let floor = seen_max.saturating_sub(WINDOW);
            self.conflicts.retain(|&k, _| k >= floor);
        }
    }
}

/// The sequential half: links, gaps, duplicates, restarts, signatures.
pub(crate) struct Classifier {
    strict: bool,
    /// The log is one our writer made (a segment directory, a database, an
    /// object log), not a seed-format file: a second chain in it is an error.
    ours: bool,
    pub findings: Findings,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub head: Option<(u64, Hash32)>,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    pub chains: u64,
    seen_max: u64,
    last_text: Option<bytes::Bytes>,
    ring: Ring,
    /// Open gaps by their last sequence; disjoint, so the one holding a
    /// sequence is found in log time and a hostile interleaving of sequences
    /// cannot make the pass quadratic.
    gaps: std::collections::BTreeMap<u64, Gap>,
    /// Sequences of the last malformed lines whose chain members could be
    /// read: a gap of exactly one of them is that line, already reported,
    /// not a deletion too. Bounded: only recent ones can open a gap.
    malformed_seqs: std::collections::VecDeque<u64>,
    /// Segment files and the sequences their names promise.
    segment_starts: crate::source::SegmentNames,
    /// The segment being read whose name promises its last sequence: its
    /// name, that sequence, the last one read from it, and where.
    open_end: Option<(PathBuf, u64, u64, Location)>,
    pub signed: Option<Signed>,
}

impl Classifier {
    pub(crate) fn new(
        strict: bool,
        ours: bool,
        segment_starts: crate::source::SegmentNames,
        signed: Option<Signed>,
    ) -> Self {
        Self {
            signed,
            strict,
            ours,
            findings: Findings::default(),
            records: 0,
            first_seq: None,
            last_seq: None,
            head: None,
            first_time: None,
            last_time: None,
            chains: 0,
            seen_max: 0,
            last_text: None,
            ring: Ring::new(),
            gaps: std::collections::BTreeMap::new(),
            malformed_seqs: std::collections::VecDeque::new(),
            segment_starts,
            open_end: None,
        }
    }

    /// Checks that a segment named `<first>-<last>` ended at `<last>`.
    fn close_segment(&mut self) {
        if let Some((_, promised, seen, loc)) = self.open_end.take() {
            if promised != seen {
                self.find(
                    FindingClass::Modified,
                    Severity::Error,
                    Some(seen),
                    &loc,
                    format!("segment is named as ending at sequence {promised} but its last record is {seen}"),
                );
            }
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
        self.findings.push(Finding {
            class,
            severity,
            seq,
            location: location.to_string(),
            detail,
        })
    }

    pub(crate) fn push(&mut self, a: Analyzed) {
        let loc = a.location;
        let rec = match a.kind {
            Kind::Oversized(len, sparse) => {
                let detail = if sparse {
                    format!("line of {len} bytes runs through a hole of a sparse file (zeros, which no record holds); skipped unread")
                } else {
                    format!("line of {len} bytes exceeds the reader's limit; skipped")
                };
                self.find(FindingClass::Malformed, Severity::Error, None, &loc, detail);
                return;
            }
            Kind::Torn(len) => {
                self.find(FindingClass::Truncated, Severity::Warning, None, &loc,
                    format!("the log ends mid-line: {len} bytes without a newline (a write that was never acknowledged, or a cut)"));
                return;
            }
            Kind::Malformed { error, seq } => {
                self.find(FindingClass::Malformed, Severity::Error, seq, &loc, error);
                if let Some(s) = seq {
                    if self.malformed_seqs.len() == 64 {
                        self.malformed_seqs.pop_front();
                    }
                    self.malformed_seqs.push_back(s);
                }
                return;
            }
            Kind::Record(r) => r,
        };
        let s = rec.seq;
        self.records += 1;
        // A segment file's or object's first record must have the sequence
        // its name promises.
        let segment = match &loc {
            Location::Line { path, line: 1, .. } => Some(path.as_ref()),
            Location::Object { key, line: 1 } => Some(std::path::Path::new(key.as_str())),
            _ => None,
        };
        if let Location::Object { key, .. } = &loc {
            if let Some(open) = self.open_end.as_mut() {
                if open.0.as_os_str() == key.as_str() {
                    open.2 = s;
                    open.3 = loc.clone();
                } else {
                    self.close_segment();
                }
            }
        }
        if let Some(path) = segment {
            if let Some(&(promised, last)) = self.segment_starts.get(path) {
                if let Some(last) = last {
                    self.close_segment();
                    self.open_end = Some((path.to_path_buf(), last, s, loc.clone()));
                }
                // A segment that starts later than its name, right after the
                // chain so far, lost its first records: the gap (or the log's
                // missing start) reports them, and the name is not wrong.
                let explained = promised < s && promised == self.seen_max.saturating_add(1);
                if promised != s && !explained {
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
            } else if self.seen_max > 0
                && (self.gap_of(1).is_some()
                    || (self.ours && self.ring.seen_hash(1, rec.claimed) == Some(true)))
            {
                // The first record stored after later ones, or (in a log of
                // ours, which holds one chain) record 1 stored again: a
                // reordering or a duplicate, which `link` reports. A seed
                // file's proxy restarted and may log the same first entry.
            } else if self.seen_max > 0 {
                // The seed proxy restarted its chain at every start, so its
                // single files hold several; our writer never does.
                let (sev, why) = if self.ours {
                    (
                        Severity::Error,
                        "a log written by auditlog holds one chain: this one was added",
                    )
                } else if self.strict {
                    (Severity::Error, "--strict")
                } else {
                    (
                        Severity::Warning,
                        "a seed-format file: its proxy restarted the chain at every start",
                    )
                };
                self.find(
                    FindingClass::Restart,
                    sev,
                    Some(1),
                    &loc,
                    format!(
                        "unanchored genesis after sequence {}: a new chain starts here ({why})",
                        self.seen_max
                    ),
                );
                self.gaps.clear();
                self.chains += 1;
                self.seen_max = 0;
                self.ring.clear();
            } else {
                self.chains += 1;
            }
        } else if self.seen_max == 0
            && self.chains == 0
            && s == 2
            && self.malformed_seqs.contains(&1)
        {
            // Record 1 is the malformed line before it, already reported.
            self.chains = 1;
        } else if self.seen_max == 0 && self.chains == 0 {
            self.chains = 1;
            let idx = self.find(
                FindingClass::Deleted,
                Severity::Error,
                Some(1),
                &loc,
                format!(
                    "the log starts at sequence {s}; records 1..{} are missing",
                    s - 1
                ),
            );
            // Records 1.. found later are out of order, not missing.
            self.gaps.insert(
                s - 1,
                Gap {
                    from: 1,
                    to: s - 1,
                    filled: 0,
                    reclassed: false,
                    finding: idx,
                },
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
        self.ring.insert(s, rec.claimed, rec.prev, self.seen_max);
        if let Some(signed) = self.signed.as_mut() {
            signed.saw(s, rec.claimed, rec.special.as_deref());
            if let Some(special) = &rec.special {
                let ring = &self.ring;
                let prev = match rec.prev {
                    PrevHash::Hash(h) => Some(h),
                    PrevHash::Genesis => None,
                };
                signed.check(&mut self.findings, s, special, &loc, prev, &|q, h| {
                    ring.seen_hash(q, h)
                });
            }
        }
    }

    /// The open gap holding `s`, if any, by its last sequence.
    fn gap_of(&self, s: u64) -> Option<u64> {
        let (&to, g) = self.gaps.range(s..).next()?;
        (g.from <= s).then_some(to)
    }

    fn link(&mut self, rec: &Rec, loc: &Location) {
        let s = rec.seq;
        let prev_ok = |me: &Self| -> Option<bool> {
            if s == 1 {
                return Some(rec.prev == PrevHash::Genesis);
            }
            match rec.prev {
                PrevHash::Hash(p) => me.ring.seen_hash(s - 1, p),
                PrevHash::Genesis => Some(false),
            }
        };
        if s == self.seen_max.saturating_add(1) || self.seen_max == 0 {
            if prev_ok(self) == Some(false) {
                self.find(FindingClass::Modified, Severity::Error, Some(s - 1), loc,
                    format!("record {s} links to a different record {} than the one stored (rewritten with a recomputed hash, or replaced)", s - 1));
            }
        } else if s > self.seen_max.saturating_add(1) {
            let (from, to) = (self.seen_max.saturating_add(1), s - 1);
            if from == to && self.malformed_seqs.contains(&from) {
                // The malformed line holding record `from`, already reported.
                return;
            }
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
            self.gaps.insert(
                to,
                Gap {
                    from,
                    to,
                    filled: 0,
                    reclassed: false,
                    finding: idx,
                },
            );
        } else if let Some(gi) = self.gap_of(s) {
            let Some(g) = self.gaps.get_mut(&gi) else {
                return;
            };
            g.filled += 1;
            let first_fill = !g.reclassed;
            g.reclassed = true;
            let (from, to, filled, idx) = (g.from, g.to, g.filled, g.finding);
            if filled == (to - from).saturating_add(1) {
                self.gaps.remove(&gi);
            }
            if first_fill {
                self.findings.reclass(
                    FindingClass::Deleted,
                    FindingClass::Reordered,
                    Severity::Error,
                );
            }
            if let Some(i) = idx {
                let f = &mut self.findings.kept[i];
                f.class = FindingClass::Reordered;
                f.detail = if filled == (to - from).saturating_add(1) {
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
            match self.ring.seen_hash(s, rec.claimed) {
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

    /// Timestamps are read from the first and last records only.
    pub(crate) fn finish(&mut self) {
        self.close_segment();
        if let Some(t) = self.last_text.take() {
            self.last_time = timestamp_of(&t);
        }
        let last = self.last_seq.unwrap_or(0);
        if let Some(signed) = self.signed.as_mut() {
            signed.finish(&mut self.findings, self.records, last);
        }
    }
}
