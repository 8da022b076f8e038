//! Signed checkpoints: Ed25519 signatures over the chain head, in the C2SP
//! signed-note layout, so that truncation and a recomputed chain are caught.
//!
//! A checkpoint note's body is, one item per line:
//!
//! ```text
//! <log id>
//! <sequence of the record it commits to>
//! <that record's hash, base64>
//! time <unix seconds>
//! ```
//!
//! followed by a blank line and one or more signature lines
//! `— <key name> <base64(key id ‖ signature)>`. Key IDs and key strings
//! follow the signed-note conventions (`name+hexid+base64(0x01 ‖ key)`).
//!
//! A [`Seal`] note (`<log id>\nseal\n…`) is the writer's signature over the
//! last record of each batch it wrote, so that records it did not write cannot
//! be passed off as its own.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::record::Hash32;

/// The signature algorithm byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a key or a note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// A key string is malformed.
    #[error("malformed key: {0}")]
    BadKey(String),
    /// A note is malformed.
    #[error("malformed note: {0}")]
    Malformed(String),
    /// No trusted key has this ID.
    #[error("signed by unknown key {name}+{id}")]
    UnknownKey {
        /// The key name on the signature line.
        name: String,
        /// The key ID, hex.
        id: String,
    },
    /// The signature does not verify.
    #[error("signature by {name}+{id} does not verify")]
    BadSignature {
        /// The key name.
        name: String,
        /// The key ID, hex.
        id: String,
    },
}

fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

pub(crate) fn hex4(id: [u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn valid_name(name: &str) -> bool {
    // C2SP: no whitespace and no `+`; and no control character, which no
    // key name needs and a terminal would act on.
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
}

/// A public key that verifies checkpoints.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
    id: [u8; 4],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}+{})", self.name, hex4(self.id))
    }
}

impl PublicKey {
    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID in hex.
    pub fn id_hex(&self) -> String {
        hex4(self.id)
    }

    /// The signed-note verifier string: `name+hexid+base64(0x01 ‖ key)`.
    pub fn to_vkey(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex4(self.id), B64.encode(raw))
    }

    /// Parses a verifier string, checking its ID against its key.
    pub fn from_vkey(s: &str) -> Result<Self, NoteError> {
        let s = s.trim();
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected name+id+key".into()));
        };
        if !valid_name(name) {
            return Err(NoteError::BadKey(format!("invalid key name {name:?}")));
        }
        let raw = B64
            .decode(key)
            .map_err(|e| NoteError::BadKey(format!("key is not base64: {e}")))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(NoteError::BadKey("not an Ed25519 key".into()));
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&raw[1..]);
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| NoteError::BadKey(e.to_string()))?;
        let pk = Self {
            name: name.to_string(),
            id: key_id(name, &key),
            key,
        };
        if pk.id_hex() != id {
            return Err(NoteError::BadKey(format!(
                "key ID {id} does not match the key (expected {})",
                pk.id_hex()
            )));
        }
        Ok(pk)
    }
}

/// A signing key. Its private form is never logged or printed by Debug.
pub struct KeyPair {
    name: String,
    signing: SigningKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({:?})", self.public())
    }
}

