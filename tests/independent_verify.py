#!/usr/bin/env python3
"""An independent verifier for auditlog logs, written from docs/FORMAT.md alone.

Usage: independent_verify.py [OPTIONS] PATH [PATH ...]
       independent_verify.py --lines FILE
PATH is a JSONL file or a directory of audit-<seq>.jsonl segments.
Exit 0 when every log verifies (warnings allowed), 1 on any error, 2 when a
source cannot be read or holds no records, or the usage is wrong.
A second `genesis` is an error in a segment directory (a log our writer
made) and a warning in a single seed-format file.

Options (docs/VERIFY.md):
  --strict            a restart in a single file, and an unsigned tail
                      (with --public-key), are errors too
  --public-key FILE   a trusted key (`name+id+base64`, as `audit keygen`
                      writes it); repeat, oldest first, for the key history.
                      Checks every checkpoint, seal and key rotation.
  --mac-key FILE      a MAC key (`SEAL+MAC+…`, as `audit keygen` writes to
                      NAME.mac, or the private key): checks the MAC seals
                      between signed seals too; repeat for several
  --log-id ID         every signed note must name this log
  --witness DIR       the newest witnessed checkpoint must be in the log
  --max-age SECONDS   the newest valid checkpoint must be younger (also Ns,
                      Nm, Nh)
--witness, --max-age, --log-id and --mac-key need --public-key.

--lines checks each line of FILE as a record on its own, ignoring the chain,
and prints `N ok`, `N modified` or `N malformed: why` for each.
Needs the `blake3` package from PyPI, and `cryptography` for --public-key.
"""
import base64
import errno
import hashlib
import hmac
import json
import os
import re
import stat
import sys
import time

import blake3

SUFFIX = re.compile(
    rb',"chain_sequence":([1-9][0-9]{0,19}),"chain_prev_hash":"(genesis|[0-9a-f]{64})",'
    rb'"chain_record_hash":"([0-9a-f]{64})"\}\Z'
)
SEGMENT = re.compile(r"audit-([0-9]{20})(\.[0-9]+)?\.jsonl\Z")
MAX_SEQ, MAX_GENERATION = 2**64 - 1, 2**32 - 1  # u64 and u32
CHAIN = ("chain_sequence", "chain_prev_hash", "chain_record_hash")
RECORD_TYPE_PREFIX = b'{"record_type":"'


class Malformed(Exception):
    pass


def no_duplicates(pairs):
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise Malformed(f"duplicate member {k!r}")
        seen.add(k)
    return dict(pairs)


def ordered(pairs):
    no_duplicates(pairs)
    return pairs


SURROGATE = re.compile("[\ud800-\udfff]")
# A parsed string holds a surrogate only through a \u escape of one (raw
# surrogates are not UTF-8): records without such an escape skip the walk.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
NOT_BRACKET = re.compile(rb"[^\[\]{}]")
# FORMAT.md section 5: values nest at most this deep below the record's object.
MAX_NESTING = 128


def nesting(text):
    """How deep arrays and objects nest below the top-level object."""
    depth = deepest = 0
    for c in NOT_BRACKET.sub(b"", STRING.sub(b"", text)):
        if c in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest - 1


def reject_constant(name):
    raise Malformed(f"{name} is not JSON")


