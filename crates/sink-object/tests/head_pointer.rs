//! The `HEAD` pointer is a throttled hint: start-up finds segments written
//! after it by listing.

use audit_core::testing::{read_verified, sample_records};
use audit_core::{RecordBatch, Sink};
mod common;

use common::fs_config;
use sink_object::ObjectSink;

#[tokio::test]
async fn reopen_finds_segments_written_after_a_stale_head_pointer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || fs_config(dir.path());
    let recs = sample_records(None, 30);
    let started = std::time::Instant::now();
    {
        let sink = ObjectSink::open(config()).await.expect("open");
        for chunk in recs.chunks(10) {
            let batch = RecordBatch::new(chunk.to_vec()).expect("contiguous");
            sink.append(&batch).await.expect("append");
        }
    }
    let pointer = std::fs::read_to_string(dir.path().join("audit/log/HEAD")).expect("HEAD");
    let pointer: serde_json::Value = serde_json::from_str(&pointer).expect("json");
    if started.elapsed() < std::time::Duration::from_secs(1) {
        // Three appends within a second: the pointer names only the first segment.
        assert_eq!(pointer["seq"], 10, "pointer: {pointer}");
    }
    let sink = ObjectSink::open(config()).await.expect("reopen");
    assert_eq!(sink.head().await.expect("head"), Some(recs[29].head()));
    assert_eq!(read_verified(&sink).await.len(), 30);
}

/// The pointer is only a hint: an empty, garbled or oversized `HEAD` object is
/// ignored (and never read whole), and the head is found by listing.
#[tokio::test]
async fn a_bad_head_pointer_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || fs_config(dir.path());
    let recs = sample_records(None, 12);
    {
        let sink = ObjectSink::open(config()).await.expect("open");
        for chunk in recs.chunks(4) {
            let batch = RecordBatch::new(chunk.to_vec()).expect("contiguous");
            sink.append(&batch).await.expect("append");
        }
    }
    let head = dir.path().join("audit/log/HEAD");
    for bad in [Vec::new(), b"{not json".to_vec(), vec![b'x'; 4 << 20]] {
        std::fs::write(&head, &bad).expect("write HEAD");
        let sink = ObjectSink::open(config()).await.expect("reopen");
        assert_eq!(
            sink.head().await.expect("head"),
            Some(recs[11].head()),
            "HEAD of {} bytes",
            bad.len()
        );
    }
}
