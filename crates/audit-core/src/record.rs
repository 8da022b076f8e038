//! The record format: one JSON object per line, chained by BLAKE3.
//!
//! docs/FORMAT.md is the normative description; this module is its reference
//! implementation. The rule that matters most: a record's hash is computed over
//! the bytes as stored, never over a re-serialization of the parsed value.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The prev hash of the first record of a chain.
pub const GENESIS: &str = "genesis";

/// The member that names a non-entry record's type. Entries never carry it.
pub const RECORD_TYPE_MEMBER: &str = "record_type";

/// How every non-entry record begins (docs/FORMAT.md section 6).
pub const RECORD_TYPE_PREFIX: &str = "{\"record_type\":\"";

/// How many levels arrays and objects may nest below a record's top-level
/// object (FORMAT.md section 5). Deeper records are malformed, and the writer
/// refuses entries that would make one.
pub const MAX_NESTING: usize = 128;

const SEQ_PREFIX: &[u8] = b",\"chain_sequence\":";
const PREV_PREFIX: &[u8] = b",\"chain_prev_hash\":\"";
const HASH_PREFIX: &[u8] = b",\"chain_record_hash\":\"";
/// `,"chain_record_hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = HASH_PREFIX.len() + 64 + 2;

/// A BLAKE3 digest, shown and stored as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// Parses exactly 64 lowercase hex digits. Uppercase is refused: a hash has
    /// one spelling, so a record cannot be read two ways.
    pub fn from_hex(hex: &[u8]) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
            bad |= hi | lo;
            out[i] = (hi << 4) | (lo & 0x0f);
        }
        // Invalid digits map to 0xff; one check at the end keeps the loop branch-free.
        (bad & 0xf0 == 0).then_some(Self(out))
    }

    /// The 64-digit lowercase hex form.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

/// Lowercase hex digit values; 0xff for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({self})")
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Hash32::from_hex(s.as_bytes())
            .ok_or_else(|| de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// What a record's `chain_prev_hash` points at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PrevHash {
    /// The record starts a chain.
    Genesis,
    /// The hash of the record before it.
    Hash(Hash32),
}

impl fmt::Display for PrevHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrevHash::Genesis => f.write_str(GENESIS),
            PrevHash::Hash(h) => h.fmt(f),
        }
    }
}

/// The last record of a chain: where the next one links.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChainHead {
    /// Its sequence number.
    pub seq: u64,
    /// Its record hash.
    pub hash: Hash32,
}

/// Why a line is not a well-formed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The line is empty.
    #[error("empty line")]
    Empty,
    /// The line holds a byte that is not UTF-8.
    #[error("invalid UTF-8 at byte {offset}")]
    NotUtf8 {
        /// Offset of the first invalid byte within the line.
        offset: usize,
    },
    /// The line holds a newline or carriage return outside the terminator.
    #[error("line holds a raw newline or carriage return at byte {offset}")]
    EmbeddedNewline {
        /// Offset of the byte within the line.
        offset: usize,
    },
    /// The line is longer than the configured limit.
    #[error("record is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The line does not end with the three chain members in canonical form.
    #[error("chain members missing or not canonical: {0}")]
    ChainSuffix(&'static str),
    /// The line is not a single valid JSON object.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// An object holds the same member twice.
    #[error("duplicate member {0:?}")]
    DuplicateMember(String),
    /// A chain member or `record_type` is out of place.
    #[error("member {0:?} is out of place")]
    MisplacedMember(String),
    /// The parsed chain members disagree with their byte form.
    #[error("chain members disagree with the stored bytes")]
    Ambiguous,
    /// A non-entry record does not start with exactly
    /// `{"record_type":"<type>"`: readers (the writer's start-up among them)
    /// tell the writer's records by that prefix, so another spelling of the
    /// same JSON (whitespace, an escape) would be read as a marker by one
    /// reader and as something else by another.
    #[error("a non-entry record must start with exactly {{\"record_type\":\"<type>\" (no whitespace, no escapes)")]
    NonCanonicalType,
    /// A `\u` escape encodes half of a UTF-16 surrogate pair without the other
    /// half: no Unicode string has it, so JSON readers differ on what it means.
    #[error("the escape at byte {offset} is an unpaired UTF-16 surrogate")]
    LoneSurrogate {
        /// Offset of the escape's backslash within the line.
        offset: usize,
    },
}

