//! The hash chain: sealing bodies into records, and checking links.

use std::io::Write as _;

use bytes::Bytes;
use serde::Serialize;

use crate::entry::AuditEntry;
use crate::entry_json::EncodeError;
use crate::record::{ChainHead, Hash32, PrevHash, Record, GENESIS, RECORD_TYPE_MEMBER};

/// Serializes `entry` as a record body: its JSON object without the closing
/// brace, ready for [`Sequencer::seal`]. Appends to `buf`.
///
/// Fails, leaving `buf` as it was, if `entry.arguments` has arrays or objects
/// more than [`crate::MAX_NESTING`] levels deep: no record may (FORMAT.md
/// section 5).
pub fn encode_entry_body(entry: &AuditEntry, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    encode_entry_body_checked(entry, buf).map_err(|e| match e {
        EncodeError::Json(e) => e,
        EncodeError::TooDeep => serde::ser::Error::custom(format!(
            "entry arguments nest deeper than {} levels",
            crate::MAX_NESTING
        )),
    })
}

/// [`encode_entry_body`] with the depth refusal kept apart from serde errors.
pub(crate) fn encode_entry_body_checked(
    entry: &AuditEntry,
    buf: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    if let Err(e) = crate::entry_json::write_entry(entry, buf) {
        buf.truncate(start);
        return Err(e);
    }
    debug_assert_eq!(buf.last(), Some(&b'}'));
    if buf.len() > start {
        buf.pop();
    }
    Ok(())
}

/// Serializes a non-entry record body of type `record_type` (checkpoint, gap
/// marker, …) with `fields`, which must serialize as a JSON object whose
/// members do not use the reserved names.
pub fn encode_marker_body<T: Serialize>(
    record_type: &str,
    fields: &T,
    buf: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    buf.extend_from_slice(b"{\"");
    buf.extend_from_slice(RECORD_TYPE_MEMBER.as_bytes());
    buf.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *buf, record_type)?;
    let mut rest = serde_json::to_vec(fields)?;
    if rest.len() > 2 {
        // `{"a":1}` -> `,"a":1`
        rest[0] = b',';
        rest.pop();
        buf.extend_from_slice(&rest);
    }
    Ok(())
}

/// The highest sequence a writer continues from. A real log cannot get near
/// it (2^63 records at a million a second take 292,000 years), so a head
/// beyond it was forged or corrupted, and continuing from it would run the
/// sequence out of its 64 bits: the writer refuses it at start-up.
pub const MAX_HEAD_SEQUENCE: u64 = 1 << 63;

/// Turns bodies into chained records. It holds the chain head and nothing else;
/// whoever owns it decides when a sealed record counts (see the writer).
#[derive(Debug, Clone)]
pub struct Sequencer {
    next_seq: u64,
    prev: PrevHash,
}

impl Default for Sequencer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequencer {
    /// A sequencer for a new chain: the first record gets sequence 1 and
    /// prev hash `genesis`.
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            prev: PrevHash::Genesis,
        }
    }

    /// A sequencer that continues after `head`, or starts a new chain for `None`.
    /// A head beyond [`MAX_HEAD_SEQUENCE`] is not continued faithfully (the
    /// sequence saturates instead of wrapping); the writer refuses one.
    pub fn resume(head: Option<ChainHead>) -> Self {
        match head {
            None => Self::new(),
            Some(h) => Self {
                next_seq: h.seq.saturating_add(1),
                prev: PrevHash::Hash(h.hash),
            },
        }
    }

    /// The head so far, `None` before the first record.
    pub fn head(&self) -> Option<ChainHead> {
        match self.prev {
            PrevHash::Genesis => None,
            PrevHash::Hash(hash) => Some(ChainHead {
                seq: self.next_seq - 1,
                hash,
            }),
        }
    }

    /// The sequence the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seals `body` (a JSON object without its closing brace, as produced by
    /// [`encode_entry_body`]) into the next record and advances the head.
    pub fn seal(&mut self, body: &[u8]) -> Record {
        let mut line = Vec::with_capacity(body.len() + 200);
        line.extend_from_slice(body);
        self.seal_owned(line)
    }

    /// [`Sequencer::seal`] for a body the caller gives away: the chain members
    /// are appended in place, so a body allocated with ~200 bytes to spare is
    /// never copied.
    pub fn seal_owned(&mut self, body: Vec<u8>) -> Record {
        self.seal_prepared(PreparedBody::new(body))
    }

    /// Seals a body whose bytes are already absorbed into the record hash, so
    /// only the chain members are hashed here.
    pub fn seal_prepared(&mut self, body: PreparedBody) -> Record {
        let PreparedBody {
            mut line,
            mut hasher,
        } = body;
        let suffix_start = line.len();
        line.extend_from_slice(b",\"chain_sequence\":");
        let mut digits = itoa::Buffer::new();
        line.extend_from_slice(digits.format(self.next_seq).as_bytes());
        line.extend_from_slice(b",\"chain_prev_hash\":\"");
        match self.prev {
            PrevHash::Genesis => line.extend_from_slice(GENESIS.as_bytes()),
            PrevHash::Hash(h) => {
                line.extend_from_slice(blake3::Hash::from_bytes(h.0).to_hex().as_bytes())
            }
        }
        line.push(b'"');
        hasher.update(&line[suffix_start..]);
        hasher.update(b"}");
        let hash = hasher.finalize();
        line.extend_from_slice(b",\"chain_record_hash\":\"");
        let _ = line.write_all(hash.to_hex().as_bytes());
        line.extend_from_slice(b"\"}\n");
        let record = Record::from_parts(
            self.next_seq,
            self.prev,
            Hash32(*hash.as_bytes()),
            Bytes::from(line),
        );
        // Never wraps: the writer starts at most at MAX_HEAD_SEQUENCE.
        self.next_seq = self.next_seq.saturating_add(1);
        self.prev = PrevHash::Hash(record.hash());
        record
    }
}

