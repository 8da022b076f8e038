//! The TOML configuration: the log's settings and its sinks. docs/CONFIG.md
//! documents every key; `examples/` holds complete files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use audit_core::{Durability, Role, SpoolConfig, WhenFull, WriterConfig};
use serde::Deserialize;

/// A configuration error. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or a bad value.
    #[error("config {path}: {detail}")]
    Invalid {
        /// The file (or `<embedded default>`).
        path: PathBuf,
        /// What is wrong, naming the key.
        detail: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Settings of the writer.
    #[serde(default)]
    pub log: LogSection,
    /// The sinks, in order.
    pub sinks: Vec<SinkSection>,
    /// Where relative paths are resolved from (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this came from.
    #[serde(skip)]
    pub origin: PathBuf,
}

/// `[log]`: the writer's settings. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// At least this many sinks must hold a record for any receipt.
    pub min_durable_sinks: usize,
    /// `all_required` (fail closed) or `threshold` (fail open).
    pub default_durability: Durability,
    /// Per `authorization_decision` value, e.g. `deny = "all_required"`.
    pub durability_by_decision: HashMap<String, Durability>,
    /// Most records in one batch.
    pub batch_max_records: usize,
    /// Most bytes in one batch.
    pub batch_max_bytes: usize,
    /// How long to wait for more entries before closing a batch.
    pub linger_ms: u64,
    /// Entries that may wait in the queue.
    pub queue_capacity: usize,
    /// `block` or `fail_fast` when the queue is full.
    pub when_full: WhenFull,
    /// Consecutive successes that bring a degraded sink back.
    pub recovery_successes: u64,
    /// The largest record accepted.
    pub max_record_bytes: usize,
    /// Memory for records a lagging sink still lacks.
    pub retention_memory_bytes: usize,
    /// Directory for records a lagging sink still lacks beyond memory.
    pub spool_dir: Option<PathBuf>,
    /// Disk the spool may use.
    pub spool_max_bytes: u64,
    /// First retry delay after a sink fails.
    pub retry_min_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// How often a sink dropped from the log is asked to rejoin; 0 never.
    pub rejoin_interval_secs: u64,
    /// Signed checkpoints.
    pub checkpoints: Option<CheckpointSection>,
}

/// `[log.checkpoints]`: signing the chain head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// The private key written by `audit keygen` (mode 0600).
    pub key_file: PathBuf,
    /// The log's identity in every checkpoint note.
    pub log_id: String,
    /// A checkpoint after at most this many records.
    #[serde(default = "default_every_records")]
    pub every_records: u64,
    /// A checkpoint at least this often while records arrive.
    #[serde(default = "default_every_secs")]
    pub every_secs: u64,
    /// A checkpoint this often while idle.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// Where every checkpoint note is also written (ideally WORM storage).
    #[serde(default)]
    pub witness_dir: Option<PathBuf>,
    /// The key being rotated out: its signature announces `key_file`'s key.
    #[serde(default)]
    pub previous_key_file: Option<PathBuf>,
    /// A batch's seal is signed once this many records follow the last
    /// signed seal (the others carry a MAC); 0 signs every seal.
    #[serde(default = "default_sign_seals_every_records")]
    pub sign_seals_every_records: u64,
    /// A batch's seal is also signed once the last signed seal is this old.
    #[serde(default = "default_sign_seals_every_ms")]
    pub sign_seals_every_ms: u64,
    /// Adopt, once, a log written without a key (records and no seal).
    #[serde(default)]
    pub adopt_unsealed: bool,
}

fn default_sign_seals_every_records() -> u64 {
    1024
}

fn default_sign_seals_every_ms() -> u64 {
    100
}

fn default_every_records() -> u64 {
    1000
}

fn default_every_secs() -> u64 {
    10
}

fn default_heartbeat_secs() -> u64 {
    60
}

