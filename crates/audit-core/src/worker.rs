//! A dedicated thread that owns a backend's blocking state (a file handle, a
//! SQLite connection) and runs one closure at a time for async callers, so
//! blocking I/O never runs on the async workers.

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::sink::SinkError;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// The handle to a backend's own thread. Dropping it lets the thread finish
/// the queued jobs, drop its state (which may flush or trim files) and exit,
/// and waits for that: once the handle is gone, so is everything the thread
/// would still have done to the backend's files.
pub struct SinkThread<S> {
    sink: String,
    jobs: Option<mpsc::Sender<Job<S>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<S> Drop for SinkThread<S> {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(sink = %self.sink, "the sink's thread panicked");
            }
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
        let gone = |detail: String| SinkError::Backend {
            sink: sink.to_string(),
            detail,
        };
        let thread = std::thread::Builder::new()
            .name(format!("{kind}-{sink}"))
            .spawn(move || match init() {
                Ok(mut state) => {
                    let _ = ready_tx.send(Ok(()));
                    while let Ok(job) = rx.recv() {
                        job(&mut state);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
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
        })
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
