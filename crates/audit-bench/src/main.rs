//! `audit-bench`: measures auditlog and prints a Markdown table.
//!
//! Run through `cargo xtask bench`, which builds it in release mode and writes
//! the table, with the machine it came from, into docs/BENCHMARKS.md.
//! Benchmarks measure; they never assert. Targets are printed beside figures.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_core::testing::{sample_entry, sample_records};
use audit_core::{
    encode_entry_body, AuditEntry, AuditLog, HealthState, PreparedBody, RecordBatch, Sequencer,
    Sink, SinkSpec, WriterConfig,
};
use sink_file::{FileSink, FileSinkConfig};
use sink_sqlite::{Query, SqliteSink, SqliteSinkConfig};

struct Row {
    name: String,
    value: String,
    target: String,
}

fn row(
    rows: &mut Vec<Row>,
    name: impl Into<String>,
    value: impl Into<String>,
    target: impl Into<String>,
) {
    let r = Row {
        name: name.into(),
        value: value.into(),
        target: target.into(),
    };
    eprintln!("  {:<64} {:>26}   {}", r.name, r.value, r.target);
    rows.push(r);
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.0} k/s", r / 1e3)
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// Serialize + chain on one core, and serde_json + BLAKE3 alone for reference.
fn bench_codec(rows: &mut Vec<Row>) {
    let entries: Vec<_> = (0..20_000).map(sample_entry).collect();
    let mut seq = Sequencer::new();
    let mut body = Vec::with_capacity(1024);
    let mut bytes = 0usize;
    let n = 400_000u64;
    let start = Instant::now();
    for i in 0..n as usize {
        body.clear();
        encode_entry_body(&entries[i % entries.len()], &mut body).expect("serialize");
        let r = seq.seal(&body);
        bytes += r.line().len();
    }
    let d = start.elapsed();
    let avg = bytes as u64 / n;
    row(
        rows,
        format!("serialize + chain, 1 core, {avg}-byte records"),
        fmt_rate(per_sec(n, d)),
        "≥ 700 k/s",
    );
    let start = Instant::now();
    let mut sink = 0u8;
    for i in 0..n as usize {
        let v = serde_json::to_vec(&entries[i % entries.len()]).expect("serialize");
        sink ^= blake3::hash(&v).as_bytes()[0];
    }
    let d = start.elapsed();
    std::hint::black_box(sink);
    row(
        rows,
        "  reference: serde_json::to_vec + blake3::hash alone",
        fmt_rate(per_sec(n, d)),
        "(~780 k/s measured by the issue)",
    );
}

struct Run {
    rate: f64,
    p50: f64,
    p99: f64,
    max: f64,
    records: u64,
    elapsed: Duration,
}

impl Run {
    fn summary(&self) -> String {
        format!(
            "{} p50 {:.2} ms p99 {:.2} ms max {:.1} ms",
            fmt_rate(self.rate),
            self.p50,
            self.p99,
            self.max
        )
    }
}

/// Lets the disk settle before a row. A row measured right after another read
/// 15-20% lower at 64 producers (199 k/s against 245 k/s with a pause, in the
/// same run), however its predecessor's files were kept or deleted.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// Opens a log over `sinks`, drives it with `producers` for `duration`, and
/// closes it.
async fn measure(
    config: WriterConfig,
    sinks: Vec<SinkSpec>,
    producers: usize,
    duration: Duration,
) -> Run {
    settle().await;
    measure_now(config, sinks, producers, duration).await
}

/// [`measure`] without settling first, for profiling one row.
async fn measure_now(
    config: WriterConfig,
    sinks: Vec<SinkSpec>,
    producers: usize,
    duration: Duration,
) -> Run {
    let log = AuditLog::open(config, sinks).await.expect("open");
    let r = drive(&log, producers, duration).await;
    log.close().await;
    r
}

/// One producer's entries. They are built before the clock starts, because
/// building them is the service's work, not the log's; each append still
/// serializes its entry, and each gets a fresh request id and timestamp, so
/// every record is distinct.
struct EntryFeed {
    entries: Vec<AuditEntry>,
    next: u64,
}

impl EntryFeed {
    fn new(producer: usize) -> Self {
        let first = producer as u64 * 10_000_000;
        Self {
            entries: (first..first + 16).map(sample_entry).collect(),
            next: first,
        }
    }

    fn next(&mut self) -> &AuditEntry {
        let i = self.next;
        self.next += 1;
        let n = self.entries.len() as u64;
        let e = &mut self.entries[(i % n) as usize];
        e.request_id =
            uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | u128::from(i));
        e.timestamp = chrono::Utc::now();
        e
    }
}

async fn drive(log: &AuditLog, producers: usize, duration: Duration) -> Run {
    drive_windowed(log, producers, 1, duration).await
}

/// `producers` tasks, each keeping up to `window` entries in flight with
/// `enqueue` and awaiting their receipts in order; a window of 1 is a plain
/// closed-loop `append`. Latency runs from enqueue to receipt.
async fn drive_windowed(
    log: &AuditLog,
    producers: usize,
    window: usize,
    duration: Duration,
) -> Run {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut feed = EntryFeed::new(p);
            let mut in_flight = std::collections::VecDeque::with_capacity(window);
            loop {
                let open = Instant::now() < deadline;
                if open && in_flight.len() < window {
                    let t = Instant::now();
                    let pending = log.enqueue(feed.next()).await.expect("enqueue");
                    in_flight.push_back((t, pending));
                    continue;
                }
                let Some((t, pending)) = in_flight.pop_front() else {
                    break;
                };
                pending.await.expect("append");
                lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("producer"));
    }
    let d = start.elapsed();
    all.sort_unstable();
    // Latencies are stored in microseconds; percentile() reports milliseconds.
    Run {
        rate: per_sec(all.len() as u64, d),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        max: percentile(&all, 1.0),
        records: all.len() as u64,
        elapsed: d,
    }
}

