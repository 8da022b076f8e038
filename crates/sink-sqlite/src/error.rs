//! One place that turns rusqlite's errors into sink errors that name the file.

use std::path::Path;

use audit_core::SinkError;
use rusqlite::ErrorCode;

pub(crate) fn map(sink: &str, path: &Path, op: &str, e: rusqlite::Error) -> SinkError {
    let file = path.display();
    let what = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => format!("{file} is not a SQLite database"),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("{file} is locked by another connection ({op})")
        }
        Some(ErrorCode::ReadOnly) => format!("{file} is read-only ({op})"),
        Some(ErrorCode::CannotOpen) => format!("cannot open {file} ({op}): {e}"),
        Some(ErrorCode::DiskFull) => format!("{file}: disk full ({op})"),
        _ => format!("{file}: {op}: {e}"),
    };
    SinkError::Backend {
        sink: sink.to_string(),
        detail: what,
    }
}

/// Refuses a database, or a `-wal`, `-shm` or `-journal` file beside it, that
/// exists and is not a regular file: SQLite would block forever reading a
/// FIFO planted under one of those names.
pub(crate) fn check_regular_files(sink: &str, path: &Path) -> Result<(), SinkError> {
    let mut candidates = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        candidates.push(p.into());
    }
    for p in candidates {
        // Follows symbolic links: what matters is what SQLite would open.
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let Some(what) = audit_core::worker::special_file_kind(&meta.file_type()) else {
            continue;
        };
        return Err(SinkError::Config {
            sink: sink.to_string(),
            detail: format!(
                "{} is {what}; a database and its side files must be regular files",
                p.display()
            ),
        });
    }
    Ok(())
}