/// A record as it travels to sinks: its chain fields and its exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    seq: u64,
    prev: PrevHash,
    hash: Hash32,
    /// The stored line including its terminating `\n`.
    line: Bytes,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("seq", &self.seq)
            .field("prev", &self.prev)
            .field("hash", &self.hash)
            .field("len", &self.line.len())
            .finish()
    }
}

impl Record {
    /// Parses and fully validates a stored record (`text` without its newline)
    /// and checks that its hash matches its bytes.
    pub fn from_text(text: &[u8]) -> Result<Self, RecordFault> {
        let parsed = parse_record(text).map_err(RecordFault::Malformed)?;
        let computed = record_hash(text);
        if computed != parsed.claimed_hash {
            return Err(RecordFault::HashMismatch {
                seq: parsed.seq,
                claimed: parsed.claimed_hash,
                computed,
            });
        }
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text);
        line.push(b'\n');
        Ok(Self {
            seq: parsed.seq,
            prev: parsed.prev,
            hash: parsed.claimed_hash,
            line: Bytes::from(line),
        })
    }

    pub(crate) fn from_parts(seq: u64, prev: PrevHash, hash: Hash32, line: Bytes) -> Self {
        debug_assert_eq!(line.last(), Some(&b'\n'));
        Self {
            seq,
            prev,
            hash,
            line,
        }
    }

    /// The sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The previous record's hash, or genesis.
    pub fn prev(&self) -> PrevHash {
        self.prev
    }

    /// The record hash.
    pub fn hash(&self) -> Hash32 {
        self.hash
    }

    /// The record's bytes without the newline: what every backend stores.
    pub fn text(&self) -> &[u8] {
        &self.line[..self.line.len() - 1]
    }

    /// [`Record::text`] as a shared, zero-copy buffer.
    pub fn text_bytes(&self) -> Bytes {
        self.line.slice(..self.line.len() - 1)
    }

    /// The record's bytes with the terminating newline, as a JSONL file holds it.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The head this record makes.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// Why a stored record cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordFault {
    /// It is not well-formed.
    #[error("malformed record: {0}")]
    Malformed(RecordError),
    /// Its hash does not match its bytes.
    #[error("record {seq}: stored hash {claimed} but bytes hash to {computed}")]
    HashMismatch {
        /// The record's sequence.
        seq: u64,
        /// The stored `chain_record_hash`.
        claimed: Hash32,
        /// The BLAKE3 of its bytes.
        computed: Hash32,
    },
}

/// A strictly parsed record, borrowing the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRecord<'a> {
    /// `chain_sequence`.
    pub seq: u64,
    /// `chain_prev_hash`.
    pub prev: PrevHash,
    /// `chain_record_hash` as stored (not yet checked against the bytes).
    pub claimed_hash: Hash32,
    /// `record_type` for non-entry records; `None` for audit entries.
    pub record_type: Option<Cow<'a, str>>,
}

/// Whether a stored line is a well-formed record whose sequence comes before
/// `from_seq`: readers asked to start at `from_seq` skip it. A line that is
/// oversized or whose chain members cannot be read is never skipped, so a
/// damaged line is always reported.
pub fn precedes(text: &[u8], oversized: bool, from_seq: u64) -> bool {
    from_seq > 1 && !oversized && parse_chain_suffix(text).is_ok_and(|(seq, ..)| seq < from_seq)
}

