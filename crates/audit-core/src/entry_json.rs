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

use crate::arguments::Arguments;
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
    match &entry.arguments {
        Arguments::Value(v) => write_value(v, 1, buf)?,
        // Checked when it was made: stored as the producer wrote it.
        Arguments::Json(raw) => buf.extend_from_slice(raw.get().as_bytes()),
    }
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

// Random entries are compared with serde_json by a property test in
// tests/codec.rs; these are the edges it may not reach.
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
        e.arguments = nested(MAX_NESTING).into();
        assert_same(&e);
        for levels in [MAX_NESTING + 1, 1000] {
            e.arguments = nested(levels).into();
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
