//! Seals: every batch ends with the writer's signature over its last record,
//! and at start-up only records covered by a seal of this log's key are
//! adopted, copied to other sinks or signed over.

use std::sync::Arc;
use std::time::Duration;

use audit_core::checkpoint::{verify_rotation, verify_seal, KeyPair};
use audit_core::testing::{append_concurrently, sample_entry};
use audit_core::{
    encode_entry_body, encode_marker_body, AuditLog, CheckpointConfig, MemorySink, OpenError,
    Record, RecordBatch, Sequencer, Sink, SinkSpec, WriterConfig,
};

const LOG_ID: &str = "audit.test/seal";

fn key(name: &str) -> Arc<KeyPair> {
    Arc::new(KeyPair::generate(name).expect("key"))
}

fn config(key: Arc<KeyPair>, previous: Option<Arc<KeyPair>>) -> WriterConfig {
    let mut cp = CheckpointConfig::new(key, LOG_ID);
    cp.every_records = 10;
    cp.every = Duration::from_secs(3600);
    cp.heartbeat = Duration::from_secs(3600);
    cp.previous_key = previous;
    WriterConfig {
        checkpoints: Some(cp),
        ..WriterConfig::default()
    }
}

async fn write(config: WriterConfig, sinks: &[MemorySink], from: u64, n: u64) {
    let specs = sinks
        .iter()
        .map(|s| SinkSpec::required(Arc::new(s.clone())))
        .collect();
    let log = AuditLog::open(config, specs).await.expect("open");
    for i in from..from + n {
        log.append(&sample_entry(i)).await.expect("append");
    }
    log.close().await;
}

fn is_type(r: &Record, t: &str) -> bool {
    r.text()
        .starts_with(format!("{{\"record_type\":\"{t}\"").as_bytes())
}

fn note_of(r: &Record) -> String {
    let v: serde_json::Value = serde_json::from_slice(r.text()).expect("json");
    v["note"].as_str().expect("note").to_string()
}

/// An entry chained after `head` as someone who can write the storage but
/// holds no key would: correct prev link, recomputed hash.
fn rechained_entry(head: &Record, salt: u64) -> Record {
    let mut body = Vec::new();
    encode_entry_body(&sample_entry(salt), &mut body).expect("encode");
    Sequencer::resume(Some(head.head())).seal(&body)
}

/// A seal of `sealed` by `key`, chained after it.
fn forged_seal(sealed: &Record, key: &KeyPair) -> Record {
    let seal = audit_core::checkpoint::Seal {
        log_id: LOG_ID.into(),
        seq: sealed.seq(),
        head: sealed.hash(),
        max_stretch: 10_000,
    };
    // In the writer's member order (json! would sort them).
    #[derive(serde::Serialize)]
    struct Fields {
        sealed_seq: u64,
        note: String,
    }
    let mut body = Vec::new();
    encode_marker_body(
        "seal",
        &Fields {
            sealed_seq: sealed.seq(),
            note: key.sign_note(&seal.body()),
        },
        &mut body,
    )
    .expect("encode");
    Sequencer::resume(Some(sealed.head())).seal(&body)
}

/// A MAC seal of `sealed` by `key`'s MAC keys, with `stretch`, chained after it.
fn mac_seal(sealed: &Record, key: &KeyPair, stretch: u64) -> Record {
    mac_seal_by(
        sealed,
        &key.seal_mac_key(),
        &key.writer_mac_key(),
        stretch,
        stretch,
        "",
    )
}

