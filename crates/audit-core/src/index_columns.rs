//! The index columns derived from a record's text: what a backend stores
//! (the SQLite sink) and what the verifier checks the stored values against,
//! from one function.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

#[cfg(doc)]
use crate::sink::column_value;
use crate::sink::INDEX_COLUMNS;

/// The members behind [`INDEX_COLUMNS`], borrowed from the
/// record's text. `null` reads as absent, like a missing member.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    agent_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_called: Option<&'a RawValue>,
    #[serde(borrow, default)]
    authorization_decision: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    task_session_id: Option<&'a RawValue>,
}

/// A record's index column values, read from its text without building a
/// `serde_json::Value` of it or copying strings that need no unescaping.
/// [`column_value`] states the same values over a parsed record; a test holds
/// the two equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexValues<'a> {
    /// `ts_ns`: the `timestamp` in nanoseconds since the Unix epoch.
    pub ts_ns: Option<i64>,
    /// `agent_id`, `tool_called`, `authorization_decision`, `request_id` and
    /// `task_session_id`, in [`INDEX_COLUMNS`] order: a string member as
    /// itself, another value as its compact JSON text, `None` when absent or
    /// `null`.
    pub text: [Option<Cow<'a, str>>; 5],
}

impl IndexValues<'_> {
    /// The value of `column` (one of [`INDEX_COLUMNS`]) as text, as
    /// [`column_value`] gives it; `None` for an absent member or an unknown
    /// column.
    pub fn column(&self, column: &str) -> Option<String> {
        if column == INDEX_COLUMNS[0] {
            return self.ts_ns.map(|n| n.to_string());
        }
        let at = INDEX_COLUMNS[1..].iter().position(|c| *c == column)?;
        self.text[at].as_deref().map(str::to_owned)
    }
}

/// Reads the index columns of one record's text. Fails if the text is not a
/// JSON object or holds one of those members twice.
pub fn index_values(text: &str) -> Result<IndexValues<'_>, serde_json::Error> {
    let m: Members<'_> = serde_json::from_str(text)?;
    Ok(IndexValues {
        ts_ns: m.timestamp.and_then(timestamp_ns),
        text: [
            as_column(m.agent_id)?,
            as_column(m.tool_called)?,
            as_column(m.authorization_decision)?,
            as_column(m.request_id)?,
            as_column(m.task_session_id)?,
        ],
    })
}

fn timestamp_ns(raw: &RawValue) -> Option<i64> {
    crate::sink::timestamp_ns(&string_of(raw).ok()??)
}

/// A string member as itself, any other value as its compact JSON text.
fn as_column(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, serde_json::Error> {
    let Some(raw) = raw else { return Ok(None) };
    match string_of(raw)? {
        Some(s) => Ok(Some(s)),
        None => {
            let v: serde_json::Value = serde_json::from_str(raw.get())?;
            Ok(Some(Cow::Owned(v.to_string())))
        }
    }
}

/// The string `raw` holds, borrowed when it has no escapes; `None` if `raw`
/// is not a string.
fn string_of(raw: &RawValue) -> Result<Option<Cow<'_, str>>, serde_json::Error> {
    let json = raw.get();
    match json.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(Some(Cow::Borrowed(inner))),
        Some(_) => serde_json::from_str::<String>(json).map(|s| Some(Cow::Owned(s))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{column_value, INDEX_COLUMNS};

    /// What the verifier expects, column by column.
    fn expected(text: &str) -> Vec<Option<String>> {
        let v: serde_json::Value = serde_json::from_str(text).expect("json");
        INDEX_COLUMNS.iter().map(|c| column_value(&v, c)).collect()
    }

    fn actual(text: &str) -> Vec<Option<String>> {
        let got = index_values(text).expect("index values");
        std::iter::once(got.ts_ns.map(|n| n.to_string()))
            .chain(got.text.iter().map(|c| c.as_ref().map(|s| s.to_string())))
            .collect()
    }

    #[test]
    fn agrees_with_the_verifiers_column_values() {
        let cases = [
            r#"{"timestamp":"2026-11-27T12:00:00.123456789Z","agent_id":"a","tool_called":"t","authorization_decision":"allow","request_id":"r","task_session_id":"s","arguments":{"agent_id":"inner"}}"#,
            r#"{"record_type":"checkpoint","note":"x"}"#,
            r#"{"agent_id":null,"tool_called":5,"authorization_decision":{"b": [1, 2.50]},"request_id":true}"#,
            r#"{"agent_id":"esc\"aped\\ \u00e9 \ud83e\udd80","task_session_id":"ünï ✓"}"#,
            r#"{"timestamp":12,"agent_id":""}"#,
            r#"{"timestamp":"not a time"}"#,
            r#"{"timestamp":"2026-11-27T12:00:00+02:00"}"#,
            r#"{"timestamp":"1500-01-01T00:00:00Z"}"#,
            r#"{ "agent_id" : "spaced" , "request_id" : [ 1 , 2 ] }"#,
        ];
        for text in cases {
            assert_eq!(actual(text), expected(text), "{text}");
            let got = index_values(text).expect("index values");
            let by_name: Vec<_> = INDEX_COLUMNS.iter().map(|c| got.column(c)).collect();
            assert_eq!(by_name, expected(text), "{text}");
        }
        let got = index_values(cases[0]).expect("index values");
        assert_eq!(got.column("no_such_column"), None);
    }

    #[test]
    fn escapes_are_decoded_and_plain_strings_borrowed() {
        let text = r#"{"agent_id":"plain","tool_called":"tab\there"}"#;
        let got = index_values(text).expect("index values");
        assert!(matches!(got.text[0], Some(Cow::Borrowed("plain"))));
        assert_eq!(got.text[1].as_deref(), Some("tab\there"));
    }

    #[test]
    fn malformed_text_is_an_error() {
        for text in [r#"{"agent_id":"#, r#"{"agent_id":"a","agent_id":"b"}"#] {
            assert!(index_values(text).is_err(), "{text}");
        }
    }
}
