"""The POP3 conversation over a raw socket, byte for byte (RFC 1939, RFC 2449)."""

import re

import pytest

from popclient import AUTH_FAILED, crlf, status_size, top_body, wire_body

# A CRLF message with lines that need dot-stuffing, and an LF-only one.
MSG_CRLF = (
    b"From: alice@example.org\r\nTo: bob@acme.example\r\nSubject: one\r\n\r\n"
    b"Hello Bob.\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n"
)
MSG_LF = b"From: carol@example.org\nSubject: two\n\nline 1\nline 2\nline 3\n.\nend\n"
MSG_NO_EOL = b"Subject: three\r\n\r\nno newline at the end"


@pytest.fixture
def mailbox(server):
    """bob@acme.example with three messages dropped into new/, in this order."""
    names = [server.drop("bob@acme.example", m) for m in (MSG_CRLF, MSG_LF, MSG_NO_EOL)]
    return server, names


def test_greeting_and_capa(server):
    with server.connect() as c:
        # PLAIN passwords exist, so APOP is possible: the greeting carries an
        # RFC 1939 timestamp with the configured host name.
        assert re.fullmatch(rb"\+OK .*<[^<>@\s]+@pop\.test>", c.greeting), c.greeting
        lines = c.listing("CAPA")
        for cap in (b"TOP", b"UIDL", b"USER", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"SASL PLAIN LOGIN"):
            assert cap in lines, (cap, lines)
        assert any(re.fullmatch(rb"IMPLEMENTATION popgate \S+", x) for x in lines), lines
        assert len(lines) == len(set(lines)), lines
        c.login_ok("bob@acme.example", "secret")
        after = c.listing("CAPA")
        for cap in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING"):
            assert cap in after, (cap, after)
        assert c.cmd("QUIT").startswith(b"+OK")


def test_capa_advertises_tenant_policies(popgate):
    srv = popgate(tenants={"acme": {"login_delay": 60, "expire": 30}, "globex": {"expire": "never"}})
    with srv.connect() as c:
        lines = c.listing("CAPA")
        assert b"LOGIN-DELAY 60" in lines and b"EXPIRE 30" in lines, lines
        c.login_ok("bob@acme.example", "secret")
        lines = c.listing("CAPA")
        assert b"LOGIN-DELAY 60" in lines and b"EXPIRE 30" in lines, lines
        c.ok("QUIT")
    with srv.connect() as c:
        c.login_ok("bob@globex.example", "globex-secret")
        lines = c.listing("CAPA")
        assert b"EXPIRE NEVER" in lines and not any(x.startswith(b"LOGIN-DELAY") for x in lines), lines
        c.ok("QUIT")
    # LOGIN-DELAY is enforced: a second login within 60 s is refused.
    with srv.connect() as c:
        r = c.login("bob@acme.example", "secret")
        assert r.startswith(b"-ERR [LOGIN-DELAY]"), r
        assert c.cmd("CAPA").startswith(b"+OK")


def test_user_pass_right_wrong_and_unknown(server):
    with server.connect() as c:
        assert c.cmd("USER bob@acme.example").startswith(b"+OK")
        wrong = c.cmd("PASS not-the-password")
        assert wrong == AUTH_FAILED
        assert c.cmd("USER nobody@acme.example").startswith(b"+OK")
        assert c.cmd("PASS secret") == wrong  # unknown user: the very same answer
        assert c.cmd("USER bob@nowhere.example").startswith(b"+OK")
        assert c.cmd("PASS secret") == wrong  # unknown domain too
    with server.connect() as c:
        assert c.login("bob@acme.example", "secret") == b"+OK Logged in, 0 messages (0 octets)."
        assert c.cmd("QUIT") == b"+OK Logging out."
        assert c.rest_until_eof() == b""


@pytest.mark.parametrize("user", ["alice@acme.example", "carol@acme.example"])
def test_hashed_passwords(server, user):
    """ARGON2ID and SHA512-CRYPT hashes made by `popgate pw` (with ' ' and ':' in the password)."""
    with server.connect() as c:
        assert c.login(user, server.password(user) + "x") == AUTH_FAILED
        assert c.login(user, server.password(user)).startswith(b"+OK Logged in")


