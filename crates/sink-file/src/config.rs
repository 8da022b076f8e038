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
    /// Zeros written ahead of the records, in steps of this many bytes (0 turns
    /// it off). A batch that overwrites zeros already on disk changes no file
    /// size, so its fdatasync flushes data only: about half the latency of an
    /// append on ext4 and XFS. The zeros are cut off when the segment rotates
    /// or the sink closes; after a crash the active segment ends with them,
    /// and readers skip them (docs/FORMAT.md, "Segments"). Durability is the
    /// same either way.
    pub preallocate_bytes: u64,
    /// Injected I/O faults, for tests.
    #[doc(hidden)]
    pub faults: Option<Arc<IoFaults>>,
}

impl FileSinkConfig {
    /// A config for `dir` with rotation at 256 MiB, fdatasync on, 16 MiB records
    /// and 8 MiB of preallocation.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            dir: dir.into(),
            max_segment_bytes: Some(256 << 20),
            max_segment_age: None,
            max_record_bytes: 16 << 20,
            sync: true,
            preallocate_bytes: 8 << 20,
            faults: None,
        }
    }
}
