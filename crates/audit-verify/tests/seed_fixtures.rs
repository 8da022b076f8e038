//! The seed fixtures verify as their README says.

use std::path::PathBuf;

use audit_verify::{verify, FindingClass, Severity, Source, VerifyOptions};

fn fixture(name: &str) -> Source {
    Source::File(PathBuf::from(format!(
        "{}/../../tests/fixtures/seed-format/{name}",
        env!("CARGO_MANIFEST_DIR")
    )))
}

#[tokio::test]
async fn seed_basic_is_intact() {
    let r = verify(&[fixture("seed-basic.jsonl")], &VerifyOptions::default())
        .await
        .expect("verify");
    let s = &r.sources[0];
    assert!(r.ok && s.findings.is_empty(), "{}", r.human());
    assert_eq!(
        (s.records, s.first_seq, s.last_seq, s.chains),
        (300, Some(1), Some(300), 1)
    );
}

#[tokio::test]
async fn seed_floats_verify_byte_exact() {
    let r = verify(&[fixture("seed-floats.jsonl")], &VerifyOptions::default())
        .await
        .expect("verify");
    assert!(r.ok && r.sources[0].findings.is_empty(), "{}", r.human());
    assert_eq!(r.sources[0].records, 200);
}

#[tokio::test]
async fn seed_restarts_warn_on_each_unanchored_genesis() {
    let r = verify(&[fixture("seed-restarts.jsonl")], &VerifyOptions::default())
        .await
        .expect("verify");
    let s = &r.sources[0];
    assert!(r.ok, "{}", r.human());
    assert_eq!((s.records, s.chains), (300, 3));
    let restarts: Vec<_> = s
        .findings
        .iter()
        .filter(|f| f.class == FindingClass::Restart)
        .collect();
    assert_eq!(restarts.len(), 2, "{}", r.human());
    assert!(restarts.iter().all(|f| f.severity == Severity::Warning));
    assert_eq!(s.findings.len(), 2);
    let strict = verify(
        &[fixture("seed-restarts.jsonl")],
        &VerifyOptions {
            strict: true,
            ..VerifyOptions::default()
        },
    )
    .await
    .expect("verify");
    assert!(!strict.ok);
}
