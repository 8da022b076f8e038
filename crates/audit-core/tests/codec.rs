//! The record codec: seed compatibility, strictness, and property tests.

use audit_core::chain::{encode_entry_body, encode_marker_body, PreparedBody, Sequencer};
use audit_core::record::{parse_record, record_hash, PrevHash, Record, RecordError, RecordFault};
use audit_core::testing::sample_entry;
use audit_core::AuditEntry;
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/fixtures/seed-format/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_seed_fixture_line_parses_and_verifies() {
    for name in [
        "seed-basic.jsonl",
        "seed-floats.jsonl",
        "seed-restarts.jsonl",
    ] {
        let data = fixture(name);
        for (i, line) in lines(&data).into_iter().enumerate() {
            let rec = Record::from_text(line).unwrap_or_else(|e| panic!("{name}:{}: {e}", i + 1));
            assert_eq!(rec.text(), line);
        }
    }
}

#[test]
fn seed_floats_do_not_survive_reserialization_but_verify() {
    let data = fixture("seed-floats.jsonl");
    let mut changed = 0;
    for line in lines(&data) {
        let value: serde_json::Value = serde_json::from_slice(line).expect("json");
        if serde_json::to_vec(&value).expect("ser") != line {
            changed += 1;
        }
        assert!(Record::from_text(line).is_ok());
    }
    assert!(
        changed > 0,
        "the fixture is meant to hold lines that re-serialize differently"
    );
}

#[test]
fn seed_restarts_hold_three_genesis_records() {
    let data = fixture("seed-restarts.jsonl");
    let genesis = lines(&data)
        .into_iter()
        .filter(|l| parse_record(l).expect("parse").prev == PrevHash::Genesis)
        .count();
    assert_eq!(genesis, 3);
}

fn sealed(entry: &AuditEntry) -> Record {
    let mut body = Vec::new();
    encode_entry_body(entry, &mut body).expect("serialize");
    Sequencer::new().seal(&body)
}

#[test]
fn sealed_entry_matches_seed_layout() {
    let rec = sealed(&sample_entry(3));
    let text = std::str::from_utf8(rec.text()).expect("utf8");
    assert!(text.starts_with("{\"timestamp\":\""));
    assert!(text.contains(
        ",\"chain_sequence\":1,\"chain_prev_hash\":\"genesis\",\"chain_record_hash\":\""
    ));
    assert!(text.ends_with("\"}"));
    let parsed = parse_record(rec.text()).expect("parse");
    assert_eq!(parsed.seq, 1);
    assert_eq!(parsed.record_type, None);
    assert_eq!(record_hash(rec.text()), rec.hash());
}

/// The body is hashed before sealing and the chain members after it; the
/// record hash must still be the hash of the whole text, at every length
/// around BLAKE3's 64-byte blocks and 1024-byte chunks.
#[test]
fn prepared_bodies_hash_like_whole_records_at_every_length() {
    let mut seq = Sequencer::new();
    for pad in (0..2200).filter(|n| n % 64 < 3 || n % 64 > 61 || n % 97 == 0) {
        let body = format!("{{\"pad\":\"{}\"", "x".repeat(pad));
        let prev = seq.head();
        let rec = seq.seal_prepared(PreparedBody::new(body.into_bytes()));
        assert_eq!(record_hash(rec.text()), rec.hash(), "pad {pad}");
        let parsed = parse_record(rec.text()).expect("parse");
        assert_eq!(
            parsed.prev,
            prev.map_or(PrevHash::Genesis, |h| PrevHash::Hash(h.hash))
        );
    }
}

#[test]
fn markers_carry_their_type_first() {
    let mut body = Vec::new();
    encode_marker_body(
        "sink_gap",
        &serde_json::json!({"sink": "s3", "lacks_from": 5}),
        &mut body,
    )
    .expect("ser");
    let rec = Sequencer::new().seal(&body);
    assert!(rec.text().starts_with(b"{\"record_type\":\"sink_gap\","));
    let parsed = parse_record(rec.text()).expect("parse");
    assert_eq!(parsed.record_type.as_deref(), Some("sink_gap"));
}

