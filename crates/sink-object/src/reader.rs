//! Reading a log from its segment objects.

use async_trait::async_trait;
use audit_core::record::parse_chain_suffix;
use audit_core::{Location, RecordCursor, RecordReader, SinkError, StoredRecord};
use opendal::{ErrorKind, Operator};

use crate::config::ObjectSinkConfig;

/// A segment object: its key and the sequence range its name promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentKey {
    pub key: String,
    pub first: u64,
    pub last: u64,
}

pub(crate) fn segment_key(dir: &str, first: u64, last: u64) -> String {
    format!("{dir}segments/{first:020}-{last:020}.jsonl")
}

fn parse_segment(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?;
    let (a, b) = name.strip_suffix(".jsonl")?.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A log in object storage, opened for reading (verification, backfill).
#[derive(Debug, Clone)]
pub struct ObjectLog {
    pub(crate) name: String,
    pub(crate) op: Operator,
    pub(crate) dir: String,
    pub(crate) describe: String,
}

impl ObjectLog {
    /// Opens the log that `config` names, for reading.
    pub fn open(config: &ObjectSinkConfig) -> Result<Self, SinkError> {
        Ok(Self {
            name: config.name.clone(),
            op: config.operator()?,
            dir: config.log_dir(),
            describe: config.describe(),
        })
    }

    pub(crate) fn error(&self, op: &str, key: &str, e: opendal::Error) -> SinkError {
        SinkError::Backend {
            sink: self.name.clone(),
            detail: format!("{}: {op} {key}: {e}", self.describe),
        }
    }

    /// Segment objects in chain order, optionally only those after `after`.
    pub(crate) async fn segments(&self, after: Option<&str>) -> Result<Vec<SegmentKey>, SinkError> {
        let prefix = format!("{}segments/", self.dir);
        let mut lister = self.op.list_with(&prefix);
        if let Some(a) = after {
            lister = lister.start_after(a);
        }
        let entries = match lister.await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.error("list", &prefix, e)),
        };
        let mut out: Vec<SegmentKey> = entries
            .into_iter()
            .filter_map(|e| {
                let key = e.path().to_string();
                let (first, last) = parse_segment(&key)?;
                Some(SegmentKey { key, first, last })
            })
            .filter(|s| after.is_none_or(|a| s.key.as_str() > a))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The log ids found under `config`'s prefix (its `log_id` is ignored).
    pub async fn log_ids(config: &ObjectSinkConfig) -> Result<Vec<String>, SinkError> {
        let op = config.operator()?;
        let p = config.prefix.trim_matches('/');
        let dir = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        let entries = match op.list(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(SinkError::Backend {
                    sink: config.name.clone(),
                    detail: format!("{}: list {dir}: {e}", config.describe()),
                })
            }
        };
        Ok(entries
            .into_iter()
            // A listing includes the directory itself.
            .filter(|e| e.path().ends_with('/') && e.path() != dir)
            .map(|e| e.name().trim_end_matches('/').to_string())
            .filter(|n| !n.is_empty())
            .collect())
    }

    /// Every segment object's key, in chain order.
    pub async fn segment_keys(&self) -> Result<Vec<String>, SinkError> {
        Ok(self
            .segments(None)
            .await?
            .into_iter()
            .map(|s| s.key)
            .collect())
    }

    pub(crate) async fn read_object(&self, key: &str) -> Result<bytes::Bytes, SinkError> {
        self.op
            .read(key)
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| self.error("read", key, e))
    }
}

#[async_trait]
impl RecordReader for ObjectLog {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        let segments: Vec<SegmentKey> = self
            .segments(None)
            .await?
            .into_iter()
            .filter(|s| s.last >= from_seq)
            .collect();
        Ok(Box::new(ObjectCursor {
            log: self.clone(),
            segments: segments.into_iter(),
            ready: std::collections::VecDeque::new(),
            from_seq,
        }))
    }
}

struct ObjectCursor {
    log: ObjectLog,
    segments: std::vec::IntoIter<SegmentKey>,
    ready: std::collections::VecDeque<StoredRecord>,
    from_seq: u64,
}

#[async_trait]
impl RecordCursor for ObjectCursor {
    async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<StoredRecord>>, SinkError> {
        while self.ready.len() < max.max(1) {
            let Some(seg) = self.segments.next() else {
                break;
            };
            let data = self.log.read_object(&seg.key).await?;
            let mut start = 0usize;
            let mut line = 0u64;
            while start < data.len() {
                line += 1;
                let (end, terminated) = match memchr::memchr(b'\n', &data[start..]) {
                    Some(i) => (start + i, true),
                    None => (data.len(), false),
                };
                let text = data.slice(start..end);
                start = end + 1;
                if self.from_seq > 1 {
                    if let Ok((seq, ..)) = parse_chain_suffix(&text) {
                        if seq < self.from_seq {
                            continue;
                        }
                    }
                }
                let mut item = StoredRecord::new(
                    Location::Object {
                        key: seg.key.clone(),
                        line,
                    },
                    text,
                );
                // Only the log's end can hold a torn write (FORMAT.md section 8).
                item.incomplete = !terminated && self.segments.len() == 0;
                self.ready.push_back(item);
            }
        }
        let take = self.ready.len().min(max.max(1));
        let out: Vec<StoredRecord> = self.ready.drain(..take).collect();
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}
