//! End-to-end: the `audit` binary on real file and SQLite sinks.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

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
                "{{\"agent_id\":\"agent-{}\",\"tool_called\":\"read_file\",\"arguments\":{{\"i\":{i},\"pi\":3.14159}},\"authorization_decision\":\"{}\"}}\n",
                i % 5,
                if i % 4 == 0 { "deny" } else { "allow" }
            )
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn append_prints_receipts_rejects_bad_lines_and_a_second_process_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut input = entries(0, 50);
    input.push_str("{not json\n");
    input.push_str("{\"agent_id\":\"x\",\"chain_sequence\":7}\n");
    input.push_str(&entries(50, 10));
    let out = audit(dir.path(), &["append", "--receipts"], input.as_bytes());
    assert_eq!(
        out.status.code(),
        Some(1),
        "rejected lines must show in the exit status; stderr: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("line 51: rejected"), "{err}");
    assert!(
        err.contains("line 52: rejected") && err.contains("chain_sequence"),
        "{err}"
    );
    assert!(err.contains("60 appended"), "{err}");
    let receipts: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("receipt is JSON"))
        .collect();
    assert_eq!(receipts.len(), 60);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1, "receipts come in input order");
        assert_eq!(r["hash"].as_str().map(str::len), Some(64));
    }

    // A second process appends to the same sinks: the chain continues.
    let out = audit(
        dir.path(),
        &["append", "--receipts"],
        entries(100, 5).as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("receipt"),
    )
    .expect("json");
    assert_eq!(first["seq"], 61);

    let out = audit(dir.path(), &["verify", "--strict", "--json"], b"");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["ok"], true);
    for s in report["sources"].as_array().expect("sources") {
        assert_eq!(s["records"], 65);
        assert_eq!(s["last_seq"], 65);
        assert!(s["findings"].as_array().expect("findings").is_empty());
    }
    let seg = std::fs::read_to_string(
        dir.path()
            .join("audit-data/file/audit-00000000000000000001.jsonl"),
    )
    .expect("segment");
    assert_eq!(
        seg.matches("\"chain_prev_hash\":\"genesis\"").count(),
        1,
        "no second genesis after restart"
    );

    let out = audit(
        dir.path(),
        &[
            "query",
            "--agent",
            "agent-2",
            "--decision",
            "deny",
            "--json",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(r["record"]["agent_id"], "agent-2");
        assert_eq!(r["record"]["authorization_decision"], "deny");
        assert!(r["seq"].as_u64().is_some() && r["record_hash"].as_str().is_some());
    }
}

