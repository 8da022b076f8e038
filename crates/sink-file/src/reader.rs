//! Reading a file log: a single JSONL file or a directory of segments.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use audit_core::record::parse_chain_suffix;
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
                files: files.into_iter().skip(start).map(|(p, _)| p).collect(),
                index: 0,
                reader: None,
                line: 0,
                offset: 0,
                from_seq,
                max_line: self.max_line,
            }),
        }))
    }
}

struct FileCursor {
    state: Option<CursorState>,
}

struct CursorState {
    name: String,
    files: Vec<PathBuf>,
    index: usize,
    reader: Option<BufReader<File>>,
    line: u64,
    offset: u64,
    from_seq: u64,
    max_line: usize,
}

/// One line read with a length bound.
pub(crate) enum LineRead {
    Eof,
    Line {
        len: u64,
        oversized: bool,
        terminated: bool,
    },
}

/// Reads one line into `out` (without its newline), keeping at most `max`
/// bytes: a longer line is consumed to its end and reported as oversized,
/// so memory stays bounded whatever the input.
pub(crate) fn read_bounded_line<R: BufRead>(
    r: &mut R,
    max: usize,
    out: &mut Vec<u8>,
) -> io::Result<LineRead> {
    out.clear();
    let mut total = 0u64;
    let mut oversized = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(if total == 0 {
                LineRead::Eof
            } else {
                LineRead::Line {
                    len: total,
                    oversized,
                    terminated: false,
                }
            });
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if !oversized {
            if total + take as u64 > max as u64 {
                oversized = true;
                out.clear();
                out.shrink_to(max.min(1 << 20));
            } else {
                out.extend_from_slice(&buf[..take]);
            }
        }
        total += take as u64;
        r.consume(take + usize::from(done));
        if done {
            return Ok(LineRead::Line {
                len: total,
                oversized,
                terminated: true,
            });
        }
    }
}

impl CursorState {
    fn read(&mut self, max: usize) -> Result<Option<Vec<StoredRecord>>, SinkError> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while out.len() < max.max(1) {
            if self.reader.is_none() {
                let Some(path) = self.files.get(self.index) else {
                    break;
                };
                let f = File::open(path).map_err(|e| SinkError::Io {
                    sink: self.name.clone(),
                    op: "open",
                    path: path.clone(),
                    source: e,
                })?;
                self.reader = Some(BufReader::with_capacity(1 << 20, f));
                self.line = 0;
                self.offset = 0;
            }
            let path = &self.files[self.index];
            let Some(reader) = self.reader.as_mut() else {
                break;
            };
            let read =
                read_bounded_line(reader, self.max_line, &mut buf).map_err(|e| SinkError::Io {
                    sink: self.name.clone(),
                    op: "read",
                    path: path.clone(),
                    source: e,
                })?;
            match read {
                LineRead::Eof => {
                    self.reader = None;
                    self.index += 1;
                }
                LineRead::Line {
                    len,
                    oversized,
                    terminated,
                } => {
                    self.line += 1;
                    let offset = self.offset;
                    self.offset += len + u64::from(terminated);
                    if self.from_seq > 1 && !oversized {
                        if let Ok((seq, ..)) = parse_chain_suffix(&buf) {
                            if seq < self.from_seq {
                                continue;
                            }
                        }
                    }
                    let mut item = StoredRecord::new(
                        Location::Line {
                            path: path.clone(),
                            line: self.line,
                            offset,
                        },
                        std::mem::take(&mut buf),
                    );
                    item.oversized = oversized.then_some(len);
                    item.incomplete = !terminated;
                    out.push(item);
                }
            }
        }
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
