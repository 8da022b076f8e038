//! Records some sink still lacks: newest in memory, oldest in a bounded spool.
//!
//! The spool is a catch-up buffer, not a durability promise: every record in it
//! is already durable on the sinks that acknowledged it, so it is never fsynced.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::record::Record;

/// Where the spool lives and how large it may grow.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// A directory this writer process owns alone.
    pub dir: PathBuf,
    /// The most bytes the spool may hold before the most lagging sink is
    /// dropped from the log and a gap marker is chained.
    pub max_bytes: u64,
}

#[derive(Debug)]
struct SpoolChunk {
    first: u64,
    last: u64,
    path: PathBuf,
    bytes: u64,
}

/// What a catch-up job must write: records at hand, or a spool chunk to read.
#[derive(Debug, Clone)]
pub(crate) enum JobSource {
    Memory(Vec<Record>),
    Spool { path: PathBuf, from: u64, to: u64 },
}

#[derive(Debug)]
pub(crate) struct Retention {
    /// The sequence of the oldest retained record.
    base: u64,
    spooled: VecDeque<SpoolChunk>,
    memory: VecDeque<Record>,
    memory_bytes: usize,
    memory_limit: usize,
    spool: Option<SpoolConfig>,
    spool_bytes: u64,
    next_chunk: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("spool {}: {source}", path.display())]
