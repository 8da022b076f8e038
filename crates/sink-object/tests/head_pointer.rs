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
    let head = dir.path().join("audit/log/HEAD");
    let mut first_pointer = None;
    {
        let sink = ObjectSink::open(config()).await.expect("open");
        for chunk in recs.chunks(10) {
            let batch = RecordBatch::new(chunk.to_vec()).expect("contiguous");
            sink.append(&batch).await.expect("append");
            first_pointer.get_or_insert_with(|| std::fs::read(&head).expect("HEAD"));
        }
    }
    // The pointer as it stood after the first segment: stale by two
    // segments, whatever the pointer's write interval did meanwhile.
    let stale = first_pointer.expect("a pointer");
    let pointer: serde_json::Value = serde_json::from_slice(&stale).expect("json");
    assert_eq!(pointer["seq"], 10, "pointer: {pointer}");
    std::fs::write(&head, &stale).expect("write a stale HEAD");
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

/// Logs written before segments were named by their first sequence alone
/// (`<first>-<last>.jsonl`) are read, resumed and appended to: new segments
/// take the new name, and reads from any sequence start in the right one.
#[tokio::test]
async fn a_log_with_segments_named_by_their_range_is_resumed_under_the_new_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs = sample_records(None, 20);
    let segments = dir.path().join("audit/log/segments");
    std::fs::create_dir_all(&segments).expect("mkdir");
    for (first, last) in [(1u64, 6u64), (7, 10)] {
        let lines: Vec<u8> = recs[(first - 1) as usize..last as usize]
            .iter()
            .flat_map(|r| r.line().to_vec())
            .collect();
        std::fs::write(
            segments.join(format!("{first:020}-{last:020}.jsonl")),
            lines,
        )
        .expect("plant");
    }
    let sink = ObjectSink::open(fs_config(dir.path())).await.expect("open");
    assert_eq!(sink.head().await.expect("head"), Some(recs[9].head()));
    for chunk in recs[10..].chunks(5) {
        let batch = RecordBatch::new(chunk.to_vec()).expect("contiguous");
        sink.append(&batch).await.expect("append");
    }
    let mut names: Vec<String> = std::fs::read_dir(&segments)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00000000000000000001-00000000000000000006.jsonl",
            "00000000000000000007-00000000000000000010.jsonl",
            "00000000000000000011.jsonl",
            "00000000000000000016.jsonl",
        ]
    );
    drop(sink);
    let sink = ObjectSink::open(fs_config(dir.path()))
        .await
        .expect("reopen");
    assert_eq!(sink.head().await.expect("head"), Some(recs[19].head()));
    assert_eq!(read_verified(&sink).await.len(), 20);
    for from in [1u64, 6, 7, 11, 15, 16, 20] {
        let items = audit_core::testing::read_all(&sink, from).await;
        assert_eq!(items.len() as u64, 21 - from, "from {from}");
        let first = audit_core::Record::from_text(&items[0].text).expect("record");
        assert_eq!(first.seq(), from);
    }
}

/// Writes `recs` as the segment object `name` in the fs log's `segments/`,
/// and a `HEAD` naming it with `claimed`'s sequence and hash.
fn plant(
    root: &std::path::Path,
    name: &str,
    recs: &[audit_core::Record],
    claimed: &audit_core::Record,
) {
    let dir = root.join("audit/log");
    let lines: Vec<u8> = recs.iter().flat_map(|r| r.line().to_vec()).collect();
    std::fs::write(dir.join("segments").join(name), lines).expect("plant segment");
    let pointer = serde_json::json!({
        "key": format!("audit/log/segments/{name}"),
        "seq": claimed.seq(),
        "hash": claimed.hash(),
    });
    std::fs::write(dir.join("HEAD"), pointer.to_string()).expect("plant HEAD");
}

/// A hand-written `HEAD` naming an object that is not a segment (it sorts
/// after every segment, so a listing from it shows nothing newer) and holds
/// an old record: the writer must not resume from that record, which would
/// hand out sequences 4.. a second time.
#[tokio::test]
async fn a_head_naming_a_non_segment_with_an_old_record_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs = sample_records(None, 10);
    {
        let sink = ObjectSink::open(fs_config(dir.path())).await.expect("open");
        for chunk in recs.chunks(5) {
            let batch = RecordBatch::new(chunk.to_vec()).expect("contiguous");
            sink.append(&batch).await.expect("append");
        }
    }
    plant(dir.path(), "zzz.jsonl", &recs[..3], &recs[2]);
    let sink = ObjectSink::open(fs_config(dir.path()))
        .await
        .expect("reopen");
    assert_eq!(sink.head().await.expect("head"), Some(recs[9].head()));
}

/// An object with a segment's name that sorts last but holds older records
/// (planted, or renamed) is the last segment by listing as well: the writer
/// refuses to append after it rather than reuse sequences 4..10.
#[tokio::test]
async fn a_last_segment_ending_before_its_name_starts_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs = sample_records(None, 10);
    {
        let sink = ObjectSink::open(fs_config(dir.path())).await.expect("open");
        let batch = RecordBatch::new(recs.clone()).expect("contiguous");
        sink.append(&batch).await.expect("append");
    }
    plant(
        dir.path(),
        "00000000000000000500.jsonl",
        &recs[..3],
        &recs[2],
    );
    let err = ObjectSink::open(fs_config(dir.path()))
        .await
        .expect_err("a segment that ends before its name starts");
    let msg = err.to_string();
    assert!(
        msg.contains("named for sequence 500") && msg.contains("00000000000000000500.jsonl"),
        "{msg}"
    );
}

/// One writer per log on a local (`fs`) store: a second object sink on the
/// same log is refused, in this process and in another.
#[tokio::test]
async fn a_second_writer_is_refused_in_this_process_and_another() {
    audit_core::testing::one_writer(
        "a_second_writer_is_refused_in_this_process_and_another",
        |dir| async move {
            std::fs::create_dir_all(&dir).map_err(|e| audit_core::SinkError::Backend {
                sink: "obj".into(),
                detail: e.to_string(),
            })?;
            ObjectSink::open(fs_config(&dir))
                .await
                .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn Sink>)
        },
    )
    .await;
}