/// The seed's strategy: serialize, chain, write, flush and fsync each entry
/// while holding one lock.
async fn drive_seed_baseline(path: &Path, producers: usize, duration: Duration) -> Run {
    use tokio::io::AsyncWriteExt;
    struct State {
        file: tokio::fs::File,
        seq: Sequencer,
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .expect("open");
    let state = Arc::new(tokio::sync::Mutex::new(State {
        file,
        seq: Sequencer::new(),
    }));
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut feed = EntryFeed::new(p);
            let mut body = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut g = state.lock().await;
                body.clear();
                encode_entry_body(feed.next(), &mut body).expect("serialize");
                let r = g.seq.seal(&body);
                g.file.write_all(r.line()).await.expect("write");
                g.file.flush().await.expect("flush");
                g.file.sync_all().await.expect("fsync");
                drop(g);
                lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("producer"));
    }
    let d = start.elapsed();
    all.sort_unstable();
    Run {
        rate: per_sec(all.len() as u64, d),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        max: percentile(&all, 1.0),
        records: all.len() as u64,
        elapsed: d,
    }
}

async fn file_sink(dir: &Path, name: &str) -> Arc<dyn Sink> {
    Arc::new(
        FileSink::open(FileSinkConfig::new(name, dir.join(name)))
            .await
            .expect("file sink"),
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn median_row(rows: &mut Vec<Row>, name: &str, median: Duration) {
    row(
        rows,
        name,
        format!("median {:.0} µs", median.as_secs_f64() * 1e6),
        "",
    );
}

/// What one closed-loop batch cycle cannot avoid on this machine: the
/// `pwrite` + `fdatasync` of a 64-entry batch into preallocated space, and
/// the two hand-offs between threads (to the sink's thread and back). Both
/// are measured without the log, so the table shows how far the log's own
/// work is from the floor.
fn bench_floor(rows: &mut Vec<Row>, base: &Path) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    // 64 records of ~640 bytes, written where zeros were made durable first,
    // as the file sink's preallocation does.
    let batch = vec![b'x'; 64 * 640];
    let rounds = 3000u64;
    let file = preallocated(&dir.path().join("floor.dat"), rounds * batch.len() as u64);
    let mut syncs = Vec::with_capacity(rounds as usize);
    for i in 0..rounds {
        let t = Instant::now();
        file.write_all_at(&batch, i * batch.len() as u64)
            .expect("pwrite");
        file.sync_data().expect("fdatasync");
        syncs.push(t.elapsed());
    }
    let sync = median(syncs);
    median_row(
        rows,
        "floor: pwrite of a 64-entry batch (41 KB) + fdatasync, preallocated",
        sync,
    );
    // A job sent to a sleeping thread over a channel and its answer sent back,
    // as between the writer and a sink's thread.
    let (to_tx, to_rx) = std::sync::mpsc::channel::<u64>();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        while let Ok(v) = to_rx.recv() {
            if back_tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut trips = Vec::with_capacity(5000);
    for i in 0..5000u64 {
        let t = Instant::now();
        to_tx.send(i).expect("send");
        back_rx.recv().expect("echo");
        trips.push(t.elapsed());
        // Let the echo thread fall asleep, as a sink's thread does while a
        // batch gathers.
        std::thread::sleep(Duration::from_micros(50));
    }
    drop(to_tx);
    let _ = echo.join();
    let trip = median(trips);
    median_row(
        rows,
        "floor: hand-off to a sleeping thread and back (std channels)",
        trip,
    );
    let floor = sync + trip;
    row(
        rows,
        "floor: 64 closed-loop producers if serializing, chaining and waking them took no time",
        format!(
            "{} ({:.0} µs per cycle)",
            fmt_rate(64.0 / floor.as_secs_f64()),
            floor.as_secs_f64() * 1e6
        ),
        format!(
            "300 k/s leaves {:.0} µs of the cycle for 64 entries' CPU work",
            (64.0 / 300_000.0 - floor.as_secs_f64()) * 1e6
        ),
    );
}

/// A file of `bytes` zeros made durable, so a write into it later is like a
/// write into the file sink's preallocated segment: fdatasync flushes data
/// only.
fn preallocated(path: &Path, bytes: u64) -> std::fs::File {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .expect("preallocated file");
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes {
        file.write_all_at(&zeros, at).expect("zeros");
        at += zeros.len() as u64;
    }
    file.sync_all().expect("sync zeros");
    file
}

/// The model sinks' disk: each batch is one `pwrite` and one `fdatasync`. By
/// default the space ahead is zeroed as the file sink does it, 8 MiB at a
/// time when a batch reaches the end, inline and flushed by that batch's
/// fdatasync; or the space is all zeroed and made durable before the run.
struct ModelDisk {
    file: std::fs::File,
    at: u64,
    zeroed: u64,
    zero_ahead: bool,
}

impl ModelDisk {
    /// As the file sink's default `preallocate_bytes`.
    const CHUNK: u64 = 8 << 20;
    /// With the space zeroed beforehand, batches go round in this much.
    const SPACE: u64 = 64 << 20;

    fn open(path: &Path, zero_ahead: bool) -> Self {
        let file = if zero_ahead {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(path)
                .expect("model file")
        } else {
            preallocated(path, Self::SPACE)
        };
        Self {
            file,
            at: 0,
            zeroed: if zero_ahead { 0 } else { Self::SPACE },
            zero_ahead,
        }
    }

    fn write_durably(&mut self, batch: &[u8]) {
        use std::os::unix::fs::FileExt;
        let end = self.at + batch.len() as u64;
        if !self.zero_ahead && end > Self::SPACE {
            self.at = 0;
        } else if end > self.zeroed {
            static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
            let target = (self.zeroed + Self::CHUNK).max(end);
            while self.zeroed < target {
                let n = (target - self.zeroed).min(ZEROS.len() as u64);
                self.file
                    .write_all_at(&ZEROS[..n as usize], self.zeroed)
                    .expect("zeros");
                self.zeroed += n;
            }
        }
        self.file.write_all_at(batch, self.at).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        self.at += batch.len() as u64;
    }
}

/// The writer's straggler rule (audit-core's writer/mod.rs): a batch waits
/// for the producers the previous one woke while they keep arriving.
const STRAGGLER_GAP: Duration = Duration::from_micros(40);
const STRAGGLER_WAIT: Duration = Duration::from_micros(250);

type ModelAppend = (PreparedBody, tokio::sync::oneshot::Sender<u64>);

/// How the model moves sealed records to its disk thread.
#[derive(Clone, Copy, PartialEq, Debug)]
enum ModelPlumbing {
    /// One batch in flight, gathered with the writer's straggler rule.
    OneBatch,
    /// The disk thread takes whatever is sealed whenever it finishes a write.
    SinkPull,
}

/// The append rows' work with none of the writer's plumbing: `producers`
/// serialize the same entries and the same sequencer chains them, but there
/// is one sink, no policy, no retention, no health and no segment rotation,
/// and receipts go straight back. The writer's rate against this one is what
/// its plumbing costs on this machine.
async fn model_rate(disk: ModelDisk, plumbing: ModelPlumbing, producers: usize, secs: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ModelAppend>(4096);
    let driver = tokio::spawn(async move {
        match plumbing {
            ModelPlumbing::OneBatch => model_one_batch(disk, &mut rx).await,
            ModelPlumbing::SinkPull => model_sink_pull(disk, &mut rx).await,
        }
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut feed = EntryFeed::new(p);
            // Timed like the append rows, whose harness costs the same.
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut body = Vec::with_capacity(1024);
                encode_entry_body(feed.next(), &mut body).expect("serialize");
                let (reply, receipt) = tokio::sync::oneshot::channel();
                tx.send((PreparedBody::new(body), reply))
                    .await
                    .expect("model driver");
                receipt.await.expect("model receipt");
                lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            lat.len() as u64
        }));
    }
    drop(tx);
    let mut appended = 0;
    for t in tasks {
        appended += t.await.expect("producer");
    }
    let rate = per_sec(appended, start.elapsed());
    driver.await.expect("model driver");
    rate
}

