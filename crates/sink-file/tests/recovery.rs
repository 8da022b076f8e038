//! Torn tails, failed writes, rotation and files changing underneath.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use audit_core::testing::{read_all, read_verified, sample_records};
use audit_core::{RecordBatch, Sink, SinkError};
use sink_file::fault::IoFaults;
use sink_file::segments::list_segments;
use sink_file::{FileLog, FileSink, FileSinkConfig};

fn batch(records: &[audit_core::Record]) -> RecordBatch {
    RecordBatch::new(records.to_vec()).expect("contiguous")
}

/// Writes `records` through a sink that is then closed; returns the segment.
async fn closed_log(dir: &std::path::Path, records: &[audit_core::Record]) -> std::path::PathBuf {
    let sink = FileSink::open(FileSinkConfig::new("f", dir))
        .await
        .expect("open");
    sink.append(&batch(records)).await.expect("append");
    drop(sink);
    list_segments(dir).expect("list")[0].path.clone()
}

/// The quarantine files beside the log.
fn quarantined(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
        .map(|e| e.path())
        .collect()
}

#[tokio::test]
async fn torn_tail_is_quarantined_and_the_next_record_is_not_glued_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs = sample_records(None, 10);
    let seg = closed_log(dir.path(), &recs[..5]).await;
    // A crash mid-write: half of record 6, no newline.
    let half = &recs[5].line()[..recs[5].line().len() / 2];
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open")
        .write_all_compat(half);
    let sink = FileSink::open(FileSinkConfig::new("f", dir.path()))
        .await
        .expect("reopen recovers");
    assert_eq!(sink.head().await.expect("head"), Some(recs[4].head()));
    let quarantined = quarantined(dir.path());
    assert_eq!(quarantined.len(), 1);
    assert_eq!(fs::read(&quarantined[0]).expect("read"), half);
    sink.append(&batch(&recs[5..]))
        .await
        .expect("append after recovery");
    assert_eq!(read_verified(&sink).await.len(), 10);
}

trait WriteAllCompat {
    fn write_all_compat(self, data: &[u8]);
}

impl WriteAllCompat for fs::File {
    fn write_all_compat(mut self, data: &[u8]) {
        use std::io::Write;
        self.write_all(data).expect("write");
    }
}

#[tokio::test]
async fn failed_writes_and_fsyncs_leave_no_partial_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(IoFaults::new());
    let mut config = FileSinkConfig::new("f", dir.path());
    config.faults = Some(faults.clone());
    let sink = FileSink::open(config.clone()).await.expect("open");
    let recs = sample_records(None, 9);
    sink.append(&batch(&recs[..3])).await.expect("append");

    faults.tear_next_write(100);
    let err = sink
        .append(&batch(&recs[3..6]))
        .await
        .expect_err("torn write");
    assert!(matches!(err, SinkError::Io { op: "write", .. }), "{err}");
    assert!(err.is_clean());
    assert!(
        err.to_string().contains(dir.path().to_str().expect("utf8")),
        "error names the file: {err}"
    );

    faults.fail_syncs(1);
    let err = sink
        .append(&batch(&recs[3..6]))
        .await
        .expect_err("failed fsync");
    assert!(
        matches!(
            err,
            SinkError::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err}"
    );

    // Nothing of the failed batches is on disk; the same batch goes through now.
    assert_eq!(read_all(&sink, 0).await.len(), 3);
    sink.append(&batch(&recs[3..6]))
        .await
        .expect("append after failures");

    // A failure whose clean-up fails too poisons the sink until it re-reads the disk.
    faults.tear_next_write(50);
    faults.fail_truncates(1);
    let err = sink.append(&batch(&recs[6..])).await.expect_err("poisoned");
    assert!(!err.is_clean(), "{err}");
    drop(sink);
    let sink = FileSink::open(config)
        .await
        .expect("reopen quarantines the torn bytes");
    assert_eq!(sink.head().await.expect("head"), Some(recs[5].head()));
    sink.append(&batch(&recs[6..])).await.expect("append");
    assert_eq!(read_verified(&sink).await.len(), 9);
}