pub(crate) struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Retention {
    pub(crate) fn new(next_seq: u64, memory_limit: usize, spool: Option<SpoolConfig>) -> Self {
        Self {
            base: next_seq,
            spooled: VecDeque::new(),
            memory: VecDeque::new(),
            memory_bytes: 0,
            memory_limit,
            spool,
            spool_bytes: 0,
            next_chunk: 0,
        }
    }

    pub(crate) fn push(&mut self, record: Record) {
        self.memory_bytes += record.line().len();
        self.memory.push_back(record);
    }

    fn memory_base(&self) -> u64 {
        match (self.memory.front(), self.spooled.back()) {
            (Some(r), _) => r.seq(),
            (None, Some(c)) => c.last + 1,
            (None, None) => self.base,
        }
    }

    /// Drops records after `seq` (a rolled-back batch, always still in memory).
    pub(crate) fn truncate_after(&mut self, seq: u64) {
        while self.memory.back().is_some_and(|r| r.seq() > seq) {
            if let Some(r) = self.memory.pop_back() {
                self.memory_bytes -= r.line().len();
            }
        }
    }

    /// Forgets records up to and including `seq`: every live sink holds them.
    pub(crate) fn trim_through(&mut self, seq: u64) {
        if seq < self.base {
            return;
        }
        self.base = seq + 1;
        while self.spooled.front().is_some_and(|c| c.last <= seq) {
            if let Some(c) = self.spooled.pop_front() {
                self.spool_bytes -= c.bytes;
                if let Err(e) = fs::remove_file(&c.path) {
                    tracing::warn!(path = %c.path.display(), error = %e, "could not remove spool chunk");
                }
            }
        }
        while self.memory.front().is_some_and(|r| r.seq() <= seq) {
            if let Some(r) = self.memory.pop_front() {
                self.memory_bytes -= r.line().len();
            }
        }
    }

    /// Total retained bytes, memory and spool.
    pub(crate) fn bytes(&self) -> u64 {
        self.memory_bytes as u64 + self.spool_bytes
    }

    /// True when memory and spool together are over their bounds.
    pub(crate) fn overflowing(&self) -> bool {
        let spool_max = self.spool.as_ref().map_or(0, |s| s.max_bytes);
        self.bytes() > self.memory_limit as u64 + spool_max
    }

    /// Records from `from` on, at most `max_records` and about `max_bytes`.
    pub(crate) fn source(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<JobSource> {
        if from < self.base {
            return None;
        }
        if let Some(chunk) = self
            .spooled
            .iter()
            .find(|c| c.first <= from && from <= c.last)
        {
            return Some(JobSource::Spool {
                path: chunk.path.clone(),
                from,
                to: chunk.last,
            });
        }
        let mb = self.memory_base();
        if from < mb {
            return None;
        }
        let start = usize::try_from(from - mb).ok()?;
        if start >= self.memory.len() {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for r in self.memory.range(start..) {
            if !out.is_empty() && (out.len() >= max_records || bytes + r.line().len() > max_bytes) {
                break;
            }
            bytes += r.line().len();
            out.push(r.clone());
        }
        Some(JobSource::Memory(out))
    }

    /// Moves the oldest in-memory records below `below_seq` to the spool while
    /// memory is over its limit. Blocking: call it off the async workers.
    pub(crate) fn spill_plan(&mut self, below_seq: u64) -> Option<(PathBuf, Vec<Record>)> {
        let spool = self.spool.as_ref()?;
        if self.memory_bytes <= self.memory_limit {
            return None;
        }
        let target = self.memory_bytes - self.memory_limit / 2;
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        while bytes < target {
            match self.memory.front() {
                Some(r) if r.seq() < below_seq => {
                    if let Some(r) = self.memory.pop_front() {
                        bytes += r.line().len();
                        taken.push(r);
                    }
                }
                _ => break,
            }
        }
        if taken.is_empty() {
            return None;
        }
        self.memory_bytes -= bytes;
        let path = spool.dir.join(format!(
            "spool-{:020}-{}.jsonl",
            taken[0].seq(),
            self.next_chunk
        ));
        self.next_chunk += 1;
        Some((path, taken))
    }

    /// Registers a chunk written by [`write_chunk`].
    pub(crate) fn add_chunk(&mut self, path: PathBuf, records: &[Record]) {
        let bytes: u64 = records.iter().map(|r| r.line().len() as u64).sum();
        if let (Some(f), Some(l)) = (records.first(), records.last()) {
            self.spool_bytes += bytes;
            self.spooled.push_back(SpoolChunk {
                first: f.seq(),
                last: l.seq(),
                path,
                bytes,
            });
        }
    }

    /// Puts records back in memory after a spill failed.
    pub(crate) fn unspill(&mut self, records: Vec<Record>) {
        for r in records.into_iter().rev() {
            self.memory_bytes += r.line().len();
            self.memory.push_front(r);
        }
    }
}

/// Removes the spool chunks (`spool-*.jsonl`) a previous process left in
/// `dir`, and nothing else. Returns how many. Blocking.
pub(crate) fn clear_stale_spool(dir: &Path) -> Result<usize, SpoolError> {
    let wrap = |source| SpoolError {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(wrap(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(wrap)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("spool-") && name.ends_with(".jsonl") {
            fs::remove_file(entry.path()).map_err(|source| SpoolError {
                path: entry.path(),
                source,
            })?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed spool chunks left by an earlier process");
    }
    Ok(removed)
}

/// Writes a spool chunk. Blocking.
pub(crate) fn write_chunk(path: &Path, records: &[Record]) -> Result<(), SpoolError> {
    let wrap = |source| SpoolError {
        path: path.to_path_buf(),
        source,
    };
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(wrap)?;
    }
    // Records may be confidential: owner-only, like the sinks. A new file
    // only, and never through a symbolic link planted at its name.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(wrap)?;
    let mut buf = Vec::with_capacity(records.iter().map(|r| r.line().len()).sum());
    for r in records {
        buf.extend_from_slice(r.line());
    }
    f.write_all(&buf).map_err(wrap)
}

/// Reads records `from..=to` back from a spool chunk. Blocking.
pub(crate) fn read_chunk(
    path: &Path,
    from: u64,
    to: u64,
    max: usize,
) -> Result<Vec<Record>, SpoolError> {
    let wrap = |source| SpoolError {
        path: path.to_path_buf(),
        source,
    };
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(wrap)?;
    let invalid = |m: String| wrap(std::io::Error::new(std::io::ErrorKind::InvalidData, m));
    let mut out = Vec::new();
    let mut prev: Option<Record> = None;
    for line in BufReader::new(f).split(b'\n') {
        let line = line.map_err(wrap)?;
        let rec = Record::from_text(&line).map_err(|e| invalid(e.to_string()))?;
        // What goes back to a sink must be what the writer sealed: each
        // record's bytes must hash to its hash and link to the one before.
        if crate::record::record_hash(rec.text()) != rec.hash() {
            return Err(invalid(format!(
                "record {} was changed in the spool",
                rec.seq()
            )));
        }
        if let Some(p) = &prev {
            if rec.seq() != p.seq() + 1 || !links(&rec, p) {
                return Err(invalid(format!(
                    "record {} does not follow record {} in the spool",
                    rec.seq(),
                    p.seq()
                )));
            }
        }
        prev = Some(rec.clone());
        if rec.seq() < from {
            continue;
        }
        if rec.seq() > to || out.len() >= max {
            break;
        }
        out.push(rec);
    }
    Ok(out)
}

/// Whether `rec` links to `prev` by its previous-hash member.
fn links(rec: &Record, prev: &Record) -> bool {
    crate::record::parse_record(rec.text())
        .is_ok_and(|p| p.prev == crate::record::PrevHash::Hash(prev.hash()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::chain::Sequencer;

    fn records(n: usize) -> Vec<Record> {
        let mut seq = Sequencer::resume(None);
        (0..n)
            .map(|i| seq.seal(format!("{{\"i\":{i}").as_bytes()))
            .collect()
    }

    /// Issue 19 item 3: spool chunks hold records, which may be confidential:
    /// owner-only like the sinks, in an owner-only directory.
    #[test]
    fn a_spool_chunk_is_owner_only_in_an_owner_only_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("spool");
        let chunk = spool.join("chunk-1");
        write_chunk(&chunk, &records(3)).expect("write");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&chunk), 0o600);
        assert_eq!(mode(&spool), 0o700);
        assert_eq!(read_chunk(&chunk, 1, 3, 10).expect("read").len(), 3);
    }

    /// Issue 19 item 3: a symbolic link planted at a chunk's name is not
    /// followed (the writer is often root), and neither is an existing file
    /// overwritten: the chunk is refused and the target left as it was.
    #[test]
    fn a_link_or_a_file_at_a_chunks_name_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        fs::write(&target, b"keep me").expect("write");
        let link = dir.path().join("chunk-link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(write_chunk(&link, &records(2)).is_err());
        assert_eq!(fs::read(&target).expect("read"), b"keep me");
        assert!(write_chunk(&target, &records(2)).is_err());
        assert_eq!(fs::read(&target).expect("read"), b"keep me");
    }
}
