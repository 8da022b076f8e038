//! Repository rules that code review would otherwise have to remember.

use std::path::Path;

#[test]
fn every_sink_crate_runs_the_shared_conformance_kit() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut sinks = 0;
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let dir = entry.expect("entry").path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !name.starts_with("sink-") {
            continue;
        }
        sinks += 1;
        let kit = dir.join("tests/conformance.rs");
        let text = std::fs::read_to_string(&kit)
            .unwrap_or_else(|_| panic!("{name} has no tests/conformance.rs"));
        assert!(
            text.contains("audit_core::conformance_tests!"),
            "{name}'s conformance.rs must run audit_core::conformance_tests!"
        );
        let src = std::fs::read_to_string(dir.join("src/lib.rs")).expect("lib.rs");
        assert!(
            src.contains("#![deny(missing_docs)]"),
            "{name} must deny missing docs"
        );
    }
    assert!(sinks >= 2);
}

#[test]
fn readme_opens_with_the_two_commands() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let head: String = readme.lines().take(20).collect::<Vec<_>>().join("\n");
    assert!(
        head.contains("cargo xtask test"),
        "README must open with the test command"
    );
    assert!(
        head.contains("audit -- append"),
        "README must open with the main job"
    );
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run"))
        .expect(".ci/run");
    assert!(
        ci.contains("cargo xtask test"),
        ".ci/run must call the README's test command"
    );
}
