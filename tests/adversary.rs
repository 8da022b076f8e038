//! The log attacked as docs/THREAT_MODEL.md's attackers would: someone who can
//! write a sink's storage (files, database) but holds no key. Real `audit`
//! processes, real files; each test names the finding of the issue it
//! reproduces and must fail if the defence is taken away.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use audit_core::checkpoint::KeyPair;
use audit_core::{encode_entry_body, Record, Sequencer};

/// One log written by `audit append` with a file sink, a SQLite sink, signed
/// checkpoints and a witness, and the means to attack its storage.
struct Log {
    dir: tempfile::TempDir,
}

fn audit(cwd: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run audit");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

fn entries(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|i| {
            format!(
                "{{\"agent_id\":\"agent-{}\",\"tool_called\":\"read_file\",\"arguments\":{{\"i\":{i}}},\"authorization_decision\":\"{}\"}}\n",
                i % 3,
                if i % 4 == 0 { "deny" } else { "allow" }
            )
        })
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Log {
    /// A log of `n` entries, checkpoints every 10 records.
    fn new(n: u64) -> Self {
        Self::with_log_id(n, "audit.test/log")
    }

    fn with_log_id(n: u64, log_id: &str) -> Self {
        let log = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir_all(log.path("keys")).expect("keys dir");
        let o = audit(
            log.dir.path(),
            &["keygen", "--name", "audit.test", "--out", "keys"],
            b"",
        );
        assert!(o.status.success(), "{}", text(&o));
        log.write_config(log_id, "keys/audit.test.key", None);
        log.append(0, n);
        log
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write_config(&self, log_id: &str, key: &str, previous: Option<&str>) {
        let previous = previous
            .map(|p| format!("previous_key_file = \"{p}\"\n"))
            .unwrap_or_default();
        let config = format!(
            r#"[log]
spool_dir = "data/spool"
# Small batches, so that a seal follows every few records and a stretch
# without seals soon exceeds the bound (batch + markers) the seals state.
batch_max_records = 8

[log.checkpoints]
# A signed seal at least every 16 records (MAC seals in between), so a
# stretch without signed seals soon exceeds the bound they state.
sign_seals_every_records = 16
key_file = "{key}"
log_id = "{log_id}"
every_records = 10
every_secs = 3600
heartbeat_secs = 3600
witness_dir = "witness"
{previous}
[[sinks]]
kind = "file"
name = "file"
dir = "data/file"

[[sinks]]
kind = "sqlite"
name = "sqlite"
path = "data/audit.db"
"#
        );
        std::fs::write(self.path("audit.toml"), config).expect("config");
    }

    fn append(&self, from: u64, n: u64) {
        let o = audit(
            self.dir.path(),
            &["append", "--config", "audit.toml"],
            entries(from, n).as_bytes(),
        );
        assert!(o.status.success(), "{}", text(&o));
    }

    /// The writer restarted on the log: `audit append` of five entries.
    fn restart(&self) -> Output {
        audit(
            self.dir.path(),
            &["append", "--config", "audit.toml"],
            entries(300, 5).as_bytes(),
        )
    }

    fn verify(&self, args: &[&str]) -> Output {
        audit(self.dir.path(), &[&["verify"], args].concat(), b"")
    }

    /// `audit verify --config audit.toml --json`: key, witness and log id
    /// from the config.
    fn verify_config(&self) -> (Output, serde_json::Value) {
        let o = self.verify(&["--config", "audit.toml", "--json"]);
        let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
        (o, v)
    }

    fn file_segment(&self) -> PathBuf {
        let mut segs: Vec<PathBuf> = std::fs::read_dir(self.path("data/file"))
            .expect("segments")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
            })
            .collect();
        segs.sort();
        assert_eq!(segs.len(), 1, "one segment");
        segs.remove(0)
    }

    fn lines(&self) -> Vec<Vec<u8>> {
        std::fs::read(self.file_segment())
            .expect("read")
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty() && l.first() != Some(&0))
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn write_lines(&self, lines: &[Vec<u8>]) {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        std::fs::write(self.file_segment(), out).expect("write");
    }

    fn file_source(&self) -> String {
        format!("file:{}", self.path("data/file").display())
    }

    fn sqlite_source(&self) -> String {
        format!("sqlite:{}", self.path("data/audit.db").display())
    }

    fn pub_key(&self) -> String {
        self.path("keys/audit.test.pub").display().to_string()
    }

    fn key(&self, name: &str) -> KeyPair {
        let t = std::fs::read_to_string(self.path(&format!("keys/{name}.key"))).expect("key");
        KeyPair::from_private_string(&t).expect("parse key")
    }

    /// Rotates from `audit.test` to a new key `audit.next` and appends `n`.
    fn rotate(&self, n: u64) {
        let o = audit(
            self.dir.path(),
            &["keygen", "--name", "audit.next", "--out", "keys"],
            b"",
        );
        assert!(o.status.success(), "{}", text(&o));
        self.write_config(
            "audit.test/log",
            "keys/audit.next.key",
            Some("keys/audit.test.key"),
        );
        self.append(500, n);
    }
}

/// Where the log's `key_rotation` record is.
fn rotation_index(lines: &[Vec<u8>]) -> usize {
    lines
        .iter()
        .position(|l| record_type(l).as_deref() == Some("key_rotation"))
        .expect("a key_rotation record")
}

fn record_type(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.get("record_type")?.as_str().map(str::to_owned)
}

/// The body of a stored record: everything before its chain members (a
/// body not yet sealed is returned as it is).
fn body_of(line: &[u8]) -> Vec<u8> {
    let t = std::str::from_utf8(line).expect("utf8");
    match t.find(",\"chain_sequence\":") {
        Some(at) => t.as_bytes()[..at].to_vec(),
        None => line.to_vec(),
    }
}

/// Re-seals `lines` from index `from` on, as an attacker without the key
/// would: bodies kept, chain members recomputed.
fn rechain(lines: &mut [Vec<u8>], from: usize) {
    let head = (from > 0).then(|| Record::from_text(&lines[from - 1]).expect("record").head());
    let mut seq = Sequencer::resume(head);
    for l in lines[from..].iter_mut() {
        *l = seq.seal(&body_of(l)).text().to_vec();
    }
}

fn fake_entry(i: u64) -> Vec<u8> {
    let mut body = Vec::new();
    encode_entry_body(&audit_core::testing::sample_entry(90_000 + i), &mut body).expect("encode");
    body
}

/// The writer refused to continue a cut log, and said the witness is why.
#[track_caller]
fn assert_refused_by_the_witness(o: &Output) {
    assert!(
        !o.status.success(),
        "the writer continued a cut log: {}",
        text(o)
    );
    assert!(text(o).contains("witness"), "{}", text(o));
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
}

