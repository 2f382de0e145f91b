"""The dataset: Maildirs as a Dovecot delivery leaves them, and the passwd-file."""

from __future__ import annotations

import os
import random

PASSWORD = "bench-secret"


WORDS = (
    "the of and to in is you that it he was for on are as with his they at be "
    "this have from or one had by word but not what all were we when your can "
    "said there use an each which she do how their if will up other about out "
    "many then them these so some her would make like him into time has look "
    "two more write go see number no way could people my than first water been "
    "mailbox gateway message tenant server client offline download leave"
).split()


def line_pool(rng: random.Random, count: int = 4096) -> list[bytes]:
    """Text lines (with LF) to build bodies from; some start with a dot."""
    pool = []
    for _ in range(count):
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 13)))
        r = rng.random()
        if r < 0.02:
            line = "." + line
        elif r < 0.025:
            line = ".."
        elif r < 0.04:
            line = ""
        pool.append(line.encode() + b"\n")
    return pool


POOL: list[bytes] = []


def body_lines(rng: random.Random, target: int) -> bytes:
    """About `target` bytes of text lines (LF)."""
    if not POOL:
        POOL.extend(line_pool(random.Random(2449)))
    lines = []
    size = 0
    while size < target:
        chunk = rng.choices(POOL, k=max(8, (target - size) // 50))
        lines += chunk
        size += sum(map(len, chunk))
    return b"".join(lines)


def message(rng: random.Random, user: str, i: int, size: int) -> bytes:
    head = (
        f"Return-Path: <sender{i}@example.org>\n"
        f"From: Sender {i} <sender{i}@example.org>\n"
        f"To: {user}\n"
        f"Subject: benchmark message {i} for {user}\n"
        f"Date: Mon, 3 Mar 2025 10:{i % 60:02d}:00 +0000\n"
        f"Message-ID: <{i}.{user}@bench.example>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
    ).encode()
    return head + body_lines(rng, max(0, size - len(head)))


def write_maildir(maildir: str, messages: list[bytes], seq: list[int]) -> int:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    total = 0
    for i, data in enumerate(messages):
        seq[0] += 1
        virtual = len(data) + data.count(b"\n")  # LF -> CRLF
        name = f"{1700000000 + seq[0]}.M{seq[0]}P4242.bench,S={len(data)},W={virtual}:2,S"
        with open(os.path.join(maildir, "cur", name), "wb") as f:
            f.write(data)
        total += len(data)
    return total


def small_mailboxes(domain: str, users: int, per_user: int, rng: random.Random,
                    sizes: tuple[int, int] = (3_500, 4_500)) -> int:
    """Mailboxes u0001..u{users} under `domain`, each `per_user` messages
    of `sizes` octets (LF endings): the session load's mail. Returns the
    octets written."""
    seq = [0]
    total = 0
    for u in range(1, users + 1):
        user = f"u{u:04d}"
        msgs = [message(rng, user, i, rng.randint(*sizes)) for i in range(per_user)]
        total += write_maildir(os.path.join(domain, user, "Maildir"), msgs, seq)
    return total


def make_dataset(root: str, users: int, per_user: int, idle_users: int, big_mb: int) -> dict:
    rng = random.Random(1939)
    mail = os.path.join(root, "mail")
    domain = os.path.join(mail, "bench.test")
    os.makedirs(domain)
    seq = [0]
    total = 0
    for u in range(1, users + idle_users + 1):
        user = f"u{u:04d}"
        if u <= users:
            msgs = [message(rng, user, i, rng.randint(2_000, 50_000)) for i in range(per_user)]
        else:
            msgs = [message(rng, user, i, rng.randint(2_000, 10_000)) for i in range(5)]
        total += write_maildir(os.path.join(domain, user, "Maildir"), msgs, seq)
    big = message(rng, "big", 0, 0) + body_lines(rng, big_mb * 1_000_000)
    total += write_maildir(os.path.join(domain, "big", "Maildir"), [big], seq)
    os.symlink("bench.test", os.path.join(mail, "crypt.test"))
    return {"bytes": total, "big_bytes": len(big)}


def chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(top, name), uid, gid, follow_symlinks=False)


def write_passwd(path: str, idle: int, crypt_hash: str) -> None:
    """Users u0001..u{idle} and big: PLAIN @bench.test, `crypt_hash` @crypt.test."""
    with open(path, "w") as f:
        names = [f"u{u:04d}" for u in range(1, idle + 1)] + ["big"]
        for n in names:
            f.write(f"{n}@bench.test:{{PLAIN}}{PASSWORD}\n")
        for n in names:
            f.write(f"{n}@crypt.test:{crypt_hash}\n")
    os.chmod(path, 0o644)