def strings(value):
    """Every string in a value parsed with `ordered`: names and values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, tuple):  # an object's (name, value) pair
                yield item[0]
                yield from strings(item[1])
            else:
                yield from strings(item)


def parse(text):
    """Returns (seq, prev, claimed_hash) or raises Malformed."""
    return parse_full(text)[:3]


def parse_full(text):
    """Returns (seq, prev, claimed_hash, members) or raises Malformed, where
    members is the top-level object as a list of (name, value) pairs."""
    if b"\n" in text or b"\r" in text:
        raise Malformed("raw newline in record")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed(f"invalid UTF-8 at byte {e.start}")
    m = SUFFIX.search(text)
    if not text.startswith(b"{") or m is None:
        raise Malformed("chain members missing or not canonical")
    seq = int(m.group(1))
    if seq >= 2**64:
        raise Malformed("sequence overflows 64 bits")
    # Checked before parsing: Python's parser recurses, and hostile nesting
    # would exhaust its stack. Too few brackets to nest that deep, counting
    # those in strings too, settles it without the scan.
    if text.count(b"[") + text.count(b"{") > MAX_NESTING + 1 and nesting(text) > MAX_NESTING:
        raise Malformed(f"values nest deeper than {MAX_NESTING} levels")
    try:
        # Duplicate members are refused at every depth; the top level keeps order.
        top = json.loads(decoded, object_pairs_hook=ordered, parse_constant=reject_constant)
    except (ValueError, Malformed) as e:
        raise Malformed(f"invalid JSON: {e}")
    # A pair of escapes decodes to one character; what is left is unpaired.
    if SURROGATE_ESCAPE.search(text) and any(SURROGATE.search(s) for s in strings(top)):
        raise Malformed("an escape is an unpaired UTF-16 surrogate")
    if not isinstance(top, list):
        raise Malformed("not a JSON object")
    names = [k for k, _ in top]
    if names[-3:] != list(CHAIN) or any(n in CHAIN for n in names[:-3]):
        raise Malformed("chain members out of place")
    if "record_type" in names and names.index("record_type") != 0:
        raise Malformed("record_type is not the first member")
    values = dict(top)
    if "record_type" in values and not isinstance(values["record_type"], str):
        raise Malformed("record_type is not a string")
    # FORMAT.md section 6: readers (the writer among them) tell a non-entry
    # record by its leading bytes, so no other spelling of them: no
    # whitespace, and the type without escapes.
    if "record_type" in values and not text.startswith(
            RECORD_TYPE_PREFIX + values["record_type"].encode("utf-8") + b'"'):
        raise Malformed('a non-entry record must start with exactly {"record_type":"<type>" (no whitespace, no escapes)')
    if values["chain_sequence"] != seq or isinstance(values["chain_sequence"], bool):
        raise Malformed("parsed sequence differs from its bytes")
    if values["chain_prev_hash"] != m.group(2).decode() or values["chain_record_hash"] != m.group(3).decode():
        raise Malformed("parsed hashes differ from their bytes")
    return seq, m.group(2).decode(), m.group(3).decode(), top


def record_hash(text):
    return blake3.blake3(text[:-88] + b"}").hexdigest()


def segment_names(path):
    """The segments of a directory, as (path, first sequence) in chain order,
    and the paths of files named like segments whose sequence does not fit
    in 64 bits or generation in 32 (not segments; not read)."""
    segs, out_of_range = [], []
    for n in os.listdir(path):
        m = SEGMENT.match(n)
        if m is None:
            continue
        seq, gen = int(m.group(1)), int(m.group(2)[1:]) if m.group(2) else -1
        # A generation is 1 or more without a leading zero: `X.0` would
        # sort beside `X` here and elsewhere in another reader.
        if seq > MAX_SEQ or gen > MAX_GENERATION or (m.group(2) or ".1")[1] == "0":
            out_of_range.append(os.path.join(path, n))
            continue
        # FORMAT.md section 8: by first sequence, then generation, none first.
        segs.append(((seq, gen, n), (os.path.join(path, n), seq)))
    return [s for _, s in sorted(segs)], sorted(out_of_range)


def files_of(path):
    if os.path.isdir(path):
        return segment_names(path)[0]
    return [(path, None)]


CHUNK = 8 << 20
MAX_LINE = 16 << 20  # longer lines are reported, not loaded


def last_data_end(f, length):
    """Where the file's last data region ends (SEEK_DATA/SEEK_HOLE), or
    `length` where the system cannot tell."""
    fd, pos, end = f.fileno(), 0, 0
    try:
        while True:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                return min(end, length) if e.errno == errno.ENXIO else length
            end = pos = os.lseek(fd, data, os.SEEK_HOLE)
    except (AttributeError, OSError):
        return length


def data_end(f):
    """The file's length without a trailing run of NUL bytes (FORMAT.md
    section 8: preallocated space after the last segment's data). Past 64 MiB
    of zeros the tail is not preallocation, and holes are skipped unread."""
    length = end = f.seek(0, os.SEEK_END)
    holes_checked = False
    while end > 0:
        if not holes_checked and length - end >= 64 << 20:
            holes_checked = True
            end = min(end, last_data_end(f, end))
            continue
        start = max(0, end - CHUNK)
        f.seek(start)
        block = f.read(end - start).rstrip(b"\x00")
        if block:
            return start + len(block)
        end = start
    return 0


def lines_of(fname, is_last):
    """Yields (line number, text or None if too long, terminated) for each
    line, reading in chunks so memory stays bounded whatever the file's size."""
    with open(fname, "rb") as f:
        end = data_end(f) if is_last else f.seek(0, os.SEEK_END)
        f.seek(0)
        pos, n = 0, 0
        carry = bytearray()
        skipping = False  # inside a line longer than MAX_LINE
        while pos < end:
            chunk = f.read(min(CHUNK, end - pos))
            if not chunk:
                break
            pos += len(chunk)
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                if nl < 0:
                    break
                n += 1
                if skipping or len(carry) + nl - start > MAX_LINE:
                    yield n, None, True
                else:
                    yield n, bytes(carry) + chunk[start:nl], True
                carry.clear()
                skipping = False
                start = nl + 1
            if not skipping:
                carry += chunk[start:]
                if len(carry) > MAX_LINE:
                    carry.clear()
                    skipping = True
        if carry or skipping:
            n += 1
            yield n, (None if skipping else bytes(carry)), False


# ---- Signed notes and keys: FORMAT.md section 9 ----

SIGNED_TYPES = ("checkpoint", "seal", "key_rotation")
# FORMAT.md section 9: each of the writer's records holds exactly these
# members after record_type (and before the chain members), in this order.
SHAPES = {
    "checkpoint": [("timestamp", "log_id", "checkpoint_seq", "head_hash", "key_id", "note")],
    "seal": [("sealed_seq", "note"), ("sealed_seq", "stretch", "mac", "writer_mac")],
    "key_rotation": [("timestamp", "log_id", "new_key", "note")],
}
INTEGER_MEMBERS = ("checkpoint_seq", "sealed_seq", "stretch")


