//! The file sink passes the conformance kit.

use std::sync::Arc;

use async_trait::async_trait;
use audit_core::testing::Harness;
use audit_core::Sink;
use sink_file::{FileSink, FileSinkConfig};

struct Files {
    dir: tempfile::TempDir,
}

#[async_trait]
impl Harness for Files {
    async fn open(&self, name: &str) -> Arc<dyn Sink> {
        let mut config = FileSinkConfig::new(name, self.dir.path().join(name));
        // Small segments, so every case also crosses segment boundaries.
        config.max_segment_bytes = Some(256 * 1024);
        Arc::new(FileSink::open(config).await.expect("open file sink"))
    }
}

audit_core::conformance_tests!(Files {
    dir: tempfile::tempdir().expect("tempdir")
});