fn base_line() -> Vec<u8> {
    sealed(&sample_entry(9)).text().to_vec()
}

fn replace(line: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = std::str::from_utf8(line).expect("utf8");
    assert!(s.contains(from), "{from} not in line");
    s.replacen(from, to, 1).into_bytes()
}

#[test]
fn escapes_that_are_whole_characters_are_fine() {
    // A surrogate pair is one character; `\\` followed by `u` is a backslash
    // and a letter, not an escape.
    let line = base_line();
    for ok in [
        replace(&line, "agent-", "agent\\ud83d\\ude00-"),
        replace(&line, "agent-", "agent\\\\ud800-"),
        replace(&line, "agent-", "agent\\u00e9\\\\-"),
    ] {
        let text = String::from_utf8(ok.clone()).expect("utf8");
        assert!(parse_record(&ok).is_ok(), "{text} was refused");
    }
}

#[test]
fn member_names_are_compared_whole_however_many_there_are() {
    let line = base_line();
    // `n` distinct nested names, then `last`.
    let with_names = |n: usize, last: &str| {
        let names: String = (0..n).map(|i| format!("\"key-{i}\":{i},")).collect();
        replace(
            &line,
            "\"limit\":",
            &format!("{names}\"{last}\":0,\"limit\":"),
        )
    };
    let duplicate = |bad: &[u8]| matches!(parse_record(bad), Err(RecordError::DuplicateMember(_)));
    for n in [3, 31, 32, 33, 100] {
        assert!(duplicate(&with_names(n, "key-0")), "{n} names");
        assert!(
            duplicate(&with_names(n, &format!("key-{}", n - 1))),
            "{n} names"
        );
        assert!(parse_record(&with_names(n, "key-x")).is_ok(), "{n} names");
    }
    // An escape spells the same name.
    assert!(duplicate(&replace(
        &line,
        "{\"timestamp\"",
        "{\"agent\\u005fid\":\"x\",\"timestamp\""
    )));
    // Same length, same first and last eight bytes: different names.
    let twins = replace(
        &line,
        "\"limit\":",
        "\"abcdefgh-1-stuvwxyz\":1,\"abcdefgh-2-stuvwxyz\":2,\"limit\":",
    );
    assert!(parse_record(&twins).is_ok());
    assert!(duplicate(&replace(
        &twins,
        "\"limit\":",
        "\"abcdefgh-2-stuvwxyz\":3,\"limit\":"
    )));
}

