//! Reading a file log: a single JSONL file or a directory of segments.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use audit_core::record::precedes;
use audit_core::{Location, RecordCursor, RecordReader, SinkError, StoredRecord};

use crate::segments::list_segments;

/// A file log opened for reading: a single JSONL file (such as a seed-format
/// log) or a directory of segments written by [`crate::FileSink`].
#[derive(Debug, Clone)]
pub struct FileLog {
    name: String,
    path: PathBuf,
    max_line: usize,
}

impl FileLog {
    /// Opens `path` for reading; lines over 16 MiB are reported as oversized.
    pub fn open(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            name: path.display().to_string(),
            path,
            max_line: 16 << 20,
        }
    }

    /// The same log with another line-length limit.
    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// The same log reported under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The files of the log in chain order, each with the first sequence its
    /// name promises (`None` for a plain file).
    pub fn files(&self) -> Result<Vec<(PathBuf, Option<u64>)>, SinkError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.io("stat", &self.path, e))?;
        if meta.is_dir() {
            let segs = list_segments(&self.path).map_err(|e| self.io("list", &self.path, e))?;
            Ok(segs
                .into_iter()
                .map(|s| (s.path, Some(s.first_seq)))
                .collect())
        } else {
            Ok(vec![(self.path.clone(), None)])
        }
    }

    fn io(&self, op: &'static str, path: &Path, source: io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[async_trait]
impl RecordReader for FileLog {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        let me = self.clone();
        let files = tokio::task::spawn_blocking(move || me.files())
            .await
            .map_err(|e| SinkError::Backend {
                sink: self.name.clone(),
                detail: format!("reader task failed: {e}"),
            })??;
        // Start at the last segment whose name says it begins at or before from_seq.
        let start = files
            .iter()
            .rposition(|(_, first)| first.is_some_and(|f| f <= from_seq))
            .unwrap_or(0);
        Ok(Box::new(FileCursor {
            state: Some(CursorState {
                name: self.name.clone(),
                files: files
                    .into_iter()
                    .skip(start)
                    .map(|(p, _)| std::sync::Arc::from(p.as_path()))
                    .collect(),
                index: 0,
                file: None,
                limit: u64::MAX,
                carry: Vec::new(),
                skipping: None,
                holed: false,
                sparse: false,
                len: 0,
                line_start: 0,
                offset: 0,
                line: 0,
                ready: std::collections::VecDeque::new(),
                from_seq,
                max_line: self.max_line,
            }),
        }))
    }
}

struct FileCursor {
    state: Option<CursorState>,
}

/// How much of a file is read at once. Lines are sliced out of these chunks
/// without copying.
const CHUNK: usize = 4 << 20;

/// A hole of a sparse file at least this long is skipped without being
/// read: its zeros make the line that holds it malformed (no record holds a
/// NUL byte), so the line is reported with its length, as an oversized one
/// is. Reading holes would make verify's time grow with a planted file's
/// apparent size instead of the bytes stored.
const HOLE: u64 = 64 << 10;

struct CursorState {
    name: String,
    files: Vec<std::sync::Arc<std::path::Path>>,
    index: usize,
    file: Option<File>,
    /// Where the current file's data ends: before the zeros that
    /// preallocation leaves at the end of the active (last) segment.
    limit: u64,
    /// Bytes of a line that started in an earlier chunk.
    carry: Vec<u8>,
    /// Set while skipping a line longer than `max_line`: its length so far.
    skipping: Option<u64>,
    /// The skipped line runs through a hole (see [`HOLE`]).
    holed: bool,
    /// The current file is sparse, and holes are looked for before reads.
    sparse: bool,
    /// The current file's length.
    len: u64,
    /// File offset where the current (carried or skipped) line starts.
    line_start: u64,
    /// File offset of the next byte to read.
    offset: u64,
    line: u64,
    ready: std::collections::VecDeque<StoredRecord>,
    from_seq: u64,
    max_line: usize,
}

impl CursorState {
    fn path(&self) -> std::sync::Arc<std::path::Path> {
        self.files
            .get(self.index)
            .cloned()
            .unwrap_or_else(|| std::sync::Arc::from(std::path::Path::new("")))
    }

