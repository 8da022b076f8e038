#!/usr/bin/env python3
"""Tests of tests/independent_verify.py on signed logs built here, from
docs/FORMAT.md alone (sections 2-4 for the chain, 9 for seals, checkpoints,
rotations and the witness), not by the `audit` writer.

Run: python3 tests/test_independent_verify.py   (or with pytest)
Needs the `blake3` and `cryptography` packages.
"""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

VERIFIER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "independent_verify.py")
LOG_ID = "test-log"
STRETCH = 6  # the writer's batch limit (4 entries) plus two markers


def b64(raw):
    return base64.b64encode(raw).decode("ascii")


class SigningKey:
    def __init__(self, name):
        self.name = name
        self.priv = Ed25519PrivateKey.generate()
        self.pub = self.priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.id = hashlib.sha256(name.encode() + b"\n\x01" + self.pub).digest()[:4]
        self.verifier = f"{name}+{self.id.hex()}+" + b64(bytes([1]) + self.pub)
        # FORMAT.md section 9: the MAC key is BLAKE3's derive_key of the seed.
        seed = self.priv.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        self.mac_key = blake3.blake3(seed, derive_key_context="auditlog 2026-12-02 seal MAC key v1").digest()
        self.mac_text = f"SEAL+MAC+{name}+{self.id.hex()}+{b64(self.mac_key)}"
        # The writer's own MAC key: another context, never exported.
        self.writer_mac_key = blake3.blake3(seed, derive_key_context="auditlog 2026-12-03 writer seal MAC key v1").digest()
        self.private_text = f"PRIVATE+KEY+{name}+{self.id.hex()}+{b64(bytes([1]) + seed)}"

    def line(self, body, bad=False):
        sig = self.priv.sign(body.encode())
        if bad:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        return f"\u2014 {self.name} {b64(self.id + sig)}\n"


def note(body, *signers, bad=()):
    return body + "\n" + "".join(k.line(body, k in bad) for k in signers)


def chained(members, seq, prev):
    """FORMAT.md sections 2 and 3: the text with its chain members."""
    unhashed = "{" + members + f',"chain_sequence":{seq},"chain_prev_hash":"{prev}"' + "}"
    h = blake3.blake3(unhashed.encode()).hexdigest()
    return unhashed[:-1] + f',"chain_record_hash":"{h}"' + "}", h


