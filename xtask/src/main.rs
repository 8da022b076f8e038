//! `cargo xtask`: the project's tasks.
//!
//! - `cargo xtask test`: installs what the tests need (the Python `blake3`
//!   and `cryptography` packages), runs the independent Python verifier on
//!   the seed fixtures, on logs this project writes (signed ones too) and on
//!   sealed logs its own tests build, then every Rust test.
//! - `cargo xtask independent`: only the independent Python verifier's checks.
//! - `cargo xtask bench [--quick]`: builds `audit-bench` in release mode,
//!   prints the table and writes it, with the machine, into docs/BENCHMARKS.md.
//! - `cargo xtask ci`: `cargo fmt --check`, `cargo clippy -D warnings`, then `test`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run(cmd: &mut Command) -> Result {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The independent verifier's dependencies: `blake3` for the record hash,
/// `cryptography` for Ed25519 (seals, checkpoints, key rotations).
fn ensure_python_deps() -> Result {
    let have = Command::new(python())
        .args(["-c", "import blake3, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        run(Command::new(python()).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "blake3",
            "cryptography",
        ]))?;
    }
    Ok(())
}

/// A loopback Garage for the S3 tests, stopped when dropped.
struct GarageForTests {
    child: std::process::Child,
    env: Vec<(String, String)>,
}

