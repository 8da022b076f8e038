//! Sources: what the verifier reads, and how a source string names one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use audit_core::RecordReader;

use crate::VerifyError;

/// Segment files and objects, with the first sequence each one's name
/// promises and, for object names of the old `<first>-<last>` form, the last.
pub(crate) type SegmentNames = HashMap<PathBuf, (u64, Option<u64>)>;

/// A log to check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A JSONL file or a directory of segments.
    File(PathBuf),
    /// A SQLite database written by the SQLite sink.
    Sqlite(PathBuf),
    /// A log in a directory through OpenDAL's fs service (`fs:DIR?prefix=P&log=ID`).
    Fs {
        /// The root directory.
        root: PathBuf,
        /// The key prefix.
        prefix: String,
        /// The log id; the only one under the prefix when absent.
        log_id: Option<String>,
    },
    /// A log in an S3 bucket (`s3://BUCKET/PREFIX?endpoint=URL&region=R&log=ID`),
    /// with credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
        /// The endpoint URL.
        endpoint: Option<String>,
        /// The region.
        region: Option<String>,
        /// The log id; the only one under the prefix when absent.
        log_id: Option<String>,
    },
}

/// The parameters of a source URL, percent-decoded (`url`'s
/// `application/x-www-form-urlencoded` reading: `+` is a space, so write a
/// plus as `%2B`); each name at most once and one of `known`.
fn query_params(
    spec: &str,
    url: &url::Url,
    known: &[&str],
) -> Result<std::collections::HashMap<String, String>, VerifyError> {
    let mut out = std::collections::HashMap::new();
    for (k, v) in url.query_pairs() {
        if !known.contains(&k.as_ref()) {
            return Err(VerifyError::Usage(format!(
                "source {spec:?}: unknown parameter {k:?} ({})",
                known.join(", ")
            )));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(VerifyError::Usage(format!(
                "source {spec:?}: parameter {k:?} given twice"
            )));
        }
    }
    Ok(out)
}

/// A URL's path, percent-decoded, as a file-system path (any bytes).
fn decoded_path(path: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
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
        if spec.starts_with("fs:") || spec.starts_with("s3://") {
            // One reading of source URLs, by the `url` crate, with
            // percent-decoding; `file:` and `sqlite:` take the rest verbatim.
            let url = url::Url::parse(spec)
                .map_err(|e| VerifyError::Usage(format!("source {spec:?}: {e}")))?;
            if url.fragment().is_some() {
                return Err(VerifyError::Usage(format!(
                    "source {spec:?}: a fragment (`#…`) means nothing here"
                )));
            }
            if url.scheme() == "fs" {
                let mut q = query_params(spec, &url, &["prefix", "log"])?;
                let root = decoded_path(url.path());
                if root.as_os_str().is_empty() {
                    return Err(VerifyError::Usage(format!("source {spec:?}: no directory")));
                }
                return Ok(Source::Fs {
                    root,
                    prefix: q.remove("prefix").unwrap_or_default(),
                    log_id: q.remove("log"),
                });
            }
            let bucket = url.host_str().unwrap_or_default().to_string();
            if bucket.is_empty() {
                return Err(VerifyError::Usage(format!("source {spec:?}: no bucket")));
            }
            if url.port().is_some() || !url.username().is_empty() || url.password().is_some() {
                return Err(VerifyError::Usage(format!(
                    "source {spec:?}: s3://BUCKET/PREFIX takes no port or credentials (endpoint=URL; AWS_ACCESS_KEY_ID)"
                )));
            }
            let mut q = query_params(spec, &url, &["endpoint", "region", "log"])?;
            let prefix = percent_encoding::percent_decode_str(url.path())
                .decode_utf8()
                .map_err(|e| VerifyError::Usage(format!("source {spec:?}: prefix: {e}")))?;
            return Ok(Source::S3 {
                bucket,
                prefix: prefix.trim_matches('/').to_string(),
                endpoint: q.remove("endpoint"),
                region: q.remove("region"),
                log_id: q.remove("log"),
            });
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
            Source::Fs {
                root,
                prefix,
                log_id,
            } => match log_id {
                Some(id) => format!("fs:{}?prefix={prefix}&log={id}", root.display()),
                None => format!("fs:{}?prefix={prefix}", root.display()),
            },
            Source::S3 {
                bucket,
                prefix,
                log_id,
                ..
            } => match log_id {
                Some(id) => format!("s3://{bucket}/{prefix}?log={id}"),
                None => format!("s3://{bucket}/{prefix}"),
            },
        }
    }

    /// Opens a reader, checking the source exists first, plus the first
    /// sequence each segment file's name promises.
    pub(crate) async fn open(
        &self,
    ) -> Result<(Arc<dyn RecordReader>, SegmentNames, u64), VerifyError> {
        #[allow(unused_variables)] // unused when no backend feature is on
        let unreadable = |e: String| VerifyError::Source {
            name: self.describe(),
            detail: e,
        };
        match self {
            #[cfg(feature = "file")]
            Source::File(p) => {
                check_file_source(p).map_err(unreadable)?;
                let log = sink_file::FileLog::open(p).with_name(self.describe());
                let files = log.files().map_err(|e| unreadable(e.to_string()))?;
                let starts: SegmentNames = files
                    .iter()
                    .filter_map(|(p, s)| s.map(|s| (p.clone(), (s, None))))
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
            #[cfg(feature = "object")]
            Source::Fs { .. } | Source::S3 { .. } => {
                let log = self.object_log().await.map_err(unreadable)?;
                let segments = log
                    .segment_names()
                    .await
                    .map_err(|e| unreadable(e.to_string()))?;
                // A wrong log= or prefix= reads as an empty log; say so
                // rather than pass it as a log with nothing wrong in it.
                if segments.is_empty() {
                    return Err(unreadable(format!(
                        "no log at {}: it holds no records (no segments under {}segments/)",
                        log.key_dir(),
                        log.key_dir()
                    )));
                }
                // Object keys go in as paths: the classifier looks up the
                // key of a record at `Location::Object { line: 1 }` here.
                let starts: SegmentNames = segments
                    .iter()
                    .map(|s| (PathBuf::from(&s.key), (s.first, s.last)))
                    .collect();
                Ok((Arc::new(log), starts, segments.len() as u64))
            }
            #[allow(unreachable_patterns)]
            other => Err(VerifyError::Usage(format!(
                "source {}: this build does not include its backend",
                other.describe()
            ))),
        }
    }
}

