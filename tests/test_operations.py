"""End-to-end: what an operator's environment does to popgate, and what
popgate tells an MTA. Environment variables that are not config (Kubernetes
service links, POPGATE_LOG, POPGATE_CONFIG), SIGHUP, `deliver`'s exit
statuses, check-config's warnings, and mailbox identity across logins.
"""

from __future__ import annotations

import signal
import subprocess
import time

from conftest import POPGATE_BIN, clean_env, free_port, run_popgate
from popclient import Pop3
from test_postgres import pg_schema, psql, setup_globex_on_postgres  # noqa: F401  (a fixture)

EX_NOUSER = 67
EX_TEMPFAIL = 75


def test_kubernetes_service_links_and_popgate_log_do_not_stop_the_server(popgate):
    # What Kubernetes injects into every pod for a Service named `popgate`.
    links = {
        "POPGATE_PORT": "tcp://10.96.0.10:110",
        "POPGATE_SERVICE_HOST": "10.96.0.10",
        "POPGATE_SERVICE_PORT": "110",
        "POPGATE_SERVICE_PORT_POP3": "110",
        "POPGATE_PORT_110_TCP": "tcp://10.96.0.10:110",
        "POPGATE_PORT_110_TCP_PROTO": "tcp",
        "POPGATE_PORT_110_TCP_ADDR": "10.96.0.10",
        "POPGATE_LOG": "debug",
    }
    srv = popgate(env=links, start=False)
    r = srv.check_config()
    assert r.returncode == 0, r.stderr.decode()
    srv.start()
    with srv.session("bob@acme.example") as c:
        assert c.cmd("STAT").startswith(b"+OK")
        assert c.ok("QUIT")
    # POPGATE_LOG is honoured: debug lines appear although log_level is info.
    srv.wait_log("DEBUG")


