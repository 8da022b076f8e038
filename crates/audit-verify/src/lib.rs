//! Checks an auditlog chain in any backend, names the tampering, and compares copies.
//!
//! [`verify`] reads each [`Source`] once, streaming with bounded memory:
//! records are parsed and hashed in parallel batches (both cores), then a
//! sequential pass checks sequences and links and classifies what it finds
//! ([`FindingClass`]). With several sources, a second pass walks them in
//! lockstep and reports the copy that diverges and where, and any copy that
//! ends early.
//!
//! ```no_run
//! # async fn run() -> Result<(), audit_verify::VerifyError> {
//! use audit_verify::{verify, Source, VerifyOptions};
//! let report = verify(&[Source::parse("file:/var/log/audit")?], &VerifyOptions::default()).await?;
//! println!("{}", report.human());
//! assert!(report.ok);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod check;
pub mod cli;
mod compare;
mod finding;
mod signed;
mod source;
mod witness;

use std::sync::Arc;

pub use finding::{
    escape_terminal, CheckpointAge, ClassCount, Finding, FindingClass, Report, Severity,
    SourceReport,
};
pub use source::{ConfigChecks, Source};

use audit_core::StoredRecord;
use check::{analyze, Analyzed, Classifier};

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Report unanchored `genesis` restarts in seed-format files, and an
    /// unsigned tail of any length, as errors rather than warnings.
    pub strict: bool,
    /// Items read per batch.
    pub batch: usize,
    /// Show a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
    /// Trusted checkpoint keys. When set, every checkpoint and key rotation is
    /// checked, and records after the last checkpoint are reported.
    pub public_keys: Vec<audit_core::checkpoint::PublicKey>,
    /// MAC keys (docs/FORMAT.md section 9): with one, every MAC seal is
    /// checked and counts as a seal; without, MAC seals are records like any
    /// other and the records after the last signed seal are the unsigned tail.
    pub mac_keys: Vec<audit_core::seal_mac::SealMacKey>,
    /// The writer's own MAC keys, derived from private keys (`--mac-key` given
    /// a private key, or `--config`): with one, a MAC seal's `writer_mac` is
    /// checked too, so a holder of the auditors' MAC key cannot forge a tail
    /// that this verifier passes and the writer refuses.
    pub writer_mac_keys: Vec<audit_core::seal_mac::SealMacKey>,
    /// A witness directory holding checkpoint notes published by the writer.
    pub witness: Option<std::path::PathBuf>,
    /// The log's identity: every signed note must name it. Without it, every
    /// signed note must name the same log as the first.
    pub log_id: Option<String>,
    /// The newest valid checkpoint must be younger than this (needs keys).
    pub max_age: Option<std::time::Duration>,
    /// Every source was written by auditlog's writer (`--config` knows it):
    /// a single file holding a second chain is not the seed proxy's, which
    /// restarted its chain at every start, so the restart is an error. A
    /// trusted key says the same (the seed never signed).
    pub written_by_auditlog: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            strict: false,
            batch: 8192,
            progress: false,
            public_keys: Vec::new(),
            mac_keys: Vec::new(),
            writer_mac_keys: Vec::new(),
            witness: None,
            log_id: None,
            max_age: None,
            written_by_auditlog: false,
        }
    }
}

/// Why verification could not run at all (integrity problems are findings).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Bad arguments or an unusable config.
    #[error("{0}")]
    Usage(String),
    /// A source could not be opened or read.
    #[error("cannot read {name}: {detail}")]
    Source {
        /// The source.
        name: String,
        /// Why.
        detail: String,
    },
}

/// Verifies every source, then compares them when there are several.
pub async fn verify(sources: &[Source], options: &VerifyOptions) -> Result<Report, VerifyError> {
    if sources.is_empty() {
        return Err(VerifyError::Usage("no source given".into()));
    }
    let mut reports = Vec::with_capacity(sources.len());
    for s in sources {
        reports.push(verify_one(s, options).await?);
    }
    if sources.len() > 1 {
        compare::compare(sources, &mut reports, options).await?;
    }
    // Every finding is counted, kept or not: the verdict never depends on
    // how many were stored.
    for r in &mut reports {
        r.ok = !r.has_errors();
    }
    Ok(Report {
        ok: reports.iter().all(|r| r.ok),
        sources: reports,
    })
}

