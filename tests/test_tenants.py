"""Two tenants in one process: logins map to the right tenant's directory
and mailbox, and nothing a client types reaches another tenant's mail."""

import os

import pytest

from conftest import run_popgate
from popclient import AUTH_FAILED, plain_ir


def retr_all(srv, login, password=None):
    with srv.session(login, password) as c:
        n = int(c.cmd("STAT").split()[1])
        bodies = [c.retr(i)[1] for i in range(1, n + 1)]
        assert c.cmd("QUIT").startswith(b"+OK")
    return bodies


def test_same_local_part_in_two_tenants(server):
    server.deliver("bob@acme.example", b"Subject: for acme bob\n\n")
    server.deliver("bob@globex.example", b"Subject: for globex bob\n\n")
    assert retr_all(server, "bob@acme.example", "secret") == [b"Subject: for acme bob\r\n\r\n"]
    assert retr_all(server, "bob@globex.example", "globex-secret") == [b"Subject: for globex bob\r\n\r\n"]
    assert server.maildir("bob@acme.example") != server.maildir("bob@globex.example")
    assert server.files("bob@acme.example") and server.files("bob@globex.example")


def test_bare_login_is_the_default_tenants_primary_domain(server):
    uidl = server.deliver("bob@acme.example", b"Subject: hi\n\n")
    with server.session("bob", "secret") as c:
        assert c.listing("UIDL") == [b"1 " + uidl.encode()]
        assert c.retr(1)[1] == b"Subject: hi\r\n\r\n"
    # Delivery to a bare name lands in the same place.
    server.deliver("bob", b"Subject: bare\n\n")
    assert len(server.files("bob@acme.example")) == 2


def test_bare_login_follows_the_listeners_default_tenant(popgate):
    srv = popgate(listener={"default_tenant": "globex"})
    srv.deliver("bob@globex.example", b"Subject: g\n\n")
    assert retr_all(srv, "bob", "globex-secret") == [b"Subject: g\r\n\r\n"]
    with srv.connect() as c:
        assert c.login("bob", "secret") == AUTH_FAILED


def test_without_default_tenant_a_bare_login_fails(popgate):
    srv = popgate(listener={"default_tenant": None})
    with srv.connect() as c:
        assert c.login("bob", "secret") == AUTH_FAILED
        assert c.login("bob@acme.example", "secret").startswith(b"+OK")


def test_secondary_domain_maps_to_its_tenant(server):
    server.deliver("frank@acme.test", b"Subject: to acme.test\n\n")
    server.deliver("frank@acme.example", b"Subject: to acme.example\n\n")
    assert retr_all(server, "frank@acme.test", "frankpw") == [b"Subject: to acme.test\r\n\r\n"]
    assert retr_all(server, "FRANK@ACME.EXAMPLE", "frankpw") == [b"Subject: to acme.example\r\n\r\n"]
    assert server.maildir("frank@acme.test").is_dir()
    assert str(server.maildir("frank@acme.test")).startswith(str(server.root / "acme"))
    with server.connect() as c:  # frank is no globex user
        assert c.login("frank@globex.example", "frankpw") == AUTH_FAILED


def test_passwords_do_not_cross_tenants(server):
    for login, password in [
        ("bob@acme.example", "globex-secret"),
        ("bob@globex.example", "secret"),
        ("eve@acme.example", "evepw"),
        ("alice@globex.example", "wonder land"),
    ]:
        with server.connect() as c:
            assert c.login(login, password) == AUTH_FAILED, login


HOSTILE = [
    "../globex.example/bob@acme.example",
    "../../globex/globex.example/bob@acme.example",
    "bob/../x",
    "bob/../x@acme.example",
    "a/b@acme.example",
    "/etc/passwd",
    "bob@acme.example/../../globex/globex.example",
    "bob@../globex.example",
    "bob@globex.example/../acme.example",
    "%d",
    "%n",
    "%u",
    "%d@acme.example",
    "bob%globex.example",
    "..",
    ".",
    "..@acme.example",
    ".bob@acme.example",
    "bob.@acme.example",
    "bob\\..\\x@acme.example",
    "bob\x00@acme.example",
    "bob\x00globex",
    "bob@globex.example\x00@acme.example",
    "bob@globex.example@acme.example",
    "@acme.example",
    "bob@",
    "b\x01ob@acme.example",
    "bøb@acme.example",
]


def tree(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            if name == "popgate.stderr":
                continue
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("mechanism", ["USER/PASS", "AUTH PLAIN"])
def test_hostile_logins_look_like_wrong_passwords(popgate, mechanism):
    srv = popgate(
        server={
            "max_auth_failures": 1000,
            "max_bad_commands": 1000,
            # Many failures in a row: keep the pauses short (they are tested elsewhere).
            "auth_failure_delay": "1ms",
            "auth_penalty": "1ms",
            "auth_penalty_max": "1ms",
        }
    )
    srv.deliver("bob@globex.example", b"Subject: globex secret\n\n")
    srv.deliver("bob@acme.example", b"Subject: acme\n\n")
    before = tree(srv.root)
    with srv.connect() as c:
        normal_user = c.cmd("USER bob@acme.example")
        assert c.cmd("PASS wrong") == AUTH_FAILED
        for login in HOSTILE:
            for password in ("secret", "globex-secret"):
                if mechanism == "USER/PASS":
                    assert c.cmd(b"USER " + login.encode()) == normal_user, login
                    r = c.cmd("PASS " + password)
                elif "\x00" in login:
                    continue  # a NUL cannot be inside a SASL PLAIN authcid
                else:
                    r = c.cmd("AUTH PLAIN " + plain_ir(login, password))
                assert r == AUTH_FAILED, (login, r)
        # Nothing was opened, created, moved or read into another place.
        assert tree(srv.root) == before
        # A proper login on the same connection still works.
        assert c.login("bob@acme.example", "secret").startswith(b"+OK Logged in, 1 messages")
        assert c.retr(1)[1] == b"Subject: acme\r\n\r\n"


def test_hostile_delivery_is_refused(server):
    for login in ("../globex.example/bob@acme.example", "bob/../x", "%d@acme.example", "bob@nowhere.example"):
        r = run_popgate(
            ["deliver", "--config", str(server.config_path), "--user", login], input=b"Subject: x\n\n"
        )
        assert r.returncode != 0, login
    assert not (server.root / "globex" / "globex.example").exists()
    assert not any("%" in p or ".." in p for p in tree(server.root))