fn count(report: &serde_json::Value, class: &str) -> u64 {
    report["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["counts"].as_array().into_iter().flatten())
        .filter(|c| c["class"] == class && c["severity"] == "error")
        .map(|c| c["count"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn untouched_log_verifies_in_every_mode() {
    let log = Log::new(40);
    let (o, v) = log.verify_config();
    assert_exit(&o, 0);
    assert_eq!(v["ok"], true);
    assert!(
        v["sources"][0]["newest_checkpoint"]["age_secs"].is_i64(),
        "{v}"
    );
    let o = log.verify(&[
        &log.file_source(),
        "--public-key",
        &log.pub_key(),
        "--log-id",
        "audit.test/log",
        "--max-age",
        "1h",
    ]);
    assert_exit(&o, 0);
}

/// Finding 1: 10,001 repeated genesis records in front of the real segment
/// used to push the real findings past the cap, and `ok` was computed from
/// the kept ones.
#[test]
fn f01_the_finding_cap_does_not_decide_the_verdict() {
    let log = Log::new(30);
    let lines = log.lines();
    let segment = log.file_segment();
    let mut front = Vec::new();
    for _ in 0..10_001 {
        front.extend_from_slice(&lines[0]);
        front.push(b'\n');
    }
    std::fs::write(
        log.path("data/file/audit-00000000000000000000.jsonl"),
        front,
    )
    .expect("front segment");
    let mut real = lines.clone();
    real[5] = String::from_utf8(real[5].clone())
        .expect("utf8")
        .replacen("\"allow\"", "\"deny\"", 1)
        .into_bytes();
    real.truncate(20);
    let mut out = Vec::new();
    for l in &real {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    std::fs::write(&segment, out).expect("write");
    let o = log.verify(&[&log.file_source(), "--public-key", &log.pub_key(), "--json"]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let s = &v["sources"][0];
    assert!(
        s["errors"].as_u64().unwrap_or(0) > 10_000,
        "{}",
        s["errors"]
    );
    assert!(s["findings_omitted"].as_u64().unwrap_or(0) > 0);
}

/// Finding 2: a new genesis chain added to a log our writer made is an
/// error, not a `restart` warning, without --strict.
#[test]
fn f02_a_fabricated_chain_in_our_log_is_an_error() {
    let log = Log::new(20);
    let mut lines = log.lines();
    let mut seq = Sequencer::new();
    for i in 0..5 {
        lines.push(seq.seal(&fake_entry(i)).text().to_vec());
    }
    log.write_lines(&lines);
    let o = log.verify(&[&log.file_source(), "--json"]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "restart") >= 1, "{v}");

    // As an extra segment of its own.
    let log = Log::new(20);
    let mut seq = Sequencer::new();
    let mut extra = Vec::new();
    for i in 0..3 {
        extra.extend_from_slice(seq.seal(&fake_entry(i)).text());
        extra.push(b'\n');
    }
    std::fs::write(
        log.path("data/file/audit-00000000000000000001.1.jsonl"),
        extra,
    )
    .expect("extra segment");
    let o = log.verify(&[&log.file_source()]);
    assert_exit(&o, 1);
}

/// Finding 3: editing a record, dropping every later checkpoint and seal and
/// recomputing the chain left only an `unsigned_tail` warning.
#[test]
fn f03_dropping_signatures_after_an_edit_fails_with_a_key() {
    // Two runs: the first one's closing checkpoint stays valid, and the edit
    // lies after it.
    let two_runs = || {
        let log = Log::new(30);
        log.append(100, 30);
        log
    };
    let log = two_runs();
    let mut lines = log.lines();
    let first_cp = lines
        .iter()
        .position(|l| record_type(l).as_deref() == Some("checkpoint"))
        .expect("a checkpoint");
    let victim = first_cp + 10;
    lines[victim] = String::from_utf8(lines[victim].clone())
        .expect("utf8")
        .replacen("\"allow\"", "\"deny\"", 1)
        .into_bytes();
    let mut kept: Vec<Vec<u8>> = lines[..victim].to_vec();
    kept.extend(
        lines[victim..]
            .iter()
            .filter(|l| record_type(l).is_none())
            .cloned(),
    );
    rechain(&mut kept, victim);
    log.write_lines(&kept);
    let o = log.verify(&[&log.file_source(), "--public-key", &log.pub_key(), "--json"]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "unsigned") >= 1, "{v}");

    // A forged tail shorter than the bound is a warning (a crash can leave
    // one), and an error with --strict.
    let log = two_runs();
    let mut lines = log.lines();
    lines.push(fake_entry(3));
    let n = lines.len();
    rechain(&mut lines, n - 1);
    log.write_lines(&lines);
    let o = log.verify(&[&log.file_source(), "--public-key", &log.pub_key(), "--json"]);
    assert_exit(&o, 0);
    assert!(text(&o).contains("unsigned_tail"), "{}", text(&o));
    let o = log.verify(&[
        &log.file_source(),
        "--public-key",
        &log.pub_key(),
        "--strict",
    ]);
    assert_exit(&o, 1);

    // Renaming the signed records' type instead of deleting them.
    let log = two_runs();
    let mut lines = log.lines();
    for l in lines[victim..].iter_mut() {
        if record_type(l).is_some() {
            *l = String::from_utf8(l.clone())
                .expect("utf8")
                .replacen("{\"record_type\":\"", "{\"record_type\":\"x", 1)
                .into_bytes();
        }
    }
    rechain(&mut lines, victim);
    log.write_lines(&lines);
    let o = log.verify(&[&log.file_source(), "--public-key", &log.pub_key()]);
    assert_exit(&o, 1);
}

/// Finding 4: the witness check must look at the record it names: record
/// N + 1 must be the checkpoint whose note the witness holds.
#[test]
fn f04_the_witnessed_checkpoint_record_cannot_be_replaced() {
    let log = Log::new(25);
    let lines = log.lines();
    // The newest witness note names the closing checkpoint's record N.
    let last_cp = lines
        .iter()
        .rposition(|l| record_type(l).as_deref() == Some("checkpoint"))
        .expect("a checkpoint");
    let mut forged = lines[..last_cp].to_vec();
    forged.push(fake_entry(1));
    rechain(&mut forged, last_cp);
    log.write_lines(&forged);
    let o = log.verify(&[
        &log.file_source(),
        "--public-key",
        &log.pub_key(),
        "--witness",
        &log.path("witness").display().to_string(),
        "--json",
    ]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "forked") >= 1, "{v}");
}

/// Finding 5: another log signed by the same key is not this one.
#[test]
fn f05_another_log_with_the_same_key_is_refused() {
    let a = Log::with_log_id(20, "audit.test/a");
    let b = Log::with_log_id(20, "audit.test/b");
    // B's storage, signed with A's key: copy A's key into B's place and
    // rewrite B with it.
    std::fs::copy(a.path("keys/audit.test.key"), b.path("keys/audit.test.key")).expect("key");
    std::fs::remove_dir_all(b.path("data")).expect("clear");
    std::fs::remove_dir_all(b.path("witness")).expect("clear");
    b.append(100, 20);
    // B's database put in place of A's.
    std::fs::copy(b.path("data/audit.db"), a.path("data/audit.db")).expect("swap db");
    let o = a.verify(&[
        &a.sqlite_source(),
        "--public-key",
        &a.pub_key(),
        "--log-id",
        "audit.test/a",
        "--json",
    ]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "wrong_log") >= 1, "{v}");
    // The config names the log id too.
    let (o, v) = a.verify_config();
    assert_exit(&o, 1);
    assert!(count(&v, "wrong_log") >= 1, "{v}");
}

/// Finding 6: nothing is not intact.
#[test]
fn f06_sources_must_hold_something() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("empty")).expect("mkdir");
    for src in ["file:empty", "file:missing", "missing.jsonl"] {
        let o = audit(dir.path(), &["verify", src], b"");
        assert_exit(&o, 2);
        assert!(!dir.path().join("missing").exists(), "verify created {src}");
    }
}

/// Finding 9: with a tampered file copy and an intact SQLite copy, the file
/// copy is named, whatever the order of the sources.
#[test]
fn f09_compare_names_the_culprit_in_either_order() {
    let log = Log::new(30);
    let mut lines = log.lines();
    lines[7] = String::from_utf8(lines[7].clone())
        .expect("utf8")
        .replacen("read_file", "rm_rf_all", 1)
        .into_bytes();
    log.write_lines(&lines);
    for order in [
        [log.file_source(), log.sqlite_source()],
        [log.sqlite_source(), log.file_source()],
    ] {
        let o = log.verify(&[&order[0], &order[1], "--json"]);
        assert_exit(&o, 1);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        for s in v["sources"].as_array().expect("sources") {
            let is_file = s["source"].as_str().is_some_and(|n| n.starts_with("file:"));
            assert_eq!(s["ok"], !is_file, "{v}");
        }
    }
}

/// Finding 12: the witness note is chosen by its content; a genuine older
/// note under a newer name cannot hide a cut tail.
#[test]
fn f12_a_renamed_witness_note_is_refused() {
    let log = Log::new(10);
    log.append(100, 25);
    let witness = log.path("witness");
    let mut notes: Vec<PathBuf> = std::fs::read_dir(&witness)
        .expect("witness")
        .map(|e| e.expect("entry").path())
        .collect();
    notes.sort();
    assert!(notes.len() >= 2, "{notes:?}");
    // Cut the log back to the first witnessed checkpoint, and remove the
    // newer notes, keeping a copy of the oldest one under a newer name.
    let first = notes[0].clone();
    for n in &notes[1..] {
        std::fs::remove_file(n).expect("rm note");
    }
    std::fs::copy(&first, witness.join("checkpoint-00000000000000000099.note")).expect("copy");
    let lines = log.lines();
    let name = first.file_name().and_then(|n| n.to_str()).expect("name");
    let n: usize = name["checkpoint-".len()..][..20].parse().expect("seq");
    log.write_lines(&lines[..n + 1]);
    std::fs::remove_file(log.path("data/audit.db")).expect("rm db");
    let o = log.verify(&[
        &log.file_source(),
        "--public-key",
        &log.pub_key(),
        "--witness",
        &witness.display().to_string(),
    ]);
    assert_exit(&o, 1);
    assert!(text(&o).contains("is named for record 99"), "{}", text(&o));
}

