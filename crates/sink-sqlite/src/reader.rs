//! Reading and querying a SQLite log, read-only.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use audit_core::record::parse_chain_suffix;
use audit_core::sink::INDEX_COLUMNS;
use audit_core::{Location, RecordCursor, RecordReader, SinkError, StoredRecord};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::map;
use crate::schema::{inspect, Found, SCHEMA_VERSION};

/// A SQLite log opened read-only, for verification, backfill and queries.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    name: String,
    path: PathBuf,
    max_line: usize,
}

/// Filters for [`SqliteLog::query`]; all given filters must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// `agent_id` equals.
    pub agent: Option<String>,
    /// `tool_called` equals.
    pub tool: Option<String>,
    /// `authorization_decision` equals.
    pub decision: Option<String>,
    /// `request_id` equals.
    pub request_id: Option<String>,
    /// `task_session_id` equals.
    pub task_session_id: Option<String>,
    /// At or after this time, in nanoseconds since the Unix epoch.
    pub since_ns: Option<i64>,
    /// Before this time, in nanoseconds since the Unix epoch.
    pub until_ns: Option<i64>,
    /// At most this many rows.
    pub limit: Option<u64>,
}

/// One query result: enough to check it against the chain.
#[derive(Debug, Clone, Serialize)]
pub struct QueryRow {
    /// The record's sequence.
    pub seq: u64,
    /// The record's `chain_record_hash` as its text states it (not checked
    /// against the bytes; `audit verify` does that), or empty if the text's
    /// chain members cannot be read.
    pub record_hash: String,
    /// The verbatim record.
    pub record: String,
}

fn open_conn(name: &str, path: &Path) -> Result<Connection, SinkError> {
    if !path.exists() {
        return Err(SinkError::Config {
            sink: name.to_string(),
            detail: format!("{} does not exist", path.display()),
        });
    }
    crate::error::check_regular_files(name, path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| map(name, path, "open read-only", e))?;
    match inspect(&conn).map_err(|e| map(name, path, "read schema", e))? {
        Found::Ours(v) if v <= SCHEMA_VERSION && v > 0 => Ok(conn),
        Found::Ours(v) => Err(SinkError::Config {
            sink: name.to_string(),
            detail: format!(
                "{} has schema version {v}; this build reads up to {SCHEMA_VERSION}",
                path.display()
            ),
        }),
        Found::Empty => Err(SinkError::Config {
            sink: name.to_string(),
            detail: format!("{} holds no auditlog schema", path.display()),
        }),
        Found::Foreign(why) => Err(SinkError::Config {
            sink: name.to_string(),
            detail: format!("{} is not an auditlog database: {why}", path.display()),
        }),
    }
}

impl SqliteLog {
    /// Opens `path` read-only, checking it is an auditlog database.
    pub async fn open_read_only(path: impl Into<PathBuf>) -> Result<Self, SinkError> {
        let path = path.into();
        let log = Self {
            name: path.display().to_string(),
            path,
            max_line: 16 << 20,
        };
        let (name, p) = (log.name.clone(), log.path.clone());
        blocking(&log.name, move || open_conn(&name, &p).map(drop)).await?;
        Ok(log)
    }