def canonical_marker(rtype, pairs):
    """The one byte form of a marker: the writer's encoding of its members
    (serde_json's: no whitespace, only the escapes it makes), up to the chain
    members."""
    out = '{"record_type":' + json.dumps(rtype, ensure_ascii=False)
    for n, v in pairs:
        if n == "record_type" or n.startswith("chain_"):
            continue
        value = str(v) if n in INTEGER_MEMBERS else json.dumps(v, ensure_ascii=False)
        out += "," + json.dumps(n, ensure_ascii=False) + ":" + value
    return (out + ',"chain_sequence":').encode()


def shape_error(rtype, pairs, text):
    """Why a checkpoint, seal or rotation record has none of its shapes, or None."""
    names = tuple(n for n, _ in pairs if n != "record_type" and not n.startswith("chain_"))
    if names not in SHAPES[rtype]:
        want = " or ".join(", ".join(s) for s in SHAPES[rtype])
        return f"a {rtype} record holds exactly the members {want} after record_type; this one holds {', '.join(names) or 'none'}"
    for n, v in pairs:
        if n == "record_type" or n.startswith("chain_"):
            continue
        if n in INTEGER_MEMBERS:
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**64:
                return f"`{n}` is not an unsigned integer"
        elif not isinstance(v, str):
            return f"`{n}` is not a string"
    # Another spelling of the same JSON could carry data the note does not
    # sign, and the writer would adopt it.
    if not text.startswith(canonical_marker(rtype, pairs)):
        return f"a {rtype} record is spelled exactly as the writer writes it (no whitespace, no escape it would not make); this one is not"
    note = dict(pairs).get("note")
    if note is not None:
        # Exactly the writer's signatures: a line by a key the verifier does
        # not hold would be ignored, and could carry anything.
        try:
            got = len(split_note(note)[1])
        except Malformed as e:
            return f"its note: {e}"
        if got != SIG_LINES[rtype]:
            return f"a {rtype} note holds exactly {SIG_LINES[rtype]} signature line(s); this one holds {got}"
    return None
KEY_HEX_ID = re.compile(r"[0-9a-f]{8}\Z")
CANONICAL = re.compile(r"[1-9][0-9]*\Z")  # a sequence: positive, no leading zero
CANONICAL_OR_ZERO = re.compile(r"(0|[1-9][0-9]*)\Z")
# Whitespace as Rust's char::is_whitespace (Unicode White_Space), which is
# not Python's \s: that also holds U+001C-U+001F.
WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A key name in a verifier, MAC or private key: as a signature line's, and
# no control character (Rust's char::is_control: U+0000-U+001F, U+007F-U+009F).
KEY_NAME = re.compile("[^+" + WHITESPACE + "\x00-\x1f\x7f-\x9f]+\\Z")
SIG_LINE = re.compile("\u2014 ([^+" + WHITESPACE + "]+) ([A-Za-z0-9+/=]+)\\Z")
SIG_BYTES = 68  # a 4-byte key ID and a 64-byte Ed25519 signature
# FORMAT.md section 9: how many signature lines each record's note holds.
SIG_LINES = {"checkpoint": 1, "seal": 1, "key_rotation": 2}
WITNESS_NAME = re.compile(r"checkpoint-([0-9]{20})(\.[0-9]+)?\.note\Z")


class Unreadable(Exception):
    """A source that cannot be read, or a usage error: exit 2."""


def b64_strict(text):
    """Standard, padded base64 in its one canonical spelling, or ValueError."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError(f"{text!r} is not canonical base64")
    return raw


def key_id(name, pub):
    return hashlib.sha256(name.encode("utf-8") + b"\n\x01" + pub).digest()[:4]


class Key:
    """A C2SP verifier key: `<name>+<key ID hex>+<base64(0x01 || key)>`."""

    def __init__(self, text):
        # The base64 part may itself hold `+`: split at the first two only.
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise ValueError(f"{text!r} is not name+id+key")
        name, hex_id, b64 = parts
        if not KEY_NAME.match(name) or not KEY_HEX_ID.match(hex_id):
            raise ValueError(f"{text!r}: bad key name or key ID")
        try:
            raw = b64_strict(b64)
        except ValueError as e:
            raise ValueError(f"{text!r}: {e}")
        if len(raw) != 33 or raw[0] != 0x01:
            raise ValueError(f"{text!r}: not an Ed25519 key (0x01 and 32 bytes)")
        if key_id(name, raw[1:]).hex() != hex_id:
            raise ValueError(f"{text!r}: key ID {hex_id} does not match the key")
        self.text, self.name, self.id, self.pub = text, name, bytes.fromhex(hex_id), raw[1:]
        self.ident = (name, self.id)

    def verify(self, sig, body):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if len(sig) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.pub).verify(sig, body)
            return True
        except InvalidSignature:
            return False


MAC_KEY = re.compile(r"SEAL\+MAC\+([^+]+)\+([0-9a-f]{8})\+(\S+)\Z")
PRIVATE_KEY = re.compile(r"PRIVATE\+KEY\+([^+]+)\+([0-9a-f]{8})\+(\S+)\Z")
MAC_KEY_CONTEXT = "auditlog 2026-12-02 seal MAC key v1"
WRITER_MAC_KEY_CONTEXT = "auditlog 2026-12-03 writer seal MAC key v1"


def mac_key(text):
    """The signing key's (name, key ID), the 32-byte key of its MAC seals and
    (from a private key) the writer's own MAC key, from `SEAL+MAC+name+id+base64(key)` or
    from the private key `PRIVATE+KEY+name+id+base64(0x01 || seed)`, whose
    MAC key is BLAKE3's derive_key(MAC_KEY_CONTEXT, seed)."""
    m = MAC_KEY.match(text) or PRIVATE_KEY.match(text)
    if m and not KEY_NAME.match(m.group(1)):
        raise ValueError(f"{m.group(1)!r}: bad key name")
    m = MAC_KEY.match(text)
    if m:
        raw = b64_strict(m.group(3))
        if len(raw) != 32:
            raise ValueError("a MAC key is 32 bytes")
        return (m.group(1), bytes.fromhex(m.group(2))), raw, None
    m = PRIVATE_KEY.match(text)
    if m:
        raw = b64_strict(m.group(3))
        if len(raw) != 33 or raw[0] != 1:
            raise ValueError("not an Ed25519 private key")
        ident = (m.group(1), bytes.fromhex(m.group(2)))
        # With the private key, the writer's own MAC key too: its MAC of a
        # seal is what a holder of the auditors' MAC key cannot make.
        return (ident, blake3.blake3(raw[1:], derive_key_context=MAC_KEY_CONTEXT).digest(),
                blake3.blake3(raw[1:], derive_key_context=WRITER_MAC_KEY_CONTEXT).digest())
    raise ValueError("not a MAC key (SEAL+MAC+name+id+key) or a private key")


