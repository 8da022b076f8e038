//! SIGKILL crash test: every receipt a killed writer printed is in the log,
//! and the chain verifies, over 20 kill-and-restart rounds on the same files.
//! The harness is audit-core's (`testing::crash`).

use std::path::Path;
use std::sync::Arc;

use audit_core::testing::crash::{check_receipts, kill_rounds, run_child, CHILD_ENV};
use audit_core::Sink;
use sink_file::{FileSink, FileSinkConfig};

fn config(dir: &Path) -> FileSinkConfig {
    let mut c = FileSinkConfig::new("crash", dir);
    // Small segments so kills also land around rotations.
    c.max_segment_bytes = Some(512 * 1024);
    c
}

/// The child: runs only when the parent test starts this binary with
/// CHILD_ENV set.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    run_child(Path::new(&dir), |dir| async move {
        let sink = FileSink::open(config(&dir)).await.expect("child: open");
        Arc::new(sink) as Arc<dyn Sink>
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_a_receipt() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let receipts = kill_rounds("crash_child", dir.path(), 20);
    // Reopen as the next writer would (recovering any torn tail), then check.
    let sink = FileSink::open(config(dir.path()))
        .await
        .expect("reopen after crashes");
    check_receipts(&sink, &receipts).await;
}