#[tokio::test]
async fn rotation_spans_segments_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = FileSinkConfig::new("f", dir.path());
    config.max_segment_bytes = Some(4 * 1024);
    let recs = sample_records(None, 60);
    {
        let sink = FileSink::open(config.clone()).await.expect("open");
        for chunk in recs.chunks(4) {
            sink.append(&batch(chunk)).await.expect("append");
        }
    }
    let segs = list_segments(dir.path()).expect("list");
    assert!(segs.len() >= 3, "only {} segments", segs.len());
    for s in &segs {
        let mode = fs::metadata(&s.path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", s.path.display());
    }
    // Each segment's name is the sequence of its first record.
    for s in &segs {
        let first = read_all(&FileLog::open(&s.path), 0).await;
        let rec = audit_core::Record::from_text(&first[0].text).expect("record");
        assert_eq!(rec.seq(), s.first_seq);
    }
    let sink = FileSink::open(config).await.expect("reopen");
    assert_eq!(sink.head().await.expect("head"), Some(recs[59].head()));
    let all = read_verified(&sink).await;
    assert_eq!(all.len(), 60);
    let mid = read_all(&sink, 33).await;
    assert_eq!(mid.len(), 28);
}

#[tokio::test]
async fn deleted_active_segment_is_detected_and_a_fresh_one_links_to_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = FileSink::open(FileSinkConfig::new("f", dir.path()))
        .await
        .expect("open");
    let recs = sample_records(None, 8);
    sink.append(&batch(&recs[..4])).await.expect("append");
    let seg = list_segments(dir.path()).expect("list")[0].path.clone();
    fs::remove_file(&seg).expect("delete");
    let err = sink
        .append(&batch(&recs[4..6]))
        .await
        .expect_err("deleted segment must be reported");
    assert!(err.to_string().contains("deleted"), "{err}");
    sink.append(&batch(&recs[4..6]))
        .await
        .expect("continues in a fresh segment");
    sink.append(&batch(&recs[6..])).await.expect("append");
    let segs = list_segments(dir.path()).expect("list");
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].first_seq, 5);
    let stored = read_all(&sink, 0).await;
    let first = audit_core::Record::from_text(&stored[0].text).expect("record");
    assert_eq!(
        first.prev(),
        audit_core::PrevHash::Hash(recs[3].hash()),
        "fresh segment links to the last durable record"
    );
    assert_eq!(stored.len(), 4);
}

#[tokio::test]
async fn replaced_active_segment_is_not_written_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = FileSink::open(FileSinkConfig::new("f", dir.path()))
        .await
        .expect("open");
    let recs = sample_records(None, 6);
    sink.append(&batch(&recs[..3])).await.expect("append");
    let seg = list_segments(dir.path()).expect("list")[0].path.clone();
    let forged = dir.path().join("forged");
    fs::write(&forged, b"forged\n").expect("write");
    fs::rename(&forged, &seg).expect("replace");
    let err = sink
        .append(&batch(&recs[3..]))
        .await
        .expect_err("replacement detected");
    assert!(err.to_string().contains("replaced"), "{err}");
    sink.append(&batch(&recs[3..]))
        .await
        .expect("fresh segment");
    assert_eq!(
        fs::read(&seg).expect("read"),
        b"forged\n",
        "the replacing file is left as evidence"
    );
    let segs = list_segments(dir.path()).expect("list");
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].first_seq, 4);
}

#[tokio::test]
async fn corrupt_last_record_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let sink = FileSink::open(FileSinkConfig::new("f", dir.path()))
            .await
            .expect("open");
        sink.append(&batch(&sample_records(None, 3)))
            .await
            .expect("append");
    }
    let seg = list_segments(dir.path()).expect("list")[0].path.clone();
    let text = fs::read_to_string(&seg)
        .expect("read")
        .replacen("agent-", "agent_", 10);
    fs::write(&seg, text).expect("write");
    let err = FileSink::open(FileSinkConfig::new("f", dir.path()))
        .await
        .expect_err("corrupt tail");
    assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn reader_survives_hostile_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hostile.jsonl");
    let mut data = vec![b'x'; 3 << 20];
    data.extend_from_slice(b"\n\xff\xfe\x00garbage\n{\"a\":1}");
    fs::write(&path, &data).expect("write");
    let items = read_all(&FileLog::open(&path).with_max_line(1 << 20), 0).await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].oversized, Some(3 << 20));
    assert!(items[0].text.is_empty());
    assert_eq!(&items[1].text[..], b"\xff\xfe\x00garbage");
    assert!(items[2].incomplete);
}

#[tokio::test]
async fn rotation_by_age_starts_a_new_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = FileSinkConfig::new("f", dir.path());
    config.max_segment_bytes = None;
    // Every non-empty segment is already old enough to rotate.
    config.max_segment_age = Some(std::time::Duration::ZERO);
    let sink = FileSink::open(config).await.expect("open");
    let recs = sample_records(None, 9);
    for chunk in recs.chunks(3) {
        sink.append(&batch(chunk)).await.expect("append");
    }
    let firsts: Vec<u64> = list_segments(dir.path())
        .expect("list")
        .iter()
        .map(|s| s.first_seq)
        .collect();
    assert_eq!(firsts, vec![1, 4, 7]);
    assert_eq!(read_verified(&sink).await.len(), 9);
}