/// Finding 15: `audit verify --config` checks with the config's key and
/// witness: a cut tail that the witness catches is not INTACT.
#[test]
fn f15_config_verify_uses_the_checkpoint_section() {
    let log = Log::new(35);
    let lines = log.lines();
    log.write_lines(&lines[..15]);
    // A config whose only sink is the file.
    let config = std::fs::read_to_string(log.path("audit.toml")).expect("config");
    let file_only = &config[..config
        .find("[[sinks]]\nkind = \"sqlite\"")
        .expect("sqlite sink")];
    std::fs::write(log.path("audit.toml"), file_only).expect("config");
    let o = log.verify(&[&log.file_source()]);
    assert_exit(&o, 0); // a plain chain cannot see a cut at a record boundary
    let (o, v) = log.verify_config();
    assert_exit(&o, 1);
    assert!(count(&v, "truncated") >= 1, "{v}");
}

/// Finding 16: freshness. A log whose newest checkpoint is an hour old fails
/// `--max-age 10m` and passes `--max-age 2h`.
#[test]
fn f16_max_age_catches_a_stale_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate("audit.test").expect("key");
    std::fs::write(dir.path().join("k.pub"), key.public().to_vkey()).expect("pub");
    let mut seq = Sequencer::new();
    let mut out = Vec::new();
    let mut push = |body: &[u8], seq: &mut Sequencer| {
        let r = seq.seal(body);
        out.extend_from_slice(r.text());
        out.push(b'\n');
        r
    };
    let mut last = None;
    for i in 0..5 {
        last = Some(push(&fake_entry(i), &mut seq));
    }
    let head = last.expect("records").head();
    let time = chrono::Utc::now().timestamp() - 3600;
    let cp = audit_core::checkpoint::Checkpoint {
        log_id: "audit.test/old".into(),
        seq: head.seq,
        head: head.hash,
        time,
    };
    let note = key.sign_note(&cp.body());
    let body = format!(
        "{{\"record_type\":\"checkpoint\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"log_id\":\"audit.test/old\",\"checkpoint_seq\":{},\"head_hash\":\"{}\",\"key_id\":\"{}\",\"note\":{}",
        head.seq,
        head.hash.to_hex(),
        key.public().id_hex(),
        serde_json::to_string(&note).expect("note")
    );
    push(body.as_bytes(), &mut seq);
    std::fs::create_dir(dir.path().join("log")).expect("mkdir");
    std::fs::write(dir.path().join("log/audit-00000000000000000001.jsonl"), out).expect("write");
    let run = |age: &str| {
        audit(
            dir.path(),
            &[
                "verify",
                "file:log",
                "--public-key",
                "k.pub",
                "--max-age",
                age,
                "--json",
            ],
            b"",
        )
    };
    let o = run("10m");
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "stale") == 1, "{v}");
    assert_exit(&run("2h"), 0);
}

fn rotations(lines: &[Vec<u8>]) -> usize {
    lines
        .iter()
        .filter(|l| record_type(l).as_deref() == Some("key_rotation"))
        .count()
}

/// Finding 14: a rotation happens once, is signed by both keys, and a
/// verifier holding only the new key checks the whole log.
#[test]
fn f14_key_rotation_happens_once_and_the_new_key_alone_verifies() {
    let log = Log::new(15);
    log.rotate(15);
    assert_eq!(rotations(&log.lines()), 1);
    // A restart with previous_key_file still set does not rotate again.
    log.append(900, 5);
    assert_eq!(rotations(&log.lines()), 1);
    let next = log.path("keys/audit.next.pub").display().to_string();
    let old = log.pub_key();
    for keys in [vec![&old, &next], vec![&next]] {
        let mut args = vec![log.file_source()];
        for k in keys {
            args.push("--public-key".into());
            args.push(k.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = log.verify(&args);
        assert_exit(&o, 0);
    }
}

/// Finding 14: a rotation record whose new_key member disagrees with its
/// signed note is an error.
#[test]
fn f14_a_rotation_member_that_disagrees_with_its_note_is_an_error() {
    let log = Log::new(15);
    log.rotate(5);
    let mut lines = log.lines();
    let at = rotation_index(&lines);
    let mallory = KeyPair::generate("audit.next").expect("key");
    let v: serde_json::Value = serde_json::from_slice(&lines[at]).expect("json");
    let new_key = v["new_key"].as_str().expect("new_key").to_string();
    lines[at] = String::from_utf8(lines[at].clone())
        .expect("utf8")
        .replacen(&new_key, &mallory.public().to_vkey(), 1)
        .into_bytes();
    rechain(&mut lines, at);
    log.write_lines(&lines);
    let o = log.verify(&[&log.file_source(), "--public-key", &log.pub_key(), "--json"]);
    assert_exit(&o, 1);
    assert!(
        text(&o).contains("new_key or log_id disagrees"),
        "{}",
        text(&o)
    );
}

/// Finding 14: with the retired key leaked, a log cut before its rotation
/// and re-signed by the old key fails against the key history.
#[test]
fn f14_history_re_signed_with_a_leaked_old_key_fails_against_the_key_history() {
    let log = Log::new(15);
    log.rotate(15);
    let lines = log.lines();
    let at = rotation_index(&lines);
    // Keep the log up to the rotation, append forged entries, and sign them
    // with the leaked old key.
    let old = log.key("audit.test");
    let mut forged = lines[..at].to_vec();
    let mut seq = Sequencer::resume(Some(
        Record::from_text(&forged[at - 1]).expect("record").head(),
    ));
    for i in 0..3 {
        forged.push(seq.seal(&fake_entry(i)).text().to_vec());
    }
    let head = seq.head().expect("head");
    let cp = audit_core::checkpoint::Checkpoint {
        log_id: "audit.test/log".into(),
        seq: head.seq,
        head: head.hash,
        time: chrono::Utc::now().timestamp(),
    };
    let note = old.sign_note(&cp.body());
    let body = format!(
        "{{\"record_type\":\"checkpoint\",\"timestamp\":\"2026-12-02T00:00:00Z\",\"log_id\":\"audit.test/log\",\"checkpoint_seq\":{},\"head_hash\":\"{}\",\"key_id\":\"{}\",\"note\":{}",
        head.seq,
        head.hash.to_hex(),
        old.public().id_hex(),
        serde_json::to_string(&note).expect("note")
    );
    forged.push(seq.seal(body.as_bytes()).text().to_vec());
    log.write_lines(&forged);
    let next = log.path("keys/audit.next.pub").display().to_string();
    let o = log.verify(&[
        &log.file_source(),
        "--public-key",
        &log.pub_key(),
        "--public-key",
        &next,
        "--json",
    ]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "truncated") >= 1, "{v}");
}

/// Hostile bytes in a record do not reach the terminal, and a report that
/// cannot be written is exit 2, not a panic or a silent 0.
#[test]
fn hostile_text_is_escaped_and_unwritable_output_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = "{\"agent_id\":\"a\\u001b[2J\\u0007\\u2028\\u202eb\",\"tool_called\":\"t\",\"authorization_decision\":\"allow\"}\n";
    let o = audit(dir.path(), &["append"], entry.as_bytes());
    assert_exit(&o, 0);
    let o = audit(dir.path(), &["query", "--tool", "t"], b"");
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\\u{001b}[2J"), "{out}");
    for c in ['\u{1b}', '\u{7}', '\u{2028}', '\u{202e}'] {
        assert!(!out.contains(c), "{c:?} reached the terminal: {out:?}");
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let o = Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(["verify", "--json"])
        .current_dir(dir.path())
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert_exit(&o, 2);
    assert!(text(&o).contains("cannot write the report"), "{}", text(&o));
}

/// Finding 10: a rechained forgery appended to the file sink alone is not
/// copied into SQLite, and not signed over, at the next start.
#[test]
fn f10_the_writer_does_not_launder_a_forgery() {
    for with_fake_seal in [false, true] {
        let log = Log::new(20);
        let mut lines = log.lines();
        let mut fake = fake_entry(7);
        let marker = "agent-forged-by-mallory";
        fake = String::from_utf8(fake)
            .expect("utf8")
            .replacen("\"agent_id\":\"", &format!("\"agent_id\":\"{marker}"), 1)
            .into_bytes();
        lines.push(fake);
        let n = lines.len();
        rechain(&mut lines, n - 1);
        if with_fake_seal {
            // A seal over it, signed by a key that is not the log's.
            let mallory = KeyPair::generate("audit.test").expect("key");
            let head = Record::from_text(&lines[n - 1]).expect("record").head();
            let seal = audit_core::checkpoint::Seal {
                log_id: "audit.test/log".into(),
                seq: head.seq,
                head: head.hash,
                max_stretch: 100_000,
            };
            let note = mallory.sign_note(&seal.body());
            let body = format!(
                "{{\"record_type\":\"seal\",\"sealed_seq\":{},\"note\":{}",
                head.seq,
                serde_json::to_string(&note).expect("note")
            );
            let mut seq = Sequencer::resume(Some(head));
            lines.push(seq.seal(body.as_bytes()).text().to_vec());
        }
        log.write_lines(&lines);
        let o = log.restart();
        let db = rusqlite_free_read(&log.path("data/audit.db"));
        assert!(
            !db.contains(marker),
            "the forgery was copied into SQLite ({})",
            text(&o)
        );
        if o.status.success() {
            // Adopted nothing: the forgery is out of the chain and every
            // copy verifies with the key.
            let seg = std::fs::read_to_string(log.file_segment()).expect("segment");
            assert!(!seg.contains(marker), "the forgery stayed in the chain");
            let (o, v) = log.verify_config();
            assert_exit(&o, 0);
            let _ = v;
        } else {
            assert!(
                text(&o).contains("file"),
                "the refusal names the sink: {}",
                text(&o)
            );
        }
    }
}

/// The bytes of a SQLite database file, as text where it is text: enough to
/// see whether a marker string was ever written into it.
fn rusqlite_free_read(path: &Path) -> String {
    let mut all = std::fs::read(path).unwrap_or_default();
    let wal = path.with_extension("db-wal");
    all.extend(std::fs::read(wal).unwrap_or_default());
    String::from_utf8_lossy(&all).into_owned()
}

/// Hostile hosts: a second writer reaching the same database through a
/// symbolic link meets the first one's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_through_a_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real.db");
    let first = sink_sqlite::SqliteSink::open(sink_sqlite::SqliteSinkConfig::new("a", &real))
        .await
        .expect("first");
    std::fs::create_dir(dir.path().join("alias")).expect("mkdir");
    std::os::unix::fs::symlink(&real, dir.path().join("alias/link.db")).expect("symlink");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("dir-alias")).expect("symlink");
    for alias in ["alias/link.db", "dir-alias/real.db"] {
        let second = sink_sqlite::SqliteSink::open(sink_sqlite::SqliteSinkConfig::new(
            "b",
            dir.path().join(alias),
        ))
        .await;
        assert!(
            matches!(second, Err(audit_core::SinkError::InUse { .. })),
            "{alias}: {second:?}"
        );
    }
    drop(first);
}

