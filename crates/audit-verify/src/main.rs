//! `audit-verify`: check auditlog chains from the command line.

use clap::Parser;

/// Check an audit log's hash chain, name any tampering, and compare copies.
/// Exit status: 0 intact, 1 integrity findings, 2 unreadable source or bad usage.
#[derive(Debug, Parser)]
#[command(name = "audit-verify", version)]
struct Cli {
    #[command(flatten)]
    args: audit_verify::cli::VerifyArgs,
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("audit-verify: cannot start the runtime: {e}");
            std::process::exit(audit_verify::cli::EXIT_ERROR);
        }
    };
    let code = rt.block_on(audit_verify::cli::run(cli.args));
    std::process::exit(code);
}
