//! `audit`: append to, verify, query and resync an audit log.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use auditlog::config::{Backend, Config};
use auditlog::AuditEntry;
use clap::{Parser, Subcommand};

/// A tamper-evident audit log.
#[derive(Debug, Parser)]
#[command(name = "audit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append entries read as JSON lines on stdin.
    ///
    /// Exit status: 0 all appended, 1 some lines rejected, 2 the log could not
    /// be opened, 3 some entries were not durable under the configured policy.
    Append {
        /// The config file; without it, a file sink and a SQLite sink under ./audit-data/.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print `{"seq":N,"hash":"…"}` per entry once it is durable, in input order.
        #[arg(long)]
        receipts: bool,
    },
    /// Check chains and compare copies (the same as `audit-verify`). Without
    /// sources or --config, checks the embedded default's sinks.
    Verify(audit_verify::cli::VerifyArgs),
    /// Query the SQLite sink's indexed columns.
    Query(QueryArgs),
    /// Write a new Ed25519 checkpoint key pair: NAME.key (mode 0600), NAME.pub,
    /// and NAME.mac, the key that checks MAC seals (mode 0600).
    Keygen {
        /// The key's name, shown in every signature line (e.g. a host name).
        #[arg(long)]
        name: String,
        /// The directory to write the three files into.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Start the log once: backfill every sink that is behind, then stop.
    Resync {
        /// The config file; without it, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// `sqlite:PATH` or a database path; without it, the config's SQLite sink.
    source: Option<String>,
    /// The config file whose SQLite sink to query.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// agent_id equals.
    #[arg(long)]
    agent: Option<String>,
    /// tool_called equals.
    #[arg(long)]
    tool: Option<String>,
    /// authorization_decision equals.
    #[arg(long)]
    decision: Option<String>,
    /// request_id equals.
    #[arg(long)]
    request_id: Option<String>,
    /// task_session_id equals.
    #[arg(long)]
    session: Option<String>,
    /// At or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// At most this many results.
    #[arg(long, default_value_t = 1000)]
    limit: u64,
    /// One JSON object per result.
    #[arg(long)]
    json: bool,
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Config::embedded_default().map_err(|e| e.to_string()),
    }
}

/// Writes a line to stderr. Never panics: with stderr closed or on a full
/// disk there is nowhere to report that, and what the command did (and its
/// exit status) must not depend on it, as `eprintln!` would make it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("audit: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Append { config, receipts } => append(config.as_ref(), receipts).await,
            Command::Verify(args) => {
                // The config is read here, by the parser `audit append` uses;
                // without sources or --config, the embedded default's sinks.
                let config = match (&args.config, args.sources.is_empty()) {
                    (Some(path), _) => Some(Config::load(path)),
                    (None, true) => Some(Config::embedded_default()),
                    (None, false) => None,
                };
                let plan = match config.map(|c| c.and_then(|c| auditlog::verify_plan(&c))) {
                    Some(Ok(plan)) => Some(plan),
                    Some(Err(e)) => {
                        say!("audit verify: {e}");
                        return 2;
                    }
                    None => None,
                };
                audit_verify::cli::run_with(args, plan).await
            }
            Command::Query(q) => query(q).await,
            Command::Resync { config } => resync(config.as_ref()).await,
            Command::Keygen { name, out } => keygen(&name, &out),
        }
    });
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