/// Hostile hosts: a FIFO given as the public key is refused, not waited on.
#[test]
fn a_fifo_as_the_public_key_is_refused() {
    let log = Log::new(5);
    let fifo = log.path("key.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let o = log.verify(&[
        &log.file_source(),
        "--public-key",
        &fifo.display().to_string(),
    ]);
    assert_exit(&o, 2);
    assert!(text(&o).contains("not a regular file"), "{}", text(&o));
}

/// Found by attack: with only the new key, history rewritten before a key
/// rotation passed when the log was cut right after the rotation record: a
/// rotation note commits to no record, so it covers nothing.
#[test]
fn a_rewritten_history_cut_at_the_rotation_fails_with_the_new_key_alone() {
    let log = Log::new(15);
    log.rotate(5);
    let mut lines = log.lines();
    let at = rotation_index(&lines);
    lines.truncate(at + 1);
    for l in lines[..at].iter_mut() {
        if record_type(l).is_none() {
            *l = String::from_utf8(l.clone())
                .expect("utf8")
                .replacen("\"allow\"", "\"deny\"", 1)
                .into_bytes();
        }
    }
    rechain(&mut lines, 0);
    log.write_lines(&lines);
    let next = log.path("keys/audit.next.pub").display().to_string();
    let o = log.verify(&[&log.file_source(), "--public-key", &next, "--json"]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "unsigned") >= 1, "{v}");
}

/// Found by attack: a log cut after a checkpoint that no valid seal
/// precedes (the writer puts a batch's checkpoint before its seal) took a
/// forged tail of any length as a mere `unsigned_tail` warning. Here the new
/// key alone: the seals before the rotation are by a key it cannot check.
#[test]
fn a_long_forged_tail_after_a_checkpoint_without_seals_fails() {
    let log = Log::new(15);
    log.rotate(5);
    let mut lines = log.lines();
    let at = rotation_index(&lines);
    let cp = at
        + 1
        + lines[at + 1..]
            .iter()
            .position(|l| record_type(l).as_deref() == Some("checkpoint"))
            .expect("a checkpoint by the new key");
    lines.truncate(cp + 1);
    let n = lines.len();
    let next = log.path("keys/audit.next.pub").display().to_string();
    for (forged, exit) in [(20u64, 0), (8_300, 1)] {
        let mut forged_log = lines.clone();
        for i in 0..forged {
            forged_log.push(fake_entry(i));
        }
        rechain(&mut forged_log, n);
        log.write_lines(&forged_log);
        let o = log.verify(&[&log.file_source(), "--public-key", &next, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        // A short one is what a torn batch could leave: a warning.
        assert_exit(&o, exit);
        if exit == 1 {
            assert!(count(&v, "unsigned") >= 1, "{v}");
        } else {
            assert!(text(&o).contains("unsigned_tail"), "{v}");
        }
    }
}

/// Found in review: the key history's "stops before the rotation" check
/// took a rotation as the log's last signature. Cut after the rotation and
/// forge a short tail, with the rotation's signature lines swapped, or with
/// a copy of the rotation appended: both must fail against the history.
#[test]
fn a_log_cut_at_its_rotation_fails_against_the_key_history() {
    let log = Log::new(15);
    log.rotate(5);
    let lines = log.lines();
    let at = rotation_index(&lines);
    let next = log.path("keys/audit.next.pub").display().to_string();
    let old = log.pub_key();
    let history = [
        log.file_source(),
        "--public-key".into(),
        old,
        "--public-key".into(),
        next,
    ];
    let history: Vec<&str> = history.iter().map(String::as_str).collect();
    // D: the two signature lines swapped, the new key's first.
    let mut d: Vec<Vec<u8>> = lines[..=at].to_vec();
    let v: serde_json::Value = serde_json::from_slice(&d[at]).expect("json");
    let note = v["note"].as_str().expect("note").to_string();
    let (body, sigs) = note.rsplit_once("\n\n").expect("signatures");
    let sig_lines: Vec<&str> = sigs.trim_end_matches('\n').split('\n').collect();
    assert_eq!(sig_lines.len(), 2, "{note}");
    let swapped = format!("{body}\n\n{}\n{}\n", sig_lines[1], sig_lines[0]);
    d[at] = String::from_utf8(d[at].clone())
        .expect("utf8")
        .replacen(
            &serde_json::to_string(&note).expect("json"),
            &serde_json::to_string(&swapped).expect("json"),
            1,
        )
        .into_bytes();
    // E: the genuine rotation, forged entries, and a copy of the rotation.
    let mut e: Vec<Vec<u8>> = lines[..=at].to_vec();
    for i in 0..3 {
        d.push(fake_entry(i));
        e.push(fake_entry(i));
    }
    e.push(lines[at].clone());
    for (what, mut forged) in [("swapped lines", d), ("copied rotation", e)] {
        rechain(&mut forged, at);
        log.write_lines(&forged);
        let o = log.verify(&history);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
    }
}

/// MAC seals (FORMAT.md section 9): an edit in the tail after the last
/// signed record, the signed records after it dropped and the MAC seals
/// kept over the recomputed chain. The public key alone sees an unsigned
/// tail (a warning, as after a crash); the MAC key, or the config that holds
/// the private key, sees MACs that do not verify.
#[test]
fn an_edit_under_mac_seals_fails_with_the_mac_key() {
    let log = Log::new(60);
    let mut lines = log.lines();
    let has_note = |l: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(l).expect("json");
        v.get("note").is_some()
    };
    let is_mac = |l: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(l).expect("json");
        v.get("mac").is_some()
    };
    // The last MAC seal, and the last signed record before it.
    let last_mac = lines.iter().rposition(|l| is_mac(l)).expect("a MAC seal");
    let signed_before = lines[..last_mac]
        .iter()
        .rposition(|l| has_note(l))
        .expect("a signed record");
    let victim = (signed_before + 1..last_mac)
        .find(|&i| record_type(&lines[i]).is_none())
        .expect("an entry under the MAC seal");
    lines[victim] = String::from_utf8(lines[victim].clone())
        .expect("utf8")
        .replacen("\"allow\"", "\"deny\"", 1)
        .into_bytes();
    let mut kept: Vec<Vec<u8>> = lines[..victim].to_vec();
    kept.extend(lines[victim..].iter().filter(|l| !has_note(l)).cloned());
    rechain(&mut kept, victim);
    log.write_lines(&kept);
    let public = [log.file_source(), "--public-key".into(), log.pub_key()];
    let public: Vec<&str> = public.iter().map(String::as_str).collect();
    let o = log.verify(&public);
    assert_exit(&o, 0);
    assert!(text(&o).contains("--mac-key checks those"), "{}", text(&o));
    let mac = log.path("keys/audit.test.mac").display().to_string();
    let o = log.verify(&[&public[..], &["--mac-key", &mac, "--json"]].concat());
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "bad_signature") >= 1, "{v}");
    // The private key works as the MAC key, and so does the config.
    let private = log.path("keys/audit.test.key").display().to_string();
    assert_exit(
        &log.verify(&[&public[..], &["--mac-key", &private]].concat()),
        1,
    );
    let (o, v) = log.verify_config();
    assert_exit(&o, 1);
    assert!(count(&v, "bad_signature") >= 1, "{v}");
    // Another key's MAC key is not this log's.
    let other = tempfile::tempdir().expect("tempdir");
    let o = audit(
        other.path(),
        &["keygen", "--name", "audit.test", "--out", "."],
        b"",
    );
    assert_exit(&o, 0);
    let wrong = other.path().join("audit.test.mac").display().to_string();
    let clean = Log::new(60);
    let o = clean.verify(&[
        &clean.file_source(),
        "--public-key",
        &clean.pub_key(),
        "--mac-key",
        &wrong,
    ]);
    assert_exit(&o, 2);
    assert!(
        text(&o).contains("belongs to none of the trusted keys"),
        "{}",
        text(&o)
    );
}