impl KeyPair {
    /// A new key named `name`, from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey(format!("invalid key name {name:?}")));
        }
        let mut seed = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(|e| NoteError::BadKey(format!("cannot read /dev/urandom: {e}")))?;
        Ok(Self {
            name: name.to_string(),
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        let key = self.signing.verifying_key();
        PublicKey {
            name: self.name.clone(),
            id: key_id(&self.name, &key),
            key,
        }
    }

    /// The private key string: `PRIVATE+KEY+name+hexid+base64(0x01 ‖ seed)`.
    pub fn to_private_string(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.signing.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            self.public().id_hex(),
            B64.encode(raw)
        )
    }

    /// Parses a private key string.
    pub fn from_private_string(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| NoteError::BadKey("not a private key (missing PRIVATE+KEY+)".into()))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected PRIVATE+KEY+name+id+key".into()));
        };
        let raw = B64
            .decode(key)
            .map_err(|e| NoteError::BadKey(format!("key is not base64: {e}")))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 || !valid_name(name) {
            return Err(NoteError::BadKey("not an Ed25519 private key".into()));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&raw[1..]);
        let kp = Self {
            name: name.to_string(),
            signing: SigningKey::from_bytes(&seed),
        };
        if kp.public().id_hex() != id {
            return Err(NoteError::BadKey("key ID does not match the key".into()));
        }
        Ok(kp)
    }

    /// The key of this key pair's MAC seals ([`crate::seal_mac`]), derived
    /// from the private key: whoever holds it can check (and so forge) MAC
    /// seals, but cannot sign.
    pub fn seal_mac_key(&self) -> crate::seal_mac::SealMacKey {
        crate::seal_mac::SealMacKey::derive(&self.name, self.public().id, &self.signing.to_bytes())
    }

    /// The writer's own MAC key, derived like [`seal_mac_key`](Self::seal_mac_key)
    /// but with another context and never written anywhere: the second MAC
    /// of every MAC seal, the one the writer checks at start-up, so that a
    /// holder of the auditors' MAC key cannot make it adopt records.
    pub fn writer_mac_key(&self) -> crate::seal_mac::SealMacKey {
        crate::seal_mac::SealMacKey::derive_writer(
            &self.name,
            self.public().id,
            &self.signing.to_bytes(),
        )
    }

    /// Signs a note body (which must end with a newline) and returns the note.
    pub fn sign_note(&self, body: &str) -> String {
        let sig = self.signing.sign(body.as_bytes());
        let mut raw = self.public().id.to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        format!("{body}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }

    /// Adds this key's signature line to a signed note (signed-note notes may
    /// carry several): the note's body is signed and the line appended after
    /// the existing ones. A note without a blank line before its signatures
    /// is returned unchanged, since there is no body to sign.
    pub fn cosign(&self, note: &str) -> String {
        let Some(at) = note.rfind("\n\n") else {
            return note.to_string();
        };
        let body = &note[..at + 1];
        let sig = self.signing.sign(body.as_bytes());
        let mut raw = self.public().id.to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        let mut out = String::with_capacity(note.len() + 120);
        out.push_str(note);
        // A note always ends with its last signature line's newline; restore it
        // if a caller trimmed it, so the new line stands on its own.
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw)));
        out
    }
}

/// What a checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (the note's origin line).
    pub log_id: String,
    /// The sequence of the record it commits to.
    pub seq: u64,
    /// That record's hash.
    pub head: Hash32,
    /// When it was made, in Unix seconds.
    pub time: i64,
}

impl Checkpoint {
    /// The note body.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.log_id,
            self.seq,
            B64.encode(self.head.0),
            self.time
        )
    }

    /// Strict parse: exactly the four lines of [`Checkpoint::body`], in
    /// canonical form, so a checkpoint has one spelling.
    fn parse_body(body: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.to_string());
        let lines: Vec<&str> = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("a checkpoint body ends with a newline"))?
            .split('\n')
            .collect();
        let [log_id, seq, head, time] = lines[..] else {
            return Err(bad("a checkpoint body has exactly 4 lines"));
        };
        if log_id.is_empty() {
            return Err(bad("a checkpoint names its log on line 1"));
        }
        let seq = parse_decimal(seq).ok_or_else(|| bad("line 2 is not a sequence"))?;
        let raw = B64.decode(head).map_err(|_| bad("line 3 is not base64"))?;
        let head: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("line 3 is not a 32-byte hash"))?;
        let time = time
            .strip_prefix("time ")
            .and_then(parse_decimal)
            .and_then(|t| i64::try_from(t).ok())
            .ok_or_else(|| bad("line 4 is not `time <Unix seconds>`"))?;
        let cp = Self {
            log_id: log_id.to_string(),
            seq,
            head: Hash32(head),
            time,
        };
        if cp.body() != body {
            return Err(bad("checkpoint body is not in canonical form"));
        }
        Ok(cp)
    }
}

/// One signature line of a note: key name, key ID, signature bytes.
struct SigLine<'a> {
    name: &'a str,
    id: [u8; 4],
    sig: [u8; 64],
}

/// A note split into its body and its signature lines (at least one).
struct SplitNote<'a> {
    body: &'a str,
    sigs: Vec<SigLine<'a>>,
}

