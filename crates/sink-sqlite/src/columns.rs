//! The indexed columns derived from a record.

use audit_core::sink::{column_value, INDEX_COLUMNS};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Indexed {
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    agent_id: Option<Value>,
    #[serde(default)]
    tool_called: Option<Value>,
    #[serde(default)]
    authorization_decision: Option<Value>,
    #[serde(default)]
    request_id: Option<Value>,
    #[serde(default)]
    task_session_id: Option<Value>,
}

/// The values of [`INDEX_COLUMNS`] for a record, in that order. Reads only
/// those members; the rest of the record is skipped without building values.
pub(crate) fn index_values(text: &[u8]) -> Result<Vec<Option<String>>, serde_json::Error> {
    let i: Indexed = serde_json::from_slice(text)?;
    let mut m = serde_json::Map::new();
    for (k, v) in [
        ("timestamp", i.timestamp),
        ("agent_id", i.agent_id),
        ("tool_called", i.tool_called),
        ("authorization_decision", i.authorization_decision),
        ("request_id", i.request_id),
        ("task_session_id", i.task_session_id),
    ] {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    let v = Value::Object(m);
    Ok(INDEX_COLUMNS.iter().map(|c| column_value(&v, c)).collect())
}