/// A MAC seal of `sealed` whose `mac` is by `auditors'` and `writer_mac` by
/// `writer's`, over a seal of `mac_stretch`, stating `stretch`, with `extra`
/// members (`,"name":value`) after its own.
fn mac_seal_by(
    sealed: &Record,
    auditors: &audit_core::seal_mac::SealMacKey,
    writers: &audit_core::seal_mac::SealMacKey,
    stretch: u64,
    mac_stretch: u64,
    extra: &str,
) -> Record {
    let seal = audit_core::checkpoint::Seal {
        log_id: LOG_ID.into(),
        seq: sealed.seq(),
        head: sealed.hash(),
        max_stretch: mac_stretch,
    };
    let mac =
        |k: &audit_core::seal_mac::SealMacKey| audit_core::seal_mac::encode_mac(&k.mac(&seal));
    let body = format!(
        r#"{{"record_type":"seal","sealed_seq":{},"stretch":{stretch},"mac":"{}","writer_mac":"{}"{extra}"#,
        sealed.seq(),
        mac(auditors),
        mac(writers)
    );
    Sequencer::resume(Some(sealed.head())).seal(body.as_bytes())
}

/// Checks every seal in `records`, signed or MAC, and the stretches between
/// them: at most `max_stretch` records between two seals and at most the
/// signed stretch between two signed seals. Returns (seals, signed seals).
fn check_seals(
    records: &[Record],
    key: &KeyPair,
    cp: &CheckpointConfig,
    max_stretch: u64,
) -> (usize, usize) {
    let signed_stretch = cp.signed_stretch(max_stretch);
    let (mut seals, mut signed) = (0, 0);
    let (mut stretch, mut since_signed) = (0u64, None::<u64>);
    for (i, r) in records.iter().enumerate() {
        if !is_type(r, "seal") {
            stretch += 1;
            since_signed = since_signed.map(|n| n + 1);
            continue;
        }
        let prev = &records[i - 1];
        let v: serde_json::Value = serde_json::from_slice(r.text()).expect("json");
        assert_eq!(v["sealed_seq"].as_u64(), Some(prev.seq()));
        assert_eq!(prev.seq() + 1, r.seq());
        if let Some(note) = v["note"].as_str() {
            let (seal, signer) = verify_seal(note, &[key.public()]).expect("the seal verifies");
            assert_eq!(signer, key.public());
            assert_eq!(seal.log_id, LOG_ID);
            assert_eq!(seal.max_stretch, signed_stretch);
            assert_eq!((seal.seq, seal.head), (prev.seq(), prev.hash()));
            assert!(v.get("mac").is_none());
            if let Some(n) = since_signed {
                assert!(
                    n <= signed_stretch,
                    "{n} records between signed seals before {}",
                    r.seq()
                );
            }
            since_signed = Some(0);
            signed += 1;
        } else {
            let mac =
                audit_core::seal_mac::decode_mac(v["mac"].as_str().expect("mac")).expect("base64");
            let seal = audit_core::checkpoint::Seal {
                log_id: LOG_ID.into(),
                seq: prev.seq(),
                head: prev.hash(),
                max_stretch,
            };
            assert_eq!(v["stretch"].as_u64(), Some(max_stretch));
            assert!(
                key.seal_mac_key().verifies(&seal, &mac),
                "MAC seal {} verifies",
                r.seq()
            );
            assert!(since_signed.is_some(), "a run's first seal is signed");
            since_signed = since_signed.map(|n| n + 1);
        }
        assert!(
            (1..=max_stretch).contains(&stretch),
            "{stretch} records before seal {}",
            r.seq()
        );
        stretch = 0;
        seals += 1;
    }
    assert_eq!(stretch, 0, "the log ends with a seal");
    (seals, signed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_ends_with_a_seal_within_the_announced_stretch() {
    let k = key("audit.test");
    let sink = MemorySink::new("mem");
    let mut cfg = config(k.clone(), None);
    // Small batches, so concurrent producers fill them to the limit.
    cfg.batch_max_records = 5;
    let max_stretch = cfg.max_stretch(1);
    assert_eq!(max_stretch, 5 + 2 + 2);
    let log = AuditLog::open(
        cfg.clone(),
        vec![SinkSpec::required(Arc::new(sink.clone()))],
    )
    .await
    .expect("open");
    let receipts = append_concurrently(&log, 16, 20).await;
    log.append(&sample_entry(10_000)).await.expect("append");
    log.close().await;
    let records = sink.records();
    let cp = cfg.checkpoints.clone().expect("checkpoints");
    let (seals, signed) = check_seals(&records, &k, &cp, max_stretch);
    // Most seals are MACs: 16 producers fill 5-record batches far faster
    // than every 100 ms, and a signed one comes every 1,024 records or with
    // a checkpoint (every 10 here).
    assert!(signed < seals, "{signed} of {seals} seals signed");
    // Every receipt's record is followed by a seal in the stored chain.
    for r in &receipts {
        let i = (r.seq - 1) as usize;
        assert!(records[i..].iter().any(|r| is_type(r, "seal")));
    }
    assert!(seals as u64 * 5 >= 321, "{seals} seals for 321 entries");
    // A restart continues with seals too.
    write(cfg, std::slice::from_ref(&sink), 20_000, 3).await;
    check_seals(&sink.records(), &k, &cp, max_stretch);
}

#[tokio::test]
async fn an_unsealed_record_planted_in_one_sink_is_refused_and_never_copied() {
    let k = key("audit.test");
    let (a, b) = (MemorySink::new("a"), MemorySink::new("b"));
    write(config(k.clone(), None), &[a.clone(), b.clone()], 0, 5).await;
    let b_before = b.records();
    let head = a.records().last().cloned().expect("records");
    let fake = rechained_entry(&head, 666);
    a.append(&RecordBatch::new(vec![fake.clone()]).expect("batch"))
        .await
        .expect("plant");
    let specs = vec![
        SinkSpec::required(Arc::new(a.clone())),
        SinkSpec::required(Arc::new(b.clone())),
    ];
    let err = AuditLog::open(config(k.clone(), None), specs)
        .await
        .expect_err("the planted record is refused");
    match &err {
        OpenError::Unsealed { sink, from, to, .. } => {
            assert_eq!((sink.as_str(), *from, *to), ("a", fake.seq(), fake.seq()));
        }
        other => panic!("expected Unsealed, got {other}"),
    }
    assert!(
        err.to_string().contains("not sealed by this log's key"),
        "{err}"
    );
    assert_eq!(b.records(), b_before, "nothing was copied to b");
}

#[tokio::test]
async fn a_planted_record_with_a_seal_by_another_key_is_refused() {
    let k = key("audit.test");
    // The same name: only the key ID and the signature tell them apart.
    let mallory = key("audit.test");
    let (a, b) = (MemorySink::new("a"), MemorySink::new("b"));
    write(config(k.clone(), None), &[a.clone(), b.clone()], 0, 5).await;
    let b_before = b.records();
    let head = a.records().last().cloned().expect("records");
    let fake = rechained_entry(&head, 666);
    let seal = forged_seal(&fake, &mallory);
    a.append(&RecordBatch::new(vec![fake.clone(), seal.clone()]).expect("batch"))
        .await
        .expect("plant");
    let specs = vec![
        SinkSpec::required(Arc::new(b.clone())),
        SinkSpec::required(Arc::new(a.clone())),
    ];
    let err = AuditLog::open(config(k.clone(), None), specs)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, OpenError::Unsealed { sink, from, to, .. }
            if sink == "a" && *from == fake.seq() && *to == seal.seq()),
        "{err}"
    );
    assert_eq!(b.records(), b_before, "nothing was copied to b");
    // A seal by the right key over a record planted after the last seal is
    // what only the writer can make: that one is adopted.
    let a2 = MemorySink::new("a2");
    let records = b.records();
    a2.append(&RecordBatch::new(records.clone()).expect("batch"))
        .await
        .expect("copy");
    let last = records.last().expect("records");
    let fake = rechained_entry(last, 667);
    let good = forged_seal(&fake, &k);
    a2.append(&RecordBatch::new(vec![fake, good.clone()]).expect("batch"))
        .await
        .expect("append");
    write(config(k.clone(), None), std::slice::from_ref(&a2), 100, 1).await;
    assert!(a2.records().iter().any(|r| r == &good));
}