fn parse_sig_line(line: &str) -> Result<SigLine<'_>, NoteError> {
    let bad = |m: &str| NoteError::Malformed(m.to_string());
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or_else(|| bad("signature line must start with an em dash"))?;
    let (name, sig) = rest
        .split_once(' ')
        .ok_or_else(|| bad("signature line needs a name and a signature"))?;
    // C2SP signed-note: a key name is non-empty, with no whitespace and no
    // `+` (which separates a verifier key's fields).
    if name.is_empty() || name.chars().any(|c| c == '+' || c.is_whitespace()) {
        return Err(bad("a key name is non-empty, without whitespace or '+'"));
    }
    let raw = B64
        .decode(sig)
        .map_err(|_| bad("signature is not base64"))?;
    if raw.len() != 68 {
        return Err(bad("signature must be a 4-byte key ID and 64 bytes"));
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&raw[..4]);
    let mut s = [0u8; 64];
    s.copy_from_slice(&raw[4..]);
    Ok(SigLine { name, id, sig: s })
}

/// How many signature lines `note` has, each checked for form (a key name,
/// a 4-byte key ID and a 64-byte signature), but not verified.
pub fn signature_lines(note: &str) -> Result<usize, NoteError> {
    split_note(note).map(|n| n.sigs.len())
}

/// A note split into its body and its signature lines.
fn split_note(note: &str) -> Result<SplitNote<'_>, NoteError> {
    let bad = |m: &str| NoteError::Malformed(m.to_string());
    let at = note
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line before the signature"))?;
    let body = &note[..at + 1];
    let sig_text = note[at + 2..]
        .strip_suffix('\n')
        .ok_or_else(|| bad("a note ends with a newline"))?;
    if sig_text.is_empty() {
        return Err(bad("a note needs at least one signature line"));
    }
    let sigs = sig_text
        .split('\n')
        .map(parse_sig_line)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SplitNote { body, sigs })
}

/// Verifies a note against `keys` and returns its body and the key that signed it.
///
/// A note may carry several signature lines (signed-note semantics): it is
/// accepted when some line names a trusted key (name and ID) and verifies;
/// the key returned is the first such line's. A line by a trusted key that
/// does not verify makes the note [`NoteError::BadSignature`], whatever the
/// other lines say, and lines by keys not in `keys` are ignored. A note with
/// no line by a trusted key is [`NoteError::UnknownKey`], naming its first
/// line's key.
pub fn verify_note<'a>(
    note: &'a str,
    keys: &[PublicKey],
) -> Result<(&'a str, PublicKey), NoteError> {
    let SplitNote { body, sigs } = split_note(note)?;
    let mut signer: Option<&PublicKey> = None;
    for line in &sigs {
        let Some(key) = keys.iter().find(|k| k.id == line.id && k.name == line.name) else {
            continue;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&line.sig);
        key.key
            .verify_strict(body.as_bytes(), &sig)
            .map_err(|_| NoteError::BadSignature {
                name: line.name.to_string(),
                id: hex4(line.id),
            })?;
        signer.get_or_insert(key);
    }
    match signer {
        Some(key) => Ok((body, key.clone())),
        None => {
            // split_note guarantees at least one line.
            let first = &sigs[0];
            Err(NoteError::UnknownKey {
                name: first.name.to_string(),
                id: hex4(first.id),
            })
        }
    }
}

/// Verifies a checkpoint note and parses what it commits to.
pub fn verify_checkpoint(
    note: &str,
    keys: &[PublicKey],
) -> Result<(Checkpoint, PublicKey), NoteError> {
    let (body, key) = verify_note(note, keys)?;
    Ok((Checkpoint::parse_body(body)?, key))
}

/// What a seal commits to: the writer vouches that record `seq`, and so the
/// chain up to it, is its own. The writer ends every batch it writes with a
/// `seal` record signing the batch's last record.
///
/// Its note body is, one item per line, each ending in `\n`:
///
/// ```text
/// <log id>
/// seal
/// <seq, decimal>
/// <hash of record seq, base64 standard padded>
/// stretch <max_stretch, decimal>
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// The log's identity (the note's origin line).
    pub log_id: String,
    /// The sequence of the record it seals (the record right before the seal).
    pub seq: u64,
    /// That record's hash.
    pub head: Hash32,
    /// The most records the writer may put between two consecutive seals:
    /// a verifier reports a longer unsealed stretch as an error.
    pub max_stretch: u64,
}

impl Seal {
    /// The note body.
    pub fn body(&self) -> String {
        format!(
            "{}\nseal\n{}\n{}\nstretch {}\n",
            self.log_id,
            self.seq,
            B64.encode(self.head.0),
            self.max_stretch
        )
    }