fn data_len(records: &[audit_core::Record]) -> u64 {
    records.iter().map(|r| r.line().len() as u64).sum()
}

#[tokio::test]
async fn preallocated_zeros_are_skipped_while_live_and_trimmed_at_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs = sample_records(None, 5);
    let sink = FileSink::open(FileSinkConfig::new("f", dir.path()))
        .await
        .expect("open");
    sink.append(&batch(&recs)).await.expect("append");
    let seg = list_segments(dir.path()).expect("list")[0].path.clone();
    let live = fs::metadata(&seg).expect("stat").len();
    assert!(
        live > data_len(&recs),
        "the active segment is preallocated ({live} bytes)"
    );
    // A reader of the live log (the verifier, a catch-up) sees the records only.
    let items = read_all(&FileLog::open(dir.path()), 0).await;
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| !i.incomplete));
    assert_eq!(read_verified(&sink).await.len(), 5);
    drop(sink);
    let bytes = fs::read(&seg).expect("read");
    assert_eq!(bytes.len() as u64, data_len(&recs), "zeros cut at close");
    assert_eq!(bytes.last(), Some(&b'\n'));
}

#[tokio::test]
async fn a_hole_left_by_a_crash_inside_preallocated_space_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs = sample_records(None, 10);
    let seg = closed_log(dir.path(), &recs[..5]).await;
    // What a crash can leave: record 6 with a page that never reached the disk
    // (zeros inside it), record 7 whole after it, then preallocated zeros.
    let mut torn = recs[5].line().to_vec();
    for b in &mut torn[100..300] {
        *b = 0;
    }
    torn.extend_from_slice(recs[6].line());
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    {
        use std::io::Write;
        f.write_all(&torn).expect("write");
        f.write_all(&vec![0u8; 1 << 20]).expect("write zeros");
    }
    drop(f);
    let sink = FileSink::open(FileSinkConfig::new("f", dir.path()))
        .await
        .expect("reopen recovers");
    assert_eq!(sink.head().await.expect("head"), Some(recs[4].head()));
    assert_eq!(
        fs::metadata(&seg).expect("stat").len(),
        data_len(&recs[..5]),
        "cut back to the last whole record, zeros included"
    );
    let quarantined = quarantined(dir.path());
    assert_eq!(quarantined.len(), 1);
    assert_eq!(fs::read(&quarantined[0]).expect("read"), torn);
    sink.append(&batch(&recs[5..])).await.expect("append");
    assert_eq!(read_verified(&sink).await.len(), 10);
}

#[tokio::test]
async fn rotated_segments_end_with_their_last_record_and_zeros_elsewhere_are_malformed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = FileSinkConfig::new("f", dir.path());
    config.max_segment_bytes = Some(4 * 1024);
    let recs = sample_records(None, 20);
    let sink = FileSink::open(config).await.expect("open");
    for chunk in recs.chunks(4) {
        sink.append(&batch(chunk)).await.expect("append");
    }
    let segs = list_segments(dir.path()).expect("list");
    assert!(segs.len() >= 2);
    for s in &segs[..segs.len() - 1] {
        let bytes = fs::read(&s.path).expect("read");
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "{} was trimmed",
            s.path.display()
        );
        assert!(!bytes.contains(&0));
    }
    drop(sink);
    // Zeros at the end of a segment that is not the last are not padding.
    let first = &segs[0].path;
    let mut bytes = fs::read(first).expect("read");
    bytes.extend_from_slice(&[0u8; 64]);
    fs::write(first, &bytes).expect("write");
    let items = read_all(&FileLog::open(dir.path()), 0).await;
    let bad: Vec<_> = items
        .iter()
        .filter(|i| audit_core::Record::from_text(&i.text).is_err())
        .collect();
    assert_eq!(
        bad.len(),
        1,
        "the zeros are one malformed, unterminated line"
    );
    assert!(
        !bad[0].incomplete,
        "only the log's end holds a torn tail; here the line is checked, and malformed"
    );
}

