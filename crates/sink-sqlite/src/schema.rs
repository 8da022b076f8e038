//! The database schema, its version, and migrations.

use rusqlite::Connection;

/// `PRAGMA application_id` of auditlog databases: "AUDT".
pub const APPLICATION_ID: i32 = 0x4155_4454;
/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 1;

/// Migrations: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    r#"
    CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        record_hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        record TEXT NOT NULL,
        ts_ns INTEGER,
        agent_id TEXT,
        tool_called TEXT,
        authorization_decision TEXT,
        request_id TEXT,
        task_session_id TEXT
    );
    CREATE INDEX records_ts_ns ON records(ts_ns);
    CREATE INDEX records_agent_id ON records(agent_id, ts_ns);
    CREATE INDEX records_tool_called ON records(tool_called, ts_ns);
    CREATE INDEX records_decision ON records(authorization_decision, ts_ns);
    CREATE INDEX records_request_id ON records(request_id);
    CREATE INDEX records_task_session_id ON records(task_session_id);
    CREATE TRIGGER records_no_update BEFORE UPDATE ON records
        BEGIN SELECT RAISE(ABORT, 'auditlog: records are append-only'); END;
    CREATE TRIGGER records_no_delete BEFORE DELETE ON records
        BEGIN SELECT RAISE(ABORT, 'auditlog: records are append-only'); END;
    "#,
];

/// What an existing file holds.
pub(crate) enum Found {
    /// A new, empty database.
    Empty,
    /// An auditlog database at this schema version.
    Ours(i32),
    /// Something else.
    Foreign(String),
}

pub(crate) fn inspect(conn: &Connection) -> rusqlite::Result<Found> {
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    Ok(if app == APPLICATION_ID {
        Found::Ours(version)
    } else if app == 0 && tables == 0 {
        Found::Empty
    } else if app == 0 {
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name LIMIT 5")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Found::Foreign(format!(
            "it holds other tables ({}) and no auditlog schema",
            names.join(", ")
        ))
    } else {
        Found::Foreign(format!(
            "its application_id is {app:#x}, not auditlog's {APPLICATION_ID:#x}"
        ))
    })
}

/// Brings the schema from `from` to [`SCHEMA_VERSION`] in one transaction.
pub(crate) fn migrate(conn: &mut Connection, from: i32) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for step in &MIGRATIONS[from as usize..SCHEMA_VERSION as usize] {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}
