//! Fault injection for the file sink's writes, used by its tests.
//! Real I/O runs unless a test arms a fault here.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Faults armed by a test. Each counter fires once per arming.
#[derive(Debug, Default)]
pub struct IoFaults {
    /// If >= 0: the next write stores only this many bytes, then fails with ENOSPC.
    torn_write_after: AtomicI64,
    /// Fail this many upcoming fdatasync calls with EIO.
    failing_syncs: AtomicU64,
    /// Fail this many upcoming truncations (the clean-up after a failed write).
    failing_truncates: AtomicU64,
    /// The power-loss journal: what a power cut would take back.
    power: Mutex<Power>,
}

/// Writes not yet covered by a completed fdatasync, per file, and whether
/// the power is off (every write and sync then fails).
#[derive(Debug, Default)]
struct Power {
    unsynced: HashMap<PathBuf, Vec<(u64, u64)>>,
    off: bool,
}

/// What a power cut took back: per file, the byte ranges written since its
/// last completed fdatasync. [`LostWrites::apply`] makes the files look as
/// they would after the machine came back up.
#[derive(Debug, Default)]
pub struct LostWrites(pub HashMap<PathBuf, Vec<(u64, u64)>>);

impl LostWrites {
    /// Overwrites every lost range with zeros (the preallocated zeros, or
    /// the hole past the old end, that were there before the write).
    pub fn apply(&self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        for (path, ranges) in &self.0 {
            let file = std::fs::OpenOptions::new().write(true).open(path)?;
            for &(at, len) in ranges {
                file.write_all_at(&vec![0u8; len as usize], at)?;
            }
            file.sync_all()?;
        }
        Ok(())
    }
}

impl IoFaults {
    /// No faults armed.
    pub fn new() -> Self {
        Self {
            torn_write_after: AtomicI64::new(-1),
            ..Self::default()
        }
    }

    /// The next write stores `bytes` bytes and then fails as if the disk were full.
    pub fn tear_next_write(&self, bytes: usize) {
        self.torn_write_after.store(bytes as i64, Ordering::SeqCst);
    }

    /// The next `n` fdatasync calls fail with EIO.
    pub fn fail_syncs(&self, n: u64) {
        self.failing_syncs.store(n, Ordering::SeqCst);
    }

    /// The next `n` truncations fail with EIO.
    pub fn fail_truncates(&self, n: u64) {
        self.failing_truncates.store(n, Ordering::SeqCst);
    }

    /// Cuts the power: from now on every write and sync of the sink fails,
    /// and what was written since each file's last completed fdatasync is
    /// returned, to be taken back with [`LostWrites::apply`] once the sink
    /// is gone. A sync that completed before the cut keeps its writes.
    pub fn cut_power(&self) -> LostWrites {
        let mut p = self.power.lock().unwrap_or_else(|e| e.into_inner());
        p.off = true;
        LostWrites(std::mem::take(&mut p.unsynced))
    }

    /// A write of `len` bytes at `at` in `path`, journalled for a power cut.
    /// Fails once the power is off.
    pub(crate) fn write_at(&self, file: &File, path: &Path, buf: &[u8], at: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut p = self.power.lock().unwrap_or_else(|e| e.into_inner());
        if p.off {
            return Err(io::Error::other("simulated power loss"));
        }
        file.write_all_at(buf, at)?;
        p.unsynced
            .entry(path.to_path_buf())
            .or_default()
            .push((at, buf.len() as u64));
        Ok(())
    }

    /// An fdatasync of `path`: once it completes, the file's journalled
    /// writes are durable. The journal is held across the call, so a power
    /// cut falls either before it (the writes are lost) or after.
    pub(crate) fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        let mut p = self.power.lock().unwrap_or_else(|e| e.into_inner());
        if p.off {
            return Err(io::Error::other("simulated power loss"));
        }
        file.sync_data()?;
        p.unsynced.remove(path);
        Ok(())
    }

    pub(crate) fn take_torn_write(&self) -> Option<usize> {
        let v = self.torn_write_after.swap(-1, Ordering::SeqCst);
        usize::try_from(v).ok()
    }

    pub(crate) fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(crate) fn sync_fault(&self) -> Option<io::Error> {
        Self::take(&self.failing_syncs)
            .then(|| io::Error::other("injected fdatasync failure (EIO)"))
    }

    pub(crate) fn truncate_fault(&self) -> Option<io::Error> {
        Self::take(&self.failing_truncates)
            .then(|| io::Error::other("injected truncate failure (EIO)"))
    }
}