/// A forgery after the last seal, sealed with a MAC by another key, is not
/// adopted by the writer: the writer checks MACs with its own key only.
#[test]
fn the_writer_does_not_adopt_a_forgery_under_another_keys_mac() {
    let log = Log::new(20);
    let mut lines = log.lines();
    let marker = "agent-forged-by-mallory";
    let fake = String::from_utf8(fake_entry(8))
        .expect("utf8")
        .replacen("\"agent_id\":\"", &format!("\"agent_id\":\"{marker}"), 1)
        .into_bytes();
    lines.push(fake);
    let n = lines.len();
    rechain(&mut lines, n - 1);
    let mallory = KeyPair::generate("audit.test").expect("key");
    let head = Record::from_text(&lines[n - 1]).expect("record").head();
    let seal = audit_core::checkpoint::Seal {
        log_id: "audit.test/log".into(),
        seq: head.seq,
        head: head.hash,
        max_stretch: 12,
    };
    let mac = audit_core::seal_mac::encode_mac(&mallory.seal_mac_key().mac(&seal));
    let writer_mac = audit_core::seal_mac::encode_mac(&mallory.writer_mac_key().mac(&seal));
    let body = format!(
        "{{\"record_type\":\"seal\",\"sealed_seq\":{},\"stretch\":12,\"mac\":\"{mac}\",\"writer_mac\":\"{writer_mac}\"",
        head.seq
    );
    lines.push(
        Sequencer::resume(Some(head))
            .seal(body.as_bytes())
            .text()
            .to_vec(),
    );
    log.write_lines(&lines);
    let o = log.restart();
    let db = rusqlite_free_read(&log.path("data/audit.db"));
    assert!(
        !db.contains(marker),
        "the forgery was copied into SQLite ({})",
        text(&o)
    );
    if o.status.success() {
        let seg = std::fs::read_to_string(log.file_segment()).expect("segment");
        assert!(!seg.contains(marker), "the forgery stayed in the chain");
        let (o, _) = log.verify_config();
        assert_exit(&o, 0);
    } else {
        assert!(
            text(&o).contains("file"),
            "the refusal names the sink: {}",
            text(&o)
        );
    }
}

/// Found by attack: members added beside a seal's note (or MAC) were never
/// checked, so an `agent_id` and a `tool_called` rode along on the last
/// seal, `audit query` returned them, and the writer adopted the record and
/// signed over it. A marker holds exactly its members: malformed in every
/// mode, and the writer refuses to start on it.
#[test]
fn a_member_added_beside_the_last_seals_note_is_malformed_and_not_adopted() {
    let log = Log::new(20);
    let mut lines = log.lines();
    let last = lines.len() - 1;
    assert!(record_type(&lines[last]).as_deref() == Some("seal"));
    let marker = "mallory-beside-the-note";
    let edited = String::from_utf8(lines[last].clone())
        .expect("utf8")
        .replacen(
            "\"record_type\":\"seal\",",
            &format!("\"record_type\":\"seal\",\"agent_id\":\"{marker}\","),
            1,
        )
        .into_bytes();
    lines[last] = edited;
    rechain(&mut lines, last);
    log.write_lines(&lines);
    let public = [log.file_source(), "--public-key".into(), log.pub_key()];
    let public: Vec<&str> = public.iter().map(String::as_str).collect();
    let o = log.verify(&[&public[..], &["--json"]].concat());
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(count(&v, "malformed"), 1, "{v}");
    let o = log.restart();
    assert!(!o.status.success(), "the writer adopted it: {}", text(&o));
    let db = rusqlite_free_read(&log.path("data/audit.db"));
    assert!(!db.contains(marker), "the forgery was copied into SQLite");
}

/// Found by attack: whoever holds the auditors' MAC key (the `.mac` file)
/// could seal a forgery the writer adopted and signed over. The writer
/// trusts its own MAC only (`writer_mac`, a key never written anywhere).
#[test]
fn the_auditors_mac_key_cannot_make_the_writer_adopt_a_forgery() {
    let log = Log::new(20);
    let mut lines = log.lines();
    let marker = "agent-forged-with-the-mac-file";
    let fake = String::from_utf8(fake_entry(9))
        .expect("utf8")
        .replacen("\"agent_id\":\"", &format!("\"agent_id\":\"{marker}"), 1)
        .into_bytes();
    lines.push(fake);
    let n = lines.len();
    rechain(&mut lines, n - 1);
    let mac_text = std::fs::read_to_string(log.path("keys/audit.test.mac")).expect("mac file");
    let auditors = audit_core::seal_mac::SealMacKey::from_text(&mac_text).expect("mac key");
    let head = Record::from_text(&lines[n - 1]).expect("record").head();
    let seal = audit_core::checkpoint::Seal {
        log_id: "audit.test/log".into(),
        seq: head.seq,
        head: head.hash,
        max_stretch: 12,
    };
    let mac = audit_core::seal_mac::encode_mac(&auditors.mac(&seal));
    // The best guess at the writer's MAC: the auditors' again.
    let body = format!(
        "{{\"record_type\":\"seal\",\"sealed_seq\":{},\"stretch\":12,\"mac\":\"{mac}\",\"writer_mac\":\"{mac}\"",
        head.seq
    );
    lines.push(
        Sequencer::resume(Some(head))
            .seal(body.as_bytes())
            .text()
            .to_vec(),
    );
    log.write_lines(&lines);
    let o = log.restart();
    assert!(!o.status.success(), "the writer adopted it: {}", text(&o));
    assert!(
        text(&o).contains("file"),
        "the refusal names the sink: {}",
        text(&o)
    );
    let db = rusqlite_free_read(&log.path("data/audit.db"));
    assert!(!db.contains(marker), "the forgery was copied into SQLite");
    // Found by attack: `--config` (which holds the private key) passed what
    // the writer refused. With the private key, writer_mac is checked too.
    let (o, v) = log.verify_config();
    assert_exit(&o, 1);
    assert!(count(&v, "bad_signature") >= 1, "{v}");
    let private = log.path("keys/audit.test.key").display().to_string();
    let o = log.verify(&[
        &log.file_source(),
        "--public-key",
        &log.pub_key(),
        "--mac-key",
        &private,
    ]);
    assert_exit(&o, 1);
    assert!(text(&o).contains("writer_mac"), "{}", text(&o));
}

