//! The entry's JSON encoder: byte for byte what `serde_json::to_writer` makes
//! of an [`AuditEntry`], without serde's per-byte escaping loop.
//!
//! Every append encodes its entry, so this is on the hot path of the writer.
//! Profiles of 64 producers spent a fifth of the runtime's CPU in
//! `serde_json`, mostly scanning strings one byte at a time for characters to
//! escape. Here a string that needs no escaping (nearly every one) is checked
//! in a loop the compiler vectorizes and copied whole; anything unusual (a
//! string with escapes, a float, a timestamp outside years 0–9999 or on a
//! leap second) goes to `serde_json` itself, so the output cannot drift from
//! it. A differential test holds the two equal.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::Value;

use crate::entry::AuditEntry;
use crate::record::MAX_NESTING;

/// Why an entry could not be encoded.
#[derive(Debug)]
pub(crate) enum EncodeError {
    /// `arguments` has arrays or objects more than [`MAX_NESTING`] levels
    /// deep, counting `arguments` itself as level 1.
    TooDeep,
    /// serde_json refused a part it was handed.
    Json(serde_json::Error),
}

impl From<serde_json::Error> for EncodeError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

/// Appends `entry` as a JSON object to `buf`, exactly as serde_json would,
/// or refuses it as too deep before recursing past the limit. On error,
/// `buf` may hold part of the entry.
pub(crate) fn write_entry(entry: &AuditEntry, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    buf.extend_from_slice(b"{\"timestamp\":");
    write_timestamp(&entry.timestamp, buf)?;
    buf.extend_from_slice(b",\"request_id\":\"");
    let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
    buf.extend_from_slice(
        entry
            .request_id
            .hyphenated()
            .encode_lower(&mut uuid)
            .as_bytes(),
    );
    buf.extend_from_slice(b"\",\"agent_id\":");
    write_str(&entry.agent_id, buf)?;
    buf.extend_from_slice(b",\"delegation_chain\":");
    write_str(&entry.delegation_chain, buf)?;
    buf.extend_from_slice(b",\"task_session_id\":");
    write_str(&entry.task_session_id, buf)?;
    buf.extend_from_slice(b",\"tool_called\":");
    write_str(&entry.tool_called, buf)?;
    buf.extend_from_slice(b",\"arguments\":");
    write_value(&entry.arguments, 1, buf)?;
    buf.extend_from_slice(b",\"authorization_decision\":");
    write_str(&entry.authorization_decision, buf)?;
    buf.extend_from_slice(b",\"policy_matched\":");
    match &entry.policy_matched {
        Some(p) => write_str(p, buf)?,
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"anomaly_flags\":");
    write_str_array(&entry.anomaly_flags, buf)?;
    if let Some(f) = &entry.failure_category {
        buf.extend_from_slice(b",\"failure_category\":");
        write_str(f, buf)?;
    }
    buf.extend_from_slice(b",\"latency_ms\":");
    buf.extend_from_slice(itoa::Buffer::new().format(entry.latency_ms).as_bytes());
    buf.extend_from_slice(b",\"upstream_status\":");
    match entry.upstream_status {
        Some(s) => buf.extend_from_slice(itoa::Buffer::new().format(s).as_bytes()),
        None => buf.extend_from_slice(b"null"),
    }
    if !entry.inspection_findings.is_empty() {
        buf.extend_from_slice(b",\"inspection_findings\":");
        write_str_array(&entry.inspection_findings, buf)?;
    }
    buf.push(b'}');
    Ok(())
}

fn write_str(s: &str, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    // A plain fold over every byte, with no early exit, so it vectorizes.
    let needs_escape = s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        return serde_json::to_writer(&mut *buf, s);
    }
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
    Ok(())
}

fn write_str_array(items: &[String], buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    buf.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(s, buf)?;
    }
    buf.push(b']');
    Ok(())
}

