//! Findings and reports, with the stable JSON schema documented in docs/VERIFY.md.

use serde::Serialize;

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingClass {
    /// A record's bytes changed (hash mismatch, a recomputed hash that the next
    /// record does not link to, or an index column that disagrees with its record).
    Modified,
    /// Records are missing from the middle or the start.
    Deleted,
    /// A record that is not part of the chain claims a sequence.
    Inserted,
    /// Records are present but stored out of order.
    Reordered,
    /// The same record is stored twice.
    Duplicated,
    /// The log ends early: cut mid-line, or shorter than another copy.
    Truncated,
    /// Copies disagree at a sequence they share.
    Forked,
    /// A stored item is not a well-formed record.
    Malformed,
    /// An unanchored `genesis`: a new chain starts inside the log (the seed
    /// restarted its chain at every process start).
    Restart,
    /// A checkpoint or key rotation signed by an unknown or retired key, or
    /// whose signature does not verify.
    BadSignature,
    /// Records after the last signature, fewer than the writer's bound allows
    /// (a warning, with their count).
    UnsignedTail,
    /// Records no valid signature covers where the writer would have signed
    /// them: a log with no valid signature at all, or a stretch longer than the
    /// bound its seals state (checked with a key).
    Unsigned,
    /// A signed note names another log than the one being verified.
    WrongLog,
    /// The newest valid checkpoint is older than `--max-age` allows.
    Stale,
}

impl FindingClass {
    /// The class's name in reports (`snake_case`, as in the JSON).
    pub fn name(self) -> &'static str {
        match self {
            FindingClass::Modified => "modified",
            FindingClass::Deleted => "deleted",
            FindingClass::Inserted => "inserted",
            FindingClass::Reordered => "reordered",
            FindingClass::Duplicated => "duplicated",
            FindingClass::Truncated => "truncated",
            FindingClass::Forked => "forked",
            FindingClass::Malformed => "malformed",
            FindingClass::Restart => "restart",
            FindingClass::BadSignature => "bad_signature",
            FindingClass::UnsignedTail => "unsigned_tail",
            FindingClass::Unsigned => "unsigned",
            FindingClass::WrongLog => "wrong_log",
            FindingClass::Stale => "stale",
        }
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Integrity is broken.
    Error,
    /// Worth knowing; integrity holds.
    Warning,
}

/// One problem, where it is, and what was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The class.
    pub class: FindingClass,
    /// Error or warning.
    pub severity: Severity,
    /// The sequence concerned, when known.
    pub seq: Option<u64>,
    /// Line and byte offset, SQLite row, or object key.
    pub location: String,
    /// What was seen.
    pub detail: String,
}

/// The verdict on one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The source as given.
    pub source: String,
    /// True when there is no error finding.
    pub ok: bool,
    /// Well-formed records read.
    pub records: u64,
    /// Lowest sequence seen.
    pub first_seq: Option<u64>,
    /// Highest sequence seen.
    pub last_seq: Option<u64>,
    /// Hash of the record with the highest sequence.
    pub head_hash: Option<String>,
    /// Timestamp of the first record, as stored.
    pub first_time: Option<String>,
    /// Timestamp of the last record, as stored.
    pub last_time: Option<String>,
    /// Files, objects or tables the source spans.
    pub segments: u64,
    /// Chains found: 1 for an intact log, more when `genesis` restarts it.
    pub chains: u64,
    /// Error findings, all of them counted (the verdict), kept or not.
    pub errors: u64,
    /// Warning findings, all of them counted.
    pub warnings: u64,
    /// How many findings of each class and severity, all counted.
    pub counts: Vec<ClassCount>,
    /// The newest checkpoint whose signature verified, when keys were given.
    pub newest_checkpoint: Option<CheckpointAge>,
    /// The findings, in the order found (the first 10,000).
    pub findings: Vec<Finding>,
    /// Findings counted but not kept after the first 10,000.
    pub findings_omitted: u64,
}

/// How many findings of one class and severity a source has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassCount {
    /// The class.
    pub class: FindingClass,
    /// The severity.
    pub severity: Severity,
    /// How many, all counted.
    pub count: u64,
}

/// The newest valid checkpoint of a log, and how old it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointAge {
    /// The checkpoint record's sequence.
    pub seq: u64,
    /// The time its signed note states, Unix seconds.
    pub time: i64,
    /// Seconds between that time and the verifier's clock (negative when the
    /// note is from the future).
    pub age_secs: i64,
}

/// Findings kept up to a cap, and every finding counted: the cap limits what
/// is printed and stored, never the verdict.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub kept: Vec<Finding>,
    pub omitted: u64,
    counts: std::collections::BTreeMap<(FindingClass, Severity), u64>,
}

/// Findings kept per source; the rest are counted only.
pub(crate) const MAX_FINDINGS: usize = 10_000;