#[tokio::test]
async fn a_log_without_seals_is_adopted_when_the_operator_says_so_and_sealed_from_then_on() {
    let sink = MemorySink::new("mem");
    write(WriterConfig::default(), std::slice::from_ref(&sink), 0, 4).await;
    assert!(!sink.records().iter().any(|r| is_type(r, "seal")));
    let k = key("audit.test");
    // Without the operator's word, a log with no seal is refused: nothing
    // tells it from a forgery written over the whole log.
    let err = AuditLog::open(
        config(k.clone(), None),
        vec![SinkSpec::required(Arc::new(sink.clone()))],
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&err, OpenError::Unsealed { from: 1, to: 4, .. }),
        "{err}"
    );
    let mut adopt = config(k.clone(), None);
    if let Some(cp) = adopt.checkpoints.as_mut() {
        cp.adopt_unsealed = true;
    }
    write(adopt, std::slice::from_ref(&sink), 10, 2).await;
    // Sealed now: the next start needs no word.
    write(config(k.clone(), None), std::slice::from_ref(&sink), 20, 2).await;
    let records = sink.records();
    assert!(records.len() > 4);
    let cfg = config(k.clone(), None);
    let cp = cfg.checkpoints.clone().expect("checkpoints");
    check_seals(&records[4..], &k, &cp, cfg.max_stretch(1));
}

