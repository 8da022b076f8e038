//! MAC seals: the per-batch seal that costs a keyed BLAKE3 hash instead of an
//! Ed25519 signature (docs/FORMAT.md section 9).
//!
//! A writer with a key ends every batch with a `seal` record. Most of them
//! carry a MAC, `keyed_hash(mac_key, seal body)`, over the same body a signed
//! seal note has; every so often (by record count and by time, and always on
//! the first batch after start-up and on a batch holding a checkpoint) the
//! seal is an Ed25519-signed note instead. The MAC key is derived from the
//! private key, so the writer can check its own MAC seals at start-up, and an
//! auditor given the MAC key (never the private key) can check them too. A
//! public verifier, which holds only the public key, checks the signed seals
//! and sees the records after the last one as the unsigned tail.
//!
//! ```
//! use audit_core::checkpoint::{KeyPair, Seal};
//! use audit_core::Hash32;
//!
//! let key = KeyPair::generate("example").unwrap();
//! let mac_key = key.seal_mac_key();
//! let seal = Seal { log_id: "log".into(), seq: 7, head: Hash32([1; 32]), max_stretch: 100 };
//! let mac = mac_key.mac(&seal);
//! assert!(mac_key.verifies(&seal, &mac));
//! let text = mac_key.to_text();
//! let back = audit_core::seal_mac::SealMacKey::from_text(&text).unwrap();
//! assert!(back.verifies(&seal, &mac));
//! ```

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::checkpoint::{hex4, valid_name, NoteError, Seal};

/// The BLAKE3 key-derivation context of the MAC key (a fixed, unique string,
/// as BLAKE3's `derive_key` asks for).
const DERIVE_CONTEXT: &str = "auditlog 2026-12-02 seal MAC key v1";

/// The context of the writer's own MAC key, which is never exported: MAC
/// seals carry a second MAC by it (`writer_mac`), and only that one makes
/// the writer adopt records at start-up. An auditor's MAC key can forge the
/// `mac` an auditor checks, but not the one the writer trusts.
const WRITER_CONTEXT: &str = "auditlog 2026-12-03 writer seal MAC key v1";

/// The prefix of a MAC key's text form.
const TEXT_PREFIX: &str = "SEAL+MAC+";

/// The key that makes and checks MAC seals. Named after, and identified by,
/// the signing key it is derived from.
#[derive(Clone, PartialEq, Eq)]
pub struct SealMacKey {
    name: String,
    id: [u8; 4],
    key: [u8; 32],
}

impl fmt::Debug for SealMacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealMacKey({}+{})", self.name, hex4(self.id))
    }
}

impl SealMacKey {
    pub(crate) fn derive(name: &str, id: [u8; 4], private_seed: &[u8; 32]) -> Self {
        Self {
            name: name.to_string(),
            id,
            key: blake3::derive_key(DERIVE_CONTEXT, private_seed),
        }
    }

    /// The writer's own MAC key (see [`WRITER_CONTEXT`]).
    pub(crate) fn derive_writer(name: &str, id: [u8; 4], private_seed: &[u8; 32]) -> Self {
        Self {
            name: name.to_string(),
            id,
            key: blake3::derive_key(WRITER_CONTEXT, private_seed),
        }
    }

    /// Whether this is the MAC key of the signing key `public` (same name
    /// and key ID).
    pub fn belongs_to(&self, public: &crate::checkpoint::PublicKey) -> bool {
        self.name == public.name() && hex4(self.id) == public.id_hex()
    }

    /// The name of the signing key it belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signing key's 4-byte ID, hex.
    pub fn id_hex(&self) -> String {
        hex4(self.id)
    }

    /// The MAC of a seal: BLAKE3 keyed by this key over [`Seal::body`].
    pub fn mac(&self, seal: &Seal) -> [u8; 32] {
        blake3::keyed_hash(&self.key, seal.body().as_bytes()).into()
    }

    /// Whether `mac` is this key's MAC of `seal` (compared in constant time).
    pub fn verifies(&self, seal: &Seal, mac: &[u8; 32]) -> bool {
        blake3::keyed_hash(&self.key, seal.body().as_bytes()) == blake3::Hash::from(*mac)
    }

