//! 1,000 concurrent producers × 100 entries into a real file sink and a real
//! SQLite sink: unique, contiguous receipts, and the chain verifies on both.

use audit_core::testing::append_concurrently;
use audit_verify::{verify, Source, VerifyOptions};
use auditlog::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_producers_on_file_and_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::parse(
        "[[sinks]]\nkind = \"file\"\nname = \"file\"\ndir = \"log\"\nmax_segment_bytes = 8388608\n\
         [[sinks]]\nkind = \"sqlite\"\nname = \"db\"\npath = \"audit.db\"\n",
        std::path::Path::new("producers.toml"),
        dir.path().to_path_buf(),
    )
    .expect("config");
    let log = auditlog::open(&config).await.expect("open");
    let mut seqs = Vec::new();
    let mut hashes = std::collections::HashMap::new();
    for r in append_concurrently(&log, 1000, 100).await {
        seqs.push(r.seq);
        hashes.insert(r.seq, r.hash.to_hex());
    }
    log.close().await;
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=100_000).collect::<Vec<u64>>(),
        "receipts must be unique and contiguous"
    );
    let report = verify(
        &[
            Source::File(dir.path().join("log")),
            Source::Sqlite(dir.path().join("audit.db")),
        ],
        &VerifyOptions::default(),
    )
    .await
    .expect("verify");
    assert!(report.ok, "{}", report.human());
    for s in &report.sources {
        assert_eq!(s.records, 100_000);
        assert_eq!(s.head_hash.as_ref(), hashes.get(&100_000));
    }
}