#[tokio::test]
async fn a_key_is_rotated_once_and_the_rotation_is_signed_by_both_keys() {
    let (old, new) = (key("audit.old"), key("audit.new"));
    let sink = MemorySink::new("mem");
    let sinks = std::slice::from_ref(&sink);
    write(config(old.clone(), None), sinks, 0, 3).await;
    let rotations = |s: &MemorySink| -> Vec<Record> {
        s.records()
            .into_iter()
            .filter(|r| is_type(r, "key_rotation"))
            .collect()
    };
    write(config(new.clone(), Some(old.clone())), sinks, 10, 3).await;
    assert_eq!(rotations(&sink).len(), 1);
    // A restart with the same configuration finds the log signed by the new
    // key and rotates nothing.
    write(config(new.clone(), Some(old.clone())), sinks, 20, 3).await;
    let rotated = rotations(&sink);
    assert_eq!(rotated.len(), 1, "one rotation after two restarts");
    let note = note_of(&rotated[0]);
    let (announced, signer) = verify_rotation(&note, &[old.public()]).expect("old key alone");
    assert_eq!((&announced, &signer), (&new.public(), &old.public()));
    let (announced, signer) = verify_rotation(&note, &[new.public()]).expect("new key alone");
    assert_eq!((&announced, &signer), (&new.public(), &new.public()));
    // Every seal after the rotation is by the new key.
    let records = sink.records();
    let at = records
        .iter()
        .position(|r| is_type(r, "key_rotation"))
        .expect("rotation");
    let cfg = config(new.clone(), Some(old.clone()));
    let cp = cfg.checkpoints.clone().expect("checkpoints");
    check_seals(&records[at + 1..], &new, &cp, cfg.max_stretch(1));
}