impl Findings {
    /// Counts a finding and keeps it while under the cap; returns its index if kept.
    pub fn push(&mut self, f: Finding) -> Option<usize> {
        *self.counts.entry((f.class, f.severity)).or_default() += 1;
        if self.kept.len() >= MAX_FINDINGS {
            self.omitted += 1;
            return None;
        }
        self.kept.push(f);
        Some(self.kept.len() - 1)
    }

    /// Moves one counted finding to another class (a gap found filled later).
    pub fn reclass(&mut self, from: FindingClass, to: FindingClass, severity: Severity) {
        if let Some(n) = self.counts.get_mut(&(from, severity)) {
            *n = n.saturating_sub(1);
        }
        *self.counts.entry((to, severity)).or_default() += 1;
    }

    /// Moves the counts and kept findings into a report.
    pub fn into_report(self, r: &mut SourceReport) {
        r.findings = self.kept;
        r.findings_omitted = self.omitted;
        r.counts.clear();
        r.errors = 0;
        r.warnings = 0;
        for ((class, severity), n) in self.counts {
            if n > 0 {
                r.count(class, severity, n);
            }
        }
    }
}

impl SourceReport {
    /// Adds a finding: counted always, kept while under the cap.
    pub(crate) fn add(&mut self, f: Finding) {
        self.count(f.class, f.severity, 1);
        if self.findings.len() >= MAX_FINDINGS {
            self.findings_omitted += 1;
        } else {
            self.findings.push(f);
        }
    }

    fn count(&mut self, class: FindingClass, severity: Severity, n: u64) {
        match severity {
            Severity::Error => self.errors += n,
            Severity::Warning => self.warnings += n,
        }
        match self
            .counts
            .iter_mut()
            .find(|c| c.class == class && c.severity == severity)
        {
            Some(c) => c.count += n,
            None => self.counts.push(ClassCount {
                class,
                severity,
                count: n,
            }),
        }
    }

    /// Whether any error finding was counted, kept or not.
    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }
}

/// The verdict on every source.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when every source is ok and the copies agree.
    pub ok: bool,
    /// One entry per source.
    pub sources: Vec<SourceReport>,
}

/// Text made safe for a terminal: control characters (C0, DEL, C1), line and
/// paragraph separators and bidirectional controls are shown as `\u{…}`
/// escapes, so that bytes from a hostile record cannot move the cursor, ring
/// the bell, rewrite what was printed before, or reorder what is shown.
pub fn escape_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Report {
    /// Human summary, as `audit-verify` prints it. Text from the log is
    /// escaped ([`escape_terminal`]).
    pub fn human(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for s in &self.sources {
            let _ = writeln!(
                out,
                "{}: {}",
                escape_terminal(&s.source),
                if s.ok { "INTACT" } else { "INTEGRITY FINDINGS" }
            );
            let range = match (s.first_seq, s.last_seq) {
                (Some(a), Some(b)) => format!("{a}..{b}"),
                _ => "none".into(),
            };
            let _ = writeln!(
                out,
                "  records: {}  sequences: {range}  chains: {}  segments: {}",
                s.records, s.chains, s.segments
            );
            if let (Some(a), Some(b)) = (&s.first_time, &s.last_time) {
                let _ = writeln!(
                    out,
                    "  time span: {} .. {}",
                    escape_terminal(a),
                    escape_terminal(b)
                );
            }
            if let Some(h) = &s.head_hash {
                let _ = writeln!(out, "  head hash: {h}");
            }
            let _ = writeln!(
                out,
                "  findings: {} error(s), {} warning(s)",
                s.errors, s.warnings
            );
            if let Some(c) = &s.newest_checkpoint {
                let _ = writeln!(
                    out,
                    "  newest checkpoint: record {}, signed {} s ago",
                    c.seq, c.age_secs
                );
            }
            for f in &s.findings {
                let seq = f.seq.map_or_else(|| "-".to_string(), |s| s.to_string());
                let sev = match f.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                let class = f.class.name();
                let _ = writeln!(
                    out,
                    "  {sev:<7} {class:<10} seq {seq:<8} {}: {}",
                    escape_terminal(&f.location),
                    escape_terminal(&f.detail)
                );
            }
            if s.findings_omitted > 0 {
                let _ = writeln!(out, "  ... {} more findings omitted", s.findings_omitted);
            }
        }
        let _ = writeln!(out, "{}", if self.ok { "OK" } else { "FAILED" });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::escape_terminal;

    #[test]
    fn terminal_controls_are_escaped() {
        assert_eq!(escape_terminal("plain é"), "plain é");
        assert_eq!(
            escape_terminal("a\u{1b}[2Jb\u{7}c\u{2028}d\u{202e}e\u{9b}f"),
            "a\\u{001b}[2Jb\\u{0007}c\\u{2028}d\\u{202e}e\\u{009b}f"
        );
    }
}