#[test]
fn tampering_makes_verify_exit_1_and_unreadable_sources_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(audit(dir.path(), &["append"], entries(0, 20).as_bytes())
        .status
        .success());
    let seg = dir
        .path()
        .join("audit-data/file/audit-00000000000000000001.jsonl");
    let text = std::fs::read_to_string(&seg)
        .expect("read")
        .replacen("agent-3", "agent-9", 1);
    std::fs::write(&seg, text).expect("write");
    let out = audit(dir.path(), &["verify"], b"");
    assert_eq!(out.status.code(), Some(1));
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("modified") && human.contains("seq 4"),
        "{human}"
    );
    let out = audit(dir.path(), &["verify", "sqlite:does-not-exist.db"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does-not-exist.db"));
    let out = Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(["verify", "--no-such-flag"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_fork_between_sinks_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write config");
        p
    };
    let only_file = write(
        "a.toml",
        "[[sinks]]\nkind = \"file\"\nname = \"left\"\ndir = \"left\"\n",
    );
    let only_db = write(
        "b.toml",
        "[[sinks]]\nkind = \"sqlite\"\nname = \"right\"\npath = \"right.db\"\n",
    );
    let both = write("c.toml", "[[sinks]]\nkind = \"file\"\nname = \"left\"\ndir = \"left\"\n[[sinks]]\nkind = \"sqlite\"\nname = \"right\"\npath = \"right.db\"\n");
    assert!(audit(
        dir.path(),
        &["append", "--config", only_file.to_str().expect("utf8")],
        entries(0, 5).as_bytes()
    )
    .status
    .success());
    assert!(audit(
        dir.path(),
        &["append", "--config", only_db.to_str().expect("utf8")],
        entries(500, 3).as_bytes()
    )
    .status
    .success());
    let out = audit(
        dir.path(),
        &["append", "--config", both.to_str().expect("utf8")],
        entries(0, 1).as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("left")
            && err.contains("right")
            && err.contains("sequence 3")
            && err.contains("refusing to start"),
        "{err}"
    );
}

#[test]
fn append_refuses_a_log_whose_last_line_is_not_a_record_and_says_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("file.toml");
    std::fs::write(
        &config,
        "[[sinks]]\nkind = \"file\"\nname = \"left\"\ndir = \"left\"\n",
    )
    .expect("write config");
    let config = config.to_str().expect("utf8");
    assert!(audit(
        dir.path(),
        &["append", "--config", config],
        entries(0, 3).as_bytes()
    )
    .status
    .success());
    let segment = std::fs::read_dir(dir.path().join("left"))
        .expect("sink dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .expect("a segment");
    let before = std::fs::read(&segment).expect("read segment");
    let mut hostile = before.clone();
    hostile.extend_from_slice(b"garbage\x00\xff\n");
    std::fs::write(&segment, &hostile).expect("append garbage");

    let out = audit(
        dir.path(),
        &["append", "--config", config],
        entries(3, 1).as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    // The file and the garbage line's first byte, without a line number the
    // sink did not count, and the sink named once.
    let at = format!(
        "{} (byte {})",
        Path::new("left")
            .join(segment.file_name().expect("name"))
            .display(),
        before.len()
    );
    assert!(err.contains(&at), "{err}");
    assert_eq!(err.matches("sink left").count(), 1, "{err}");
    assert!(!err.contains(".jsonl:0"), "{err}");
    assert_eq!(
        std::fs::read(&segment).expect("read segment"),
        hostile,
        "nothing rewritten"
    );
}

/// Two writers of one log would each resume from the head they read and
/// overwrite or fork what the other has acknowledged. While one `audit
/// append` runs, a second on the same sinks must be refused, naming the first
/// one's pid, and leave the log as the first one writes it.
#[test]
fn a_second_writer_is_refused_while_the_first_one_runs() {
    let object = "[[sinks]]\nkind = \"object\"\nname = \"objects\"\nservice = \"fs\"\nroot = \"objects\"\nlog_id = \"one\"\n";
    let sqlite = "[[sinks]]\nkind = \"sqlite\"\nname = \"db\"\npath = \"only.db\"\n";
    for (config, refused_sink) in [
        (None, "file"),
        (Some(sqlite), "db"),
        (Some(object), "objects"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = vec!["append", "--receipts"];
        if let Some(text) = config {
            std::fs::write(dir.path().join("log.toml"), text).expect("write config");
            args.extend(["--config", "log.toml"]);
        }
        let mut first = Command::new(env!("CARGO_BIN_EXE_audit"))
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the first writer");
        let mut input = first.stdin.take().expect("stdin");
        input
            .write_all(entries(0, 1).as_bytes())
            .expect("write stdin");
        input.flush().expect("flush stdin");
        // Its first receipt, printed while its input is still open, means its
        // sinks are open, and so locked. Read on a thread so that a writer
        // that holds receipts back fails the test instead of hanging it.
        let stdout = first.stdout.take().expect("stdout");
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                if lines_tx.send(line.expect("read receipts")).is_err() {
                    break;
                }
            }
        });
        let receipt = match lines.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(r) => r,
            Err(e) => {
                let _ = first.kill();
                panic!("no receipt while the input stays open: {e}");
            }
        };
        assert!(receipt.starts_with("{\"seq\":1,"), "{receipt}");

        let second = audit(dir.path(), &args, entries(100, 5).as_bytes());
        assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
        let err = stderr(&second);
        assert!(
            err.contains(&format!(
                "sink {refused_sink}: the log is in use by another writer (pid {})",
                first.id()
            )),
            "{err}"
        );
        assert!(
            second.stdout.is_empty(),
            "no receipts from the refused writer"
        );

        input
            .write_all(entries(1, 9).as_bytes())
            .expect("write stdin");
        drop(input);
        let status = first.wait().expect("wait");
        assert!(status.success());
        reader.join().expect("receipt reader");
        assert_eq!(lines.iter().count(), 9);

        // The lock went with the first writer: a third one continues its chain.
        let third = audit(dir.path(), &args, entries(200, 1).as_bytes());
        assert!(third.status.success(), "{}", stderr(&third));
        assert!(String::from_utf8_lossy(&third.stdout).starts_with("{\"seq\":11,"));
        let mut verify = vec!["verify"];
        if config.is_some() {
            verify.extend(["--config", "log.toml"]);
        }
        let checked = audit(dir.path(), &verify, b"");
        assert!(checked.status.success(), "{}", stderr(&checked));
    }
}