fn write_value(value: &Value, level: usize, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    if level > MAX_NESTING && matches!(value, Value::Array(_) | Value::Object(_)) {
        return Err(EncodeError::TooDeep);
    }
    match value {
        Value::Null => buf.extend_from_slice(b"null"),
        Value::Bool(true) => buf.extend_from_slice(b"true"),
        Value::Bool(false) => buf.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                buf.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
            } else if let Some(i) = n.as_i64() {
                buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            } else {
                serde_json::to_writer(&mut *buf, n)?;
            }
        }
        Value::String(s) => write_str(s, buf)?,
        Value::Array(items) => {
            buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_value(item, level + 1, buf)?;
            }
            buf.push(b']');
        }
        Value::Object(members) => {
            buf.push(b'{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_str(key, buf)?;
                buf.push(b':');
                write_value(item, level + 1, buf)?;
            }
            buf.push(b'}');
        }
    }
    Ok(())
}

/// chrono's serde form: RFC 3339 in UTC with `Z`, and 0, 3, 6 or 9 digits of
/// fraction, as few as show the value exactly.
fn write_timestamp(ts: &DateTime<Utc>, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let year = ts.year();
    let nano = ts.nanosecond();
    // Leap seconds and years outside 0–9999 have their own spellings.
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return serde_json::to_writer(&mut *buf, ts);
    }
    let two = |buf: &mut Vec<u8>, v: u32| {
        buf.push(b'0' + (v / 10 % 10) as u8);
        buf.push(b'0' + (v % 10) as u8);
    };
    buf.push(b'"');
    two(buf, year as u32 / 100);
    two(buf, year as u32 % 100);
    buf.push(b'-');
    two(buf, ts.month());
    buf.push(b'-');
    two(buf, ts.day());
    buf.push(b'T');
    two(buf, ts.hour());
    buf.push(b':');
    two(buf, ts.minute());
    buf.push(b':');
    two(buf, ts.second());
    let (digits, mut frac) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (3, nano / 1_000_000)
    } else if nano.is_multiple_of(1_000) {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        buf.push(b'.');
        let start = buf.len();
        buf.resize(start + digits, b'0');
        for slot in buf[start..].iter_mut().rev() {
            *slot = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
    }
    buf.extend_from_slice(b"Z\"");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A small deterministic generator, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}",
                "\u{1f}", "\u{7f}", "é", "€", "𝄞", "\u{2028}", "\u{feff}", "agent-07", "<>&'",
            ];
            let len = self.below(12);
            (0..len)
                .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
                .collect()
        }

        fn number(&mut self) -> serde_json::Number {
            match self.below(7) {
                0 => serde_json::Number::from(self.next()),
                1 => serde_json::Number::from(self.next() as i64),
                2 => serde_json::Number::from(self.below(1000)),
                3 => serde_json::Number::from(i64::MIN),
                4 => serde_json::Number::from(u64::MAX),
                _ => {
                    let f = match self.below(6) {
                        0 => f64::from_bits(self.next()),
                        1 => (self.next() as f64) / 7.0,
                        2 => -0.0,
                        3 => f64::MIN_POSITIVE / 3.0,
                        4 => 1e300 * (self.below(100) as f64),
                        _ => (self.below(1_000_000) as f64) / 1000.0,
                    };
                    serde_json::Number::from_f64(f).unwrap_or_else(|| 0.into())
                }
            }
        }

        fn value(&mut self, depth: u32) -> Value {
            let pick = if depth >= 4 {
                self.below(4)
            } else {
                self.below(6)
            };
            match pick {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 1),
                2 => Value::Number(self.number()),
                3 => Value::String(self.string()),
                4 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
                _ => Value::Object(
                    (0..self.below(4))
                        .map(|_| (self.string(), self.value(depth + 1)))
                        .collect(),
                ),
            }
        }

        fn timestamp(&mut self) -> DateTime<Utc> {
            let secs = match self.below(4) {
                // Around now, the common case.
                0 => 1_790_000_000 + self.below(100_000_000) as i64,
                // Years 0–9999.
                1 => -62_167_219_200 + self.below(315_537_897_600) as i64,
                // Outside them, both sides.
                2 => -62_167_219_200 - 1 - self.below(1_000_000_000_000) as i64,
                _ => 253_402_300_800 + self.below(1_000_000_000_000) as i64,
            };
            let nanos = match self.below(5) {
                0 => 0,
                1 => self.below(1000) as u32 * 1_000_000,
                2 => self.below(1_000_000) as u32 * 1000,
                3 => self.below(1_000_000_000) as u32,
                // A leap second, which chrono spells as second 60.
                _ => 1_000_000_000 + self.below(1_000_000_000) as u32,
            };
            let ts = Utc.timestamp_opt(secs, nanos % 1_000_000_000).single();
            let ts = ts.unwrap_or_default();
            if nanos >= 1_000_000_000 && ts.second() == 59 {
                let leap = ts
                    .naive_utc()
                    .with_nanosecond(nanos)
                    .map(|n| Utc.from_utc_datetime(&n));
                return leap.unwrap_or(ts);
            }
            ts
        }
    }

    fn assert_same(entry: &AuditEntry) {
        let expected = serde_json::to_vec(entry).expect("serde_json");
        let mut ours = Vec::new();
        if let Err(e) = write_entry(entry, &mut ours) {
            panic!("entry {entry:?}: {e:?}");
        }
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&expected),
            "entry {entry:?}"
        );
    }

    #[test]
    fn matches_serde_json_on_random_entries() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..20_000u64 {
            let mut e = AuditEntry::new(uuid::Uuid::from_u128(
                u128::from(rng.next()) << 64 | u128::from(rng.next()),
            ));
            e.timestamp = rng.timestamp();
            e.agent_id = rng.string();
            e.delegation_chain = rng.string();
            e.task_session_id = rng.string();
            e.tool_called = rng.string();
            e.arguments = rng.value(0);
            e.authorization_decision = rng.string();
            e.policy_matched = (rng.below(2) == 1).then(|| rng.string());
            e.anomaly_flags = (0..rng.below(3)).map(|_| rng.string()).collect();
            e.failure_category = (rng.below(2) == 1).then(|| rng.string());
            e.latency_ms = if i % 7 == 0 {
                u64::MAX
            } else {
                rng.below(5000)
            };
            e.upstream_status = (rng.below(2) == 1).then(|| rng.below(65536) as u16);
            e.inspection_findings = (0..rng.below(3)).map(|_| rng.string()).collect();
            assert_same(&e);
        }
    }

    fn nested(levels: usize) -> Value {
        let mut v = Value::Null;
        for _ in 0..levels {
            v = Value::Array(vec![v]);
        }
        v
    }

    /// The depth limit is enforced while encoding, before the recursion can
    /// go past it, and at exactly the level the format allows.
    #[test]
    fn refuses_arguments_nested_past_the_limit() {
        let mut e = AuditEntry::new(uuid::Uuid::nil());
        e.arguments = nested(MAX_NESTING);
        assert_same(&e);
        for levels in [MAX_NESTING + 1, 1000] {
            e.arguments = nested(levels);
            let mut buf = b"kept".to_vec();
            assert!(matches!(
                write_entry(&e, &mut buf),
                Err(EncodeError::TooDeep)
            ));
            let mut body = b"kept".to_vec();
            let err = crate::encode_entry_body(&e, &mut body).expect_err("too deep");
            assert!(err.to_string().contains("deeper than"), "{err}");
            assert_eq!(body, b"kept", "a refused entry leaves the buffer as it was");
        }
    }

    #[test]
    fn matches_serde_json_on_edge_timestamps() {
        let mut e = AuditEntry::new(uuid::Uuid::nil());
        for (secs, nanos) in [
            (0, 0),
            (0, 1),
            (0, 1_000),
            (0, 1_000_000),
            (0, 999_999_999),
            (0, 100_000_000),
            (-1, 0),
            (-62_167_219_200, 0),
            (253_402_300_799, 999_999_999),
            (253_402_300_800, 0),
            (-62_167_219_201, 0),
        ] {
            e.timestamp = Utc.timestamp_opt(secs, nanos).single().expect("in range");
            assert_same(&e);
        }
        e.timestamp = DateTime::<Utc>::MIN_UTC;
        assert_same(&e);
        e.timestamp = DateTime::<Utc>::MAX_UTC;
        assert_same(&e);
    }
}
