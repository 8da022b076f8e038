//! Starts a loopback Garage for the test suite, writes its S3 settings as
//! `KEY=VALUE` lines to the file given as the second argument, and keeps it
//! running until standard input closes. Used by `cargo xtask test`.

use std::io::Read;
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(env_file)) = (args.next(), args.next()) else {
        eprintln!("usage: garage-for-tests WORK_DIR ENV_FILE");
        std::process::exit(2);
    };
    let Some(bin) = sink_object::garage::find_binary() else {
        eprintln!(
            "garage-for-tests: no garage binary; install it with `cargo install garage --locked`"
        );
        std::process::exit(3);
    };
    let garage = match sink_object::garage::Garage::start(&bin, &PathBuf::from(dir)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("garage-for-tests: {e}");
            std::process::exit(1);
        }
    };
    let mut text: String = garage
        .env()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    text.push_str(&format!("AUDIT_GARAGE_BIN={}\n", bin.display()));
    if let Err(e) = std::fs::write(&env_file, text) {
        eprintln!("garage-for-tests: {env_file}: {e}");
        std::process::exit(1);
    }
    eprintln!("garage-for-tests: S3 endpoint {} ready", garage.endpoint);
    // Block until the parent closes our stdin (or dies); then Drop stops Garage.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(garage);
}
