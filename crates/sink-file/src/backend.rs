//! The file sink: the async face of [`crate::writer::SegmentWriter`].

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use audit_core::{
    ChainHead, RecordBatch, RecordCursor, RecordReader, Sink, SinkCapabilities, SinkError,
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
    writer: Arc<Mutex<SegmentWriter>>,
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
    pub async fn open(config: FileSinkConfig) -> Result<Self, SinkError> {
        let name = config.name.clone();
        let reader = FileLog::open(config.dir.clone())
            .with_max_line(config.max_record_bytes)
            .with_name(name.clone());
        let writer = tokio::task::spawn_blocking(move || SegmentWriter::open(config))
            .await
            .map_err(|e| SinkError::Backend {
                sink: name.clone(),
                detail: format!("open task failed: {e}"),
            })??;
        Ok(Self {
            name,
            writer: Arc::new(Mutex::new(writer)),
            reader,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SegmentWriter) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            // A panic inside the writer poisons the mutex; its state is then
            // re-read from disk by the next append's poison handling.
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut w)
        })
        .await
        .map_err(|e| SinkError::Backend {
            sink: self.name.clone(),
            detail: format!("writer task failed: {e}"),
        })?
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
        c
    }

    async fn head(&self) -> Result<Option<ChainHead>, SinkError> {
        self.blocking(|w| Ok(w.head())).await
    }

    async fn append(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        let batch = batch.clone();
        self.blocking(move |w| w.append(&batch)).await
    }
}
