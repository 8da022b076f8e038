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
    /// The verbatim record, as stored (not necessarily valid UTF-8: a
    /// tampered row may hold anything).
    pub record: Vec<u8>,
}

/// Where a read connection's view of the database comes from.
enum Mode {
    /// SQLite's shared-memory WAL index: a writer has the database open (or
    /// left its `-wal` behind), so the side files exist and SQLite's locks
    /// give each read a consistent snapshot.
    Shared,
    /// No `-wal` or `-journal`: all of the log is in the main file, read with
    /// `immutable=1`, which takes no lock and creates no side file. A
    /// read-only open without it would create `-wal` and `-shm` beside a WAL
    /// database and leave them there. Immutable reads are trusted only while
    /// the file is as it was at open ([`Snapshot::check`]).
    Immutable(Snapshot),
}

/// What a database file looked like when an immutable read began.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

impl Snapshot {
    fn take(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// Fails if a writer may have touched the database since the snapshot:
    /// a `-wal` or `-journal` appeared, or the file was written or replaced.
    /// An immutable connection does not see such changes and could read a
    /// half-checkpointed page; what it read is then not a verdict.
    fn check(&self, name: &str, path: &Path) -> Result<(), SinkError> {
        let changed = ["-wal", "-journal"]
            .iter()
            .any(|s| side_file(path, s).symlink_metadata().is_ok())
            || Snapshot::take(path).ok().as_ref() != Some(self);
        if changed {
            return Err(SinkError::Backend {
                sink: name.to_string(),
                detail: format!(
                    "{} was opened by a writer while it was being read; read it again",
                    path.display()
                ),
            });
        }
        Ok(())
    }
}

/// `path` as an SQLite URI filename (`file:` and the path, percent-encoded
/// outside the characters that cannot be misread as URI syntax).
fn uri(path: &Path, query: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push('?');
    out.push_str(query);
    out
}

fn open_conn(name: &str, path: &Path) -> Result<(Connection, Mode), SinkError> {
    if !path.exists() {
        return Err(SinkError::Config {
            sink: name.to_string(),
            detail: format!("{} does not exist", path.display()),
        });
    }
    crate::error::check_regular_files(name, path)?;
    let live = ["-wal", "-journal"]
        .iter()
        .any(|s| side_file(path, s).symlink_metadata().is_ok());
    let (conn, mode) = if live {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| map(name, path, "open read-only", e))?;
        (conn, Mode::Shared)
    } else {
        // The snapshot is taken before the open, so a write between the two
        // is seen by the first check.
        let snapshot = Snapshot::take(path).map_err(|e| SinkError::Io {
            sink: name.to_string(),
            op: "stat",
            path: path.to_path_buf(),
            source: e,
        })?;
        let conn = Connection::open_with_flags(
            uri(path, "mode=ro&immutable=1"),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| map(name, path, "open read-only", e))?;
        (conn, Mode::Immutable(snapshot))
    };
    let foreign = |detail: String| SinkError::Config {
        sink: name.to_string(),
        detail,
    };
    match inspect(&conn).map_err(|e| map(name, path, "read schema", e))? {
        Found::Ours(v) if v <= SCHEMA_VERSION && v > 0 => {}
        Found::Ours(v) => {
            return Err(foreign(format!(
                "{} has schema version {v}; this build reads up to {SCHEMA_VERSION}",
                path.display()
            )))
        }
        Found::Empty => {
            return Err(foreign(format!(
                "{} holds no auditlog schema",
                path.display()
            )))
        }
        Found::Foreign(why) => {
            return Err(foreign(format!(
                "{} is not an auditlog database: {why}",
                path.display()
            )))
        }
    }
    if let Some(why) = seq_is_not_rowid(&conn).map_err(|e| map(name, path, "read schema", e))? {
        return Err(foreign(format!(
            "{} is not an auditlog database: {why}",
            path.display()
        )));
    }
    Ok((conn, mode))
}

/// Why `records.seq` is not the table's rowid, if it is not.
///
/// The cursor pages through `records` by `seq`, which reads every row exactly
/// once only if `seq` is unique, never NULL and an integer: only when it is
/// the rowid itself (`INTEGER PRIMARY KEY` in a rowid table), as in every
/// schema auditlog has created. In a hand-made table where it is an ordinary
/// column, rows with a NULL or repeated `seq` would be skipped unseen.
/// SQLite builds an index of origin `pk` for every primary key except a rowid
/// alias (`WITHOUT ROWID` tables and `INTEGER PRIMARY KEY DESC` included), so
/// its absence tells the alias apart.
fn seq_is_not_rowid(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let keys: Vec<(String, String)> = conn
        .prepare("SELECT name, upper(type) FROM pragma_table_info('records') WHERE pk > 0")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let pk_index: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_index_list('records') WHERE origin = 'pk'",
        [],
        |r| r.get(0),
    )?;
    let alias = matches!(keys.as_slice(), [(n, t)] if n == "seq" && t == "INTEGER");
    Ok((!alias || pk_index > 0)
        .then(|| "its records table does not have seq as its INTEGER PRIMARY KEY (rowid)".into()))
}

