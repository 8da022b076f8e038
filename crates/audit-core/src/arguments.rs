//! An entry's `arguments`: any JSON value, kept as the producer wrote it.
//!
//! An audit log must store what it was given. Parsed into a
//! `serde_json::Value`, `{"z":1,"a":2}` comes back with its members sorted,
//! `1E2` as `100.0`, a big integer as a float and `\u00e9` unescaped. So
//! arguments that arrive as JSON text (the `audit append` input, or
//! [`Arguments::from_json`] from a service that already has the bytes) are
//! kept as text: checked (valid JSON, no duplicate member, at most
//! [`MAX_NESTING`] levels) and stripped of insignificant whitespace, nothing
//! else. Arguments built in Rust as a `Value` are encoded as serde_json
//! encodes them.

use std::borrow::Cow;
use std::fmt;

use serde::de;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::record::MAX_NESTING;

/// Why JSON text was refused as arguments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentsError {
    /// Not one JSON value, or a member is there twice, or it nests too deep.
    #[error("arguments: {0}")]
    Invalid(serde_json::Error),
}

/// The `arguments` of an entry: JSON text kept as given (whitespace
/// removed), or a `serde_json::Value`.
#[derive(Clone)]
pub enum Arguments {
    /// Built in Rust; encoded as serde_json encodes it (members in the map's
    /// order, numbers in serde_json's spelling). Checked for depth at append.
    Value(Value),
    /// Checked JSON text, without insignificant whitespace, stored byte for
    /// byte. Made only by [`Arguments::from_json`] (or deserializing), so it
    /// always holds what that checks.
    Json(CheckedJson),
}

/// JSON text that passed [`Arguments::from_json`]'s checks; it cannot be
/// built any other way.
#[derive(Clone)]
pub struct CheckedJson(Box<RawValue>);

impl CheckedJson {
    /// The stored text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl Arguments {
    /// Checks `text` (one JSON value, no object with a member twice, at most
    /// [`MAX_NESTING`] levels of arrays and objects) and keeps it as written,
    /// less insignificant whitespace: member order, number spelling and
    /// string escapes stay the producer's.
    pub fn from_json(text: &str) -> Result<Self, ArgumentsError> {
        check(text).map_err(ArgumentsError::Invalid)?;
        let minified = minify(text);
        RawValue::from_string(minified)
            .map(|raw| Self::Json(CheckedJson(raw)))
            .map_err(ArgumentsError::Invalid)
    }

    /// The JSON text that is stored, when it is kept as text.
    pub fn as_json(&self) -> Option<&str> {
        match self {
            Self::Json(raw) => Some(raw.get()),
            Self::Value(_) => None,
        }
    }

    /// The arguments as a `Value` (a copy; numbers become serde_json's).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::Value(v) => Ok(v.clone()),
            Self::Json(raw) => serde_json::from_str(raw.get()),
        }
    }

    /// The text this encodes to, for comparison.
    fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Json(raw) => Cow::Borrowed(raw.get()),
            Self::Value(v) => Cow::Owned(serde_json::to_string(v).unwrap_or_default()),
        }
    }
}

impl Default for Arguments {
    /// `null`, as a missing `arguments` member reads.
    fn default() -> Self {
        Self::Value(Value::Null)
    }
}

impl From<Value> for Arguments {
    fn from(v: Value) -> Self {
        Self::Value(v)
    }
}

/// Equal when they encode to the same text.
impl PartialEq for Arguments {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl fmt::Debug for Arguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(v) => write!(f, "Arguments::Value({v})"),
            Self::Json(raw) => write!(f, "Arguments::Json({})", raw.get()),
        }
    }
}

impl Serialize for Arguments {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(s),
            Self::Json(raw) => raw.0.serialize(s),
        }
    }
}

/// Deserializing keeps the text (through serde_json's `RawValue`), checked
/// as [`Arguments::from_json`] checks it.
impl<'de> Deserialize<'de> for Arguments {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Self::from_json(raw.get()).map_err(de::Error::custom)
    }
}

