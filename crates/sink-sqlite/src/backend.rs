//! The SQLite sink: a dedicated thread owns the connection.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use audit_core::lock_file::{InodeLock, LockFile};
use audit_core::sink::index_values;
use audit_core::worker::SinkThread;
use audit_core::{
    ChainHead, Location, Record, RecordBatch, RecordCursor, RecordReader, Sink, SinkCapabilities,
    SinkError,
};
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use crate::error::map;
use crate::reader::SqliteLog;
use crate::schema::{create, inspect, Found, Layout, SCHEMA_VERSION};

/// SQLite sink settings.
#[derive(Debug, Clone)]
pub struct SqliteSinkConfig {
    /// The sink's name in config, health and errors.
    pub name: String,
    /// The database file; created if absent.
    pub path: PathBuf,
    /// How long to wait for another connection's lock before failing.
    pub busy_timeout: Duration,
    /// `synchronous=FULL` (the default): every commit is fsynced before the
    /// batch is acknowledged. `false` selects `synchronous=NORMAL`, under which
    /// a power loss can lose the last acknowledged batches (a process crash
    /// cannot).
    pub synchronous_full: bool,
}

impl SqliteSinkConfig {
    /// Defaults: synchronous=FULL, 5-second busy timeout.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            synchronous_full: true,
        }
    }
}

/// A durable, queryable SQLite log. See the crate docs.
pub struct SqliteSink {
    name: String,
    writer: SinkThread<Writer>,
    reader: SqliteLog,
}

impl std::fmt::Debug for SqliteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SqliteSink {
    /// Opens or creates the database. Refuses, modifying nothing, a file that
    /// is not SQLite, a database with another schema or a newer schema version,
    /// and a database that is read-only or locked.
    pub async fn open(config: SqliteSinkConfig) -> Result<Self, SinkError> {
        let thread_config = config.clone();
        let writer = SinkThread::spawn("sqlite-sink", &config.name, move || {
            Writer::open(thread_config)
        })
        .await?;
        Ok(Self {
            name: config.name.clone(),
            writer,
            reader: SqliteLog::open_read_only(&config.path)
                .await?
                .with_name(config.name.clone()),
        })
    }

    /// Read access with queries, sharing this sink's file.
    pub fn log(&self) -> &SqliteLog {
        &self.reader
    }
}

#[async_trait]
impl RecordReader for SqliteSink {
    async fn read_from(&self, from_seq: u64) -> Result<Box<dyn RecordCursor>, SinkError> {
        self.reader.read_from(from_seq).await
    }
}

#[async_trait]
impl Sink for SqliteSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        let mut c = SinkCapabilities::persistent(true);
        c.indexed_query = true;
        c
    }

    async fn head(&self) -> Result<Option<ChainHead>, SinkError> {
        self.writer.call(|w| Ok(w.head)).await
    }

    async fn append(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        let batch = batch.clone();
        self.writer.call(move |w| w.append(&batch)).await
    }
}

struct Writer {
    name: String,
    path: PathBuf,
    conn: Connection,
    layout: Layout,
    head: Option<ChainHead>,
    checkpointer: Checkpointer,
    /// This writer's claim on the database; declared last, so it is released
    /// only after both connections have closed.
    _lock: LockFile,
    /// The same claim on the database file itself, so a second writer
    /// reaching it through a hard link (whose lock file would be another)
    /// is refused too. After the connections: closing it drops this
    /// process's POSIX locks on the file, SQLite's included.
    _inode_lock: InodeLock,
}

/// The database's path with every symbolic link resolved, for a database that
/// does not exist yet too (its directory resolved, its name kept).
fn real_path(database: &std::path::Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(database) {
        return real;
    }
    let parent = database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    match (std::fs::canonicalize(parent), database.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => database.to_path_buf(),
    }
}

/// The lock file beside a database: `<database>.lock`.
pub fn lock_path(database: &std::path::Path) -> PathBuf {
    let mut p = database.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Record bytes committed between two requests to the checkpointer: a few
/// hundred WAL pages. Larger gaps made each checkpoint's fsync of the database
/// longer and, on a shared disk, commits' p99 latency higher (10 ms at 8 MiB
/// against 7 ms at 1 MiB, three required sinks).
const CHECKPOINT_EVERY_BYTES: usize = 1 << 20;
/// SQLite's own automatic checkpoint, in WAL pages, kept only as a backstop
/// should the checkpointer fall behind.
const BACKSTOP_AUTOCHECKPOINT_PAGES: i64 = 16_000;

/// Copies the WAL back into the database on its own thread and connection.
/// SQLite's automatic checkpoint runs inside the commit that crosses its
/// threshold, on the appending thread: a quarter of that thread's time in bulk
/// inserts. A checkpoint changes no committed data, so moving it changes no
/// durability.
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    committed_bytes: usize,
}