    fn io(&self, op: &'static str, source: io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            op,
            path: self.path().to_path_buf(),
            source,
        }
    }

    fn emit(&mut self, text: bytes::Bytes, start: u64, oversized: Option<u64>, terminated: bool) {
        self.line += 1;
        if precedes(&text, oversized.is_some(), self.from_seq) {
            return;
        }
        let mut item = StoredRecord::new(
            Location::Line {
                path: self.path(),
                line: self.line,
                offset: start,
            },
            text,
        );
        item.oversized = oversized;
        item.sparse = oversized.is_some() && std::mem::take(&mut self.holed);
        // Only the log's end can hold a torn write. In an earlier file an
        // unterminated line is read like any other: malformed unless it is a
        // whole record (FORMAT.md section 8).
        item.incomplete = !terminated && self.index + 1 == self.files.len();
        self.ready.push_back(item);
    }

    /// Reads one chunk of the current file and queues the lines it completes.
    /// Returns false once every file is read.
    fn fill(&mut self) -> Result<bool, SinkError> {
        use std::io::Read;
        if self.file.is_none() {
            let Some(path) = self.files.get(self.index) else {
                return Ok(false);
            };
            let mut f =
                crate::segments::open_segment(path, false).map_err(|e| self.io("open", e))?;
            let meta = f.metadata().map_err(|e| self.io("stat", e))?;
            self.len = meta.len();
            self.sparse = crate::segments::is_sparse(&meta);
            self.limit = if self.index + 1 == self.files.len() {
                crate::segments::data_end(&mut f).map_err(|e| self.io("read", e))?
            } else {
                u64::MAX
            };
            self.file = Some(f);
            self.offset = 0;
            self.line = 0;
            self.line_start = 0;
        }
        if self.sparse {
            self.skip_hole()?;
        }
        let carried = self.carry.len();
        let mut chunk = Vec::with_capacity(carried + CHUNK);
        chunk.append(&mut self.carry);
        chunk.resize(carried + CHUNK, 0);
        let room = (self.limit - self.offset).min(CHUNK as u64) as usize;
        let n = loop {
            let Some(file) = self.file.as_mut() else {
                return Ok(false);
            };
            if room == 0 {
                break 0;
            }
            match file.read(&mut chunk[carried..carried + room]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io("read", e)),
            }
        };
        chunk.truncate(carried + n);
        if n == 0 {
            // End of this file: what is left is a line without its newline.
            if let Some(len) = self.skipping.take() {
                self.emit(bytes::Bytes::new(), self.line_start, Some(len), false);
            } else if !chunk.is_empty() {
                let start = self.line_start;
                self.emit(bytes::Bytes::from(chunk), start, None, false);
            }
            self.file = None;
            self.index += 1;
            return Ok(true);
        }
        let base = self.offset - carried as u64;
        self.offset += n as u64;
        let chunk = bytes::Bytes::from(chunk);
        let mut start = 0usize;
        for nl in memchr::memchr_iter(b'\n', &chunk[carried..]).map(|i| i + carried) {
            let line_offset = base + start as u64;
            if let Some(len) = self.skipping.take() {
                let total = len + (nl - start) as u64;
                self.emit(bytes::Bytes::new(), self.line_start, Some(total), true);
            } else if nl - start > self.max_line {
                self.emit(
                    bytes::Bytes::new(),
                    line_offset,
                    Some((nl - start) as u64),
                    true,
                );
            } else {
                self.emit(chunk.slice(start..nl), line_offset, None, true);
            }
            start = nl + 1;
            self.line_start = base + start as u64;
        }
        let rest = &chunk[start..];
        match self.skipping.as_mut() {
            Some(len) => *len += rest.len() as u64,
            None if rest.len() > self.max_line => self.skipping = Some(rest.len() as u64),
            None => self.carry.extend_from_slice(rest),
        }
        Ok(true)
    }

    /// Moves past a hole of at least [`HOLE`] bytes at the read offset,
    /// counting it into the current line, which is then skipped.
    fn skip_hole(&mut self) -> Result<(), SinkError> {
        let end = self.limit.min(self.len);
        if self.offset >= end {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let Some(data) = crate::segments::next_data(file, self.offset, self.len) else {
            return Ok(());
        };
        let data = data.min(end);
        if data < self.offset.saturating_add(HOLE) {
            return Ok(());
        }
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(data))
            .map_err(|e| self.io("seek", e))?;
        let gap = data - self.offset;
        let before = self
            .skipping
            .take()
            .unwrap_or_else(|| std::mem::take(&mut self.carry).len() as u64);
        self.skipping = Some(before + gap);
        self.holed = true;
        self.offset = data;
        Ok(())
    }

    fn read(&mut self, max: usize) -> Result<Option<Vec<StoredRecord>>, SinkError> {
        while self.ready.len() < max.max(1) {
            if !self.fill()? {
                break;
            }
        }
        let take = self.ready.len().min(max.max(1));
        let out: Vec<StoredRecord> = self.ready.drain(..take).collect();
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}

#[async_trait]
impl RecordCursor for FileCursor {
    async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<StoredRecord>>, SinkError> {
        let Some(mut state) = self.state.take() else {
            return Ok(None);
        };
        let name = state.name.clone();
        let (state, result) = tokio::task::spawn_blocking(move || {
            let r = state.read(max);
            (state, r)
        })
        .await
        .map_err(|e| SinkError::Backend {
            sink: name,
            detail: format!("reader task failed: {e}"),
        })?;
        if matches!(result, Ok(Some(_))) {
            self.state = Some(state);
        }
        result
    }
}