/// The chain members read from the end of a line by their fixed byte layout,
/// without validating the JSON before them. Readers use it to seek; verifiers
/// use [`parse_record`].
pub fn parse_chain_suffix(text: &[u8]) -> Result<(u64, PrevHash, Hash32, usize), RecordError> {
    let n = text.len();
    if n < HASH_SUFFIX_LEN + PREV_PREFIX.len() + SEQ_PREFIX.len() + 10 {
        return Err(RecordError::ChainSuffix("line too short"));
    }
    if &text[n - 2..] != b"\"}" {
        return Err(RecordError::ChainSuffix(
            "line does not end with the record hash",
        ));
    }
    let hash_at = n - HASH_SUFFIX_LEN;
    if &text[hash_at..hash_at + HASH_PREFIX.len()] != HASH_PREFIX {
        return Err(RecordError::ChainSuffix(
            "chain_record_hash is not the last member",
        ));
    }
    let claimed = Hash32::from_hex(&text[hash_at + HASH_PREFIX.len()..n - 2]).ok_or(
        RecordError::ChainSuffix("chain_record_hash is not 64 lowercase hex digits"),
    )?;
    // chain_prev_hash ends right before the record hash member, with a quote.
    let prev_end = hash_at;
    if text[prev_end - 1] != b'"' {
        return Err(RecordError::ChainSuffix(
            "chain_prev_hash must precede chain_record_hash",
        ));
    }
    let (prev, prev_at) = if prev_end > PREV_PREFIX.len() + GENESIS.len()
        && &text[prev_end - 1 - GENESIS.len()..prev_end - 1] == GENESIS.as_bytes()
        && &text[prev_end - 1 - GENESIS.len() - PREV_PREFIX.len()..prev_end - 1 - GENESIS.len()]
            == PREV_PREFIX
    {
        (
            PrevHash::Genesis,
            prev_end - 1 - GENESIS.len() - PREV_PREFIX.len(),
        )
    } else {
        let start = prev_end
            .checked_sub(1 + 64 + PREV_PREFIX.len())
            .ok_or(RecordError::ChainSuffix("chain_prev_hash missing"))?;
        if &text[start..start + PREV_PREFIX.len()] != PREV_PREFIX {
            return Err(RecordError::ChainSuffix(
                "chain_prev_hash must precede chain_record_hash",
            ));
        }
        let h = Hash32::from_hex(&text[start + PREV_PREFIX.len()..prev_end - 1]).ok_or(
            RecordError::ChainSuffix(
                "chain_prev_hash is neither genesis nor 64 lowercase hex digits",
            ),
        )?;
        (PrevHash::Hash(h), start)
    };
    // chain_sequence: canonical decimal digits ending right before prev.
    let mut digits_start = prev_at;
    while digits_start > 0 && text[digits_start - 1].is_ascii_digit() {
        digits_start -= 1;
    }
    let digits = &text[digits_start..prev_at];
    if digits.is_empty() || digits.len() > 20 || digits[0] == b'0' {
        return Err(RecordError::ChainSuffix(
            "chain_sequence is not a canonical positive integer",
        ));
    }
    if digits_start < SEQ_PREFIX.len() + 1
        || &text[digits_start - SEQ_PREFIX.len()..digits_start] != SEQ_PREFIX
    {
        return Err(RecordError::ChainSuffix(
            "chain_sequence must precede chain_prev_hash",
        ));
    }
    let mut seq: u64 = 0;
    for &d in digits {
        seq = seq
            .checked_mul(10)
            .and_then(|s| s.checked_add(u64::from(d - b'0')))
            .ok_or(RecordError::ChainSuffix("chain_sequence overflows 64 bits"))?;
    }
    Ok((seq, prev, claimed, digits_start - SEQ_PREFIX.len()))
}

