//! The file sink: the async face of [`crate::writer::SegmentWriter`].

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
    jobs: std::sync::mpsc::Sender<Job>,
    reader: FileLog,
}

type Job = Box<dyn FnOnce(&mut SegmentWriter) + Send>;

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
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("file-sink-{name}"))
            .spawn(move || match SegmentWriter::open(config) {
                Ok(mut w) => {
                    let _ = ready_tx.send(Ok(()));
                    while let Ok(job) = rx.recv() {
                        job(&mut w);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| SinkError::Backend {
                sink: name.clone(),
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        ready_rx.await.map_err(|_| SinkError::Backend {
            sink: name.clone(),
            detail: "writer thread ended during open".into(),
        })??;
        Ok(Self { name, jobs, reader })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SegmentWriter) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || SinkError::Backend {
            sink: self.name.clone(),
            detail: "the writer thread has stopped".into(),
        };
        self.jobs
            .send(Box::new(move |w| {
                let _ = tx.send(f(w));
            }))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
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