/// Findings of the store's own integrity check, for a SQLite source: an
/// index that disagrees with the table is tampering that reading the table
/// alone cannot see (docs/THREAT_MODEL.md).
async fn integrity_findings(source: &Source) -> Result<Vec<Finding>, VerifyError> {
    match source {
        #[cfg(feature = "sqlite")]
        Source::Sqlite(p) => {
            let unreadable = |e: audit_core::SinkError| VerifyError::Source {
                name: source.describe(),
                detail: e.to_string(),
            };
            let log = sink_sqlite::SqliteLog::open_read_only(p)
                .await
                .map_err(unreadable)?;
            let problems = log.integrity_problems().await.map_err(unreadable)?;
            Ok(problems
                .into_iter()
                .map(|p| Finding {
                    class: FindingClass::Modified,
                    severity: Severity::Error,
                    seq: None,
                    location: source.describe(),
                    detail: format!(
                        "SQLite's integrity check: {p} (an index or page was edited: audit query may not return what the records table holds)"
                    ),
                })
                .collect())
        }
        _ => Ok(Vec::new()),
    }
}

async fn verify_one(source: &Source, options: &VerifyOptions) -> Result<SourceReport, VerifyError> {
    // The report names the log verified, also when the prefix's only log
    // was taken for want of `log=`.
    #[cfg(feature = "object")]
    let resolved = source.resolve_log().await?;
    #[cfg(feature = "object")]
    let source = &resolved;
    let (reader, starts, segments) = source.open().await?;
    // A segment directory, a database or an object log was written by our
    // writer; a single file may be the seed proxy's.
    let ours = match source {
        Source::File(p) => {
            p.is_dir() || options.written_by_auditlog || !options.public_keys.is_empty()
        }
        _ => true,
    };
    let read_err = |e: audit_core::SinkError| VerifyError::Source {
        name: source.describe(),
        detail: e.to_string(),
    };
    let mut cursor = reader.read_from(0).await.map_err(read_err)?;
    let progress = options.progress.then(|| {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal().then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_message(source.describe());
            pb
        })
    });
    let progress = progress.flatten();
    // Classification is sequential; it runs on its own thread so that it
    // overlaps with reading and with the parallel analysis of the next batch.
    let (to_classifier, batches) = std::sync::mpsc::sync_channel::<Vec<Analyzed>>(2);
    let strict = options.strict;
    let (signed, mut witness_findings) = signatures(options)?;
    witness_findings.extend(integrity_findings(source).await?);
    let classifier_thread = std::thread::Builder::new()
        .name("audit-verify-classify".into())
        .spawn(move || {
            let mut classifier = Classifier::new(strict, ours, starts, signed);
            for f in witness_findings {
                classifier.findings.push(f);
            }
            for batch in batches {
                for a in batch {
                    classifier.push(a);
                }
            }
            classifier.finish();
            classifier
        })
        .map_err(|e| VerifyError::Source {
            name: source.describe(),
            detail: format!("cannot start the classifier thread: {e}"),
        })?;
    let mut pending: Option<Vec<StoredRecord>> =
        cursor.next_batch(options.batch).await.map_err(read_err)?;
    // Read the next batch while the current one is parsed and hashed.
    while let Some(items) = pending.take() {
        let n = items.len() as u64;
        let analyzing = tokio::task::spawn_blocking(move || analyze_batch(items));
        let (next, analyzed) = tokio::join!(cursor.next_batch(options.batch), analyzing);
        let analyzed = analyzed.map_err(|e| VerifyError::Source {
            name: source.describe(),
            detail: format!("analysis task failed: {e}"),
        })?;
        let sender = to_classifier.clone();
        tokio::task::spawn_blocking(move || sender.send(analyzed))
            .await
            .map_err(|e| VerifyError::Source {
                name: source.describe(),
                detail: format!("classifier hand-off failed: {e}"),
            })?
            .map_err(|_| VerifyError::Source {
                name: source.describe(),
                detail: "the classifier thread stopped".into(),
            })?;
        if let Some(pb) = &progress {
            pb.inc(n);
        }
        pending = next.map_err(read_err)?;
    }
    drop(to_classifier);
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let classifier = classifier_thread.join().map_err(|_| VerifyError::Source {
        name: source.describe(),
        detail: "the classifier thread panicked".into(),
    })?;
    let mut classifier = classifier;
    if classifier.records == 0 && classifier.findings.kept.is_empty() {
        // Nothing is not intact: a mistyped path, prefix or log id must not
        // pass as an empty, untouched log.
        return Err(VerifyError::Source {
            name: source.describe(),
            detail: "holds no records (is the path, prefix or log id right?)".into(),
        });
    }
    let mut report = SourceReport {
        source: source.describe(),
        ok: false,
        records: classifier.records,
        first_seq: classifier.first_seq,
        last_seq: classifier.last_seq,
        head_hash: classifier.head.map(|(_, h)| h.to_hex()),
        first_time: classifier.first_time.take(),
        last_time: classifier.last_time.take(),
        segments,
        chains: classifier.chains,
        errors: 0,
        warnings: 0,
        counts: Vec::new(),
        newest_checkpoint: classifier
            .signed
            .as_ref()
            .and_then(|s| s.newest_checkpoint()),
        findings: Vec::new(),
        findings_omitted: 0,
    };
    std::mem::take(&mut classifier.findings).into_report(&mut report);
    report.ok = !report.has_errors();
    Ok(report)
}

