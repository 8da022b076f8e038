//! The exact shape of the writer's own records: checkpoints, seals (signed
//! and MAC) and key rotations (docs/FORMAT.md section 9).
//!
//! A signed note covers what its body says, not the record around it, so a
//! member added beside the note (an `agent_id`, a `tool_called`) would ride
//! along unsigned, and a query on that member would return it. Each of these
//! records therefore holds exactly its members, in the writer's order, each
//! of its one type; anything else is malformed. The writer's start-up and
//! the verifier read a marker through [`MarkerFields::parse`], and so agree
//! on what one is.

use serde_json::value::RawValue;

/// Which of the writer's records a text is, by its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerShape {
    /// `checkpoint`: a signed checkpoint note.
    Checkpoint,
    /// `seal` with a signed note.
    SignedSeal,
    /// `seal` with a MAC instead of a note.
    MacSeal,
    /// `key_rotation`: a note signed by the retired and the new key.
    Rotation,
}

/// The members of each shape, after `record_type` and before the chain
/// members, in the order the writer writes them.
const CHECKPOINT: &[&str] = &[
    "timestamp",
    "log_id",
    "checkpoint_seq",
    "head_hash",
    "key_id",
    "note",
];
const SIGNED_SEAL: &[&str] = &["sealed_seq", "note"];
const MAC_SEAL: &[&str] = &["sealed_seq", "stretch", "mac", "writer_mac"];
const ROTATION: &[&str] = &["timestamp", "log_id", "new_key", "note"];

/// Members that hold integers; every other member of a marker is a string.
const INTEGERS: &[&str] = &["checkpoint_seq", "sealed_seq", "stretch"];

/// A marker's members, read from a record already known to be well formed
/// (see [`crate::parse_record`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkerFields {
    /// `checkpoint_seq`.
    pub checkpoint_seq: Option<u64>,
    /// `sealed_seq`.
    pub sealed_seq: Option<u64>,
    /// `stretch` (MAC seals).
    pub stretch: Option<u64>,
    /// `timestamp`.
    pub timestamp: Option<String>,
    /// `log_id`.
    pub log_id: Option<String>,
    /// `head_hash` (hex).
    pub head_hash: Option<String>,
    /// `key_id` (8 hex digits).
    pub key_id: Option<String>,
    /// `new_key` (a verifier key).
    pub new_key: Option<String>,
    /// `note`.
    pub note: Option<String>,
    /// `mac` (base64): by the MAC key auditors may hold.
    pub mac: Option<String>,
    /// `writer_mac` (base64): by the writer's own MAC key.
    pub writer_mac: Option<String>,
}

impl MarkerFields {
    /// Reads a marker record of type `record_type` (`checkpoint`, `seal` or
    /// `key_rotation`; `Ok(None)` for any other type): its shape and
    /// members, or why it has none of the shapes.
    pub fn parse(
        record_type: &str,
        text: &[u8],
    ) -> Result<Option<(MarkerShape, MarkerFields)>, String> {
        let candidates: &[(MarkerShape, &[&str])] = match record_type {
            "checkpoint" => &[(MarkerShape::Checkpoint, CHECKPOINT)],
            "seal" => &[
                (MarkerShape::SignedSeal, SIGNED_SEAL),
                (MarkerShape::MacSeal, MAC_SEAL),
            ],
            "key_rotation" => &[(MarkerShape::Rotation, ROTATION)],
            _ => return Ok(None),
        };
        let members = members_of(text).map_err(|e| format!("cannot read its members: {e}"))?;
        let names: Vec<&str> = members
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != crate::record::RECORD_TYPE_MEMBER && !n.starts_with("chain_"))
            .collect();
        let Some(&(shape, _)) = candidates.iter().find(|(_, want)| names == *want) else {
            let want: Vec<String> = candidates.iter().map(|(_, w)| w.join(", ")).collect();
            return Err(format!(
                "a {record_type} record holds exactly the members {} after record_type; this one holds {}",
                want.join(" or "),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        };
        let mut f = MarkerFields::default();
        // The one byte form of this marker: what the writer's encoder
        // (`encode_marker_body`) makes of its members. Any other spelling of
        // the same JSON (whitespace, escapes) could carry data the note does
        // not sign, and the writer would adopt and sign over it.
        let mut canonical = format!("{}{}\"", crate::record::RECORD_TYPE_PREFIX, record_type);
        for (name, raw) in &members {
            let name = name.as_str();
            if name == crate::record::RECORD_TYPE_MEMBER || name.starts_with("chain_") {
                continue;
            }
            if INTEGERS.contains(&name) {
                let v: u64 = serde_json::from_str(raw.get())
                    .map_err(|_| format!("`{name}` is not an unsigned integer: {}", raw.get()))?;
                canonical.push_str(&format!(",\"{name}\":{v}"));
                let slot = match name {
                    "checkpoint_seq" => &mut f.checkpoint_seq,
                    "sealed_seq" => &mut f.sealed_seq,
                    _ => &mut f.stretch,
                };
                *slot = Some(v);
            } else {
                let v: String = serde_json::from_str(raw.get())
                    .map_err(|_| format!("`{name}` is not a string"))?;
                let quoted = serde_json::to_string(&v).map_err(|e| e.to_string())?;
                canonical.push_str(&format!(",\"{name}\":{quoted}"));
                let slot = match name {
                    "timestamp" => &mut f.timestamp,
                    "log_id" => &mut f.log_id,
                    "head_hash" => &mut f.head_hash,
                    "key_id" => &mut f.key_id,
                    "new_key" => &mut f.new_key,
                    "note" => &mut f.note,
                    "mac" => &mut f.mac,
                    _ => &mut f.writer_mac,
                };
                *slot = Some(v);
            }
        }
        canonical.push_str(",\"chain_sequence\":");
        if !text.starts_with(canonical.as_bytes()) {
            return Err(format!(
                "a {record_type} record is spelled exactly as the writer writes it (no whitespace, no escape it would not make); this one is not"
            ));
        }
        if let Some(note) = &f.note {
            // Exactly the writer's signatures: a line by a key the reader
            // does not hold would be ignored, and could carry anything.
            let want = if shape == MarkerShape::Rotation { 2 } else { 1 };
            let got =
                crate::checkpoint::signature_lines(note).map_err(|e| format!("its note: {e}"))?;
            if got != want {
                return Err(format!(
                    "a {record_type} note holds exactly {want} signature line(s); this one holds {got}"
                ));
            }
        }
        Ok(Some((shape, f)))
    }
}

/// The top-level members of a JSON object, in order, values unparsed.
fn members_of(text: &[u8]) -> Result<Vec<(String, &RawValue)>, serde_json::Error> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, &'de RawValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                out.push((k, map.next_value::<&'de RawValue>()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    de.deserialize_map(Members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str, text: &str) -> Result<Option<MarkerShape>, String> {
        MarkerFields::parse(t, text.as_bytes()).map(|o| o.map(|(s, _)| s))
    }