def dumps(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Writer:
    """A writer per FORMAT.md: entries in batches, each ended by a seal."""

    def __init__(self, key=None, log_id=LOG_ID, stretch=STRETCH):
        self.key, self.log_id, self.stretch = key, log_id, stretch
        self.members = []  # each record's members, without chain members
        self.texts, self.hashes = [], []
        self.witness = {}  # file name -> note text

    def add(self, members):
        seq = len(self.texts) + 1
        text, h = chained(members, seq, self.hashes[-1] if self.hashes else "genesis")
        self.members.append(members)
        self.texts.append(text)
        self.hashes.append(h)
        return seq

    def entry(self):
        n = len(self.texts) + 1
        return self.add(dumps({"timestamp": "2026-11-26T10:00:00Z", "request_id": f"req-{n}",
                               "agent_id": "agent-1", "tool_called": "read", "arguments": {"n": n},
                               "authorization_decision": "allow"})[1:-1])

    def head(self):
        return len(self.texts), bytes.fromhex(self.hashes[-1])

    def seal(self, key=None, log_id=None, extra=()):
        seq, h = self.head()
        body = f"{log_id or self.log_id}\nseal\n{seq}\n{b64(h)}\nstretch {self.stretch}\n"
        n = note(body, *(extra + (key or self.key,)))
        return self.add('"record_type":"seal",' + f'"sealed_seq":{seq},"note":{dumps(n)}')

    def mac_seal(self, key=None, stretch=None):
        """A MAC seal: keyed BLAKE3 over the seal body, no note."""
        seq, h = self.head()
        stretch = self.stretch if stretch is None else stretch
        body = f"{self.log_id}\nseal\n{seq}\n{b64(h)}\nstretch {stretch}\n"
        mac = blake3.blake3(body.encode(), key=(key or self.key).mac_key).digest()
        wmac = blake3.blake3(body.encode(), key=(key or self.key).writer_mac_key).digest()
        return self.add('"record_type":"seal",' + f'"sealed_seq":{seq},"stretch":{stretch},"mac":"{b64(mac)}","writer_mac":"{b64(wmac)}"')

    def checkpoint(self, key=None, when=None, witness=False):
        seq, h = self.head()
        body = f"{self.log_id}\n{seq}\n{b64(h)}\ntime {int(time.time() if when is None else when)}\n"
        k = key or self.key
        n = note(body, k)
        members = dumps({"record_type": "checkpoint", "timestamp": "2026-11-26T10:00:00Z",
                         "log_id": self.log_id, "checkpoint_seq": seq, "head_hash": h.hex(),
                         "key_id": k.id.hex(), "note": n})[1:-1]
        if witness:
            self.witness[f"checkpoint-{seq:020}.note"] = n
        return self.add(members)

    def rotate(self, new, cosign=True):
        body = f"{self.log_id}\nkey rotation\n{new.verifier}\n"
        n = note(body, *((self.key, new) if cosign else (self.key,)))
        self.add(dumps({"record_type": "key_rotation", "timestamp": "2026-11-26T10:00:00Z",
                        "log_id": self.log_id, "new_key": new.verifier, "note": n})[1:-1])
        self.key = new

    def batches(self, count, size=4, seal=True, checkpoint_every=None):
        for b in range(count):
            for _ in range(size):
                self.entry()
            if checkpoint_every and b % checkpoint_every == 0:
                self.checkpoint()
            if seal:
                self.seal()

    def rechain(self, keep):
        """The records whose index `keep` accepts, with every hash recomputed
        (what someone who can write the storage, but holds no key, can do)."""
        members = [m for i, m in enumerate(self.members) if keep(i, m)]
        self.members, self.texts, self.hashes = [], [], []
        for m in members:
            self.add(m)


class VerifierTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.a, self.b, self.c = SigningKey("host-a"), SigningKey("host-b"), SigningKey("host-c")
        self.pubs = {}
        for k in (self.a, self.b, self.c):
            path = os.path.join(self.dir, f"{k.name}.pub")
            with open(path, "w") as f:
                f.write(k.verifier + "\n")
            self.pubs[k] = path

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, w, name="log", single_file=False, texts=None):
        texts = w.texts if texts is None else texts
        data = "".join(t + "\n" for t in texts)
        if single_file:
            path = os.path.join(self.dir, name + ".jsonl")
        else:
            path = os.path.join(self.dir, name)
            os.makedirs(path, exist_ok=True)
            path_seg = os.path.join(path, "audit-00000000000000000001.jsonl")
        with open(path if single_file else path_seg, "w", encoding="utf-8") as f:
            f.write(data)
        if w.witness:
            wdir = os.path.join(self.dir, name + "-witness")
            os.makedirs(wdir, exist_ok=True)
            for fname, text in w.witness.items():
                with open(os.path.join(wdir, fname), "w", encoding="utf-8") as f:
                    f.write(text)
        return path

    def verify(self, path, *args, keys=None):
        keys = [self.a] if keys is None else keys
        cmd = [sys.executable, VERIFIER, path, *args]
        for k in keys:
            cmd += ["--public-key", self.pubs[k]]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return run.returncode, run.stdout + run.stderr

    def assertVerdict(self, path, code, *args, keys=None, has=(), lacks=()):
        got, out = self.verify(path, *args, keys=keys)
        self.assertEqual(got, code, out)
        for s in has:
            self.assertIn(s, out)
        for s in lacks:
            self.assertNotIn(s, out)
        return out

    # Seals.

    def test_intact_sealed_log(self):
        w = Writer(self.a)
        w.batches(10)
        path = self.write(w)
        self.assertVerdict(path, 0, "--log-id", LOG_ID, has=["0 error(s), 0 warning(s)"])
        # Without a key, it is a plain chain.
        self.assertVerdict(path, 0, keys=[], has=["0 error(s), 0 warning(s)"])

    def test_seals_missing_mid_log(self):
        # Batches 4 to 6 went out without their seals: the stretch between
        # the seals around them is longer than the bound they state.
        w = Writer(self.a)
        w.batches(3)
        w.batches(3, seal=False)
        w.batches(3)
        self.assertVerdict(self.write(w), 1, has=["unsigned:", "seals were removed"])

    def test_seals_removed_and_chain_recomputed(self):
        w = Writer(self.a)
        w.batches(10)
        seals = [i for i, m in enumerate(w.members) if m.startswith('"record_type":"seal"')]
        gone = set(seals[3:6])
        w.rechain(lambda i, m: i not in gone)
        # Without a key the recomputed chain passes; with it, it does not.
        path = self.write(w)
        self.assertVerdict(path, 0, keys=[])
        self.assertVerdict(path, 1, has=["modified:"])

    def test_cut_tail_keeps_verifying_without_a_witness(self):
        # A tail cut at a seal leaves a valid log: what the witness is for.
        w = Writer(self.a)
        w.batches(10)
        self.assertVerdict(self.write(w, texts=w.texts[:25]), 0)

    def test_long_unsealed_tail(self):
        w = Writer(self.a)
        w.batches(4)
        for _ in range(STRETCH + 1):
            w.entry()
        self.assertVerdict(self.write(w), 1, has=["unsigned:", f"{STRETCH + 1} records after the last seal"])

    def test_tail_of_exactly_the_stretch_is_a_warning(self):
        w = Writer(self.a)
        w.batches(4)
        for _ in range(STRETCH):
            w.entry()
        self.assertVerdict(self.write(w), 0, has=["unsigned_tail:"])

    def test_short_unsealed_tail_is_a_warning(self):
        w = Writer(self.a)
        w.batches(4)
        w.entry()
        w.entry()
        self.assertVerdict(self.write(w), 0, has=["0 error(s), 1 warning(s)", "unsigned_tail: 2 record(s)"])

    # MAC seals: a signed seal every few batches, MAC seals between.

    def mac_log(self):
        w = Writer(self.a, stretch=STRETCH * 4)  # the signed seals' stretch
        for b in range(12):
            for _ in range(4):
                w.entry()
            if b % 4 == 0:
                w.seal()
            else:
                w.mac_seal(stretch=STRETCH)
        return w

    def mac_file(self, key, text=None):
        path = os.path.join(self.dir, f"{key.name}.mac")
        with open(path, "w") as f:
            f.write((text or key.mac_text) + "\n")
        return path

    def test_mac_sealed_log(self):
        w = self.mac_log()
        path = self.write(w)
        # Without the MAC key, the MAC-sealed tail after the last signed
        # seal is the unsigned tail; with it (or the private key) it is sealed.
        self.assertVerdict(path, 0, has=["0 error(s), 1 warning(s)", "--mac-key checks those"])
        self.assertVerdict(path, 0, "--mac-key", self.mac_file(self.a), has=["0 error(s), 0 warning(s)"])
        private = os.path.join(self.dir, "a.key")
        with open(private, "w") as f:
            f.write(self.a.private_text + "\n")
        self.assertVerdict(path, 0, "--mac-key", private, has=["0 error(s), 0 warning(s)"])
        self.assertVerdict(path, 2, "--mac-key", self.mac_file(self.a), keys=[], has=["need --public-key"])

    def test_mac_seals_over_a_rechained_tail(self):
        w = self.mac_log()
        last_signed = max(i for i, m in enumerate(w.members) if '"note":' in m)
        victim = last_signed + 2
        w.members[victim] = w.members[victim].replace('"tool_called":"read"', '"tool_called":"write"')
        w.rechain(lambda i, m: True)
        path = self.write(w)
        self.assertVerdict(path, 0, has=["unsigned_tail:"])
        self.assertVerdict(path, 1, "--mac-key", self.mac_file(self.a), has=["bad_signature:", "does not verify"])

    def test_mac_seal_by_another_key_or_moved_or_restated(self):
        for mutate in ("other key", "stretch", "moved"):
            w = self.mac_log()
            macs = [i for i, m in enumerate(w.members) if '"mac":' in m]
            i = macs[-1]
            if mutate == "other key":
                w.members, w.texts, w.hashes = w.members[:i], w.texts[:i], w.hashes[:i]
                w.mac_seal(key=self.b, stretch=STRETCH)
            elif mutate == "stretch":
                w.members[i] = w.members[i].replace(f'"stretch":{STRETCH}', f'"stretch":{STRETCH + 1}')
                w.rechain(lambda i, m: True)
            else:
                # An earlier genuine MAC seal replayed in place of the last,
                # its sealed_seq set right: the MAC is over another record.
                w.members[i] = re.sub(r'"sealed_seq":[0-9]+', f'"sealed_seq":{i}', w.members[macs[-2]])
                w.rechain(lambda i, m: True)
            path = self.write(w, name=mutate.replace(" ", "-"))
            self.assertVerdict(path, 1, "--mac-key", self.mac_file(self.a), has=["bad_signature:"])

    def test_mac_seals_removed_between_seals(self):
        w = self.mac_log()
        macs = [i for i, m in enumerate(w.members) if '"mac":' in m]
        gone = set(macs[-2:])
        w.rechain(lambda i, m: i not in gone)
        path = self.write(w)
        # The signed stretch still holds; the MAC seals' own does not.
        self.assertVerdict(path, 0, has=["unsigned_tail:"])
        self.assertVerdict(path, 1, "--mac-key", self.mac_file(self.a), has=["unsigned:", "seals were removed"])

    def test_malformed_mac_seals(self):
        for bad in ('"mac":"AAAA"', '"stretch":-1', '"stretch":true', '"sealed_seq":1'):
            w = self.mac_log()
            i = [i for i, m in enumerate(w.members) if '"mac":' in m][-1]
            key = bad.split(":")[0]
            m = w.members[i]
            start = m.index(key)
            end = m.find(",", start)
            w.members[i] = m[:start] + bad + (m[end:] if end >= 0 else "")
            w.rechain(lambda i, m: True)
            path = self.write(w, name="bad-" + str(abs(hash(bad))))
            self.assertVerdict(path, 1, has=["malformed:", "seal"])

    def test_members_beside_a_note_or_a_mac_are_malformed(self):
        # Found by attack: an agent_id added to the last seal rode along
        # unsigned, and a query on it returned the record.
        for kind in ("seal", "mac"):
            for edit in (',"agent_id":"mallory"', '"note":null', '"sealed_seq":SEQ.0', 'reorder'):
                w = self.mac_log()
                if kind == "seal":
                    w.entry()
                    w.seal()
                i = len(w.members) - 1
                m = w.members[i]
                seq = re.search(r'"sealed_seq":([0-9]+)', m).group(1)
                if edit.startswith(","):
                    m += edit
                elif edit == '"note":null':
                    m += ',"note":null' if kind == "mac" else ""
                    m = m.replace('"note":"', '"notes":"') if kind == "seal" else m
                elif edit == "reorder":
                    first, rest = m.split(",", 2)[1], ",".join(m.split(",", 2)[2:])
                    m = m.split(",", 1)[0] + "," + rest + "," + first
                else:
                    m = m.replace(f'"sealed_seq":{seq}', edit.replace("SEQ", seq))
                w.members[i] = m
                w.rechain(lambda i, m: True)
                path = self.write(w, name=f"{kind}-{abs(hash(edit))}")
                self.assertVerdict(path, 1, "--mac-key", self.mac_file(self.a), has=["malformed:"])

    def test_a_second_chain_in_one_file_is_an_error_with_a_key(self):
        # A seed-format file may hold restarts; a signed log never does.
        w = Writer(self.a)
        w.batches(2)
        forged = Writer(self.a)
        forged.batches(2, seal=False)
        for texts in (w.texts + forged.texts, forged.texts + w.texts):
            path = self.write(w, name=f"two-{len(texts)}-{texts[0][:20]!r}", single_file=True, texts=texts)
            self.assertVerdict(path, 1, has=["error: restart:"])

    def test_a_retired_keys_mac_seal_after_its_rotation(self):
        w = self.rotated()
        for _ in range(3):
            w.entry()
        w.mac_seal(key=self.a, stretch=STRETCH)
        path = self.write(w)
        macs = ("--mac-key", self.mac_file(self.a), "--mac-key", self.mac_file(self.b))
        self.assertVerdict(path, 1, *macs, keys=[self.a, self.b], has=["bad_signature:", "MAC seal"])
        # The new key's MAC seal in its place verifies.
        w.rechain(lambda i, m: i < len(w.members) - 1)
        w.mac_seal(key=self.b, stretch=STRETCH)
        path = self.write(w, name="new-key")
        self.assertVerdict(path, 0, *macs, keys=[self.a, self.b], has=["0 error(s), 0 warning(s)"])

    def test_mac_key_file_is_checked(self):
        path = self.write(self.mac_log())
        for text in ("SEAL+MAC+host-a+0000000+AAAA", "nonsense", self.a.mac_text[:-4]):
            self.assertVerdict(path, 2, "--mac-key", self.mac_file(self.a, text), has=["--mac-key"])

    def test_seal_signed_by_another_key(self):
        w = Writer(self.a)
        w.batches(3)
        for _ in range(4):
            w.entry()
        w.seal(key=self.c)
        w.batches(3)
        self.assertVerdict(self.write(w), 1, has=["bad_signature:", "host-c"])

    def test_log_signed_by_another_key(self):
        w = Writer(self.c)
        w.batches(3)
        self.assertVerdict(self.write(w), 1, has=["bad_signature:", "unsigned:"])

    def test_a_bad_signature_line_by_a_trusted_key(self):
        # A rotation note holds two lines: host-b's good cosignature does
        # not save a note whose host-a line fails.
        w = Writer(self.a)
        w.batches(2)
        body = f"{LOG_ID}\nkey rotation\n{self.b.verifier}\n"
        w.add(dumps({"record_type": "key_rotation", "timestamp": "2026-11-26T10:00:00Z",
                     "log_id": LOG_ID, "new_key": self.b.verifier,
                     "note": note(body, self.a, self.b, bad=(self.a,))})[1:-1])
        w.key = self.b
        w.batches(2)
        path = self.write(w)
        for keys in ([self.a, self.b], [self.a]):
            self.assertVerdict(path, 1, keys=keys, has=["bad_signature:", "does not verify"])

    def seal_with_lines(self, w, *lines):
        """A seal of the head whose note holds these signature lines."""
        seq, h = w.head()
        body = f"{LOG_ID}\nseal\n{seq}\n{b64(h)}\nstretch {STRETCH}\n"
        text = body + "\n" + "".join(line(body) if callable(line) else line for line in lines)
        return w.add('"record_type":"seal",' + f'"sealed_seq":{seq},"note":{dumps(text)}')

    def test_a_second_signature_line_is_malformed(self):
        # Found by attack: a line by a key the verifier does not hold was
        # ignored, so a line carrying anything rode along on the last seal.
        # A seal and a checkpoint hold one line, a rotation two.
        junk = f"\u2014 {self.a.name} {b64(bytes(68))}\n"
        for name, build in (
            ("cosigned-seal", lambda w: w.seal(extra=(self.c,))),
            ("junk-line", lambda w: self.seal_with_lines(w, self.a.line, junk)),
            ("junk-first", lambda w: self.seal_with_lines(w, f"\u2014 x {b64(bytes(68))}\n", self.a.line)),
            ("same-line-twice", lambda w: self.seal_with_lines(w, self.a.line, self.a.line)),
        ):
            w = Writer(self.a)
            w.batches(2)
            w.entry()
            build(w)
            self.assertVerdict(self.write(w, name=name), 1, has=["malformed:", "exactly 1 signature line(s); this one holds 2"])
        w = Writer(self.a)
        w.batches(2)
        seq, h = w.head()
        body = f"{LOG_ID}\n{seq}\n{b64(h)}\ntime {int(time.time())}\n"
        w.add(dumps({"record_type": "checkpoint", "timestamp": "2026-11-26T10:00:00Z",
                     "log_id": LOG_ID, "checkpoint_seq": seq, "head_hash": h.hex(),
                     "key_id": self.a.id.hex(), "note": note(body, self.a, self.c)})[1:-1])
        w.seal()
        self.assertVerdict(self.write(w, name="checkpoint"), 1, has=["malformed:", "checkpoint note holds exactly 1"])
        # A rotation with a third line.
        w = Writer(self.a)
        w.batches(2)
        body = f"{LOG_ID}\nkey rotation\n{self.b.verifier}\n"
        w.add(dumps({"record_type": "key_rotation", "timestamp": "2026-11-26T10:00:00Z",
                     "log_id": LOG_ID, "new_key": self.b.verifier,
                     "note": note(body, self.a, self.b, self.c)})[1:-1])
        w.key = self.b
        w.batches(2)
        path = self.write(w, name="rotation")
        for keys in ([self.a, self.b], [self.b]):
            self.assertVerdict(path, 1, keys=keys, has=["malformed:", "key_rotation note holds exactly 2 signature line(s); this one holds 3"])

    def test_signature_line_form(self):
        # `\u2014 <name> <base64 of 68 bytes>`: a name without `+` or
        # whitespace (Unicode White_Space, as Rust's char::is_whitespace),
        # a 4-byte key ID and a 64-byte signature, padded canonical base64.
        def signed(name, raw=None, text=None):
            def line(body):
                r = raw if raw is not None else self.a.id + self.a.priv.sign(body.encode())
                return f"\u2014 {name} {b64(r) if text is None else text}\n"
            return line

        good = self.a.id + bytes(64)
        bad = {
            "empty-name": signed(""),
            "plus": signed("host+a"),
            "nbsp": signed("host\u00a0a"),
            "em-space": signed("host\u2003a"),
            "line-separator": signed("host\u2028a"),
            "ideographic-space": signed("host\u3000a"),
            "next-line": signed("host\x85a"),
            "vertical-tab": signed("host\x0ba"),
            "two-spaces": signed(" host-a"),
            "5-bytes": signed("host-a", raw=self.a.id + b"x"),
            "67-bytes": signed("host-a", raw=good[:67]),
            "69-bytes": signed("host-a", raw=good + b"x"),
            "unpadded": signed("host-a", text=b64(good).rstrip("=")),
            "trailing-bits": signed("host-a", text=b64(good)[:-2] + "B="),
        }
        for name, line in bad.items():
            w = Writer(self.a)
            w.batches(2)
            w.entry()
            self.seal_with_lines(w, line)
            self.assertVerdict(self.write(w, name=name), 1, has=["malformed:", "bad signature line"])
        # U+001C-U+001F are Python whitespace, not Unicode White_Space: a
        # well-formed line by a key nobody holds.
        w = Writer(self.a)
        w.batches(2)
        w.entry()
        self.seal_with_lines(w, signed("host\x1ca"))
        self.assertVerdict(self.write(w, name="us"), 1, has=["bad_signature:", "unknown key"], lacks=["malformed:"])

    def test_tampered_note(self):
        w = Writer(self.a)
        w.batches(3)
        texts = list(w.texts)
        i = next(i for i, t in enumerate(texts) if f"stretch {STRETCH}" in t)
        w.members[i] = w.members[i].replace(f"stretch {STRETCH}", "stretch 99")
        w.rechain(lambda i, m: True)
        self.assertVerdict(self.write(w), 1, has=["bad_signature:"])

    def test_seal_body_spelling(self):
        w = Writer(self.a)
        w.batches(2)
        seq, h = w.head()
        body = f"{LOG_ID}\nseal\n0{seq}\n{b64(h)}\nstretch {STRETCH}\n"
        w.add('"record_type":"seal",' + f'"sealed_seq":{seq},"note":{dumps(note(body, self.a))}')
        self.assertVerdict(self.write(w), 1, has=["malformed:"])

    def test_sealed_seq_must_be_the_record_before(self):
        w = Writer(self.a)
        w.batches(2)
        seq, h = w.head()
        body = f"{LOG_ID}\nseal\n{seq}\n{b64(h)}\nstretch {STRETCH}\n"
        w.add('"record_type":"seal",' + f'"sealed_seq":{seq - 1},"note":{dumps(note(body, self.a))}')
        self.assertVerdict(self.write(w), 1, has=["modified:"])

    # Identity.

    def test_wrong_log_id(self):
        w = Writer(self.a)
        w.batches(3)
        path = self.write(w)
        self.assertVerdict(path, 1, "--log-id", "another-log", has=["wrong_log:"])

    def test_notes_must_name_the_same_log(self):
        w = Writer(self.a)
        w.batches(3)
        for _ in range(4):
            w.entry()
        w.seal(log_id="another-log")
        w.batches(2)
        self.assertVerdict(self.write(w), 1, has=["wrong_log:"])

    # Checkpoints, the witness, freshness.

    def test_checkpoints_only_log_has_an_unbounded_tail_warning(self):
        # Logs written before seals: the tail after the last checkpoint is a
        # warning whatever its length.
        w = Writer(self.a)
        w.batches(5, seal=False, checkpoint_every=2)
        for _ in range(50):
            w.entry()
        self.assertVerdict(self.write(w), 0, has=["unsigned_tail:"])

    def test_no_signature_at_all(self):
        w = Writer(self.a)
        w.batches(3, seal=False)
        self.assertVerdict(self.write(w), 1, has=["unsigned:"])

    def test_checkpoint_over_a_rewritten_record(self):
        w = Writer(self.a)
        w.batches(2, checkpoint_every=1)
        w.members[2] = w.members[2].replace("agent-1", "agent-X")
        w.rechain(lambda i, m: True)
        self.assertVerdict(self.write(w), 1, has=["modified:"])

    def test_witness_notes_by_a_retired_key_the_auditor_lacks(self):
        # Found by attack: after rotations, the witness notes signed by a
        # key the auditor does not hold were bad_signature on an intact log.
        # A trusted rotation vouches for that key: the note is unchecked.
        w = Writer(self.a)
        w.batches(2)
        w.checkpoint(witness=True)
        w.seal()
        w.rotate(self.b)
        w.batches(2)
        w.checkpoint(witness=True)
        w.seal()
        path = self.write(w)
        wdir = path + "-witness"
        self.assertVerdict(path, 0, "--witness", wdir, keys=[self.b], has=["0 error(s), 0 warning(s)"])
        # A note by a key no rotation vouches for is still an error.
        name = next(iter(w.witness))
        body = w.witness[name].split("\n\n")[0] + "\n"
        with open(os.path.join(wdir, name[:-5] + ".1.note"), "w") as f:
            f.write(note(body, self.c))
        self.assertVerdict(path, 1, "--witness", wdir, keys=[self.b], has=["bad_signature:"])

    def test_witness(self):
        w = Writer(self.a)
        w.batches(3)
        for _ in range(4):
            w.entry()
        w.checkpoint(witness=True)
        w.seal()
        w.batches(2)
        path = self.write(w)
        wdir = path + "-witness"
        self.assertVerdict(path, 0, "--witness", wdir, has=["0 error(s), 0 warning(s)"])
        n = int(next(iter(w.witness))[11:31])
        # Cut before the witnessed checkpoint: a valid sealed log (a short
        # unsealed tail), but the witness knows better.
        cut = self.write(w, "cut", texts=w.texts[:n - 5])
        self.assertVerdict(cut, 0)
        self.assertVerdict(cut, 1, "--witness", wdir, has=["truncated:"])
        # Cut right after record N: N is there, the checkpoint record is not.
        cut2 = self.write(w, "cut2", texts=w.texts[:n])
        self.assertVerdict(cut2, 1, "--witness", wdir, has=["truncated:"])
        # Record N + 1 is not the checkpoint record holding that note.
        w.rechain(lambda i, m: i != n)
        self.assertVerdict(self.write(w, "dropped"), 1, "--witness", wdir, has=["forked:"])

    def test_witness_on_another_chain(self):
        w = Writer(self.a)
        w.batches(2)
        w.checkpoint(witness=True)
        w.batches(1)
        other = Writer(self.a)
        other.batches(2)
        other.entry()
        other.checkpoint()
        other.batches(2)
        path = self.write(other)
        self.write(w, "w")
        self.assertVerdict(path, 1, "--witness", os.path.join(self.dir, "w-witness"), has=["forked:"])

    def test_witness_names_and_forks(self):
        w = Writer(self.a)
        w.batches(2)
        w.checkpoint(witness=True)
        w.seal()
        path = self.write(w)
        wdir = path + "-witness"
        (name, text), = w.witness.items()
        # A file whose name is not the note's sequence.
        with open(os.path.join(wdir, "checkpoint-00000000000000000001.note"), "w") as f:
            f.write(text)
        self.assertVerdict(path, 1, "--witness", wdir, has=["malformed:", "name disagrees"])
        os.remove(os.path.join(wdir, "checkpoint-00000000000000000001.note"))
        # A second, different checkpoint of the same record.
        seq = int(name[11:31])
        body = f"{LOG_ID}\n{seq}\n{b64(bytes.fromhex(w.hashes[seq - 1]))}\ntime 1\n"
        with open(os.path.join(wdir, name[:-5] + ".1.note"), "w") as f:
            f.write(note(body, self.a))
        self.assertVerdict(path, 1, "--witness", wdir, has=["forked:"])
        os.remove(os.path.join(wdir, name[:-5] + ".1.note"))
        # A special file is refused: exit 2.
        os.mkfifo(os.path.join(wdir, "checkpoint-fifo"))
        self.assertVerdict(path, 2, "--witness", wdir, has=["not a regular file"])

    def test_max_age(self):
        w = Writer(self.a)
        w.batches(2)
        w.checkpoint(when=time.time() - 3600)
        w.seal()
        path = self.write(w)
        self.assertVerdict(path, 0, "--max-age", "7200")
        self.assertVerdict(path, 1, "--max-age", "60", has=["stale:"])
        self.assertVerdict(path, 1, "--max-age", "59m", has=["stale:"])
        w2 = Writer(self.a)
        w2.batches(2)
        self.assertVerdict(self.write(w2, "w2"), 1, "--max-age", "60", has=["stale:"])

    def test_options_need_a_key(self):
        w = Writer(self.a)
        w.batches(1)
        path = self.write(w)
        self.assertVerdict(path, 2, "--witness", self.dir, keys=[])
        self.assertVerdict(path, 2, "--max-age", "60", keys=[])

    # Key rotation.

    def rotated(self, cosign=True):
        w = Writer(self.a)
        w.batches(3, checkpoint_every=2)
        w.rotate(self.b, cosign=cosign)
        w.batches(3, checkpoint_every=2)
        return w

    def test_a_log_ending_at_its_rotation(self):
        # Nothing the new key signed yet: the old key alone sees a one-record
        # unsigned tail; the history expects the new key's signature
        # (truncated); the new key alone covers nothing (audit verify gives
        # the same three verdicts).
        w = Writer(self.a)
        w.batches(3, checkpoint_every=2)
        w.rotate(self.b)
        path = self.write(w)
        self.assertVerdict(path, 0, keys=[self.a], has=["unsigned_tail: 1 record(s)"])
        self.assertVerdict(path, 1, keys=[self.a, self.b], has=["truncated:"])
        self.assertVerdict(path, 1, keys=[self.b], has=["unsigned:"])

    def test_rotation_with_the_key_history(self):
        path = self.write(self.rotated())
        self.assertVerdict(path, 0, keys=[self.a, self.b], has=["0 error(s), 0 warning(s)"])

    def test_rotation_with_the_new_key_alone(self):
        # The cosignature checks the rotation; it vouches for host-a's seals.
        path = self.write(self.rotated())
        self.assertVerdict(path, 0, keys=[self.b], has=["0 error(s), 0 warning(s)"])

    def test_two_rotations(self):
        w = self.rotated()
        w.rotate(self.c)
        w.batches(2)
        path = self.write(w)
        self.assertVerdict(path, 0, keys=[self.a, self.b, self.c], has=["0 error(s), 0 warning(s)"])
        # host-c alone: its rotation vouches for host-b, whose own rotation
        # (naming host-b's whole key) vouches for host-a.
        self.assertVerdict(path, 0, keys=[self.c], has=["0 error(s), 0 warning(s)"])
        self.assertVerdict(path, 1, keys=[self.a, self.c], has=["bad_signature:"])
        # host-b alone follows the rotation it signed to host-c.
        self.assertVerdict(path, 0, keys=[self.b])
        # A history that ends before host-c: the log goes past it.
        self.assertVerdict(path, 1, keys=[self.a, self.b], has=["bad_signature:"])

    def test_rotation_with_the_old_key_alone(self):
        # One key is a trust anchor, not a history: the rotation it signs
        # makes the new key (named in full in the note) trusted.
        path = self.write(self.rotated())
        self.assertVerdict(path, 0, keys=[self.a], has=["0 error(s), 0 warning(s)"])
        # A history that stops at host-a expects no rotation after it.
        self.assertVerdict(path, 1, keys=[self.c, self.a], has=["bad_signature:"])

    def test_rotation_with_a_bad_cosignature(self):
        w = Writer(self.a)
        w.batches(2)
        body = f"{LOG_ID}\nkey rotation\n{self.b.verifier}\n"
        w.add(dumps({"record_type": "key_rotation", "timestamp": "2026-11-26T10:00:00Z",
                     "log_id": LOG_ID, "new_key": self.b.verifier,
                     "note": note(body, self.a, self.b, bad=(self.b,))})[1:-1])
        w.key = self.b
        w.batches(2)
        path = self.write(w)
        for keys in ([self.a], [self.b], [self.a, self.b]):
            self.assertVerdict(path, 1, keys=keys, has=["bad_signature:"])

    def test_history_in_the_wrong_order(self):
        path = self.write(self.rotated())
        self.assertVerdict(path, 1, keys=[self.b, self.a], has=["bad_signature:"])

    def test_log_stops_before_an_expected_rotation(self):
        w = Writer(self.a)
        w.batches(3)
        self.assertVerdict(self.write(w), 1, keys=[self.a, self.b], has=["truncated:"])

    def test_rotation_without_cosignature_is_malformed(self):
        # A rotation note holds two lines: the retired key's and the new key's.
        path = self.write(self.rotated(cosign=False))
        for keys in ([self.a, self.b], [self.a], [self.b]):
            self.assertVerdict(path, 1, keys=keys, has=["malformed:", "key_rotation note holds exactly 2 signature line(s); this one holds 1"])

    def test_retired_key_signs_again(self):
        w = self.rotated()
        for _ in range(4):
            w.entry()
        w.seal(key=self.a)
        w.batches(1)
        self.assertVerdict(self.write(w), 1, keys=[self.a, self.b], has=["rotated out"])

    def test_rotation_new_key_member_differs(self):
        w = Writer(self.a)
        w.batches(2)
        body = f"{LOG_ID}\nkey rotation\n{self.b.verifier}\n"
        w.add(dumps({"record_type": "key_rotation", "timestamp": "2026-11-26T10:00:00Z",
                     "log_id": LOG_ID, "new_key": self.c.verifier,
                     "note": note(body, self.a, self.b)})[1:-1])
        w.key = self.b
        w.batches(2)
        self.assertVerdict(self.write(w), 1, keys=[self.a, self.b], has=["new_key"])

    def test_rotation_to_a_key_not_in_the_history(self):
        w = Writer(self.a)
        w.batches(2)
        w.rotate(self.c)
        w.batches(2)
        self.assertVerdict(self.write(w), 1, keys=[self.a, self.b], has=["bad_signature:"])

    def test_strict_makes_an_unsigned_tail_an_error(self):
        w = Writer(self.a)
        w.batches(4)
        w.entry()
        path = self.write(w)
        self.assertVerdict(path, 0, has=["warning: unsigned_tail: 1 record(s)"])
        self.assertVerdict(path, 1, "--strict", has=["error: unsigned_tail: 1 record(s)", "0 warning(s)"])
        # Without a key there is no tail to speak of.
        self.assertVerdict(path, 0, "--strict", keys=[], has=["0 error(s), 0 warning(s)"])

    # Record kinds (no key needed).

    def test_a_marker_in_another_spelling_is_malformed(self):
        # FORMAT.md section 9: a seal, checkpoint or rotation record is
        # exactly the writer's encoding of its members; whitespace or an
        # escape the writer would not make could smuggle data past the note.
        for name, old, new in (("space-between", ',"note":', ', "note":'),
                               ("escaped-member", ',"note":', ',"\\u006eote":'),
                               ("escaped-dash", "\u2014", "\\u2014")):
            w = Writer(self.a)
            w.batches(3)
            i = len(w.members) - 1
            self.assertIn(old, w.members[i])
            w.members[i] = w.members[i].replace(old, new, 1)
            w.rechain(lambda i, m: True)
            path = self.write(w, name=name)
            self.assertVerdict(path, 1, keys=[self.a], has=["malformed:", "spelled exactly as the writer writes it"])

    def test_record_type_in_another_spelling_is_malformed(self):
        # FORMAT.md section 6: a non-entry record starts with exactly
        # {"record_type":"<type>", the bytes the writer finds its seals by.
        for name, spelling in (("space-before-colon", '"record_type" :"seal"'),
                               ("space-after-colon", '"record_type": "seal"'),
                               ("space-after-brace", ' "record_type":"seal"'),
                               ("escaped-name", '"record\\u005ftype":"seal"'),
                               ("escaped-type", '"record_type":"se\\u0061l"')):
            w = Writer(self.a)
            w.batches(3)
            i = len(w.members) - 1
            w.members[i] = w.members[i].replace('"record_type":"seal"', spelling)
            self.assertNotEqual(w.members[i][:20], '"record_type":"seal"')
            w.rechain(lambda i, m: True)
            path = self.write(w, name=name)
            for keys in ([], [self.a]):
                self.assertVerdict(path, 1, keys=keys, has=["malformed:", "must start with exactly"])
        # A type the verifier does not know, likewise.
        w = Writer()
        w.entry()
        w.add('"record_type" :"sink_gap","timestamp":"2026-11-26T10:00:00Z"')
        path = self.write(w, name="sink-gap")
        self.assertVerdict(path, 1, keys=[], has=["malformed:", "must start with exactly"])
        w.members[1] = w.members[1].replace(" :", ":")
        w.rechain(lambda i, m: True)
        self.assertVerdict(self.write(w, name="sink-gap-ok"), 0, keys=[])
        # And record by record.
        lines = os.path.join(self.dir, "lines.jsonl")
        with open(lines, "w") as f:
            f.write(chained('"record_type" :"seal","sealed_seq":1', 2, "0" * 64)[0] + "\n")
            f.write(chained('"record_type":"seal","sealed_seq":1', 2, "0" * 64)[0] + "\n")
        run = subprocess.run([sys.executable, VERIFIER, "--lines", lines], capture_output=True, text=True)
        self.assertRegex(run.stdout, r"^1 malformed: a non-entry record must start with exactly .*\n2 ok\n\Z")

    # Segment names (no key needed).

    def test_segment_names_out_of_range(self):
        w = Writer()
        for _ in range(3):
            w.entry()
        for name in ("audit-18446744073709551616.jsonl", "audit-99999999999999999999.jsonl",
                     "audit-00000000000000000001.4294967296.jsonl",
                     "audit-00000000000000000004.99999999999999999999999.jsonl",
                     "audit-00000000000000000004.0.jsonl", "audit-00000000000000000004.01.jsonl"):
            path = self.write(w, name=name)
            with open(os.path.join(path, name), "w") as f:
                f.write("garbage\n")
            # The source is unreadable (exit 2), naming the file, as with
            # audit verify; the file is not read.
            self.assertVerdict(path, 2, keys=[], has=[f"{name}: named like a segment", "out of range"],
                               lacks=["invalid JSON", "chain members missing"])
            os.remove(os.path.join(path, "audit-00000000000000000001.jsonl"))
            self.assertVerdict(path, 2, keys=[], has=["named like a segment"])
        # The largest sequence and generation are segment names: read.
        for name in ("audit-18446744073709551615.jsonl", "audit-00000000000000000001.4294967295.jsonl"):
            path = self.write(w, name="max-" + name)
            with open(os.path.join(path, name), "w") as f:
                f.write("garbage\n")
            self.assertVerdict(path, 1, keys=[], has=["malformed:", "chain members missing"], lacks=["not a segment name"])
        # A name ending in a newline is no segment name: not read.
        path = self.write(w, name="newline")
        with open(os.path.join(path, "audit-00000000000000000004.jsonl\n"), "w") as f:
            f.write("garbage\n")
        self.assertVerdict(path, 0, keys=[], has=["0 error(s), 0 warning(s)"])

    # Restarts and empty sources (no key needed).

    def test_restart_in_a_segment_directory_is_an_error(self):
        w = Writer()
        for _ in range(3):
            w.entry()
        first = list(w.texts)
        path = self.write(w, texts=first + first)
        self.assertVerdict(path, 1, keys=[], has=["restart:"])
        single = self.write(w, "single", single_file=True, texts=first + first)
        self.assertVerdict(single, 0, keys=[], has=["warning: restart:"])
        self.assertVerdict(single, 1, "--strict", keys=[], has=["error: restart:"])

    def test_empty_sources(self):
        os.makedirs(os.path.join(self.dir, "empty-dir"))
        open(os.path.join(self.dir, "empty.jsonl"), "w").close()
        with open(os.path.join(self.dir, "zeros.jsonl"), "wb") as f:
            f.write(b"\0" * 4096)
        for name in ("empty-dir", "empty.jsonl", "zeros.jsonl"):
            path = os.path.join(self.dir, name)
            self.assertVerdict(path, 2, keys=[], has=[path, "holds no records"])


if __name__ == "__main__":
    unittest.main(verbosity=1)