    /// The same log reported under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Records matching `q`, in time order, each with its sequence and hash.
    pub async fn query(&self, q: &Query) -> Result<Vec<QueryRow>, SinkError> {
        let (name, path, q) = (self.name.clone(), self.path.clone(), q.clone());
        blocking(&self.name, move || {
            let conn = open_conn(&name, &path)?;
            let mut sql = String::from("SELECT seq, CAST(record AS BLOB) FROM records WHERE 1=1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            for (col, val) in [
                ("agent_id", &q.agent),
                ("tool_called", &q.tool),
                ("authorization_decision", &q.decision),
                ("request_id", &q.request_id),
                ("task_session_id", &q.task_session_id),
            ] {
                if let Some(v) = val {
                    args.push(v.clone().into());
                    sql.push_str(&format!(" AND {col} = ?{}", args.len()));
                }
            }
            if let Some(t) = q.since_ns {
                args.push(t.into());
                sql.push_str(&format!(" AND ts_ns >= ?{}", args.len()));
            }
            if let Some(t) = q.until_ns {
                args.push(t.into());
                sql.push_str(&format!(" AND ts_ns < ?{}", args.len()));
            }
            sql.push_str(" ORDER BY ts_ns, seq");
            if let Some(l) = q.limit {
                args.push(i64::try_from(l).unwrap_or(i64::MAX).into());
                sql.push_str(&format!(" LIMIT ?{}", args.len()));
            }
            let err = |e| map(&name, &path, "query", e);
            let mut stmt = conn.prepare(&sql).map_err(err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| {
                    let seq: i64 = r.get(0)?;
                    let bytes: Vec<u8> = r.get(1)?;
                    let record_hash = parse_chain_suffix(&bytes)
                        .map(|(_, _, hash, _)| hash.to_hex().to_string())
                        .unwrap_or_default();
                    Ok(QueryRow {
                        seq: seq as u64,
                        record_hash,
                        record: String::from_utf8_lossy(&bytes).into_owned(),
                    })
                })
                .map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SinkError::Backend {
            sink: name.to_string(),
            detail: format!("SQLite task failed: {e}"),
        })?
}

#[async_trait]
impl RecordReader for SqliteLog {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        let (name, path) = (self.name.clone(), self.path.clone());
        let conn = blocking(&self.name, move || open_conn(&name, &path)).await?;
        Ok(Box::new(SqliteCursor {
            name: self.name.clone(),
            path: self.path.clone(),
            conn: Some(conn),
            next: i64::try_from(from_seq).unwrap_or(i64::MAX),
            max_line: self.max_line,
        }))
    }
}

struct SqliteCursor {
    name: String,
    path: PathBuf,
    conn: Option<Connection>,
    next: i64,
    max_line: usize,
}

#[async_trait]
impl RecordCursor for SqliteCursor {
    async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<StoredRecord>>, SinkError> {
        let Some(conn) = self.conn.take() else {
            return Ok(None);
        };
        let (name, path, next, max_line) = (
            self.name.clone(),
            self.path.clone(),
            self.next,
            self.max_line,
        );
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = read_rows(&conn, &name, &path, next, max, max_line);
            (conn, r)
        })
        .await
        .map_err(|e| SinkError::Backend {
            sink: self.name.clone(),
            detail: format!("SQLite task failed: {e}"),
        })?;
        let rows = result?;
        match rows.last() {
            Some(StoredRecord {
                location: Location::Row { rowid, .. },
                ..
            }) => {
                self.next = rowid.saturating_add(1);
                self.conn = Some(conn);
                Ok(Some(rows))
            }
            _ => Ok(None),
        }
    }
}

/// Reads rows from `?1` on, at most `?2` of them. A record longer than `?3`
/// (the line limit) comes back as NULL with its length. An index column
/// longer than that comes back cut to its first `?3 + 1` bytes: such a column
/// cannot have come from its record, and those bytes show it as well as all of
/// it would, without a hostile database making the reader hold gigabytes.
static READ_ROWS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns = INDEX_COLUMNS
        .iter()
        .map(|c| {
            format!(
                "CASE WHEN length(CAST({c} AS BLOB)) > ?3 \
                 THEN substr(CAST({c} AS BLOB), 1, ?3 + 1) ELSE {c} END"
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT seq, length(CAST(record AS BLOB)), \
         CASE WHEN length(CAST(record AS BLOB)) > ?3 THEN NULL ELSE CAST(record AS BLOB) END, \
         {columns} FROM records WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
    )
});

fn read_rows(
    conn: &Connection,
    name: &str,
    path: &Path,
    from: i64,
    max: usize,
    max_line: usize,
) -> Result<Vec<StoredRecord>, SinkError> {
    let err = |e| map(name, path, "read records", e);
    let mut stmt = conn.prepare_cached(&READ_ROWS_SQL).map_err(err)?;
    let rows = stmt
        .query_map(
            rusqlite::params![from, max.max(1) as i64, max_line as i64],
            |r| {
                let rowid: i64 = r.get(0)?;
                let len: i64 = r.get(1)?;
                let text: Option<Vec<u8>> = r.get(2)?;
                let mut columns = Vec::with_capacity(INDEX_COLUMNS.len());
                for (i, col) in INDEX_COLUMNS.iter().enumerate() {
                    let v: Option<String> = match r.get_ref(3 + i)? {
                        rusqlite::types::ValueRef::Null => None,
                        rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                        rusqlite::types::ValueRef::Real(f) => Some(f.to_string()),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    };
                    columns.push((col.to_string(), v));
                }
                let mut item = StoredRecord::new(
                    Location::Row {
                        path: path.to_path_buf(),
                        rowid,
                    },
                    text.clone().unwrap_or_default(),
                );
                if text.is_none() {
                    item.oversized = Some(len as u64);
                }
                item.columns = Some(columns);
                Ok(item)
            },
        )
        .map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}