async fn model_one_batch(disk: ModelDisk, rx: &mut tokio::sync::mpsc::Receiver<ModelAppend>) {
    let (jobs, jobs_rx) = std::sync::mpsc::channel::<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>();
    let thread = std::thread::spawn(move || {
        let mut disk = disk;
        while let Ok((batch, done)) = jobs_rx.recv() {
            disk.write_durably(&batch);
            let _ = done.send(());
        }
    });
    let mut seq = Sequencer::new();
    let mut last_batch = 0;
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(64 << 10);
        let mut waiters = Vec::with_capacity(last_batch);
        let mut take = |(body, reply): ModelAppend, waiters: &mut Vec<_>| {
            let r = seq.seal_prepared(body);
            batch.extend_from_slice(r.line());
            waiters.push((r.seq(), reply));
        };
        take(first, &mut waiters);
        let gather_start = Instant::now();
        let mut last_arrival = gather_start;
        loop {
            match rx.try_recv() {
                Ok(a) => {
                    take(a, &mut waiters);
                    last_arrival = Instant::now();
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty)
                    if waiters.len() < last_batch
                        && last_arrival.elapsed() < STRAGGLER_GAP
                        && gather_start.elapsed() < STRAGGLER_WAIT =>
                {
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        last_batch = waiters.len();
        let (done, written) = tokio::sync::oneshot::channel();
        jobs.send((batch, done)).expect("model disk thread");
        written.await.expect("model disk thread");
        for (seq, reply) in waiters {
            let _ = reply.send(seq);
        }
    }
    drop(jobs);
    thread.join().expect("model disk thread");
}

async fn model_sink_pull(disk: ModelDisk, rx: &mut tokio::sync::mpsc::Receiver<ModelAppend>) {
    use std::sync::{Condvar, Mutex};
    #[derive(Default)]
    struct Open {
        batch: Vec<u8>,
        last: u64,
        idle: bool,
        closed: bool,
    }
    let shared = Arc::new((Mutex::new(Open::default()), Condvar::new()));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let thread_shared = shared.clone();
    let thread = std::thread::spawn(move || {
        let mut disk = disk;
        let (open, wake) = &*thread_shared;
        loop {
            let (batch, last) = {
                let mut o = open.lock().expect("model lock");
                while o.batch.is_empty() && !o.closed {
                    o.idle = true;
                    o = wake.wait(o).expect("model lock");
                }
                if o.batch.is_empty() {
                    return;
                }
                o.idle = false;
                (std::mem::take(&mut o.batch), o.last)
            };
            disk.write_durably(&batch);
            let _ = done_tx.send(last);
        }
    });
    let mut seq = Sequencer::new();
    let mut waiters: std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<u64>)> =
        std::collections::VecDeque::new();
    let mut sealed = Vec::with_capacity(64 << 10);
    let mut open_rx = true;
    while open_rx || !waiters.is_empty() {
        tokio::select! {
            biased;
            Some(durable) = done_rx.recv() => {
                while waiters.front().is_some_and(|(s, _)| *s <= durable) {
                    if let Some((s, reply)) = waiters.pop_front() {
                        let _ = reply.send(s);
                    }
                }
            }
            a = rx.recv(), if open_rx => {
                let Some(mut a) = a else {
                    open_rx = false;
                    continue;
                };
                loop {
                    let r = seq.seal_prepared(a.0);
                    sealed.extend_from_slice(r.line());
                    waiters.push_back((r.seq(), a.1));
                    match rx.try_recv() {
                        Ok(next) => a = next,
                        Err(_) => break,
                    }
                }
                let (open, wake) = &*shared;
                let mut o = open.lock().expect("model lock");
                o.batch.extend_from_slice(&sealed);
                o.last = seq.next_seq() - 1;
                sealed.clear();
                if o.idle {
                    wake.notify_one();
                }
            }
        }
    }
    shared.0.lock().expect("model lock").closed = true;
    shared.1.notify_one();
    thread.join().expect("model disk thread");
}

/// The models, each run after the appends rows' pause.
async fn bench_models(rows: &mut Vec<Row>, base: &Path, secs: u64) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    for (plumbing, zero_ahead, counts, name) in [
        (
            ModelPlumbing::OneBatch,
            true,
            &[16][..],
            "model: the same chain and entries, one sink, one batch in flight (64 producers: beside the append rows)",
        ),
        (
            ModelPlumbing::OneBatch,
            false,
            &[64][..],
            "model: the same, into space zeroed before the run",
        ),
        (
            ModelPlumbing::SinkPull,
            true,
            &[16, 64][..],
            "model: the same, the sink thread pulling whatever is sealed",
        ),
        (
            ModelPlumbing::SinkPull,
            false,
            &[64][..],
            "model: the sink thread pulling, into space zeroed before the run",
        ),
    ] {
        let mut rates = Vec::new();
        for &producers in counts {
            // At 64 producers the median of as many runs as the append row
            // it is compared with.
            let runs = if producers == 64 { TARGET_RUNS } else { 1 };
            let mut results = Vec::new();
            for _ in 0..runs {
                settle().await;
                let disk = ModelDisk::open(&dir.path().join("model.dat"), zero_ahead);
                let r = model_rate(disk, plumbing, producers, secs).await;
                results.push((r, r));
            }
            let (label, r) = median_run(results);
            rates.push(format!("{producers}: {}", label(fmt_rate(r))));
        }
        row(rows, name, rates.join(" · "), "producers: rate");
    }
}

