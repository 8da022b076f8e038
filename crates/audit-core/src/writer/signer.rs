//! The signing seam: checkpoints, key rotation, batch seals and the witness.
//!
//! Owns everything the writer signs or MACs and when: the checkpoint cadence
//! (`every_records`, `every`, the idle heartbeat), the one key rotation, the
//! seal that ends every batch (signed, or a MAC seal between signed ones),
//! and the publication of kept checkpoints to the witness directory.
//!
//! The driver calls it at four known points and nowhere else: while it
//! builds a batch ([`Signer::room`], [`Signer::count`], [`Signer::sign_due`],
//! [`Signer::seal`]), when the batch settles ([`Signer::kept`],
//! [`Signer::in_doubt`], [`Signer::rolled_back`]), on its timer
//! ([`Signer::deadline`], [`Signer::tick`]) and at close
//! ([`Signer::take_final`], [`Signer::close`]). It chains records only
//! through the [`Sequencer`] and [`Retention`] it is handed, and never
//! touches sinks, receipts or dispatch: work that extends checkpoints (a
//! Merkle tree, tiles, a witness client) belongs here.

use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::retention::Retention;
use super::{CheckpointConfig, WriterConfig};
use crate::chain::{encode_marker_body, Sequencer};
use crate::checkpoint::{rotation_body, Checkpoint, Seal};
use crate::record::Hash32;
use crate::seal_mac::{encode_mac, SealMacKey};

/// What a batch signed besides its seal.
#[derive(Default)]
pub(super) struct Signed {
    /// Checkpoint notes chained in this batch (sequence signed, note), for
    /// the witness once the batch is kept.
    pub notes: Vec<(u64, String)>,
    /// The batch holds the key rotation, which a rollback must redo.
    pub rotated: bool,
}

impl Signed {
    /// Whether the batch's seal must be signed: a public verifier's last
    /// signed seal is then never behind its last checkpoint or rotation.
    fn forces_signed_seal(&self) -> bool {
        !self.notes.is_empty() || self.rotated
    }
}

/// The checkpoint, seal and witness state of one writer run.
pub(super) struct Signer {
    /// None: the log is not signed, and every call is a no-op.
    cp: Option<CheckpointConfig>,
    /// The MAC keys of the seals that are not signed: the auditors' and the
    /// writer's own.
    seal_mac: Option<(SealMacKey, SealMacKey)>,
    /// The stretch every seal note announces ([`WriterConfig::max_stretch`]).
    max_stretch: u64,
    /// Records since the last checkpoint.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    checkpoint_due: bool,
    rotation_pending: bool,
    final_checkpoint_written: bool,
    /// The last signed seal this run, and when it was chained: the next seal
    /// is signed once it is far enough behind (None: none yet this run).
    last_signed_seal: Option<(u64, Instant)>,
    witness_writes: Vec<JoinHandle<()>>,
    witness_pending: Option<(u64, String)>,
    last_witness: Option<Instant>,
}

impl Signer {
    /// `resumed`: the log already holds records, whose tail may be unsigned.
    /// `rotate`: start-up found the log still signed by the previous key.
    pub(super) fn new(config: &WriterConfig, sinks: usize, resumed: bool, rotate: bool) -> Self {
        let cp = config.checkpoints.clone();
        Self {
            seal_mac: cp
                .as_ref()
                .map(|cp| (cp.key.seal_mac_key(), cp.key.writer_mac_key())),
            cp,
            max_stretch: config.max_stretch(sinks),
            // Whether a restarted log's tail is signed is unknown: sign it at
            // the next opportunity.
            since_checkpoint: u64::from(resumed),
            last_checkpoint: Instant::now(),
            checkpoint_due: false,
            rotation_pending: rotate,
            final_checkpoint_written: false,
            last_signed_seal: None,
            witness_writes: Vec::new(),
            witness_pending: None,
            last_witness: None,
        }
    }

    /// Whether a batch should be started even with nothing queued: a
    /// checkpoint or the rotation is waiting.
    pub(super) fn wants_batch(&self) -> bool {
        self.checkpoint_due || self.rotation_pending
    }

    /// How many entries and markers the next batch may chain before a
    /// checkpoint is due (at least 1), or None without checkpoints: a
    /// checkpoint follows at most `every_records` of them, whatever the
    /// batching.
    pub(super) fn room(&self) -> Option<usize> {
        self.cp.as_ref().map(|cp| {
            usize::try_from(cp.every_records.saturating_sub(self.since_checkpoint))
                .unwrap_or(usize::MAX)
                .max(1)
        })
    }

