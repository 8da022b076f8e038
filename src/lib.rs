//! auditlog: a tamper-evident audit log for Rust services.
//!
//! This facade builds the fan-out writer ([`audit_core::AuditLog`]) from a
//! TOML [`config::Config`], with each backend compiled in by a Cargo feature
//! (`file`, `sqlite`). The `audit` binary is its command line.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = auditlog::config::Config::load("audit.toml".as_ref())?;
//! let log = auditlog::open(&config).await?;
//! let entry: auditlog::AuditEntry = serde_json::from_str(r#"{"agent_id":"agent-1","tool_called":"read_file"}"#)?;
//! let receipt = log.append(&entry).await?;
//! println!("durable as record {} ({})", receipt.seq, receipt.hash);
//! log.close().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod config;

use std::sync::Arc;
use std::time::Duration;

pub use audit_core::{AuditEntry, AuditLog, Durability, HealthSnapshot, Receipt};
use audit_core::{OpenError, Sink, SinkError, SinkSpec};
use config::{Backend, Config, ConfigError};

/// Why the log could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A sink could not be opened. The message is the sink's error, which
    /// already names the sink.
    #[error("{source}")]
    Sink {
        /// The sink's name.
        name: String,
        /// Why.
        #[source]
        source: SinkError,
    },
    /// The writer refused to start (a fork, a failed backfill…).
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// Opens every sink the config names, in order.
pub async fn open_sinks(config: &Config) -> Result<Vec<SinkSpec>, BuildError> {
    let mut specs = Vec::with_capacity(config.sinks.len());
    for (i, s) in config.sinks.iter().enumerate() {
        let sink = open_sink(config, i).await?;
        specs.push(SinkSpec {
            sink,
            role: s.role,
            timeout: Duration::from_millis(s.timeout_ms),
            min_write_interval: Duration::from_millis(s.min_write_interval_ms),
        });
    }
    Ok(specs)
}

async fn open_sink(config: &Config, i: usize) -> Result<Arc<dyn Sink>, BuildError> {
    let s = &config.sinks[i];
    let name = s.name.clone();
    let wrap = |source: SinkError| BuildError::Sink {
        name: name.clone(),
        source,
    };
    match config.backend(i)? {
        #[cfg(feature = "file")]
        Backend::File(o) => {
            let mut c = sink_file::FileSinkConfig::new(&s.name, config.resolve(&o.dir));
            c.max_segment_bytes = (o.max_segment_bytes > 0).then_some(o.max_segment_bytes);
            c.max_segment_age = o.max_segment_age_secs.map(Duration::from_secs);
            c.max_record_bytes = config.log.max_record_bytes;
            c.sync = o.sync;
            c.preallocate_bytes = o.preallocate_bytes;
            Ok(Arc::new(sink_file::FileSink::open(c).await.map_err(wrap)?))
        }
        #[cfg(feature = "sqlite")]
        Backend::Sqlite(o) => {
            let path = config.resolve(&o.path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    wrap(SinkError::Io {
                        sink: s.name.clone(),
                        op: "create directory",
                        path: parent.to_path_buf(),
                        source: e,
                    })
                })?;
            }
            let mut c = sink_sqlite::SqliteSinkConfig::new(&s.name, path);
            c.synchronous_full = o.synchronous == "full";
            c.busy_timeout = Duration::from_millis(o.busy_timeout_ms);
            Ok(Arc::new(
                sink_sqlite::SqliteSink::open(c).await.map_err(wrap)?,
            ))
        }
        #[cfg(feature = "object")]
        Backend::Object(o) => {
            let c = object_config(config, &s.name, &o).map_err(BuildError::Config)?;
            Ok(Arc::new(
                sink_object::ObjectSink::open(c).await.map_err(wrap)?,
            ))
        }
        #[allow(unreachable_patterns)]
        other => {
            let feature = match other {
                Backend::File(_) => "file",
                Backend::Sqlite(_) => "sqlite",
                Backend::Object(_) => "object",
            };
            Err(BuildError::Config(ConfigError::Invalid {
                path: config.origin.clone(),
                detail: format!(
                    "sinks[{i}].kind = {:?} needs auditlog's `{feature}` feature, which this build does not have",
                    s.kind
                ),
            }))
        }
    }
}

