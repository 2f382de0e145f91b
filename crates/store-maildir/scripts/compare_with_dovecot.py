#!/usr/bin/env python3
"""Compares the Maildir store with real Dovecot POP3 on the same Maildirs.

Every scenario builds a Maildir, lets popgate's store (through the `dump`
example) and Dovecot's POP3 server (through tests/dovecot_pop3.py) take
turns on it, and checks after each turn that both list the same UIDLs and
sizes and send the same message bytes.

    cargo build -p store-maildir --example dump
    python3 crates/store-maildir/scripts/compare_with_dovecot.py

Run as root (Dovecot then runs as nobody) or as the Maildirs' owner.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "../../.."))
sys.path.insert(0, os.path.join(REPO, "tests"))

from dovecot_pop3 import (  # noqa: E402
    _allow_traversal,
    _chown_tree,
    _unprivileged_ids,
    dovecot_listing,
    dovecot_retr,
    dovecot_session,
)

DUMP = os.environ.get("DUMP", os.path.join(REPO, "target/debug/examples/dump"))
FORMATS = ["%08Xu%08Xv", "%f", "%g", "%v.%u", "%08Xv%08Xu", "%Mf", "UID%u-%v", "%Lf"]

SAMPLES = {
    "lf": b"From: a@example.org\nSubject: lf only\n\nline 1\nline 2\n",
    "crlf": b"From: b@example.org\r\nSubject: crlf\r\n\r\nHello\r\n.dot line\r\n",
    "no-final-newline": b"Subject: no final newline\n\nlast line",
    "lone-cr": b"Subject: lone cr\n\na\rb\nc\r\n",
    "dots": b"Subject: dots\n\n.\n..\n.x\n",
    "empty-body": b"Subject: empty\n\n",
    "large": b"Subject: large\n\n" + b"0123456789abcdefghijklmnopqrstuvwxyz\n" * 6000,
}

checks = 0


def dump(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        [DUMP, *args], input=stdin, capture_output=True, check=True
    ).stdout


def popgate_listing(maildir: str, fmt: str = FORMATS[0]) -> list[tuple[int, str, int]]:
    out = dump("list", maildir, fmt).decode()
    rows = []
    for line in out.splitlines():
        num, uidl, size = line.split(" ")
        rows.append((int(num), uidl, int(size)))
    return rows


def crlf(data: bytes) -> bytes:
    out = bytearray()
    prev = 0
    for b in data:
        if b == 0x0A and prev != 0x0D:
            out += b"\r"
        out.append(b)
        prev = b
    return bytes(out)


def compare(maildir: str, label: str, formats=FORMATS[:1], bodies: bool = False,
            dovecot_first: bool = False) -> list[tuple[int, str, int]]:
    """Both listings must agree (for each format); returns popgate's, in
    the first format."""
    global checks
    first = None
    for fmt in formats:
        if dovecot_first:
            theirs = dovecot_listing(maildir, fmt)
            ours = popgate_listing(maildir, fmt)
        else:
            ours = popgate_listing(maildir, fmt)
            theirs = dovecot_listing(maildir, fmt)
        if ours != theirs:
            print(f"MISMATCH {label} format {fmt}\n  popgate: {ours}\n  dovecot: {theirs}")
            sys.exit(1)
        checks += 1
        first = first or ours
    if bodies:
        for num, _, size in ours:
            mine = crlf(dump("fetch", maildir, str(num)))
            if not mine.endswith(b"\r\n"):
                mine += b"\r\n"  # RETR ends an unterminated last line
            theirs_body = dovecot_retr(maildir, num)
            if mine != theirs_body:
                print(f"MISMATCH {label}: body of message {num} differs")
                sys.exit(1)
            checks += 1
    print(f"ok  {label}: {len(ours)} messages")
    return first


def lda_deliver(maildir: str, message: bytes) -> None:
    """Delivers through dovecot-lda, as an unprivileged user if we are root."""
    work = tempfile.mkdtemp(prefix="dovecot-lda-")
    try:
        os.chmod(work, 0o755)
        uid, gid = (_unprivileged_ids("nobody", "nogroup") if os.geteuid() == 0
                    else (os.geteuid(), os.getegid()))
        if os.geteuid() == 0:
            os.makedirs(maildir, exist_ok=True)
            _allow_traversal(maildir)
            _chown_tree(maildir, uid, gid)
        conf = os.path.join(work, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"mail_location = maildir:{maildir}\nlog_path = /dev/stderr\n"
                    f"base_dir = {work}/run\nstate_dir = {work}/state\nssl = no\n")
        cmd = ["/usr/lib/dovecot/dovecot-lda", "-c", conf, "-f", "sender@example.org"]
        if os.geteuid() == 0:
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *cmd]
        subprocess.run(cmd, input=message, check=True, capture_output=True,
                       env={"USER": "popgate-test", "HOME": work, "PATH": "/usr/bin:/bin"})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def hand_drop(maildir: str) -> None:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    for i, (name, body) in enumerate(SAMPLES.items()):
        with open(os.path.join(maildir, "new", f"{1600000000 + i}.M{i}P99.handdrop-{name}"), "wb") as f:
            f.write(body)
    # Already flagged in new/, and one with no time in its name at all.
    with open(os.path.join(maildir, "new", "1599999999.flagged:2,S"), "wb") as f:
        f.write(SAMPLES["lf"])
    with open(os.path.join(maildir, "new", "oddname"), "wb") as f:
        f.write(SAMPLES["crlf"])


def sized_drop(maildir: str) -> None:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    for i, (name, body) in enumerate(SAMPLES.items()):
        base = f"{1610000000 + i}.M{i}P7.sized,S={len(body)},W={len(crlf(body))}"
        where = ("cur", base + ":2,FS") if i % 2 else ("new", base)
        with open(os.path.join(maildir, *where), "wb") as f:
            f.write(body)


def main() -> None:
    root = tempfile.mkdtemp(prefix="popgate-vs-dovecot-")
    os.chmod(root, 0o755)
    md = lambda name: os.path.join(root, name, "Maildir")  # noqa: E731
    try:
        # 1. Files dropped into new/ by hand (no sizes in names): popgate first.
        hand_drop(md("handdrop-popgate-first"))
        compare(md("handdrop-popgate-first"), "hand-dropped, popgate numbers first",
                FORMATS, bodies=True)

        # 2. The same, Dovecot first (its uidlist, its W cache, its renames).
        hand_drop(md("handdrop-dovecot-first"))
        compare(md("handdrop-dovecot-first"), "hand-dropped, Dovecot numbers first",
                FORMATS, bodies=True, dovecot_first=True)

        # 3. Names carrying ,S= and ,W=, in new/ and flagged in cur/.
        sized_drop(md("sized"))
        compare(md("sized"), "sized names, popgate first", FORMATS, bodies=True)
        sized_drop(md("sized-dovecot"))
        compare(md("sized-dovecot"), "sized names, Dovecot first", FORMATS, dovecot_first=True)

        # 4. Delivered by popgate's append.
        m = md("appended")
        uidls = [dump("append", m, stdin=body).decode().strip() for body in SAMPLES.values()]
        rows = compare(m, "appended by popgate", FORMATS, bodies=True, dovecot_first=True)
        assert [u for _, u, _ in rows] == uidls, (rows, uidls)

        # 5. A mailbox both servers live in, in turn.
        m = md("shared")
        lda_deliver(m, SAMPLES["lf"])
        lda_deliver(m, SAMPLES["crlf"])
        dump("append", m, stdin=SAMPLES["no-final-newline"])
        dump("append", m, stdin=SAMPLES["lone-cr"])
        with open(os.path.join(m, "new", "1620000000.M1P1.handdrop"), "wb") as f:
            f.write(SAMPLES["dots"])
        before = compare(m, "shared: LDA + popgate + hand drop", FORMATS, bodies=True,
                         dovecot_first=True)
        # Dovecot's RETRs mark everything seen: every file gets renamed.
        dovecot_session(m, [f"RETR {n}" for n, _, _ in before])
        assert all(name.endswith(":2,S") for name in os.listdir(os.path.join(m, "cur")))
        compare(m, "shared: after Dovecot renamed every file", bodies=True)
        print("    ", dump("expunge", m, "1", "2", "4").decode().strip())
        after = compare(m, "shared: after popgate expunged 2 and 4")
        assert [u for _, u, _ in after] == [u for n, u, _ in before if n not in (2, 4)]
        dovecot_session(m, ["DELE 1"])
        compare(m, "shared: after Dovecot deleted 1", FORMATS)
        dump("append", m, stdin=SAMPLES["large"])
        lda_deliver(m, SAMPLES["empty-body"])
        compare(m, "shared: after more deliveries from both", FORMATS, bodies=True)

        # 6. UIDLs saved by Dovecot (pop3_save_uidl) outlive a format change.
        m = md("saved-uidl")
        hand_drop(m)
        dovecot_session(m, ["UIDL"], uidl_format="%f",
                        extra_settings={"pop3_save_uidl": "yes"})
        with open(os.path.join(m, "dovecot-uidlist")) as f:
            assert " P" in f.read(), "Dovecot saved the UIDLs"
        rows = compare(m, "saved UIDLs, other format", ["%08Xu%08Xv", "%v.%u"])
        assert all(not u.startswith("0000") for _, u, _ in rows), rows

        print(f"all {checks} checks passed")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
