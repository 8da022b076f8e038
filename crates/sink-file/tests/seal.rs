//! The file sink under the writer's seals: an unsealed tail (a crash between
//! the write and the seal, or planted lines) is cut at start-up, moved aside
//! like a torn tail, and never copied to another sink.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use audit_core::checkpoint::{KeyPair, Seal};
use audit_core::testing::{read_verified, sample_entry};
use audit_core::{
    encode_entry_body, encode_marker_body, AuditLog, CheckpointConfig, MemorySink, OpenError,
    Record, Sequencer, Sink, SinkSpec, WriterConfig,
};
use sink_file::segments::list_segments;
use sink_file::{FileSink, FileSinkConfig};

const LOG_ID: &str = "audit.test/file-seal";

fn config(key: &Arc<KeyPair>) -> WriterConfig {
    let mut cp = CheckpointConfig::new(key.clone(), LOG_ID);
    cp.every = Duration::from_secs(3600);
    cp.heartbeat = Duration::from_secs(3600);
    WriterConfig {
        checkpoints: Some(cp),
        ..WriterConfig::default()
    }
}

async fn open(
    dir: &Path,
    key: &Arc<KeyPair>,
    mem: Option<&MemorySink>,
) -> Result<AuditLog, OpenError> {
    let file = FileSink::open(FileSinkConfig::new("file", dir))
        .await
        .map_err(OpenError::Sink)?;
    let mut specs = vec![SinkSpec::required(Arc::new(file))];
    if let Some(m) = mem {
        specs.push(SinkSpec::required(Arc::new(m.clone())));
    }
    AuditLog::open(config(key), specs).await
}

async fn write(dir: &Path, key: &Arc<KeyPair>, mem: Option<&MemorySink>, from: u64, n: u64) {
    let log = open(dir, key, mem).await.expect("open");
    for i in from..from + n {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.close().await;
}

fn segment(dir: &Path) -> PathBuf {
    list_segments(dir)
        .expect("list")
        .last()
        .expect("segment")
        .path
        .clone()
}

fn stored(dir: &Path) -> Vec<Record> {
    fs::read(segment(dir))
        .expect("read")
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Record::from_text(l).expect("record"))
        .collect()
}

fn append_lines(dir: &Path, records: &[Record]) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(segment(dir))
        .expect("open segment");
    for r in records {
        f.write_all(r.line()).expect("write");
    }
    f.sync_all().expect("sync");
}

fn rechained_entries(head: &Record, salts: std::ops::Range<u64>) -> Vec<Record> {
    let mut seq = Sequencer::resume(Some(head.head()));
    salts
        .map(|i| {
            let mut body = Vec::new();
            encode_entry_body(&sample_entry(i), &mut body).expect("encode");
            seq.seal(&body)
        })
        .collect()
}

fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".unsealed-"))
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_planted_in_the_file_is_cut_and_never_copied_to_the_other_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(KeyPair::generate("audit.test").expect("key"));
    let mem = MemorySink::new("mem");
    write(dir.path(), &key, Some(&mem), 0, 5).await;
    let before = stored(dir.path());
    assert_eq!(mem.records(), before);
    let head = before.last().expect("records").clone();
    let fake = rechained_entries(&head, 666..667);
    append_lines(dir.path(), &fake);
    // The writer cuts the planted line, continues after its last seal, and
    // the memory sink never holds it.
    write(dir.path(), &key, Some(&mem), 100, 2).await;
    let after = stored(dir.path());
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(
        after[before.len()].prev(),
        audit_core::PrevHash::Hash(head.hash())
    );
    assert!(!after.contains(&fake[0]) && !mem.records().contains(&fake[0]));
    assert_eq!(mem.records(), after);
    let aside = moved_aside(dir.path());
    assert_eq!(aside.len(), 1);
    assert_eq!(fs::read(&aside[0]).expect("read"), fake[0].line());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_record_with_a_seal_by_another_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(KeyPair::generate("audit.test").expect("key"));
    let mallory = KeyPair::generate("audit.test").expect("key");
    let mem = MemorySink::new("mem");
    write(dir.path(), &key, Some(&mem), 0, 5).await;
    let mem_before = mem.records();
    let head = stored(dir.path()).last().expect("records").clone();
    let fake = rechained_entries(&head, 666..667);
    let seal = Seal {
        log_id: LOG_ID.into(),
        seq: fake[0].seq(),
        head: fake[0].hash(),
        max_stretch: 10_000,
    };
    // In the writer's member order, so that only the key is wrong.
    let fields = format!(
        r#"{{"sealed_seq":{},"note":{}}}"#,
        seal.seq,
        serde_json::to_string(&mallory.sign_note(&seal.body())).expect("string")
    );
    let mut body = Vec::new();
    encode_marker_body(
        "seal",
        &serde_json::value::RawValue::from_string(fields).expect("json"),
        &mut body,
    )
    .expect("encode");
    let forged = Sequencer::resume(Some(fake[0].head())).seal(&body);
    append_lines(dir.path(), &[fake[0].clone(), forged.clone()]);
    let err = open(dir.path(), &key, Some(&mem))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, OpenError::Unsealed { sink, from, to, .. }
            if sink == "file" && *from == fake[0].seq() && *to == forged.seq()),
        "{err}"
    );
    assert_eq!(mem.records(), mem_before);
    assert!(
        moved_aside(dir.path()).is_empty(),
        "nothing is cut on a forgery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsealed_tail_of_complete_lines_is_cut_at_restart_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(KeyPair::generate("audit.test").expect("key"));
    write(dir.path(), &key, None, 0, 5).await;
    let before = stored(dir.path());
    // A crash after the batch's write reached the disk only in part: its
    // entries' lines are complete, its seal line is not there.
    let unsealed = rechained_entries(before.last().expect("records"), 5..8);
    append_lines(dir.path(), &unsealed);
    let file = FileSink::open(FileSinkConfig::new("file", dir.path()))
        .await
        .expect("open");
    assert_eq!(
        file.head().await.expect("head").map(|h| h.seq),
        unsealed.last().map(Record::seq)
    );
    drop(file);
    write(dir.path(), &key, None, 100, 3).await;
    let file = FileSink::open(FileSinkConfig::new("file", dir.path()))
        .await
        .expect("open");
    let all = read_verified(&file).await;
    assert_eq!(&all[..before.len()], &before[..]);
    assert!(all.len() > before.len() + 3);
    for r in &unsealed {
        assert!(!all.contains(r));
    }
    let aside = moved_aside(dir.path());
    assert_eq!(aside.len(), 1);
    let expected: Vec<u8> = unsealed.iter().flat_map(|r| r.line().to_vec()).collect();
    assert_eq!(fs::read(&aside[0]).expect("read"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsealed_tail_that_starts_a_segment_is_moved_aside_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(KeyPair::generate("audit.test").expect("key"));
    write(dir.path(), &key, None, 0, 3).await;
    let before = stored(dir.path());
    let planted = rechained_entries(before.last().expect("records"), 50..52);
    let name = sink_file::segments::segment_name(planted[0].seq(), 0);
    let mut bytes = Vec::new();
    for r in &planted {
        bytes.extend_from_slice(r.line());
    }
    fs::write(dir.path().join(&name), &bytes).expect("write segment");
    write(dir.path(), &key, None, 100, 1).await;
    let file = FileSink::open(FileSinkConfig::new("file", dir.path()))
        .await
        .expect("open");
    let all = read_verified(&file).await;
    assert_eq!(&all[..before.len()], &before[..]);
    assert!(!all.contains(&planted[0]));
    // The segment's bytes are moved aside and it is reused, empty, for the
    // record that really comes next (it has the same first sequence).
    let aside = moved_aside(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(&aside[0]).expect("read"), bytes);
    assert_eq!(all[before.len()].seq(), planted[0].seq());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsealed_tail_spanning_segments_is_cut_from_all_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(KeyPair::generate("audit.test").expect("key"));
    write(dir.path(), &key, None, 0, 3).await;
    let before = stored(dir.path());
    let planted = rechained_entries(before.last().expect("records"), 50..52);
    append_lines(dir.path(), &planted[..1]);
    let name = sink_file::segments::segment_name(planted[1].seq(), 0);
    fs::write(dir.path().join(&name), planted[1].line()).expect("write segment");
    write(dir.path(), &key, None, 100, 1).await;
    let file = FileSink::open(FileSinkConfig::new("file", dir.path()))
        .await
        .expect("open");
    let all = read_verified(&file).await;
    assert_eq!(&all[..before.len()], &before[..]);
    assert!(!all.contains(&planted[0]) && !all.contains(&planted[1]));
    let mut aside: Vec<Vec<u8>> = moved_aside(dir.path())
        .iter()
        .map(|p| fs::read(p).expect("read"))
        .collect();
    aside.sort();
    let mut expected = vec![planted[0].line().to_vec(), planted[1].line().to_vec()];
    expected.sort();
    assert_eq!(aside, expected);
}
