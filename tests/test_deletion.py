"""Deletion semantics: only a committed QUIT of the lock holder deletes,
and it deletes exactly what was marked."""

import socket
import time

from popclient import crlf

USER = "bob@acme.example"


def messages(n):
    return [b"Subject: message %d\r\n\r\nbody of message %d\r\n" % (i, i) for i in range(1, n + 1)]


def fill(srv, n=4):
    """Drops n messages; returns their base names in message-number order."""
    return [srv.drop(USER, m) for m in messages(n)]


def test_dele_and_quit_removes_exactly_the_marked_files(server):
    names = fill(server)
    with server.session(USER) as c:
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("DELE 3").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
        assert c.rest_until_eof() == b""
    assert server.bases(USER) == {names[1], names[3]}
    with server.session(USER) as c:
        assert c.cmd("STAT") == b"+OK 2 %d" % sum(len(m) for m in messages(4)[1::2])
        _, body = c.retr(1)
        assert body == messages(4)[1]
        _, body = c.retr(2)
        assert body == messages(4)[3]


def test_dele_then_dropped_connection_deletes_nothing(server):
    names = fill(server)
    with server.session(USER) as c:
        uidls = c.listing("UIDL")
        for n in (1, 2, 3, 4):
            assert c.cmd(f"DELE {n}").startswith(b"+OK")
        # Gone without QUIT.
    _wait_unlocked(server)
    assert server.bases(USER) == set(names)
    with server.session(USER) as c:
        assert c.listing("UIDL") == uidls


def test_dele_then_reset_connection_deletes_nothing(server):
    names = fill(server, 2)
    c = server.session(USER)
    assert c.cmd("DELE 1").startswith(b"+OK")
    assert c.cmd("DELE 2").startswith(b"+OK")
    # An abortive close (RST), as a crashing client or a NAT timeout gives.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    _wait_unlocked(server)
    assert server.bases(USER) == set(names)


def test_dele_then_half_close_deletes_nothing(server):
    names = fill(server, 2)
    with server.session(USER) as c:
        assert c.cmd("DELE 1").startswith(b"+OK")
        c.sock.shutdown(socket.SHUT_WR)  # EOF without QUIT
        c.rest_until_eof()
    _wait_unlocked(server)
    assert server.bases(USER) == set(names)


def test_dele_rset_quit_deletes_nothing(server):
    names = fill(server, 3)
    with server.session(USER) as c:
        c.ok("DELE 1")
        c.ok("DELE 2")
        c.ok("RSET")
        c.ok("DELE 3")
        c.ok("RSET")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert server.bases(USER) == set(names)


def test_message_numbers_stay_stable_after_dele(server):
    fill(server, 4)
    msgs = messages(4)
    with server.session(USER) as c:
        uidls = c.listing("UIDL")
        c.ok("DELE 2")
        c.ok("DELE 3")
        assert c.listing("LIST") == [b"1 %d" % len(msgs[0]), b"4 %d" % len(msgs[3])]
        assert c.listing("UIDL") == [uidls[0], uidls[3]]
        assert c.cmd("UIDL 4") == b"+OK " + uidls[3]
        _, body = c.retr(4)
        assert body == msgs[3]
        assert c.cmd("TOP 4 0").startswith(b"+OK")
        assert c.body() == b"Subject: message 4\r\n\r\n"
        c.ok("DELE 4")
        assert c.listing("LIST") == [b"1 %d" % len(msgs[0])]
        assert c.cmd("QUIT").startswith(b"+OK")
    with server.session(USER) as c:
        # The survivor is renumbered in the next session, its UIDL kept.
        assert c.listing("UIDL") == [uidls[0]]


def test_the_snapshot_is_fixed_and_new_mail_survives_quit(server):
    fill(server, 2)
    with server.session(USER) as c:
        assert c.cmd("STAT").startswith(b"+OK 2 ")
        late = b"Subject: late\n\narrived during the session\n"
        uidl_late = server.deliver(USER, late)
        assert c.cmd("STAT").startswith(b"+OK 2 ")  # not in this session
        assert c.cmd("RETR 3").startswith(b"-ERR")
        c.ok("DELE 1")
        c.ok("DELE 2")
        assert c.cmd("QUIT").startswith(b"+OK")
    with server.session(USER) as c:
        assert c.cmd("STAT") == b"+OK 1 %d" % len(crlf(late))
        assert c.listing("UIDL") == [b"1 " + uidl_late.encode()]
        _, body = c.retr(1)
        assert body == crlf(late)


def test_a_message_removed_behind_the_sessions_back(server):
    names = fill(server, 2)
    with server.session(USER) as c:
        server.message_path(USER, names[0]).unlink()
        r = c.cmd("RETR 1")
        assert r.startswith(b"-ERR"), r
        _, body = c.retr(2)
        assert body == messages(2)[1]
        c.ok("DELE 1")
        c.ok("DELE 2")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert server.bases(USER) == set()


def test_many_messages(server):
    """3000 messages: listings past the response buffer, half of them deleted."""
    msgs = [b"Subject: %d\n\n%s\n" % (i, b"x" * (i % 97)) for i in range(3000)]
    names = [server.drop(USER, m, sizes=(i % 2 == 0)) for i, m in enumerate(msgs)]
    with server.session(USER) as c:
        assert c.cmd("STAT") == b"+OK 3000 %d" % sum(len(crlf(m)) for m in msgs)
        assert c.listing("LIST") == [b"%d %d" % (i + 1, len(crlf(m))) for i, m in enumerate(msgs)]
        uidls = c.listing("UIDL")
        assert len(uidls) == 3000 and len({u.split()[1] for u in uidls}) == 3000
        c.send("".join(f"DELE {n}\r\n" for n in range(1, 3001, 2)))
        for _ in range(1500):
            assert c.line().startswith(b"+OK")
        assert c.cmd("STAT").startswith(b"+OK 1500 ")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert server.bases(USER) == set(names[1::2])
    with server.session(USER) as c:
        assert c.listing("UIDL") == [b"%d %s" % (i + 1, u.split()[1]) for i, u in enumerate(uidls[1::2])]
        _, body = c.retr(1500)
        assert body == crlf(msgs[2999])


def _wait_unlocked(server, user=USER):
    """Waits until the server noticed the closed session: a new login gets in."""
    deadline = time.monotonic() + 10
    while True:
        with server.connect() as c:
            r = c.login(user, server.password(user))
            if r.startswith(b"+OK"):
                c.cmd("QUIT")  # commits nothing: nothing is marked
                return
            assert r.startswith(b"-ERR [IN-USE]"), r
        assert time.monotonic() < deadline, "the mailbox stayed locked after the client left"
        time.sleep(0.05)
