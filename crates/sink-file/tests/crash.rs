//! SIGKILL crash test: every receipt a killed writer printed is in the log,
//! and the chain verifies, over 20+ kill-and-restart rounds on the same files.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use audit_core::testing::{read_verified, sample_entry};
use audit_core::{AuditLog, SinkSpec, WriterConfig};
use sink_file::{FileSink, FileSinkConfig};

const CHILD_ENV: &str = "SINK_FILE_CRASH_CHILD_DIR";

fn config(dir: &Path) -> FileSinkConfig {
    let mut c = FileSinkConfig::new("crash", dir);
    // Small segments so kills also land around rotations.
    c.max_segment_bytes = Some(512 * 1024);
    c
}

/// The child: many producers append forever and print each receipt once durable.
/// It only runs when the parent test starts this binary with CHILD_ENV set.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sink = FileSink::open(config(Path::new(&dir)))
            .await
            .expect("child: open");
        let log = AuditLog::open(
            WriterConfig::default(),
            vec![SinkSpec::required(Arc::new(sink))],
        )
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

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_a_receipt() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().expect("test binary");
    let mut receipts: HashMap<u64, String> = HashMap::new();
    let rounds = 20;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        // Kill after a random number of receipts, so the kill lands at a random
        // point of the write / fdatasync / print cycle.
        let kill_after = 1 + rng.next() % 3000;
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
                // A line cut by the kill has no hash yet; it was never fully printed.
                if let Some((seq, hash)) = rest.split_once(' ') {
                    if hash.len() == 64 {
                        let seq: u64 = seq.parse().expect("seq");
                        if let Some(old) = receipts.insert(seq, hash.to_string()) {
                            assert_eq!(old, hash, "round {round}: sequence {seq} was receipted twice with different hashes");
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
        assert!(killed, "round {round}: child exited by itself: {status:?}");
    }
    // Reopen as the next writer would (recovering any torn tail), then check.
    let sink = FileSink::open(config(dir.path()))
        .await
        .expect("reopen after crashes");
    let stored = read_verified(&sink).await;
    let by_seq: HashMap<u64, String> = stored
        .iter()
        .map(|r| (r.seq(), r.hash().to_hex()))
        .collect();
    assert!(
        receipts.len() > rounds,
        "too few receipts to mean anything: {}",
        receipts.len()
    );
    for (seq, hash) in &receipts {
        assert_eq!(
            by_seq.get(seq),
            Some(hash),
            "receipt {seq} is missing from the log or differs (seed {seed})"
        );
    }
    eprintln!(
        "{} receipts over {rounds} SIGKILL rounds, {} records in the log",
        receipts.len(),
        stored.len()
    );
}
