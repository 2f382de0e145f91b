"""The messages of a chaos run: each carries its id in a header, so a body
served anywhere says which delivery it is, and the exact bytes delivered
are kept to compare with what RETR sends."""

from __future__ import annotations

import os
import random
import re
import sys

# popclient (tests/) has the CRLF rules and the raw POP3 client.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))

from popclient import wire_body  # noqa: E402

_ID = re.compile(rb"^X-Chaos-Id: (\S+)\r?$", re.M)


def message(rng: random.Random, mid: str, big: bool = False) -> bytes:
    """A message with id `mid`: LF or CRLF line ends, lines that start with
    a dot, sometimes no final newline; `big` makes it a few hundred kB, so a
    client can vanish in the middle of its RETR."""
    nl = b"\r\n" if rng.random() < 0.5 else b"\n"
    head = [b"From: chaos@example.org", b"Subject: chaos " + mid.encode(), b"X-Chaos-Id: " + mid.encode()]
    lines = []
    for i in range(rng.randint(4000, 10000) if big else rng.randint(1, 40)):
        line = b"%s line %d %x" % (mid.encode(), i, rng.getrandbits(64))
        if rng.random() < 0.1:
            line = b"." + line
        lines.append(line)
    if rng.random() < 0.05:
        lines.append(b".")
    data = nl.join(head) + nl + nl + nl.join(lines)
    return data if rng.random() < 0.1 else data + nl


def message_id(body: bytes) -> str | None:
    """The id in a served (unstuffed, CRLF) body, or None."""
    m = _ID.search(body, 0, 4096)
    return m.group(1).decode() if m else None


__all__ = ["message", "message_id", "wire_body"]
