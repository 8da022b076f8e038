#!/usr/bin/env python3
"""An independent verifier for auditlog logs, written from docs/FORMAT.md alone.

Usage: independent_verify.py PATH [PATH ...]
       independent_verify.py --lines FILE
PATH is a JSONL file or a directory of audit-<seq>.jsonl segments.
Exit 0 when every log verifies (restart warnings allowed), 1 otherwise.
--lines checks each line of FILE as a record on its own, ignoring the chain,
and prints `N ok`, `N modified` or `N malformed: why` for each.
Needs the `blake3` package from PyPI.
"""
import errno
import json
import os
import re
import stat
import sys

import blake3

SUFFIX = re.compile(
    rb',"chain_sequence":([1-9][0-9]{0,19}),"chain_prev_hash":"(genesis|[0-9a-f]{64})",'
    rb'"chain_record_hash":"([0-9a-f]{64})"\}\Z'
)
SEGMENT = re.compile(r"^audit-([0-9]{20})(\.[0-9]+)?\.jsonl$")
CHAIN = ("chain_sequence", "chain_prev_hash", "chain_record_hash")


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
    if values["chain_sequence"] != seq or isinstance(values["chain_sequence"], bool):
        raise Malformed("parsed sequence differs from its bytes")
    if values["chain_prev_hash"] != m.group(2).decode() or values["chain_record_hash"] != m.group(3).decode():
        raise Malformed("parsed hashes differ from their bytes")
    return seq, m.group(2).decode(), m.group(3).decode()


def record_hash(text):
    return blake3.blake3(text[:-88] + b"}").hexdigest()


def files_of(path):
    if os.path.isdir(path):
        # FORMAT.md section 8: by first sequence, then generation, none first.
        def order(name):
            m = SEGMENT.match(name)
            return int(m.group(1)), int(m.group(2)[1:]) if m.group(2) else -1, name

        segs = sorted((n for n in os.listdir(path) if SEGMENT.match(n)), key=order)
        return [(os.path.join(path, n), int(SEGMENT.match(n).group(1))) for n in segs]
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


def verify(path):
    errors, warnings, records, chains = [], [], 0, 0
    last = None  # (seq, hash) of the previous record
    files = files_of(path)
    for i, (fname, promised) in enumerate(files):
        # A FIFO would block the read and a device would never end.
        if not stat.S_ISREG(os.stat(fname).st_mode):
            errors.append(f"{fname}: not a regular file")
            continue
        is_last = i == len(files) - 1
        for n, text, terminated in lines_of(fname, is_last):
            where = f"{fname}:{n}"
            if text is None:
                errors.append(f"{where}: line longer than {MAX_LINE} bytes")
                continue
            if not terminated and is_last:
                # FORMAT.md section 8: only the log's end can hold a torn write;
                # elsewhere an unterminated line is checked like any other.
                warnings.append(f"{fname}: ends mid-line ({len(text)} bytes without a newline)")
                continue
            try:
                seq, prev, claimed = parse(text)
            except Malformed as e:
                errors.append(f"{where}: malformed: {e}")
                continue
            records += 1
            if n == 1 and promised is not None and promised != seq:
                errors.append(f"{where}: segment named for {promised} starts with {seq}")
            computed = record_hash(text)
            if computed != claimed:
                errors.append(f"{where}: record {seq} modified: stored {claimed}, bytes hash to {computed}")
            if prev == "genesis":
                if seq != 1:
                    errors.append(f"{where}: record {seq} claims to start a chain")
                elif last is not None:
                    warnings.append(f"{where}: restart: unanchored genesis after sequence {last[0]}")
                chains += 1
            elif last is None:
                errors.append(f"{where}: log starts at {seq} without genesis")
                chains += 1
            elif seq != last[0] + 1:
                errors.append(f"{where}: sequence {seq} follows {last[0]}")
            elif prev != last[1]:
                errors.append(f"{where}: record {seq} does not link to record {last[0]}")
            last = (seq, claimed)
    return records, chains, last, errors, warnings


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


def main(argv):
    if len(argv) == 3 and argv[1] == "--lines":
        return classify_lines(argv[2])
    if len(argv) < 2 or argv[1].startswith("--"):
        print(__doc__, file=sys.stderr)
        return 2
    ok = True
    for path in argv[1:]:
        if not os.path.exists(path):
            print(f"{path}: does not exist", file=sys.stderr)
            return 2
        records, chains, last, errors, warnings = verify(path)
        head = f"head {last[0]} {last[1]}" if last else "empty"
        print(f"{path}: {records} records, {chains} chain(s), {head}, {len(errors)} error(s), {len(warnings)} warning(s)")
        for w in warnings:
            print(f"  warning: {w}")
        for e in errors[:50]:
            print(f"  error: {e}")
        ok = ok and not errors
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