impl Checkpointer {
    fn start(
        name: &str,
        path: &std::path::Path,
        busy_timeout: Duration,
    ) -> Result<Self, SinkError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| map(name, path, "open the checkpoint connection", e))?;
        conn.busy_timeout(busy_timeout)
            .map_err(|e| map(name, path, "set busy timeout", e))?;
        let (wake, requests) = std::sync::mpsc::sync_channel::<()>(1);
        let (sink, file) = (name.to_string(), path.to_path_buf());
        let thread = std::thread::Builder::new()
            .name(format!("sqlite-ckpt-{name}"))
            .spawn(move || {
                while requests.recv().is_ok() {
                    // PASSIVE: copies what it can without blocking the writer
                    // or readers; what it cannot copy waits for the next request.
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    match done {
                        Ok((wal_pages, copied)) => {
                            tracing::trace!(sink = %sink, wal_pages, copied, "checkpointed");
                        }
                        Err(e) => {
                            let e = map(&sink, &file, "checkpoint", e);
                            tracing::warn!(sink = %sink, error = %e, "WAL checkpoint failed; retried after the next commits");
                        }
                    }
                }
            })
            .map_err(|e| SinkError::Backend {
                sink: name.to_string(),
                detail: format!("cannot start the checkpoint thread: {e}"),
            })?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
            committed_bytes: 0,
        })
    }

    /// Counts a commit and asks for a checkpoint once enough has been written.
    /// Never blocks: a request already waiting covers this one.
    fn committed(&mut self, bytes: usize) {
        self.committed_bytes += bytes;
        if self.committed_bytes >= CHECKPOINT_EVERY_BYTES {
            self.committed_bytes = 0;
            if let Some(wake) = &self.wake {
                let _ = wake.try_send(());
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    fn open(config: SqliteSinkConfig) -> Result<Self, SinkError> {
        let (name, path) = (config.name.clone(), config.path.clone());
        let err = |op: &str| {
            let (name, path) = (name.clone(), path.clone());
            let op = op.to_string();
            move |e| map(&name, &path, &op, e)
        };
        // Before the database is created, opened or changed in any way. The
        // lock sits beside the real file: a second writer reaching the same
        // database through a symbolic link (to it or to its directory) must
        // meet the same lock.
        let lock = LockFile::acquire(&name, &lock_path(&real_path(&path)))?;
        if !path.exists() {
            // Create the file ourselves so that it (and SQLite's -wal and -shm
            // files, which copy its mode) is readable by the owner only.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| SinkError::Io {
                    sink: name.clone(),
                    op: "create database",
                    path: path.clone(),
                    source: e,
                })?;
        }
        crate::error::check_regular_files(&name, &path)?;
        let inode_lock = InodeLock::acquire(&name, &path)?;
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err("open"))?;
        conn.busy_timeout(config.busy_timeout)
            .map_err(err("set busy timeout"))?;
        // SQLite silently falls back to read-only when the file cannot be
        // opened for writing; an audit sink must not.
        if conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(err("check access"))?
        {
            return Err(SinkError::Config {
                sink: name,
                detail: format!(
                    "{} is read-only; the sink needs to write to it",
                    path.display()
                ),
            });
        }
        let found = inspect(&conn).map_err(err("read schema"))?;
        let layout = match found {
            Found::Foreign(why) => {
                return Err(SinkError::Config {
                    sink: name,
                    detail: format!("{} is not an auditlog database: {why}", path.display()),
                })
            }
            Found::Ours(v) if v > SCHEMA_VERSION => {
                return Err(SinkError::Config {
                    sink: name,
                    detail: format!(
                        "{} has schema version {v}, newer than this build's {SCHEMA_VERSION}; upgrade auditlog",
                        path.display()
                    ),
                })
            }
            Found::Ours(v) => match Layout::of(v) {
                Some(layout) => Some(layout),
                None => {
                    return Err(SinkError::Config {
                        sink: name,
                        detail: format!(
                            "{} has schema version {v}, which no auditlog build writes",
                            path.display()
                        ),
                    })
                }
            },
            Found::Empty => None,
        };
        // Take the write lock before changing anything, so a read-only or
        // locked database fails here, untouched.
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(err("take the write lock"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err("enable WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SinkError::Config {
                sink: name,
                detail: format!(
                    "{}: journal_mode is {mode}, WAL could not be enabled",
                    path.display()
                ),
            });
        }
        let sync = if config.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(err("set synchronous"))?;
        let layout = match layout {
            Some(layout) => layout,
            None => {
                create(&mut conn).map_err(err("create schema"))?;
                Layout::HashesInText
            }
        };
        conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_AUTOCHECKPOINT_PAGES)
            .map_err(err("set wal_autocheckpoint"))?;
        let checkpointer = Checkpointer::start(&name, &path, config.busy_timeout)?;
        let mut w = Self {
            name,
            path,
            conn,
            layout,
            head: None,
            checkpointer,
            _lock: lock,
            _inode_lock: inode_lock,
        };
        w.head = w.read_head()?;
        Ok(w)
    }

    fn err(&self, op: &str) -> impl Fn(rusqlite::Error) -> SinkError + '_ {
        let op = op.to_string();
        move |e| map(&self.name, &self.path, &op, e)
    }

    fn read_head(&self) -> Result<Option<ChainHead>, SinkError> {
        let row: Option<(i64, Vec<u8>)> = match self.conn.query_row(
            "SELECT seq, CAST(record AS BLOB) FROM records ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ) {
            Ok(v) => Some(v),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(e) => return Err(self.err("read head")(e)),
        };
        let Some((rowid, text)) = row else {
            return Ok(None);
        };
        let rec = Record::from_text(&text).map_err(|e| SinkError::Corrupt {
            sink: self.name.clone(),
            location: Location::Row {
                path: self.path.clone(),
                rowid,
            },
            detail: format!("the last record does not verify, refusing to append after it: {e}"),
        })?;
        Ok(Some(rec.head()))
    }

    fn append(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        batch.check_continues(&self.name, self.head)?;
        let mut rows = Vec::with_capacity(batch.records().len());
        for r in batch.records() {
            let text = std::str::from_utf8(r.text()).map_err(|e| SinkError::Backend {
                sink: self.name.clone(),
                detail: format!("record {} is not UTF-8: {e}", r.seq()),
            })?;
            let cols = index_values(text).map_err(|e| SinkError::Backend {
                sink: self.name.clone(),
                detail: format!("record {}: cannot read its indexed members: {e}", r.seq()),
            })?;
            let seq = i64::try_from(r.seq()).map_err(|_| SinkError::Backend {
                sink: self.name.clone(),
                detail: format!("record {} does not fit SQLite's integer key", r.seq()),
            })?;
            rows.push((seq, text, cols));
        }
        let name = self.name.clone();
        let path = self.path.clone();
        let err = |op: &str| {
            let (name, path, op) = (name.clone(), path.clone(), op.to_string());
            move |e| map(&name, &path, &op, e)
        };
        // Dropping the transaction on an error rolls it back: nothing is left.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin"))?;
        {
            let mut stmt = tx
                .prepare_cached(self.layout.insert_sql())
                .map_err(err("prepare insert"))?;
            for ((seq, text, cols), r) in rows.iter().zip(batch.records()) {
                let [agent, tool, decision, request, session] = &cols.text;
                let (agent, tool, decision) =
                    (agent.as_deref(), tool.as_deref(), decision.as_deref());
                let (request, session) = (request.as_deref(), session.as_deref());
                let inserted = match self.layout {
                    Layout::HashesInText => stmt.execute(params![
                        seq, text, cols.ts_ns, agent, tool, decision, request, session
                    ]),
                    Layout::StoredHashes => stmt.execute(params![
                        seq,
                        text,
                        cols.ts_ns,
                        agent,
                        tool,
                        decision,
                        request,
                        session,
                        r.hash().to_hex().as_str(),
                        r.prev().to_string()
                    ]),
                };
                if let Err(e) = inserted {
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
                        drop(stmt);
                        drop(tx);
                        // Someone else wrote this sequence: report the real head.
                        let head = self.read_head()?;
                        self.head = head;
                        return Err(SinkError::NotContiguous {
                            sink: self.name.clone(),
                            head,
                            got_seq: batch.first().seq(),
                            got_prev: batch.first().prev(),
                        });
                    }
                    return Err(err("insert")(e));
                }
            }
        }
        tx.commit().map_err(err("commit"))?;
        self.head = Some(batch.last().head());
        self.checkpointer
            .committed(batch.records().iter().map(|r| r.line().len()).sum());
        Ok(())
    }
}
