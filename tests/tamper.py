#!/usr/bin/env python3
"""Tampers with a log as someone who can write its storage, but holds no key,
can: edits a record and recomputes every hash after it (FORMAT.md sections
2-4), drops signed records, or cuts the tail at a record boundary.

Usage: tamper.py SRC DST [--edit SEQ] [--drop-signed-after SEQ]
                         [--drop-notes-after SEQ] [--keep N]
SRC is a log (a file or a segment directory); DST, a new directory, gets the
result as one segment. --edit changes the `tool_called` of the first entry at or after
record SEQ (an error if there is none);
--drop-signed-after removes the checkpoint, seal and key_rotation records
after SEQ; --drop-notes-after removes only those holding a signed note (so
MAC seals stay, now over the wrong hashes); --keep keeps the first N records.
The chain is recomputed, and a kept MAC seal's `sealed_seq` is renumbered to
the record before it, as an attacker would.
Used by `cargo xtask test`.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import independent_verify as iv  # noqa: E402


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst, opts = argv[1], argv[2], argv[3:]
    edit = drop_after = drop_notes_after = keep = None
    while opts:
        flag, value = opts[0], int(opts[1])
        if flag == "--edit":
            edit = value
        elif flag == "--drop-signed-after":
            drop_after = value
        elif flag == "--drop-notes-after":
            drop_notes_after = value
        elif flag == "--keep":
            keep = value
        else:
            print(__doc__, file=sys.stderr)
            return 2
        opts = opts[2:]
    files = iv.files_of(src)
    members = []
    edited = False
    for i, (fname, _) in enumerate(files):
        for _, text, terminated in iv.lines_of(fname, i == len(files) - 1):
            if not terminated:
                continue
            seq = iv.parse(text)[0]
            body = text[1 : iv.SUFFIX.search(text).start()]
            if edit is not None and not edited and seq >= edit and b'"tool_called":"' in body:
                body = body.replace(b'"tool_called":"', b'"tool_called":"X', 1)
                edited = True
            signed = any(body.startswith(b'"record_type":"%s"' % t.encode()) for t in iv.SIGNED_TYPES)
            if drop_after is not None and seq > drop_after and signed:
                continue
            if drop_notes_after is not None and seq > drop_notes_after and signed and b'"note":' in body:
                continue
            members.append(body)
    if edit is not None and not edited:
        print(f"tamper.py: no entry at or after record {edit} to edit", file=sys.stderr)
        return 2
    if keep is not None:
        members = members[:keep]
    os.makedirs(dst)
    prev = b"genesis"
    with open(os.path.join(dst, "audit-00000000000000000001.jsonl"), "wb") as f:
        for seq, body in enumerate(members, 1):
            if body.startswith(b'"record_type":"seal"') and b'"mac":' in body:
                body = re.sub(rb'"sealed_seq":\d+', b'"sealed_seq":%d' % (seq - 1), body, count=1)
            unhashed = b"{%s,\"chain_sequence\":%d,\"chain_prev_hash\":\"%s\"}" % (body, seq, prev)
            h = iv.blake3.blake3(unhashed).hexdigest()  # FORMAT.md section 3
            f.write(unhashed[:-1] + b',"chain_record_hash":"%s"}\n' % h.encode())
            prev = h.encode()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