def test_popgate_config_names_the_file(popgate, tmp_path):
    srv = popgate(start=False)
    port = free_port()
    r = subprocess.run(
        [POPGATE_BIN, "check-config"],
        capture_output=True,
        env=clean_env({"POPGATE_CONFIG": str(srv.config_path)}),
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode()
    r = subprocess.run(
        [POPGATE_BIN, "check-config"],
        capture_output=True,
        env=clean_env({"POPGATE_CONFIG": str(tmp_path / "nowhere.toml")}),
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 2 and b"POPGATE_CONFIG" in r.stderr, r.stderr
    # serve takes it too, and an entry of [[listeners]] is changed by index.
    proc = subprocess.Popen(
        [POPGATE_BIN, "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env(
            {"POPGATE_CONFIG": str(srv.config_path), "POPGATE_LISTENERS__0__ADDRESS": f"127.0.0.1:{port}"}
        ),
        cwd=tmp_path,
    )
    try:
        deadline = time.time() + 20
        while True:
            try:
                with Pop3(port) as c:
                    c.login_ok("bob@acme.example", "secret")
                    assert c.ok("QUIT")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.time() < deadline, "popgate did not listen on the port POPGATE_LISTENERS__0__ADDRESS set"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not (tmp_path / "data").exists(), "POPGATE_CONFIG is a config: no embedded-default data folder"


def test_sighup_without_tls_keeps_the_server_and_its_sessions(server):
    c = server.session("bob@acme.example")
    for _ in range(3):
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
    assert server.proc.poll() is None, "SIGHUP ended popgate:\n" + server.log()[-2000:]
    assert c.cmd("STAT").startswith(b"+OK"), "the session in flight is gone"
    assert c.ok("QUIT")
    with server.session("alice@acme.example") as c2:
        assert c2.ok("QUIT")


def deliver(srv, user: str, message: bytes = b"Subject: x\r\n\r\nhi\r\n", config=None):
    return run_popgate(
        ["deliver", "--config", str(config or srv.config_path), "--user", user], input=message, env=srv.env
    )


def test_deliver_refuses_unknown_users_with_ex_nouser_and_makes_no_maildir(server):
    for user in ("nobody-here@acme.example", "bob@no-such-tenant.example", "bad/name@acme.example"):
        r = deliver(server, user)
        assert r.returncode == EX_NOUSER, (user, r.returncode, r.stderr.decode())
        assert b"no such user" in r.stderr, r.stderr
    assert not (server.root / "acme" / "acme.example" / "nobody-here").exists()
    r = deliver(server, "bob@acme.example")
    assert r.returncode == 0, r.stderr.decode()
    # A bare name of the passwd-file is a user of every domain of the tenant.
    assert deliver(server, "frank@acme.test").returncode == 0


def test_deliver_answers_ex_tempfail_when_the_store_is_down_or_the_config_broken(popgate, tmp_path):
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/test"
    srv = popgate(
        tenants={"globex": {"store": {"kind": "postgres", "url": dead, "connect_timeout": "1s"}}}, start=False
    )
    r = deliver(srv, "bob@globex.example")
    assert r.returncode == EX_TEMPFAIL, (r.returncode, r.stderr.decode())
    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\nhostnme = 'x'\n")
    r = deliver(srv, "bob@acme.example", config=broken)
    assert r.returncode == EX_TEMPFAIL, (r.returncode, r.stderr.decode())
    # The directory down is temporary too, never "no such user".
    srv = popgate(tenants={"globex": {"auth": {"kind": "postgres", "url": dead, "connect_timeout": "1s"}}}, start=False)
    r = deliver(srv, "bob@globex.example")
    assert r.returncode == EX_TEMPFAIL, (r.returncode, r.stderr.decode())


def test_check_config_reports_what_serve_warns_about_with_file_and_line(popgate):
    srv = popgate(start=False)
    path = srv.passwd["acme"]
    path.write_text(path.read_text() + "this line has no colon\nzed@acme.example:{NOSUCH}abc\n")
    r = srv.check_config()
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert str(path) in err and "line=" in err and "malformed" in err, err
    assert "zed@acme.example" in err, err


def test_two_listeners_on_one_address_are_refused_by_check_config(popgate):
    srv = popgate(start=False)
    srv.extra_toml = "\n" + "\n".join(
        ["[[listeners]]", f'address = "127.0.0.1:{srv.port}"', "plaintext_auth = true", ""]
    )
    srv.write_config()
    r = srv.check_config()
    assert r.returncode == 2 and b"listeners[1].address" in r.stderr, r.stderr


def test_two_tenants_on_one_template_without_the_domain_are_refused(popgate):
    srv = popgate(start=False)
    shared = f"{srv.root}/shared/%n/Maildir"
    (srv.root / "shared").mkdir()
    srv.tenants[0]["store"] = {"kind": "maildir", "path": shared}
    srv.tenants[1]["store"] = {"kind": "maildir", "path": shared}
    srv.write_config()
    r = srv.check_config()
    assert r.returncode == 2 and b"tenants[1].store" in r.stderr and b"%d" in r.stderr, r.stderr


def test_two_logins_of_one_maildir_share_one_lock(popgate):
    # acme's domains are aliases here: the template has no %d, so
    # frank@acme.example and frank@acme.test are one Maildir.
    srv = popgate(start=False)
    (srv.root / "one").mkdir()
    srv.tenants[0]["store"] = {"kind": "maildir", "path": f"{srv.root}/one/%n/Maildir"}
    srv.write_config()
    srv.start()
    srv.deliver("frank@acme.example", b"Subject: one\r\n\r\nbody\r\n")
    with srv.session("frank@acme.example") as first:
        assert first.cmd("STAT").startswith(b"+OK 1 ")
        with srv.connect() as second:
            assert second.ok("USER frank@acme.test")
            reply = second.cmd("PASS frankpw")
            assert reply.startswith(b"-ERR [IN-USE]"), reply
        assert first.ok("DELE 1")
        assert first.ok("QUIT")
    with srv.session("frank@acme.test") as c:
        assert c.cmd("STAT") == b"+OK 0 0"


def test_login_delay_counts_only_sessions_that_opened(popgate, pg_schema):  # noqa: F811
    srv = setup_globex_on_postgres(popgate, pg_schema, start=False)
    srv.tenants[1]["login_delay"] = 60
    srv.write_config()
    srv.start()
    # The store breaks under the login: it is refused ([SYS/PERM]: a missing
    # table is no outage) ...
    psql("ALTER TABLE messages RENAME TO messages_away", schema=pg_schema)
    with srv.connect() as c:
        assert c.ok("USER bob@globex.example")
        reply = c.cmd("PASS globex-secret")
        assert reply.startswith(b"-ERR [SYS/PERM]"), reply
    psql("ALTER TABLE messages_away RENAME TO messages", schema=pg_schema)
    # ... and that refusal does not count as a session for LOGIN-DELAY.
    with srv.session("bob@globex.example") as c:
        assert c.ok("QUIT")
    # The session that opened does.
    with srv.connect() as c:
        assert c.ok("USER bob@globex.example")
        assert c.cmd("PASS globex-secret").startswith(b"-ERR [LOGIN-DELAY]")


def test_a_failed_postgres_expunge_says_that_nothing_was_deleted(popgate, pg_schema):  # noqa: F811
    srv = setup_globex_on_postgres(popgate, pg_schema)
    srv.deliver("eve@globex.example", b"Subject: keep me\r\n\r\nbody\r\n")
    srv.deliver("eve@globex.example", b"Subject: and me\r\n\r\nbody\r\n")
    with srv.session("eve@globex.example") as c:
        assert c.ok("DELE 1") and c.ok("DELE 2")
        psql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;"
            "CREATE TRIGGER refuse BEFORE DELETE ON messages FOR EACH ROW EXECUTE FUNCTION refuse();",
            schema=pg_schema,
        )
        reply = c.cmd("QUIT")
        assert reply == b"-ERR [SYS/TEMP] No messages were deleted, try again later.", reply
    psql("DROP TRIGGER refuse ON messages", schema=pg_schema)
    with srv.session("eve@globex.example") as c:
        assert c.cmd("STAT").startswith(b"+OK 2 "), "a failed expunge must keep every message"


def test_open_files_limit_is_raised_for_max_connections(popgate):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 3000:
        raise AssertionError(f"this machine's hard RLIMIT_NOFILE ({hard}) is too low for the test")
    srv = popgate(server={"max_connections": 1000}, start=False)
    # Started as PAM or a service manager would: soft limit 1,024.
    srv.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
    limits = open(f"/proc/{srv.proc.pid}/limits").read()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
    assert line.split()[3] == str(1000 + 125 + 256), line
    srv.wait_log("raised the open-files limit")
    # A hard limit below what max_connections needs: raised as far as it
    # goes, and the start says so, naming the key, and still serves.
    low = popgate(server={"max_connections": 5000}, start=False)
    low.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2000)))
    limits = open(f"/proc/{low.proc.pid}/limits").read()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
    assert line.split()[3:5] == ["2000", "2000"], line
    low.wait_log("server.max_connections needs 5881 open files but the hard RLIMIT_NOFILE is 2000")
    with low.connect() as c:
        assert c.ok("QUIT")