    const SUFFIX: &str = r#","chain_sequence":2,"chain_prev_hash":"x","chain_record_hash":"y"}"#;

    #[test]
    fn each_shape_is_read_and_anything_else_refused() {
        let seal = format!(r#"{{"record_type":"seal","sealed_seq":1,"note":"{NOTE}"{SUFFIX}"#);
        assert_eq!(parse("seal", &seal), Ok(Some(MarkerShape::SignedSeal)));
        let mac = format!(
            r#"{{"record_type":"seal","sealed_seq":1,"stretch":9,"mac":"m","writer_mac":"w"{SUFFIX}"#
        );
        assert_eq!(parse("seal", &mac), Ok(Some(MarkerShape::MacSeal)));
        assert_eq!(parse("entry", &seal), Ok(None));
        for bad in [
            // A member riding along beside the note.
            r#"{"record_type":"seal","sealed_seq":1,"note":"n","agent_id":"mallory""#,
            // Both a note and a MAC.
            r#"{"record_type":"seal","sealed_seq":1,"stretch":9,"mac":"m","writer_mac":"w","note":"n""#,
            // A MAC seal without the writer's MAC.
            r#"{"record_type":"seal","sealed_seq":1,"stretch":9,"mac":"m""#,
            // A null note, a float or exponent sequence, a string stretch.
            r#"{"record_type":"seal","sealed_seq":1,"note":null"#,
            r#"{"record_type":"seal","sealed_seq":1.0,"note":"n""#,
            r#"{"record_type":"seal","sealed_seq":1e0,"note":"n""#,
            r#"{"record_type":"seal","sealed_seq":-1,"note":"n""#,
            r#"{"record_type":"seal","sealed_seq":1,"stretch":"9","mac":"m""#,
            // Members out of order, or missing.
            r#"{"record_type":"seal","note":"n","sealed_seq":1"#,
            r#"{"record_type":"seal","note":"n""#,
        ] {
            let text = format!("{bad}{SUFFIX}");
            assert!(parse("seal", &text).is_err(), "{text}");
        }
    }

    /// A well-formed note: a body and one signature line (key ID and
    /// signature all zeros: its form is all that is read here).
    const NOTE: &str = "body\\n\\n\u{2014} k AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\\n";

    #[test]
    fn a_note_holds_exactly_the_writers_signature_lines() {
        let sig = "\u{2014} k AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\\n";
        let seal = |note: &str| {
            format!(r#"{{"record_type":"seal","sealed_seq":1,"note":"{note}"{SUFFIX}"#)
        };
        assert!(parse("seal", &seal(NOTE)).is_ok());
        // A second line, by a key no reader holds, could carry anything.
        assert!(parse("seal", &seal(&format!("{NOTE}{sig}"))).is_err());
        // A rotation is signed by the retired and the new key: two lines.
        let rotation = |note: &str| {
            format!(
                r#"{{"record_type":"key_rotation","timestamp":"t","log_id":"l","new_key":"k","note":"{note}"{SUFFIX}"#
            )
        };
        assert!(parse("key_rotation", &rotation(NOTE)).is_err());
        assert!(parse("key_rotation", &rotation(&format!("{NOTE}{sig}"))).is_ok());
        // The same JSON in another spelling: whitespace between members, an
        // escape the writer would not make (in a value or a member name).
        for respelled in [
            seal(NOTE).replacen(",\"note\"", ", \"note\"", 1),
            seal(NOTE).replacen("\"sealed_seq\":1", "\"sealed_seq\": 1", 1),
            seal(NOTE).replacen("\u{2014}", "\\u2014", 1),
            seal(NOTE).replacen("\"note\"", "\"\\u006eote\"", 1),
            seal(NOTE).replacen("body", "bod\\u0079", 1),
        ] {
            assert!(parse("seal", &respelled).is_err(), "{respelled}");
        }
        // Key names are C2SP names: no '+', no whitespace; signatures are
        // a key ID and 64 bytes.
        for bad_line in [
            "\u{2014} k+x AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\\n",
            "\u{2014} k\u{a0}x AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\\n",
            "\u{2014} k AAAAAAAA\\n",
        ] {
            assert!(parse("seal", &seal(&format!("body\\n\\n{bad_line}"))).is_err(), "{bad_line}");
        }
    }
}
