//! SIGKILL crash test: every receipt a killed writer printed is in the
//! database, and the chain verifies, over 20 kill-and-restart rounds. Kills
//! land during commits and during the checkpoint thread's work alike. The
//! harness is audit-core's (`testing::crash`).

use std::path::Path;
use std::sync::Arc;

use audit_core::testing::crash::{check_receipts, kill_rounds, run_child, CHILD_ENV};
use audit_core::Sink;
use sink_sqlite::{SqliteSink, SqliteSinkConfig};

fn config(dir: &Path) -> SqliteSinkConfig {
    SqliteSinkConfig::new("crash", dir.join("audit.db"))
}

/// The child: runs only when the parent test starts this binary with
/// CHILD_ENV set.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    run_child(Path::new(&dir), |dir| async move {
        let sink = SqliteSink::open(config(&dir)).await.expect("child: open");
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
    let sink = SqliteSink::open(config(dir.path()))
        .await
        .expect("reopen after crashes");
    check_receipts(&sink, &receipts).await;
}