/// How many rounds of runs with and without a key measure the seals' cost.
/// `AUDIT_BENCH_SEAL_ROUNDS` overrides it: the cost is a few percent, and
/// on a noisy machine only many rounds resolve it.
const SEAL_ROUNDS: usize = 5;

fn seal_rounds() -> usize {
    std::env::var("AUDIT_BENCH_SEAL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(SEAL_ROUNDS)
}

/// How many times each target row runs; the table shows the median run.
const TARGET_RUNS: usize = 3;

/// The run with the median `key` and a function that labels a description
/// of it with every run's key, as "median of 3 (195, 204, 210 k/s): …".
fn median_run<T>(mut runs: Vec<(f64, T)>) -> (impl Fn(String) -> String, T) {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let keys: Vec<String> = runs
        .iter()
        .map(|(k, _)| format!("{:.0}", k / 1e3))
        .collect();
    let n = runs.len();
    let (_, median) = runs.swap_remove(n / 2);
    let label = move |what: String| {
        if n == 1 {
            what
        } else {
            format!("median of {n} ({} k/s): {what}", keys.join(", "))
        }
    };
    (label, median)
}

/// What the seals cost: runs without a key, with one (a seal ending every
/// batch: a MAC seal, or a signed one every 1,024 records and 100 ms, and a
/// checkpoint every 1,000 records) and with one and the witness
/// (written at most once a second, on the same disk), in rounds whose order
/// rotates, so drift on a noisy machine hits every configuration of a round.
/// Single runs move by ±10% here, as much as the cost measured, so each row
/// reports the median of its rounds' own costs against the keyless run of
/// the same round, and every round's cost.
async fn bench_seal_cost(rows: &mut Vec<Row>, base: &Path, secs: u64) {
    let dur = Duration::from_secs(secs);
    let key = Arc::new(audit_core::checkpoint::KeyPair::generate("bench").expect("key"));
    for producers in [64usize, 1] {
        // [no key, key, key + witness] per round.
        let mut rounds: Vec<[f64; 3]> = Vec::new();
        // Kept until the end: deleting a run's files makes the disk busy
        // (online discard) during the next run.
        let mut dirs = Vec::new();
        for round in 0..seal_rounds() {
            let mut rates = [0.0; 3];
            for k in 0..3 {
                let config_ix = (round + k) % 3;
                let dir = tempfile::tempdir_in(base).expect("tempdir");
                let checkpoints = (config_ix > 0).then(|| {
                    let mut cp = audit_core::CheckpointConfig::new(key.clone(), "bench/log");
                    if config_ix == 2 {
                        cp.witness_dir = Some(dir.path().join("witness"));
                    }
                    cp
                });
                let config = WriterConfig {
                    checkpoints,
                    ..WriterConfig::default()
                };
                let r = measure(
                    config,
                    vec![SinkSpec::required(file_sink(dir.path(), "f").await)],
                    producers,
                    dur,
                )
                .await;
                rates[config_ix] = r.rate;
                dirs.push(dir);
            }
            rounds.push(rates);
        }
        drop(dirs);
        for (ix, what) in [
            (1, "seals + checkpoints"),
            (2, "seals + checkpoints + witness"),
        ] {
            let cost = |r: &[f64; 3]| (1.0 - r[ix] / r[0].max(1.0)) * 100.0;
            let mut costs: Vec<f64> = rounds.iter().map(cost).collect();
            costs.sort_by(f64::total_cmp);
            let median = costs[costs.len() / 2];
            let mut plain: Vec<f64> = rounds.iter().map(|r| r[0]).collect();
            let mut with: Vec<f64> = rounds.iter().map(|r| r[ix]).collect();
            plain.sort_by(f64::total_cmp);
            with.sort_by(f64::total_cmp);
            let all = costs
                .iter()
                .map(|c| format!("{c:.1}%"))
                .collect::<Vec<_>>()
                .join(", ");
            row(
                rows,
                format!(
                    "durable append, 1 file sink, {producers} producer{}, {what} (median of {} rotating rounds)",
                    if producers == 1 { "" } else { "s" },
                    rounds.len()
                ),
                format!(
                    "{} vs {} without a key (round costs {all})",
                    fmt_rate(with[with.len() / 2]),
                    fmt_rate(plain[plain.len() / 2])
                ),
                if producers == 64 && ix == 1 {
                    format!("cost {median:.1}% (target < 5%)")
                } else {
                    format!("cost {median:.1}%")
                },
            );
        }
    }
}

async fn bench_appends(rows: &mut Vec<Row>, base: &Path, secs: u64) {
    let dur = Duration::from_secs(secs);
    // Deleting a run's files makes the disk busy (online discard) during the
    // next run, so each run's directory is kept until the whole set is done.
    let mut spent = Vec::new();
    for producers in [1usize, 16, 64, 256] {
        // The target's row is the median of three runs: single runs of it
        // move by ±10% on this machine.
        let repeats = if producers == 64 { TARGET_RUNS } else { 1 };
        let mut runs = Vec::new();
        // At 64 producers each run is followed by one of the model with one
        // batch in flight (see `model_rate`), so the two share the machine's
        // drift and their ratio is what the writer's plumbing costs.
        let mut model_runs = Vec::new();
        for _ in 0..repeats {
            let dir = tempfile::tempdir_in(base).expect("tempdir");
            let r = measure(
                WriterConfig::default(),
                vec![SinkSpec::required(file_sink(dir.path(), "f").await)],
                producers,
                dur,
            )
            .await;
            runs.push((r.rate, r));
            if producers == 64 {
                settle().await;
                let disk = ModelDisk::open(&dir.path().join("model.dat"), true);
                let m = model_rate(disk, ModelPlumbing::OneBatch, producers, secs).await;
                model_runs.push((m, m));
            }
            spent.push(dir);
        }
        let (label, r) = median_run(runs);
        let target = match producers {
            64 => "≥ 300 k/s, p99 < 10 ms",
            _ => "",
        };
        row(
            rows,
            format!("durable append, 1 file sink, {producers} producers"),
            label(r.summary()),
            target,
        );
        if !model_runs.is_empty() {
            let (label, m) = median_run(model_runs);
            row(
                rows,
                format!("  model: the same entries, chain and disk work, one batch in flight, no plumbing, {producers} producers"),
                label(fmt_rate(m)),
                format!("ours is {:.0}% of this", r.rate / m.max(1.0) * 100.0),
            );
        }
        let sdir = tempfile::tempdir_in(base).expect("tempdir");
        settle().await;
        let s = drive_seed_baseline(&sdir.path().join("seed.jsonl"), producers, dur).await;
        row(
            rows,
            format!("  seed strategy (fsync per entry under one lock), {producers} producers"),
            s.summary(),
            format!("ours is {:.0}× this", r.rate / s.rate.max(1.0)),
        );
        spent.push(sdir);
    }
    drop(spent);
    // The same 64 producers, each keeping a few entries in flight, as a proxy
    // task logging several calls does: what `enqueue` allows, not the
    // closed-loop row the target is about.
    settle().await;
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let log = AuditLog::open(
        WriterConfig::default(),
        vec![SinkSpec::required(file_sink(dir.path(), "f").await)],
    )
    .await
    .expect("open");
    let r = drive_windowed(&log, 64, 4, dur).await;
    log.close().await;
    row(
        rows,
        "  64 producers with 4 entries in flight each (enqueue)",
        r.summary(),
        "not the closed-loop row; every receipt still after fdatasync",
    );
    drop(dir);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let db = Arc::new(
        SqliteSink::open(SqliteSinkConfig::new("db", dir.path().join("a.db")))
            .await
            .expect("db"),
    );
    let r = measure(
        WriterConfig::default(),
        vec![
            SinkSpec::required(file_sink(dir.path(), "f").await),
            SinkSpec::required(db),
        ],
        64,
        dur,
    )
    .await;
    row(
        rows,
        "durable append, file + SQLite together, both required, 64 producers",
        r.summary(),
        "",
    );
}

async fn object_sink(service: sink_object::Service, interval: Duration) -> Arc<dyn Sink> {
    let mut c = sink_object::ObjectSinkConfig::new("obj", service, "bench", "log");
    c.min_segment_interval = interval;
    Arc::new(sink_object::ObjectSink::open(c).await.expect("object sink"))
}

/// 64 closed-loop producers for `dur` into `sinks`, then the wait until
/// every sink holds every record: the producers' run, that wait, and the
/// health at its end. Retention gets 1 GiB, room for a lagging sink's records
/// (a second of them is ~100 MB here), so a slow sink catches up instead of
/// being marked failed, which `caught_up` would not wait for.
async fn drive_until_caught_up(
    sinks: Vec<SinkSpec>,
    dur: Duration,
) -> (Run, Duration, audit_core::HealthSnapshot) {
    let config = WriterConfig {
        retention_memory_bytes: 1 << 30,
        ..WriterConfig::default()
    };
    let log = AuditLog::open(config, sinks).await.expect("open");
    let r = drive(&log, 64, dur).await;
    let t = Instant::now();
    log.caught_up().await;
    let lag = t.elapsed();
    let health = log.health();
    log.close().await;
    (r, lag, health)
}

/// One run of the three sinks together (file required, SQLite and object
/// replicas): the rate until all three hold every record, the producers'
/// run, how long the replicas took to catch up, and whether one was not
/// healthy at the end.
async fn together_run(
    dir: &Path,
    dur: Duration,
    replica_interval: Duration,
) -> (f64, (Run, Duration, bool)) {
    let sinks = file_sqlite_object(dir, Some(replica_interval)).await;
    let (r, lag, health) = drive_until_caught_up(sinks, dur).await;
    let behind = health.sinks.iter().any(|s| s.state != HealthState::Healthy);
    if behind {
        eprintln!("{}", serde_json::to_string(&health).unwrap_or_default());
    }
    // Every record is in every sink only once the replicas have caught up,
    // so the rate counts that time too.
    (per_sec(r.records, r.elapsed + lag), (r, lag, behind))
}

/// The SQLite and object sinks' `min_write_interval` in the together row:
/// fewer, larger replica writes leave more of the two cores to the file path
/// that receipts wait for (docs/BENCHMARKS.md).
const REPLICA_WRITE_INTERVAL: Duration = Duration::from_millis(50);

/// A file sink, a SQLite sink and an object sink (OpenDAL fs) in `dir`, all
/// required, or with `replicas` the file required and the other two
/// optional, written at most once per that interval.
async fn file_sqlite_object(dir: &Path, replicas: Option<Duration>) -> Vec<SinkSpec> {
    let role = |sink: Arc<dyn Sink>| match replicas {
        Some(interval) => SinkSpec::optional(sink).with_min_write_interval(interval),
        None => SinkSpec::required(sink),
    };
    let db = SqliteSink::open(SqliteSinkConfig::new("db", dir.join("a.db")))
        .await
        .expect("db");
    let fs = sink_object::Service::Fs {
        root: dir.join("objects"),
    };
    vec![
        SinkSpec::required(file_sink(dir, "f").await),
        role(Arc::new(db)),
        role(object_sink(fs, Duration::ZERO).await),
    ]
}

async fn bench_object(rows: &mut Vec<Row>, base: &Path, secs: u64) {
    let dur = Duration::from_secs(secs);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let fs = sink_object::Service::Fs {
        root: dir.path().join("objects"),
    };
    let r = measure(
        WriterConfig::default(),
        vec![SinkSpec::required(object_sink(fs, Duration::ZERO).await)],
        64,
        dur,
    )
    .await;
    row(
        rows,
        "durable append, object sink (OpenDAL fs), 64 producers",
        r.summary(),
        "",
    );
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let all = file_sqlite_object(dir.path(), None).await;
    let r = measure(WriterConfig::default(), all, 64, dur).await;
    row(
        rows,
        "durable append, file + SQLite + object (fs), all required, 64 producers",
        r.summary(),
        "≥ 100 k/s",
    );
    let mut runs = Vec::new();
    let mut spent = Vec::new();
    for _ in 0..TARGET_RUNS {
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        settle().await;
        let (together, run) = together_run(dir.path(), dur, REPLICA_WRITE_INTERVAL).await;
        spent.push(dir);
        runs.push((together, run));
    }
    drop(spent);
    let (label, (r, lag, behind)) = median_run(runs);
    let together = per_sec(r.records, r.elapsed + lag);
    row(
        rows,
        format!(
            "file + SQLite + object (fs) together: file required, SQLite and object (fs) replicas written at most every {} ms, 64 producers",
            REPLICA_WRITE_INTERVAL.as_millis()
        ),
        label(format!(
            "{} until all three hold every record (appended: {})",
            fmt_rate(together),
            r.summary(),
        )),
        format!(
            "≥ 100 k/s; replicas caught up {:.2} s after the run{}",
            lag.as_secs_f64(),
            if behind { ", one not healthy" } else { "" }
        ),
    );
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    settle().await;
    let (together, (r, lag, _)) = together_run(dir.path(), dur, Duration::ZERO).await;
    row(
        rows,
        "the same, replicas written as soon as their previous write ends (one run)",
        format!(
            "{} until all three hold every record (appended: {})",
            fmt_rate(together),
            r.summary(),
        ),
        format!(
            "replicas caught up {:.2} s after the run",
            lag.as_secs_f64()
        ),
    );
    let Some(bin) = sink_object::garage::find_binary() else {
        row(
            rows,
            "object sink on Garage (S3)",
            "not measured",
            "no garage binary",
        );
        return;
    };
    let gdir = tempfile::tempdir_in(base).expect("tempdir");
    let garage = match sink_object::garage::Garage::start(&bin, &gdir.path().join("garage")) {
        Ok(g) => g,
        Err(e) => {
            row(rows, "object sink on Garage (S3)", "not measured", e);
            return;
        }
    };
    let s3 = sink_object::Service::S3(sink_object::S3Options {
        bucket: garage.bucket.clone(),
        endpoint: Some(garage.endpoint.clone()),
        region: Some(garage.region.clone()),
        access_key_id: Some(garage.key_id.clone()),
        secret_access_key: Some(garage.secret.clone()),
    });
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let sinks = vec![
        SinkSpec::required(file_sink(dir.path(), "f").await),
        SinkSpec::optional(object_sink(s3, Duration::from_secs(1)).await)
            .with_timeout(Duration::from_secs(5)),
    ];
    let (r, lag, health) = drive_until_caught_up(sinks, dur).await;
    let s3_state = health.sinks[1].state;
    row(
        rows,
        "file required + Garage S3 optional with 1-second segments, 64 producers",
        r.summary(),
        format!(
            "S3 sink {s3_state:?}, caught up {:.1} s after the run",
            lag.as_secs_f64()
        ),
    );
    drop(garage);
}

async fn bench_sqlite(rows: &mut Vec<Row>, base: &Path) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let sink = SqliteSink::open(SqliteSinkConfig::new("db", dir.path().join("q.db")))
        .await
        .expect("db");
    let total: u64 = std::env::var("AUDIT_BENCH_SQLITE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut head = None;
    let mut in_timed = 0u64;
    let mut timed = Duration::ZERO;
    let mut made = 0;
    while made < total {
        let recs = sample_records(head, 1000);
        head = recs.last().map(|r| r.head());
        let batch = RecordBatch::new(recs).expect("batch");
        let t = Instant::now();
        sink.append(&batch).await.expect("append");
        if made < 200_000 {
            timed += t.elapsed();
            in_timed += 1000;
        }
        made += 1000;
    }
    row(
        rows,
        "SQLite sink alone, batches of 1,000 (synchronous=FULL)",
        fmt_rate(per_sec(in_timed, timed)),
        "≥ 100 k/s",
    );
    let mut small = Duration::ZERO;
    for _ in 0..200 {
        let recs = sample_records(head, 64);
        head = recs.last().map(|r| r.head());
        let batch = RecordBatch::new(recs).expect("batch");
        let t = Instant::now();
        sink.append(&batch).await.expect("append");
        small += t.elapsed();
    }
    row(
        rows,
        format!("SQLite sink alone, batches of 64, after {total} rows"),
        format!(
            "{} ({:.2} ms per batch)",
            fmt_rate(per_sec(200 * 64, small)),
            small.as_secs_f64() * 1e3 / 200.0
        ),
        "",
    );
    let log = sink.log().clone();
    let mut times = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        let rows = log
            .query(&Query {
                agent: Some(format!("agent-{:02}", i % 17)),
                decision: Some("deny".into()),
                limit: Some(100),
                ..Query::default()
            })
            .await
            .expect("query");
        times.push(t.elapsed());
        std::hint::black_box(rows);
    }
    times.sort();
    row(
        rows,
        "indexed query on 1M rows (agent + decision, 100 results)",
        format!(
            "median {:.2} ms",
            times[times.len() / 2].as_secs_f64() * 1e3
        ),
        "< 10 ms",
    );
}

