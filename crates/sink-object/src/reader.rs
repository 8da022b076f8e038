//! Reading a log from its segment objects.

use async_trait::async_trait;
use audit_core::record::precedes;
use audit_core::{Location, RecordCursor, RecordReader, SinkError, StoredRecord};
use opendal::{ErrorKind, Operator};

use crate::config::ObjectSinkConfig;

/// A segment object: its key and the sequences its name promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentKey {
    /// The object key.
    pub key: String,
    /// The sequence its first record must have.
    pub first: u64,
    /// The sequence its last record must have, for the `<first>-<last>.jsonl`
    /// names of logs written before 2026-11-27; `None` for `<first>.jsonl`.
    pub last: Option<u64>,
}

/// The key of the segment whose first record is `first`. Named by its first
/// sequence alone, so that two writers continuing the same head write the
/// same key, and a conditional create lets only one of them succeed.
pub(crate) fn segment_key(dir: &str, first: u64) -> String {
    format!("{dir}segments/{first:020}.jsonl")
}

/// The first sequence in a segment's name: `<first>.jsonl`, or
/// `<first>-<last>.jsonl` as versions before 2026-11-27 named segments.
#[cfg(test)]
fn parse_segment(key: &str) -> Option<u64> {
    parse_segment_range(key).map(|(first, _)| first)
}