    /// Strict parse: exactly the five lines of [`Seal::body`], in canonical
    /// form (so a body has one spelling and a checkpoint never parses as one).
    fn parse_body(body: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.to_string());
        let lines: Vec<&str> = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("a seal body ends with a newline"))?
            .split('\n')
            .collect();
        let [log_id, kind, seq, head, stretch] = lines[..] else {
            return Err(bad("a seal body has exactly 5 lines"));
        };
        if kind != "seal" {
            return Err(bad("not a seal note (line 2 is not `seal`)"));
        }
        if log_id.is_empty() {
            return Err(bad("a seal names its log on line 1"));
        }
        let seq = parse_decimal(seq).ok_or_else(|| bad("line 3 is not a sequence"))?;
        let raw = B64.decode(head).map_err(|_| bad("line 4 is not base64"))?;
        let head: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("line 4 is not a 32-byte hash"))?;
        let max_stretch = stretch
            .strip_prefix("stretch ")
            .and_then(parse_decimal)
            .ok_or_else(|| bad("line 5 is not `stretch <n>`"))?;
        let seal = Self {
            log_id: log_id.to_string(),
            seq,
            head: Hash32(head),
            max_stretch,
        };
        // Only the canonical spelling (e.g. no unpadded or non-canonical base64).
        if seal.body() != body {
            return Err(bad("seal body is not in canonical form"));
        }
        Ok(seal)
    }
}

/// A decimal without sign or leading zeros (except `0` itself).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Verifies a seal note and parses what it commits to; returns the seal and
/// the key that signed it. The body must be exactly a [`Seal::body`].
pub fn verify_seal(note: &str, keys: &[PublicKey]) -> Result<(Seal, PublicKey), NoteError> {
    let (body, key) = verify_note(note, keys)?;
    Ok((Seal::parse_body(body)?, key))
}

/// The body of a key-rotation note: the old key signs that `new` follows it
/// (the writer also cosigns it with `new`, see [`KeyPair::cosign`]).
pub fn rotation_body(log_id: &str, new: &PublicKey) -> String {
    format!("{log_id}\nkey rotation\n{}\n", new.to_vkey())
}

/// Verifies a key-rotation note; returns the new key and the key that signed it.
pub fn verify_rotation(
    note: &str,
    keys: &[PublicKey],
) -> Result<(PublicKey, PublicKey), NoteError> {
    let (body, signer) = verify_note(note, keys)?;
    let lines: Vec<&str> = body.strip_suffix('\n').unwrap_or("").split('\n').collect();
    if lines.len() != 3 || lines[1] != "key rotation" {
        return Err(NoteError::Malformed("not a key-rotation note".into()));
    }
    let new = PublicKey::from_vkey(lines[2])?;
    // One spelling only (from_vkey trims, and base64 has others).
    if rotation_body(lines[0], &new) != body {
        return Err(NoteError::Malformed(
            "key-rotation body is not in canonical form".into(),
        ));
    }
    // Signed by exactly the retired key and the new one, which proves it
    // holds its key: a second line by anyone else would carry 68 bytes
    // nobody vouches for.
    let sigs = split_note(note)?.sigs;
    let by = |k: &PublicKey| {
        sigs.iter()
            .filter(|l| l.id == k.id && l.name == k.name)
            .count()
    };
    if sigs.len() != 2 || by(&signer) != 1 || by(&new) != 1 {
        return Err(NoteError::Malformed(
            "a key-rotation note is signed by exactly the retired key and the new one".into(),
        ));
    }
    verify_note(note, std::slice::from_ref(&new))?;
    Ok((new, signer))
}

/// The witness file name for a checkpoint of record `seq`.
pub fn witness_file_name(seq: u64) -> String {
    format!("checkpoint-{seq:020}.note")
}

/// Writes a checkpoint note into a witness directory, durably, never
/// overwriting an existing note.
pub fn write_witness(dir: &std::path::Path, seq: u64, note: &str) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(witness_file_name(seq));
    match place_note(dir, &path, note) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A heartbeat may sign the same head again; an identical note is fine.
            if std::fs::read_to_string(&path)? == note {
                return Ok(());
            }
            // Keep the first note: it is the one a witness vouches for.
            let alt = dir.join(format!(
                "checkpoint-{seq:020}.{}.note",
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
            ));
            place_note(dir, &alt, note)
        }
        other => other,
    }
}