impl Default for LogSection {
    fn default() -> Self {
        let w = WriterConfig::default();
        Self {
            min_durable_sinks: w.min_durable_sinks,
            default_durability: w.default_durability,
            durability_by_decision: HashMap::new(),
            batch_max_records: w.batch_max_records,
            batch_max_bytes: w.batch_max_bytes,
            linger_ms: w.linger.as_millis() as u64,
            queue_capacity: w.queue_capacity,
            when_full: w.when_full,
            recovery_successes: w.recovery_successes,
            max_record_bytes: w.max_record_bytes,
            retention_memory_bytes: w.retention_memory_bytes,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            retry_min_ms: w.retry_min.as_millis() as u64,
            retry_max_ms: w.retry_max.as_millis() as u64,
            rejoin_interval_secs: w.rejoin_interval.map_or(0, |d| d.as_secs()),
            checkpoints: None,
        }
    }
}

/// `[[sinks]]`: one backend.
#[derive(Debug, Clone, Deserialize)]
pub struct SinkSection {
    /// The backend: `file`, `sqlite` or `object`.
    pub kind: String,
    /// A unique name, used in health, errors and `audit verify`.
    pub name: String,
    /// `required` (default) or `optional`.
    #[serde(default = "default_role")]
    pub role: Role,
    /// How long one batch may take on this sink.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The least time between the starts of two writes to this sink; 0 (the
    /// default) writes as soon as the previous write ends.
    #[serde(default)]
    pub min_write_interval_ms: u64,
    /// The backend's own keys.
    #[serde(flatten)]
    pub options: toml::Table,
}

fn default_role() -> Role {
    Role::Required
}

fn default_timeout_ms() -> u64 {
    5000
}

/// `kind = "file"` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// The segment directory.
    pub dir: PathBuf,
    /// Rotate at this size (default 256 MiB; 0 turns size rotation off).
    #[serde(default = "default_segment_bytes")]
    pub max_segment_bytes: u64,
    /// Rotate at this age in seconds (default: never).
    #[serde(default)]
    pub max_segment_age_secs: Option<u64>,
    /// fdatasync each batch before acknowledging it (default true).
    #[serde(default = "yes")]
    pub sync: bool,
    /// Write zeros this far ahead of the records (default 8 MiB; 0 turns it
    /// off), so each fdatasync flushes data only.
    #[serde(default = "default_preallocate_bytes")]
    pub preallocate_bytes: u64,
}

fn default_segment_bytes() -> u64 {
    256 << 20
}

fn default_preallocate_bytes() -> u64 {
    8 << 20
}

fn yes() -> bool {
    true
}

/// `kind = "sqlite"` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// `full` (default) or `normal`.
    #[serde(default = "default_synchronous")]
    pub synchronous: String,
    /// How long to wait for a lock.
    #[serde(default = "default_timeout_ms")]
    pub busy_timeout_ms: u64,
}

/// `kind = "object"` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectOptions {
    /// `fs`, `s3` or `memory`.
    pub service: String,
    /// For `fs`: the root directory.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// For `s3`: the bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// For `s3`: the endpoint URL (AWS when absent).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// For `s3`: the region.
    #[serde(default)]
    pub region: Option<String>,
    /// A key prefix inside the service.
    #[serde(default)]
    pub prefix: String,
    /// The log's identity; objects live under `<prefix>/<log_id>/`.
    pub log_id: String,
    /// Write at most one segment object per this many milliseconds.
    #[serde(default)]
    pub min_segment_interval_ms: u64,
    /// Per-operation timeout.
    #[serde(default = "default_object_timeout_ms")]
    pub op_timeout_ms: u64,
    /// Retries for temporary errors.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// On a store that ignores `If-None-Match`: how long the log's lease
    /// lasts without renewal (at least three times the longest write).
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
}

fn default_lease_ttl_ms() -> u64 {
    30_000
}

fn default_object_timeout_ms() -> u64 {
    10_000
}

fn default_retries() -> usize {
    4
}

fn default_synchronous() -> String {
    "full".into()
}

