//! SIGKILL crash test (audit-core's `crash_tests!`): every receipt a killed
//! writer printed is in the log, and the chain verifies, over 20
//! kill-and-restart rounds on the same files.

use std::path::PathBuf;
use std::sync::Arc;

use audit_core::Sink;
use sink_file::{FileSink, FileSinkConfig};

async fn open(dir: PathBuf) -> Arc<dyn Sink> {
    let mut config = FileSinkConfig::new("crash", dir);
    // Small segments so kills also land around rotations.
    config.max_segment_bytes = Some(512 * 1024);
    Arc::new(FileSink::open(config).await.expect("open file sink"))
}

audit_core::crash_tests!(open);
