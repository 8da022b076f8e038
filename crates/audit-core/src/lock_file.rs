//! One writer per log. Two writers that each resume the chain from the head
//! they read would both append after it: the second overwrites or forks
//! records the first has already acknowledged. So a backend that appends to
//! local files holds an exclusive lock on a file beside them for as long as
//! it is open for writing. Readers (the verifier, queries) take no lock.
//!
//! The lock is `flock(2)`: the kernel drops it when the holder exits, however
//! it exits (a SIGKILL included), so a crash never leaves a stale lock behind.
//! Locks are per open file, so a second sink on the same log in the same
//! process is refused too.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::sink::SinkError;

/// An I/O error of `op` on the lock at `path`, for `sink`.
fn io_error<'a>(
    sink: &'a str,
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SinkError + 'a {
    move |source| SinkError::Io {
        sink: sink.to_string(),
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// An exclusive lock held on a file until this value is dropped.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    // Held only for its lock, which closing the file releases.
    _file: File,
}

impl LockFile {
    /// Takes the lock on `path` (created, mode 0600, if absent) without
    /// waiting. When another writer holds it, returns [`SinkError::InUse`]
    /// with that writer's pid if it recorded one.
    pub fn acquire(sink: &str, path: &Path) -> Result<Self, SinkError> {
        let io = |op| io_error(sink, op, path);
        // O_NOFOLLOW: a symbolic link planted at the lock's path must not
        // make the writer (often root) write its pid into the link's target.
        // O_NONBLOCK: a FIFO there must not hang the open.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(io("open lock file"))?;
        let meta = file.metadata().map_err(io("stat lock file"))?;
        if !meta.is_file() {
            return Err(io("open lock file")(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder writes its pid just after it takes the lock, so
                // this may find nothing yet; the pid is only for the message.
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(SinkError::InUse {
                    sink: sink.to_string(),
                    path: path.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        // Only for the next writer's error message: the lock itself is what
        // excludes it, so failing to record the pid is not an error. The
        // file is emptied only now, under the lock, so a refused writer
        // never clears the holder's pid.
        let recorded = file
            .set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
        if let Err(e) = recorded {
            tracing::debug!(sink, path = %path.display(), error = %e, "could not record the pid in the lock file");
        }
        Ok(Self {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// The locked file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An exclusive lock on a file that another library also opens (a SQLite
/// database), identified by its device and inode, not by its path: a second
/// writer reaching the same file through a hard link, a symbolic link or a
/// bind mount meets the same lock, while a lock file named after a path
/// would not.
///
/// It is `flock(2)` on the file itself, which SQLite's own `fcntl` locks do
/// not interact with on Linux. But closing any descriptor of a file drops
/// every POSIX lock this process holds on it, SQLite's included, so a second
/// attempt in the same process must not even open the file: a process-wide
/// set of held inodes refuses it first.
#[derive(Debug)]
pub struct InodeLock {
    inode: (u64, u64),
    path: PathBuf,
    // Held only for its lock; drop it only after the other library has
    // closed the file.
    _file: File,
}

/// The (device, inode) pairs this process holds an [`InodeLock`] on.
static HELD: Mutex<BTreeSet<(u64, u64)>> = Mutex::new(BTreeSet::new());

fn held() -> std::sync::MutexGuard<'static, BTreeSet<(u64, u64)>> {
    // The set stays consistent whatever panicked while holding it.
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

impl InodeLock {
    /// Takes the lock on the existing regular file at `path` without
    /// waiting. When another writer (in this process or another) holds it,
    /// returns [`SinkError::InUse`].
    pub fn acquire(sink: &str, path: &Path) -> Result<Self, SinkError> {
        let io = |op| io_error(sink, op, path);
        let in_use = || SinkError::InUse {
            sink: sink.to_string(),
            path: path.to_path_buf(),
            holder: None,
        };
        let meta = std::fs::metadata(path).map_err(io("stat"))?;
        if !meta.is_file() {
            return Err(io("stat")(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let inode = (meta.dev(), meta.ino());
        if !held().insert(inode) {
            return Err(SinkError::InUse {
                sink: sink.to_string(),
                path: path.to_path_buf(),
                holder: Some(std::process::id()),
            });
        }
        let release = || {
            held().remove(&inode);
        };
        // O_NONBLOCK: the path may have been swapped for a FIFO since.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => {
                release();
                return Err(io("open")(e));
            }
        };
        // The path may have been swapped for another file since the stat.
        let same = file
            .metadata()
            .is_ok_and(|m| (m.dev(), m.ino()) == inode && m.is_file());
        if !same {
            release();
            return Err(io("open")(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the file changed while it was being locked",
            )));
        }
        match file.try_lock() {
            Ok(()) => Ok(Self {
                inode,
                path: path.to_path_buf(),
                _file: file,
            }),
            Err(TryLockError::WouldBlock) => {
                release();
                Err(in_use())
            }
            Err(TryLockError::Error(e)) => {
                release();
                Err(io("lock")(e))
            }
        }
    }

    /// The path the lock was taken through.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InodeLock {
    fn drop(&mut self) {
        held().remove(&self.inode);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_symbolic_link_at_the_lock_path_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").expect("write");
        let path = dir.path().join("audit.lock");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        match super::LockFile::acquire("a", &path) {
            Err(SinkError::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected an Io error naming the lock, got {other:?}"),
        }
        assert_eq!(std::fs::read(&target).expect("read"), b"keep me");
        let fifo = dir.path().join("fifo.lock");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(super::LockFile::acquire("a", &fifo).is_err());
        }
    }

    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("LOCK");
        let first = LockFile::acquire("a", &path).expect("first");
        match LockFile::acquire("b", &path) {
            Err(SinkError::InUse {
                sink,
                path: p,
                holder,
            }) => {
                assert_eq!(sink, "b");
                assert_eq!(p, path);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        let again = LockFile::acquire("b", &path).expect("free again");
        assert_eq!(again.path(), path);
    }

    #[test]
    fn a_lock_file_without_a_pid_still_refuses_the_second_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("LOCK");
        let _first = LockFile::acquire("a", &path).expect("first");
        // Whatever the file says, the lock is what excludes.
        std::fs::write(&path, "not a pid\n").expect("garble");
        match LockFile::acquire("b", &path) {
            Err(e @ SinkError::InUse { holder: None, .. }) => {
                assert!(!e.to_string().contains("(pid "), "{e}");
            }
            other => panic!("expected InUse without a pid, got {other:?}"),
        }
    }

    #[test]
    fn an_inode_lock_refuses_a_hard_link_or_a_symlink_in_this_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"").expect("create");
        let hard = dir.path().join("hard.db");
        std::fs::hard_link(&db, &hard).expect("hard link");
        let soft = dir.path().join("soft.db");
        std::os::unix::fs::symlink(&db, &soft).expect("symlink");
        let first = InodeLock::acquire("a", &db).expect("first");
        for alias in [&db, &hard, &soft] {
            match InodeLock::acquire("b", alias) {
                Err(SinkError::InUse { holder, .. }) => {
                    assert_eq!(holder, Some(std::process::id()))
                }
                other => panic!("{}: expected InUse, got {other:?}", alias.display()),
            }
        }
        drop(first);
        let again = InodeLock::acquire("b", &hard).expect("free again");
        assert_eq!(again.path(), hard);
    }

    #[test]
    fn an_unopenable_lock_path_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("LOCK");
        match LockFile::acquire("a", &path) {
            Err(SinkError::Io { path: p, op, .. }) => {
                assert_eq!(p, path);
                assert_eq!(op, "open lock file");
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