/// Strictly parses one stored record (`text` without its newline).
///
/// Refuses anything that could be read two ways: invalid UTF-8, raw newlines,
/// duplicate members at any depth, chain members out of place, a
/// non-canonical sequence, and bytes after the object.
pub fn parse_record(text: &[u8]) -> Result<ParsedRecord<'_>, RecordError> {
    if text.is_empty() {
        return Err(RecordError::Empty);
    }
    let text_str = match std::str::from_utf8(text) {
        Ok(s) => s,
        Err(e) => {
            return Err(RecordError::NotUtf8 {
                offset: e.valid_up_to(),
            })
        }
    };
    if let Some(offset) = memchr::memchr2(b'\n', b'\r', text) {
        return Err(RecordError::EmbeddedNewline { offset });
    }
    if text[0] != b'{' {
        return Err(RecordError::Json("a record must start with '{'".into()));
    }
    let (seq, prev, claimed_hash, members_at) = parse_chain_suffix(text)?;
    // From the already-validated str, so raw values are not re-validated as UTF-8.
    let mut de = serde_json::Deserializer::from_str(text_str);
    let top = TopLevel.deserialize(&mut de).map_err(classify_json_error)?;
    de.end().map_err(|e| RecordError::Json(e.to_string()))?;
    let top = top?;
    if let Some(t) = &top.record_type {
        let rest = text.strip_prefix(RECORD_TYPE_PREFIX.as_bytes());
        let canonical = rest
            .and_then(|r| r.strip_prefix(t.as_bytes()))
            .is_some_and(|r| r.first() == Some(&b'"'));
        if !canonical {
            return Err(RecordError::NonCanonicalType);
        }
    }
    check_surrogates(text)?;
    // The parsed chain members must be exactly the bytes read from the suffix:
    // no escapes, no other spelling.
    // Compared as raw bytes against the suffix the values were read from.
    let n = text.len();
    let hash_raw = &text[n - 67..n - 1];
    let prev_raw = &text[members_at..n - HASH_SUFFIX_LEN];
    let prev_raw = &prev_raw[prev_raw.len()
        - match prev {
            PrevHash::Genesis => GENESIS.len() + 2,
            PrevHash::Hash(_) => 66,
        }..];
    let hash_ok = top.hash.map(str::as_bytes) == Some(hash_raw);
    let prev_ok = top.prev.map(str::as_bytes) == Some(prev_raw);
    let seq_ok = top
        .seq
        .is_some_and(|raw| raw.parse::<u64>().ok() == Some(seq) && !raw.starts_with('0'));
    if !seq_ok || !prev_ok || !hash_ok {
        return Err(RecordError::Ambiguous);
    }
    Ok(ParsedRecord {
        seq,
        prev,
        claimed_hash,
        record_type: top.record_type,
    })
}

/// Refuses `\u` escapes of unpaired surrogates. Runs on text already parsed
/// as JSON, where a backslash only ever starts an escape inside a string.
fn check_surrogates(text: &[u8]) -> Result<(), RecordError> {
    let hex4 = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(text.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    let mut pending_high: Option<usize> = None;
    while let Some(found) = text.get(i..).and_then(|t| memchr::memchr(b'\\', t)) {
        let at = i + found;
        if let Some(high) = pending_high.take() {
            // A high surrogate must be followed at once by a low one.
            let low = (text.get(at + 1) == Some(&b'u') && high + 6 == at)
                .then(|| hex4(at + 2))
                .flatten();
            if !low.is_some_and(|c| (0xDC00..0xE000).contains(&c)) {
                return Err(RecordError::LoneSurrogate { offset: high });
            }
            i = at + 6;
            continue;
        }
        if text.get(at + 1) == Some(&b'u') {
            match hex4(at + 2) {
                Some(c) if (0xD800..0xDC00).contains(&c) => pending_high = Some(at),
                Some(c) if (0xDC00..0xE000).contains(&c) => {
                    return Err(RecordError::LoneSurrogate { offset: at })
                }
                _ => {}
            }
            i = at + 6;
        } else {
            i = at + 2;
        }
    }
    match pending_high {
        Some(offset) => Err(RecordError::LoneSurrogate { offset }),
        None => Ok(()),
    }
}

fn classify_json_error(e: serde_json::Error) -> RecordError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUPLICATE_TAG) {
        let name = rest.split(" at line").next().unwrap_or(rest);
        return RecordError::DuplicateMember(name.to_string());
    }
    if let Some(rest) = msg.strip_prefix(MISPLACED_TAG) {
        let name = rest.split(" at line").next().unwrap_or(rest);
        return RecordError::MisplacedMember(name.to_string());
    }
    RecordError::Json(msg)
}

