"""SASL (RFC 5034) over a raw socket: AUTH PLAIN and AUTH LOGIN."""

from popclient import AUTH_FAILED, b64, plain_ir

USER = "bob@acme.example"


def test_auth_lists_mechanisms(server):
    with server.connect() as c:
        assert c.listing("AUTH") == [b"PLAIN", b"LOGIN"]


def test_auth_plain_with_initial_response(server):
    server.drop(USER, b"Subject: x\r\n\r\n")
    with server.connect() as c:
        r = c.cmd("AUTH PLAIN " + plain_ir(USER, "secret"))
        assert r.startswith(b"+OK Logged in, 1 messages"), r
        assert c.cmd("STAT").startswith(b"+OK 1 ")


def test_auth_plain_with_continuation(server):
    with server.connect() as c:
        assert c.cmd("AUTH PLAIN") == b"+ "
        assert c.cmd(plain_ir(USER, "secret")).startswith(b"+OK Logged in")


def test_auth_plain_cancel_and_go_on(server):
    with server.connect() as c:
        assert c.cmd("AUTH PLAIN") == b"+ "
        r = c.cmd("*")
        assert r.startswith(b"-ERR"), r
        # Back in AUTHORIZATION: the next line is a command again.
        assert c.cmd("CAPA").startswith(b"+OK")
        c.multi()
        c.login_ok(USER, "secret")


def test_auth_plain_hashed_passwords_and_authzid(server):
    with server.connect() as c:
        assert c.cmd("AUTH PLAIN " + plain_ir("alice@acme.example", "wonder land")).startswith(b"+OK")
    with server.connect() as c:
        assert c.cmd("AUTH PLAIN " + plain_ir("carol@acme.example", "c4rol:pass!", authzid="carol@acme.example")).startswith(b"+OK")
    with server.connect() as c:
        # Acting as someone else is not offered: same answer as a wrong password.
        assert c.cmd("AUTH PLAIN " + plain_ir(USER, "secret", authzid="alice@acme.example")) == AUTH_FAILED


def test_auth_plain_wrong_password_is_the_usual_failure(popgate):
    server = popgate(server={"max_auth_failures": 10})
    with server.connect() as c:
        assert c.cmd("AUTH PLAIN " + plain_ir(USER, "wrong")) == AUTH_FAILED
        assert c.cmd("AUTH PLAIN " + plain_ir("nobody@acme.example", "secret")) == AUTH_FAILED
        assert c.cmd("AUTH PLAIN") == b"+ "
        assert c.cmd(plain_ir(USER, "wrong")) == AUTH_FAILED
        c.login_ok(USER, "secret")


def test_auth_login(server):
    with server.connect() as c:
        assert c.cmd("AUTH LOGIN") == b"+ " + b64("Username:").encode()
        assert c.cmd(b64(USER)) == b"+ " + b64("Password:").encode()
        assert c.cmd(b64("secret")).startswith(b"+OK Logged in")
    with server.connect() as c:
        assert c.cmd("AUTH LOGIN " + b64("alice@acme.example")) == b"+ " + b64("Password:").encode()
        assert c.cmd(b64("wonder land")).startswith(b"+OK Logged in")
    with server.connect() as c:
        c.cmd("AUTH LOGIN")
        c.cmd(b64(USER))
        assert c.cmd(b64("wrong")) == AUTH_FAILED
        c.cmd("AUTH LOGIN")
        assert c.cmd("*").startswith(b"-ERR")
        c.login_ok(USER, "secret")


def test_bad_sasl_input(server):
    with server.connect() as c:
        assert c.cmd("AUTH CRAM-MD5").startswith(b"-ERR")
        assert c.cmd("AUTH PLAIN !!!not-base64!!!").startswith(b"-ERR")
        assert c.cmd("AUTH PLAIN") == b"+ "
        assert c.cmd("%%%").startswith(b"-ERR")
        assert c.cmd("AUTH PLAIN " + b64("no nul bytes at all")).startswith(b"-ERR")
        assert c.cmd("auth plain " + plain_ir(USER, "secret")).startswith(b"+OK Logged in")