impl SqliteLog {
    /// Opens `path` read-only, checking it is an auditlog database whose
    /// `records.seq` is the rowid.
    ///
    /// Reading never creates, repairs or locks anything when the database is
    /// closed (no `-wal` or `-journal` beside it): it is read `immutable`, and
    /// a read fails if a writer opens the database meanwhile. Beside a live
    /// database, whose side files exist, it reads through SQLite's shared WAL
    /// index like any reader.
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

    /// What SQLite's own `PRAGMA integrity_check` finds wrong with the
    /// database (at most 100 problems; empty when it is sound). Unlike
    /// `quick_check`, it compares every index with the table: an index
    /// rebuilt without some rows (its schema text put back through
    /// `writable_schema`) hides those rows from `audit query` while a read
    /// of the table sees them all.
    pub async fn integrity_problems(&self) -> Result<Vec<String>, SinkError> {
        let (name, path) = (self.name.clone(), self.path.clone());
        blocking(&self.name, move || {
            let (conn, mode) = open_conn(&name, &path)?;
            let problems: Vec<String> = conn
                .prepare("PRAGMA integrity_check(100)")
                .and_then(|mut st| {
                    st.query_map([], |r| r.get::<_, String>(0))?
                        .collect::<Result<_, _>>()
                })
                .map_err(|e| map(&name, &path, "integrity check", e))?;
            if let Mode::Immutable(snapshot) = &mode {
                snapshot.check(&name, &path)?;
            }
            Ok(if problems.len() == 1 && problems[0] == "ok" {
                Vec::new()
            } else {
                problems
            })
        })
        .await
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
            let (conn, mode) = open_conn(&name, &path)?;
            // A row keyed 0 or below cannot be a record of the log (records
            // start at 1); the verifier reports it, and a query must not
            // present it as one.
            let mut sql =
                String::from("SELECT seq, CAST(record AS BLOB) FROM records WHERE seq > 0");
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
                        seq: u64::try_from(seq).unwrap_or_default(),
                        record_hash,
                        record: bytes,
                    })
                })
                .map_err(err)?;
            let rows = rows.collect::<Result<Vec<_>, _>>().map_err(err)?;
            if let Mode::Immutable(snapshot) = &mode {
                snapshot.check(&name, &path)?;
            }
            Ok(rows)
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
    /// From `0`, every row of `records` in rowid order, rows keyed 0 or
    /// below included: the verifier reads that way, and such a row, though it
    /// cannot be a record, must be seen to be reported. From `1` on, rows
    /// keyed at least `from_seq`: the writer's catch-up and backfill read
    /// records of the chain, never those rows.
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        let (name, path) = (self.name.clone(), self.path.clone());
        let (conn, mode) = blocking(&self.name, move || open_conn(&name, &path)).await?;
        let next = match from_seq {
            0 => i64::MIN,
            n => i64::try_from(n).unwrap_or(i64::MAX),
        };
        Ok(Box::new(SqliteCursor {
            name: self.name.clone(),
            path: self.path.clone(),
            conn: Some((conn, mode)),
            next,
            max_line: self.max_line,
        }))
    }
}

struct SqliteCursor {
    name: String,
    path: PathBuf,
    /// `None` once every row has been read.
    conn: Option<(Connection, Mode)>,
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
            let mut r = read_rows(&conn.0, &name, &path, next, max, max_line);
            // Checked after the read: rows read from a file a writer changed
            // meanwhile may be torn, and must not reach a verdict.
            if let (Ok(_), Mode::Immutable(snapshot)) = (&r, &conn.1) {
                if let Err(e) = snapshot.check(&name, &path) {
                    r = Err(e);
                }
            }
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
                // A row keyed i64::MAX is the last there can be; saturating
                // there would read it again, for ever.
                if let Some(next) = rowid.checked_add(1) {
                    self.next = next;
                    self.conn = Some(conn);
                }
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
                    use rusqlite::types::ValueRef as V;
                    // A value of another storage class than the sink writes
                    // (an INTEGER `ts_ns`, TEXT for the rest) never equals
                    // one in a query, which binds that class: a BLOB or a
                    // number spelled like the record's value would hide the
                    // row from `audit query` while reading as a match here.
                    // So it is shown with its class, and disagrees.
                    let integer = *col == "ts_ns";
                    let v: Option<String> = match r.get_ref(3 + i)? {
                        V::Null => None,
                        V::Integer(n) if integer => Some(n.to_string()),
                        V::Text(t) if !integer => Some(match std::str::from_utf8(t) {
                            Ok(t) => t.to_owned(),
                            Err(_) => {
                                format!("(TEXT that is not UTF-8) {}", String::from_utf8_lossy(t))
                            }
                        }),
                        // Cut to the line limit by the query: too long to
                        // come from its record whatever its class.
                        V::Blob(t) if t.len() > max_line => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                        V::Integer(n) => Some(format!("(INTEGER) {n}")),
                        V::Real(f) => Some(format!("(REAL) {f}")),
                        V::Text(t) => Some(format!("(TEXT) {}", String::from_utf8_lossy(t))),
                        V::Blob(t) => Some(format!("(BLOB) {}", String::from_utf8_lossy(t))),
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
