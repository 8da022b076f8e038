//! The file sink: the async face of [`crate::writer::SegmentWriter`].

use async_trait::async_trait;
use audit_core::worker::SinkThread;
use audit_core::{
    ChainHead, Location, RecordBatch, RecordCursor, RecordReader, Sink, SinkCapabilities,
    SinkError, StoredRecord,
};

use crate::config::FileSinkConfig;
use crate::reader::FileLog;
use crate::writer::SegmentWriter;

/// Append-only JSONL segments in one directory.
///
/// Each batch is one `write` and one `fdatasync` on a handle that stays open;
/// the directory is fsynced whenever a segment is created. See the crate docs
/// for recovery and rotation.
pub struct FileSink {
    name: String,
    writer: SinkThread<SegmentWriter>,
    reader: FileLog,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Opens (creating if needed) the log in `config.dir`, recovering a torn
    /// tail and reading the head from the end of the last segment.
    ///
    /// The sink's file I/O runs on a dedicated thread that owns the segment
    /// writer: one hand-off per batch, never on the async workers.
    pub async fn open(config: FileSinkConfig) -> Result<Self, SinkError> {
        let name = config.name.clone();
        let reader = FileLog::open(config.dir.clone())
            .with_max_line(config.max_record_bytes)
            .with_name(name.clone());
        let writer =
            SinkThread::spawn("file-sink", &name, move || SegmentWriter::open(config)).await?;
        Ok(Self {
            name,
            writer,
            reader,
        })
    }
}

#[async_trait]
impl RecordReader for FileSink {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        self.reader.read_from(from_seq).await
    }
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        let mut c = SinkCapabilities::persistent(true);
        c.rotation = true;
        c.conditional_create = true;
        c.cut_tail = true;
        c
    }

    async fn head(&self) -> Result<Option<ChainHead>, SinkError> {
        self.writer.call(|w| Ok(w.head())).await
    }

    async fn append(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        let batch = batch.clone();
        self.writer.call(move |w| w.append(&batch)).await
    }

    /// Moves the lines after record `seq` aside, as a torn tail is: a batch
    /// is one `write`, which a crash can leave on disk without its seal.
    async fn cut_after(&self, seq: u64) -> Result<(), SinkError> {
        match self.head().await? {
            Some(h) if h.seq == seq => return Ok(()),
            Some(h) if h.seq > seq => {}
            head => {
                return Err(SinkError::Backend {
                    sink: self.name.clone(),
                    detail: format!(
                        "cannot cut after record {seq}: the head is {:?}",
                        head.map(|h| h.seq)
                    ),
                })
            }
        }
        // The reader finds where record seq + 1 starts; the writer thread
        // checks that location again before it cuts.
        let mut cursor = self.reader.read_from(seq + 1).await?;
        let item = cursor
            .next_batch(1)
            .await?
            .and_then(|v| v.into_iter().next());
        let Some(StoredRecord {
            location: Location::Line { path, offset, .. },
            ..
        }) = item
        else {
            return Err(SinkError::Backend {
                sink: self.name.clone(),
                detail: format!("cannot find the line of record {} to cut from", seq + 1),
            });
        };
        let path = path.to_path_buf();
        self.writer
            .call(move |w| w.cut_at(seq, &path, offset))
            .await
    }
}