/// A FIFO or a device under a segment's name is refused with an error that
/// names the file; neither the sink nor the reader blocks or reads forever.
#[tokio::test]
async fn special_files_named_like_segments_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    closed_log(dir.path(), &sample_records(None, 3)).await;
    let log_dir = dir.path();
    let planted = log_dir.join("audit-00000000000000000099.jsonl");
    for (kind, what) in [("fifo", "a FIFO"), ("device", "a device")] {
        if kind == "fifo" {
            let made = std::process::Command::new("mkfifo")
                .arg(&planted)
                .status()
                .expect("mkfifo");
            assert!(made.success());
        } else {
            std::os::unix::fs::symlink("/dev/zero", &planted).expect("symlink");
        }
        let err = FileSink::open(FileSinkConfig::new("f", log_dir))
            .await
            .expect_err("the sink refuses it");
        assert!(
            err.to_string().contains(what)
                && err.to_string().contains("audit-00000000000000000099"),
            "{kind}: {err}"
        );
        let mut cursor = audit_core::RecordReader::read_from(&FileLog::open(log_dir), 0)
            .await
            .expect("cursor");
        let err = loop {
            match cursor.next_batch(100).await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{kind}: the reader took it for a segment"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains(what), "{kind}: {err}");
        fs::remove_file(&planted).expect("remove");
    }
}

/// A last segment extended to a terabyte of holes (sparse, so it costs no
/// disk) reads as its records followed by zeros: the reader and start-up skip
/// the holes instead of reading a terabyte, and start-up cuts them off.
#[tokio::test]
async fn a_sparse_terabyte_tail_is_skipped_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = sample_records(None, 5);
    let segment = closed_log(dir.path(), &records).await;
    let data_len = fs::metadata(&segment).expect("stat").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(1 << 40))
        .expect("extend sparsely");
    let stored = read_verified(&FileLog::open(dir.path())).await;
    assert_eq!(stored.len(), 5);
    let sink = FileSink::open(FileSinkConfig::new("f", dir.path()))
        .await
        .expect("reopen");
    assert_eq!(sink.head().await.expect("head"), Some(records[4].head()));
    drop(sink);
    assert_eq!(fs::metadata(&segment).expect("stat").len(), data_len);
}

/// Holes in segments that are not the last (a terabyte in the middle of
/// one, a terabyte after the last record of another) are skipped without
/// being read: each is one malformed line, marked as running through a
/// hole, and the records around them read as before. Reading them would take
/// hours.
#[tokio::test]
async fn terabyte_holes_in_earlier_segments_are_skipped_not_read() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = FileSinkConfig::new("f", dir.path());
    config.max_segment_bytes = Some(4 * 1024);
    let recs = sample_records(None, 30);
    let sink = FileSink::open(config).await.expect("open");
    for chunk in recs.chunks(3) {
        sink.append(&batch(chunk)).await.expect("append");
    }
    drop(sink);
    let segs = list_segments(dir.path()).expect("list");
    assert!(segs.len() >= 3, "{} segments", segs.len());
    // A terabyte hole after the first line of segment 0.
    let bytes = fs::read(&segs[0].path).expect("read");
    let first_nl = bytes.iter().position(|&b| b == b'\n').expect("a line") + 1;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&segs[0].path)
        .expect("open");
    f.write_all(&bytes[..first_nl]).expect("write");
    f.seek(SeekFrom::Current(1 << 40)).expect("seek");
    f.write_all(&bytes[first_nl..]).expect("write");
    drop(f);
    // A terabyte hole at the end of segment 1.
    fs::OpenOptions::new()
        .write(true)
        .open(&segs[1].path)
        .and_then(|f| f.set_len(f.metadata()?.len() + (1 << 40)))
        .expect("extend sparsely");
    let items = read_all(&FileLog::open(dir.path()), 0).await;
    let holed: Vec<_> = items.iter().filter(|i| i.sparse).collect();
    assert_eq!(holed.len(), 2, "one line through each hole");
    assert!(holed
        .iter()
        .all(|i| i.oversized.is_some_and(|n| n >= 1 << 40)));
    let good = items
        .iter()
        .filter(|i| audit_core::Record::from_text(&i.text).is_ok())
        .count();
    // The record whose line the first hole runs into is lost into it.
    assert_eq!(good, recs.len() - 1);
}

/// One writer per log: a second file sink on the same directory is refused,
/// in this process and in another.
#[tokio::test]
async fn a_second_writer_is_refused_in_this_process_and_another() {
    audit_core::testing::one_writer(
        "a_second_writer_is_refused_in_this_process_and_another",
        |dir| async move {
            FileSink::open(FileSinkConfig::new("file", dir))
                .await
                .map(|s| Arc::new(s) as Arc<dyn Sink>)
        },
    )
    .await;
}
