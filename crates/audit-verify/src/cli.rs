//! The command line shared by `audit-verify` and `audit verify`.

use std::path::PathBuf;

use crate::{verify, ConfigChecks, Source, VerifyError, VerifyOptions};

/// What a config file gives a verification: its sinks as sources and its
/// `[log.checkpoints]` as checks. The `audit` binary builds it with the same
/// parser `audit append` uses, so a config is read one way only.
#[derive(Debug, Clone, Default)]
pub struct FromConfig {
    /// Every sink of the config, as a source.
    pub sources: Vec<Source>,
    /// The checkpoint key's public half (and the previous one's), the
    /// witness directory and the log id.
    pub checks: ConfigChecks,
}

/// Arguments of `audit-verify` / `audit verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Logs to check: `file:PATH` (a file or a segment directory),
    /// `sqlite:PATH`, or a bare path (a file). Several are compared.
    pub sources: Vec<String>,
    /// Check every sink named in this config file, with its checkpoint key,
    /// witness and log id (`audit verify` only: it reads the config as
    /// `audit append` does).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the report as JSON (schema in docs/VERIFY.md).
    #[arg(long)]
    pub json: bool,
    /// Treat unanchored `genesis` restarts in seed-format files, and records
    /// after the last signature (with `--public-key`), as errors.
    #[arg(long)]
    pub strict: bool,
    /// A trusted checkpoint key (a file holding `name+id+key`, as written by
    /// `audit keygen`). Repeat for several. Checks every signed checkpoint.
    #[arg(long = "public-key", value_name = "FILE")]
    pub public_keys: Vec<PathBuf>,
    /// A MAC key (a file holding `SEAL+MAC+…`, as `audit keygen` writes to
    /// `<name>.mac`, or the private key itself): also checks the MAC seals
    /// between signed seals, so the records after the last signed seal are
    /// checked too. Repeat for several. Needs `--public-key`.
    #[arg(long = "mac-key", value_name = "FILE")]
    pub mac_keys: Vec<PathBuf>,
    /// A witness directory of checkpoint notes: catches a log cut before its
    /// latest witnessed checkpoint.
    #[arg(long, value_name = "DIR")]
    pub witness: Option<PathBuf>,
    /// The log's identity: every checkpoint, seal, rotation and witness note
    /// must name it (with `--public-key`).
    #[arg(long, value_name = "ID")]
    pub log_id: Option<String>,
    /// The newest valid checkpoint must be younger than this, e.g. `90s`,
    /// `15m`, `2h` (with `--public-key`; heartbeats keep an idle log fresh).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_age: Option<std::time::Duration>,
}

/// Exit status: the log is intact.
pub const EXIT_OK: i32 = 0;
/// Exit status: integrity findings.
pub const EXIT_FINDINGS: i32 = 1;
/// Exit status: could not read a source, or bad usage.
pub const EXIT_ERROR: i32 = 2;

/// Runs a verification, prints the report, and returns the exit status.
/// `--config` is refused here: see [`run_with`].
pub async fn run(args: VerifyArgs) -> i32 {
    run_with(args, None).await
}

/// [`run`] with what the caller read from `--config`, or from its default
/// config when no source is named (the `audit` binary, whose config parser
/// is the writer's).
pub async fn run_with(args: VerifyArgs, config: Option<FromConfig>) -> i32 {
    match run_inner(&args, config).await {
        Ok(report) => {
            let text = if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => s + "\n",
                    Err(e) => {
                        complain(&format!("cannot render the report: {e}"));
                        return EXIT_ERROR;
                    }
                }
            } else {
                report.human()
            };
            // A verdict nobody could read is no verdict: an unwritable
            // stdout is an error, not a panic and not a silent 0.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                complain(&format!("cannot write the report: {e}"));
                return EXIT_ERROR;
            }
            if report.ok {
                EXIT_OK
            } else {
                EXIT_FINDINGS
            }
        }
        Err(e) => {
            complain(&e.to_string());
            EXIT_ERROR
        }
    }
}

/// A message on stderr; if stderr cannot be written either, the exit status
/// still tells.
fn complain(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "audit-verify: {message}");
}

async fn run_inner(
    args: &VerifyArgs,
    config: Option<FromConfig>,
) -> Result<crate::Report, VerifyError> {
    let mut sources = Vec::new();
    let mut from_config = ConfigChecks::default();
    let configured = config.is_some();
    match (&args.config, config) {
        (_, Some(c)) => {
            sources.extend(c.sources);
            from_config = c.checks;
        }
        (Some(path), None) => {
            // A second, laxer reading of the config would verify something
            // other than what `audit append` writes.
            return Err(VerifyError::Usage(format!(
                "--config {}: audit-verify reads no config; `audit verify --config {}` reads it as `audit append` does",
                path.display(),
                path.display()
            )));
        }
        (None, _) => {}
    }
    for s in &args.sources {
        sources.push(Source::parse(s)?);
    }
    if sources.is_empty() {
        return Err(VerifyError::Usage(
            "give at least one source or --config FILE".into(),
        ));
    }
    let mut public_keys = Vec::new();
    for path in &args.public_keys {
        // A regular file only: a FIFO given as the key must not hang verify.
        let text = crate::witness::read_regular(path).map_err(|e| {
            VerifyError::Usage(format!(
                "public key: {}",
                e.replacen("witness note ", "", 1)
            ))
        })?;
        let key = audit_core::checkpoint::PublicKey::from_vkey(&text)
            .map_err(|e| VerifyError::Usage(format!("public key {}: {e}", path.display())))?;
        public_keys.push(key);
    }
    let mut mac_keys = Vec::new();
    let mut writer_mac_keys = Vec::new();
    for path in &args.mac_keys {
        let text = crate::witness::read_regular(path).map_err(|e| {
            VerifyError::Usage(format!("MAC key: {}", e.replacen("witness note ", "", 1)))
        })?;
        let key = audit_core::seal_mac::SealMacKey::from_text(&text)
            .or_else(|e| {
                audit_core::checkpoint::KeyPair::from_private_string(&text)
                    .map(|k| {
                        writer_mac_keys.push(k.writer_mac_key());
                        k.seal_mac_key()
                    })
                    .map_err(|_| e)
            })
            .map_err(|e| VerifyError::Usage(format!("MAC key {}: {e}", path.display())))?;
        mac_keys.push(key);
    }
    // What the command line names wins; otherwise the config's checkpoint
    // key, witness and log id, as the writer uses them.
    if public_keys.is_empty() {
        public_keys = from_config.keys;
        if mac_keys.is_empty() {
            mac_keys = from_config.mac_keys;
            writer_mac_keys = from_config.writer_mac_keys;
        }
    }
    // A MAC key checks the seals of its own key only: one whose key is not
    // trusted would check nothing, silently.
    if let Some(k) = mac_keys
        .iter()
        .find(|k| !public_keys.iter().any(|p| k.belongs_to(p)))
    {
        return Err(VerifyError::Usage(format!(
            "MAC key {}+{} belongs to none of the trusted keys; give its key with --public-key",
            k.name(),
            k.id_hex()
        )));
    }
    let options = VerifyOptions {
        public_keys,
        mac_keys,
        writer_mac_keys,
        witness: args.witness.clone().or(from_config.witness),
        log_id: args.log_id.clone().or(from_config.log_id),
        max_age: args.max_age,
        strict: args.strict,
        progress: !args.json,
        written_by_auditlog: configured,
        ..VerifyOptions::default()
    };
    verify(&sources, &options).await
}