/// Found by attack: a log rewritten from genesis with no seal at all was
/// adopted "unauthenticated" by a writer with a key, which then sealed and
/// signed the forgery. Without a seal a log cannot be told from a forgery:
/// start-up refuses it unless the operator says, once, that the log was
/// written without a key.
#[test]
fn a_log_rewritten_without_any_seal_is_not_adopted_unless_the_operator_says_so() {
    let log = Log::new(20);
    let marker = "agent-of-the-wholesale-rewrite";
    let mut forged: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            String::from_utf8(fake_entry(i))
                .expect("utf8")
                .replacen("\"agent_id\":\"", &format!("\"agent_id\":\"{marker}"), 1)
                .into_bytes()
        })
        .collect();
    rechain(&mut forged, 0);
    log.write_lines(&forged);
    for f in ["data/audit.db", "data/audit.db-wal", "data/audit.db-shm"] {
        let _ = std::fs::remove_file(log.path(f));
    }
    let o = log.restart();
    assert!(!o.status.success(), "the writer adopted it: {}", text(&o));
    assert!(text(&o).contains("adopt_unsealed"), "{}", text(&o));
    if let Ok(db) = std::fs::read(log.path("data/audit.db")) {
        assert!(!String::from_utf8_lossy(&db).contains(marker));
    }
    // The operator's word for a log written without a key.
    let config = std::fs::read_to_string(log.path("audit.toml")).expect("config");
    let config = config.replacen(
        "witness_dir = \"witness\"",
        "witness_dir = \"witness\"\nadopt_unsealed = true",
        1,
    );
    std::fs::write(log.path("audit.toml"), config).expect("config");
    // Even then the witness knows better: its newest checkpoint signed
    // another record than the rewrite holds.
    let o = log.restart();
    assert!(!o.status.success(), "the writer adopted it: {}", text(&o));
    assert!(text(&o).contains("witness"), "{}", text(&o));
    // A log written without a key has no witness of it: adopted.
    std::fs::remove_dir_all(log.path("witness")).expect("rm witness");
    let o = log.restart();
    assert!(o.status.success(), "{}", text(&o));
}

/// Found by attack: a second genesis chain in a single file was the seed
/// proxy's restart, a warning, even with a key, and `--config` read a file
/// sink's directory replaced by a file the same way. With a key, or from
/// the config, it is an error, whichever chain comes first.
#[test]
fn a_second_chain_in_a_single_file_is_an_error_with_a_key_or_the_config() {
    let log = Log::new(20);
    let genuine = log.lines();
    let mut forged: Vec<Vec<u8>> = (0..5).map(fake_entry).collect();
    rechain(&mut forged, 0);
    for (name, order) in [
        ("after", [&genuine, &forged]),
        ("before", [&forged, &genuine]),
    ] {
        let file = log.path(&format!("one-{name}.jsonl"));
        let mut out = Vec::new();
        for l in order.iter().flat_map(|v| v.iter()) {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        std::fs::write(&file, &out).expect("write");
        let source = format!("file:{}", file.display());
        let o = log.verify(&[&source, "--public-key", &log.pub_key(), "--json"]);
        assert_exit(&o, 1);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert!(count(&v, "restart") >= 1, "{name}: {v}");
    }
    // The config's file sink, its directory replaced by such a file.
    let dir = log.path("data/file");
    std::fs::remove_dir_all(&dir).expect("rm");
    std::fs::copy(log.path("one-after.jsonl"), &dir).expect("copy");
    let (o, v) = log.verify_config();
    assert_exit(&o, 1);
    assert!(count(&v, "restart") >= 1, "{v}");
}

/// Found by attack: with a leaked retired key, a log cut back before its
/// rotation and continued with the old key was adopted, and the writer
/// rotated again and signed over the forgery. At start-up the writer checks
/// its witness: the log must reach, and hold, the newest witnessed record.
#[test]
fn a_log_cut_back_behind_its_witness_is_not_continued() {
    let log = Log::new(40);
    let witness = log.path("witness");
    assert!(
        std::fs::read_dir(&witness).expect("witness").count() > 0,
        "the run published to the witness"
    );
    // Cut right after the first seal: every record left is sealed, so only
    // the witness can tell that the log was cut.
    let mut lines = log.lines();
    let first_seal = lines
        .iter()
        .position(|l| record_type(l).as_deref() == Some("seal"))
        .expect("a seal");
    lines.truncate(first_seal + 1);
    log.write_lines(&lines);
    for f in ["data/audit.db", "data/audit.db-wal", "data/audit.db-shm"] {
        let _ = std::fs::remove_file(log.path(f));
    }
    let o = log.restart();
    assert_refused_by_the_witness(&o);
    // A newer note of another log sharing the directory (same key) does not
    // switch the check off: the newest note of this log is the one.
    let key = KeyPair::from_private_string(
        &std::fs::read_to_string(log.path("keys/audit.test.key")).expect("key"),
    )
    .expect("key");
    let other = audit_core::checkpoint::Checkpoint {
        log_id: "audit.test/other".into(),
        seq: 999_999,
        head: audit_core::Hash32([7; 32]),
        time: 1_796_000_000,
    };
    std::fs::write(
        witness.join(audit_core::checkpoint::witness_file_name(other.seq)),
        key.sign_note(&other.body()),
    )
    .expect("other log's note");
    let o = log.restart();
    assert_refused_by_the_witness(&o);
}

/// The newest witnessed sequence: the largest `checkpoint-<seq>.note`.
fn newest_witnessed(log: &Log) -> u64 {
    std::fs::read_dir(log.path("witness"))
        .expect("witness")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("checkpoint-")?.get(..20)?.parse().ok()
        })
        .max()
        .expect("a witness note")
}

fn remove_database(log: &Log) {
    for f in ["data/audit.db", "data/audit.db-wal", "data/audit.db-shm"] {
        let _ = std::fs::remove_file(log.path(f));
    }
}

/// Found by attack (fifth round): a log cut right after the record the
/// newest witness note signs, so that the checkpoint record holding the
/// note was gone but the signed record was there, was continued by the
/// writer; its next checkpoint then went to the witness, and both
/// verifiers passed a log that had lost receipted records. The writer now
/// requires, as the verifier does, record N+1 to be the checkpoint holding
/// the very note.
#[test]
fn a_log_cut_between_the_witnessed_record_and_its_checkpoint_is_not_continued() {
    // 45 entries with a checkpoint every 10: the clean close signs the last
    // batch's seal, so every record the cut keeps is sealed.
    let log = Log::new(45);
    let n = newest_witnessed(&log);
    let mut lines = log.lines();
    assert!(lines.len() as u64 > n, "the checkpoint follows record {n}");
    assert_eq!(record_type(&lines[n as usize - 1]).as_deref(), Some("seal"));
    lines.truncate(n as usize);
    log.write_lines(&lines);
    remove_database(&log);
    let o = log.restart();
    assert_refused_by_the_witness(&o);
}

/// A signature line added to the last seal's note (by a key nobody holds,
/// so every reader ignored it) carried data into the signed history, and
/// the writer adopted the seal and signed over it. A seal or checkpoint
/// note holds exactly one signature line, a rotation's exactly two.
#[test]
fn a_signature_line_added_to_the_last_seal_is_malformed_and_not_adopted() {
    let log = Log::new(40);
    let mut lines = log.lines();
    let last = lines.len() - 1;
    assert_eq!(record_type(&lines[last]).as_deref(), Some("seal"));
    let seal = String::from_utf8(lines[last].clone()).expect("utf8");
    let at = seal
        .find("\\n\",\"chain_sequence\"")
        .expect("the note's end");
    let extra = format!("\\n\u{2014} evil {}", "A".repeat(91) + "=");
    lines[last] = format!("{}{extra}{}", &seal[..at], &seal[at..]).into_bytes();
    rechain(&mut lines, last);
    log.write_lines(&lines);
    let (o, v) = log.verify_config();
    assert_exit(&o, 1);
    assert!(count(&v, "malformed") >= 1, "{v}");
    remove_database(&log);
    let o = log.restart();
    assert!(!o.status.success(), "adopted: {}", text(&o));
}

/// The last seal respelled (`{"record_type" :"seal"`): both verifiers read
/// it as a seal, while the writer, which knows its records by their first
/// bytes, did not, cut the witnessed batch and continued. A non-entry
/// record starts with exactly `{"record_type":"<type>"`.
#[test]
fn a_respelled_marker_is_malformed_and_not_continued() {
    // Its first bytes, then (found in the sixth round) inside it: whitespace
    // between members hid data the writer then signed over.
    for (from, to) in [
        ("{\"record_type\":", "{\"record_type\" :"),
        (",\"note\":", ", \t \"note\":"),
        ("\u{2014}", "\\u2014"),
    ] {
        respelled_last_seal_is_refused(from, to);
    }
}

fn respelled_last_seal_is_refused(from: &str, to: &str) {
    let log = Log::new(40);
    let mut lines = log.lines();
    let last = lines.len() - 1;
    let seal = String::from_utf8(lines[last].clone()).expect("utf8");
    assert!(seal.contains(from), "{seal}");
    lines[last] = seal.replacen(from, to, 1).into_bytes();
    rechain(&mut lines, last);
    log.write_lines(&lines);
    let (o, v) = log.verify_config();
    assert_exit(&o, 1);
    assert!(count(&v, "malformed") >= 1, "{v}");
    remove_database(&log);
    let o = log.restart();
    assert!(!o.status.success(), "continued: {}", text(&o));
}

