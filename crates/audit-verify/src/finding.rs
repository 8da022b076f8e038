//! Findings and reports, with the stable JSON schema documented in docs/VERIFY.md.

use serde::Serialize;

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// Records after the last signed checkpoint (a warning, with their count).
    UnsignedTail,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// The findings, in the order found.
    pub findings: Vec<Finding>,
    /// Findings left out after the first 10,000.
    pub findings_omitted: u64,
}

/// The verdict on every source.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when every source is ok and the copies agree.
    pub ok: bool,
    /// One entry per source.
    pub sources: Vec<SourceReport>,
}

impl Report {
    /// Human summary, as `audit-verify` prints it.
    pub fn human(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for s in &self.sources {
            let _ = writeln!(
                out,
                "{}: {}",
                s.source,
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
                let _ = writeln!(out, "  time span: {a} .. {b}");
            }
            if let Some(h) = &s.head_hash {
                let _ = writeln!(out, "  head hash: {h}");
            }
            let errors = s
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            let warnings = s.findings.len() - errors;
            let _ = writeln!(out, "  findings: {errors} error(s), {warnings} warning(s)");
            for f in &s.findings {
                let seq = f.seq.map_or_else(|| "-".to_string(), |s| s.to_string());
                let sev = match f.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                let class = serde_json::to_value(f.class)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {sev:<7} {class:<10} seq {seq:<8} {}: {}",
                    f.location, f.detail
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
