//! Fault injection for the file sink's writes, used by its tests.
//! Real I/O runs unless a test arms a fault here.

use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Faults armed by a test. Each counter fires once per arming.
#[derive(Debug, Default)]
pub struct IoFaults {
    /// If >= 0: the next write stores only this many bytes, then fails with ENOSPC.
    torn_write_after: AtomicI64,
    /// Fail this many upcoming fdatasync calls with EIO.
    failing_syncs: AtomicU64,
    /// Fail this many upcoming truncations (the clean-up after a failed write).
    failing_truncates: AtomicU64,
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