/// Puts `note` at `path` whole or not at all: written and synced under a
/// temporary name (which no reader takes for a note: it does not start with
/// `checkpoint-`), then linked to `path`, which fails if `path` exists. A
/// crash, or a power cut before the sync, never leaves an empty or partial
/// note under a note's name, which every verifier would fail for good.
fn place_note(dir: &std::path::Path, path: &std::path::Path, note: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(
        ".tmp-{}-{}.note",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(note.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// The latest checkpoint note in a witness directory, by sequence.
pub fn latest_witness(
    dir: &std::path::Path,
) -> std::io::Result<Option<(std::path::PathBuf, String)>> {
    let mut best: Option<(u64, std::path::PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(seq) = name
            .strip_prefix("checkpoint-")
            .and_then(|r| r.get(..20))
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| seq > *b) {
            best = Some((seq, entry.path()));
        }
    }
    match best {
        Some((_, path)) => {
            let note = std::fs::read_to_string(&path)?;
            Ok(Some((path, note)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_notes_verify() {
        let kp = KeyPair::generate("audit.example").expect("key");
        let back = KeyPair::from_private_string(&kp.to_private_string()).expect("parse");
        assert_eq!(back.public(), kp.public());
        let pk = PublicKey::from_vkey(&kp.public().to_vkey()).expect("vkey");
        let cp = Checkpoint {
            log_id: "log-1".into(),
            seq: 42,
            head: Hash32([9; 32]),
            time: 1_700_000_000,
        };
        let note = kp.sign_note(&cp.body());
        let (got, key) = verify_checkpoint(&note, std::slice::from_ref(&pk)).expect("verifies");
        assert_eq!((got, key), (cp, pk.clone()));
        let forged = note.replace("\n42\n", "\n43\n");
        assert!(matches!(
            verify_checkpoint(&forged, &[pk]),
            Err(NoteError::BadSignature { .. })
        ));
        let other = KeyPair::generate("audit.example").expect("key");
        assert!(matches!(
            verify_checkpoint(&note, &[other.public()]),
            Err(NoteError::UnknownKey { .. })
        ));
        assert!(PublicKey::from_vkey("a+00000000+AAAA").is_err());
    }

    #[test]
    fn a_checkpoint_or_rotation_note_has_one_spelling() {
        // Signed by the key itself, so only the parse can refuse them: a
        // body has exactly one spelling, as the independent verifier reads it.
        let kp = KeyPair::generate("audit.example").expect("key");
        let pk = kp.public();
        let cp = Checkpoint {
            log_id: "log-1".into(),
            seq: 42,
            head: Hash32([9; 32]),
            time: 1_700_000_000,
        };
        let body = cp.body();
        for bad in [
            format!("{body}extra\n"),
            body.replace("\n42\n", "\n042\n"),
            body.replace("\n42\n", "\n+42\n"),
            body.replace("time ", "time  "),
            body.replace("time 1700000000\n", ""),
            body.replace("time 1700000000", "time -1"),
            body.replace("=\n", "\n"),
        ] {
            assert!(
                matches!(
                    verify_checkpoint(&kp.sign_note(&bad), std::slice::from_ref(&pk)),
                    Err(NoteError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        // The note must end with its signature line's newline.
        let note = kp.sign_note(&body);
        assert!(matches!(
            verify_checkpoint(note.trim_end(), std::slice::from_ref(&pk)),
            Err(NoteError::Malformed(_))
        ));
        let next = KeyPair::generate("next.example").expect("key");
        let new = next.public();
        let rotation = rotation_body("log-1", &new);
        // Signed by the retired key and cosigned by the new one.
        let signed = |body: &str| next.cosign(&kp.sign_note(body));
        assert!(verify_rotation(&signed(&rotation), std::slice::from_ref(&pk)).is_ok());
        // Without the new key's line it is malformed.
        assert!(matches!(
            verify_rotation(&kp.sign_note(&rotation), std::slice::from_ref(&pk)),
            Err(NoteError::Malformed(_))
        ));
        for bad in [
            format!("{rotation}\n"),
            rotation.replace(&new.to_vkey(), &format!(" {}", new.to_vkey())),
        ] {
            assert!(
                matches!(
                    verify_rotation(&signed(&bad), std::slice::from_ref(&pk)),
                    Err(NoteError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    fn seal_fixture() -> Seal {
        Seal {
            log_id: "log-1".into(),
            seq: 41,
            head: Hash32([7; 32]),
            max_stretch: 1030,
        }
    }

    #[test]
    fn seals_round_trip_and_refuse_forgeries() {
        let kp = KeyPair::generate("audit.example").expect("key");
        let pk = kp.public();
        let seal = seal_fixture();
        let body = seal.body();
        assert_eq!(
            body,
            format!("log-1\nseal\n41\n{}\nstretch 1030\n", B64.encode([7u8; 32]))
        );
        let note = kp.sign_note(&body);
        let (got, key) = verify_seal(&note, std::slice::from_ref(&pk)).expect("verifies");
        assert_eq!((got, key), (seal.clone(), pk.clone()));

        let forged = note.replace("\n41\n", "\n42\n");
        assert!(matches!(
            verify_seal(&forged, std::slice::from_ref(&pk)),
            Err(NoteError::BadSignature { .. })
        ));
        let other = KeyPair::generate("audit.example").expect("key");
        assert!(matches!(
            verify_seal(&note, &[other.public()]),
            Err(NoteError::UnknownKey { .. })
        ));
        // A validly signed body with an extra line, or a padded sequence, is
        // not a seal.
        for body in [
            format!("{body}extra\n"),
            body.replace("\n41\n", "\n041\n"),
            body.replace("stretch ", "stretch  "),
        ] {
            assert!(
                matches!(
                    verify_seal(&kp.sign_note(&body), std::slice::from_ref(&pk)),
                    Err(NoteError::Malformed(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_checkpoint_is_not_a_seal_and_a_seal_is_not_a_checkpoint() {
        let kp = KeyPair::generate("audit.example").expect("key");
        let pk = kp.public();
        let cp = Checkpoint {
            log_id: "log-1".into(),
            seq: 41,
            head: Hash32([7; 32]),
            time: 1_700_000_000,
        };
        let cp_note = kp.sign_note(&cp.body());
        assert!(matches!(
            verify_seal(&cp_note, std::slice::from_ref(&pk)),
            Err(NoteError::Malformed(_))
        ));
        let seal_note = kp.sign_note(&seal_fixture().body());
        assert!(matches!(
            verify_checkpoint(&seal_note, std::slice::from_ref(&pk)),
            Err(NoteError::Malformed(_))
        ));
        let rot_note = kp.sign_note(&rotation_body("log-1", &pk));
        assert!(verify_seal(&rot_note, std::slice::from_ref(&pk)).is_err());
        assert!(verify_rotation(&seal_note, std::slice::from_ref(&pk)).is_err());
    }

    #[test]
    fn cosigned_notes_verify_with_either_key() {
        let a = KeyPair::generate("a.example").expect("key");
        let b = KeyPair::generate("b.example").expect("key");
        let mallory = KeyPair::generate("m.example").expect("key");
        let body = rotation_body("log-1", &b.public());
        let note = b.cosign(&a.sign_note(&body));
        assert_eq!(note.matches(SIG_PREFIX).count(), 2);
        let (new, signer) = verify_rotation(&note, &[a.public()]).expect("A alone");
        assert_eq!((new, signer), (b.public(), a.public()));
        let (_, signer) = verify_rotation(&note, &[b.public()]).expect("B alone");
        assert_eq!(signer, b.public());
        // Both trusted: the first line (the retired key's) names the signer.
        let (_, signer) = verify_rotation(&note, &[b.public(), a.public()]).expect("both");
        assert_eq!(signer, a.public());
        // Lines by unknown keys are ignored...
        let extra = mallory.cosign(&note);
        assert!(verify_note(&extra, &[b.public()]).is_ok());
        assert!(matches!(
            verify_note(&extra, &[]),
            Err(NoteError::UnknownKey { name, .. }) if name == "a.example"
        ));
        // ...but a trusted key's line that does not verify fails the note,
        // even when another trusted line verifies.
        let a_line = note
            .lines()
            .find(|l| l.starts_with(&format!("{SIG_PREFIX}a.example ")))
            .expect("line");
        let other_body = rotation_body("log-2", &b.public());
        let wrong = a.sign_note(&other_body);
        let wrong_a = wrong.lines().last().expect("line");
        let tampered = note.replace(a_line, wrong_a);
        assert!(verify_note(&tampered, &[b.public()]).is_ok());
        assert!(matches!(
            verify_note(&tampered, &[a.public(), b.public()]),
            Err(NoteError::BadSignature { name, .. }) if name == "a.example"
        ));
        // A malformed extra line makes the note malformed.
        assert!(matches!(
            verify_note(&format!("{note}garbage\n"), &[a.public()]),
            Err(NoteError::Malformed(_))
        ));
    }
}
