//! The database schema, its versions, and how rows are laid out in each.
//!
//! - **Version 2** (what this build creates) stores each record's text once.
//!   The view `record_hashes` reads the record and prev hashes from the chain
//!   members at the end of the text, for SQL users; nothing computes them
//!   when a row is inserted.
//! - **Version 1** stored both hashes as hex in every row, about a sixth of a
//!   ~800-byte row. Version 1 databases are read and appended to in their own
//!   layout; they are never rewritten.
//!
//! Databases created by this build also declare `CHECK (seq > 0)`. That is
//! not a new version: rows are laid out as before, and a version 2 database
//! without the check (or a version 1 one) is read and appended to as it is.

use rusqlite::Connection;

/// `PRAGMA application_id` of auditlog databases: "AUDT".
pub const APPLICATION_ID: i32 = 0x4155_4454;
/// The schema version this build creates (`PRAGMA user_version`). It reads
/// and appends to every version from 1 up to this one.
pub const SCHEMA_VERSION: i32 = 2;

/// The current schema.
///
/// The hashes are not columns, not even virtual ones: SQLite computes a
/// table's generated columns on every insert, and those `substr` calls over
/// the whole text took all of what leaving the stored hashes out had gained (SQLite alone, batches of 1,000: 113–121
/// k/s with virtual columns, 145–152 without, 119–129 for version 1).
///
/// A record's text ends with
/// `,"chain_prev_hash":"<P>","chain_record_hash":"<64 hex>"}`, where `<P>` is
/// 64 hex digits or `genesis` (docs/FORMAT.md), so the view finds both
/// hashes at fixed offsets from the end. The offsets count characters, and
/// that suffix is ASCII. Verification never reads the view, only the text.
///
/// `CHECK (seq > 0)`: records start at 1, and the triggers stop UPDATE and
/// DELETE but not an INSERT, so without it a row keyed 0 or below could be
/// slipped in beside the chain. Databases created before the check have
/// version 2 all the same: the row layout did not change, every build reads
/// and appends to both, and the verifier reports such a row whether or not
/// the database refuses it (docs/FORMAT.md section 8).
const CREATE: &str = r#"
    CREATE TABLE records (
        seq INTEGER PRIMARY KEY CHECK (seq > 0),
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
    CREATE VIEW record_hashes AS SELECT
        seq,
        substr(record, -66, 64) AS record_hash,
        CASE WHEN substr(record, -96, 7) = 'genesis' THEN 'genesis'
             ELSE substr(record, -153, 64) END AS prev_hash
    FROM records;
"#;

/// How a database's rows are written, by its schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Version 1: the hashes are stored in every row.
    StoredHashes,
    /// Version 2: the hashes are only in the text.
    HashesInText,
}

impl Layout {
    /// The layout of schema `version`, if this build writes it.
    pub(crate) fn of(version: i32) -> Option<Self> {
        match version {
            1 => Some(Self::StoredHashes),
            2 => Some(Self::HashesInText),
            _ => None,
        }
    }

    /// The row insert, its parameters in the order the writer binds them.
    pub(crate) fn insert_sql(self) -> &'static str {
        match self {
            Self::StoredHashes => {
                "INSERT INTO records (seq, record, ts_ns, agent_id, tool_called, authorization_decision, \
                 request_id, task_session_id, record_hash, prev_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            }
            Self::HashesInText => {
                "INSERT INTO records (seq, record, ts_ns, agent_id, tool_called, authorization_decision, \
                 request_id, task_session_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            }
        }
    }
}

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

/// Creates the current schema in an empty database, in one transaction.
pub(crate) fn create(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(CREATE)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}
