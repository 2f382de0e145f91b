"""Exclusive mailbox access: one POP3 session per mailbox at a time."""

import time

from popclient import plain_ir

BOB = "bob@acme.example"
MSG = b"Subject: x\r\n\r\nx\r\n"
STAT = b"+OK 1 %d" % len(MSG)


def test_second_login_gets_in_use_until_the_first_quits(server):
    server.drop(BOB, MSG)
    with server.session(BOB) as first, server.connect() as second:
        r = second.login(BOB, "secret")
        assert r.startswith(b"-ERR [IN-USE] "), r
        # The first session is untouched and the refused one may try again.
        assert first.cmd("STAT") == STAT
        assert second.cmd("CAPA").startswith(b"+OK")
        second.multi()
        assert first.cmd("QUIT").startswith(b"+OK")
        first.rest_until_eof()
        assert second.login(BOB, "secret").startswith(b"+OK Logged in, 1 messages")
        assert second.cmd("STAT") == STAT


def test_in_use_is_not_an_authentication_failure(popgate):
    """IN-USE does not count towards max_auth_failures, and it is only said
    after the password was checked."""
    srv = popgate(server={"max_auth_failures": 2})
    with srv.session(BOB), srv.connect() as c:
        for _ in range(4):
            assert c.login(BOB, "secret").startswith(b"-ERR [IN-USE]")
        assert c.login(BOB, "wrong") == b"-ERR [AUTH] Authentication failed."
        assert c.cmd("NOOP").startswith(b"-ERR")  # still open


def test_every_name_of_a_mailbox_shares_its_lock(server):
    with server.session(BOB):
        for login in ("bob", "BOB@ACME.EXAMPLE", "Bob@Acme.Example"):
            with server.connect() as c:
                assert c.login(login, "secret").startswith(b"-ERR [IN-USE]"), login
        with server.connect() as c:
            assert c.cmd("AUTH PLAIN " + plain_ir("bob", "secret")).startswith(b"-ERR [IN-USE]")


def test_lock_is_released_when_the_client_disappears(server):
    first = server.session(BOB)
    first.close()
    deadline = time.monotonic() + 10
    while True:
        with server.connect() as c:
            r = c.login(BOB, "secret")
            if r.startswith(b"+OK"):
                break
            assert r.startswith(b"-ERR [IN-USE]"), r
        assert time.monotonic() < deadline, "lock kept after the client went away"
        time.sleep(0.05)


def test_different_mailboxes_at_once(server):
    logins = ["bob@acme.example", "alice@acme.example", "frank@acme.test", "frank", "bob@globex.example"]
    for i, login in enumerate(logins):
        server.drop(login, b"Subject: %d\r\n\r\n" % i)
    sessions = [server.session(login) for login in logins]
    try:
        for i, c in enumerate(sessions):
            _, body = c.retr(1)
            assert body == b"Subject: %d\r\n\r\n" % i
        for c in sessions:
            assert c.cmd("QUIT").startswith(b"+OK")
    finally:
        for c in sessions:
            c.close()


def test_tenant_session_cap(popgate):
    srv = popgate(tenants={"acme": {"max_sessions": 1}})
    with srv.session("bob@acme.example"):
        with srv.connect() as c:
            r = c.login("alice@acme.example", "wonder land")
            assert r.startswith(b"-ERR [SYS/TEMP]"), r
        with srv.session("bob@globex.example") as g:  # another tenant is not capped
            assert g.cmd("STAT").startswith(b"+OK")
    # The slot is free again once the session has ended.
    deadline = time.monotonic() + 10
    while True:
        with srv.connect() as c:
            r = c.login("alice@acme.example", "wonder land")
            if r.startswith(b"+OK"):
                break
            assert r.startswith(b"-ERR [SYS/TEMP]"), r
        assert time.monotonic() < deadline
        time.sleep(0.05)
