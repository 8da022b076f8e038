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
    /// Trusted checkpoint keys. When set, every checkpoint and key rotation is
    /// checked, and records after the last checkpoint are reported.
    pub public_keys: Vec<audit_core::checkpoint::PublicKey>,
    /// A witness directory holding checkpoint notes published by the writer.
    pub witness: Option<std::path::PathBuf>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            strict: false,
            batch: 8192,
            progress: false,
            public_keys: Vec::new(),
            witness: None,
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
    let signatures = signatures(source, options)?;
    let classifier_thread = std::thread::Builder::new()
        .name("audit-verify-classify".into())
        .spawn(move || {
            let mut classifier = Classifier::new(strict, starts, signatures);
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

/// Signature state for one source: the trusted keys and the witness's latest note.
fn signatures(
    source: &Source,
    options: &VerifyOptions,
) -> Result<Option<check::Signatures>, VerifyError> {
    if options.public_keys.is_empty() {
        if options.witness.is_some() {
            return Err(VerifyError::Usage(
                "--witness needs --public-key to check the witness's signature".into(),
            ));
        }
        return Ok(None);
    }
    let witness = match &options.witness {
        None => None,
        Some(dir) => {
            let found =
                audit_core::checkpoint::latest_witness(dir).map_err(|e| VerifyError::Source {
                    name: format!("witness {}", dir.display()),
                    detail: e.to_string(),
                })?;
            match found {
                None => None,
                Some((path, note)) => {
                    // The signature is checked at the end, with every key the chain announced.
                    let body = note.split("\n\n").next().unwrap_or("");
                    let mut lines = body.split('\n');
                    let _origin = lines.next();
                    let seq = lines.next().and_then(|l| l.parse::<u64>().ok());
                    let head = lines.next().and_then(|l| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(l).ok()
                    });
                    match (seq, head.and_then(|h| <[u8; 32]>::try_from(h).ok())) {
                        (Some(seq), Some(head)) => Some(check::Witness {
                            location: path.display().to_string(),
                            note,
                            seq,
                            head: audit_core::Hash32(head),
                            seen: None,
                        }),
                        _ => {
                            return Err(VerifyError::Source {
                                name: source.describe(),
                                detail: format!("witness note {} is malformed", path.display()),
                            })
                        }
                    }
                }
            }
        }
    };
    Ok(Some(check::Signatures::new(
        options.public_keys.clone(),
        witness,
    )))
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
