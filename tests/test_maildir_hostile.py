"""A hosting customer may own the files of his Maildir (FTP, SSH). Nothing
he puts there reaches another mailbox, blocks the server or grows its
memory; and files popgate creates there take the Maildir's owner and mode,
so Dovecot, running as the mail user, keeps serving the same Maildir.

- `cur` or `new` linked to another user's: that login gets -ERR, and the
  other user's mail is neither served, moved nor deleted;
- `dovecot-uidlist` linked to /dev/zero, or a FIFO: -ERR [SYS/TEMP] at once,
  the server keeps serving the others, and its memory stays flat;
- a planted `dovecot-uidlist.tmp` (or `popgate-fence.tmp`) link: its target
  is never written;
- popgate as root, then Dovecot as the mail user, on one Maildir: no
  permission error, the same UIDLs.
"""

from __future__ import annotations

import os
import pwd
import stat
import time

import pytest

import dovecot_pop3
from popclient import crlf

VICTIM = "bob@acme.example"
ATTACKER = "dave@acme.example"


def tree(path):
    """Every file under `path` (relative name -> bytes)."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = f.read()
    return out


def uidl_listing(srv, user):
    with srv.session(user) as c:
        uidls = c.listing("UIDL")
        assert c.cmd("QUIT").startswith(b"+OK")
    return uidls


def attacker_maildir(srv):
    md = srv.maildir(ATTACKER)
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    return md


@pytest.mark.parametrize("sub", ["cur", "new"])
def test_a_subdirectory_linked_to_another_users_is_refused(server, sub):
    server.drop(VICTIM, b"Subject: bob's first\n\nsecret\n")
    server.drop(VICTIM, b"Subject: bob's second\n\nsecret\n")
    victim_uidls = uidl_listing(server, VICTIM)  # now in cur/
    server.drop(VICTIM, b"Subject: bob's newest\n\nstill in new/\n")
    bob = server.maildir(VICTIM)
    before = tree(bob)

    md = attacker_maildir(server)
    (md / sub).rmdir()
    os.symlink(bob / sub, md / sub)
    with server.connect() as c:
        assert c.cmd(f"USER {ATTACKER}").startswith(b"+OK")
        r = c.cmd(f"PASS {server.password(ATTACKER)}")
        assert r.startswith(b"-ERR [SYS/"), r
    assert tree(bob) == before, "Bob's Maildir is untouched"
    assert "symlinks inside a Maildir are not followed" in server.log()

    # Bob still has all his mail, new message included.
    uidls = uidl_listing(server, VICTIM)
    assert uidls[:2] == victim_uidls
    assert len(uidls) == 3


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_uidlist_that_is_no_file_is_refused_at_once(server, kind):
    md = attacker_maildir(server)
    server.drop(ATTACKER, b"Subject: dave\n\nmail\n")
    uidlist = md / "dovecot-uidlist"
    if kind == "dev-zero":
        os.symlink("/dev/zero", uidlist)
    else:
        os.mkfifo(uidlist)
    server.drop(VICTIM, b"Subject: bob\n\nmail\n")
    rss_before_kb = server.memory_kb("VmRSS")

    # Several tries: none hangs (the client gives up after 10 s), none
    # holds a blocking thread or the mailbox lock.
    started = time.monotonic()
    for _ in range(3):
        with server.connect() as c:
            assert c.cmd(f"USER {ATTACKER}").startswith(b"+OK")
            r = c.cmd(f"PASS {server.password(ATTACKER)}")
            assert r.startswith(b"-ERR [SYS/TEMP]"), r
    per_login = (time.monotonic() - started) / 3
    # The others are served meanwhile.
    assert len(uidl_listing(server, VICTIM)) == 1
    grown_mb = (server.memory_kb("VmHWM") - rss_before_kb) / 1024
    print(f"{kind}: {per_login:.3f} s per refused login, peak RSS +{grown_mb:.1f} MB")
    assert grown_mb < 64, f"peak RSS grew by {grown_mb:.0f} MB"
    assert "refusing a Maildir file" in server.log()
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(uidlist).st_mode), "left as it was"


def test_planted_temporary_file_links_are_never_followed(server):
    md = attacker_maildir(server)
    victims = {name: server.root / f"victim-{name}" for name in ("dovecot-uidlist.tmp", "popgate-fence.tmp")}
    for name, victim in victims.items():
        victim.write_text(f"precious {name}\n")
        os.symlink(victim, md / name)
    server.drop(ATTACKER, b"Subject: one\n\n1\n")
    server.drop(ATTACKER, b"Subject: two\n\n2\n")

    with server.session(ATTACKER) as c:  # writes the uidlist
        assert len(c.listing("UIDL")) == 2
        c.ok("DELE 1")
        assert c.cmd("QUIT").startswith(b"+OK")  # writes the fence, rewrites the uidlist
    server.deliver(ATTACKER, b"Subject: three\n\n3\n")

    for name, victim in victims.items():
        assert victim.read_text() == f"precious {name}\n", f"{victim} was written through {name}"
        assert not os.path.lexists(md / name)
    for name in ("dovecot-uidlist", "popgate-fence"):
        assert stat.S_ISREG(os.lstat(md / name).st_mode), name
    assert len(uidl_listing(server, ATTACKER)) == 2


MAIL_USER = "nobody"


def test_dovecot_as_the_mail_user_serves_a_maildir_popgate_opened_as_root(server, monkeypatch):
    # scripts/test runs as root (CI does) and installs Dovecot: a missing
    # one is a broken setup, not a reason to skip.
    assert os.geteuid() == 0, "needs root, as popgate runs on a multi-tenant host"
    assert os.path.exists(dovecot_pop3.POP3_BINARY), "Dovecot's pop3 is not installed (scripts/test installs it)"
    user = "compat1@acme.example"
    pw = pwd.getpwnam(MAIL_USER)
    uid, gid = pw.pw_uid, pw.pw_gid
    md = server.maildir(user)
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    # Mail the MTA (running as the mail user) delivered before.
    server.drop(user, b"Subject: by the MTA\n\nhello\n")
    server.drop(user, b"Subject: read by IMAP\n\nseen\n", cur=True)
    server.drop(user, b"Subject: to be deleted\n\nbye\n")
    for root, dirs, files in os.walk(md):
        for name in [".", *dirs, *files]:
            p = os.path.join(root, name)
            os.chown(p, uid, gid)
            os.chmod(p, 0o700 if os.path.isdir(p) else 0o600)

    # popgate, as root: a delivery, a session that numbers and sizes the
    # mail (uidlist and its lock), a deletion (popgate-fence).
    assert os.geteuid() == 0
    server.deliver(user, b"Subject: delivered by popgate\n\nlda\n")
    with server.session(user) as c:
        uidls = [line.decode().split(" ", 1)[1] for line in c.listing("UIDL")]
        sizes = [int(line.split()[1]) for line in c.listing("LIST")]
        assert len(uidls) == 4
        c.ok("DELE 3")
        assert c.cmd("QUIT").startswith(b"+OK")
    expected = [(u, s) for i, (u, s) in enumerate(zip(uidls, sizes)) if i != 2]

    wrong = []
    for root, dirs, files in os.walk(md):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            mode = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (uid, gid, mode):
                wrong.append(f"{p}: {st.st_uid}:{st.st_gid} {stat.S_IMODE(st.st_mode):o}")
    assert not wrong, "not the Maildir's owner and mode:\n" + "\n".join(wrong)

    # Dovecot, as the mail user, on the Maildir exactly as popgate left it
    # (the helper would otherwise chown it first); strict: any error in
    # Dovecot's log (e.g. "open(dovecot-uidlist) failed: Permission
    # denied") fails the test.
    monkeypatch.setattr(dovecot_pop3, "_chown_tree", lambda *a: None)
    listing = dovecot_pop3.dovecot_listing(str(md), run_as=(MAIL_USER, "nogroup"))
    assert [(u, s) for _, u, s in listing] == expected
    # The delivery came first, so it has UID 1: a file popgate wrote as root.
    body = dovecot_pop3.dovecot_retr(str(md), 1, run_as=(MAIL_USER, "nogroup"))
    assert body == crlf(b"Subject: delivered by popgate\n\nlda\n")

    # And back to popgate: the same UIDLs.
    again = [line.decode().split(" ", 1)[1] for line in uidl_listing(server, user)]
    assert again == [u for u, _ in expected]