/// The first 16 bytes of every SQLite database file.
#[cfg(feature = "file")]
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Refuses what cannot be a file log before reading it as one: a missing
/// path, and a SQLite database. Read as JSONL, a database is a few malformed
/// "lines" of binary pages, so a mistyped source would look like a tampered
/// log, or, with no newline in it, like an empty one.
#[cfg(feature = "file")]
fn check_file_source(path: &Path) -> Result<(), String> {
    use std::io::Read;
    // Follows symbolic links, as the reader will.
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist", path.display()))
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !meta.is_file() {
        // A directory is read as segments; anything else the reader refuses
        // with its own message.
        return Ok(());
    }
    // O_NONBLOCK and the regular-file check, as for a segment: the path may
    // have been replaced by a FIFO since the stat.
    let mut f = sink_file::segments::open_segment(path, false)
        .map_err(|e| format!("{}: open: {e}", path.display()))?;
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{}: read: {e}", path.display())),
        }
    }
    if &head[..got] == SQLITE_HEADER {
        return Err(format!(
            "{} is a SQLite database, not a file log; verify it as sqlite:{}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(feature = "object")]
impl Source {
    /// This source with its log id filled in: for an object source given
    /// without `log=`, the only log under its prefix, so that the report
    /// names the log it verified (a log planted in place of a deleted one
    /// is then seen by its name).
    pub async fn resolve_log(&self) -> Result<Source, VerifyError> {
        let (Source::Fs { log_id: None, .. } | Source::S3 { log_id: None, .. }) = self else {
            return Ok(self.clone());
        };
        let unreadable = |detail| VerifyError::Source {
            name: self.describe(),
            detail,
        };
        let (service, prefix, _) = self.service().map_err(unreadable)?;
        let id = self
            .sole_log_id(&service, &prefix)
            .await
            .map_err(unreadable)?;
        let mut resolved = self.clone();
        if let Source::Fs { log_id, .. } | Source::S3 { log_id, .. } = &mut resolved {
            *log_id = Some(id);
        }
        Ok(resolved)
    }

    async fn sole_log_id(
        &self,
        service: &sink_object::Service,
        prefix: &str,
    ) -> Result<String, String> {
        let probe =
            sink_object::ObjectSinkConfig::new(self.describe(), service.clone(), prefix, "");
        let ids = sink_object::ObjectLog::log_ids(&probe)
            .await
            .map_err(|e| e.to_string())?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("no log under this prefix".into()),
            many => Err(format!(
                "several logs under this prefix ({}); name one with log=ID",
                many.join(", ")
            )),
        }
    }

    /// The service, prefix and log id of an object source.
    fn service(&self) -> Result<(sink_object::Service, String, Option<String>), String> {
        Ok(match self {
            Source::Fs {
                root,
                prefix,
                log_id,
            } => {
                // OpenDAL's fs builder creates a missing root: look first, so
                // that a mistyped path is an error and verify creates nothing.
                match std::fs::metadata(root) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(format!("{} is not a directory", root.display())),
                    Err(e) => return Err(format!("{}: {e}", root.display())),
                }
                (
                    sink_object::Service::Fs { root: root.clone() },
                    prefix.clone(),
                    log_id.clone(),
                )
            }
            Source::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                log_id,
            } => (
                sink_object::Service::S3(sink_object::S3Options {
                    bucket: bucket.clone(),
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    access_key_id: None,
                    secret_access_key: None,
                }),
                prefix.clone(),
                log_id.clone(),
            ),
            _ => return Err("not an object source".into()),
        })
    }

    async fn object_log(&self) -> Result<sink_object::ObjectLog, String> {
        let (service, prefix, log_id) = self.service()?;
        let log_id = match log_id {
            Some(l) => l,
            None => self.sole_log_id(&service, &prefix).await?,
        };
        let config = sink_object::ObjectSinkConfig::new(self.describe(), service, prefix, log_id);
        sink_object::ObjectLog::open(&config).map_err(|e| e.to_string())
    }
}