def test_stat_list_uidl(mailbox):
    srv, _ = mailbox
    sizes = [len(crlf(m)) for m in (MSG_CRLF, MSG_LF, MSG_NO_EOL)]
    with srv.session("bob@acme.example") as c:
        assert c.cmd("STAT") == b"+OK 3 %d" % sum(sizes)
        assert c.listing("LIST") == [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)]
        for i, s in enumerate(sizes):
            assert c.cmd(f"LIST {i + 1}") == b"+OK %d %d" % (i + 1, s)
        uidls = c.listing("UIDL")
        assert [u.split(b" ")[0] for u in uidls] == [b"1", b"2", b"3"]
        ids = [u.split(b" ", 1)[1] for u in uidls]
        assert len(set(ids)) == 3
        for uid in ids:
            assert 1 <= len(uid) <= 70 and all(0x21 <= b <= 0x7E for b in uid), uid
        for i, uid in enumerate(ids):
            assert c.cmd(f"UIDL {i + 1}") == b"+OK %d %s" % (i + 1, uid)
        assert c.cmd("LIST 4").startswith(b"-ERR")
        assert c.cmd("UIDL 4").startswith(b"-ERR")
        c.ok("QUIT")
    # UIDLs are stable across sessions.
    with srv.session("bob@acme.example") as c:
        assert [u.split(b" ", 1)[1] for u in c.listing("UIDL")] == ids


def test_retr_is_byte_exact_and_stuffed(mailbox):
    srv, names = mailbox
    with srv.session("bob@acme.example") as c:
        for n, name in enumerate(names, 1):
            stored = srv.message_path("bob@acme.example", name).read_bytes()
            status = c.cmd(f"RETR {n}")
            assert status_size(status) == len(crlf(stored))
            raw = c.multi()
            body = b"".join((x[1:] if x.startswith(b".") else x) + b"\r\n" for x in raw)
            assert body == wire_body(stored)
            # On the wire every line starting with '.' is stuffed.
            for sent, plain in zip(raw, body.split(b"\r\n")):
                if plain.startswith(b"."):
                    assert sent == b"." + plain
        # Message 1's dot lines, exactly.
        c.send("RETR 1\r\n")
        c.line()
        assert c.multi()[4:8] == [b"Hello Bob.", b"..leading dot", b"...two dots", b".."]


def test_list_size_equals_octets_sent(mailbox):
    """LIST counts what RETR sends before stuffing, for CRLF and LF-only mail."""
    srv, _ = mailbox
    with srv.session("bob@acme.example") as c:
        listed = {int(a): int(b) for a, b in (x.split() for x in c.listing("LIST"))}
        for n in (1, 2):  # both end in a newline: every body octet counts
            _, body = c.retr(n)
            assert len(body) == listed[n]
        assert listed[2] == len(MSG_LF) + MSG_LF.count(b"\n")
        # Without a final newline, RETR adds a CRLF that belongs to the terminator.
        _, body = c.retr(3)
        assert len(body) == listed[3] + 2 and body == MSG_NO_EOL + b"\r\n"


def test_top(mailbox):
    srv, names = mailbox
    with srv.session("bob@acme.example") as c:
        for n, name in enumerate(names, 1):
            stored = srv.message_path("bob@acme.example", name).read_bytes()
            for k in (0, 2, 100):
                assert c.cmd(f"TOP {n} {k}").startswith(b"+OK")
                assert c.body() == top_body(stored, k), (n, k)
        assert c.cmd("TOP 1 0").startswith(b"+OK")
        assert c.multi() == [b"From: alice@example.org", b"To: bob@acme.example", b"Subject: one", b""]
        assert c.cmd("TOP 1 2").startswith(b"+OK")
        assert c.multi()[-2:] == [b"Hello Bob.", b"..leading dot"]
        assert c.cmd("TOP 9 0").startswith(b"-ERR")


def test_dele_rset_noop(mailbox):
    srv, _ = mailbox
    s1, s2, s3 = (len(crlf(m)) for m in (MSG_CRLF, MSG_LF, MSG_NO_EOL))
    with srv.session("bob@acme.example") as c:
        uidls = c.listing("UIDL")
        assert c.cmd("DELE 2").startswith(b"+OK")
        assert c.cmd("STAT") == b"+OK 2 %d" % (s1 + s3)
        assert c.listing("LIST") == [b"1 %d" % s1, b"3 %d" % s3]
        assert c.listing("UIDL") == [uidls[0], uidls[2]]
        for cmd in ("LIST 2", "UIDL 2", "RETR 2", "TOP 2 0", "DELE 2"):
            assert c.cmd(cmd).startswith(b"-ERR"), cmd
        assert c.cmd("NOOP") == b"+OK"
        assert c.cmd("RSET").startswith(b"+OK")
        assert c.cmd("STAT") == b"+OK 3 %d" % (s1 + s2 + s3)
        assert c.listing("UIDL") == uidls
        status, body = c.retr(2)
        assert body == crlf(MSG_LF)
        assert c.cmd("QUIT") == b"+OK Logging out."
    assert len(srv.files("bob@acme.example")) == 3


