//! Signed checkpoints catch what a plain hash chain cannot: a chain rewritten
//! and recomputed by someone who can write the storage, and a cut-off tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use audit_core::checkpoint::KeyPair;
use audit_core::testing::sample_entry;
use audit_core::{AuditLog, CheckpointConfig, PrevHash, Record, Sequencer, SinkSpec, WriterConfig};
use audit_verify::{verify, FindingClass, Report, Severity, Source, VerifyOptions};
use sink_file::{FileSink, FileSinkConfig};

struct Setup {
    dir: tempfile::TempDir,
    key: Arc<KeyPair>,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            key: Arc::new(KeyPair::generate("audit.test").expect("key")),
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn witness(&self) -> PathBuf {
        self.dir.path().join("witness")
    }

    async fn write(&self, key: Arc<KeyPair>, previous: Option<Arc<KeyPair>>, n: u64, salt: u64) {
        let sink = FileSink::open(FileSinkConfig::new("file", self.log_dir()))
            .await
            .expect("open");
        let mut cp = CheckpointConfig::new(key, "audit.test/log");
        cp.every_records = 10;
        cp.every = Duration::from_secs(3600);
        cp.heartbeat = Duration::from_secs(3600);
        cp.witness_dir = Some(self.witness());
        cp.previous_key = previous;
        let config = WriterConfig {
            checkpoints: Some(cp),
            ..WriterConfig::default()
        };
        let log = AuditLog::open(config, vec![SinkSpec::required(Arc::new(sink))])
            .await
            .expect("log");
        for i in 0..n {
            log.append(&sample_entry(salt + i)).await.expect("append");
        }
        log.close().await;
    }

    fn segment(&self) -> PathBuf {
        sink_file::segments::list_segments(&self.log_dir()).expect("list")[0]
            .path
            .clone()
    }

    fn records(&self) -> Vec<Record> {
        std::fs::read(self.segment())
            .expect("read")
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Record::from_text(l).expect("record"))
            .collect()
    }

    fn rewrite(&self, records: &[Vec<u8>]) {
        let mut out = Vec::new();
        for r in records {
            out.extend_from_slice(r);
            out.push(b'\n');
        }
        std::fs::write(self.segment(), out).expect("write");
    }

    async fn check(&self, keys: &[&KeyPair], witness: bool) -> Report {
        self.check_macs(keys, witness, false).await
    }

    /// [`check`](Self::check), and with `macs` the keys' MAC keys too, as
    /// the operator (or an auditor given `<name>.mac`) checks.
    async fn check_macs(&self, keys: &[&KeyPair], witness: bool, macs: bool) -> Report {
        let options = VerifyOptions {
            public_keys: keys.iter().map(|k| k.public()).collect(),
            mac_keys: if macs {
                keys.iter().map(|k| k.seal_mac_key()).collect()
            } else {
                Vec::new()
            },
            witness: witness.then(|| self.witness()),
            ..VerifyOptions::default()
        };
        verify(&[Source::File(self.log_dir())], &options)
            .await
            .expect("verify runs")
    }
}

/// Re-seals `texts` from index `from` on, as an attacker who can write the
/// file but has no signing key would: bodies kept, chain members recomputed.
fn recompute_from(texts: &mut [Vec<u8>], from: usize) {
    let head = (from > 0).then(|| Record::from_text(&texts[from - 1]).expect("record").head());
    let mut seq = Sequencer::resume(head);
    for t in texts[from..].iter_mut() {
        let text = std::str::from_utf8(t).expect("utf8");
        let body = &text[..text.find(",\"chain_sequence\":").expect("chain members")];
        *t = seq.seal(body.as_bytes()).text().to_vec();
    }
}