#[test]
fn resync_backfills_a_new_sink_from_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one.toml");
    std::fs::write(
        &one,
        "[[sinks]]\nkind = \"file\"\nname = \"primary\"\ndir = \"primary\"\n",
    )
    .expect("write");
    assert!(audit(
        dir.path(),
        &["append", "--config", one.to_str().expect("utf8")],
        entries(0, 40).as_bytes()
    )
    .status
    .success());
    let two = dir.path().join("two.toml");
    std::fs::write(&two, "[[sinks]]\nkind = \"file\"\nname = \"primary\"\ndir = \"primary\"\n[[sinks]]\nkind = \"sqlite\"\nname = \"replica\"\npath = \"replica.db\"\nrole = \"optional\"\n").expect("write");
    let out = audit(
        dir.path(),
        &["resync", "--config", two.to_str().expect("utf8")],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = audit(
        dir.path(),
        &["verify", "--config", two.to_str().expect("utf8")],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("records: 40"));
}

/// An entry line whose `arguments` nest `levels` deep.
fn nested_entry(levels: usize) -> String {
    format!(
        "{{\"agent_id\":\"deep\",\"arguments\":{}1{}}}\n",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

#[test]
fn append_takes_entries_as_deep_as_the_api_and_rejects_deeper_ones_by_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max = audit_core::MAX_NESTING;
    let mut input = entries(0, 2);
    input.push_str(&nested_entry(max));
    input.push_str(&nested_entry(max + 1));
    // Deep enough to overflow a recursive parser's stack.
    input.push_str(&nested_entry(100_000));
    // Brackets inside strings are not nesting.
    input.push_str(&format!(
        "{{\"agent_id\":\"{}\",\"arguments\":{{\"s\":\"]]]}}}}\\\"[[[\"}}}}\n",
        "[".repeat(300)
    ));
    input.push_str(&entries(2, 2));
    let out = audit(dir.path(), &["append", "--receipts"], input.as_bytes());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 4: rejected") && err.contains("line 5: rejected"),
        "{err}"
    );
    assert!(err.contains("nested more than 128 levels"), "{err}");
    assert!(!err.contains("line 3: rejected"), "{err}");
    assert!(!err.contains("line 6: rejected"), "{err}");
    assert!(err.contains("6 appended"), "{err}");

    let out = audit(dir.path(), &["verify", "--strict", "--json"], b"");
    assert!(
        out.status.success(),
        "the deepest accepted entry must make a well-formed record: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `audit query --json` re-serialized each record (sorted members, numbers
/// respelled), so its output could not be re-hashed: the record is printed
/// as stored, byte for byte, and a cut by `--limit` is said.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn query_json_prints_the_stored_record_verbatim_and_says_when_limit_cut() {
    use audit_core::{RecordBatch, Sequencer, Sink};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    let sink = sink_sqlite::SqliteSink::open(sink_sqlite::SqliteSinkConfig::new("db", &db))
        .await
        .expect("open");
    let mut seq = Sequencer::new();
    let bodies = [
        r#"{"timestamp":"2026-01-01T00:00:00Z","agent_id":"a","tool_called":"t","arguments":{"z":1,"a":2,"big":123456789012345678901234567890,"e":1E2,"neg":-0,"u":"\u00e9"},"authorization_decision":"allow""#,
        r#"{"timestamp":"2026-01-01T00:00:01Z","agent_id":"a","tool_called":"t","arguments":{"b":[1.50,2e-3]},"authorization_decision":"allow""#,
    ];
    let records: Vec<_> = bodies.iter().map(|b| seq.seal(b.as_bytes())).collect();
    let stored: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.text()).trim_end().to_string())
        .collect();
    sink.append(&RecordBatch::new(records).expect("batch"))
        .await
        .expect("append");
    drop(sink);
    let source = format!("sqlite:{}", db.display());
    let out = audit(dir.path(), &["query", &source, "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, text) in lines.iter().zip(&stored) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(v["seq"].as_u64().is_some(), "{line}");
        assert!(
            line.ends_with(&format!(",\"record\":{text}}}")),
            "the stored text, verbatim:\n{line}\n{text}"
        );
        assert_eq!(
            audit_core::record_hash(text.as_bytes()).to_hex(),
            v["record_hash"].as_str().expect("hash"),
            "re-hashable"
        );
    }
    assert!(!stderr(&out).contains("--limit"), "{}", stderr(&out));
    // A row that is not exactly a JSON record (invalid UTF-8, text around
    // the JSON) is reported, never printed repaired.
    for (set, what) in [
        ("CAST(X'7B2261223A22FF227D' AS BLOB)", "invalid UTF-8"),
        ("CAST(record || '  ' AS BLOB)", "trailing spaces"),
    ] {
        let copy = dir.path().join("tampered.db");
        std::fs::copy(&db, &copy).expect("copy");
        let sql = format!(
            "DROP TRIGGER records_no_update; UPDATE records SET record = {set} WHERE seq = 1;"
        );
        let edit = std::process::Command::new("sqlite3")
            .arg(&copy)
            .arg(&sql)
            .output()
            .expect("the sqlite3 shell (.ci/run installs it)");
        assert!(
            edit.status.success(),
            "{}",
            String::from_utf8_lossy(&edit.stderr)
        );
        let source = format!("sqlite:{}", copy.display());
        let out = audit(dir.path(), &["query", &source, "--json"], b"");
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains("row 1"), "{what}: {}", stderr(&out));
        std::fs::remove_file(&copy).expect("rm");
    }
    let out = audit(
        dir.path(),
        &["query", &source, "--json", "--limit", "1"],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(
        stderr(&out).contains("stopped at --limit 1"),
        "{}",
        stderr(&out)
    );
}

