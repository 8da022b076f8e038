//! Power loss, simulated in the file sink's I/O layer: at a random point of
//! a run of concurrent appends the power is cut, every byte not covered by a
//! completed fdatasync is taken back (zeroed, as the preallocated space or
//! the hole past the old end it was written over), and the log reopened.
//! Every record a receipt was given for must be there, byte for byte, in an
//! unbroken chain. A SIGKILL leaves the page cache intact and cannot see a
//! missing sync; this can: with the batch's sync call removed, the writes
//! stay unsynced and the cut takes the acknowledged records with it.

use std::sync::Arc;

use audit_core::testing::{read_verified, sample_entry};
use audit_core::{AuditLog, Receipt, SinkSpec, WriterConfig};
use sink_file::fault::IoFaults;
use sink_file::{FileLog, FileSink, FileSinkConfig};

/// A small deterministic generator: the cut points vary by trial, and a
/// failure names its trial.
fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_a_random_point_loses_no_acknowledged_record() {
    for trial in 0..12u64 {
        let mut rand = lcg(trial);
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Arc::new(IoFaults::new());
        let mut cfg = FileSinkConfig::new("f", dir.path());
        cfg.faults = Some(faults.clone());
        // Small segments in some trials, so that cuts fall across rotations.
        if trial % 3 == 1 {
            cfg.max_segment_bytes = Some(16 * 1024);
        }
        let sink = FileSink::open(cfg).await.expect("open");
        let log = Arc::new(
            AuditLog::open(
                WriterConfig::default(),
                vec![SinkSpec::required(Arc::new(sink))],
            )
            .await
            .expect("log"),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Receipt>();
        let producers = 1 + (rand() % 32) as usize;
        let mut tasks = Vec::new();
        for p in 0..producers {
            let (log, tx) = (log.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    match log.append(&sample_entry(p as u64 * 1_000_000 + i)).await {
                        Ok(r) => {
                            if tx.send(r).is_err() {
                                return;
                            }
                        }
                        // The power is off: nothing more is acknowledged.
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(tx);
        // Cut after a random number of receipts, while appends are in flight.
        let cut_after = 1 + rand() % 2_000;
        let mut receipts = Vec::new();
        let mut lost = None;
        while let Some(r) = rx.recv().await {
            receipts.push(r);
            if lost.is_none() && receipts.len() as u64 >= cut_after {
                lost = Some(faults.cut_power());
            }
        }
        for t in tasks {
            t.await.expect("producer");
        }
        log.close().await;
        drop(log);
        let lost = lost.expect("the power was cut");
        lost.apply().expect("take the unsynced writes back");
        // What survived the cut: every acknowledged record, as acknowledged.
        let stored = read_verified(&FileLog::open(dir.path())).await;
        for r in &receipts {
            let found = stored.get((r.seq - 1) as usize);
            assert!(
                found.is_some_and(|s| s.seq() == r.seq && s.hash() == r.hash),
                "trial {trial} ({producers} producers, cut after {cut_after} receipts): record {} was acknowledged and is gone ({} records survived, {} receipts)",
                r.seq,
                stored.len(),
                receipts.len()
            );
        }
        // And the log opens again, continuing from what survived.
        let sink = FileSink::open(FileSinkConfig::new("f", dir.path()))
            .await
            .unwrap_or_else(|e| panic!("trial {trial}: reopen after the cut: {e}"));
        drop(sink);
    }
}