/// The configuration used when no file is given: a file sink and a SQLite
/// sink under `./audit-data/`, both required.
pub const EMBEDDED_DEFAULT: &str = r#"
[log]
spool_dir = "audit-data/spool"

[[sinks]]
kind = "file"
name = "file"
dir = "audit-data/file"

[[sinks]]
kind = "sqlite"
name = "sqlite"
path = "audit-data/audit.db"
"#;

impl Config {
    /// Reads and validates a config file. Relative paths in it are resolved
    /// from the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, base)
    }

    /// The embedded default, with paths relative to the working directory.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::parse(
            EMBEDDED_DEFAULT,
            Path::new("<embedded default>"),
            PathBuf::new(),
        )
    }

    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path, base_dir: PathBuf) -> Result<Self, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid {
            path: origin.to_path_buf(),
            detail,
        };
        let mut config: Config =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().replace('\n', " ")))?;
        config.base_dir = base_dir;
        config.origin = origin.to_path_buf();
        if config.sinks.is_empty() {
            return Err(invalid(
                "`sinks`: at least one [[sinks]] entry is needed".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in config.sinks.iter().enumerate() {
            if s.name.is_empty() {
                return Err(invalid(format!("sinks[{i}].name must not be empty")));
            }
            if !seen.insert(s.name.clone()) {
                return Err(invalid(format!(
                    "sinks[{i}].name {:?} is used by another sink",
                    s.name
                )));
            }
            if s.timeout_ms == 0 {
                return Err(invalid(format!("sinks[{i}].timeout_ms must be positive")));
            }
            config.backend(i)?;
        }
        let l = &config.log;
        if l.min_durable_sinks == 0 || l.min_durable_sinks > config.sinks.len() {
            return Err(invalid(format!(
                "log.min_durable_sinks is {} but must be between 1 and the number of sinks ({})",
                l.min_durable_sinks,
                config.sinks.len()
            )));
        }
        for (key, v) in [
            ("log.batch_max_records", l.batch_max_records),
            ("log.batch_max_bytes", l.batch_max_bytes),
            ("log.queue_capacity", l.queue_capacity),
            ("log.max_record_bytes", l.max_record_bytes),
        ] {
            if v == 0 {
                return Err(invalid(format!("{key} must be positive")));
            }
        }
        if let Some(c) = &l.checkpoints {
            if c.every_records == 0 || c.every_secs == 0 || c.heartbeat_secs == 0 {
                return Err(invalid("log.checkpoints: every_records, every_secs and heartbeat_secs must be positive".into()));
            }
            if c.log_id.is_empty() || c.log_id.contains('\n') {
                return Err(invalid(
                    "log.checkpoints.log_id must be one non-empty line".into(),
                ));
            }
        }
        if l.retry_min_ms > l.retry_max_ms {
            return Err(invalid(
                "log.retry_min_ms is larger than log.retry_max_ms".into(),
            ));
        }
        Ok(config)
    }

    /// Resolves a path from the config against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The backend options of sink `i`, checked against its kind.
    pub fn backend(&self, i: usize) -> Result<Backend, ConfigError> {
        let s = &self.sinks[i];
        let invalid = |detail: String| ConfigError::Invalid {
            path: self.origin.clone(),
            detail,
        };
        let options = toml::Value::Table(s.options.clone());
        let decode = |kind: &str, e: toml::de::Error| {
            invalid(format!(
                "sinks[{i}] ({kind} sink {:?}): {}",
                s.name,
                e.message()
            ))
        };
        match s.kind.as_str() {
            "file" => {
                let o: FileOptions = options.try_into().map_err(|e| decode("file", e))?;
                Ok(Backend::File(o))
            }
            "sqlite" => {
                let o: SqliteOptions = options.try_into().map_err(|e| decode("sqlite", e))?;
                if !matches!(o.synchronous.as_str(), "full" | "normal") {
                    return Err(invalid(format!(
                        "sinks[{i}].synchronous must be \"full\" or \"normal\", not {:?}",
                        o.synchronous
                    )));
                }
                Ok(Backend::Sqlite(o))
            }
            "object" => {
                let o: ObjectOptions = options.try_into().map_err(|e| decode("object", e))?;
                match o.service.as_str() {
                    "fs" if o.root.is_none() => Err(invalid(format!(
                        "sinks[{i}].root is needed for service = \"fs\""
                    ))),
                    "s3" if o.bucket.is_none() => Err(invalid(format!(
                        "sinks[{i}].bucket is needed for service = \"s3\""
                    ))),
                    "fs" | "s3" | "memory" => Ok(Backend::Object(o)),
                    other => Err(invalid(format!(
                        "sinks[{i}].service {other:?} is not fs, s3 or memory"
                    ))),
                }
            }
            other => Err(invalid(format!(
                "sinks[{i}].kind {other:?} is not a backend (known: file, sqlite, object)"
            ))),
        }
    }

    /// Reads a private key named by `key` in `[log.checkpoints]`.
    fn load_key(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<std::sync::Arc<audit_core::checkpoint::KeyPair>, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.resolve(path);
        let invalid = |detail: String| ConfigError::Invalid {
            path: self.origin.clone(),
            detail,
        };
        let meta = std::fs::metadata(&path)
            .map_err(|e| invalid(format!("log.checkpoints.{key} {}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(invalid(format!(
                "log.checkpoints.{key} {} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(format!("log.checkpoints.{key} {}: {e}", path.display())))?;
        audit_core::checkpoint::KeyPair::from_private_string(&text)
            .map(std::sync::Arc::new)
            .map_err(|e| invalid(format!("log.checkpoints.{key} {}: {e}", path.display())))
    }

    /// The writer settings this config describes, with its signing keys loaded.
    pub fn writer_config(&self) -> Result<WriterConfig, ConfigError> {
        let l = &self.log;
        let checkpoints = match &l.checkpoints {
            None => None,
            Some(c) => Some(audit_core::CheckpointConfig {
                key: self.load_key("key_file", &c.key_file)?,
                log_id: c.log_id.clone(),
                every_records: c.every_records,
                every: Duration::from_secs(c.every_secs),
                heartbeat: Duration::from_secs(c.heartbeat_secs),
                witness_dir: c.witness_dir.as_ref().map(|d| self.resolve(d)),
                witness_interval: Duration::from_secs(1),
                previous_key: c
                    .previous_key_file
                    .as_ref()
                    .map(|p| self.load_key("previous_key_file", p))
                    .transpose()?,
                sign_seals_every_records: c.sign_seals_every_records,
                sign_seals_every: Duration::from_millis(c.sign_seals_every_ms),
                adopt_unsealed: c.adopt_unsealed,
            }),
        };
        Ok(WriterConfig {
            checkpoints,
            batch_max_records: l.batch_max_records,
            batch_max_bytes: l.batch_max_bytes,
            linger: Duration::from_millis(l.linger_ms),
            queue_capacity: l.queue_capacity,
            when_full: l.when_full,
            min_durable_sinks: l.min_durable_sinks,
            default_durability: l.default_durability,
            durability_by_decision: l.durability_by_decision.clone(),
            recovery_successes: l.recovery_successes,
            max_record_bytes: l.max_record_bytes,
            retention_memory_bytes: l.retention_memory_bytes,
            spool: l.spool_dir.as_ref().map(|d| SpoolConfig {
                dir: self.resolve(d),
                max_bytes: l.spool_max_bytes,
            }),
            retry_min: Duration::from_millis(l.retry_min_ms),
            retry_max: Duration::from_millis(l.retry_max_ms),
            rejoin_interval: (l.rejoin_interval_secs > 0)
                .then(|| Duration::from_secs(l.rejoin_interval_secs)),
            ..WriterConfig::default()
        })
    }
}

/// A sink's backend options, checked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// `kind = "file"`.
    File(FileOptions),
    /// `kind = "sqlite"`.
    Sqlite(SqliteOptions),
    /// `kind = "object"`.
    Object(ObjectOptions),
}
