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