/// Checks `text` as the verifier checks a record's values
/// ([`crate::record`]): one JSON value, no duplicate member at any depth, at
/// most [`MAX_NESTING`] levels. Numbers are checked for syntax only, never
/// converted, so `1e400` or a 400-digit integer is kept as written, as the
/// verifier accepts it.
fn check(text: &str) -> Result<(), serde_json::Error> {
    if nesting_exceeds(text.as_bytes(), MAX_NESTING) {
        return Err(de::Error::custom(format!(
            "nested deeper than {MAX_NESTING} levels"
        )));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    // The depth was bounded above; serde_json's own limit would refuse the
    // MAX_NESTING levels the format allows.
    de.disable_recursion_limit();
    let raw = <&RawValue>::deserialize(&mut de)?;
    de.end()?;
    crate::record::check_nested(raw.get(), 1)
}

/// Whether arrays and objects in `json` nest more than `max` levels, counting
/// the outermost as level 1, without recursing. Brackets inside strings do
/// not count; the text need not be valid JSON (a parser reports that). For
/// callers that lift serde_json's recursion limit, as `audit append` does.
pub fn nesting_exceeds(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// `text` (valid JSON) without the whitespace between tokens; strings are
/// copied as written, escapes included.
fn minify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What producers write, and what must be stored: the same text less
    /// insignificant whitespace.
    #[test]
    fn json_text_is_kept_as_given_less_whitespace() {
        for (input, stored) in [
            (r#"{"z":1,"a":2}"#, r#"{"z":1,"a":2}"#),
            (
                r#"{ "n" : 123456789012345678901234567890 }"#,
                r#"{"n":123456789012345678901234567890}"#,
            ),
            (
                r#"[1E2, 1e-7, -0, 0.0, -0.0, 1.50]"#,
                r#"[1E2,1e-7,-0,0.0,-0.0,1.50]"#,
            ),
            (
                r#"{"u":"\u00e9\u2028\ud83d\ude00", "s":"a b\t\"c\""}"#,
                r#"{"u":"\u00e9\u2028\ud83d\ude00","s":"a b\t\"c\""}"#,
            ),
            ("\n\t{\"k\" :\r\n [ ] }  ", r#"{"k":[]}"#),
            (r#""just a string""#, r#""just a string""#),
            ("null", "null"),
            (
                r#"{"a":{"a":1},"b":{"a":2}}"#,
                r#"{"a":{"a":1},"b":{"a":2}}"#,
            ),
        ] {
            let a = Arguments::from_json(input).expect(input);
            assert_eq!(a.as_json(), Some(stored), "{input}");
            assert_eq!(serde_json::to_string(&a).expect("serialize"), stored);
        }
    }

    #[test]
    fn duplicates_depth_and_bad_json_are_refused() {
        for bad in [
            r#"{"z":1,"a":2,"a":3}"#,
            r#"{"o":{"k":1,"k":1}}"#,
            r#"[{"x":1,"y":2,"x":null}]"#,
            r#"{"a":1"#,
            r#"{"a":1} {"b":2}"#,
            "",
        ] {
            assert!(Arguments::from_json(bad).is_err(), "{bad}");
        }
        let long = format!("[{}]", "9".repeat(400));
        assert_eq!(
            Arguments::from_json(&long)
                .expect("a 400-digit integer")
                .as_json(),
            Some(long.as_str())
        );
        assert!(
            Arguments::from_json(r#"{"a":1,"\u0061":2}"#).is_err(),
            "escaped duplicate"
        );
        let nested = |levels: usize| "[".repeat(levels) + &"]".repeat(levels);
        assert!(Arguments::from_json(&nested(MAX_NESTING)).is_ok());
        assert!(Arguments::from_json(&nested(MAX_NESTING + 1)).is_err());
        // Hostile depth is refused without recursing through it.
        assert!(Arguments::from_json(&nested(1_000_000)).is_err());
    }

    #[test]
    fn a_value_and_its_text_compare_equal() {
        let v = serde_json::json!({"a": [1, 2.5, "x"]});
        let text = serde_json::to_string(&v).expect("text");
        assert_eq!(
            Arguments::from(v),
            Arguments::from_json(&text).expect("json")
        );
    }
}