/// Hostile input: a record with sequence u64::MAX after a signed log made
/// the verifier overflow (a panic in a debug build, a wrapped sequence in
/// a release one) when it reported the stale or cut tail after it.
#[test]
fn a_record_at_the_largest_sequence_is_a_finding_not_a_panic() {
    let log = Log::new(5);
    let mut lines = log.lines();
    let last = Record::from_text(lines.last().expect("a record")).expect("record");
    let mut seq = Sequencer::resume(Some(audit_core::ChainHead {
        seq: u64::MAX - 1,
        hash: last.hash(),
    }));
    lines.push(seq.seal(&fake_entry(1)).text().to_vec());
    log.write_lines(&lines);
    let o = log.verify(&[
        &log.file_source(),
        "--public-key",
        &log.pub_key(),
        "--max-age",
        "1h",
    ]);
    assert_exit(&o, 1);
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
}

/// A file named like a segment whose sequence does not fit in 64 bits was
/// skipped by this verifier and read by the Python one: a file a reader
/// cannot place is an error, naming it.
#[test]
fn a_segment_name_out_of_range_is_refused_not_skipped() {
    // Also (sixth round) a generation written `0` or `01`: this reader put
    // `X.0` before `X`, the Python one after it.
    for name in [
        "audit-99999999999999999999.jsonl",
        "audit-00000000000000000001.0.jsonl",
        "audit-00000000000000000001.01.jsonl",
    ] {
        let log = Log::new(5);
        std::fs::write(log.path("data/file").join(name), fake_entry(1)).expect("plant");
        let o = log.verify(&[&log.file_source()]);
        assert_exit(&o, 2);
        assert!(text(&o).contains(name), "{}", text(&o));
    }
}

/// Issue 19 item 1 with real processes: a second `audit append` reaching
/// the SQLite database through a hard link in another directory (where a
/// lock file named after the path is another file) is refused while this
/// process writes to it.
#[tokio::test]
async fn a_second_writer_through_a_hard_link_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("x")).expect("mkdir");
    std::fs::create_dir(dir.path().join("y")).expect("mkdir");
    let real = dir.path().join("x/audit.db");
    let first = sink_sqlite::SqliteSink::open(sink_sqlite::SqliteSinkConfig::new("sqlite", &real))
        .await
        .expect("first");
    std::fs::hard_link(&real, dir.path().join("y/alias.db")).expect("hard link");
    std::fs::write(
        dir.path().join("b.toml"),
        "[[sinks]]\nkind = \"sqlite\"\nname = \"sqlite\"\npath = \"y/alias.db\"\n",
    )
    .expect("config");
    let o = audit(
        dir.path(),
        &["append", "--receipts", "--config", "b.toml"],
        entries(0, 3).as_bytes(),
    );
    assert!(!o.status.success(), "a second writer: {}", text(&o));
    assert!(o.stdout.is_empty(), "receipts: {}", text(&o));
    assert!(text(&o).contains("in use"), "{}", text(&o));
    drop(first);
}

fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full")
}

/// Issue 19 item 4: with stdout or stderr unwritable, no command panics
/// (exit 101), and receipts that could not be printed are not a silent 0.
#[test]
fn unwritable_stdout_or_stderr_is_never_a_panic_or_a_silent_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], stdin: &[u8], stdout_full: bool| -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_audit"));
        cmd.args(args).current_dir(dir.path()).stdin(Stdio::piped());
        if stdout_full {
            cmd.stdout(dev_full()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::piped()).stderr(dev_full());
        }
        let mut child = cmd.spawn().expect("run audit");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait")
    };
    // Receipts to a full stdout: the entries are appended, but the exit
    // says their receipts were not delivered.
    let o = run(&["append", "--receipts"], entries(0, 3).as_bytes(), true);
    assert_exit(&o, 4);
    assert!(
        text(&o).contains("cannot write the receipt"),
        "{}",
        text(&o)
    );
    // Every line of a full stderr (the summary, a rejection) is lost, not a
    // panic; the exit status is what it would have been.
    let o = run(&["append"], entries(3, 2).as_bytes(), false);
    assert_exit(&o, 0);
    let o = run(&["append"], b"{not json}\n", false);
    assert_exit(&o, 1);
    let o = run(&["query", "--tool", "read_file"], b"", false);
    assert_exit(&o, 0);
    assert!(!o.stdout.is_empty(), "{}", text(&o));
    let o = run(&["verify"], b"", false);
    assert_exit(&o, 0);
    // The verifier key to a full stdout: the files are written, the exit
    // says the key was not shown.
    std::fs::create_dir(dir.path().join("keys")).expect("keys dir");
    let o = run(&["keygen", "--name", "k", "--out", "keys"], b"", true);
    assert_exit(&o, 2);
    assert!(dir.path().join("keys/k.pub").exists());
}

/// Runs `audit` with `stdin`, failing the test if it has not exited
/// within a minute: a hang is the defect being tested for.
fn audit_bounded(cwd: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run audit");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("audit {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Issue 19 item 9: a FIFO in the witness directory, named as the newest
/// note, neither hangs the verifier nor the writer's start-up check; the
/// verifier refuses it, naming it.
#[test]
fn a_fifo_in_the_witness_directory_hangs_nothing() {
    let log = Log::new(5);
    let fifo = log
        .path("witness")
        .join(audit_core::checkpoint::witness_file_name(99_999));
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let o = audit_bounded(log.dir.path(), &["verify", "--config", "audit.toml"], b"");
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not a regular file"), "{}", text(&o));
    // The writer skips what is not a regular file and goes on.
    let o = audit_bounded(
        log.dir.path(),
        &["append", "--config", "audit.toml"],
        entries(100, 2).as_bytes(),
    );
    assert_exit(&o, 0);
}

/// Found by attack (fifth round): the agent index rebuilt without the rows
/// of one tool, its schema text then put back through `writable_schema`,
/// hid those rows from `audit query --agent` while verify, which reads the
/// table, said INTACT. Verify runs SQLite's integrity check, which compares
/// every index with the table.
#[test]
fn an_index_that_hides_rows_from_query_fails_verify() {
    let log = Log::new(12);
    let db = log.path("data/audit.db");
    let edit = "DROP INDEX records_agent_id; \
        CREATE INDEX records_agent_id ON records(agent_id, ts_ns) WHERE authorization_decision != 'deny'; \
        PRAGMA writable_schema=ON; \
        UPDATE sqlite_master SET sql='CREATE INDEX records_agent_id ON records(agent_id, ts_ns)' WHERE name='records_agent_id'; \
        PRAGMA writable_schema=OFF;";
    let o = Command::new("sqlite3")
        .arg(&db)
        .arg(edit)
        .output()
        .expect("the sqlite3 shell (.ci/run installs it)");
    assert!(o.status.success(), "{}", text(&o));
    // The rows are hidden from the index...
    let q = |args: &[&str]| {
        audit(
            log.dir.path(),
            &[&["query", "--config", "audit.toml"], args].concat(),
            b"",
        )
    };
    let by_index = q(&["--agent", "agent-0", "--json"]);
    let all = q(&["--json", "--limit", "1000"]);
    let rows_of_agent_0 = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("\"agent_id\":\"agent-0\""))
            .count()
    };
    assert!(
        rows_of_agent_0(&by_index) < rows_of_agent_0(&all),
        "the edit hides rows from the index: {}\n{}",
        text(&by_index),
        text(&all)
    );
    // ...and verify says so.
    let o = log.verify(&[&log.sqlite_source(), "--json"]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "modified") >= 1, "{v}");
    assert!(text(&o).contains("integrity check"), "{}", text(&o));
}

/// Writes `lines` (a chain, rechained by the attacker where it was edited)
/// into a fresh SQLite database and a fresh `fs:` object log through the
/// sinks themselves, so that the index columns and object names are what an
/// attacker who recomputes them would write. Returns the two sources.
async fn replay_into_sqlite_and_object(log: &Log, lines: &[Vec<u8>], tag: &str) -> [String; 2] {
    use audit_core::Sink as _;
    let records: Vec<Record> = lines
        .iter()
        .map(|l| Record::from_text(l).expect("record"))
        .collect();
    let batch = audit_core::RecordBatch::new(records).expect("a contiguous chain");
    let db = log.path(&format!("{tag}.db"));
    let sqlite = sink_sqlite::SqliteSink::open(sink_sqlite::SqliteSinkConfig::new("sqlite", &db))
        .await
        .expect("sqlite");
    sqlite.append(&batch).await.expect("sqlite append");
    drop(sqlite);
    let root = log.path(&format!("{tag}-objects"));
    std::fs::create_dir_all(&root).expect("object root");
    let object = sink_object::ObjectSink::open(sink_object::ObjectSinkConfig::new(
        "object",
        sink_object::Service::Fs { root: root.clone() },
        "",
        "replayed",
    ))
    .await
    .expect("object");
    object.append(&batch).await.expect("object append");
    drop(object);
    [
        format!("sqlite:{}", db.display()),
        format!("fs:{}?log=replayed", root.display()),
    ]
}

