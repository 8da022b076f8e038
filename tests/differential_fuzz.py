#!/usr/bin/env python3
"""Differential fuzzing of the two verifiers' strictness.

Usage: differential_fuzz.py AUDIT_BINARY [SEED ...]

For each seed, mutates the bodies of tests/fixtures/strictness/cases.jsonl
(inserting, deleting and overwriting quotes, escapes, brackets, surrogates,
control and invalid UTF-8 bytes, literals), seals each result with a correct
hash as a record of its own, and checks that `AUDIT_BINARY verify --json` and
tests/independent_verify.py give every record the same verdict: an error, or
none. Prints the first differences and exits 1 if there is any. Needs the
`blake3` package.
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import independent_verify as iv  # noqa: E402

import blake3  # noqa: E402

CASES_PER_SEED = 3000
ATOMS = [
    b'"', b"\\", b"\\u", b"\\ud800", b"\\udc00", b"{", b"}", b"[", b"]", b",", b":",
    b" ", b"\t", b"0", b"-", b"1e", b".", b"null", b"true", b"\x00", b"\x7f",
    b"\xc3\xa9", b"\xed\xa0\x80", b"\xff", b"\\n", b'"a"', b'"record_type"',
    b'"chain_sequence"', b"e", b"+", b"\\/", b"\r", b"\x0c", b"NaN", b"1", b'"x":1', b'\\"',
]


def bodies():
    path = os.path.join(HERE, "fixtures", "strictness", "cases.jsonl")
    with open(path, "rb") as f:
        lines = [l for l in f.read().split(b"\n") if l]
    return [l[: l.index(b',"chain_sequence":')] for l in lines]


def mutate(rng, body):
    b = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        op, pos, atom = rng.random(), rng.randint(0, len(b)), rng.choice(ATOMS)
        if op < 0.4:
            b[pos:pos] = atom
        elif op < 0.7 and len(b) > 1:
            del b[pos : pos + rng.randint(1, 4)]
        else:
            b[pos : pos + len(atom)] = atom
    return bytes(b)


def seal(body):
    before = body + b',"chain_sequence":1,"chain_prev_hash":"genesis"'
    digest = blake3.blake3(before + b"}").hexdigest().encode()
    return before + b',"chain_record_hash":"' + digest + b'"}'


def python_verdicts(cases):
    out = {}
    for n, text in enumerate(cases, 1):
        try:
            _, _, claimed = iv.parse(text)
            out[n] = "ok" if iv.record_hash(text) == claimed else "modified"
        except iv.Malformed as e:
            out[n] = f"malformed: {e}"
    return out


def rust_verdicts(audit, path):
    run = subprocess.run([audit, "verify", "--json", f"file:{path}"], capture_output=True)
    report = json.loads(run.stdout)
    source = report["sources"][0]
    if source["findings_omitted"]:
        raise SystemExit(f"{source['findings_omitted']} findings omitted; lower CASES_PER_SEED")
    out = {}
    for f in source["findings"]:
        if f["severity"] == "error":
            n = int(re.search(r"cases\.jsonl:(\d+) ", f["location"]).group(1))
            out[n] = f"{f['class']}: {f['detail']}"
    return out


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    audit, seeds = argv[1], [int(s) for s in argv[2:]] or [1]
    base = bodies()
    differences = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cases.jsonl")
        for seed in seeds:
            rng = random.Random(seed)
            cases = []
            while len(cases) < CASES_PER_SEED:
                text = seal(mutate(rng, rng.choice(base)))
                if b"\n" not in text:
                    cases.append(text)
            with open(path, "wb") as f:
                f.write(b"\n".join(cases) + b"\n")
            py, rs = python_verdicts(cases), rust_verdicts(audit, path)
            for n in range(1, len(cases) + 1):
                if (py[n] != "ok") != (n in rs):
                    differences += 1
                    if differences <= 10:
                        print(f"seed {seed} case {n}: python {py[n]!r}, rust {rs.get(n, 'ok')!r}: {cases[n - 1][:200]!r}")
    total = CASES_PER_SEED * len(seeds)
    print(f"differential fuzz: {total} records, {differences} verdicts differ")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
