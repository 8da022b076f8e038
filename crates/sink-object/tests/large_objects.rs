//! Segment objects are read in ranges: lines that cross a range boundary
//! arrive whole, a line longer than any record is reported by its length
//! without being loaded, and the head is found from the last object's tail.

use audit_core::testing::{read_all, read_verified, sample_records};
use audit_core::{Record, Sink};
use sink_object::{ObjectLog, ObjectSink};

mod common;

use common::fs_config;

/// Writes `lines` as the segment object for `first..=last`, as the sink would.
fn plant(root: &std::path::Path, first: u64, last: u64, lines: &[Vec<u8>]) {
    let dir = root.join("audit/log/segments");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join(format!("{first:020}-{last:020}.jsonl")),
        lines.concat(),
    )
    .expect("write object");
}

#[tokio::test]
async fn an_object_larger_than_a_read_range_is_read_whole_and_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    // About 12 MiB: more than one 8 MiB range, so some record is cut by it.
    let records = sample_records(None, 20_000);
    let lines: Vec<Vec<u8>> = records.iter().map(|r| r.line().to_vec()).collect();
    assert!(lines.iter().map(Vec::len).sum::<usize>() > 9 << 20);
    plant(dir.path(), 1, 20_000, &lines);
    let log = ObjectLog::open(&fs_config(dir.path())).expect("log");
    let stored = read_verified(&log).await;
    assert_eq!(stored.len(), 20_000);
    assert!(stored
        .iter()
        .zip(&records)
        .all(|(s, r)| s.text() == r.text()));
    // The sink finds its head from the object's tail, not by loading it.
    let sink = ObjectSink::open(fs_config(dir.path())).await.expect("open");
    assert_eq!(
        sink.head().await.expect("head"),
        Some(records[19_999].head())
    );
}

#[tokio::test]
async fn a_line_longer_than_any_record_is_reported_not_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = sample_records(None, 4);
    let mut huge = vec![b'x'; (16 << 20) + 10];
    huge.push(b'\n');
    let lines = vec![
        records[0].line().to_vec(),
        records[1].line().to_vec(),
        huge,
        records[2].line().to_vec(),
        records[3].line().to_vec(),
    ];
    plant(dir.path(), 1, 4, &lines);
    let items = read_all(&ObjectLog::open(&fs_config(dir.path())).expect("log"), 0).await;
    assert_eq!(items.len(), 5);
    assert_eq!(items[2].oversized, Some((16 << 20) + 10));
    assert!(items[2].text.is_empty());
    for (item, rec) in [&items[0], &items[1], &items[3], &items[4]]
        .iter()
        .zip(&records)
    {
        assert_eq!(
            Record::from_text(&item.text).expect("record").hash(),
            rec.hash()
        );
    }
    // An object ending in such a line has no last record to append after.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tail = vec![b'y'; (16 << 20) + 10];
    tail.push(b'\n');
    plant(dir.path(), 1, 1, &[records[0].line().to_vec(), tail]);
    let err = ObjectSink::open(fs_config(dir.path()))
        .await
        .expect_err("no record at the end");
    assert!(err.to_string().contains("longer than"), "{err}");
}