/// Issue 18: the signed attacks on every backend. The file attacks' results
/// (f03: an edit with the signatures after it dropped and the chain
/// recomputed; f04: the witnessed checkpoint record replaced) are written
/// into SQLite and an object log as an attacker who recomputes the index
/// columns would, and fail verification there with the key (and witness)
/// as they do in the file. The genuine log, replayed the same way, passes.
#[tokio::test]
async fn the_signed_attacks_fail_on_sqlite_and_object_logs_too() {
    let log = Log::new(30);
    log.append(100, 30);
    let lines = log.lines();
    let key = log.pub_key();
    let witness = log.path("witness").display().to_string();
    let verify = |source: &str, with_witness: bool| {
        let mut args = vec![source, "--public-key", key.as_str(), "--json"];
        if with_witness {
            args.extend(["--witness", witness.as_str()]);
        }
        log.verify(&args)
    };
    for source in replay_into_sqlite_and_object(&log, &lines, "genuine").await {
        let o = verify(&source, true);
        assert_exit(&o, 0);
    }
    // f03: an entry after the first checkpoint edited, every signed record
    // after it dropped, the chain recomputed.
    let first_cp = lines
        .iter()
        .position(|l| record_type(l).as_deref() == Some("checkpoint"))
        .expect("a checkpoint");
    let victim = first_cp + 10;
    let mut edited = lines.clone();
    edited[victim] = String::from_utf8(edited[victim].clone())
        .expect("utf8")
        .replacen("\"allow\"", "\"deny\"", 1)
        .into_bytes();
    let mut kept: Vec<Vec<u8>> = edited[..victim].to_vec();
    kept.extend(
        edited[victim..]
            .iter()
            .filter(|l| record_type(l).is_none())
            .cloned(),
    );
    rechain(&mut kept, victim);
    for source in replay_into_sqlite_and_object(&log, &kept, "f03").await {
        let o = verify(&source, false);
        assert_exit(&o, 1);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert!(count(&v, "unsigned") >= 1, "{source}: {v}");
    }
    // f04: the newest witnessed checkpoint's record replaced by an entry.
    let first_run = Log::new(25);
    let lines = first_run.lines();
    let last_cp = lines
        .iter()
        .rposition(|l| record_type(l).as_deref() == Some("checkpoint"))
        .expect("a checkpoint");
    let mut forged = lines[..last_cp].to_vec();
    forged.push(fake_entry(1));
    rechain(&mut forged, last_cp);
    let key = first_run.pub_key();
    let witness = first_run.path("witness").display().to_string();
    for source in replay_into_sqlite_and_object(&first_run, &forged, "f04").await {
        let o = first_run.verify(&[
            &source,
            "--public-key",
            &key,
            "--witness",
            &witness,
            "--json",
        ]);
        assert_exit(&o, 1);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert!(count(&v, "forked") >= 1, "{source}: {v}");
    }
}

/// Found by attack (sixth round): the start-up witness check tried only the
/// 4,096 newest notes, so another log sharing the witness directory (same
/// key here; another key does the same) switched it off by publishing more,
/// and a cut behind the witnessed checkpoint was continued again.
#[test]
fn another_logs_notes_do_not_switch_the_witness_check_off() {
    let log = Log::new(45);
    let n = newest_witnessed(&log);
    let mut lines = log.lines();
    lines.truncate(n as usize);
    log.write_lines(&lines);
    remove_database(&log);
    let key = log.key("audit.test");
    for i in 0..4_200u64 {
        let other = audit_core::checkpoint::Checkpoint {
            log_id: "audit.test/other".into(),
            seq: 1_000_000 + i,
            head: audit_core::Hash32([7; 32]),
            time: 1_796_000_000,
        };
        std::fs::write(
            log.path("witness")
                .join(audit_core::checkpoint::witness_file_name(other.seq)),
            key.sign_note(&other.body()),
        )
        .expect("other log's note");
    }
    let o = log.restart();
    assert_refused_by_the_witness(&o);
}

/// Found by attack (sixth round): index columns rewritten as BLOBs of the
/// same bytes (triggers dropped and restored) hid their rows from
/// `audit query`, since a BLOB never equals the TEXT a query binds, while
/// verify read them as the same string and said INTACT. A column of another
/// storage class than the sink writes disagrees with its record.
#[test]
fn an_index_column_of_another_storage_class_fails_verify() {
    let log = Log::new(12);
    let db = log.path("data/audit.db");
    let sqlite = |sql: &str| {
        let o = Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .output()
            .expect("the sqlite3 shell (.ci/run installs it)");
        assert!(o.status.success(), "{sql}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let triggers = sqlite("SELECT sql || ';' FROM sqlite_master WHERE type = 'trigger';");
    let q = |args: &[&str]| {
        audit(
            log.dir.path(),
            &[&["query", "--config", "audit.toml"], args].concat(),
            b"",
        )
    };
    let before = q(&["--agent", "agent-0", "--json"]).stdout.len();
    assert!(before > 0);
    sqlite(&format!(
        "DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete; \
         UPDATE records SET agent_id = CAST(agent_id AS BLOB) WHERE agent_id = 'agent-0'; \
         UPDATE records SET ts_ns = CAST(ts_ns AS BLOB) WHERE seq = 3; {triggers}"
    ));
    assert!(
        q(&["--agent", "agent-0", "--json"]).stdout.is_empty(),
        "the edit hides the rows from audit query"
    );
    let o = log.verify(&[&log.sqlite_source(), "--json"]);
    assert_exit(&o, 1);
    assert!(text(&o).contains("(BLOB) agent-0"), "{}", text(&o));
    // A BLOB time sorts after every number: the row escapes `--until`.
    assert!(
        text(&o).contains("index column ts_ns holds \\\"(BLOB)"),
        "{}",
        text(&o)
    );
}

/// The `segments/` directory of a replayed `fs:` object log.
fn object_segments(log: &Log, tag: &str) -> PathBuf {
    let dir = log.path(&format!("{tag}-objects/replayed/segments"));
    assert!(dir.is_dir(), "{}", dir.display());
    dir
}

/// Issue 18 findings 1 and 2 on an object log: a flood of repeated genesis
/// records in a segment object of its own still counts every finding (the
/// verdict is not the cap's), and a fabricated chain added as a segment
/// object is an error.
#[tokio::test]
async fn the_flood_and_a_second_chain_fail_on_an_object_log_too() {
    let log = Log::new(30);
    let lines = log.lines();
    // f01: an edit in the log (hash not recomputed) behind 10,001 copies of
    // its genesis record, in an old-form segment object sorting first.
    let mut edited = lines.clone();
    let [_, object] = replay_into_sqlite_and_object(&log, &edited, "f01").await;
    let segments = object_segments(&log, "f01");
    let mut front = Vec::new();
    for _ in 0..10_001 {
        front.extend_from_slice(&lines[0]);
        front.push(b'\n');
    }
    std::fs::write(
        segments.join("00000000000000000000-00000000000000000000.jsonl"),
        front,
    )
    .expect("flood object");
    let real = segments.join("00000000000000000001.jsonl");
    let text = std::fs::read_to_string(&real).expect("segment");
    std::fs::write(&real, text.replacen("\"allow\"", "\"deny\"", 1)).expect("edit");
    let o = log.verify(&[&object, "--public-key", &log.pub_key(), "--json"]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let s = &v["sources"][0];
    assert!(
        s["errors"].as_u64().unwrap_or(0) > 10_000,
        "{}",
        s["errors"]
    );
    assert!(s["findings_omitted"].as_u64().unwrap_or(0) > 0);
    // f02: a fabricated chain from genesis, as a segment object after the
    // last one.
    edited.truncate(20);
    let [_, object] = replay_into_sqlite_and_object(&log, &edited, "f02").await;
    let mut seq = Sequencer::new();
    let mut extra = Vec::new();
    for i in 0..3 {
        extra.extend_from_slice(seq.seal(&fake_entry(i)).text());
        extra.push(b'\n');
    }
    std::fs::write(
        object_segments(&log, "f02").join("00000000000000000021.jsonl"),
        extra,
    )
    .expect("extra object");
    let o = log.verify(&[&object, "--json"]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(count(&v, "restart") >= 1, "{v}");
}