fn has(report: &Report, class: FindingClass, severity: Severity) -> bool {
    report.sources[0]
        .findings
        .iter()
        .any(|f| f.class == class && f.severity == severity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intact_log_with_checkpoints_verifies_and_every_record_is_signed() {
    let s = Setup::new();
    s.write(s.key.clone(), None, 35, 0).await;
    let recs = s.records();
    let checkpoints = recs
        .iter()
        .filter(|r| r.text().starts_with(b"{\"record_type\":\"checkpoint\""))
        .count();
    assert_eq!(checkpoints, 4, "every 10 records and one at clean shutdown");
    // The shutdown checkpoint ends the last batch, before that batch's seal.
    assert!(recs[recs.len() - 2]
        .text()
        .starts_with(b"{\"record_type\":\"checkpoint\""));
    assert!(recs
        .last()
        .expect("last")
        .text()
        .starts_with(b"{\"record_type\":\"seal\""));
    let r = s.check(&[&s.key], true).await;
    assert!(r.ok && r.sources[0].findings.is_empty(), "{}", r.human());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_one_record_and_recomputing_the_chain_is_caught_by_a_checkpoint() {
    let s = Setup::new();
    s.write(s.key.clone(), None, 35, 0).await;
    let mut texts: Vec<Vec<u8>> = s.records().iter().map(|r| r.text().to_vec()).collect();
    let victim = 4; // record 5
    texts[victim] = String::from_utf8(texts[victim].clone())
        .expect("utf8")
        .replacen("\"allow\"", "\"deny\"", 1)
        .into_bytes();
    recompute_from(&mut texts, victim);
    s.rewrite(&texts);
    // Each batch ends with a seal, so records are not numbered as entries are.
    let signed_by_first_checkpoint = texts[victim..]
        .iter()
        .map(|t| Record::from_text(t).expect("record"))
        .find(|r| r.text().starts_with(b"{\"record_type\":\"checkpoint\""))
        .expect("a checkpoint after the edit")
        .seq()
        - 1;
    // A plain hash chain cannot tell.
    let plain = verify(&[Source::File(s.log_dir())], &VerifyOptions::default())
        .await
        .expect("verify");
    assert!(
        plain.ok,
        "the recomputed chain is self-consistent:\n{}",
        plain.human()
    );
    // The first checkpoint after the edit no longer matches the chain.
    let r = s.check(&[&s.key], false).await;
    assert!(!r.ok);
    assert!(
        r.sources[0]
            .findings
            .iter()
            .any(|f| f.class == FindingClass::Modified
                && f.seq == Some(signed_by_first_checkpoint)
                && f.detail.contains("signed checkpoint")),
        "{}",
        r.human()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_off_the_tail_is_caught_against_the_witness() {
    let s = Setup::new();
    s.write(s.key.clone(), None, 35, 0).await;
    let texts: Vec<Vec<u8>> = s.records().iter().map(|r| r.text().to_vec()).collect();
    s.rewrite(&texts[..texts.len() - 12]);
    let without_witness = s.check(&[&s.key], false).await;
    assert!(
        without_witness.ok,
        "a clean cut leaves a valid, signed prefix:\n{}",
        without_witness.human()
    );
    let r = s.check(&[&s.key], true).await;
    assert!(!r.ok);
    assert!(
        has(&r, FindingClass::Truncated, Severity::Error),
        "{}",
        r.human()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_latest_checkpoint_is_caught() {
    let s = Setup::new();
    s.write(s.key.clone(), None, 35, 0).await;
    let texts: Vec<Vec<u8>> = s.records().iter().map(|r| r.text().to_vec()).collect();
    // The shutdown checkpoint and its batch's seal are the last two records.
    s.rewrite(&texts[..texts.len() - 2]);
    // A seal ends every batch, so without the witness what is left is a
    // sealed log: with the MAC key, one with no unsigned tail; with the
    // public key alone, its MAC-sealed tail after the last signed seal is
    // the unsigned tail, a warning.
    let r = s.check_macs(&[&s.key], false, true).await;
    assert!(
        r.ok && !r.sources[0]
            .findings
            .iter()
            .any(|f| f.class == FindingClass::UnsignedTail),
        "{}",
        r.human()
    );
    let r = s.check(&[&s.key], false).await;
    assert!(
        r.ok && has(&r, FindingClass::UnsignedTail, Severity::Warning),
        "{}",
        r.human()
    );
    let r = s.check(&[&s.key], true).await;
    assert!(
        !r.ok && has(&r, FindingClass::Truncated, Severity::Error),
        "{}",
        r.human()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_forged_under_an_unknown_key_is_an_error() {
    let s = Setup::new();
    s.write(s.key.clone(), None, 35, 0).await;
    let mallory = KeyPair::generate("audit.test").expect("key");
    let mut texts: Vec<Vec<u8>> = s.records().iter().map(|r| r.text().to_vec()).collect();
    // Drop the last batch's seal, then re-sign the last checkpoint with
    // another key of the same name.
    texts.pop();
    let last = texts.len() - 1;
    let prev = Record::from_text(&texts[last - 1]).expect("record");
    let cp = audit_core::checkpoint::Checkpoint {
        log_id: "audit.test/log".into(),
        seq: prev.seq(),
        head: prev.hash(),
        time: 0,
    };
    let note = mallory.sign_note(&cp.body());
    let mut body = Vec::new();
    audit_core::encode_marker_body(
        "checkpoint",
        &checkpoint_fields(&prev, &mallory, note),
        &mut body,
    )
    .expect("encode");
    let mut seq = Sequencer::resume(Some(prev.head()));
    texts[last] = seq.seal(&body).text().to_vec();
    s.rewrite(&texts);
    let r = s.check(&[&s.key], false).await;
    assert!(!r.ok);
    assert!(
        r.sources[0]
            .findings
            .iter()
            .any(|f| f.class == FindingClass::BadSignature && f.detail.contains("unknown key")),
        "{}",
        r.human()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_is_followed_and_a_retired_key_is_refused() {
    let s = Setup::new();
    let old = s.key.clone();
    let new = Arc::new(KeyPair::generate("audit.test-2").expect("key"));
    s.write(old.clone(), None, 15, 0).await;
    s.write(new.clone(), Some(old.clone()), 15, 100).await;
    let rotations = s
        .records()
        .iter()
        .filter(|r| r.text().starts_with(b"{\"record_type\":\"key_rotation\""))
        .count();
    assert_eq!(rotations, 1);
    // Trusting only the old key, the verifier follows the signed rotation.
    let r = s.check(&[&old], true).await;
    assert!(r.ok && r.sources[0].findings.is_empty(), "{}", r.human());
    // A checkpoint signed by the retired key after the rotation is caught.
    // (A writer holding only the retired key refuses to start: the log's
    // seals are by the new key.) Chained by hand, as such a writer would.
    let mut texts: Vec<Vec<u8>> = s.records().iter().map(|r| r.text().to_vec()).collect();
    let prev = Record::from_text(texts.last().expect("records")).expect("record");
    let cp = audit_core::checkpoint::Checkpoint {
        log_id: "audit.test/log".into(),
        seq: prev.seq(),
        head: prev.hash(),
        time: 0,
    };
    let mut body = Vec::new();
    audit_core::encode_marker_body(
        "checkpoint",
        &checkpoint_fields(&prev, &old, old.sign_note(&cp.body())),
        &mut body,
    )
    .expect("encode");
    texts.push(
        Sequencer::resume(Some(prev.head()))
            .seal(&body)
            .text()
            .to_vec(),
    );
    s.rewrite(&texts);
    let r = s.check(&[&old], false).await;
    assert!(
        r.sources[0].findings.iter().any(
            |f| f.class == FindingClass::BadSignature && f.detail.contains("no longer current")
        ),
        "{}",
        r.human()
    );
    let first = s.records()[0].prev();
    assert_eq!(first, PrevHash::Genesis);
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(["keygen", "--name", "host-1", "--out"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let private: &Path = &dir.path().join("host-1.key");
    assert_eq!(
        std::fs::metadata(private)
            .expect("key")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let public = std::fs::read_to_string(dir.path().join("host-1.pub")).expect("pub");
    let key = audit_core::checkpoint::PublicKey::from_vkey(&public).expect("vkey");
    let pair = KeyPair::from_private_string(&std::fs::read_to_string(private).expect("read"))
        .expect("parse");
    assert_eq!(pair.public(), key);
    // Refuses to overwrite.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(["keygen", "--name", "host-1", "--out"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(2));
}

/// `--name ../x` wrote `../x.key`, outside `--out`. Signed-note names may
/// hold `/` (an origin) and may be `..`; the files stay in `--out` whatever
/// the name, and the key inside keeps the name as given.
#[test]
fn keygen_keeps_its_files_inside_out_whatever_the_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let out_dir = root.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    for (name, stem) in [
        ("../x", "%2E.%2Fx"),
        ("..", "%2E."),
        ("example.com/log", "example.com%2Flog"),
        ("a%2Fb", "a%252Fb"),
        (".hidden", "%2Ehidden"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit"))
            .args(["keygen", "--name", name, "--out"])
            .arg(&out_dir)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = std::fs::read_to_string(out_dir.join(format!("{stem}.pub")))
            .unwrap_or_else(|e| panic!("{name}: {stem}.pub: {e}"));
        let key = audit_core::checkpoint::PublicKey::from_vkey(&public).expect("vkey");
        assert_eq!(key.name(), name);
        assert!(out_dir.join(format!("{stem}.key")).is_file(), "{name}");
    }
    // Nothing outside `out`.
    let outside: Vec<_> = std::fs::read_dir(root.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("out")]);
    // Names the signed-note rules refuse are refused, writing nothing.
    let before = std::fs::read_dir(&out_dir).expect("dir").count();
    for bad in ["a+b", "a b", ""] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit"))
            .args(["keygen", "--name", bad, "--out"])
            .arg(&out_dir)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    assert_eq!(std::fs::read_dir(&out_dir).expect("dir").count(), before);
}

#[tokio::test(start_paused = true)]
async fn idle_logs_write_heartbeat_checkpoints() {
    let key = Arc::new(KeyPair::generate("audit.test").expect("key"));
    let sink = Arc::new(audit_core::MemorySink::new("mem"));
    let mut cp = CheckpointConfig::new(key.clone(), "audit.test/log");
    cp.every_records = 1000;
    cp.every = Duration::from_secs(3600);
    cp.heartbeat = Duration::from_secs(1);
    let config = WriterConfig {
        checkpoints: Some(cp),
        ..WriterConfig::default()
    };
    let log = AuditLog::open(config, vec![SinkSpec::required(sink.clone())])
        .await
        .expect("log");
    for i in 0..3 {
        log.append(&sample_entry(i)).await.expect("append");
    }
    // Virtual time: the runtime's clock is paused, so this advances it exactly.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    log.close().await;
    let records = sink.records();
    let checkpoints: Vec<&Record> = records
        .iter()
        .filter(|r| r.text().starts_with(b"{\"record_type\":\"checkpoint\""))
        .collect();
    assert_eq!(
        checkpoints.len(),
        3,
        "one heartbeat per idle second: {records:?}"
    );
    // Each heartbeat signs the record before it, so the last one covers
    // everything before the seal that ends its batch.
    assert_eq!(
        records.len().checked_sub(2).map(|i| records[i].seq()),
        checkpoints.last().map(|r| r.seq())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_whose_unsigned_members_disagree_with_its_note_is_modified() {
    // What `audit query` shows of a checkpoint is its members: an edit of
    // them must not pass because the note under them is intact.
    let s = Setup::new();
    s.write(s.key.clone(), None, 35, 0).await;
    let texts: Vec<Vec<u8>> = s.records().iter().map(|r| r.text().to_vec()).collect();
    let last_cp = texts
        .iter()
        .rposition(|t| String::from_utf8_lossy(t).contains("\"record_type\":\"checkpoint\""))
        .expect("a checkpoint");
    let key_id = format!("\"key_id\":\"{}\"", s.key.public().id_hex());
    for (what, from, to) in [
        ("key_id", key_id.as_str(), "\"key_id\":\"00000000\""),
        (
            "log_id",
            "\"log_id\":\"audit.test/log\"",
            "\"log_id\":\"other/log\"",
        ),
    ] {
        // The log cut right after the edited checkpoint, which is re-chained:
        // it still signs the record before it, and nothing follows it.
        let mut cut: Vec<Vec<u8>> = texts[..=last_cp].to_vec();
        let t = String::from_utf8(cut[last_cp].clone()).expect("utf8");
        assert!(t.contains(from), "{what}: {t}");
        cut[last_cp] = t.replacen(from, to, 1).into_bytes();
        recompute_from(&mut cut, last_cp);
        s.rewrite(&cut);
        let r = s.check(&[&s.key], false).await;
        assert!(
            !r.ok && has(&r, FindingClass::Modified, Severity::Error),
            "{what}: {}",
            r.human()
        );
        // The same cut without the edit is a valid, signed prefix.
        let mut clean: Vec<Vec<u8>> = texts[..=last_cp].to_vec();
        recompute_from(&mut clean, last_cp);
        s.rewrite(&clean);
        let r = s.check(&[&s.key], false).await;
        assert!(r.ok, "{what}, unedited: {}", r.human());
    }
}

/// `every_records` was honoured only at batch boundaries (10 left 79
/// records between checkpoints): with 64 producers filling large batches,
/// no more than `every_records` entries and markers lie between two
/// checkpoints, or before the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_records_holds_whatever_the_batching() {
    for every in [1u64, 10, 37] {
        let key = Arc::new(KeyPair::generate("audit.test").expect("key"));
        let sink = Arc::new(audit_core::MemorySink::new("mem"));
        let mut cp = CheckpointConfig::new(key, "audit.test/log");
        cp.every_records = every;
        cp.every = Duration::from_secs(3600);
        cp.heartbeat = Duration::from_secs(3600);
        let config = WriterConfig {
            checkpoints: Some(cp),
            ..WriterConfig::default()
        };
        let log = AuditLog::open(config, vec![SinkSpec::required(sink.clone())])
            .await
            .expect("open");
        audit_core::testing::append_concurrently(&log, 64, 20).await;
        log.close().await;
        let mut since = 0u64;
        let mut checkpoints = 0;
        for r in sink.records() {
            let text = String::from_utf8_lossy(r.text()).into_owned();
            if text.starts_with("{\"record_type\":\"checkpoint\"") {
                checkpoints += 1;
                since = 0;
            } else if !text.starts_with("{\"record_type\":\"seal\"") {
                since += 1;
                assert!(
                    since <= every,
                    "every_records = {every}: record {} is the {since}th since the last checkpoint",
                    r.seq()
                );
            }
        }
        assert!(checkpoints as u64 >= 1280 / every, "{every}: {checkpoints}");
    }
}

/// A checkpoint record's members after `record_type`, in the writer's order
/// (docs/FORMAT.md section 9), signing `prev` with `note` by `key`.
fn checkpoint_fields(
    prev: &Record,
    key: &KeyPair,
    note: String,
) -> Box<serde_json::value::RawValue> {
    // serde_json's map sorts its members, so they are spelled out, kept raw.
    let text = format!(
        r#"{{"timestamp":"2026-12-03T00:00:00Z","log_id":"audit.test/log","checkpoint_seq":{},"head_hash":"{}","key_id":"{}","note":{}}}"#,
        prev.seq(),
        prev.hash().to_hex(),
        key.public().id_hex(),
        serde_json::to_string(&note).expect("string")
    );
    serde_json::value::RawValue::from_string(text).expect("json")
}
