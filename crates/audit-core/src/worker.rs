//! A dedicated thread that owns a backend's blocking state (a file handle, a
//! SQLite connection) and runs one closure at a time for async callers, so
//! blocking I/O never runs on the async workers.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::sink::SinkError;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// What a file that is not a regular file is, for an error message, or `None`
/// for a regular file. Backends refuse such files where they expect their
/// own: reading a FIFO blocks, and a device never ends.
pub fn special_file_kind(kind: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    Some(if kind.is_file() {
        return None;
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    })
}

/// How long dropping a [`SinkThread`] waits for its thread by default.
pub const DEFAULT_DROP_WAIT: Duration = Duration::from_secs(10);

/// The handle to a backend's own thread. Dropping it lets the thread finish
/// the queued jobs, drop its state (which may flush or trim files) and exit,
/// and waits for that: once the handle is gone, so is everything the thread
/// would still have done to the backend's files.
///
/// The wait is bounded ([`DEFAULT_DROP_WAIT`], see
/// [`SinkThread::set_drop_wait`]): a thread stuck in a system call on a hung
/// disk or mount is left behind with an error event, rather than hanging
/// whoever dropped the sink (often an async worker, at shutdown).
pub struct SinkThread<S> {
    sink: String,
    jobs: Option<mpsc::Sender<Job<S>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Closed when the thread ends. In a mutex only to make the handle
    /// `Sync`; the drop, the one reader, has `&mut self`.
    exited: Option<std::sync::Mutex<mpsc::Receiver<()>>>,
    drop_wait: Duration,
}

impl<S> Drop for SinkThread<S> {
    fn drop(&mut self) {
        self.jobs = None;
        let Some(t) = self.thread.take() else { return };
        // The thread's end-of-life sender is dropped when it returns or
        // unwinds, which ends this wait either way.
        let finished = match self.exited.take() {
            Some(rx) => !matches!(
                rx.into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .recv_timeout(self.drop_wait),
                Err(mpsc::RecvTimeoutError::Timeout)
            ),
            None => true,
        };
        if !finished {
            tracing::error!(
                sink = %self.sink,
                waited = ?self.drop_wait,
                "the sink's thread is still busy (a hung disk?); leaving it behind"
            );
            return;
        }
        if t.join().is_err() {
            tracing::error!(sink = %self.sink, "the sink's thread panicked");
        }
    }
}

impl<S> std::fmt::Debug for SinkThread<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkThread")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl<S: 'static> SinkThread<S> {
    /// Starts a thread named `<kind>-<sink>` that builds its state with
    /// `init`, and waits until `init` has succeeded or failed.
    pub async fn spawn(
        kind: &str,
        sink: &str,
        init: impl FnOnce() -> Result<S, SinkError> + Send + 'static,
    ) -> Result<Self, SinkError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs, rx) = mpsc::channel::<Job<S>>();
        let (exited_tx, exited) = mpsc::channel::<()>();
        let gone = |detail: String| SinkError::Backend {
            sink: sink.to_string(),
            detail,
        };
        let thread = std::thread::Builder::new()
            .name(format!("{kind}-{sink}"))
            .spawn(move || {
                let _exited = exited_tx;
                match init() {
                    Ok(mut state) => {
                        let _ = ready_tx.send(Ok(()));
                        while let Ok(job) = rx.recv() {
                            job(&mut state);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| gone(format!("cannot start the {kind} thread: {e}")))?;
        ready_rx
            .await
            .map_err(|_| gone(format!("the {kind} thread ended during open")))??;
        Ok(Self {
            sink: sink.to_string(),
            jobs: Some(jobs),
            thread: Some(thread),
            exited: Some(std::sync::Mutex::new(exited)),
            drop_wait: DEFAULT_DROP_WAIT,
        })
    }

    /// Sets how long dropping this handle waits for the thread to finish its
    /// queued jobs and exit.
    pub fn set_drop_wait(&mut self, wait: Duration) {
        self.drop_wait = wait;
    }

    /// Runs `f` on the thread and returns its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let (tx, rx) = oneshot::channel();
        let gone = || SinkError::Backend {
            sink: self.sink.clone(),
            detail: "the sink's thread has stopped".into(),
        };
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Box::new(move |state| {
                let _ = tx.send(f(state));
            }))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread stuck in a job (a hung disk) does not hang whoever drops its
    /// handle: the drop gives up after its wait. A thread that finishes in
    /// time is joined, with its state dropped first.
    #[tokio::test]
    async fn drop_waits_for_the_thread_but_not_forever() {
        struct State(mpsc::Sender<&'static str>);
        impl Drop for State {
            fn drop(&mut self) {
                let _ = self.0.send("state dropped");
            }
        }

        let (events_tx, events) = mpsc::channel();
        let mut handle = SinkThread::spawn("test", "hung", move || Ok(State(events_tx)))
            .await
            .expect("spawn");
        handle.set_drop_wait(Duration::from_millis(50));
        let (release_tx, release) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel();
        handle
            .jobs
            .as_ref()
            .expect("jobs")
            .send(Box::new(move |_state: &mut State| {
                let _ = started_tx.send(());
                let _ = release.recv();
            }))
            .expect("queue the hung job");
        started.recv().expect("the job runs");
        let (dropped_tx, dropped) = mpsc::channel();
        std::thread::spawn(move || {
            drop(handle);
            let _ = dropped_tx.send(());
        });
        assert_eq!(
            dropped.recv_timeout(Duration::from_secs(10)),
            Ok(()),
            "drop hung on a stuck thread"
        );
        assert!(
            events.try_recv().is_err(),
            "the stuck thread still owns its state"
        );
        release_tx.send(()).expect("release");
        assert_eq!(
            events.recv_timeout(Duration::from_secs(10)),
            Ok("state dropped")
        );

        let (events_tx, events) = mpsc::channel();
        let handle = SinkThread::spawn("test", "healthy", move || Ok(State(events_tx)))
            .await
            .expect("spawn");
        drop(handle);
        assert_eq!(
            events.try_recv(),
            Ok("state dropped"),
            "joined after the state's drop"
        );
    }
}