async fn bench_big_log(rows: &mut Vec<Row>, base: &Path, gigabytes: f64) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let mut cfg = FileSinkConfig::new("big", dir.path().join("log"));
    cfg.max_segment_bytes = None;
    let sink = FileSink::open(cfg.clone()).await.expect("open");
    let target = (gigabytes * 1e9) as u64;
    let mut written = 0u64;
    let mut head = None;
    let mut records = 0u64;
    while written < target {
        let recs = sample_records(head, 10_000);
        head = recs.last().map(|r| r.head());
        written += recs.iter().map(|r| r.line().len() as u64).sum::<u64>();
        records += recs.len() as u64;
        sink.append(&RecordBatch::new(recs).expect("batch"))
            .await
            .expect("append");
    }
    drop(sink);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let s = FileSink::open(cfg.clone()).await.expect("reopen");
        times.push(t.elapsed());
        drop(s);
    }
    times.sort();
    row(
        rows,
        format!(
            "reopen a {:.1} GB file log ({records} records)",
            written as f64 / 1e9
        ),
        format!("median {:.2} ms", times[2].as_secs_f64() * 1e3),
        "< 50 ms",
    );
    let t = Instant::now();
    let report = audit_verify::verify(
        &[audit_verify::Source::File(dir.path().join("log"))],
        &audit_verify::VerifyOptions::default(),
    )
    .await
    .expect("verify");
    let d = t.elapsed();
    assert!(report.ok, "benchmark log must verify");
    row(
        rows,
        format!(
            "verify a {:.1} GB file log, both cores",
            written as f64 / 1e9
        ),
        format!(
            "{} ({:.0} MB/s)",
            fmt_rate(per_sec(records, d)),
            written as f64 / 1e6 / d.as_secs_f64()
        ),
        "≥ 1 M/s",
    );
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    format!(
        "{cpu}, {cores} cores, {:.0} GiB RAM",
        mem as f64 / 1048576.0
    )
}

