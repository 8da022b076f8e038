//! The audit entry: one decision a service made on behalf of a person or an agent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::arguments::Arguments;

/// One audited action, with the fields of the seed proxy's entry and in the
/// same member order, so records stay byte-compatible with seed-format logs.
///
/// `arguments` holds any JSON value. Optional members that the seed omitted
/// when empty (`failure_category`, `inspection_findings`) are omitted here too.
//
// The append path does not serialize this through serde: `entry_json` writes
// the same bytes by hand, and a differential test holds it to serde_json.
// A new field goes in both places.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// When the action was decided, in UTC. Defaults to now when absent.
    #[serde(default = "Utc::now")]
    pub timestamp: DateTime<Utc>,
    /// The request this entry belongs to. A fresh v4 UUID when absent.
    #[serde(default = "Uuid::new_v4")]
    pub request_id: Uuid,
    /// The agent (or person) that asked for the action.
    #[serde(default)]
    pub agent_id: String,
    /// Who delegated to whom, e.g. `user:bob@example.com>agent-08>subagent-004`.
    #[serde(default)]
    pub delegation_chain: String,
    /// The task or session the request ran in.
    #[serde(default)]
    pub task_session_id: String,
    /// The tool the agent called.
    #[serde(default)]
    pub tool_called: String,
    /// The tool call's arguments, any JSON value. Read from JSON text they
    /// are kept as written (see [`Arguments`]); `e.arguments = json!(…).into()`
    /// sets them from a `Value`.
    #[serde(default)]
    pub arguments: Arguments,
    /// `allow`, `deny`, or whatever decision vocabulary the service uses.
    #[serde(default)]
    pub authorization_decision: String,
    /// The policy that decided, if any.
    #[serde(default)]
    pub policy_matched: Option<String>,
    /// Anomalies the service flagged.
    #[serde(default)]
    pub anomaly_flags: Vec<String>,
    /// Why the action failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_category: Option<String>,
    /// How long the decision and call took.
    #[serde(default)]
    pub latency_ms: u64,
    /// The upstream HTTP status, if a call was made.
    #[serde(default)]
    pub upstream_status: Option<u16>,
    /// What content inspection found, e.g. `possible_pii:email`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inspection_findings: Vec<String>,
}

impl AuditEntry {
    /// A new entry for `request_id`, stamped now, with every other field empty.
    pub fn new(request_id: Uuid) -> Self {
        Self {
            timestamp: Utc::now(),
            request_id,
            agent_id: String::new(),
            delegation_chain: String::new(),
            task_session_id: String::new(),
            tool_called: String::new(),
            arguments: Arguments::Value(serde_json::Value::Object(serde_json::Map::new())),
            authorization_decision: String::new(),
            policy_matched: None,
            anomaly_flags: Vec::new(),
            failure_category: None,
            latency_ms: 0,
            upstream_status: None,
            inspection_findings: Vec::new(),
        }
    }
}
