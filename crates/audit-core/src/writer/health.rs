//! Per-sink health with hysteresis, and the snapshot served to /health.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Role;

/// A sink's health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Writes succeed.
    Healthy,
    /// A write failed or timed out and the sink has not yet had enough
    /// consecutive successes to be trusted again.
    Degraded,
    /// The sink is out of the log until restart or `audit resync`: its spool
    /// overflowed, it diverged, or it cannot be written safely.
    Failed,
}

/// The health of one sink, as counters and a state.
#[derive(Debug, Clone, Serialize)]
pub struct SinkHealth {
    /// The sink's name.
    pub name: String,
    /// Required or optional.
    pub role: Role,
    /// Current state.
    pub state: HealthState,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Successes since the last failure.
    pub consecutive_successes: u64,
    /// Failures since start-up.
    pub total_failures: u64,
    /// The last sequence durable on this sink.
    pub durable_seq: u64,
    /// How many records of the chain the sink does not hold yet.
    pub records_behind: u64,
    /// The last error's message.
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A state change, for the tracing event the writer emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub from: HealthState,
    pub to: HealthState,
}

impl SinkHealth {
    pub(crate) fn new(name: String, role: Role, durable_seq: u64) -> Self {
        Self {
            name,
            role,
            state: HealthState::Healthy,
            consecutive_failures: 0,
            consecutive_successes: 0,
            total_failures: 0,
            durable_seq,
            records_behind: 0,
            last_error: None,
            last_error_at: None,
        }
    }

    /// Counts a success; a degraded sink turns healthy after
    /// `recovery_successes` in a row.
    pub(crate) fn success(&mut self, recovery_successes: u64) -> Option<Transition> {
        self.consecutive_failures = 0;
        self.consecutive_successes += 1;
        if self.state == HealthState::Degraded && self.consecutive_successes >= recovery_successes {
            self.state = HealthState::Healthy;
            return Some(Transition {
                from: HealthState::Degraded,
                to: HealthState::Healthy,
            });
        }
        None
    }

    /// Counts a failure; a healthy sink turns degraded at once.
    pub(crate) fn failure(&mut self, error: String) -> Option<Transition> {
        self.consecutive_failures += 1;
        self.total_failures += 1;
        self.consecutive_successes = 0;
        self.last_error = Some(error);
        self.last_error_at = Some(DateTime::<Utc>::from(SystemTime::now()));
        if self.state == HealthState::Healthy {
            self.state = HealthState::Degraded;
            return Some(Transition {
                from: HealthState::Healthy,
                to: HealthState::Degraded,
            });
        }
        None
    }

    /// Takes the sink out of the log.
    pub(crate) fn fail_permanently(&mut self, error: String) -> Option<Transition> {
        let from = self.state;
        self.total_failures += 1;
        self.consecutive_successes = 0;
        self.last_error = Some(error);
        self.last_error_at = Some(DateTime::<Utc>::from(SystemTime::now()));
        self.state = HealthState::Failed;
        (from != HealthState::Failed).then_some(Transition {
            from,
            to: HealthState::Failed,
        })
    }
}

impl SinkHealth {
    /// Brings a sink that was taken out of the log back in, degraded until
    /// it has had its run of successes.
    pub(crate) fn rejoin(&mut self) -> Option<Transition> {
        let from = self.state;
        self.consecutive_failures = 0;
        self.consecutive_successes = 0;
        self.state = HealthState::Degraded;
        (from != HealthState::Degraded).then_some(Transition {
            from,
            to: HealthState::Degraded,
        })
    }
}

/// The whole log's health: serialize it for a /health endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct HealthSnapshot {
    /// `healthy` when every sink is, `failed` when the log cannot meet its
    /// threshold, `degraded` otherwise.
    pub status: HealthState,
    /// The chain head's sequence (0 for an empty log).
    pub head_seq: u64,
    /// Entries waiting in the queue.
    pub queued: usize,
    /// Each sink.
    pub sinks: Vec<SinkHealth>,
}

impl HealthSnapshot {
    pub(crate) fn recompute_status(&mut self, threshold: usize) {
        let usable = self
            .sinks
            .iter()
            .filter(|s| s.state != HealthState::Failed)
            .count();
        let required_failed = self
            .sinks
            .iter()
            .any(|s| s.role == Role::Required && s.state == HealthState::Failed);
        self.status = if usable < threshold || required_failed {
            HealthState::Failed
        } else if self.sinks.iter().all(|s| s.state == HealthState::Healthy) {
            HealthState::Healthy
        } else {
            HealthState::Degraded
        };
    }

    /// True when every sink that is not failed holds the whole chain.
    pub fn caught_up(&self) -> bool {
        self.sinks
            .iter()
            .all(|s| s.state == HealthState::Failed || s.durable_seq == self.head_seq)
    }
}

/// Logs a sink's health transition at the level it deserves.
pub(super) fn log_transition(
    health: &SinkHealth,
    from: HealthState,
    to: HealthState,
    error: Option<&str>,
) {
    let sink = health.name.as_str();
    let (failures, successes) = (health.consecutive_failures, health.consecutive_successes);
    match to {
        HealthState::Healthy => tracing::info!(sink, ?from, ?to, successes, "audit sink recovered"),
        HealthState::Degraded => {
            tracing::warn!(sink, ?from, ?to, failures, error, "audit sink degraded")
        }
        HealthState::Failed => tracing::error!(sink, ?from, ?to, error, "audit sink failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_on_first_failure_healthy_after_n_successes() {
        let mut h = SinkHealth::new("s".into(), Role::Required, 0);
        assert_eq!(h.success(3), None);
        let t = h.failure("boom".into()).expect("healthy -> degraded");
        assert_eq!(
            (t.from, t.to),
            (HealthState::Healthy, HealthState::Degraded)
        );
        assert_eq!(h.failure("boom".into()), None);
        assert_eq!((h.consecutive_failures, h.total_failures), (2, 2));
        assert_eq!(h.success(3), None);
        assert_eq!(h.success(3), None);
        // A failure mid-recovery restarts the count.
        assert_eq!(h.failure("again".into()), None);
        assert_eq!(h.consecutive_successes, 0);
        assert_eq!(h.success(3), None);
        assert_eq!(h.success(3), None);
        assert_eq!(h.state, HealthState::Degraded);
        let t = h.success(3).expect("third success recovers");
        assert_eq!(
            (t.from, t.to),
            (HealthState::Degraded, HealthState::Healthy)
        );
        assert_eq!(
            (h.total_failures, h.last_error.as_deref()),
            (3, Some("again"))
        );
    }

    #[test]
    fn failed_is_sticky() {
        let mut h = SinkHealth::new("s".into(), Role::Optional, 0);
        assert!(h.fail_permanently("overflow".into()).is_some());
        for _ in 0..5 {
            assert_eq!(h.success(3), None);
        }
        assert_eq!(h.state, HealthState::Failed);
    }
}