/// Signature state for one source: the trusted keys, the expectations, and
/// the witness's notes; plus findings about the witness directory itself.
fn signatures(
    options: &VerifyOptions,
) -> Result<(Option<signed::Signed>, Vec<Finding>), VerifyError> {
    if options.public_keys.is_empty() {
        if options.witness.is_some() {
            return Err(VerifyError::Usage(
                "--witness needs --public-key to check the witness's signature".into(),
            ));
        }
        if !options.mac_keys.is_empty() {
            return Err(VerifyError::Usage(
                "--mac-key needs --public-key: MAC seals are checked between signed seals".into(),
            ));
        }
        if options.log_id.is_some() {
            // Silently ignored, it would look checked: only signed notes
            // name the log.
            return Err(VerifyError::Usage(
                "--log-id needs --public-key: only signed notes name the log".into(),
            ));
        }
        if options.max_age.is_some() {
            return Err(VerifyError::Usage(
                "--max-age needs --public-key: only a signed checkpoint's time can be trusted"
                    .into(),
            ));
        }
        return Ok((None, Vec::new()));
    }
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    if let Some(dir) = &options.witness {
        let (found, misnamed) = witness::read_dir(dir).map_err(|e| VerifyError::Source {
            name: format!("witness {}", dir.display()),
            detail: e,
        })?;
        notes = found;
        for (path, why) in misnamed {
            findings.push(Finding {
                class: FindingClass::Malformed,
                severity: Severity::Error,
                seq: None,
                location: path.display().to_string(),
                detail: format!("witness note {why}: a note is chosen by its content, and a name that says otherwise was not written by the writer"),
            });
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let signed = signed::Signed::new(signed::Expect {
        keys: options.public_keys.clone(),
        mac_keys: options.mac_keys.clone(),
        writer_mac_keys: options.writer_mac_keys.clone(),
        log_id: options.log_id.clone(),
        max_age_secs: options.max_age.map(|d| d.as_secs()),
        witness: notes,
        now,
        strict: options.strict,
    });
    Ok((Some(signed), findings))
}

fn analyze_batch(items: Vec<StoredRecord>) -> Vec<Analyzed> {
    use rayon::prelude::*;
    items
        .into_par_iter()
        .with_min_len(256)
        .map(analyze)
        .collect()
}

/// A reader usable by the verifier, for callers with their own backends.
pub type SharedReader = Arc<dyn audit_core::RecordReader>;
