//! The SQLite sink passes the conformance kit.

use std::sync::Arc;

use async_trait::async_trait;
use audit_core::testing::Harness;
use audit_core::Sink;
use sink_sqlite::{SqliteSink, SqliteSinkConfig};

struct Databases {
    dir: tempfile::TempDir,
}

#[async_trait]
impl Harness for Databases {
    async fn open(&self, name: &str) -> Arc<dyn Sink> {
        let path = self.dir.path().join(format!("{name}.db"));
        Arc::new(
            SqliteSink::open(SqliteSinkConfig::new(name, path))
                .await
                .expect("open sqlite sink"),
        )
    }
}

audit_core::conformance_tests!(Databases {
    dir: tempfile::tempdir().expect("tempdir")
});
