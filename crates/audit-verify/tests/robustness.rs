//! Hostile input: huge lines, binary garbage, files cut mid-line, random bytes.

use std::io::Write;

use audit_verify::{verify, FindingClass, Source, VerifyOptions};
use proptest::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_line_is_a_finding_not_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.jsonl");
    let mut f = std::fs::File::create(&path).expect("create");
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..100 {
        f.write_all(&chunk).expect("write");
    }
    f.write_all(b"\n\x00\x01\x02\xff binary\n").expect("write");
    drop(f);
    let r = verify(&[Source::File(path)], &VerifyOptions::default())
        .await
        .expect("verify");
    let s = &r.sources[0];
    assert!(!r.ok);
    assert!(
        s.findings
            .iter()
            .any(|f| f.class == FindingClass::Malformed && f.detail.contains("104857600 bytes")),
        "{}",
        r.human()
    );
    assert_eq!(s.findings.len(), 2, "{}", r.human());
}

#[tokio::test]
async fn missing_source_is_an_error_not_a_finding() {
    let err = verify(
        &[Source::File("/nonexistent/audit".into())],
        &VerifyOptions::default(),
    )
    .await
    .expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/audit"), "{err}");
    assert!(Source::parse("s3x://bucket").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_and_mutated_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..4096), cut in 0usize..4096, fixture_mix in any::<bool>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        let mut bytes = if fixture_mix {
            let mut f = std::fs::read(format!("{}/../../tests/fixtures/seed-format/seed-basic.jsonl", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
            f.truncate(cut.min(f.len()) + 2000);
            f
        } else {
            Vec::new()
        };
        let at = cut.min(bytes.len());
        bytes.splice(at..at, data);
        std::fs::write(&path, &bytes).expect("write");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let report = rt.block_on(verify(&[Source::File(path)], &VerifyOptions::default())).expect("verify runs");
        prop_assert_eq!(report.sources.len(), 1);
    }
}

/// Records with correct hashes that only strictness refuses; the Python
/// verifier is run on the same files by `cargo xtask test`.
#[tokio::test]
async fn lone_surrogates_and_nan_are_malformed() {
    for (name, detail) in [
        ("lone-surrogate.jsonl", "unpaired UTF-16 surrogate"),
        ("nan.jsonl", "invalid JSON"),
    ] {
        let path = std::path::PathBuf::from(format!(
            "{}/../../tests/fixtures/malformed/{name}",
            env!("CARGO_MANIFEST_DIR")
        ));
        let r = audit_verify::verify(
            &[audit_verify::Source::File(path)],
            &audit_verify::VerifyOptions::default(),
        )
        .await
        .expect("verify");
        let findings = &r.sources[0].findings;
        assert!(!r.ok, "{name} verified");
        assert_eq!(findings.len(), 1, "{}", r.human());
        assert_eq!(findings[0].class, audit_verify::FindingClass::Malformed);
        assert!(findings[0].detail.contains(detail), "{}", r.human());
    }
}
