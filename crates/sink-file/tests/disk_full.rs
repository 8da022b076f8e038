//! Disk full on a real, small tmpfs: appends fail cleanly, then recover once
//! space returns, with the chain intact, and exactly the acknowledged records
//! on disk. Needs root to mount: fails without it, unless `AUDIT_ALLOW_SKIP`
//! asks to skip it.

use std::path::Path;
use std::sync::Arc;

use audit_core::testing::{read_verified, sample_entry};
use audit_core::{AppendError, AuditLog, SinkSpec, WriterConfig};
use sink_file::{FileSink, FileSinkConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_cleanly_and_recovers() {
    let Some(tmpfs) =
        audit_core::testing::Tmpfs::mount("disk_full_fails_cleanly_and_recovers", "2m")
    else {
        return;
    };
    let mnt = tmpfs.path().to_path_buf();
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 1 << 20]).expect("filler");

    let config = WriterConfig {
        retry_min: std::time::Duration::ZERO,
        retry_max: std::time::Duration::ZERO,
        ..WriterConfig::default()
    };
    let sink = Arc::new(
        FileSink::open(FileSinkConfig::new("small", mnt.join("log")))
            .await
            .expect("open"),
    );
    let log = AuditLog::open(config, vec![SinkSpec::required(sink.clone())])
        .await
        .expect("open log");
    let mut acked = Vec::new();
    let mut first_error = None;
    for i in 0..100_000 {
        match log.append(&sample_entry(i)).await {
            Ok(r) => acked.push(r),
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    let err = first_error.expect("the disk never filled up");
    let msg = err.to_string();
    assert!(
        matches!(err, AppendError::NotDurable { kept: false, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("No space left on device") && msg.contains("small"),
        "unclear error: {msg}"
    );
    // On disk, exactly the acknowledged records and nothing of the failed
    // batch: the failed write was undone, not left as a partial line.
    assert_on_disk_exactly(&mnt.join("log"), &acked);
    // Still full: still a clean failure. The failed write left less than one
    // record's room in the last page, so this entry, two pages long, cannot
    // fit, whatever its timestamp's length (a sample entry of the usual size
    // sometimes could: the space left depends on every record's length).
    let mut larger = sample_entry(1_000_000);
    larger.tool_called = "x".repeat(8192);
    assert!(log.append(&larger).await.is_err());
    assert_on_disk_exactly(&mnt.join("log"), &acked);

    std::fs::remove_file(&filler).expect("free space");
    let r = log
        .append(&sample_entry(2_000_000))
        .await
        .expect("append after space returns");
    assert_eq!(r.seq, acked.len() as u64 + 1, "no gap after the failures");
    log.close().await;

    let stored = read_verified(sink.as_ref()).await;
    assert_eq!(stored.len(), acked.len() + 1);
    for a in &acked {
        assert_eq!(stored[(a.seq - 1) as usize].hash(), a.hash);
    }
    eprintln!(
        "disk full after {} records; recovered with the chain intact",
        acked.len()
    );
}

/// The segments under `dir` hold exactly `acked`, in order, each line whole:
/// after the last record only the zeros preallocation leaves.
fn assert_on_disk_exactly(dir: &Path, acked: &[audit_core::Receipt]) {
    let mut lines = Vec::new();
    for seg in sink_file::segments::list_segments(dir).expect("segments") {
        let bytes = std::fs::read(&seg.path).expect("read segment");
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let data = &bytes[..end];
        assert!(
            data.is_empty() || data.ends_with(b"\n"),
            "{}: a partial line after the last record: {:?}",
            seg.path.display(),
            String::from_utf8_lossy(&data[data.len().saturating_sub(80)..])
        );
        lines.extend(
            data.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    audit_core::Record::from_text(l)
                        .expect("a whole record")
                        .hash()
                }),
        );
    }
    let want: Vec<_> = acked.iter().map(|r| r.hash).collect();
    assert_eq!(lines.len(), want.len(), "records on disk vs acknowledged");
    assert_eq!(lines, want, "the acknowledged records, in order");
}
