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
mod source;

use std::sync::Arc;

pub use finding::{Finding, FindingClass, Report, Severity, SourceReport};
pub use source::{sources_from_config, Source};

use audit_core::StoredRecord;
use check::{analyze, Analyzed, Classifier};

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Report unanchored `genesis` restarts as errors rather than warnings.
    pub strict: bool,
    /// Items read per batch.
    pub batch: usize,
    /// Show a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            strict: false,
            batch: 8192,
            progress: false,
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
    for r in &mut reports {
        r.ok = !r.findings.iter().any(|f| f.severity == Severity::Error);
    }
    Ok(Report {
        ok: reports.iter().all(|r| r.ok),
        sources: reports,
    })
}

async fn verify_one(source: &Source, options: &VerifyOptions) -> Result<SourceReport, VerifyError> {
    let (reader, starts, segments) = source.open().await?;
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
    let classifier_thread = std::thread::Builder::new()
        .name("audit-verify-classify".into())
        .spawn(move || {
            let mut classifier = Classifier::new(strict, starts);
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
    let ok = !classifier.has_errors();
    Ok(SourceReport {
        source: source.describe(),
        ok,
        records: classifier.records,
        first_seq: classifier.first_seq,
        last_seq: classifier.last_seq,
        head_hash: classifier.head.map(|(_, h)| h.to_hex()),
        first_time: classifier.first_time,
        last_time: classifier.last_time,
        segments,
        chains: classifier.chains,
        findings: classifier.findings,
        findings_omitted: classifier.omitted,
    })
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