const DUPLICATE_TAG: &str = "duplicate member ";
const MISPLACED_TAG: &str = "misplaced member ";

/// The BLAKE3 record hash of a stored record whose chain suffix is well-formed:
/// the bytes with `,"chain_record_hash":"<hex>"` removed, the `}` kept.
///
/// # Panics
/// Never for a `text` that [`parse_chain_suffix`] accepted; for shorter input
/// it hashes what there is, which can only mismatch.
pub fn record_hash(text: &[u8]) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    if text.len() >= HASH_SUFFIX_LEN {
        hasher.update(&text[..text.len() - HASH_SUFFIX_LEN]);
        hasher.update(b"}");
    } else {
        hasher.update(text);
    }
    Hash32(*hasher.finalize().as_bytes())
}

struct TopFields<'a> {
    seq: Option<&'a str>,
    prev: Option<&'a str>,
    hash: Option<&'a str>,
    record_type: Option<Cow<'a, str>>,
}

struct TopLevel;

impl<'de> DeserializeSeed<'de> for TopLevel {
    type Value = Result<TopFields<'de>, RecordError>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel {
    type Value = Result<TopFields<'de>, RecordError>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = TopFields {
            seq: None,
            prev: None,
            hash: None,
            record_type: None,
        };
        let mut keys = KeySet::default();
        let mut index = 0usize;
        // Chain members must be the last three, in order; we note where each sits.
        let mut chain_stage = 0u8;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key = key.0;
            if !keys.insert(&key) {
                return Err(de::Error::custom(format_args!("{DUPLICATE_TAG}{key}")));
            }
            match key.as_ref() {
                "chain_sequence" => {
                    if chain_stage != 0 {
                        return Err(de::Error::custom(format_args!("{MISPLACED_TAG}{key}")));
                    }
                    chain_stage = 1;
                    fields.seq = Some(map.next_value::<&'de RawValue>()?.get());
                }
                "chain_prev_hash" => {
                    if chain_stage != 1 {
                        return Err(de::Error::custom(format_args!("{MISPLACED_TAG}{key}")));
                    }
                    chain_stage = 2;
                    fields.prev = Some(map.next_value::<&'de RawValue>()?.get());
                }
                "chain_record_hash" => {
                    if chain_stage != 2 {
                        return Err(de::Error::custom(format_args!("{MISPLACED_TAG}{key}")));
                    }
                    chain_stage = 3;
                    fields.hash = Some(map.next_value::<&'de RawValue>()?.get());
                }
                _ if chain_stage != 0 => {
                    return Err(de::Error::custom(format_args!("{MISPLACED_TAG}{key}")));
                }
                RECORD_TYPE_MEMBER => {
                    if index != 0 {
                        return Err(de::Error::custom(format_args!("{MISPLACED_TAG}{key}")));
                    }
                    fields.record_type = Some(map.next_value::<Key<'de>>()?.0);
                }
                _ => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    check_nested(raw.get(), 1).map_err(de::Error::custom)?;
                }
            }
            index += 1;
        }
        Ok(Ok(fields))
    }
}