#[test]
fn ambiguous_records_are_malformed() {
    let line = base_line();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "duplicate chain member",
            replace(
                &line,
                "{\"timestamp\"",
                "{\"chain_sequence\":1,\"timestamp\"",
            ),
        ),
        (
            "duplicate entry member",
            replace(&line, "{\"timestamp\"", "{\"agent_id\":\"x\",\"timestamp\""),
        ),
        (
            "duplicate nested member",
            replace(&line, "\"limit\":", "\"limit\":1,\"limit\":"),
        ),
        (
            "bytes after the object",
            [line.clone(), b" {}".to_vec()].concat(),
        ),
        (
            "trailing whitespace",
            [line.clone(), b" ".to_vec()].concat(),
        ),
        (
            "leading zero sequence",
            replace(&line, "\"chain_sequence\":1,", "\"chain_sequence\":01,"),
        ),
        (
            "float sequence",
            replace(&line, "\"chain_sequence\":1,", "\"chain_sequence\":1.0,"),
        ),
        (
            "exponent sequence",
            replace(&line, "\"chain_sequence\":1,", "\"chain_sequence\":1e0,"),
        ),
        (
            "zero sequence",
            replace(&line, "\"chain_sequence\":1,", "\"chain_sequence\":0,"),
        ),
        (
            "uppercase genesis",
            replace(&line, "\"genesis\"", "\"GENESIS\""),
        ),
        (
            "record_type on an entry, not first",
            replace(&line, "\"agent_id\"", "\"record_type\":\"x\",\"agent_id\""),
        ),
        ("raw newline", replace(&line, "agent-", "agent\n-")),
        (
            "lone high surrogate",
            replace(&line, "agent-", "agent\\ud800-"),
        ),
        (
            "lone low surrogate",
            replace(&line, "agent-", "agent\\udc00-"),
        ),
        (
            "surrogates in the wrong order",
            replace(&line, "agent-", "agent\\udc00\\ud800-"),
        ),
        (
            "high surrogate before another escape",
            replace(&line, "agent-", "agent\\ud800\\n-"),
        ),
        (
            "high surrogate at the end of a string",
            replace(&line, "agent-", "agent\\ud83d\",\"x\":\"-"),
        ),
        (
            "lone surrogate in a member name",
            replace(&line, "\"agent_id\"", "\"agent\\udfff_id\""),
        ),
        ("not an object", b"[1,2,3]".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bad) in cases {
        assert!(parse_record(&bad).is_err(), "{what} was accepted");
        assert!(
            Record::from_text(&bad).is_err(),
            "{what} was accepted as a record"
        );
    }
    let mut not_utf8 = line.clone();
    not_utf8[20] = 0xff;
    assert!(matches!(
        parse_record(&not_utf8),
        Err(RecordError::NotUtf8 { offset: 20 })
    ));
    let upper = {
        let s = String::from_utf8(line.clone()).expect("utf8");
        let at = s.len() - 66;
        format!("{}{}", &s[..at], s[at..].to_uppercase()).into_bytes()
    };
    assert!(parse_record(&upper).is_err(), "uppercase hash accepted");
}

#[test]
fn hash_mismatch_is_reported_with_sequence() {
    let line = replace(&base_line(), "agent-09", "agent-10");
    match Record::from_text(&line) {
        Err(RecordFault::HashMismatch { seq: 1, .. }) => {}
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<u64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        ".*".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn arb_entry()(agent in ".*", tool in ".{0,20}", decision in "allow|deny|.{0,5}",
                   args in arb_json(), flags in prop::collection::vec(".{0,10}", 0..3),
                   latency in any::<u64>(), status in proptest::option::of(any::<u16>()),
                   failure in proptest::option::of(".{0,10}"), seed in any::<u128>()) -> AuditEntry {
        let mut e = AuditEntry::new(uuid::Uuid::from_u128(seed));
        e.agent_id = agent;
        e.tool_called = tool;
        e.authorization_decision = decision;
        e.arguments = args.into();
        e.anomaly_flags = flags.clone();
        e.inspection_findings = flags;
        e.latency_ms = latency;
        e.upstream_status = status;
        e.failure_category = failure;
        e
    }
}

/// Strings built from the characters JSON escapes, and others around them.
fn arb_escapable() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}", "\u{1f}",
        "\u{7f}", "é", "€", "𝄞", "\u{2028}", "\u{feff}", "agent-07", "<>&'",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 0..12).prop_map(|p| p.concat())
}

/// Timestamps around now, across years 0–9999, outside them on both sides,
/// with 0, 3, 6 or 9 digits of fraction, and on leap seconds.
fn arb_timestamp() -> impl Strategy<Value = chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, TimeZone, Utc};
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    let secs = prop_oneof![
        1_790_000_000i64..1_890_000_000,
        -62_167_219_200i64..253_402_300_800,
        min..-62_167_219_200i64,
        253_402_300_800i64..=max,
    ];
    let nanos = prop_oneof![
        Just(0u32),
        (0u32..1000).prop_map(|m| m * 1_000_000),
        (0u32..1_000_000).prop_map(|u| u * 1000),
        0u32..1_000_000_000,
        // A leap second: chrono takes it only on a minute's last second.
        1_000_000_000u32..2_000_000_000,
    ];
    (secs, nanos).prop_filter_map("representable", |(secs, nanos)| {
        let secs = if nanos >= 1_000_000_000 {
            secs - secs.rem_euclid(60) + 59
        } else {
            secs
        };
        Utc.timestamp_opt(secs, nanos).single()
    })
}