def ident_str(ident):
    return f"{ident[0]}+{ident[1].hex()}"


def split_note(text):
    """Where a note's body ends (its last blank line) and its signature
    lines, each `((name, key ID), signature)`, or Malformed."""
    if not text.endswith("\n"):
        raise Malformed("note does not end with a newline")
    split = text.rfind("\n\n")
    if split < 0:
        raise Malformed("note has no empty line before its signatures")
    block = text[split + 2 :]
    if not block:
        raise Malformed("note has no signature line")
    sigs = []
    for line in block[:-1].split("\n"):
        m = SIG_LINE.match(line)
        try:
            raw = b64_strict(m.group(2)) if m else b""
        except ValueError:
            raw = b""
        if len(raw) != SIG_BYTES:
            raise Malformed(f"bad signature line {line!r}: `\u2014 <key name> <base64 of a 4-byte key ID and a 64-byte signature>`")
        sigs.append(((m.group(1), raw[:4]), raw[4:]))
    return split, sigs


class Note:
    """A C2SP signed note holding one of the three bodies of section 9."""

    def __init__(self, text):
        self.text = text
        split, self.sigs = split_note(text)
        self.body = text[: split + 1].encode("utf-8")
        lines = text[:split].split("\n")
        self.log_id = lines[0]
        if not self.log_id or any(ord(c) < 0x20 for c in text[:split] if c != "\n"):
            raise Malformed("note body has an empty log id or a control character")
        if len(lines) == 5 and lines[1] == "seal":
            self.kind = "seal"
            self.seq = self._number(lines[2], CANONICAL, "sealed sequence")
            self.hash = self._hash(lines[3])
            if not lines[4].startswith("stretch "):
                raise Malformed("seal note has no `stretch` line")
            self.stretch = self._number(lines[4][8:], CANONICAL_OR_ZERO, "stretch")
        elif len(lines) == 3 and lines[1] == "key rotation":
            self.kind = "key_rotation"
            try:
                self.new_key = Key(lines[2])
            except ValueError as e:
                raise Malformed(f"rotation note: {e}")
        elif len(lines) == 4:
            self.kind = "checkpoint"
            self.seq = self._number(lines[1], CANONICAL, "checkpoint sequence")
            self.hash = self._hash(lines[2])
            if not lines[3].startswith("time "):
                raise Malformed("checkpoint note has no `time` line")
            self.time = self._number(lines[3][5:], CANONICAL_OR_ZERO, "time")
        else:
            raise Malformed("note body is not a checkpoint, seal or key rotation")

    @staticmethod
    def _number(text, form, what):
        if not form.match(text) or int(text) >= 2**64:
            raise Malformed(f"note {what} {text!r} is not canonical decimal")
        return int(text)

    @staticmethod
    def _hash(text):
        try:
            raw = b64_strict(text)
        except ValueError as e:
            raise Malformed(f"note hash: {e}")
        if len(raw) != 32:
            raise Malformed("note hash is not 32 bytes")
        return raw.hex()

    def signers(self, keys, vouched, seq):
        """(accepted, bad): key idents whose line verifies (or, for a key
        known only by a later trusted rotation's line, is vouched for), and
        trusted keys whose line does not verify."""
        accepted, bad = [], []
        for ident, sig in self.sigs:
            key = keys.get(ident)
            if key is not None:
                (accepted if key.verify(sig, self.body) else bad).append(ident)
            elif seq < vouched.get(ident, 0):
                accepted.append(ident)
        return accepted, bad


# ---- One source ----


class Report:
    def __init__(self):
        self.errors, self.warnings = [], []
        self.newest_checkpoint = None  # (record seq, time)
        self.unknown_witness = []  # (path, signer idents) of witness notes by keys not given
        self.vouched = set()  # key idents a trusted rotation vouches for
        self.learned = set()  # key idents trusted by the end: given, or led to by trusted rotations

    def error(self, cls, msg):
        self.errors.append(f"{cls}: {msg}")

    def warning(self, cls, msg):
        self.warnings.append(f"{cls}: {msg}")


