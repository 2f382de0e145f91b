"""Configuration: errors name the key and stop popgate before it listens;
environment variables override the file."""

import socket
import subprocess

import pytest

from conftest import POPGATE_BIN, clean_env, run_popgate
from popclient import Pop3


def test_good_config(popgate):
    srv = popgate(start=False)
    r = srv.check_config()
    assert r.returncode == 0, r.stderr.decode()


# (what to change, text that must be in the error)
BAD = {
    "unknown key": (dict(server={"hostnme": "x"}), "hostnme"),
    "unknown listener key": (dict(listener={"plaintext": True}), "plaintext"),
    "wrong type": (dict(server={"max_auth_failures": "many"}), "server.max_auth_failures"),
    "wrong type in a tenant": (dict(tenants={"acme": {"max_sessions": "ten"}}), "max_sessions"),
    "bad duration": (dict(server={"auth_timeout": "soon"}), "auth_timeout"),
    "bad duration unit": (dict(server={"shutdown_grace": "5 fortnights"}), "shutdown_grace"),
    "idle timeout below RFC minimum": (dict(server={"idle_timeout": "1m"}), "server.idle_timeout"),
    "unknown template variable": (
        dict(tenants={"acme": {"store": {"kind": "maildir", "path": "{root}/acme/%q/%n/Maildir"}}}),
        "tenants[0].store.path",
    ),
    "duplicate domain": (
        dict(tenants={"globex": {"domains": ["globex.example", "ACME.test"]}}),
        "tenants[1].domains",
    ),
    "missing passwd-file": (
        dict(tenants={"globex": {"auth": {"kind": "passwd-file", "path": "{root}/no-such.passwd"}}}),
        "tenants[1].auth.path",
    ),
    "default tenant naming no tenant": (dict(listener={"default_tenant": "initech"}), "listeners[0].default_tenant"),
    "bad listen address": (dict(listener={"address": "127.0.0.1:port"}), "listeners[0].address"),
    "unknown store kind": (dict(tenants={"acme": {"store": {"kind": "mbox", "path": "/x/%n"}}}), "mbox"),
    "bad log level": (dict(server={"log_level": "loud=[["}), "server.log_level"),
    "bad expire": (dict(tenants={"acme": {"expire": "sometimes"}}), "expire"),
    "session cap of zero": (dict(tenants={"acme": {"max_sessions": 0}}), "max_sessions"),
}


def configure(popgate, change):
    srv = popgate(start=False)
    for section, values in change.items():
        if section == "server":
            srv.server.update(values)
        elif section == "listener":
            srv.listener.update(values)
        elif section == "tenants":
            for name, v in values.items():
                t = next(t for t in srv.tenants if t["name"] == name)
                t.update(_fill_root(v, srv.root))
    srv.write_config()
    return srv


def _fill_root(v, root):
    if isinstance(v, str):
        return v.replace("{root}", str(root))
    if isinstance(v, dict):
        return {k: _fill_root(x, root) for k, x in v.items()}
    if isinstance(v, list):
        return [_fill_root(x, root) for x in v]
    return v


@pytest.mark.parametrize("case", list(BAD))
def test_check_config_names_the_key(popgate, case):
    change, key = BAD[case]
    srv = configure(popgate, change)
    r = srv.check_config()
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    assert key in err, err


def test_unreadable_config_file(tmp_path, popgate_bin):
    r = run_popgate(["check-config", "--config", str(tmp_path / "missing.toml")])
    assert r.returncode == 2
    assert "--config" in r.stderr.decode()
    (tmp_path / "broken.toml").write_text("[server\nhostname = \n")
    r = run_popgate(["check-config", "--config", str(tmp_path / "broken.toml")])
    assert r.returncode == 2 and r.stderr


@pytest.mark.parametrize("case", ["wrong type", "duplicate domain", "missing passwd-file", "default tenant naming no tenant"])
def test_serve_with_a_bad_config_never_listens(popgate, case):
    change, key = BAD[case]
    srv = configure(popgate, change)
    r = subprocess.run(
        [POPGATE_BIN, "serve", "--config", str(srv.config_path)],
        capture_output=True,
        env=clean_env(),
        cwd=srv.root,
        timeout=30,
    )
    err = r.stderr.decode()
    assert r.returncode != 0, err
    assert key in err, err
    assert "listening" not in err, err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()


def test_second_listener_bad_means_none_listens(popgate):
    """Validation covers every listener before the first one binds."""
    srv = popgate(start=False)
    srv.extra_toml = '\n[[listeners]]\naddress = "127.0.0.1:70000"\nplaintext_auth = true\n'
    srv.write_config()
    proc = subprocess.Popen(
        [POPGATE_BIN, "serve", "--config", str(srv.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=srv.root,
    )
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    assert b"listeners[1].address" in err, err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()


def test_port_in_use_fails_cleanly(popgate):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        srv = popgate(listener={"address": f"127.0.0.1:{port}"}, start=False)
        r = subprocess.run(
            [POPGATE_BIN, "serve", "--config", str(srv.config_path)], capture_output=True, env=clean_env(), timeout=30
        )
        assert r.returncode != 0
        assert b"listeners[0].address" in r.stderr, r.stderr


def test_environment_overrides_the_file(popgate):
    srv = popgate(env={"POPGATE_SERVER__MAX_BAD_COMMANDS": "2", "POPGATE_SERVER__HOSTNAME": "env.example"})
    with Pop3(srv.port) as c:
        assert c.greeting.endswith(b"@env.example>"), c.greeting
        assert c.cmd("BOGUS").startswith(b"-ERR")
        assert c.cmd("BOGUS").startswith(b"-ERR")
        rest = c.lines_until_eof()  # closed after the second one, not the 20th
        assert len(rest) == 1 and rest[0].startswith(b"-ERR"), rest


def test_environment_errors_name_the_key(popgate):
    srv = popgate(start=False)
    r = srv.check_config(env={"POPGATE_SERVER__AUTH_TIMEOUT": "whenever"})
    assert r.returncode == 2
    assert b"auth_timeout" in r.stderr, r.stderr
    r = srv.check_config(env={"POPGATE_SERVER__MAX_BAD_COMMANDS": "0"})
    assert r.returncode == 2
    assert b"max_bad_commands" in r.stderr, r.stderr
    # A misspelt variable is an error, not silently ignored.
    r = srv.check_config(env={"POPGATE_SERVER__HOSTNMAE": "pop.example"})
    assert r.returncode == 2
    assert b"hostnmae" in r.stderr, r.stderr
    r = srv.check_config(env={"POPGATE_SERVER__HOSTNAME": "two words"})
    assert r.returncode == 2
    assert b"server.hostname" in r.stderr, r.stderr


def test_whole_login_template(popgate):
    """`%u` in a store path: the whole login names the Maildir."""
    srv = popgate(start=False)
    srv.tenants[1]["store"] = {"kind": "maildir", "path": f"{srv.root}/globex/%u/Maildir"}
    srv.write_config()
    srv.start()
    uidl = srv.deliver("bob@globex.example", b"Subject: u\n\n")
    md = srv.root / "globex" / "bob@globex.example" / "Maildir"
    assert [p.name for p in md.glob("*/*") if p.parent.name in ("new", "cur")], list(md.glob("**/*"))
    with srv.session("BOB@globex.example", "globex-secret") as c:
        assert c.listing("UIDL") == [b"1 " + uidl.encode()]
        assert c.retr(1)[1] == b"Subject: u\r\n\r\n"