/// A leaked retired key cannot seal records after its rotation: a planted
/// entry sealed by the old key (MAC or signed) after the rotation is not
/// adopted, although the config still names that key as the previous one.
#[tokio::test]
async fn a_retired_key_cannot_seal_records_after_its_rotation() {
    let (old, new) = (key("audit.old"), key("audit.new"));
    let sink = MemorySink::new("mem");
    write(config(old.clone(), None), std::slice::from_ref(&sink), 0, 3).await;
    write(
        config(new.clone(), Some(old.clone())),
        std::slice::from_ref(&sink),
        10,
        3,
    )
    .await;
    let clean = sink.records();
    let head = clean.last().cloned().expect("records");
    let cfg = config(new.clone(), Some(old.clone()));
    let stretch = cfg.max_stretch(1);
    let fake = rechained_entry(&head, 666);
    for seal in [mac_seal(&fake, &old, stretch), forged_seal(&fake, &old)] {
        let planted = MemorySink::new("mem");
        let mut all = clean.clone();
        all.extend([fake.clone(), seal.clone()]);
        planted
            .append(&RecordBatch::new(all).expect("batch"))
            .await
            .expect("plant");
        let err = AuditLog::open(
            config(new.clone(), Some(old.clone())),
            vec![SinkSpec::required(Arc::new(planted.clone()))],
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(&err, OpenError::Unsealed { from, .. } if *from == fake.seq()),
            "{err}"
        );
    }
    // The new key's MAC seal is the writer's own: adopted.
    let ours = MemorySink::new("mem");
    let good = mac_seal(&fake, &new, stretch);
    let mut all = clean.clone();
    all.extend([fake.clone(), good.clone()]);
    ours.append(&RecordBatch::new(all).expect("batch"))
        .await
        .expect("append");
    write(
        config(new.clone(), Some(old.clone())),
        std::slice::from_ref(&ours),
        100,
        1,
    )
    .await;
    assert!(ours.records().iter().any(|r| r == &good));
}

/// Found by attack: a leaked retired key "rotated" to itself after the
/// genuine rotation, then sealed a forgery; the writer took the rotation as
/// handing the log back to that key. A rotation counts only when the key
/// sealing the log there signs it and it leads to another key.
#[tokio::test]
async fn a_retired_key_cannot_rotate_the_log_back_to_itself() {
    let (old, new) = (key("audit.old"), key("audit.new"));
    let sink = MemorySink::new("mem");
    write(config(old.clone(), None), std::slice::from_ref(&sink), 0, 3).await;
    write(
        config(new.clone(), Some(old.clone())),
        std::slice::from_ref(&sink),
        10,
        3,
    )
    .await;
    let clean = sink.records();
    let head = clean.last().cloned().expect("records");
    let body = format!(
        r#"{{"record_type":"key_rotation","timestamp":"2026-12-03T00:00:00Z","log_id":"{LOG_ID}","new_key":"{}","note":{}"#,
        old.public().to_vkey(),
        serde_json::to_string(&old.sign_note(&audit_core::checkpoint::rotation_body(
            LOG_ID,
            &old.public()
        )))
        .expect("note")
    );
    let rotation = Sequencer::resume(Some(head.head())).seal(body.as_bytes());
    let fake = rechained_entry(&rotation, 666);
    let seal = forged_seal(&fake, &old);
    let planted = MemorySink::new("mem");
    let mut all = clean.clone();
    all.extend([rotation.clone(), fake.clone(), seal.clone()]);
    planted
        .append(&RecordBatch::new(all).expect("batch"))
        .await
        .expect("plant");
    let before = planted.records();
    let err = AuditLog::open(
        config(new.clone(), Some(old.clone())),
        vec![SinkSpec::required(Arc::new(planted.clone()))],
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&err, OpenError::Unsealed { from, .. } if *from == rotation.seq()),
        "{err}"
    );
    assert_eq!(planted.records(), before, "nothing was cut or added");
}