class Options:
    def __init__(self):
        self.strict = False
        self.keys = []  # the key history, oldest first
        self.mac_keys = []  # ((name, key ID), MAC key, writer's MAC key or None)
        self.log_id = None
        self.witness = None
        self.max_age = None


def read_witness(opts, report):
    """Every `checkpoint-*` note of the witness directory that verifies with
    a given key: {checkpoint_seq: {note text}}."""
    keys = {k.ident: k for k in opts.keys}
    try:
        names = sorted(os.listdir(opts.witness))
    except OSError as e:
        raise Unreadable(f"witness {opts.witness}: {e}")
    notes = {}
    for name in names:
        if not name.startswith("checkpoint-"):
            continue
        path = os.path.join(opts.witness, name)
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise Unreadable(f"witness {path}: not a regular file")
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise Unreadable(f"witness {path}: {e}")
        try:
            note = Note(data.decode("utf-8"))
            if note.kind != "checkpoint":
                raise Malformed(f"a {note.kind} note, not a checkpoint")
        except (UnicodeDecodeError, Malformed) as e:
            report.error("malformed", f"witness {path}: {e}")
            continue
        m = WITNESS_NAME.match(name)
        if m is None or int(m.group(1)) != note.seq:
            report.error("malformed", f"witness {path}: the name disagrees with the note's sequence {note.seq}")
            continue
        accepted, bad = note.signers(keys, {}, 0)
        if not bad and not accepted:
            # By a key not given: an error unless a trusted rotation of the
            # log vouches for it (decided once the log is read); it cannot
            # be checked, so it counts for nothing either way.
            report.unknown_witness.append((path, [i for i, _ in note.sigs]))
            continue
        if bad:
            report.error("bad_signature", f"witness {path}: the note does not verify with a given key")
            continue
        if opts.log_id is not None and note.log_id != opts.log_id:
            report.error("wrong_log", f"witness {path}: names log {note.log_id!r}, not {opts.log_id!r}")
            continue
        notes.setdefault(note.seq, {})[note.text] = (path, note)
    for seq, texts in notes.items():
        if len(texts) > 1:
            report.error("forked", f"witness: {len(texts)} different signed checkpoints of record {seq}")
    return notes


UNSEALED_TAIL_BOUND = 8210


