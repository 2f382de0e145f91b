"""Live reconfiguration: SIGHUP, or a changed configuration file, reloads the
whole configuration. New connections get it; sessions in flight keep the one
they started with; a configuration that does not validate is refused, with
the key named, and the running one stays."""

from __future__ import annotations

import signal
import time

from test_metrics import key, metrics_server, scrape

DAVE = "dave@acme.example"
EVE = "eve@globex.example"
ZOE = "zoe@initech.example"


def add_initech(srv) -> None:
    """A third tenant, with its own passwd-file and Maildirs."""
    (srv.root / "initech").mkdir(exist_ok=True)
    passwd = srv.root / "initech.passwd"
    passwd.write_text("zoe@initech.example:{PLAIN}zoepw\n")
    srv.tenants.append({
        "name": "initech",
        "domains": ["initech.example"],
        "auth": {"kind": "passwd-file", "path": str(passwd)},
        "store": {"kind": "maildir", "path": f"{srv.root}/initech/%d/%n/Maildir"},
    })


def login(srv, user: str, password: str) -> bytes:
    with srv.connect() as c:
        r = c.login(user, password)
        c.cmd("QUIT")
        return r


def reloads(srv, result: str) -> float:
    return scrape(srv).get(key("popgate_config_reloads_total", result=result), 0)


def test_sighup_adds_and_removes_tenants_while_sessions_keep_theirs(popgate):
    srv = metrics_server(popgate)
    srv.drop(DAVE, b"Subject: one\r\n\r\nbody\r\n")
    srv.drop(EVE, b"Subject: eve\r\n\r\nbody\r\n")
    assert login(srv, ZOE, "zoepw").startswith(b"-ERR")

    # Sessions opened before the reload: one of a tenant that stays, one of
    # a tenant the reload removes.
    dave = srv.session(DAVE)
    eve = srv.session(EVE)
    before = scrape(srv)

    add_initech(srv)
    srv.tenants = [t for t in srv.tenants if t["name"] != "globex"]
    srv.write_config()
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log("configuration reloaded")
    assert srv.proc.poll() is None

    assert login(srv, ZOE, "zoepw").startswith(b"+OK"), "the added tenant serves"
    assert login(srv, EVE, srv.password(EVE)).startswith(b"-ERR"), "the removed tenant does not"
    assert login(srv, DAVE, srv.password(DAVE)).startswith(b"-ERR [IN-USE]")

    # The sessions in flight go on with what they started with, and commit.
    assert dave.retr(1)[1].startswith(b"Subject: one")
    assert dave.ok("DELE 1")
    assert dave.cmd("QUIT") == b"+OK Logging out, 1 messages deleted."
    assert eve.ok("DELE 1")
    assert eve.cmd("QUIT") == b"+OK Logging out, 1 messages deleted."
    assert srv.files(DAVE) == []

    after = scrape(srv)
    ok = key("popgate_config_reloads_total", result="ok")
    assert after[ok] == before.get(ok, 0) + 1
    assert after["popgate_config_last_reload_success_timestamp_seconds"] >= \
        before["popgate_config_last_reload_success_timestamp_seconds"]
    # The new tenant has its own series from now on.
    assert any('tenant="initech"' in k for k in after), "no series for the added tenant"


def test_a_bad_configuration_is_refused_and_the_running_one_stays(popgate):
    srv = metrics_server(popgate)
    good = srv.config_text()
    srv.config_path.write_text(good + '\n[[tenants]]\nname = "broken"\ndomains = ["broken.example"]\n'
                               'auth = { kind = "passwd-file", path = "/nonexistent/passwd" }\n'
                               'store = { kind = "maildir", path = "/srv/%d/%n" }\n')
    srv.proc.send_signal(signal.SIGHUP)
    log = srv.wait_log("configuration reload refused")
    line = next(l for l in log.splitlines() if "configuration reload refused" in l)
    assert "tenants[2]" in line, line
    assert reloads(srv, "error") == 1
    assert srv.proc.poll() is None
    assert login(srv, DAVE, srv.password(DAVE)).startswith(b"+OK"), "the running configuration serves"

    # Unparsable TOML is refused the same way.
    srv.config_path.write_text("[[tenants]\nname = ")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while reloads(srv, "error") < 2:
        assert time.monotonic() < deadline, srv.log()[-2000:]
        time.sleep(0.1)
    assert login(srv, DAVE, srv.password(DAVE)).startswith(b"+OK")


def test_a_changed_file_is_reloaded_without_a_signal(popgate):
    srv = popgate(server={"config_check_interval": "1s"})
    assert login(srv, ZOE, "zoepw").startswith(b"-ERR")
    add_initech(srv)
    # A listener change needs a restart: said in the log, the rest applies.
    srv.listener["plaintext_auth"] = True
    srv.listener["default_tenant"] = "initech"
    srv.write_config()
    srv.wait_log("configuration reloaded", timeout=15)
    log = srv.log()
    assert "takes effect only after a restart" in log and "listeners" in log, log[-2000:]
    assert login(srv, ZOE, "zoepw").startswith(b"+OK")


def reload_with(srv, **server) -> None:
    srv.server.update(server)
    srv.write_config()
    mark = srv.log().count("configuration reloaded")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while srv.log().count("configuration reloaded") == mark:
        assert srv.proc.poll() is None and time.monotonic() < deadline, srv.log()[-2000:]
        time.sleep(0.02)


def admitted_when_room(srv, timeout: float = 10):
    """A new connection, once the server has counted closed ones out."""
    deadline = time.monotonic() + timeout
    while True:
        c = srv.connect()
        if c.greeting.startswith(b"+OK"):
            return c
        c.close()
        assert time.monotonic() < deadline, c.greeting
        time.sleep(0.05)


def test_sighup_applies_new_connection_caps_and_login_bounds(popgate):
    too_many = b"-ERR [SYS/TEMP] Too many connections, try again later."
    srv = metrics_server(popgate, server={"max_connections_per_ip": 2})
    held = [srv.connect(), srv.connect()]
    assert all(c.greeting.startswith(b"+OK") for c in held)
    with srv.connect() as c:
        assert c.greeting == too_many
    assert scrape(srv)["popgate_connections_per_ip_max"] == 2

    # Raised: one more gets in at once.
    reload_with(srv, max_connections_per_ip=3)
    held.append(srv.connect())
    assert held[-1].greeting.startswith(b"+OK")
    with srv.connect() as c:
        assert c.greeting == too_many
    assert scrape(srv)["popgate_connections_per_ip_max"] == 3
    assert "takes effect only after a restart" not in srv.log()

    # Lowered, with a smaller pre-login budget: the open connections stay,
    # new ones wait until enough have ended.
    reload_with(srv, max_connections_per_ip=1, max_login_commands=2)
    assert held[0].cmd("CAPA").startswith(b"+OK"), "an open connection is not cut"
    held[0].multi()
    with srv.connect() as c:
        assert c.greeting == too_many
    for c in held:
        c.close()
    with admitted_when_room(srv) as c:
        assert c.cmd("CAPA").startswith(b"+OK")
        c.multi()
        assert c.cmd("CAPA").startswith(b"+OK")
        c.multi()
        assert c.cmd("CAPA") == b"-ERR Too many commands before login, closing."
    assert scrape(srv)["popgate_connections_per_ip_max"] == 1
    assert "takes effect only after a restart" not in srv.log()