/// `audit append` sorted `arguments`' members, collapsed a duplicate and
/// respelled numbers. What a producer logged is stored as given, less
/// insignificant whitespace; a duplicate member is refused with its line.
#[test]
fn append_stores_arguments_as_given_and_refuses_duplicate_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = [
        (r#"{"z":1,"a":2}"#, r#"{"z":1,"a":2}"#),
        (
            r#"{ "big" : 123456789012345678901234567890, "e": 1E2, "neg": -0, "f": 1.50 }"#,
            r#"{"big":123456789012345678901234567890,"e":1E2,"neg":-0,"f":1.50}"#,
        ),
        (
            r#"{"u": "\u00e9\u2028 \ud83d\ude00", "q": "say \"hi\""}"#,
            r#"{"u":"\u00e9\u2028 \ud83d\ude00","q":"say \"hi\""}"#,
        ),
        (r#"[ 1, [ ], { } ]"#, r#"[1,[],{}]"#),
    ];
    let mut input = String::new();
    for (args, _) in &corpus {
        input.push_str(&format!(
            "{{\"agent_id\":\"a\",\"tool_called\":\"t\",\"arguments\":{args},\"authorization_decision\":\"allow\"}}\n"
        ));
    }
    input.push_str(
        "{\"agent_id\":\"a\",\"arguments\":{\"z\":1,\"a\":2,\"a\":3},\"authorization_decision\":\"allow\"}\n",
    );
    input.push_str(
        "{\"agent_id\":\"a\",\"arguments\":{\"o\":{\"k\":1,\"k\":2}},\"authorization_decision\":\"allow\"}\n",
    );
    let out = audit(dir.path(), &["append"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("line 5: rejected")
            && err.contains("line 6: rejected")
            && err.contains("duplicate member"),
        "{err}"
    );
    let seg = std::fs::read_to_string(
        dir.path()
            .join("audit-data/file/audit-00000000000000000001.jsonl"),
    )
    .expect("segment");
    let lines: Vec<&str> = seg
        .lines()
        .filter(|l| l.contains("\"agent_id\":\"a\""))
        .collect();
    assert_eq!(lines.len(), corpus.len(), "{seg}");
    for (line, (_, stored)) in lines.iter().zip(&corpus) {
        assert!(
            line.contains(&format!(",\"arguments\":{stored},")),
            "stored as given:\n{line}\nwant {stored}"
        );
    }
    // And every copy verifies: the stored text is what was hashed.
    let v = audit(dir.path(), &["verify"], b"");
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
}