def check_signatures(signed, last_seq, opts, report):
    """FORMAT.md section 9 over the log's signed records, in stored order.
    Returns the log id the notes name and the newest valid checkpoint."""
    history = [k.ident for k in opts.keys]
    keys = {k.ident: k for k in opts.keys}
    # Vouching goes backwards: a rotation cosigned by a trusted key vouches
    # for the retired key on its other line, and through that key's own
    # rotation (whose note names its full key), for the one before.
    vouched = {}  # key ident -> the sequence of the rotation that vouches for it
    for r in reversed(signed):
        if r["type"] != "key_rotation" or r["shape_error"]:
            continue
        try:
            note = Note(r["note"])
        except Malformed:
            continue
        if note.kind != "key_rotation":
            continue
        new = note.new_key
        if new.ident not in keys and new.ident in vouched:
            keys[new.ident] = new
        accepted, bad = note.signers(keys, {}, 0)
        if new.ident in accepted and not bad:
            for ident, _ in note.sigs:
                if ident not in keys:
                    vouched[ident] = max(vouched.get(ident, 0), r["seq"] + 1)
    report.vouched = set(vouched)
    log_id = opts.log_id
    current, retired = None, set()
    last_signer = None
    seals, checkpoints = [], []  # valid ones: (seq, stretch) and (seq, time)
    unchecked_mac = None  # the last MAC seal no --mac-key could check
    for r in signed:
        seq, where, m = r["seq"], r["where"], r["members"]
        if r["shape_error"]:
            report.error("malformed", f"{where}: {r['type']} record {seq}: {r['shape_error']}")
            continue
        if r["type"] == "seal" and "note" not in m:
            # A MAC seal (section 9): its form always; its MAC with the MAC
            # key of the key sealing the log here (the last valid
            # signature's, or the last rotation's new key), so a retired
            # key's MAC key cannot seal records after its rotation.
            stretch, sealed = m["stretch"], m["sealed_seq"]
            try:
                mac, wmac = b64_strict(m["mac"]), b64_strict(m["writer_mac"])
            except ValueError:
                mac, wmac = b"", b""
            if len(mac) != 32 or len(wmac) != 32 or sealed != seq - 1 or r["prev_hash"] is None:
                report.error("malformed", f"{where}: MAC seal {seq}: needs sealed_seq {seq - 1}, a stretch and base64 32-byte mac and writer_mac, after its record")
                continue
            key, wkey = next(((k, w) for ident, k, w in opts.mac_keys if ident == current), (None, None))
            if key is None or log_id is None:
                unchecked_mac = seq
                continue
            head = base64.b64encode(bytes.fromhex(r["prev_hash"])).decode("ascii")
            body = f"{log_id}\nseal\n{seq - 1}\n{head}\nstretch {stretch}\n".encode("utf-8")
            if not hmac.compare_digest(blake3.blake3(body, key=key).digest(), mac):
                report.error("bad_signature", f"{where}: MAC seal {seq} does not verify with the MAC key of {ident_str(current)}, the key sealing the log here")
                continue
            if wkey is not None and not hmac.compare_digest(blake3.blake3(body, key=wkey).digest(), wmac):
                report.error("bad_signature", f"{where}: MAC seal {seq}: its writer_mac does not verify with the writer's MAC key of {ident_str(current)}: not made by the writer")
                continue
            seals.append((seq, stretch))
            continue
        try:
            if not isinstance(r["note"], str):
                raise Malformed("no `note` string member")
            note = Note(r["note"])
            if note.kind != r["type"]:
                raise Malformed(f"a {r['type']} record holds a {note.kind} note")
        except Malformed as e:
            report.error("malformed", f"{where}: {r['type']} record {seq}: {e}")
            continue
        if log_id is None:
            log_id = note.log_id
        elif note.log_id != log_id:
            report.error("wrong_log", f"{where}: {r['type']} record {seq} names log {note.log_id!r}, not {log_id!r}")
            continue
        if note.kind == "key_rotation" and note.new_key.ident not in keys and len(history) < 2:
            # One key given is a trust anchor, not a history: a rotation it
            # signs (docs/VERIFY.md: "a trusted rotation names that key on a
            # signature line") makes the new key, named in full, trusted.
            if any(i in keys and keys[i].verify(sig, note.body) for i, sig in note.sigs if i != note.new_key.ident):
                keys[note.new_key.ident] = note.new_key
        accepted, bad = note.signers(keys, vouched, seq)
        if bad:
            report.error("bad_signature", f"{where}: {r['type']} record {seq}: the signature by {', '.join(map(ident_str, bad))} does not verify")
            continue
        if r["type"] == "key_rotation":
            new = note.new_key.ident
            # Signed by exactly the retired key and the new one: a second
            # line by anyone else would carry bytes nobody vouches for. The
            # new key's line is checked with the key the note names.
            by_new = [sig for ident, sig in note.sigs if ident == new]
            if len(note.sigs) != 2 or len(by_new) != 1:
                report.error("malformed", f"{where}: rotation {seq}: a key-rotation note is signed by exactly the retired key and the new one")
                continue
            if not note.new_key.verify(by_new[0], note.body):
                report.error("bad_signature", f"{where}: rotation {seq}: the new key's signature does not verify")
                continue
            old = [ident for ident, _ in note.sigs if ident != new]
            cosigned = new in accepted
            old_ok = [i for i in old if i in accepted or (cosigned and i not in keys)]
            if m.get("new_key") != note.new_key.text or m.get("log_id") != note.log_id:
                report.error("modified", f"{where}: rotation {seq}: new_key {m.get('new_key')!r} or log_id is not the note's")
                continue
            if not old_ok:
                report.error("bad_signature", f"{where}: rotation {seq} is not signed by a key being retired that verifies")
                continue
            old = old_ok[0]
            if old in retired:
                report.error("bad_signature", f"{where}: rotation {seq} is signed by {ident_str(old)}, rotated out before")
                continue
            if current is not None and old != current:
                report.error("bad_signature", f"{where}: rotation {seq} retires {ident_str(old)}, but the last signature is by {ident_str(current)}")
                continue
            if len(history) >= 2 and old in history:
                i = history.index(old)
                want = history[i + 1] if i + 1 < len(history) else None
                if want != new:
                    told = ident_str(want) if want else "no later key"
                    report.error("bad_signature", f"{where}: rotation {seq} leads to {ident_str(new)}; the key history gives {told}")
                    continue
            retired.add(old)
            current = new
            continue
        if not accepted:
            names = ", ".join(ident_str(i) for i, _ in note.sigs)
            report.error("bad_signature", f"{where}: {r['type']} record {seq} is signed by unknown key(s) {names}, which no trusted key or rotation vouches for")
            continue
        if not any(i in keys for i in accepted):
            # Only vouched for by a later rotation, never verified: spared
            # the error, but it covers nothing and signs no history.
            continue
        accepted = [i for i in accepted if i in keys]
        signer = current if current in accepted else accepted[0]
        if signer in retired:
            report.error("bad_signature", f"{where}: {r['type']} record {seq} is signed by {ident_str(signer)}, which was rotated out")
            continue
        member = "sealed_seq" if r["type"] == "seal" else "checkpoint_seq"
        claimed = m.get(member)
        if isinstance(claimed, bool) or claimed != seq - 1 or note.seq != seq - 1:
            report.error("modified", f"{where}: {r['type']} record {seq}: {member} {claimed!r} and the note's {note.seq} must both be {seq - 1}")
            continue
        if r["type"] == "checkpoint" and (m.get("head_hash") != note.hash or m.get("log_id") != note.log_id
                                          or m.get("key_id") != signer[1].hex()):
            report.error("modified", f"{where}: checkpoint {seq}: head_hash, log_id or key_id differs from the note's")
            continue
        if r["prev_hash"] != note.hash:
            report.error("modified", f"{where}: {r['type']} record {seq} signs hash {note.hash} of record {seq - 1}, which hashes to {r['prev_hash']}: the chain was rewritten")
            continue
        current = signer
        last_signer = signer
        if r["type"] == "seal":
            seals.append((seq, note.stretch))
        else:
            checkpoints.append((seq, note.time))
    # Coverage: seals bound every stretch and the tail from the first on.
    for (a, _), (b, stretch) in zip(seals, seals[1:]):
        if b - a - 1 > stretch:
            report.error("unsigned", f"{b - a - 1} records between the seals at {a} and {b}, more than the stretch {stretch}: seals were removed")
    # A log with no valid seal (written before seals, or with them cut away)
    # may leave at most the stretch a writer states by default unsigned.
    last_signed, bound = (seals[-1] if seals else (checkpoints[-1][0], UNSEALED_TAIL_BOUND) if checkpoints else (None, None))
    if last_signed is None:
        report.error("unsigned", "no valid seal or checkpoint: no record is covered by a signature")
    elif last_seq is not None and last_seq > last_signed:
        tail = last_seq - last_signed
        if bound is not None and tail > bound:
            report.error("unsigned", f"{tail} records after the last seal ({last_signed}), more than its stretch {bound}: seals were removed")
        else:
            hint = f" (MAC seals up to {unchecked_mac} cover them; --mac-key checks those)" if unchecked_mac and unchecked_mac > last_signed else ""
            (report.error if opts.strict else report.warning)(
                "unsigned_tail", f"{tail} record(s) after the last valid signature ({last_signed}){hint}")
    # The last seal or checkpoint, not a rotation, shows which key the log reached.
    if len(history) >= 2 and last_signer is not None and last_signer != history[-1]:
        report.error("truncated", f"the log's last signature is by {ident_str(last_signer)}, not by the last key given, {ident_str(history[-1])}")
    # Keys learned from rotations a trusted key signed: their witness notes
    # are not by an unknown key.
    report.learned = set(keys)
    # The newest is the last in the log (as audit verify picks it), not the
    # one whose note states the latest time.
    newest = checkpoints[-1] if checkpoints else None
    return log_id, newest