impl Drop for GarageForTests {
    fn drop(&mut self) {
        // Closing its stdin makes the helper stop Garage and exit.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn start_garage() -> Result<Option<GarageForTests>> {
    run(cargo().args([
        "build",
        "-p",
        "sink-object",
        "--features",
        "testing",
        "--bin",
        "garage-for-tests",
    ]))?;
    let work = root().join("target/xtask-garage");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let env_file = work.join("env");
    let mut child = Command::new(root().join("target/debug/garage-for-tests"))
        .arg(work.join("node"))
        .arg(&env_file)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("garage-for-tests: {e}"))?;
    // The helper writes the env file once Garage answers, or exits on failure.
    loop {
        if env_file.exists() {
            break;
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("garage-for-tests: {e}"))?
        {
            if status.code() == Some(3) {
                // A test that did not run never counts as passed.
                if std::env::var_os("AUDIT_ALLOW_SKIP").is_some() {
                    eprintln!("xtask: no garage binary; AUDIT_ALLOW_SKIP is set, so the S3 tests will report SKIPPED");
                    return Ok(None);
                }
                return Err("no garage binary: the S3 tests cannot run (install: cargo install garage --locked, as .ci/run does; or set AUDIT_ALLOW_SKIP=1 to skip them knowingly)".into());
            }
            return Err(format!("garage-for-tests failed: {status}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text =
        std::fs::read_to_string(&env_file).map_err(|e| format!("{}: {e}", env_file.display()))?;
    let env = text
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Ok(Some(GarageForTests { child, env }))
}

fn test() -> Result {
    ensure_python_deps()?;
    let garage = start_garage()?;
    let env: Vec<(String, String)> = garage.as_ref().map(|g| g.env.clone()).unwrap_or_default();
    let cargo = || {
        let mut c = cargo();
        c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    };
    let nextest = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    // The Python checks first, so the test runner's summary is the last line.
    independent_verify()?;
    if let Some(g) = &garage {
        independent_s3_check(&g.env)?;
    }
    if nextest {
        // nextest does not run doctests.
        run(cargo().args(["test", "--workspace", "--all-features", "--doc"]))?;
        run(cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]))?;
    } else {
        run(cargo().args(["test", "--workspace", "--all-features", "--no-fail-fast"]))?;
    }
    drop(garage);
    Ok(())
}

/// Runs the independent verifier on `path`, killed after `secs` seconds: a
/// verifier that blocks must fail the check, not hang it.
fn python_verify_within(secs: u32, path: &Path) -> Result<std::process::Output> {
    Command::new("timeout")
        .arg(secs.to_string())
        .arg(python())
        .arg(root().join("tests/independent_verify.py"))
        .arg(path)
        .output()
        .map_err(|e| format!("python: {e}"))
}

/// Writes a log with the `audit` binary and checks it, and the
/// seed fixtures, with the Python verifier written from docs/FORMAT.md.
fn independent_verify() -> Result {
    run(cargo().args(["build", "--bin", "audit"]))?;
    let work = root().join("target/xtask-independent");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let entries = std::fs::read(root().join("examples/entries.jsonl"))
        .map_err(|e| format!("examples/entries.jsonl: {e}"))?;
    let mut child = Command::new(root().join("target/debug/audit"))
        .args(["append"])
        .current_dir(&work)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run audit: {e}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        for _ in 0..20 {
            stdin
                .write_all(&entries)
                .map_err(|e| format!("audit append stdin: {e}"))?;
        }
    }
    let status = child.wait().map_err(|e| format!("audit append: {e}"))?;
    if !status.success() {
        return Err(format!("audit append failed: {status}"));
    }
    let fixtures = root().join("tests/fixtures/seed-format");
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/independent_verify.py"));
    for f in [
        "seed-basic.jsonl",
        "seed-floats.jsonl",
        "seed-restarts.jsonl",
    ] {
        cmd.arg(fixtures.join(f));
    }
    cmd.arg(work.join("audit-data/file"));
    run(&mut cmd)?;
    // A crash leaves preallocated zeros after the last record: not a torn line.
    let seg = work.join("audit-data/file/audit-00000000000000000001.jsonl");
    {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .and_then(|mut f| f.write_all(&vec![0u8; 1 << 20]))
            .map_err(|e| format!("{}: {e}", seg.display()))?;
    }
    let padded = Command::new(python())
        .arg(root().join("tests/independent_verify.py"))
        .arg(work.join("audit-data/file"))
        .output()
        .map_err(|e| format!("python: {e}"))?;
    let out = String::from_utf8_lossy(&padded.stdout);
    if !padded.status.success() || !out.contains("0 error(s), 0 warning(s)") {
        return Err(format!(
            "the independent verifier does not skip preallocated zeros: {padded:?}"
        ));
    }
    // The Python verifier must also catch tampering.
    let text = std::fs::read_to_string(&seg).map_err(|e| format!("{}: {e}", seg.display()))?;
    std::fs::write(&seg, text.replacen("agent-0", "agent-X", 1))
        .map_err(|e| format!("{}: {e}", seg.display()))?;
    let tampered = Command::new(python())
        .arg(root().join("tests/independent_verify.py"))
        .arg(work.join("audit-data/file"))
        .output()
        .map_err(|e| format!("python: {e}"))?;
    if tampered.status.code() != Some(1) {
        return Err(format!(
            "the independent verifier did not report tampering: {tampered:?}"
        ));
    }
    // The strictness corpus: both verifiers are held to expected.txt.
    strictness_corpus()?;
    log_corpus()?;
    // Mutated records the corpus does not list: both verifiers must agree.
    run(Command::new(python())
        .arg(root().join("tests/differential_fuzz.py"))
        .arg(root().join("target/debug/audit"))
        .args(["1", "2", "3"]))?;
    // A log extended to a terabyte of holes is read to its records, not through.
    let sparse = work.join("sparse.jsonl");
    std::fs::copy(fixtures.join("seed-basic.jsonl"), &sparse)
        .map_err(|e| format!("copy seed-basic.jsonl: {e}"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .and_then(|f| f.set_len(1 << 40))
        .map_err(|e| format!("{}: {e}", sparse.display()))?;
    let out = python_verify_within(120, &sparse)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("300 records") {
        return Err(format!(
            "the independent verifier did not skip a sparse tail: {out:?}"
        ));
    }
    let _ = std::fs::remove_file(&sparse);
    // A FIFO named like a segment is an error, not a read that never returns.
    let planted = work.join("fifo-log");
    std::fs::create_dir_all(&planted).map_err(|e| format!("{}: {e}", planted.display()))?;
    std::fs::copy(&seg, planted.join("audit-00000000000000000001.jsonl"))
        .map_err(|e| format!("copy {}: {e}", seg.display()))?;
    run(Command::new("mkfifo").arg(planted.join("audit-00000000000000000099.jsonl")))?;
    let fifo = python_verify_within(60, &planted)?;
    if fifo.status.code() != Some(1)
        || !String::from_utf8_lossy(&fifo.stdout).contains("not a regular file")
    {
        return Err(format!(
            "the independent verifier did not refuse a FIFO segment: {fifo:?}"
        ));
    }
    // Signed logs: checkpoints, the witness, tampering the chain cannot show.
    signed_log_check(&work)?;
    // Sealed logs, key rotations and witnesses built from FORMAT.md by the
    // Python tests themselves, independently of the writer.
    run(Command::new(python()).arg(root().join("tests/test_independent_verify.py")))?;
    eprintln!("independent verifier: 4 logs verify, preallocated zeros are skipped, tampering, malformed records and a FIFO segment are caught; signed logs agree with audit verify");
    Ok(())
}

/// The exit codes of `audit verify` and of the Python verifier on `log`
/// with the same options.
fn both_verifiers(
    log: &Path,
    args: &[&std::ffi::OsStr],
) -> Result<(Option<i32>, Option<i32>, String)> {
    let rust = Command::new(root().join("target/debug/audit"))
        .arg("verify")
        .arg(format!("file:{}", log.display()))
        .args(args)
        .output()
        .map_err(|e| format!("audit verify: {e}"))?;
    let py = Command::new("timeout")
        .arg("300")
        .arg(python())
        .arg(root().join("tests/independent_verify.py"))
        .arg(log)
        .args(args)
        .output()
        .map_err(|e| format!("python: {e}"))?;
    let out = format!(
        "audit verify:\n{}{}\nindependent_verify.py:\n{}{}",
        String::from_utf8_lossy(&rust.stdout),
        String::from_utf8_lossy(&rust.stderr),
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
    Ok((rust.status.code(), py.status.code(), out))
}

/// Writes a log with checkpoints and a witness with the `audit` binary (three
/// runs, so three witnessed checkpoints), verifies it with both verifiers and
/// the key, then tampers with it as someone without the key can and requires
/// both to fail.
fn signed_log_check(work: &Path) -> Result {
    let dir = work.join("signed");
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(|e| format!("{}: {e}", keys.display()))?;
    run(Command::new(root().join("target/debug/audit"))
        .args(["keygen", "--name", "xtask-host", "--out"])
        .arg(&keys))?;
    let config = dir.join("signed.toml");
    std::fs::write(
        &config,
        "[log.checkpoints]\nkey_file = \"keys/xtask-host.key\"\nlog_id = \"xtask-signed\"\nevery_records = 40\nwitness_dir = \"witness\"\n\n[[sinks]]\nkind = \"file\"\nname = \"file\"\ndir = \"log\"\n",
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let entries = std::fs::read(root().join("examples/entries.jsonl"))
        .map_err(|e| format!("examples/entries.jsonl: {e}"))?;
    for _ in 0..3 {
        let mut child = Command::new(root().join("target/debug/audit"))
            .arg("append")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run audit: {e}"))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().ok_or("no stdin")?;
            stdin
                .write_all(&entries)
                .map_err(|e| format!("audit append stdin: {e}"))?;
        }
        let status = child.wait().map_err(|e| format!("audit append: {e}"))?;
        if !status.success() {
            return Err(format!("audit append (signed) failed: {status}"));
        }
    }
    let log = dir.join("log");
    let key = keys.join("xtask-host.pub");
    let witness = dir.join("witness");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let with_key = [
        os("--public-key"),
        key.as_os_str(),
        os("--log-id"),
        os("xtask-signed"),
    ];
    let with_witness = [
        os("--public-key"),
        key.as_os_str(),
        os("--witness"),
        witness.as_os_str(),
    ];
    let mut all = with_key.to_vec();
    all.extend([
        os("--witness"),
        witness.as_os_str(),
        os("--max-age"),
        os("3600s"),
    ]);
    let expect = |what: &str, log: &Path, args: &[&std::ffi::OsStr], code: i32| -> Result {
        let (rust, py, out) = both_verifiers(log, args)?;
        if rust != Some(code) || py != Some(code) {
            return Err(format!(
                "{what}: expected exit {code} from both verifiers, got audit verify {rust:?}, Python {py:?}\n{out}"
            ));
        }
        Ok(())
    };
    expect("signed log", &log, &all, 0)?;
    expect("signed log, no key", &log, &[], 0)?;
    let other_id = [
        os("--public-key"),
        key.as_os_str(),
        os("--log-id"),
        os("another-log"),
    ];
    expect("signed log, another log id", &log, &other_id, 1)?;
    let tamper = |name: &str, args: &[&str]| -> Result<PathBuf> {
        let out = dir.join(name);
        run(Command::new(python())
            .arg(root().join("tests/tamper.py"))
            .arg(&log)
            .arg(&out)
            .args(args))?;
        Ok(out)
    };
    // A record of the second run edited and every hash after it recomputed:
    // a plain chain passes, the checkpoints after it do not.
    let edited = tamper("edited", &["--edit", "150"])?;
    expect("edited and rechained", &edited, &[], 0)?;
    expect("edited and rechained, with the key", &edited, &with_key, 1)?;
    // The same with the checkpoints after the edit dropped: the checkpoints
    // left verify, and the witness shows what is missing.
    let dropped = tamper("dropped", &["--edit", "150", "--drop-signed-after", "149"])?;
    expect(
        "edited, checkpoints dropped, with the witness",
        &dropped,
        &with_witness,
        1,
    )?;
    // An edit after the last signed record the attacker leaves, the signed
    // records after it dropped and the MAC seals kept: only the MAC key
    // tells the rechained tail is not the writer's.
    let mac = keys.join("xtask-host.mac");
    let mut with_mac = with_key.to_vec();
    with_mac.extend([os("--mac-key"), mac.as_os_str()]);
    expect("signed log, with the MAC key", &log, &with_mac, 0)?;
    let mac_tail = tamper("mac-tail", &["--edit", "280", "--drop-notes-after", "279"])?;
    expect(
        "edited after the signed records, MAC seals kept",
        &mac_tail,
        &with_key,
        0,
    )?;
    expect(
        "edited after the signed records, MAC seals kept, with the MAC key",
        &mac_tail,
        &with_mac,
        1,
    )?;
    // The tail cut at a record boundary before the last checkpoint.
    let cut = tamper("cut", &["--keep", "250"])?;
    expect("tail cut", &cut, &with_key, 0)?;
    expect("tail cut, with the witness", &cut, &with_witness, 1)?;
    eprintln!("independent verifier: a signed log verifies with both verifiers; an edit with the chain recomputed, dropped checkpoints, an edit under MAC seals (with the MAC key) and a cut tail fail both");
    Ok(())
}

/// Runs the Python verifier on each log of tests/fixtures/logs and compares
/// its verdict, records read and warnings with expected.txt.
fn log_corpus() -> Result {
    let dir = root().join("tests/fixtures/logs");
    let expected = std::fs::read_to_string(dir.join("expected.txt"))
        .map_err(|e| format!("{}: {e}", dir.join("expected.txt").display()))?;
    let mut wrong = Vec::new();
    let mut logs = 0;
    for row in expected.lines().filter(|l| !l.starts_with('#')) {
        logs += 1;
        let fields: Vec<&str> = row.split(' ').collect();
        let [name, verdict, records, warnings] = fields[..] else {
            return Err(format!("bad expected.txt row {row:?}"));
        };
        let out = Command::new(python())
            .arg(root().join("tests/independent_verify.py"))
            .arg(dir.join(name))
            .output()
            .map_err(|e| format!("python: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // "<path>: N records, C chain(s), head …, E error(s), W warning(s)"
        let summary = stdout.lines().next().unwrap_or_default();
        let count = |unit: &str| {
            summary
                .split(", ")
                .find_map(|part| part.split(": ").last()?.strip_suffix(unit))
                .unwrap_or("?")
                .to_string()
        };
        let got_verdict = match out.status.code() {
            Some(0) => "intact",
            Some(1) => "findings",
            _ => "failed",
        };
        let got = format!(
            "{got_verdict} {} {}",
            count(" records"),
            count(" warning(s)")
        );
        if got != format!("{verdict} {records} {warnings}") {
            wrong.push(format!(
                "{name}: expected {verdict} {records} {warnings}, got {got}\n{stdout}"
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(format!(
            "the independent verifier disagrees with tests/fixtures/logs/expected.txt:\n{}",
            wrong.join("\n")
        ));
    }
    eprintln!("independent verifier: all {logs} corpus logs match expected.txt");
    Ok(())
}

/// Runs the Python verifier over tests/fixtures/strictness/cases.jsonl, one
/// record at a time, and compares each verdict with expected.txt.
fn strictness_corpus() -> Result {
    let dir = root().join("tests/fixtures/strictness");
    let expected = std::fs::read_to_string(dir.join("expected.txt"))
        .map_err(|e| format!("{}: {e}", dir.join("expected.txt").display()))?;
    let out = Command::new(python())
        .arg(root().join("tests/independent_verify.py"))
        .arg("--lines")
        .arg(dir.join("cases.jsonl"))
        .output()
        .map_err(|e| format!("python: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the independent verifier failed on the strictness corpus: {out:?}"
        ));
    }
    let verdicts = String::from_utf8_lossy(&out.stdout);
    let mut got = verdicts.lines();
    let mut wrong = Vec::new();
    let mut cases = 0;
    for row in expected.lines().filter(|l| !l.starts_with('#')) {
        cases += 1;
        let (line, rest) = row
            .split_once(' ')
            .ok_or(format!("bad expected.txt row {row:?}"))?;
        let (name, verdict) = rest
            .split_once(' ')
            .ok_or(format!("bad expected.txt row {row:?}"))?;
        let verdict_line = got.next().unwrap_or("(missing)");
        let matches = verdict_line
            .split_once(' ')
            .is_some_and(|(n, v)| n == line && v.starts_with(verdict));
        if !matches {
            wrong.push(format!(
                "line {line} {name}: expected {verdict}, got {verdict_line}"
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(format!(
            "the independent verifier disagrees with tests/fixtures/strictness/expected.txt:\n{}",
            wrong.join("\n")
        ));
    }
    eprintln!("independent verifier: all {cases} strictness cases match expected.txt");
    Ok(())
}

/// Writes a log to Garage through the object sink, fetches its segments with
/// boto3 (an independent S3 client) and verifies them with the Python verifier.
fn independent_s3_check(env: &[(String, String)]) -> Result {
    let have = Command::new(python())
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        run(Command::new(python()).args(["-m", "pip", "install", "--quiet", "boto3"]))?;
    }
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let work = root().join("target/xtask-s3");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let config = work.join("s3.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\nkind = \"object\"\nname = \"s3\"\nservice = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\nprefix = \"independent\"\nlog_id = \"xtask\"\n",
            get("AUDIT_S3_BUCKET"),
            get("AUDIT_S3_ENDPOINT"),
            get("AUDIT_S3_REGION")
        ),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let entries = std::fs::read(root().join("examples/entries.jsonl"))
        .map_err(|e| format!("examples/entries.jsonl: {e}"))?;
    let mut child = Command::new(root().join("target/debug/audit"))
        .arg("append")
        .arg("--config")
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("audit append: {e}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        for _ in 0..5 {
            stdin
                .write_all(&entries)
                .map_err(|e| format!("audit append stdin: {e}"))?;
        }
    }
    let status = child.wait().map_err(|e| format!("audit append: {e}"))?;
    if !status.success() {
        return Err(format!("audit append to S3 failed: {status}"));
    }
    let fetched = work.join("fetched.jsonl");
    run(Command::new(python())
        .arg(root().join("tests/s3_fetch.py"))
        .arg(get("AUDIT_S3_BUCKET"))
        .arg("independent/xtask")
        .arg(&fetched)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))))?;
    run(Command::new(python())
        .arg(root().join("tests/independent_verify.py"))
        .arg(&fetched))?;
    eprintln!("independent S3 check: segments read with boto3 verify with the Python verifier");
    Ok(())
}

fn bench(quick: bool) -> Result {
    run(cargo().args(["build", "--release", "-p", "audit-bench"]))?;
    let table = root().join("target/bench-table.md");
    let mut cmd = Command::new(root().join("target/release/audit-bench"));
    cmd.current_dir(root()).arg("--markdown").arg(&table);
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)?;
    let figures =
        std::fs::read_to_string(&table).map_err(|e| format!("{}: {e}", table.display()))?;
    let doc = root().join("docs/BENCHMARKS.md");
    let old = std::fs::read_to_string(&doc).unwrap_or_default();
    let (start, end) = ("<!-- bench:start -->", "<!-- bench:end -->");
    let new = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{start}\n{figures}{}", &old[..a], &old[b..]),
        _ => format!("# Benchmarks\n\n{start}\n{figures}{end}\n"),
    };
    std::fs::write(&doc, new).map_err(|e| format!("{}: {e}", doc.display()))?;
    eprintln!("wrote {}", doc.display());
    Ok(())
}

fn ci() -> Result {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    test()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("bench") => bench(args.iter().any(|a| a == "--quick")),
        Some("ci") => ci(),
        Some("independent") => ensure_python_deps().and_then(|()| independent_verify()),
        _ => Err("usage: cargo xtask <test | independent | bench [--quick] | ci>".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