    /// Counts `records` entries and markers chained into the current batch.
    pub(super) fn count(&mut self, records: u64) {
        self.since_checkpoint += records;
    }

    /// When the timer must wake the driver for a checkpoint (the cadence
    /// while records arrive, the heartbeat while idle), given the head. The
    /// driver asks only while no batch is in flight and it is not closing.
    pub(super) fn deadline(&self, head_seq: u64) -> Option<Instant> {
        if head_seq == 0 || self.checkpoint_due {
            return None;
        }
        self.cp
            .as_ref()
            .map(|cp| self.last_checkpoint + self.wait(cp))
    }

    /// The timer fired with no batch in flight: a checkpoint is due if its
    /// time has come.
    pub(super) fn tick(&mut self, now: Instant, head_seq: u64) {
        if let Some(cp) = &self.cp {
            if head_seq > 0 && now >= self.last_checkpoint + self.wait(cp) {
                self.checkpoint_due = true;
            }
        }
    }

    fn wait(&self, cp: &CheckpointConfig) -> Duration {
        if self.since_checkpoint > 0 {
            cp.every.min(cp.heartbeat)
        } else {
            cp.heartbeat
        }
    }

    /// At close, once everything queued is chained: whether a final
    /// checkpoint must be signed over the head (once). If so it is now due,
    /// and the driver starts a batch for it.
    pub(super) fn take_final(&mut self, head_seq: u64) -> bool {
        if self.cp.is_none()
            || self.final_checkpoint_written
            || head_seq == 0
            || self.since_checkpoint == 0
        {
            return false;
        }
        self.final_checkpoint_written = true;
        self.checkpoint_due = true;
        true
    }