def test_commands_in_the_wrong_state(mailbox):
    srv, _ = mailbox
    with srv.connect() as c:
        for cmd in ("RETR 1", "STAT", "LIST", "UIDL", "DELE 1", "RSET", "TOP 1 0", "NOOP"):
            assert c.cmd(cmd).startswith(b"-ERR"), cmd
        assert c.cmd("PASS secret").startswith(b"-ERR")  # PASS without USER
        c.login_ok("bob@acme.example", "secret")
        for cmd in ("USER bob@acme.example", "PASS secret", "AUTH PLAIN", "APOP bob 0123456789abcdef0123456789abcdef"):
            assert c.cmd(cmd).startswith(b"-ERR"), cmd
        assert c.cmd("STAT").startswith(b"+OK 3 ")


MALFORMED = [
    b"RETR 0",
    b"RETR -1",
    b"RETR abc",
    b"RETR 99999999999",
    b"RETR 4294967296",
    b"RETR 4294967295",
    b"RETR 4",
    b"RETR 1 2",
    b"RETR",
    b"LIST x",
    b"LIST 1 2",
    b"UIDL 0",
    b"DELE",
    b"DELE 1x",
    b"TOP 1",
    b"TOP 1 -1",
    b"TOP x 1",
    b"STAT 1",
    b"XYZZY",
    b"RETRIEVE 1",
    b"",
    b"   ",
    b"RETR \xff",
    b"\x00\xff\xfe\x80\x01garbage\x7f",
]


def test_malformed_commands_get_err_and_the_session_goes_on(popgate):
    srv = popgate(server={"max_bad_commands": 100})
    srv.drop("bob@acme.example", MSG_CRLF)
    with srv.session("bob@acme.example") as c:
        for line in MALFORMED:
            r = c.cmd(line)
            assert r.startswith(b"-ERR"), (line, r)
            assert c.cmd("NOOP") == b"+OK", line
        assert c.cmd("STAT") == b"+OK 1 %d" % len(MSG_CRLF)
        c.ok("QUIT")
    assert len(srv.files("bob@acme.example")) == 1


def test_overlong_line(server):
    with server.connect() as c:
        c.send(b"A" * 100_000 + b"\r\nNOOP\r\nCAPA\r\n")
        assert c.line().startswith(b"-ERR")
        assert c.line().startswith(b"-ERR")  # NOOP before login
        assert c.line().startswith(b"+OK")  # CAPA: the session goes on
        assert b"TOP" in c.multi()
        # An overlong line cannot smuggle a command in its tail.
        c.send(b"USER " + b"x" * 5000 + b"\r\nUSER bob@acme.example\r\nPASS secret\r\n")
        assert c.line().startswith(b"-ERR")
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK Logged in")


def test_binary_garbage(server):
    with server.connect() as c:
        c.send(bytes(range(256)) + b"\r\n")  # contains an LF: two bad lines
        assert c.line().startswith(b"-ERR")
        assert c.line().startswith(b"-ERR")
        c.login_ok("bob@acme.example", "secret")


def test_too_many_bad_commands_closes(popgate):
    srv = popgate(server={"max_bad_commands": 3})
    with srv.connect() as c:
        assert c.cmd("BOGUS").startswith(b"-ERR")
        assert c.cmd("RETR 1").startswith(b"-ERR")
        assert c.cmd("LIST x").startswith(b"-ERR")
        rest = c.lines_until_eof()
        assert len(rest) == 1 and rest[0].startswith(b"-ERR"), rest
    # Counted per connection.
    with srv.connect() as c:
        assert c.cmd("BOGUS").startswith(b"-ERR")
        c.login_ok("bob@acme.example", "secret")


def test_too_many_failed_logins_closes(popgate):
    srv = popgate(server={"max_auth_failures": 2})
    with srv.connect() as c:
        assert c.login("bob@acme.example", "wrong") == AUTH_FAILED
        assert c.login("bob@acme.example", "wrong again") == AUTH_FAILED
        rest = c.lines_until_eof()
        assert len(rest) == 1 and rest[0].startswith(b"-ERR"), rest
    with srv.connect() as c:
        c.login_ok("bob@acme.example", "secret")


def test_auth_timeout_closes_an_idle_connection(popgate):
    srv = popgate(server={"auth_timeout": "1s"})
    with srv.connect() as c:
        rest = c.lines_until_eof()  # nothing sent: the server gives up
        assert len(rest) == 1 and rest[0].startswith(b"-ERR"), rest


def test_quit_before_login(server):
    with server.connect() as c:
        assert c.cmd("quit").startswith(b"+OK")  # keywords are case-insensitive
        assert c.rest_until_eof() == b""