/// A record body (as produced by [`encode_entry_body`]) with its bytes
/// already absorbed into the record hash.
///
/// Every record passes through the one [`Sequencer`], so whatever it does per
/// record is done one record at a time. The body is most of a record's bytes
/// and does not depend on the chain, so whoever makes the body can hash it
/// concurrently with others and leave the sequencer only the chain members.
pub struct PreparedBody {
    line: Vec<u8>,
    // Boxed: the hasher is ~2 KB and the body travels through queues.
    hasher: Box<blake3::Hasher>,
}

impl PreparedBody {
    /// Hashes `body`, which must be a JSON object without its closing brace.
    /// Allocate it with ~200 bytes to spare and sealing never copies it.
    pub fn new(body: Vec<u8>) -> Self {
        let mut hasher = Box::new(blake3::Hasher::new());
        hasher.update(&body);
        Self { line: body, hasher }
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.line.len()
    }

    /// Whether the body is empty (never true of an encoded entry).
    pub fn is_empty(&self) -> bool {
        self.line.is_empty()
    }
}

impl std::fmt::Debug for PreparedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedBody")
            .field("len", &self.line.len())
            .finish_non_exhaustive()
    }
}

/// How one record relates to the one before it in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The record follows its predecessor: next sequence, matching prev hash.
    Continues,
    /// The first record of the stream, starting a chain at sequence 1 from genesis.
    Starts,
    /// The first record of the stream, but not a chain start: the stream was read
    /// from the middle of a log or the log's beginning is missing.
    StartsMidway,
    /// A `genesis` record after other records: a new, unanchored chain (the
    /// seed restarted its chain on every process start).
    Restarts,
    /// The sequence is not the next one.
    SequenceBreak {
        /// The sequence that should have come.
        expected: u64,
    },
    /// The sequence is right but the prev hash does not match the last record.
    PrevMismatch {
        /// The hash of the record before.
        expected: Hash32,
    },
}

/// Streaming link checker: feed records in stored order, learn how each links.
#[derive(Debug, Default, Clone)]
pub struct ChainChecker {
    last: Option<ChainHead>,
}

impl ChainChecker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A checker that expects the record after `head`.
    pub fn after(head: ChainHead) -> Self {
        Self { last: Some(head) }
    }

    /// The last record fed, whatever its link.
    pub fn last(&self) -> Option<ChainHead> {
        self.last
    }

    /// Feeds the next record in stored order.
    pub fn push(&mut self, seq: u64, prev: PrevHash, hash: Hash32) -> Link {
        let link = match (self.last, prev) {
            (None, PrevHash::Genesis) if seq == 1 => Link::Starts,
            (None, _) => Link::StartsMidway,
            (Some(_), PrevHash::Genesis) if seq == 1 => Link::Restarts,
            (Some(last), prev) => {
                if seq != last.seq.wrapping_add(1) {
                    Link::SequenceBreak {
                        expected: last.seq.wrapping_add(1),
                    }
                } else if prev != PrevHash::Hash(last.hash) {
                    Link::PrevMismatch {
                        expected: last.hash,
                    }
                } else {
                    Link::Continues
                }
            }
        };
        self.last = Some(ChainHead { seq, hash });
        link
    }
}
