//! Sources: what the verifier reads, and how a source string names one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use audit_core::RecordReader;

use crate::VerifyError;

/// A log to check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A JSONL file or a directory of segments.
    File(PathBuf),
    /// A SQLite database written by the SQLite sink.
    Sqlite(PathBuf),
}

impl Source {
    /// Parses `file:PATH`, `sqlite:PATH`, or a bare path (a file).
    pub fn parse(spec: &str) -> Result<Self, VerifyError> {
        if let Some(p) = spec.strip_prefix("file:") {
            return Ok(Source::File(p.into()));
        }
        if let Some(p) = spec.strip_prefix("sqlite:") {
            return Ok(Source::Sqlite(p.into()));
        }
        if let Some((scheme, _)) = spec.split_once("://") {
            return Err(VerifyError::Usage(format!(
                "source {spec:?}: the {scheme}:// scheme needs the object-storage backend, which this build does not include"
            )));
        }
        if let Some((scheme, _)) = spec.split_once(':') {
            if !scheme.is_empty()
                && scheme.chars().all(|c| c.is_ascii_alphanumeric())
                && !Path::new(spec).exists()
            {
                return Err(VerifyError::Usage(format!(
                    "source {spec:?}: unknown scheme {scheme:?} (use file:, sqlite: or a path)"
                )));
            }
        }
        Ok(Source::File(spec.into()))
    }

    /// How the source is named in reports.
    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => format!("file:{}", p.display()),
            Source::Sqlite(p) => format!("sqlite:{}", p.display()),
        }
    }

    /// Opens a reader, checking the source exists first, plus the first
    /// sequence each segment file's name promises.
    pub(crate) async fn open(
        &self,
    ) -> Result<(Arc<dyn RecordReader>, HashMap<PathBuf, u64>, u64), VerifyError> {
        #[allow(unused_variables)] // unused when no backend feature is on
        let unreadable = |e: String| VerifyError::Source {
            name: self.describe(),
            detail: e,
        };
        match self {
            #[cfg(feature = "file")]
            Source::File(p) => {
                let log = sink_file::FileLog::open(p).with_name(self.describe());
                let files = log.files().map_err(|e| unreadable(e.to_string()))?;
                let starts: HashMap<PathBuf, u64> = files
                    .iter()
                    .filter_map(|(p, s)| s.map(|s| (p.clone(), s)))
                    .collect();
                Ok((Arc::new(log), starts, files.len() as u64))
            }
            #[cfg(feature = "sqlite")]
            Source::Sqlite(p) => {
                let log = sink_sqlite::SqliteLog::open_read_only(p)
                    .await
                    .map_err(|e| unreadable(e.to_string()))?;
                Ok((Arc::new(log), HashMap::new(), 1))
            }
            #[allow(unreachable_patterns)]
            other => Err(VerifyError::Usage(format!(
                "source {}: this build does not include its backend",
                other.describe()
            ))),
        }
    }
}

/// The sources a config file's sinks name. Reads only `[[sinks]]` entries'
/// `kind` and their path keys (`dir` for file, `path` for sqlite).
pub fn sources_from_config(path: &Path) -> Result<Vec<Source>, VerifyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| VerifyError::Usage(format!("config {}: {e}", path.display())))?;
    let value: toml::Value = toml::from_str(&text)
        .map_err(|e| VerifyError::Usage(format!("config {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let sinks = value
        .get("sinks")
        .and_then(|s| s.as_array())
        .ok_or_else(|| VerifyError::Usage(format!("config {}: no [[sinks]]", path.display())))?;
    let mut out = Vec::new();
    for (i, sink) in sinks.iter().enumerate() {
        let key = |k: &str| sink.get(k).and_then(|v| v.as_str());
        let kind = key("kind").ok_or_else(|| {
            VerifyError::Usage(format!(
                "config {}: sinks[{i}].kind is missing",
                path.display()
            ))
        })?;
        let resolve = |k: &str| -> Result<PathBuf, VerifyError> {
            let p = key(k).ok_or_else(|| {
                VerifyError::Usage(format!(
                    "config {}: sinks[{i}].{k} is missing",
                    path.display()
                ))
            })?;
            let p = PathBuf::from(p);
            Ok(if p.is_absolute() { p } else { base.join(p) })
        };
        match kind {
            "file" => out.push(Source::File(resolve("dir")?)),
            "sqlite" => out.push(Source::Sqlite(resolve("path")?)),
            other => {
                return Err(VerifyError::Usage(format!(
                    "config {}: sinks[{i}].kind {other:?} cannot be verified by this build",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}
