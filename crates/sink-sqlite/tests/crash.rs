//! SIGKILL crash test (audit-core's `crash_tests!`): every receipt a killed
//! writer printed is in the database, and the chain verifies, over 20
//! kill-and-restart rounds. Kills land during commits and during the
//! checkpoint thread's work alike.

use std::path::PathBuf;
use std::sync::Arc;

use audit_core::Sink;
use sink_sqlite::{SqliteSink, SqliteSinkConfig};

async fn open(dir: PathBuf) -> Arc<dyn Sink> {
    let config = SqliteSinkConfig::new("crash", dir.join("audit.db"));
    Arc::new(SqliteSink::open(config).await.expect("open SQLite sink"))
}

audit_core::crash_tests!(open);