async fn append(config: Option<&PathBuf>, print_receipts: bool) -> i32 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => {
            say!("audit append: {e}");
            return 2;
        }
    };
    let max_line = config.log.max_record_bytes;
    let log = match auditlog::open(&config).await {
        Ok(l) => l,
        Err(e) => {
            say!("audit append: {e}");
            return 2;
        }
    };
    // stdin is read on a blocking thread; parsed entries come back in order.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Result<AuditEntry, String>)>(4096);
    let reader = tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        let mut input = std::io::BufReader::with_capacity(1 << 20, stdin.lock());
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            line_no += 1;
            let read = read_line_bounded(&mut input, max_line, &mut buf);
            let item = match read {
                Ok(None) => break,
                Ok(Some(true)) => Err(format!("longer than the {max_line}-byte record limit")),
                Ok(Some(false)) => {
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match std::str::from_utf8(&buf) {
                        Err(e) => Err(format!("not UTF-8 at byte {}", e.valid_up_to())),
                        Ok(text) => parse_entry(text),
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send((line_no, Err(format!("cannot read stdin: {e}"))));
                    break;
                }
            };
            if tx.blocking_send((line_no, item)).is_err() {
                break;
            }
        }
    });
    let mut inflight = std::collections::VecDeque::new();
    let (mut appended, mut rejected, mut failed) = (0u64, 0u64, 0u64);
    let mut range: Option<(u64, u64)> = None;
    let mut out = std::io::stdout().lock();
    // The first receipt that could not be printed: the entries stay durable,
    // but whoever reads the receipts did not get them, so the exit says so.
    let mut unprinted: Option<(u64, std::io::Error)> = None;
    let mut settle =
        |result: Result<auditlog::Receipt, audit_core::AppendError>, line: u64| match result {
            Ok(r) => {
                appended += 1;
                range = Some(range.map_or((r.seq, r.seq), |(a, b)| (a.min(r.seq), b.max(r.seq))));
                if print_receipts && unprinted.is_none() {
                    use std::io::Write;
                    // Flushed per receipt: a producer streaming into stdin
                    // waits for each one.
                    if let Err(e) = writeln!(out, "{{\"seq\":{},\"hash\":\"{}\"}}", r.seq, r.hash)
                        .and_then(|()| out.flush())
                    {
                        unprinted = Some((line, e));
                    }
                }
            }
            Err(e) => {
                failed += 1;
                say!("line {line}: not appended: {e}");
            }
        };
    // Receipts are settled in input order as soon as each is durable, so a
    // producer streaming into stdin gets them while it streams, not at EOF.
    #[allow(clippy::large_enum_variant)] // one transient value per line, never stored
    enum Step {
        Settled(Result<auditlog::Receipt, audit_core::AppendError>),
        Input(Option<(u64, Result<AuditEntry, String>)>),
    }
    let mut input_open = true;
    loop {
        let can_read = input_open && inflight.len() < MAX_IN_FLIGHT;
        let step = match inflight.front_mut() {
            Some((_, pending)) => tokio::select! {
                biased;
                result = pending => Step::Settled(result),
                item = rx.recv(), if can_read => Step::Input(item),
            },
            None if input_open => Step::Input(rx.recv().await),
            None => break,
        };
        match step {
            Step::Settled(result) => {
                if let Some((line, _)) = inflight.pop_front() {
                    settle(result, line);
                }
            }
            Step::Input(None) => input_open = false,
            Step::Input(Some((line, Err(reason)))) => {
                rejected += 1;
                say!("line {line}: rejected: {reason}");
            }
            // Queued in input order, so sequence numbers follow the input.
            Step::Input(Some((line, Ok(entry)))) => match log.enqueue(&entry).await {
                Ok(pending) => inflight.push_back((line, pending)),
                Err(e) => settle(Err(e), line),
            },
        }
    }
    let _ = reader.await;
    log.close().await;
    let span = range.map_or_else(String::new, |(a, b)| format!(" (sequences {a}..{b})"));
    say!("audit append: {appended} appended{span}, {rejected} rejected, {failed} not durable");
    if let Some((line, e)) = unprinted {
        say!("audit append: cannot write the receipt of line {line} (or any after it) to stdout: {e}; the entries were appended");
        return 4;
    }
    if failed > 0 {
        3
    } else if rejected > 0 {
        1
    } else {
        0
    }
}

/// Parses one input line as an entry. An entry may nest as deep as the API
/// accepts (`arguments` up to [`audit_core::MAX_NESTING`] levels), which is
/// one level more than serde_json's default limit counts with the entry's own
/// object; the depth is checked first, so lifting that limit cannot exhaust
/// the stack.
/// Appends `audit append` keeps queued before it waits for the oldest one's
/// receipt: enough to fill the writer's batches from a single input stream.
const MAX_IN_FLIGHT: usize = 4096;

fn parse_entry(text: &str) -> Result<AuditEntry, String> {
    let max = audit_core::MAX_NESTING + 1;
    if audit_core::arguments::nesting_exceeds(text.as_bytes(), max) {
        return Err(format!(
            "nested more than {} levels below the entry",
            audit_core::MAX_NESTING
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let entry =
        <AuditEntry as serde::Deserialize>::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(entry)
}

/// Reads one line into `buf` keeping at most `max` bytes. `Ok(None)` at end of
/// input, `Ok(Some(true))` for a line over the limit (consumed, not kept).
fn read_line_bounded<R: BufRead>(
    r: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    let mut total = 0usize;
    let mut over = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if total == 0 { None } else { Some(over) });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !over {
            if total + take > max {
                over = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        total += take;
        r.consume(take + usize::from(done));
        if done {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(over));
        }
    }
}

fn parse_time(flag: &str, v: &Option<String>) -> Result<Option<i64>, String> {
    v.as_ref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("--{flag} {s:?}: not an RFC 3339 time: {e}"))
                .and_then(|t| {
                    t.timestamp_nanos_opt()
                        .ok_or_else(|| format!("--{flag} {s:?}: out of range"))
                })
        })
        .transpose()
}