fn profile_verify_parts() {
    {
        let key = audit_core::checkpoint::KeyPair::generate("bench").expect("key");
        let seal = audit_core::checkpoint::Seal {
            log_id: "bench/log".into(),
            seq: 123_456,
            head: audit_core::Hash32([7; 32]),
            max_stretch: 1000,
        };
        let t = Instant::now();
        for _ in 0..20_000 {
            std::hint::black_box(key.sign_note(&seal.body()));
        }
        eprintln!(
            "seal sign_note: {:.0} ns/seal",
            t.elapsed().as_nanos() as f64 / 2e4
        );
        // A MAC seal's two keyed hashes, what most batches pay instead.
        let (auditors, writers) = (key.seal_mac_key(), key.writer_mac_key());
        let t = Instant::now();
        for _ in 0..200_000 {
            std::hint::black_box((auditors.mac(&seal), writers.mac(&seal)));
        }
        eprintln!(
            "MAC seal (mac + writer_mac): {:.0} ns/seal",
            t.elapsed().as_nanos() as f64 / 2e5
        );
    }
    let recs = sample_records(None, 200_000);
    let t = Instant::now();
    for _ in 0..10 {
        for r in &recs {
            std::hint::black_box(audit_core::parse_record(r.text()).expect("parse"));
        }
    }
    eprintln!(
        "parse_record: {:.0} ns/record",
        t.elapsed().as_nanos() as f64 / 2e6
    );
    // Arguments nested to the format's limit against flat ones of the same size.
    {
        let text = recs[0].text();
        let key = b"\"arguments\":";
        let at = text
            .windows(key.len())
            .position(|w| w == key)
            .expect("an entry has arguments")
            + key.len();
        let mut values =
            serde_json::Deserializer::from_slice(&text[at..]).into_iter::<serde::de::IgnoredAny>();
        values.next();
        let end = at + values.byte_offset();
        let levels = audit_core::record::MAX_NESTING - 1;
        let nested = "{\"a\":".repeat(levels) + "1" + &"}".repeat(levels);
        let mut flat = String::from("{");
        let mut i = 0;
        while flat.len() + 8 < nested.len() {
            flat.push_str(&format!("\"a{i}\":1,"));
            i += 1;
        }
        flat.push_str("\"z\":1}");
        for (what, args) in [("flat", flat), ("nested 127 levels", nested)] {
            let mut t2 = text[..at].to_vec();
            t2.extend_from_slice(args.as_bytes());
            t2.extend_from_slice(&text[end..]);
            let t = Instant::now();
            for _ in 0..200_000 {
                std::hint::black_box(audit_core::parse_record(&t2).expect("parse"));
            }
            eprintln!(
                "parse_record, arguments {what} ({} bytes): {:.0} ns/record",
                args.len(),
                t.elapsed().as_nanos() as f64 / 2e5
            );
        }
    }
    let t = Instant::now();
    for r in &recs {
        std::hint::black_box(audit_core::record_hash(r.text()));
    }
    eprintln!(
        "record_hash: {:.0} ns/record",
        t.elapsed().as_nanos() as f64 / 2e5
    );
    let t = Instant::now();
    for r in &recs {
        std::hint::black_box(
            serde_json::from_slice::<serde::de::IgnoredAny>(r.text()).expect("json"),
        );
    }
    eprintln!(
        "serde_json IgnoredAny: {:.0} ns/record",
        t.elapsed().as_nanos() as f64 / 2e5
    );
    let t = Instant::now();
    for r in &recs {
        std::hint::black_box(std::str::from_utf8(r.text()).is_ok());
    }
    eprintln!(
        "utf8: {:.0} ns/record ({} bytes)",
        t.elapsed().as_nanos() as f64 / 2e5,
        recs[0].text().len()
    );
}

