//! An in-memory backend: passes the conformance kit and serves other crates' tests.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::record::{ChainHead, Record};
use crate::sink::{
    Location, RecordBatch, RecordCursor, RecordReader, Sink, SinkCapabilities, SinkError,
    StoredRecord,
};

/// A sink that keeps records in memory. Clones share the same log, so a test
/// can "reopen" it by building a new writer over a clone.
#[derive(Debug, Clone)]
pub struct MemorySink {
    name: String,
    records: Arc<Mutex<Vec<Record>>>,
}

impl MemorySink {
    /// An empty in-memory sink named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A copy of every stored record.
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// Replaces the stored text of the record at `index`, bypassing the chain.
    /// Only for tamper tests.
    pub fn tamper(&self, index: usize, text: &[u8]) -> Option<()> {
        let mut g = self.lock();
        let old = g.get(index)?.clone();
        let mut line = text.to_vec();
        line.push(b'\n');
        g[index] = Record::from_parts(old.seq(), old.prev(), old.hash(), line.into());
        Some(())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        // A panic while holding this lock cannot leave the Vec half-updated:
        // every mutation is a single push or assignment.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RecordReader for MemorySink {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        let g = self.lock();
        let start = g.partition_point(|r| r.seq() < from_seq);
        Ok(Box::new(MemoryCursor {
            records: self.records.clone(),
            next: start,
        }))
    }
}

struct MemoryCursor {
    records: Arc<Mutex<Vec<Record>>>,
    next: usize,
}

#[async_trait]
impl RecordCursor for MemoryCursor {
    async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<StoredRecord>>, SinkError> {
        let g = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if self.next >= g.len() {
            return Ok(None);
        }
        let end = (self.next + max.max(1)).min(g.len());
        let out = g[self.next..end]
            .iter()
            .enumerate()
            .map(|(i, r)| {
                StoredRecord::new(
                    Location::Memory {
                        index: (self.next + i) as u64,
                    },
                    r.text_bytes(),
                )
            })
            .collect();
        self.next = end;
        Ok(Some(out))
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities::persistent(false)
    }

    async fn head(&self) -> Result<Option<ChainHead>, SinkError> {
        Ok(self.lock().last().map(Record::head))
    }

    async fn append(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        let mut g = self.lock();
        batch.check_continues(&self.name, g.last().map(Record::head))?;
        g.extend(batch.records().iter().cloned());
        Ok(())
    }
}