    /// Chains the pending key rotation and, when one is due, a checkpoint of
    /// the current head, after the batch's entries and markers.
    pub(super) fn sign_due(&mut self, seq: &mut Sequencer, retention: &mut Retention) -> Signed {
        let mut signed = Signed::default();
        let Some(cp) = &self.cp else {
            return signed;
        };
        if self.rotation_pending {
            if let Some(old) = &cp.previous_key {
                #[derive(Serialize)]
                struct Rotation<'a> {
                    timestamp: chrono::DateTime<chrono::Utc>,
                    log_id: &'a str,
                    new_key: String,
                    note: String,
                }
                let new = cp.key.public();
                let body = Rotation {
                    timestamp: chrono::Utc::now(),
                    log_id: &cp.log_id,
                    new_key: new.to_vkey(),
                    // Signed by both keys: the retired one vouches for its
                    // successor, and the successor proves it holds its key.
                    note: cp
                        .key
                        .cosign(&old.sign_note(&rotation_body(&cp.log_id, &new))),
                };
                let mut buf = Vec::new();
                if encode_marker_body("key_rotation", &body, &mut buf).is_ok() {
                    retention.push(seq.seal(&buf));
                    self.checkpoint_due = true;
                    signed.rotated = true;
                }
            }
            self.rotation_pending = false;
        }
        let due = self.checkpoint_due
            || self.since_checkpoint >= cp.every_records
            || (self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= cp.every);
        let Some(head) = seq.head() else {
            return signed;
        };
        if !due {
            return signed;
        }
        let checkpoint = Checkpoint {
            log_id: cp.log_id.clone(),
            seq: head.seq,
            head: head.hash,
            time: chrono::Utc::now().timestamp(),
        };
        let note = cp.key.sign_note(&checkpoint.body());
        #[derive(Serialize)]
        struct Fields<'a> {
            timestamp: chrono::DateTime<chrono::Utc>,
            log_id: &'a str,
            checkpoint_seq: u64,
            head_hash: Hash32,
            key_id: String,
            note: &'a str,
        }
        let fields = Fields {
            timestamp: chrono::Utc::now(),
            log_id: &cp.log_id,
            checkpoint_seq: head.seq,
            head_hash: head.hash,
            key_id: cp.key.public().id_hex(),
            note: &note,
        };
        let mut buf = Vec::new();
        if let Err(e) = encode_marker_body("checkpoint", &fields, &mut buf) {
            tracing::error!(error = %e, "cannot encode a checkpoint");
            return signed;
        }
        retention.push(seq.seal(&buf));
        signed.notes.push((head.seq, note));
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.checkpoint_due = false;
        signed
    }

    /// Ends the batch with its `seal` record: the writer's signature (or,
    /// between signed seals, its MAC; see [`crate::seal_mac`]) over the
    /// batch's last record, so that at start-up it can tell its own records
    /// from records written into a sink's storage by someone else. Chained
    /// in the same batch, it is durable exactly when the batch is, before any
    /// of the batch's receipts. Last, so it covers everything the batch
    /// chained; `signed` is what [`Signer::sign_due`] chained in it.
    pub(super) fn seal(&mut self, seq: &mut Sequencer, retention: &mut Retention, signed: &Signed) {
        let (Some(cp), Some((mac_key, writer_key))) = (&self.cp, &self.seal_mac) else {
            return;
        };
        let Some(head) = seq.head() else {
            return;
        };
        let now = Instant::now();
        let sign = signed.forces_signed_seal()
            || cp.sign_seals_every_records == 0
            || self.last_signed_seal.is_none_or(|(at, when)| {
                head.seq - at >= cp.sign_seals_every_records
                    || now.duration_since(when) >= cp.sign_seals_every
            });
        let mut seal = Seal {
            log_id: cp.log_id.clone(),
            seq: head.seq,
            head: head.hash,
            max_stretch: self.max_stretch,
        };
        let mut buf = Vec::with_capacity(400);
        let encoded = if sign {
            seal.max_stretch = cp.signed_stretch(self.max_stretch);
            #[derive(Serialize)]
            struct Fields<'a> {
                sealed_seq: u64,
                note: &'a str,
            }
            let note = cp.key.sign_note(&seal.body());
            encode_marker_body(
                "seal",
                &Fields {
                    sealed_seq: head.seq,
                    note: &note,
                },
                &mut buf,
            )
        } else {
            #[derive(Serialize)]
            struct Fields {
                sealed_seq: u64,
                stretch: u64,
                mac: String,
                writer_mac: String,
            }
            encode_marker_body(
                "seal",
                &Fields {
                    sealed_seq: head.seq,
                    stretch: seal.max_stretch,
                    mac: encode_mac(&mac_key.mac(&seal)),
                    writer_mac: encode_mac(&writer_key.mac(&seal)),
                },
                &mut buf,
            )
        };
        match encoded {
            Ok(()) => {
                let r = seq.seal_owned(buf);
                if sign {
                    self.last_signed_seal = Some((r.seq(), now));
                }
                retention.push(r);
            }
            // Integers and strings: serde_json cannot fail on them.
            Err(e) => tracing::error!(error = %e, "cannot encode a seal"),
        }
    }

    /// A sink holds the batch: its newest checkpoint may go to the witness.
    pub(super) fn kept(&mut self, signed: &Signed) {
        self.publish_witness(&signed.notes);
    }

    /// The batch stays in the chain but no sink is known to hold it: its
    /// checkpoint must not reach the witness (a crash now would leave the
    /// witness ahead of every sink, and start-up would refuse the log). A
    /// later checkpoint is published instead.
    pub(super) fn in_doubt(&mut self, signed: &Signed) {
        if !signed.notes.is_empty() {
            self.checkpoint_due = true;
        }
    }

    /// The batch was rolled back: its checkpoint and rotation must be made
    /// again.
    pub(super) fn rolled_back(&mut self, signed: &Signed) {
        if !signed.notes.is_empty() {
            self.checkpoint_due = true;
        }
        if signed.rotated {
            self.rotation_pending = true;
        }
    }

    /// Queues the newest kept checkpoint for the witness and publishes it at
    /// most once per `witness_interval`: the witness only needs the latest
    /// signed head, and every publication costs it two fsyncs.
    fn publish_witness(&mut self, notes: &[(u64, String)]) {
        if let Some(latest) = notes.last() {
            self.witness_pending = Some(latest.clone());
        }
        let interval = self
            .cp
            .as_ref()
            .map_or(Duration::ZERO, |c| c.witness_interval);
        if self.last_witness.is_none_or(|t| t.elapsed() >= interval) {
            self.flush_witness();
        }
    }

    /// Writes the pending checkpoint note to the witness directory.
    fn flush_witness(&mut self) {
        let Some(dir) = self.cp.as_ref().and_then(|c| c.witness_dir.clone()) else {
            return;
        };
        let Some((seq, note)) = self.witness_pending.take() else {
            return;
        };
        self.last_witness = Some(Instant::now());
        self.witness_writes.retain(|h| !h.is_finished());
        self.witness_writes.push(tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::checkpoint::write_witness(&dir, seq, &note) {
                tracing::error!(dir = %dir.display(), seq, error = %e, "cannot publish checkpoint to the witness");
            }
        }));
    }

    /// At close: the final checkpoint always reaches the witness.
    pub(super) async fn close(&mut self) {
        self.flush_witness();
        for h in self.witness_writes.drain(..) {
            let _ = h.await;
        }
    }
}