#[cfg(not(feature = "sqlite"))]
async fn query(_: QueryArgs) -> i32 {
    say!("audit query: this build does not have auditlog's `sqlite` feature");
    2
}

#[cfg(feature = "sqlite")]
async fn query(q: QueryArgs) -> i32 {
    let run = async {
        let path = match (&q.source, &q.config) {
            (Some(s), _) => PathBuf::from(s.strip_prefix("sqlite:").unwrap_or(s)),
            (None, config) => {
                let config = load_config(config.as_ref())?;
                let mut found = None;
                for i in 0..config.sinks.len() {
                    if let Backend::Sqlite(o) = config.backend(i).map_err(|e| e.to_string())? {
                        found = Some(config.resolve(&o.path));
                        break;
                    }
                }
                found.ok_or_else(|| "the config has no sqlite sink to query".to_string())?
            }
        };
        let query = sink_sqlite::Query {
            agent: q.agent.clone(),
            tool: q.tool.clone(),
            decision: q.decision.clone(),
            request_id: q.request_id.clone(),
            task_session_id: q.session.clone(),
            since_ns: parse_time("since", &q.since)?,
            until_ns: parse_time("until", &q.until)?,
            // One more than asked, to tell whether the limit cut the results.
            limit: Some(q.limit.saturating_add(1)),
        };
        let log = sink_sqlite::SqliteLog::open_read_only(&path)
            .await
            .map_err(|e| e.to_string())?;
        log.query(&query).await.map_err(|e| e.to_string())
    };
    match run.await {
        Ok(mut rows) => {
            use std::io::Write;
            let cut = usize::try_from(q.limit).is_ok_and(|limit| rows.len() > limit);
            if cut {
                rows.truncate(usize::try_from(q.limit).unwrap_or(usize::MAX));
            }
            let mut out = std::io::stdout().lock();
            for r in &rows {
                let written = if q.json {
                    // The record as stored, byte for byte (a `RawValue` is
                    // written verbatim; a `Value` would sort its members and
                    // respell its numbers), so it can be re-hashed.
                    #[derive(serde::Serialize)]
                    struct Line<'a> {
                        seq: u64,
                        record_hash: &'a str,
                        record: &'a serde_json::value::RawValue,
                    }
                    // Only text that is exactly one JSON value can be printed
                    // verbatim inside the line; anything else is reported.
                    let parsed = std::str::from_utf8(&r.record)
                        .map_err(|e| e.to_string())
                        .and_then(|t| {
                            serde_json::from_str::<&serde_json::value::RawValue>(t)
                                .map_err(|e| e.to_string())
                        });
                    let record = match parsed {
                        Ok(raw) if raw.get().as_bytes() == r.record.as_slice() => raw,
                        Ok(_) => {
                            say!("audit query: row {} holds text around its JSON, not a record as written; run audit verify", r.seq);
                            return 1;
                        }
                        Err(e) => {
                            say!("audit query: row {} does not hold a JSON record ({e}); run audit verify", r.seq);
                            return 1;
                        }
                    };
                    let line = Line {
                        seq: r.seq,
                        record_hash: &r.record_hash,
                        record,
                    };
                    serde_json::to_writer(&mut out, &line)
                        .map_err(std::io::Error::from)
                        .and_then(|()| writeln!(out))
                } else {
                    let v: serde_json::Value =
                        serde_json::from_slice(&r.record).unwrap_or_default();
                    // Fields come from the log: escaped, so a record cannot
                    // drive the terminal.
                    let field = |k: &str| {
                        audit_verify::escape_terminal(
                            v.get(k).and_then(|x| x.as_str()).unwrap_or("-"),
                        )
                        .into_owned()
                    };
                    writeln!(
                        out,
                        "{:>10}  {}  {}  {:<12} {:<16} {:<6} {}",
                        r.seq,
                        &r.record_hash[..16.min(r.record_hash.len())],
                        field("timestamp"),
                        field("agent_id"),
                        field("tool_called"),
                        field("authorization_decision"),
                        field("request_id"),
                    )
                };
                if let Err(e) = written {
                    say!("audit query: cannot write the results: {e}");
                    return 2;
                }
            }
            if let Err(e) = out.flush() {
                say!("audit query: cannot write the results: {e}");
                return 2;
            }
            if cut {
                say!(
                    "{} result(s); stopped at --limit {}: more records match",
                    rows.len(),
                    q.limit
                );
            } else {
                say!("{} result(s)", rows.len());
            }
            0
        }
        Err(e) => {
            say!("audit query: {e}");
            2
        }
    }
}