prop_compose! {
    fn arb_encodable_entry()(base in arb_entry(), ts in arb_timestamp(),
                             strings in prop::collection::vec(arb_escapable(), 6),
                             policy in proptest::option::of(arb_escapable())) -> AuditEntry {
        let mut e = base;
        e.timestamp = ts;
        e.agent_id = strings[0].clone();
        e.delegation_chain = strings[1].clone();
        e.task_session_id = strings[2].clone();
        e.tool_called = strings[3].clone();
        e.authorization_decision = strings[4].clone();
        e.anomaly_flags.push(strings[5].clone());
        e.policy_matched = policy;
        e
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The append path's hand-written encoder writes exactly serde_json's bytes.
    #[test]
    fn encoder_matches_serde_json(entry in arb_encodable_entry()) {
        let mut body = Vec::new();
        encode_entry_body(&entry, &mut body).expect("encode");
        body.push(b'}');
        let expected = serde_json::to_vec(&entry).expect("serde_json");
        prop_assert_eq!(String::from_utf8_lossy(&body), String::from_utf8_lossy(&expected));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_entry_round_trips(entry in arb_entry(), prior in 0u64..5) {
        let mut seq = Sequencer::new();
        let mut body = Vec::new();
        for _ in 0..prior {
            body.clear();
            encode_entry_body(&sample_entry(0), &mut body).expect("ser");
            seq.seal(&body);
        }
        body.clear();
        encode_entry_body(&entry, &mut body).expect("ser");
        let rec = seq.seal(&body);
        let back = Record::from_text(rec.text()).expect("sealed record verifies");
        prop_assert_eq!(back.text(), rec.text());
        prop_assert_eq!(back.hash(), rec.hash());
        prop_assert_eq!(back.seq(), prior + 1);
        let parsed: AuditEntry = serde_json::from_slice(
            &serde_json::to_vec(&{
                let mut v: serde_json::Value = serde_json::from_slice(rec.text()).expect("json");
                if let Some(o) = v.as_object_mut() {
                    o.remove("chain_sequence"); o.remove("chain_prev_hash"); o.remove("chain_record_hash");
                }
                v
            }).expect("ser")).expect("entry parses back");
        prop_assert_eq!(parsed.agent_id, entry.agent_id);
    }

    #[test]
    fn any_single_byte_change_is_detected(entry in arb_entry(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let rec = sealed(&entry);
        let mut bad = rec.text().to_vec();
        let i = pos.index(bad.len());
        prop_assume!(bad[i] != byte);
        bad[i] = byte;
        prop_assert!(Record::from_text(&bad).is_err(), "change at {} to {:#04x} went unnoticed", i, byte);
    }

    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_record(&data);
        let _ = Record::from_text(&data);
    }

    #[test]
    fn mutated_records_never_panic(cut in any::<prop::sample::Index>(), insert in prop::collection::vec(any::<u8>(), 0..8), at in any::<prop::sample::Index>()) {
        let line = base_line();
        let mut bad = line[..cut.index(line.len() + 1).min(line.len())].to_vec();
        let p = at.index(bad.len() + 1).min(bad.len());
        bad.splice(p..p, insert);
        let _ = parse_record(&bad);
        let _ = Record::from_text(&bad);
    }
}

#[test]
fn unpaired_surrogates_are_named_as_such() {
    let line = base_line();
    for (bad, what) in [
        (replace(&line, "agent-", "agent\\ud800-"), "lone high"),
        (replace(&line, "agent-", "agent\\udc00-"), "lone low"),
        (
            replace(&line, "agent-", "agent\\ud83d\",\"x\":\"-"),
            "high at the end of a string",
        ),
    ] {
        assert!(
            matches!(
                parse_record(&bad),
                Err(audit_core::record::RecordError::LoneSurrogate { .. })
            ),
            "{what}: {:?}",
            parse_record(&bad)
        );
    }
}
