"""Dovecot compatibility: on the same Maildir, Dovecot's POP3 and popgate
show the same UIDLs, sizes and message bytes, whichever opened it first.

Clients that leave mail on the server re-download everything when UIDLs
change, so a mailbox moved from Dovecot to popgate (or back) must keep them.
"""

import shutil

from dovecot_pop3 import dovecot_listing, dovecot_retr

A = "compat1@acme.example"
B = "compat2@acme.example"


def popgate_listing(srv, user):
    with srv.session(user) as c:
        uidls = c.listing("UIDL")
        sizes = c.listing("LIST")
        bodies = [c.retr(n)[1] for n in range(1, len(uidls) + 1)]
        assert c.cmd("QUIT").startswith(b"+OK")
    listing = []
    for u, s in zip(uidls, sizes):
        num, uidl = u.decode().split(" ", 1)
        num2, size = s.decode().split(" ", 1)
        assert num == num2
        listing.append((int(num), uidl, int(size)))
    return listing, bodies


def dovecot_bodies(maildir, count):
    return [dovecot_retr(str(maildir), n) for n in range(1, count + 1)]


def fill(srv, user):
    """Mail arriving every way a Maildir gets it."""
    srv.deliver(user, b"From: a@example.org\r\nSubject: delivered, CRLF\r\n\r\n.dot\r\nbody\r\n")
    srv.deliver(user, b"From: b@example.org\nSubject: delivered, LF only\n\nline\n..two\n")
    srv.deliver(user, b"Subject: delivered, no final newline\n\nno newline")
    srv.drop(user, b"Subject: dropped, LF only, no sizes\n\nhello\n\n\nworld\n")
    srv.drop(user, b"Subject: dropped, CRLF, no sizes\r\n\r\nhello\r\n")
    srv.drop(user, b"Subject: dropped, with sizes\n\nsized\n", sizes=True)
    srv.drop(user, b"Subject: dropped, no final newline\n\nlast")
    srv.drop(user, b"Subject: already in cur, seen\n\nread by IMAP\n", cur=True)


def more(srv, user):
    srv.deliver(user, b"Subject: later, delivered\n\nlater\n")
    srv.drop(user, b"Subject: later, dropped\n\nlater too\n")


def test_same_listing_whichever_opens_first(server):
    fill(server, A)
    # Two identical copies, neither opened yet.
    shutil.copytree(server.maildir(A), server.maildir(B))
    md_a, md_b = server.maildir(A), server.maildir(B)

    # Copy A: popgate first, then Dovecot.
    pg_a, bodies_a = popgate_listing(server, A)
    assert len(pg_a) == 8
    assert dovecot_listing(str(md_a)) == pg_a
    assert dovecot_bodies(md_a, 8) == bodies_a
    assert popgate_listing(server, A) == (pg_a, bodies_a)

    # Copy B: Dovecot first, then popgate.
    dc_b = dovecot_listing(str(md_b))
    assert len(dc_b) == 8
    pg_b, bodies_b = popgate_listing(server, B)
    assert pg_b == dc_b
    assert dovecot_bodies(md_b, 8) == bodies_b
    assert dovecot_listing(str(md_b)) == dc_b

    # The same messages in the same order with the same sizes on both copies
    # (UIDLs carry each copy's UIDVALIDITY, so they may differ between copies).
    assert [(n, s) for n, _, s in pg_a] == [(n, s) for n, _, s in pg_b]
    assert bodies_a == bodies_b

    # New mail after both have seen the mailbox: still in agreement, and
    # the old messages keep their UIDLs.
    for user, md, first in ((A, md_a, pg_a), (B, md_b, pg_b)):
        more(server, user)
        pg, bodies = popgate_listing(server, user)
        assert pg[:8] == first
        assert len(pg) == 10
        assert dovecot_listing(str(md)) == pg
        assert dovecot_bodies(md, 10) == bodies


def test_deletion_by_one_is_seen_by_the_other(server):
    fill(server, A)
    before, _ = popgate_listing(server, A)
    with server.session(A) as c:
        c.ok("DELE 2")
        c.ok("DELE 5")
        assert c.cmd("QUIT").startswith(b"+OK")
    expected = [x for x in before if x[0] not in (2, 5)]
    got = dovecot_listing(str(server.maildir(A)))
    assert [(u, s) for _, u, s in got] == [(u, s) for _, u, s in expected]
    # And Dovecot's deletions are seen by popgate.
    from dovecot_pop3 import dovecot_session

    dovecot_session(str(server.maildir(A)), ["DELE 1"])
    after, _ = popgate_listing(server, A)
    assert [(u, s) for _, u, s in after] == [(u, s) for _, u, s in expected[1:]]


def test_control_dir_uidlist_is_shared_with_dovecot(popgate, tmp_path):
    """mail_location's CONTROL=: the dovecot-uidlist lives outside the
    Maildir. popgate reads and writes it there, so both servers keep giving
    the same UIDLs, whichever opens the mailbox first."""
    import os

    from dovecot_pop3 import _allow_traversal, _chown_tree, _unprivileged_ids

    root = tmp_path / "pg0"
    control = root / "control"
    location = f"maildir:{root}/acme/%Ld/%Ln/Maildir:CONTROL={control}/%d/%n:INDEX={root}/index/%d/%n:LAYOUT=fs"
    srv = popgate(tenants={"acme": {"store": {"kind": "maildir", "path": location}}}, start=False)
    control.mkdir()
    srv.start()

    def to_dovecot(*paths):
        if os.geteuid() == 0:
            uid, gid = _unprivileged_ids("nobody", "nogroup")
            for p in paths:
                p.mkdir(parents=True, exist_ok=True)
                _allow_traversal(str(p))
                _chown_tree(str(p), uid, gid)

    def dovecot(user):
        local, domain = user.split("@")
        settings = {"mail_location": f"maildir:{srv.maildir(user)}:CONTROL={control}/{domain}/{local}:LAYOUT=fs"}
        return dovecot_listing(str(srv.maildir(user)), extra_settings=settings)

    # A: popgate first.
    fill(srv, A)
    pg_a, bodies_a = popgate_listing(srv, A)
    assert len(pg_a) == 8
    # Where Dovecot keeps INBOX's uidlist with LAYOUT=fs (.INBOX/ without).
    assert (control / "acme.example" / "compat1" / "INBOX" / "dovecot-uidlist").is_file()
    assert not (srv.maildir(A) / "dovecot-uidlist").exists()
    to_dovecot(srv.maildir(A), control / "acme.example" / "compat1")
    assert dovecot(A) == pg_a

    # B: Dovecot first.
    fill(srv, B)
    to_dovecot(srv.maildir(B), control / "acme.example" / "compat2")
    dc_b = dovecot(B)
    assert not (srv.maildir(B) / "dovecot-uidlist").exists()
    pg_b, _ = popgate_listing(srv, B)
    assert pg_b == dc_b

    # New mail: the old UIDLs stay, and both agree on the new ones.
    for user, first in ((A, pg_a), (B, pg_b)):
        more(srv, user)
        after, _ = popgate_listing(srv, user)
        assert after[: len(first)] == first
        assert len(after) == len(first) + 2
        assert dovecot(user) == after