async fn resync(config: Option<&PathBuf>) -> i32 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => {
            say!("audit resync: {e}");
            return 2;
        }
    };
    match auditlog::open(&config).await {
        Ok(log) => {
            let health = log.health();
            log.close().await;
            for s in &health.sinks {
                say!(
                    "{}: {:?}, holds records 1..{}",
                    s.name,
                    s.state,
                    s.durable_seq
                );
            }
            if health
                .sinks
                .iter()
                .any(|s| s.durable_seq != health.head_seq)
            {
                say!(
                    "audit resync: some sinks are still behind head {}",
                    health.head_seq
                );
                1
            } else {
                say!(
                    "audit resync: every sink holds the chain up to {}",
                    health.head_seq
                );
                0
            }
        }
        Err(e) => {
            say!("audit resync: {e}");
            2
        }
    }
}

/// The file name stem for a key named `name`. A signed-note key name may
/// hold `/` (an origin such as `example.com/log`) or be `..`, so it is
/// percent-encoded (`/`, `\`, `%` and a leading `.`), which keeps the files
/// inside `--out` and gives distinct names distinct files.
fn key_file_stem(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const FILE_NAME: &AsciiSet = &CONTROLS.add(b'/').add(b'\\').add(b'%');
    let stem = utf8_percent_encode(name, FILE_NAME).to_string();
    match stem.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => stem,
    }
}

fn keygen(name: &str, out: &std::path::Path) -> i32 {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = match audit_core::checkpoint::KeyPair::generate(name) {
        Ok(k) => k,
        Err(e) => {
            say!("audit keygen: {e}");
            return 2;
        }
    };
    let stem = key_file_stem(name);
    let private = out.join(format!("{stem}.key"));
    let public = out.join(format!("{stem}.pub"));
    let mac = out.join(format!("{stem}.mac"));
    let write = |path: &std::path::Path, mode: u32, text: &str| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    if let Err(e) = write(&private, 0o600, &key.to_private_string()) {
        say!("audit keygen: {}: {e}", private.display());
        return 2;
    }
    if let Err(e) = write(&public, 0o644, &key.public().to_vkey()) {
        say!("audit keygen: {}: {e}", public.display());
        return 2;
    }
    // Secret too: it checks the MAC seals, and so could forge them.
    if let Err(e) = write(&mac, 0o600, &key.seal_mac_key().to_text()) {
        say!("audit keygen: {}: {e}", mac.display());
        return 2;
    }
    {
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), "{}", key.public().to_vkey()) {
            say!("audit keygen: cannot write the verifier key to stdout: {e} (the key files were written)");
            return 2;
        }
    }
    say!(
        "wrote {} (private, mode 0600), {} and {} (the seals' MAC key, for auditors; mode 0600); key ID {}",
        private.display(),
        public.display(),
        mac.display(),
        key.public().id_hex()
    );
    0
}

#[cfg(test)]
mod tests {
    use audit_core::arguments::nesting_exceeds as json_depth_exceeds;

    /// The depth serde_json sees in a valid JSON text.
    fn parsed_depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(parsed_depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(parsed_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn the_depth_scan_agrees_with_the_parser() {
        let cases = [
            r#"1"#,
            r#"[]"#,
            r#"[[],[[]]]"#,
            r#"{"a":"]]]","b":[{"c":"[["}]}"#,
            r#"["\"[[[\"",[1]]"#,
            r#"["\\",[[2]]]"#,
            r#"{"\\\"{":{"k":"\\\\\"}}}"}}"#,
            r#"{"a":[{"b":[{"c":[]}]}]}"#,
        ];
        for text in cases {
            let value: serde_json::Value = serde_json::from_str(text).expect(text);
            let depth = parsed_depth(&value);
            assert!(!json_depth_exceeds(text.as_bytes(), depth), "{text}");
            if depth > 0 {
                assert!(json_depth_exceeds(text.as_bytes(), depth - 1), "{text}");
            }
        }
    }
}