def verify(path, opts=None):
    opts = opts or Options()
    report = Report()
    records, chains, lines = 0, 0, 0
    last = None  # (seq, hash) of the previous record
    last_computed = None
    # FORMAT.md section 10: a segment directory is a log our writer made,
    # which holds one chain; a single file may be the seed proxy's.
    # A trusted key says the log is ours too: the seed proxy never signed.
    ours = os.path.isdir(path) or bool(opts.keys)
    signing = bool(opts.keys)
    signed = []  # the signed records: a few members each
    witness = read_witness(opts, report) if signing and opts.witness else {}
    witnessed = max(witness) if witness else None
    at_witness = {}  # seq -> (computed hash, type, note member) for N and N + 1
    files = files_of(path)
    if os.path.isdir(path):
        for fname in segment_names(path)[1]:
            # As audit verify: a file no reader can place makes the source
            # unreadable, rather than being skipped by one reader.
            raise Unreadable(f"{fname}: named like a segment, but its sequence or generation is out of range (u64, u32), or its generation is written 0 or with a leading zero")
    for i, (fname, promised) in enumerate(files):
        # A FIFO would block the read and a device would never end.
        if not stat.S_ISREG(os.stat(fname).st_mode):
            report.error("unreadable", f"{fname}: not a regular file")
            lines += 1
            continue
        is_last = i == len(files) - 1
        for n, text, terminated in lines_of(fname, is_last):
            lines += 1
            where = f"{fname}:{n}"
            if text is None:
                report.error("malformed", f"{where}: line longer than {MAX_LINE} bytes")
                continue
            if not terminated and is_last:
                # FORMAT.md section 8: only the log's end can hold a torn write;
                # elsewhere an unterminated line is checked like any other.
                report.warning("truncated", f"{fname}: ends mid-line ({len(text)} bytes without a newline)")
                continue
            try:
                seq, prev, claimed, top = parse_full(text)
            except Malformed as e:
                report.error("malformed", f"{where}: {e}")
                continue
            records += 1
            if n == 1 and promised is not None and promised != seq:
                report.error("modified", f"{where}: segment named for {promised} starts with {seq}")
            computed = record_hash(text)
            if computed != claimed:
                report.error("modified", f"{where}: record {seq} modified: stored {claimed}, bytes hash to {computed}")
            if prev == "genesis":
                if seq != 1:
                    report.error("modified", f"{where}: record {seq} claims to start a chain")
                elif last is not None:
                    msg = f"{where}: unanchored genesis after sequence {last[0]}"
                    if ours:
                        report.error("restart", msg + " in a log written by auditlog, which holds one chain")
                    elif opts.strict:
                        report.error("restart", msg)
                    else:
                        report.warning("restart", msg)
                chains += 1
            elif last is None:
                report.error("deleted", f"{where}: log starts at {seq} without genesis")
                chains += 1
            elif seq != last[0] + 1:
                report.error("deleted", f"{where}: sequence {seq} follows {last[0]}")
            elif prev != last[1]:
                report.error("modified", f"{where}: record {seq} does not link to record {last[0]}")
            rtype = top[0][1] if top[0][0] == "record_type" else None
            if signing and rtype in SIGNED_TYPES:
                before = last_computed if last is not None and last[0] == seq - 1 else None
                signed.append({"seq": seq, "type": rtype, "where": where, "members": dict(top),
                               "shape_error": shape_error(rtype, top, text),
                               "note": dict(top).get("note"), "prev_hash": before})
            if witnessed is not None and seq in (witnessed, witnessed + 1):
                at_witness.setdefault(seq, (computed, rtype, dict(top).get("note")))
            last = (seq, claimed)
            last_computed = computed
    if lines == 0:
        raise Unreadable(f"{path}: holds no records (is the path right?)")
    if signing:
        log_id, newest = check_signatures(signed, last[0] if last else None, opts, report)
        report.newest_checkpoint = newest
        for wpath, idents in report.unknown_witness:
            # Unchecked (counts for nothing) when a rotation vouches for the
            # key or led to it; audit verify checks the latter with the
            # learned key, so it can see more here.
            if not any(i in report.vouched or i in report.learned for i in idents):
                report.error("bad_signature", f"witness {wpath}: the note does not verify with a given key")
        if witnessed is not None:
            for text, (wpath, note) in witness[witnessed].items():
                if log_id is not None and note.log_id != log_id:
                    report.error("wrong_log", f"witness {wpath}: names log {note.log_id!r}, not {log_id!r}")
                elif last is None or last[0] <= witnessed:
                    end = f"ends at {last[0]}" if last else "holds no record"
                    report.error("truncated", f"the log {end}, before the witnessed checkpoint of record {witnessed} ({wpath})")
                elif witnessed not in at_witness or at_witness[witnessed][0] != note.hash:
                    report.error("forked", f"record {witnessed} is not the one the witness {wpath} signed")
                elif at_witness.get(witnessed + 1, (None,))[1:] != ("checkpoint", text):
                    report.error("forked", f"record {witnessed + 1} is not the checkpoint record holding the witness note {wpath}")
        if opts.max_age is not None:
            if newest is None:
                report.error("stale", "no valid checkpoint, so no time to check --max-age against")
            elif time.time() - newest[1] > opts.max_age:
                report.error("stale", f"the newest valid checkpoint (record {newest[0]}) is {int(time.time() - newest[1])} s old, more than {opts.max_age} s")
    return records, chains, last, report


