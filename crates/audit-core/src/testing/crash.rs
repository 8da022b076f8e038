//! The SIGKILL crash harness every persistent backend runs: a child process
//! appends with many producers and prints each receipt once durable; the
//! parent kills it at random points, restarts it on the same storage, and in
//! the end checks that every receipt it saw is in the log with its hash.
//!
//! A backend's `tests/crash.rs` is an async function that opens its sink in a
//! directory, and one line:
//!
//! ```ignore
//! async fn open(dir: std::path::PathBuf) -> std::sync::Arc<dyn audit_core::Sink> { … }
//! audit_core::crash_tests!(open);
//! ```
//!
//! The macro makes two tests: `crash_child`, which returns at once unless
//! [`CHILD_ENV`] is set and otherwise is the killed writer ([`run_child`]),
//! and `sigkill_never_loses_a_receipt`, the parent ([`kill_rounds`], then
//! [`check_receipts`] on the sink reopened as the next writer would). The
//! test crate needs `tempfile` and `tokio` (with `macros`).

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{read_verified, sample_entry};
use crate::sink::{RecordReader, Sink};
use crate::writer::{AuditLog, SinkSpec, WriterConfig};

/// The environment variable that makes the child test run; its value is the
/// storage directory.
pub const CHILD_ENV: &str = "AUDITLOG_CRASH_CHILD_DIR";

/// The child's body: opens the sink `open` makes in `dir`, then 32 producers
/// append forever, each printing `R <seq> <hash>` once its entry is durable.
/// Returns only if the log fails.
pub fn run_child<F, Fut>(dir: &Path, open: F)
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: Future<Output = Arc<dyn Sink>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child: runtime");
    rt.block_on(async move {
        let sink = open(dir.to_path_buf()).await;
        let log = AuditLog::open(WriterConfig::default(), vec![SinkSpec::required(sink)])
            .await
            .expect("child: open log");
        let mut tasks = Vec::new();
        for p in 0..32u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                loop {
                    let r = log
                        .append(&sample_entry(p * 1_000_000 + i))
                        .await
                        .expect("child: append");
                    println!("R {} {}", r.seq, r.hash);
                    i += 1;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// Starts this test binary's `child_test` `rounds` times on `dir`, each time
/// killing it with SIGKILL after a random number of receipts (so the kill
/// lands anywhere in the write, sync and print cycle), and returns every
/// receipt it printed in full: sequence to hash. Panics if a sequence was
/// receipted twice with different hashes, or a child exited by itself.
pub fn kill_rounds(child_test: &str, dir: &Path, rounds: usize) -> HashMap<u64, String> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let exe = std::env::current_exe().expect("test binary");
    let mut receipts: HashMap<u64, String> = HashMap::new();
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let kill_after = 1 + next() % 3000;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut seen = 0u64;
        let mut killed = false;
        loop {
            line.clear();
            let n = reader.read_line(&mut line).expect("read child stdout");
            if n == 0 {
                break;
            }
            if let Some(rest) = line.trim_end().strip_prefix("R ") {
                // A line cut by the kill has no whole hash; it was never printed in full.
                if let Some((seq, hash)) = rest.split_once(' ') {
                    if hash.len() == 64 {
                        let seq: u64 = seq.parse().expect("seq");
                        if let Some(old) = receipts.insert(seq, hash.to_string()) {
                            assert_eq!(
                                old, hash,
                                "round {round}: sequence {seq} was receipted twice with different hashes (seed {seed})"
                            );
                        }
                        seen += 1;
                    }
                }
            }
            if !killed && seen >= kill_after {
                child.kill().expect("SIGKILL");
                killed = true;
            }
        }
        let status = child.wait().expect("wait");
        assert!(
            killed,
            "round {round}: child exited by itself: {status:?} (seed {seed})"
        );
    }
    assert!(
        receipts.len() > rounds,
        "too few receipts to mean anything: {}",
        receipts.len()
    );
    receipts
}

/// Checks that the chain in `reader` verifies and holds every receipt with
/// its hash.
pub async fn check_receipts(reader: &dyn RecordReader, receipts: &HashMap<u64, String>) {
    let stored = read_verified(reader).await;
    let by_seq: HashMap<u64, String> = stored
        .iter()
        .map(|r| (r.seq(), r.hash().to_hex()))
        .collect();
    for (seq, hash) in receipts {
        assert_eq!(
            by_seq.get(seq),
            Some(hash),
            "receipt {seq} is missing from the log or differs"
        );
    }
    eprintln!(
        "{} receipts over the SIGKILL rounds, {} records in the log",
        receipts.len(),
        stored.len()
    );
}

/// A backend's SIGKILL crash test; see the [module docs](self).
#[macro_export]
macro_rules! crash_tests {
    ($open:path) => {
        /// The killed writer: runs only when the crash test starts this binary.
        #[test]
        fn crash_child() {
            let Ok(dir) = ::std::env::var($crate::testing::crash::CHILD_ENV) else {
                return;
            };
            $crate::testing::crash::run_child(::std::path::Path::new(&dir), $open);
        }

        /// Kills the writer 20 times on the same storage; every receipt it
        /// printed must then be in the log, and the chain must verify.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sigkill_never_loses_a_receipt() {
            if ::std::env::var($crate::testing::crash::CHILD_ENV).is_ok() {
                return;
            }
            let dir = ::tempfile::tempdir().expect("tempdir");
            let receipts = $crate::testing::crash::kill_rounds("crash_child", dir.path(), 20);
            // Reopened as the next writer would (recovering any torn tail).
            let sink = $open(dir.path().to_path_buf()).await;
            $crate::testing::crash::check_receipts(&*sink, &receipts).await;
        }
    };
}
