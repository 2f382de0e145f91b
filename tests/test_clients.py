"""Real clients: Python's poplib and curl's POP3 support."""

import poplib
import subprocess

import pytest

from popclient import TIMEOUT, crlf, wire_body

USER = "bob@acme.example"
MSG1 = b"From: a@example.org\r\nSubject: first\r\n\r\nline\r\n.dotted\r\n.\r\nend\r\n"
MSG2 = b"From: b@example.org\nSubject: second, LF only\n\n..two dots\nbody\n"
CURL = "/usr/bin/curl"


@pytest.fixture
def mailbox(server):
    """bob with two delivered messages: [(uidl, stored bytes)]."""
    out = []
    for m in (MSG1, MSG2):
        uidl, path = server.deliver_file(USER, m)
        out.append((uidl, path.read_bytes()))
    return server, out


def lines_to_bytes(lines):
    return b"".join(line + b"\r\n" for line in lines)


def test_poplib_session(mailbox):
    srv, msgs = mailbox
    p = poplib.POP3("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        assert p.getwelcome().startswith(b"+OK")
        caps = p.capa()
        assert {"TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES"} <= set(caps), caps
        assert caps["SASL"] == ["PLAIN", "LOGIN"]
        p.user(USER)
        assert p.pass_("secret").startswith(b"+OK")
        sizes = [len(crlf(stored)) for _, stored in msgs]
        assert p.stat() == (2, sum(sizes))
        resp, listing, _ = p.list()
        assert listing == [b"1 %d" % sizes[0], b"2 %d" % sizes[1]]
        assert p.list(2) == b"+OK 2 %d" % sizes[1]
        resp, uidls, _ = p.uidl()
        assert uidls == [b"%d %s" % (i + 1, u.encode()) for i, (u, _) in enumerate(msgs)]
        assert p.uidl(1) == b"+OK 1 " + msgs[0][0].encode()
        resp, lines, _ = p.top(1, 0)
        assert lines == [b"From: a@example.org", b"Subject: first", b""]
        for n, (_, stored) in enumerate(msgs, 1):
            resp, lines, octets = p.retr(n)
            assert lines_to_bytes(lines) == wire_body(stored)
        assert p.dele(1).startswith(b"+OK")
        with pytest.raises(poplib.error_proto):
            p.retr(1)
        assert p.quit().startswith(b"+OK")
    finally:
        p.close()
    assert len(srv.files(USER)) == 1
    p = poplib.POP3("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        p.user(USER)
        p.pass_("secret")
        assert p.uidl()[1] == [b"1 " + msgs[1][0].encode()]
        p.quit()
    finally:
        p.close()


def test_poplib_wrong_password(server):
    p = poplib.POP3("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        p.user(USER)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p.pass_("nope")
    finally:
        p.close()


@pytest.mark.parametrize("user", ["alice@acme.example", "carol@acme.example", "bob@globex.example"])
def test_poplib_hashed_and_other_tenant(mailbox, user):
    srv, _ = mailbox
    srv.deliver(user, MSG2)
    p = poplib.POP3("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        p.user(user)
        p.pass_(srv.password(user))
        assert lines_to_bytes(p.retr(1)[1]) == crlf(MSG2)
        p.quit()
    finally:
        p.close()


def test_poplib_apop(mailbox):
    """APOP works for accounts with PLAIN passwords (the greeting has a timestamp)."""
    srv, msgs = mailbox
    p = poplib.POP3("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        assert p.apop(USER, "secret").startswith(b"+OK")
        assert p.stat()[0] == 2
        p.quit()
    finally:
        p.close()
    p = poplib.POP3("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p.apop(USER, "wrong")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p.apop("alice@acme.example", "wonder land")  # a hashed password cannot do APOP
    finally:
        p.close()


# -- curl ------------------------------------------------------------------


def curl(srv, path="/", *args, user=USER, password="secret", check=True):
    cmd = [CURL, "-sS", "--max-time", "30", "--user", f"{user}:{password}", *args, f"pop3://127.0.0.1:{srv.port}{path}"]
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    if check:
        assert r.returncode == 0, (cmd, r.returncode, r.stderr.decode())
    return r


def test_curl_list_retrieve_uidl(mailbox):
    srv, msgs = mailbox
    r = curl(srv, "/")
    assert r.stdout == b"".join(b"%d %d\r\n" % (i + 1, len(crlf(s))) for i, (_, s) in enumerate(msgs))
    for n, (_, stored) in enumerate(msgs, 1):
        assert curl(srv, f"/{n}").stdout == wire_body(stored)
    r = curl(srv, "/", "-X", "UIDL")
    assert r.stdout == b"".join(b"%d %s\r\n" % (i + 1, u.encode()) for i, (u, _) in enumerate(msgs))
    assert len(srv.files(USER)) == 2  # reading deletes nothing


@pytest.mark.parametrize("options", [[], ["--login-options", "AUTH=PLAIN"], ["--login-options", "AUTH=LOGIN"],
                                     ["--login-options", "AUTH=PLAIN", "--sasl-ir"],
                                     ["--login-options", "AUTH=+APOP"]])
def test_curl_login_mechanisms(mailbox, options):
    srv, msgs = mailbox
    r = curl(srv, "/2", "-v", *options)
    assert r.stdout == wire_body(msgs[1][1])
    trace = r.stderr.decode(errors="replace")
    if "AUTH=PLAIN" in options:
        assert "> AUTH PLAIN" in trace, trace
    elif "AUTH=LOGIN" in options:
        assert "> AUTH LOGIN" in trace, trace
    elif "AUTH=+APOP" in options:
        assert "> APOP " in trace, trace
    else:
        assert "> AUTH " in trace, trace  # SASL is offered, so curl uses it


@pytest.mark.parametrize("options", [[], ["--login-options", "AUTH=LOGIN"]])
def test_curl_wrong_password(mailbox, options):
    srv, _ = mailbox
    r = curl(srv, "/", *options, password="wrong", check=False)
    assert r.returncode == 67, (r.returncode, r.stderr)  # CURLE_LOGIN_DENIED


def test_curl_hashed_password_user(mailbox):
    srv, _ = mailbox
    srv.deliver("alice@acme.example", MSG1)
    r = curl(srv, "/1", user="alice@acme.example", password="wonder land")
    assert r.stdout == MSG1


def test_curl_dele(mailbox):
    srv, msgs = mailbox
    curl(srv, "/1", "-X", "DELE", "-I")
    r = curl(srv, "/", "-X", "UIDL")
    assert r.stdout == b"1 %s\r\n" % msgs[1][0].encode()