/// What a config's `[log.checkpoints]` tells a verifier: the public halves of
/// its keys (oldest first), its witness directory and its log id.
#[derive(Debug, Clone, Default)]
pub struct ConfigChecks {
    /// The key history: `previous_key_file`'s public half, then `key_file`'s.
    pub keys: Vec<audit_core::checkpoint::PublicKey>,
    /// The MAC keys of the config's keys (derived from the private keys it
    /// names), which check the MAC seals.
    pub mac_keys: Vec<audit_core::seal_mac::SealMacKey>,
    /// The writer's own MAC keys of the config's keys, which check the
    /// `writer_mac` of MAC seals as the writer does.
    pub writer_mac_keys: Vec<audit_core::seal_mac::SealMacKey>,
    /// `witness_dir`.
    pub witness: Option<PathBuf>,
    /// `log_id`.
    pub log_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls_are_read_by_the_url_crate_with_percent_decoding() {
        let s = Source::parse("fs:/srv/my%20objects?prefix=a%2Fb&log=host%2B1").expect("fs");
        assert!(
            matches!(&s, Source::Fs { root, prefix, log_id }
                if root == Path::new("/srv/my objects") && prefix == "a/b" && log_id.as_deref() == Some("host+1")),
            "{s:?}"
        );
        let s = Source::parse(
            "s3://audit/prod/x?endpoint=http%3A%2F%2F127.0.0.1%3A3900&region=garage&log=h1",
        )
        .expect("s3");
        assert!(
            matches!(&s, Source::S3 { bucket, prefix, endpoint, region, log_id }
                if bucket == "audit" && prefix == "prod/x"
                    && endpoint.as_deref() == Some("http://127.0.0.1:3900")
                    && region.as_deref() == Some("garage") && log_id.as_deref() == Some("h1")),
            "{s:?}"
        );
        // An unencoded endpoint in the query still reads as written.
        let s = Source::parse("s3://audit?endpoint=http://127.0.0.1:3900&log=h1").expect("s3");
        assert!(
            matches!(&s, Source::S3 { endpoint, prefix, .. }
                if endpoint.as_deref() == Some("http://127.0.0.1:3900") && prefix.is_empty()),
            "{s:?}"
        );
        // `file:` and `sqlite:` paths are taken verbatim, `%` and `?` included.
        let s = Source::parse("file:/tmp/a%20b?c").expect("file");
        assert!(
            matches!(&s, Source::File(p) if p == Path::new("/tmp/a%20b?c")),
            "{s:?}"
        );
        for bad in [
            "fs:/srv?log=a&log=b",
            "fs:/srv?colour=blue",
            "s3://audit/p?log=a#frag",
            "s3:///p?log=a",
            "s3://user:pw@audit/p",
            "s3://audit:9000/p",
            "s3://audit/%FF?log=a",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }
}
