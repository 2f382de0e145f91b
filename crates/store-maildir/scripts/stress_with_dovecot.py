#!/usr/bin/env python3
"""popgate and Dovecot on one Maildir at the same time.

Five threads run at once: popgate deliveries (`dump append`), dovecot-lda
deliveries, files dropped into new/ by hand, popgate sessions (`dump list`,
which numbers new files under the uidlist dotlock) and Dovecot POP3
sessions (strict: any warning in Dovecot's log fails). Afterwards every
message must be listed once, with the same UIDLs and sizes by both.

Must run as root: both servers then run as nobody, as one mail user would.

    cargo build -p store-maildir --example dump
    python3 crates/store-maildir/scripts/stress_with_dovecot.py [SCALE]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "../../../tests"))

import compare_with_dovecot as cmp  # noqa: E402
import dovecot_pop3  # noqa: E402

NOBODY = dovecot_pop3._unprivileged_ids("nobody", "nogroup")


def dump_as_nobody(*args: str, stdin: bytes | None = None) -> bytes:
    uid, gid = NOBODY
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", cmp.DUMP, *args],
        input=stdin, capture_output=True, check=True,
    ).stdout


cmp.dump = dump_as_nobody


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root")
    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    root = tempfile.mkdtemp(prefix="popgate-stress-")
    os.chmod(root, 0o755)
    m = os.path.join(root, "Maildir")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(m, sub))
    dovecot_pop3._chown_tree(m, *NOBODY)
    errors: list[tuple[str, str]] = []

    def hand_drop(i: int) -> None:
        tmp = os.path.join(m, "tmp", f"{1700000000 + i}.M{i}P4242.hand")
        with open(tmp, "wb") as f:
            f.write(b"Subject: hand %d\n\nx\n" % i)
        os.chown(tmp, *NOBODY)
        os.rename(tmp, os.path.join(m, "new", os.path.basename(tmp)))

    jobs = {
        "popgate append": (40, lambda i: cmp.dump("append", m, stdin=b"Subject: pg %d\n\nbody\n" % i)),
        "dovecot-lda": (25, lambda i: cmp.lda_deliver(m, b"Subject: lda %d\r\n\r\nbody\r\n" % i)),
        "hand drop": (40, hand_drop),
        "popgate session": (40, lambda i: cmp.popgate_listing(m)),
        "dovecot session": (20, lambda i: dovecot_pop3.dovecot_listing(m)),
    }

    def worker(name: str, n: int, job) -> None:
        for i in range(n * scale):
            try:
                job(i)
            except Exception as e:  # noqa: BLE001 - collected and reported
                errors.append((name, str(e)[:300]))

    threads = [threading.Thread(target=worker, args=(name, n, job)) for name, (n, job) in jobs.items()]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in errors:
            print("error:", *e)
        ours = cmp.popgate_listing(m)
        theirs = dovecot_pop3.dovecot_listing(m)
        want = scale * (40 + 25 + 40)
        uidls = {u for _, u, _ in ours}
        print(f"{len(ours)} messages (want {want}), {len(uidls)} distinct UIDLs, "
              f"listings equal: {ours == theirs}")
        if errors or ours != theirs or len(ours) != want or len(uidls) != want:
            sys.exit(1)
        print("ok")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