/// The object sink settings for `[[sinks]]` entry `name`.
#[cfg(feature = "object")]
pub fn object_config(
    config: &Config,
    name: &str,
    o: &config::ObjectOptions,
) -> Result<sink_object::ObjectSinkConfig, ConfigError> {
    let service = match o.service.as_str() {
        "fs" => sink_object::Service::Fs {
            root: config.resolve(o.root.as_deref().unwrap_or(std::path::Path::new("."))),
        },
        "s3" => sink_object::Service::S3(sink_object::S3Options {
            bucket: o.bucket.clone().unwrap_or_default(),
            endpoint: o.endpoint.clone(),
            region: o.region.clone(),
            access_key_id: None,
            secret_access_key: None,
        }),
        _ => sink_object::Service::Memory,
    };
    let mut c =
        sink_object::ObjectSinkConfig::new(name, service, o.prefix.clone(), o.log_id.clone());
    c.min_segment_interval = Duration::from_millis(o.min_segment_interval_ms);
    c.op_timeout = Duration::from_millis(o.op_timeout_ms);
    c.retries = o.retries;
    c.lease_ttl = Duration::from_millis(o.lease_ttl_ms);
    Ok(c)
}

/// Opens the sinks and starts the writer: resumes the chain from the sinks'
/// heads, refuses forks, and backfills sinks that are behind.
pub async fn open(config: &Config) -> Result<AuditLog, BuildError> {
    let writer = config.writer_config()?;
    let sinks = open_sinks(config).await?;
    Ok(AuditLog::open(writer, sinks).await?)
}

/// What `audit verify --config` checks: every sink of `config` as a source,
/// and its `[log.checkpoints]` (the public halves of `key_file` and
/// `previous_key_file`, oldest first; `witness_dir`; `log_id`). Read by the
/// same parser as `audit append`, so a config that `append` refuses cannot be
/// verified as something else. Opens nothing and creates nothing.
pub fn verify_plan(config: &Config) -> Result<audit_verify::cli::FromConfig, ConfigError> {
    use audit_verify::Source;
    let invalid = |detail: String| ConfigError::Invalid {
        path: config.origin.clone(),
        detail,
    };
    let mut sources = Vec::new();
    for i in 0..config.sinks.len() {
        let source = match config.backend(i)? {
            Backend::File(o) => Source::File(config.resolve(&o.dir)),
            Backend::Sqlite(o) => Source::Sqlite(config.resolve(&o.path)),
            Backend::Object(o) => match o.service.as_str() {
                "fs" => Source::Fs {
                    root: config.resolve(o.root.as_deref().unwrap_or(std::path::Path::new("."))),
                    prefix: o.prefix.clone(),
                    log_id: Some(o.log_id.clone()),
                },
                "s3" => Source::S3 {
                    bucket: o.bucket.clone().unwrap_or_default(),
                    prefix: o.prefix.clone(),
                    endpoint: o.endpoint.clone(),
                    region: o.region.clone(),
                    log_id: Some(o.log_id.clone()),
                },
                other => {
                    return Err(invalid(format!(
                        "sinks[{i}].service {other:?} holds nothing another process can read"
                    )))
                }
            },
        };
        sources.push(source);
    }
    let mut checks = audit_verify::ConfigChecks::default();
    if let Some(cp) = config.writer_config()?.checkpoints {
        checks
            .keys
            .extend(cp.previous_key.as_ref().map(|k| k.public()));
        checks.keys.push(cp.key.public());
        checks
            .mac_keys
            .extend(cp.previous_key.as_ref().map(|k| k.seal_mac_key()));
        checks.mac_keys.push(cp.key.seal_mac_key());
        checks
            .writer_mac_keys
            .extend(cp.previous_key.as_ref().map(|k| k.writer_mac_key()));
        checks.writer_mac_keys.push(cp.key.writer_mac_key());
        checks.witness = cp.witness_dir.clone();
        checks.log_id = Some(cp.log_id.clone());
    }
    Ok(audit_verify::cli::FromConfig { sources, checks })
}