/// The sequences a segment's name promises: its first, and for the old
/// `<first>-<last>.jsonl` form its last.
fn parse_segment_range(key: &str) -> Option<(u64, Option<u64>)> {
    let name = key.rsplit('/').next()?.strip_suffix(".jsonl")?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    match name.split_once('-') {
        Some((first, last)) if digits(first) && digits(last) => {
            Some((first.parse().ok()?, Some(last.parse().ok()?)))
        }
        Some(_) => None,
        None if digits(name) => Some((name.parse().ok()?, None)),
        None => None,
    }
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

    /// The key directory of this log, `<prefix>/<log id>/`: everything the
    /// log holds is under it.
    pub fn key_dir(&self) -> &str {
        &self.dir
    }

    /// `key` as a segment of this log: directly under its `segments/`, with
    /// a segment's name. Anything else (another log's key, a nested key, a
    /// name a hand-written `HEAD` made up) is `None`.
    pub(crate) fn segment_of_this_log(&self, key: &str) -> Option<SegmentKey> {
        let name = key.strip_prefix(&self.dir)?.strip_prefix("segments/")?;
        if name.contains('/') {
            return None;
        }
        let (first, last) = parse_segment_range(key)?;
        Some(SegmentKey {
            key: key.to_string(),
            first,
            last,
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
            .filter_map(|e| self.segment_of_this_log(e.path()))
            .filter(|s| after.is_none_or(|a| s.key.as_str() > a))
            .collect();
        out.sort_by(|a, b| (a.first, &a.key).cmp(&(b.first, &b.key)));
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

    /// Every segment object, in chain order, with the sequences its name
    /// promises (the verifier checks them against the records).
    pub async fn segment_names(&self) -> Result<Vec<SegmentKey>, SinkError> {
        self.segments(None).await
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

    /// The object's last line, without its newline, read from its tail
    /// without loading the object; `None` when that line is longer than any
    /// record may be.
    pub(crate) async fn last_line(&self, key: &str) -> Result<Option<bytes::Bytes>, SinkError> {
        // One record at most MAX_LINE bytes, its newline, and the newline before it.
        let window = MAX_LINE as u64 + 2;
        let data = self.read_tail(key, window).await?;
        let end = data.len() - usize::from(data.ends_with(b"\n"));
        Ok(match memchr::memrchr(b'\n', &data[..end]) {
            Some(i) => Some(data.slice(i + 1..end)),
            // No newline in the window: the whole object is one record, or its
            // last line is longer than any record may be.
            None if (data.len() as u64) < window => Some(data.slice(..end)),
            None => None,
        })
    }

    /// The last `max` bytes of an object (all of it if it is smaller): enough
    /// for its last record without loading a large object whole.
    pub(crate) async fn read_tail(&self, key: &str, max: u64) -> Result<bytes::Bytes, SinkError> {
        let size = self
            .op
            .stat(key)
            .await
            .map_err(|e| self.error("stat", key, e))?
            .content_length();
        if size == 0 {
            // An empty range is an invalid request on S3.
            return Ok(bytes::Bytes::new());
        }
        self.op
            .read_with(key)
            .range(size.saturating_sub(max)..size)
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| self.error("read", key, e))
    }
}

#[async_trait]
impl RecordReader for ObjectLog {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        let mut segments = self.segments(None).await?;
        // Segments tile the chain, so `from_seq` is in the last one that
        // starts at or before it.
        let start = segments
            .iter()
            .rposition(|s| s.first <= from_seq)
            .unwrap_or(0);
        segments.drain(..start);
        Ok(Box::new(ObjectCursor {
            log: self.clone(),
            segments: segments.into_iter(),
            ready: std::collections::VecDeque::new(),
            from_seq,
            current: None,
        }))
    }
}

/// How much of an object is read at a time: memory stays bounded whatever
/// the size of a (possibly hostile) object.
const READ_CHUNK: u64 = 8 << 20;
/// Lines longer than this are reported by length and not loaded, as the file
/// reader does.
pub(crate) const MAX_LINE: usize = 16 << 20;

struct ObjectCursor {
    log: ObjectLog,
    segments: std::vec::IntoIter<SegmentKey>,
    ready: std::collections::VecDeque<StoredRecord>,
    from_seq: u64,
    current: Option<OpenObject>,
}

/// The segment object being read, in ranges.
struct OpenObject {
    key: String,
    size: u64,
    offset: u64,
    line: u64,
    /// The start of a line the last range cut.
    carry: Vec<u8>,
    /// Set while skipping a line longer than [`MAX_LINE`]: its length so far.
    skipping: Option<u64>,
    /// Whether this is the log's last object: only there can a line be torn.
    last: bool,
}

impl ObjectCursor {
    fn emit(&mut self, text: bytes::Bytes, oversized: Option<u64>, terminated: bool) {
        let Some(obj) = self.current.as_mut() else {
            return;
        };
        obj.line += 1;
        if precedes(&text, oversized.is_some(), self.from_seq) {
            return;
        }
        let mut item = StoredRecord::new(
            Location::Object {
                key: obj.key.clone(),
                line: obj.line,
            },
            text,
        );
        item.oversized = oversized;
        // Only the log's end can hold a torn write (FORMAT.md section 8).
        item.incomplete = !terminated && obj.last;
        self.ready.push_back(item);
    }

    /// Reads the next range of the current object (opening the next object
    /// first if none is open) and queues the lines it completes. Returns false
    /// once every object is read.
    async fn fill(&mut self) -> Result<bool, SinkError> {
        if self.current.is_none() {
            let Some(seg) = self.segments.next() else {
                return Ok(false);
            };
            let size = self
                .log
                .op
                .stat(&seg.key)
                .await
                .map_err(|e| self.log.error("stat", &seg.key, e))?
                .content_length();
            self.current = Some(OpenObject {
                key: seg.key,
                size,
                offset: 0,
                line: 0,
                carry: Vec::new(),
                skipping: None,
                last: self.segments.len() == 0,
            });
        }
        let Some(obj) = self.current.as_mut() else {
            return Ok(false);
        };
        if obj.offset >= obj.size {
            // End of this object: what is left is a line without its newline.
            let (skipping, carry) = (obj.skipping.take(), std::mem::take(&mut obj.carry));
            if let Some(len) = skipping {
                self.emit(bytes::Bytes::new(), Some(len), false);
            } else if !carry.is_empty() {
                self.emit(bytes::Bytes::from(carry), None, false);
            }
            self.current = None;
            return Ok(true);
        }
        let end = (obj.offset + READ_CHUNK).min(obj.size);
        let key = obj.key.clone();
        let range = obj.offset..end;
        let data = self
            .log
            .op
            .read_with(&key)
            .range(range)
            .await
            .map_err(|e| self.log.error("read", &key, e))?
            .to_bytes();
        let Some(obj) = self.current.as_mut() else {
            return Ok(false);
        };
        if data.is_empty() {
            // The object shrank since it was listed: what was read is all.
            obj.size = obj.offset;
            return Ok(true);
        }
        obj.offset += data.len() as u64;
        let chunk = if obj.carry.is_empty() {
            data
        } else {
            let mut joined = std::mem::take(&mut obj.carry);
            joined.extend_from_slice(&data);
            bytes::Bytes::from(joined)
        };
        let mut start = 0usize;
        let mut lines = Vec::new();
        for nl in memchr::memchr_iter(b'\n', &chunk) {
            let len = nl - start;
            match obj.skipping.take() {
                Some(so_far) => lines.push((bytes::Bytes::new(), Some(so_far + len as u64))),
                None if len > MAX_LINE => lines.push((bytes::Bytes::new(), Some(len as u64))),
                None => lines.push((chunk.slice(start..nl), None)),
            }
            start = nl + 1;
        }
        let rest = &chunk[start..];
        match obj.skipping.as_mut() {
            Some(len) => *len += rest.len() as u64,
            None if rest.len() > MAX_LINE => obj.skipping = Some(rest.len() as u64),
            None => obj.carry.extend_from_slice(rest),
        }
        for (text, oversized) in lines {
            self.emit(text, oversized, true);
        }
        Ok(true)
    }
}

#[async_trait]
impl RecordCursor for ObjectCursor {
    async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<StoredRecord>>, SinkError> {
        while self.ready.len() < max.max(1) {
            if !self.fill().await? {
                break;
            }
        }
        let take = self.ready.len().min(max.max(1));
        let out: Vec<StoredRecord> = self.ready.drain(..take).collect();
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_give_their_first_sequence_in_either_form() {
        let dir = "audit/log/";
        assert_eq!(
            segment_key(dir, 7),
            "audit/log/segments/00000000000000000007.jsonl"
        );
        assert_eq!(parse_segment(&segment_key(dir, 7)), Some(7));
        assert_eq!(
            parse_segment("audit/log/segments/00000000000000000007-00000000000000000009.jsonl"),
            Some(7)
        );
        for not_a_segment in [
            "audit/log/segments/7.jsonl",
            "audit/log/segments/00000000000000000007-9.jsonl",
            "audit/log/segments/00000000000000000007.json",
            "audit/log/segments/0000000000000000000x.jsonl",
            "audit/log/segments/-00000000000000000007.jsonl",
            "audit/log/HEAD",
        ] {
            assert_eq!(parse_segment(not_a_segment), None, "{not_a_segment}");
        }
    }
}
