//! Receipts follow durability, seen at the system-call level. `audit append
//! --receipts` on the embedded default (a file sink and a SQLite sink) runs
//! under `strace`, and for every receipt printed, the first write of its
//! record to the active segment was followed by an `fdatasync` of that
//! segment, and the first write of it to SQLite's WAL by an `fsync` of the
//! WAL, both before the receipt reached stdout. A SIGKILL test cannot see a
//! missing sync (the page cache survives it); this one fails with the file
//! sink's `sync_data` removed or SQLite at `synchronous=OFF` or `NORMAL`.
//! Needs strace (`.ci/run` installs it): fails without it unless
//! `AUDIT_ALLOW_SKIP` is set.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// One completed system call from the trace, in completion order.
struct Call {
    name: String,
    /// The path of its first argument (strace `-y`), if a file.
    path: String,
    args: String,
    ok: bool,
}

/// Parses `strace -f -y -qq` output, joining `<unfinished ...>` calls with
/// their `resumed` halves; a call is placed where it completed.
fn parse(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<String, (String, String)> = HashMap::new();
    let mut calls = Vec::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let (name, args, ret) = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            if let Some((name, args)) = head.split_once('(') {
                pending.insert(pid.to_string(), (name.to_string(), args.to_string()));
            }
            continue;
        } else if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((_, first)) = pending.remove(pid) else {
                continue;
            };
            let Some((tail, ret)) = tail.rsplit_once(" = ") else {
                continue;
            };
            (name.to_string(), first + tail, ret.to_string())
        } else {
            let Some((name, args)) = rest.split_once('(') else {
                continue;
            };
            let Some((args, ret)) = args.rsplit_once(" = ") else {
                continue;
            };
            (name.to_string(), args.to_string(), ret.to_string())
        };
        let path = args
            .split_once('<')
            .and_then(|(_, p)| p.split_once('>'))
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        let ok = !ret.trim_start().starts_with('-');
        calls.push(Call {
            name,
            path,
            args,
            ok,
        });
    }
    calls
}

fn entries(n: u64) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"agent_id\":\"agent-{}\",\"tool_called\":\"read_file\",\"arguments\":{{\"i\":{i}}},\"authorization_decision\":\"allow\"}}\n",
                i % 3
            )
        })
        .collect()
}

/// Runs `audit append --receipts` under strace in `dir`; returns the trace
/// and the receipts' hashes.
fn traced_append(dir: &Path, n: u64) -> (String, Vec<String>) {
    let trace = dir.join("trace.txt");
    let mut child = Command::new("strace")
        .args(["-f", "-y", "-qq", "-s", "4194304", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=pwrite64,pwritev,pwritev2,write,fdatasync,fsync",
        ])
        .arg(env!("CARGO_BIN_EXE_audit"))
        .args(["append", "--receipts"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strace");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(entries(n).as_bytes()).expect("stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hashes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("receipt");
            v["hash"].as_str().expect("hash").to_string()
        })
        .collect();
    assert_eq!(hashes.len() as u64, n, "one receipt per entry");
    (std::fs::read_to_string(trace).expect("trace"), hashes)
}

#[test]
fn every_receipt_follows_an_fdatasync_of_its_segment_and_an_fsync_of_its_wal() {
    const TEST: &str = "every_receipt_follows_an_fdatasync_of_its_segment_and_an_fsync_of_its_wal";
    if Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        return audit_core::testing::skip_or_fail(TEST, "no strace binary");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (trace, hashes) = traced_append(dir.path(), 300);
    let calls = parse(&trace);
    let is_segment = |p: &str| p.contains("/file/audit-") && p.ends_with(".jsonl");
    let is_wal = |p: &str| p.ends_with("audit.db-wal");
    // Index of each call that printed a receipt, by hash.
    let mut printed: HashMap<&str, usize> = HashMap::new();
    for (i, c) in calls.iter().enumerate() {
        if c.name == "write" && c.args.starts_with("1<") {
            for h in &hashes {
                if c.args.contains(h.as_str()) {
                    printed.entry(h.as_str()).or_insert(i);
                }
            }
        }
    }
    for (what, is_kind, syncs) in [
        (
            "segment",
            &is_segment as &dyn Fn(&str) -> bool,
            &["fdatasync", "fsync"][..],
        ),
        ("SQLite WAL", &is_wal, &["fsync", "fdatasync"][..]),
    ] {
        for h in &hashes {
            let at = *printed
                .get(h.as_str())
                .unwrap_or_else(|| panic!("receipt {h} is not in the trace"));
            // The record's own hash member, as strace escapes it: the next
            // record's `chain_prev_hash` holds the same hash.
            let own = format!("chain_record_hash\\\":\\\"{h}");
            // The first write holding it: the commit that made it durable.
            // (SQLite rewrites the page in later transactions' frames.)
            let written = calls[..at]
                .iter()
                .position(|c| {
                    c.ok && c.name.starts_with("pwrite")
                        && is_kind(&c.path)
                        && c.args.contains(&own)
                })
                .unwrap_or_else(|| {
                    panic!("record {h} was not written to the {what} before its receipt")
                });
            let path = &calls[written].path;
            let synced = calls[written + 1..at]
                .iter()
                .any(|c| c.ok && syncs.contains(&c.name.as_str()) && &c.path == path);
            assert!(
                synced,
                "the receipt of record {h} was printed before the {what} write holding it ({path}) was synced"
            );
        }
    }
}