const USAGE: &str = "usage: audit-bench [--quick] [--only GROUP] [--markdown FILE]
       audit-bench --file-only [PRODUCERS] [--sign]
       audit-bench --together-only
       audit-bench --model one-batch|zeroed|sink-pull|sink-pull-zeroed
       audit-bench --profile-verify
--file-only, --together-only and --model run one row (64 producers by
default) for profiling.
--together-only writes the replicas at most every
$AUDIT_BENCH_REPLICA_INTERVAL_MS (default 50; 0 as soon as the last write ends).
GROUP is one of codec, floor, appends, seal, object, sqlite, big. Data goes under
$AUDIT_BENCH_DIR (default target/bench-data). The seal group runs
$AUDIT_BENCH_SEAL_ROUNDS rounds (default 5).";

const GROUPS: [&str; 7] = [
    "codec", "floor", "appends", "seal", "object", "sqlite", "big",
];

#[derive(Default)]
struct Args {
    profile_verify: bool,
    file_only: Option<usize>,
    /// `--file-only` with a signing key: checkpoints every 1,000 records and
    /// a seal ending every batch (MAC seals between signed ones, as default).
    sign: bool,
    together_only: bool,
    model: Option<(ModelPlumbing, bool)>,
    quick: bool,
    markdown: Option<String>,
    only: Option<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    let value = |flag: &str, it: &mut dyn Iterator<Item = String>| {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--profile-verify" => args.profile_verify = true,
            "--quick" => args.quick = true,
            "--file-only" => args.file_only = Some(64),
            "--sign" => args.sign = true,
            "--together-only" => args.together_only = true,
            "--model" => {
                args.model = Some(match value("--model", &mut it)?.as_str() {
                    "one-batch" => (ModelPlumbing::OneBatch, true),
                    "zeroed" => (ModelPlumbing::OneBatch, false),
                    "sink-pull" => (ModelPlumbing::SinkPull, true),
                    "sink-pull-zeroed" => (ModelPlumbing::SinkPull, false),
                    other => {
                        return Err(format!(
                            "unknown model {other:?}; models: one-batch, zeroed, sink-pull, sink-pull-zeroed"
                        ))
                    }
                })
            }
            "--markdown" => args.markdown = Some(value("--markdown", &mut it)?),
            "--only" => {
                let group = value("--only", &mut it)?;
                if !GROUPS.contains(&group.as_str()) {
                    return Err(format!(
                        "unknown group {group:?}; groups: {}",
                        GROUPS.join(", ")
                    ));
                }
                args.only = Some(group);
            }
            n if args.file_only.is_some() && n.parse::<usize>().is_ok_and(|p| p > 0) => {
                args.file_only = n.parse().ok();
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("audit-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if args.profile_verify {
        profile_verify_parts();
        return;
    }
    let base = std::env::var("AUDIT_BENCH_DIR").unwrap_or_else(|_| "target/bench-data".into());
    std::fs::create_dir_all(&base).expect("bench dir");
    // Two workers, as many as this machine has cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some((plumbing, zero_ahead)) = args.model {
        rt.block_on(async {
            let dir = tempfile::tempdir_in(&base).expect("tempdir");
            let disk = ModelDisk::open(&dir.path().join("model.dat"), zero_ahead);
            let rate = model_rate(disk, plumbing, 64, 3).await;
            println!("64 producers: {}", fmt_rate(rate));
        });
        return;
    }
    if args.together_only {
        rt.block_on(async {
            let dir = tempfile::tempdir_in(&base).expect("tempdir");
            let interval = std::env::var("AUDIT_BENCH_REPLICA_INTERVAL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map_or(REPLICA_WRITE_INTERVAL, Duration::from_millis);
            let (together, (r, lag, _)) =
                together_run(dir.path(), Duration::from_secs(3), interval).await;
            println!(
                "together: {} until all three hold every record, {:.2} s of it catching up (appended: {})",
                fmt_rate(together),
                lag.as_secs_f64(),
                r.summary()
            );
        });
        return;
    }
    if let Some(producers) = args.file_only {
        // A single row, for profiling the write path.
        rt.block_on(async {
            let dir = tempfile::tempdir_in(&base).expect("tempdir");
            let checkpoints = args.sign.then(|| {
                let key = audit_core::checkpoint::KeyPair::generate("bench").expect("key");
                audit_core::CheckpointConfig::new(Arc::new(key), "bench/log")
            });
            let r = measure_now(
                WriterConfig {
                    checkpoints,
                    ..WriterConfig::default()
                },
                vec![SinkSpec::required(file_sink(dir.path(), "f").await)],
                producers,
                Duration::from_secs(3),
            )
            .await;
            println!("{producers} producers: {}", r.summary());
        });
        return;
    }
    let quick = args.quick;
    let out = args.markdown;
    let only = args.only;
    let runs = |group: &str| only.as_deref().is_none_or(|o| o == group);
    let mut rows = Vec::new();
    eprintln!("machine: {}", machine());
    if runs("codec") {
        bench_codec(&mut rows);
    }
    rt.block_on(async {
        let secs = if quick { 1 } else { 3 };
        if runs("floor") {
            bench_floor(&mut rows, Path::new(&base));
            bench_models(&mut rows, Path::new(&base), secs).await;
        }
        if runs("appends") {
            bench_appends(&mut rows, Path::new(&base), secs).await;
        }
        if runs("seal") {
            bench_seal_cost(&mut rows, Path::new(&base), secs).await;
        }
        if runs("object") {
            bench_object(&mut rows, Path::new(&base), secs).await;
        }
        if runs("sqlite") {
            bench_sqlite(&mut rows, Path::new(&base)).await;
        }
        if runs("big") {
            bench_big_log(&mut rows, Path::new(&base), if quick { 0.2 } else { 1.0 }).await;
        }
    });
    let mut md = String::new();
    md.push_str(&format!(
        "Measured {} on {} (filesystem under `{base}`).\n\n| benchmark | result | target / comparison |\n| --- | --- | --- |\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine()
    ));
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} |\n",
            r.name.trim(),
            r.value,
            r.target
        ));
    }
    print!("{md}");
    if let Some(path) = out {
        std::fs::write(&path, md).expect("write table");
    }
}
