//! File sink settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::fault::IoFaults;

/// Where and how a file sink writes.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// The sink's name in config, health and errors.
    pub name: String,
    /// The directory holding the segment files. Created (mode 0700) if absent.
    pub dir: PathBuf,
    /// Start a new segment once the active one reaches this many bytes.
    pub max_segment_bytes: Option<u64>,
    /// Start a new segment once the active one is this old.
    pub max_segment_age: Option<Duration>,
    /// The longest line the sink reads back; longer lines are refused at
    /// append and reported as oversized when read.
    pub max_record_bytes: usize,
    /// Whether each batch is fdatasynced before it is acknowledged. Turning
    /// this off means a receipt only promises the OS page cache: a power loss
    /// or kernel crash can lose acknowledged records. A process crash cannot.
    pub sync: bool,
    /// Injected I/O faults, for tests.
    #[doc(hidden)]
    pub faults: Option<Arc<IoFaults>>,
}

impl FileSinkConfig {
    /// A config for `dir` with rotation at 256 MiB, fdatasync on, 16 MiB records.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            dir: dir.into(),
            max_segment_bytes: Some(256 << 20),
            max_segment_age: None,
            max_record_bytes: 16 << 20,
            sync: true,
            faults: None,
        }
    }
}
