//! Broken configs fail with errors that name the key.

use std::path::Path;

use auditlog::config::Config;

fn err(text: &str) -> String {
    Config::parse(text, Path::new("test.toml"), Default::default())
        .expect_err("config must be refused")
        .to_string()
}

const FILE_SINK: &str = "[[sinks]]\nkind = \"file\"\nname = \"f\"\ndir = \"d\"\n";

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            format!("[log]\nbatch_max_recordz = 5\n{FILE_SINK}"),
            "batch_max_recordz",
        ),
        (
            format!("[log]\nqueue_capacity = -1\n{FILE_SINK}"),
            "queue_capacity",
        ),
        (
            format!("[log]\nqueue_capacity = 0\n{FILE_SINK}"),
            "log.queue_capacity",
        ),
        (
            format!("[log]\nmin_durable_sinks = 2\n{FILE_SINK}"),
            "log.min_durable_sinks",
        ),
        (
            format!("[log]\ndefault_durability = \"maybe\"\n{FILE_SINK}"),
            "maybe",
        ),
        (format!("{FILE_SINK}sync = \"yes\"\n"), "sinks[0]"),
        (format!("{FILE_SINK}colour = \"blue\"\n"), "colour"),
        (
            "[[sinks]]\nkind = \"file\"\nname = \"f\"\n".to_string(),
            "dir",
        ),
        ("[[sinks]]\nname = \"f\"\ndir = \"d\"\n".to_string(), "kind"),
        (format!("{FILE_SINK}{FILE_SINK}"), "sinks[1].name"),
        (
            "[[sinks]]\nkind = \"tape\"\nname = \"t\"\n".to_string(),
            "sinks[0].kind",
        ),
        (
            "[[sinks]]\nkind = \"object\"\nname = \"s3\"\nlog_id = \"l\"\n".to_string(),
            "service",
        ),
        (
            "[[sinks]]\nkind = \"object\"\nname = \"s3\"\nlog_id = \"l\"\nservice = \"s3\"\n"
                .to_string(),
            "sinks[0].bucket",
        ),
        (
            "[[sinks]]\nkind = \"object\"\nname = \"s3\"\nlog_id = \"l\"\nservice = \"ftp\"\n"
                .to_string(),
            "sinks[0].service",
        ),
        (
            "[[sinks]]\nkind = \"sqlite\"\nname = \"s\"\npath = \"x.db\"\nsynchronous = \"off\"\n"
                .to_string(),
            "sinks[0].synchronous",
        ),
        (
            format!("{FILE_SINK}min_write_interval_ms = -5\n"),
            "min_write_interval_ms",
        ),
        ("sinks = []\n".to_string(), "sinks"),
        ("this is not toml".to_string(), "test.toml"),
    ];
    for (text, key) in cases {
        let e = err(&text);
        assert!(
            e.contains(key),
            "error for {text:?} does not name {key:?}: {e}"
        );
        assert!(e.contains("test.toml"), "error does not name the file: {e}");
    }
}

#[test]
fn examples_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let plan = auditlog::verify_plan(&config).expect("verify reads the same config");
            assert_eq!(plan.sources.len(), config.sinks.len());
            n += 1;
        }
    }
    assert!(n >= 2, "examples/ should hold config files");
    Config::embedded_default().expect("embedded default parses");
}

#[test]
fn rejoin_interval_is_read_and_zero_turns_it_off() {
    let parse = |log: &str| {
        Config::parse(
            &format!("[log]\n{log}\n{FILE_SINK}"),
            Path::new("test.toml"),
            Default::default(),
        )
        .expect("config")
        .writer_config()
        .expect("writer config")
        .rejoin_interval
    };
    assert_eq!(parse(""), Some(std::time::Duration::from_secs(30)));
    assert_eq!(
        parse("rejoin_interval_secs = 5"),
        Some(std::time::Duration::from_secs(5))
    );
    assert_eq!(parse("rejoin_interval_secs = 0"), None);
}

#[cfg(feature = "file")]
#[tokio::test]
async fn a_sinks_common_keys_reach_its_spec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[[sinks]]\nkind = \"file\"\nname = \"f\"\ndir = {:?}\ntimeout_ms = 700\nmin_write_interval_ms = 40\n\
         [[sinks]]\nkind = \"file\"\nname = \"g\"\nrole = \"optional\"\ndir = {:?}\n",
        dir.path().join("f"),
        dir.path().join("g"),
    );
    let config = Config::parse(&text, Path::new("test.toml"), Default::default()).expect("config");
    let specs = auditlog::open_sinks(&config).await.expect("sinks");
    let ms = std::time::Duration::from_millis;
    let got: Vec<_> = specs
        .iter()
        .map(|s| {
            (
                s.sink.name().to_string(),
                s.role,
                s.timeout,
                s.min_write_interval,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("f".to_string(), audit_core::Role::Required, ms(700), ms(40)),
            ("g".to_string(), audit_core::Role::Optional, ms(5000), ms(0)),
        ]
    );
}

#[cfg(feature = "object")]
#[test]
fn the_object_lease_ttl_is_a_config_key() {
    let text = "[[sinks]]\nkind = \"object\"\nname = \"o\"\nservice = \"memory\"\nlog_id = \"l\"\nlease_ttl_ms = 600000\n";
    let config = Config::parse(text, Path::new("test.toml"), Default::default()).expect("parse");
    let auditlog::config::Backend::Object(o) = config.backend(0).expect("backend") else {
        panic!("not an object sink");
    };
    let c = auditlog::object_config(&config, "o", &o).expect("object config");
    assert_eq!(c.lease_ttl, std::time::Duration::from_secs(600));
    // Without the key, the default.
    let text = text.replace("lease_ttl_ms = 600000\n", "");
    let config = Config::parse(&text, Path::new("test.toml"), Default::default()).expect("parse");
    let auditlog::config::Backend::Object(o) = config.backend(0).expect("backend") else {
        panic!("not an object sink");
    };
    let c = auditlog::object_config(&config, "o", &o).expect("object config");
    assert_eq!(c.lease_ttl, std::time::Duration::from_secs(30));
}

/// `audit verify --config` had its own lax reader that ignored typos
/// CONFIG.md calls errors: a config is read one way, by `audit append`'s
/// parser, and the standalone `audit-verify` refuses `--config` rather than
/// read it another way.
#[test]
fn verify_reads_a_config_as_append_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[sinks]]\nkind = \"file\"\nname = \"f\"\ndir = \"log\"\n",
    )
    .expect("write");
    let append = std::process::Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(["append", "--config"])
        .arg(&good)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"{\"agent_id\":\"a\"}\n")?;
            c.wait()
        })
        .expect("append");
    assert!(append.success());
    let verify = |config: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_audit"))
            .args(["verify", "--config"])
            .arg(config)
            .output()
            .expect("verify")
    };
    assert_eq!(verify(&good).status.code(), Some(0));
    for (text, key) in [
        (
            "[[sinks]]\nkind = \"file\"\nname = \"f\"\ndir = \"log\"\nmax_segment_byte = 5\n",
            "max_segment_byte",
        ),
        (
            "[log]\nbatch_max_recordz = 5\n[[sinks]]\nkind = \"file\"\nname = \"f\"\ndir = \"log\"\n",
            "batch_max_recordz",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).expect("write");
        let out = verify(&bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(key) && err.contains("bad.toml"), "{err}");
    }
}
