"""PIPELINING (RFC 2449): many commands in one write, answers in order."""

import time

from popclient import AUTH_FAILED, crlf

USER = "bob@acme.example"
MSG1 = b"Subject: one\r\n\r\n.dot line\r\nbody one\r\n"
MSG2 = b"Subject: two\n\nbody two\n"


def fill(srv):
    u1 = srv.deliver(USER, MSG1).encode()
    u2 = srv.deliver(USER, MSG2).encode()
    return u1, u2


def test_whole_session_in_one_write(server):
    u1, u2 = fill(server)
    s1, s2 = len(crlf(MSG1)), len(crlf(MSG2))
    with server.connect() as c:
        c.send(f"USER {USER}\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nQUIT\r\n")
        assert c.line().startswith(b"+OK")
        assert c.line() == b"+OK Logged in, 2 messages (%d octets)." % (s1 + s2)
        assert c.line() == b"+OK 2 %d" % (s1 + s2)
        assert c.line().startswith(b"+OK")
        assert c.multi() == [b"1 %d" % s1, b"2 %d" % s2]
        assert c.line().startswith(b"+OK")
        assert c.multi() == [b"1 " + u1, b"2 " + u2]
        assert c.line() == b"+OK %d octets" % s1
        assert c.body() == MSG1
        assert c.line().startswith(b"+OK")
        assert c.rest_until_eof() == b""


def test_batch_after_login(server):
    u1, u2 = fill(server)
    s1, s2 = len(crlf(MSG1)), len(crlf(MSG2))
    with server.session(USER) as c:
        c.send(
            "STAT\r\nLIST 1\r\nTOP 1 0\r\nUIDL 2\r\nDELE 1\r\nSTAT\r\nRETR 1\r\nLIST\r\n"
            "RSET\r\nSTAT\r\nRETR 2\r\nNOOP\r\nBOGUS\r\nNOOP\r\nDELE 2\r\nQUIT\r\n"
        )
        assert c.line() == b"+OK 2 %d" % (s1 + s2)
        assert c.line() == b"+OK 1 %d" % s1
        assert c.line().startswith(b"+OK")
        assert c.body() == b"Subject: one\r\n\r\n"
        assert c.line() == b"+OK 2 " + u2
        assert c.line().startswith(b"+OK")
        assert c.line() == b"+OK 1 %d" % s2
        assert c.line().startswith(b"-ERR")
        assert c.line().startswith(b"+OK")
        assert c.multi() == [b"2 %d" % s2]
        assert c.line().startswith(b"+OK")
        assert c.line() == b"+OK 2 %d" % (s1 + s2)
        assert c.line() == b"+OK %d octets" % s2
        assert c.body() == crlf(MSG2)
        assert c.line() == b"+OK"
        assert c.line().startswith(b"-ERR")
        assert c.line() == b"+OK"
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK")
        assert c.rest_until_eof() == b""
    with server.session(USER) as c:
        assert c.listing("UIDL") == [b"1 " + u1]


def test_failed_login_inside_a_pipeline(server):
    with server.connect() as c:
        c.send(f"USER {USER}\r\nPASS wrong\r\nUSER {USER}\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")
        assert c.line().startswith(b"+OK")
        assert c.line() == AUTH_FAILED
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK Logged in")
        assert c.line() == b"+OK 0 0"
        assert c.line().startswith(b"+OK")
        assert c.rest_until_eof() == b""


def test_many_retrs_in_one_write(server):
    fill(server)
    with server.session(USER) as c:
        c.send("RETR 1\r\nRETR 2\r\n" * 200 + "QUIT\r\n")
        for _ in range(200):
            assert c.line() == b"+OK %d octets" % len(crlf(MSG1))
            assert c.body() == MSG1
            assert c.line() == b"+OK %d octets" % len(crlf(MSG2))
            assert c.body() == crlf(MSG2)
        assert c.line().startswith(b"+OK")
        assert c.rest_until_eof() == b""


def test_commands_split_across_writes(server):
    fill(server)
    with server.connect() as c:
        for chunk in (b"US", b"ER ", USER.encode(), b"\r", b"\nPA", b"SS sec", b"ret\r\nST", b"AT\r", b"\n"):
            c.send(chunk)
            time.sleep(0.01)
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK Logged in")
        assert c.line().startswith(b"+OK 2 ")
        # A bare LF ends a command too (sloppy clients).
        c.send(b"NOOP\nNOOP\r\n")
        assert c.line() == b"+OK"
        assert c.line() == b"+OK"