/// A string that borrows from the input when it holds no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Member names seen in one object. Up to [`SMALL_KEYS`] names it scans
/// (fingerprint, name) pairs kept on the stack, faster than a hash set for an
/// entry's dozen members; past that, a hash set (with a keyed hash, so that
/// crafted names cannot make it slow) takes over. Allocating the pairs on the
/// heap, three times as the list grew, cost about a tenth of `parse_record`.
#[derive(Default)]
struct KeySet<'a> {
    small: smallvec::SmallVec<[(u64, Cow<'a, str>); 16]>,
    large: Option<HashSet<Cow<'a, str>>>,
}

/// Names a [`KeySet`] scans before it switches to a hash set.
const SMALL_KEYS: usize = 32;

/// A name's length and its first and last eight bytes, mixed: enough to skip
/// most comparisons, and equal fingerprints still compare the names. Cheaper
/// than hashing every byte (FNV-1a before), by a few percent of
/// `parse_record`.
fn fingerprint(s: &str) -> u64 {
    let b = s.as_bytes();
    // Fixed-size copies compile to single loads; copying a variable length
    // called memcpy, and the load after it stalled.
    let word = |at: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(at);
        u64::from_le_bytes(w)
    };
    let (head, tail) = if b.len() >= 8 {
        (word(&b[..8]), word(&b[b.len() - 8..]))
    } else {
        let short = b
            .iter()
            .rev()
            .fold(0u64, |w, &byte| (w << 8) | u64::from(byte));
        (short, short)
    };
    head.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ tail.rotate_left(29) ^ b.len() as u64
}

impl<'a> KeySet<'a> {
    #[allow(clippy::ptr_arg)] // the Cow is cloned into the set, keeping borrows borrowed
    fn insert(&mut self, key: &Cow<'a, str>) -> bool {
        if let Some(set) = &mut self.large {
            return set.insert(key.clone());
        }
        let h = fingerprint(key);
        if self.small.iter().any(|(kh, k)| *kh == h && k == key) {
            return false;
        }
        self.small.push((h, key.clone()));
        if self.small.len() > SMALL_KEYS {
            self.large = Some(self.small.drain(..).map(|(_, k)| k).collect());
        }
        true
    }
}

/// Checks a value already validated as JSON (a `RawValue`) for duplicate
/// members and nesting past [`MAX_NESTING`], `depth` being the level of
/// `raw` itself. One pass over the bytes: the JSON is known to be valid, so
/// only strings, brackets and commas need reading. Re-parsing each nested
/// value as a `RawValue` of its own, as before, read every byte once per
/// level it sits under: 128 levels cost about 25 times a flat record.
pub(crate) fn check_nested(raw: &str, depth: usize) -> Result<(), serde_json::Error> {
    let b = raw.as_bytes();
    if !matches!(b.first(), Some(b'{') | Some(b'[')) {
        return Ok(());
    }
    // One entry per open container: the member names of an object, or
    // `None` for an array.
    let mut open: Vec<Option<KeySet<'_>>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                let mut escaped = false;
                let mut at = start;
                let end = loop {
                    let Some(j) = memchr::memchr2(b'"', b'\\', &b[at..]) else {
                        return Err(de::Error::custom("unterminated string"));
                    };
                    if b[at + j] == b'"' {
                        break at + j;
                    }
                    escaped = true;
                    at += j + 2;
                };
                if expect_key {
                    expect_key = false;
                    let name: Cow<'_, str> = if escaped {
                        Cow::Owned(serde_json::from_str::<String>(&raw[start - 1..=end])?)
                    } else {
                        Cow::Borrowed(&raw[start..end])
                    };
                    if let Some(Some(keys)) = open.last_mut() {
                        if !keys.insert(&name) {
                            return Err(de::Error::custom(format_args!("{DUPLICATE_TAG}{name}")));
                        }
                    }
                }
                i = end + 1;
                continue;
            }
            c @ (b'{' | b'[') => {
                if depth + open.len() > MAX_NESTING {
                    return Err(de::Error::custom(format_args!(
                        "nesting deeper than {MAX_NESTING}"
                    )));
                }
                expect_key = c == b'{';
                open.push((c == b'{').then(KeySet::default));
            }
            b'}' | b']' => {
                open.pop();
            }
            b',' => expect_key = matches!(open.last(), Some(Some(_))),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}