    /// The text form `SEAL+MAC+name+hexid+base64(key)`, which `audit keygen`
    /// writes to `<name>.mac` and `audit verify --mac-key` reads.
    pub fn to_text(&self) -> String {
        format!(
            "{TEXT_PREFIX}{}+{}+{}",
            self.name,
            hex4(self.id),
            B64.encode(self.key)
        )
    }

    /// Parses [`to_text`](Self::to_text)'s form (surrounding whitespace
    /// allowed, as in a file ending with a newline).
    pub fn from_text(s: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::BadKey(m.to_string());
        let rest = s
            .trim()
            .strip_prefix(TEXT_PREFIX)
            .ok_or_else(|| bad("not a seal MAC key (missing SEAL+MAC+)"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected SEAL+MAC+name+id+key"));
        };
        if !valid_name(name) {
            return Err(bad("invalid key name"));
        }
        let id_bytes: [u8; 4] = (id.len() == 8)
            .then(|| {
                let mut out = [0u8; 4];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = u8::from_str_radix(id.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some(out)
            })
            .flatten()
            .filter(|b| hex4(*b) == id)
            .ok_or_else(|| bad("key ID is not 8 lowercase hex digits"))?;
        let key: [u8; 32] = B64
            .decode(key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("key is not base64 of 32 bytes"))?;
        Ok(Self {
            name: name.to_string(),
            id: id_bytes,
            key,
        })
    }
}

/// Decodes a MAC seal record's `mac` member: standard padded base64 of 32
/// bytes, in its one canonical spelling.
pub fn decode_mac(text: &str) -> Option<[u8; 32]> {
    let raw: [u8; 32] = B64.decode(text).ok()?.try_into().ok()?;
    (B64.encode(raw) == text).then_some(raw)
}

/// Encodes a MAC for a seal record's `mac` member.
pub fn encode_mac(mac: &[u8; 32]) -> String {
    B64.encode(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::KeyPair;
    use crate::Hash32;

    fn seal() -> Seal {
        Seal {
            log_id: "log-1".into(),
            seq: 41,
            head: Hash32([7; 32]),
            max_stretch: 1030,
        }
    }

    #[test]
    fn a_mac_verifies_only_for_its_seal_and_key() {
        let kp = KeyPair::generate("k").unwrap();
        let mk = kp.seal_mac_key();
        let mac = mk.mac(&seal());
        assert!(mk.verifies(&seal(), &mac));
        for changed in [
            Seal { seq: 42, ..seal() },
            Seal {
                log_id: "log-2".into(),
                ..seal()
            },
            Seal {
                head: Hash32([8; 32]),
                ..seal()
            },
            Seal {
                max_stretch: 1031,
                ..seal()
            },
        ] {
            assert!(!mk.verifies(&changed, &mac));
        }
        let other = KeyPair::generate("k").unwrap().seal_mac_key();
        assert!(!other.verifies(&seal(), &mac));
        // Derived, not random: the same private key gives the same MAC key.
        let again = KeyPair::from_private_string(&kp.to_private_string()).unwrap();
        assert_eq!(again.seal_mac_key(), mk);
        assert_eq!(mk.id_hex(), kp.public().id_hex());
    }

    #[test]
    fn the_text_form_round_trips_and_refuses_near_misses() {
        let mk = KeyPair::generate("k").unwrap().seal_mac_key();
        let text = mk.to_text();
        assert_eq!(SealMacKey::from_text(&format!("{text}\n")).unwrap(), mk);
        let private = KeyPair::generate("k").unwrap().to_private_string();
        for bad in [
            "",
            "SEAL+MAC+",
            "SEAL+MAC+k+0000000+AAAA",
            &text.replacen("SEAL+MAC+", "SEAL+MAX+", 1),
            &text[..text.len() - 4],
            &text.replacen("+k+", "+k k+", 1),
            &text.to_uppercase(),
            &private,
        ] {
            assert!(SealMacKey::from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_have_one_spelling() {
        let m = [0xabu8; 32];
        let text = encode_mac(&m);
        assert_eq!(decode_mac(&text), Some(m));
        assert_eq!(decode_mac(text.trim_end_matches('=')), None);
        assert_eq!(decode_mac(&B64.encode([1u8; 31])), None);
    }
}