def classify_lines(path):
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, text in enumerate(lines, 1):
        try:
            _, _, claimed = parse(text)
        except Malformed as e:
            print(f"{n} malformed: {e}")
            continue
        print(f"{n} {'ok' if record_hash(text) == claimed else 'modified'}")
    return 0


def parse_args(argv):
    opts, paths = Options(), []
    args = iter(argv[1:])

    def value(flag):
        v = next(args, None)
        if v is None:
            raise Unreadable(f"{flag} needs a value")
        return v

    for a in args:
        if a == "--strict":
            opts.strict = True
        elif a == "--public-key":
            fname = value(a)
            try:
                with open(fname, encoding="utf-8") as f:
                    opts.keys.append(Key(f.read().strip()))
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise Unreadable(f"--public-key {fname}: {e}")
        elif a == "--mac-key":
            fname = value(a)
            try:
                with open(fname, encoding="utf-8") as f:
                    opts.mac_keys.append(mac_key(f.read().strip()))
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise Unreadable(f"--mac-key {fname}: {e}")
        elif a == "--log-id":
            opts.log_id = value(a)
        elif a == "--witness":
            opts.witness = value(a)
        elif a == "--max-age":
            v = value(a)
            m = re.fullmatch(r"([0-9]+)(s|m|h)?", v)
            if not m:
                raise Unreadable(f"--max-age {v!r}: give seconds, or N followed by s, m or h")
            opts.max_age = int(m.group(1)) * {"s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]
        elif a.startswith("--"):
            raise Unreadable(f"unknown option {a}")
        else:
            paths.append(a)
    if not paths:
        raise Unreadable("no log given")
    if (opts.witness or opts.max_age is not None or opts.log_id is not None or opts.mac_keys) and not opts.keys:
        raise Unreadable("--witness, --max-age, --log-id and --mac-key need --public-key: only a signed note can be trusted")
    for ident, _, _ in opts.mac_keys:
        if all(k.ident != ident for k in opts.keys):
            raise Unreadable(f"MAC key {ident_str(ident)} belongs to none of the trusted keys; give its key with --public-key")
    if opts.keys:
        idents = [k.ident for k in opts.keys]
        if len(set(idents)) != len(idents):
            raise Unreadable("--public-key: the same key given twice")
    return opts, paths


def main(argv):
    if len(argv) == 3 and argv[1] == "--lines":
        return classify_lines(argv[2])
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        opts, paths = parse_args(argv)
    except Unreadable as e:
        print(f"independent_verify: {e}", file=sys.stderr)
        print(__doc__, file=sys.stderr)
        return 2
    ok = True
    for path in paths:
        if not os.path.exists(path):
            print(f"{path}: does not exist", file=sys.stderr)
            return 2
        try:
            records, chains, last, report = verify(path, opts)
        except Unreadable as e:
            print(f"independent_verify: cannot read {e}", file=sys.stderr)
            return 2
        errors, warnings = report.errors, report.warnings
        head = f"head {last[0]} {last[1]}" if last else "empty"
        print(f"{path}: {records} records, {chains} chain(s), {head}, {len(errors)} error(s), {len(warnings)} warning(s)")
        if report.newest_checkpoint:
            seq, t = report.newest_checkpoint
            print(f"  newest checkpoint: record {seq}, time {t} ({int(time.time() - t)} s ago)")
        for w in warnings:
            print(f"  warning: {w}")
        for e in errors[:50]:
            print(f"  error: {e}")
        ok = ok and not errors
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