/// Found by attack: a log from before seals, written with a key and closed
/// cleanly (it ends with a checkpoint), was refused as if written without
/// one. Signed through its head, it is adopted; records after its last
/// checkpoint still need the operator's word.
#[tokio::test]
async fn a_log_from_before_seals_ending_with_a_checkpoint_is_adopted() {
    let k = key("audit.test");
    let sink = MemorySink::new("mem");
    write(WriterConfig::default(), std::slice::from_ref(&sink), 0, 4).await;
    let head = sink.records().last().cloned().expect("records");
    let cp = audit_core::checkpoint::Checkpoint {
        log_id: LOG_ID.into(),
        seq: head.seq(),
        head: head.hash(),
        time: 1_796_000_000,
    };
    let body = format!(
        r#"{{"record_type":"checkpoint","timestamp":"2026-12-03T00:00:00Z","log_id":"{LOG_ID}","checkpoint_seq":{},"head_hash":"{}","key_id":"{}","note":{}"#,
        head.seq(),
        head.hash().to_hex(),
        k.public().id_hex(),
        serde_json::to_string(&k.sign_note(&cp.body())).expect("note")
    );
    let checkpoint = Sequencer::resume(Some(head.head())).seal(body.as_bytes());
    let extra = rechained_entry(&checkpoint, 5);
    // With an entry after the checkpoint: refused, saying why.
    let tail = MemorySink::new("mem");
    let mut all = sink.records();
    all.extend([checkpoint.clone(), extra.clone()]);
    tail.append(&RecordBatch::new(all).expect("batch"))
        .await
        .expect("plant");
    let err = AuditLog::open(
        config(k.clone(), None),
        vec![SinkSpec::required(Arc::new(tail.clone()))],
    )
    .await
    .expect_err("refused");
    assert!(
        err.to_string().contains("after its last valid checkpoint"),
        "{err}"
    );
    // Ending with it: adopted, and sealed from then on.
    sink.append(&RecordBatch::new(vec![checkpoint.clone()]).expect("batch"))
        .await
        .expect("append");
    write(config(k.clone(), None), std::slice::from_ref(&sink), 10, 2).await;
    assert!(sink.records().iter().any(|r| is_type(r, "seal")));
    // Found by attack: signed by the previous key, which may have leaked
    // and could sign a whole forged log, it is not adopted.
    let old = key("audit.old");
    let forged = MemorySink::new("mem");
    write(
        WriterConfig::default(),
        std::slice::from_ref(&forged),
        50,
        4,
    )
    .await;
    let head = forged.records().last().cloned().expect("records");
    let cp = audit_core::checkpoint::Checkpoint {
        log_id: LOG_ID.into(),
        seq: head.seq(),
        head: head.hash(),
        time: 1_796_000_000,
    };
    let body = format!(
        r#"{{"record_type":"checkpoint","timestamp":"2026-12-03T00:00:00Z","log_id":"{LOG_ID}","checkpoint_seq":{},"head_hash":"{}","key_id":"{}","note":{}"#,
        head.seq(),
        head.hash().to_hex(),
        old.public().id_hex(),
        serde_json::to_string(&old.sign_note(&cp.body())).expect("note")
    );
    let checkpoint = Sequencer::resume(Some(head.head())).seal(body.as_bytes());
    forged
        .append(&RecordBatch::new(vec![checkpoint]).expect("batch"))
        .await
        .expect("plant");
    let err = AuditLog::open(
        config(k.clone(), Some(old.clone())),
        vec![SinkSpec::required(Arc::new(forged.clone()))],
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("previous key"), "{err}");
}

#[tokio::test]
async fn a_planted_record_with_a_mac_seal_by_another_key_is_refused_and_ours_is_adopted() {
    let k = key("audit.test");
    let mallory = key("audit.test");
    let a = MemorySink::new("a");
    write(config(k.clone(), None), std::slice::from_ref(&a), 0, 5).await;
    let clean = a.records();
    let head = clean.last().cloned().expect("records");
    let stretch = config(k.clone(), None).max_stretch(1);
    // Another key's MACs; a MAC over another stretch than the record states;
    // the auditors' MAC right but not the writer's (what a holder of the
    // auditors' MAC key can make); a right MAC seal with a member riding
    // along: none is this writer's.
    let fake = rechained_entry(&head, 666);
    let (km, kw) = (k.seal_mac_key(), k.writer_mac_key());
    let forged = [
        mac_seal(&fake, &mallory, stretch),
        mac_seal_by(&fake, &km, &kw, stretch + 1, stretch, ""),
        mac_seal_by(&fake, &km, &mallory.writer_mac_key(), stretch, stretch, ""),
        mac_seal_by(
            &fake,
            &km,
            &kw,
            stretch,
            stretch,
            r#","agent_id":"mallory""#,
        ),
    ];
    for seal in forged {
        let planted = MemorySink::new("a");
        let mut all = clean.clone();
        all.extend([fake.clone(), seal.clone()]);
        planted
            .append(&RecordBatch::new(all).expect("batch"))
            .await
            .expect("plant");
        let before = planted.records();
        let err = AuditLog::open(
            config(k.clone(), None),
            vec![SinkSpec::required(Arc::new(planted.clone()))],
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(&err, OpenError::Unsealed { sink, from, to, .. }
                if sink == "a" && *from == fake.seq() && *to == seal.seq()),
            "{err}"
        );
        assert_eq!(planted.records(), before, "nothing was cut or added");
    }
    // The writer's own MAC key is what only it holds: adopted, and the next
    // run's first seal (signed) covers it.
    let ours = MemorySink::new("a");
    let good = mac_seal(&fake, &k, stretch);
    let mut all = clean.clone();
    all.extend([fake.clone(), good.clone()]);
    ours.append(&RecordBatch::new(all).expect("batch"))
        .await
        .expect("append");
    write(config(k.clone(), None), std::slice::from_ref(&ours), 100, 1).await;
    assert!(ours.records().iter().any(|r| r == &good));
}

/// Found by attack (sixth round): a witness note was created under its
/// name, then written: a crash or a full disk between the two left an
/// empty note that failed the genuine log in every verifier for good. On a
/// full tmpfs the write fails after the file exists; no file under a
/// note's name may be left behind.
#[test]
fn a_failed_witness_write_leaves_no_partial_note() {
    let Some(tmpfs) =
        audit_core::testing::Tmpfs::mount("a_failed_witness_write_leaves_no_partial_note", "64k")
    else {
        return;
    };
    let mnt = tmpfs.path();
    let witness = mnt.join("witness");
    std::fs::create_dir(&witness).expect("witness dir");
    // Fill every block; a new (empty) file still gets an inode.
    use std::io::Write as _;
    let mut filler = std::fs::File::create(mnt.join("filler")).expect("filler");
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    let note = "x".repeat(16 * 1024) + "\n";
    assert!(audit_core::checkpoint::write_witness(&witness, 5, &note).is_err());
    let left: Vec<String> = std::fs::read_dir(&witness)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Found by attack (sixth round): a rotation's second signature line could
/// be anyone's, carrying 68 bytes nobody vouched for. It is the new key's,
/// and verifies with the key the note names.
#[test]
fn a_rotation_is_signed_by_exactly_the_retired_and_the_new_key() {
    use audit_core::checkpoint::{rotation_body, verify_rotation, KeyPair};
    let old = KeyPair::generate("audit.old").expect("key");
    let new = KeyPair::generate("audit.new").expect("key");
    let other = KeyPair::generate("audit.other").expect("key");
    let body = rotation_body("audit.test/log", &new.public());
    let genuine = new.cosign(&old.sign_note(&body));
    let (named, signer) = verify_rotation(&genuine, &[old.public()]).expect("genuine");
    assert_eq!((named, signer), (new.public(), old.public()));
    // A second line by a third key, and a line by the retired key twice.
    for forged in [
        other.cosign(&old.sign_note(&body)),
        old.cosign(&old.sign_note(&body)),
    ] {
        assert!(
            verify_rotation(&forged, &[old.public()]).is_err(),
            "{forged}"
        );
    }
}
