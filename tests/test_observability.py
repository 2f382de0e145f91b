"""What an operator sees: the log lines of a login, a failed login and a TLS
failure, fleet-unique session ids, JSON lines with each field once, the
metrics looked for first (process, readiness, hashing, per tenant), and the
command line's --version, did-you-mean and `user list`/`user delete`.

See docs/logging.md for the fields and metrics these tests pin down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, run_popgate
from popclient import AUTH_FAILED, GLOBEX_USERS, TIMEOUT, b64, plain_ir
from test_metrics import http_get, metrics_server, scrape
from test_postgres import pg_schema, psql, setup_globex_on_postgres, user_cmd  # noqa: F401  (a fixture)
from test_tls import certs, tls_server  # noqa: F401  (a fixture)

BOB = "bob@acme.example"
SESSION_ID = r"[0-9a-f]{8}-[0-9]{6,}"


# --------------------------------------------------------------------------
# helpers


def wait_lines(srv, pred, n: int = 1, timeout: float = TIMEOUT) -> list[str]:
    """At least `n` log lines for which `pred(line)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in srv.log().splitlines() if pred(line)]
        if len(lines) >= n or time.monotonic() > deadline:
            assert len(lines) >= n, f"expected {n} matching lines:\n{srv.log()[-3000:]}"
            return lines
        time.sleep(0.05)


def fields(line: str) -> dict[str, str]:
    """`key=value` and `key="value"` pairs of a text line (span and event)."""
    out = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s{}]+)', line):
        out.setdefault(m.group(1), m.group(2))
    return out


def escaped(name: str) -> str:
    """popgate_server::logsafe::account, as the JSON log has it."""
    out = ""
    for c in name:
        if c == "\\":
            e = "\\\\"
        elif " " <= c <= "~":
            e = c
        elif c in "\n\r\t\0":
            e = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}[c]
        elif ord(c) < 0x80:
            e = f"\\x{ord(c):02x}"
        else:
            e = f"\\u{{{ord(c):x}}}"
        if len(out) + len(e) > 64:
            return out + f"...({len(name)} chars)"
        out += e
    return out


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    assert not dup, f"duplicate keys {dup} in {pairs}"
    return dict(pairs)


def json_lines(srv) -> list[dict]:
    """Every log line, parsed; a line that is no JSON object, or has a key
    twice, fails."""
    out = []
    for line in srv.log().splitlines():
        if not line.strip():
            continue
        obj = json.loads(line, object_pairs_hook=no_duplicates)
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def json_server(popgate, **kw):
    env = {"POPGATE_SERVER__LOG_FORMAT": "json", **kw.pop("env", {})}
    srv = popgate(env=env, start=False, **kw)
    srv.start(wait=False)
    # The fixture waits for the text form of the listening line.
    deadline = time.monotonic() + 30
    while f'"address":"127.0.0.1:{srv.port}"' not in srv.log():
        assert time.monotonic() < deadline and srv.proc.poll() is None, srv.log()
        time.sleep(0.05)
    return srv


# --------------------------------------------------------------------------
# log lines


def test_login_line_names_tenant_user_client_tls_and_mechanism(server):
    with server.connect() as c:
        port = c.sock.getsockname()[1]
        c.login_ok(BOB, "secret")
        c.ok("QUIT")
    with server.connect() as c:
        plain_port = c.sock.getsockname()[1]
        assert c.cmd("AUTH PLAIN " + plain_ir("dave@acme.example", "davepw")).startswith(b"+OK")
        c.ok("QUIT")
    logins = wait_lines(server, lambda line: ": login " in line, 2)
    bob = next(line for line in logins if f"client=127.0.0.1:{port}" in line)
    f = fields(bob)
    assert " INFO " in bob, bob
    assert re.fullmatch(SESSION_ID, f["id"]), bob
    assert f["tenant"] == '"acme"' and f["user"] == f'"{BOB}"', bob
    assert f["mechanism"] == '"user"' and f["tls"] == "false", bob
    assert f["messages"] == "0" and f["octets"] == "0", bob
    dave = next(line for line in logins if f"client=127.0.0.1:{plain_port}" in line)
    assert fields(dave)["mechanism"] == '"plain"' and 'user="dave@acme.example"' in dave, dave
    # The session's end line carries the same span: id, client, tenant, user.
    end = wait_lines(server, lambda line: "session end" in line and f"id={f['id']} " in line)[0]
    assert f"client=127.0.0.1:{port}" in end and f'user="{BOB}"' in end, end
    assert 'outcome="quit"' in end and "tls=false" in end, end
    # ... and names them once: the event does not repeat the span's fields.
    event = end.split("session end", 1)[1]
    for k in ("id=", "client=", "tenant=", "user=", "session="):
        assert k not in event, end


def test_failed_logins_say_auth_failed_with_the_account_never_the_password(server):
    cases = [
        (BOB, "wrong-Pa55word-1"),  # a known user, wrong password
        ("nobody@acme.example", "wrong-Pa55word-2"),  # an unknown user
        ("bob@nowhere.example", "wrong-Pa55word-3"),  # a domain nobody serves
    ]
    for user, password in cases:
        with server.connect() as c:
            assert c.login(user, password) == AUTH_FAILED
    failed = wait_lines(server, lambda line: "auth failed" in line, 3)
    by_user = {fields(line)["user"].strip('"'): line for line in failed}
    assert set(by_user) == {u for u, _ in cases}, failed
    for user, password in cases:
        line = by_user[user]
        assert " INFO " in line and 'mechanism="user"' in line and "tls=false" in line, line
        assert password not in server.log()
    # Unknown user and wrong password read the same; the tenant is named
    # when the domain is served.
    shape = lambda line: sorted(k for k in fields(line) if k not in ("id", "client"))  # noqa: E731
    assert shape(by_user[BOB]) == shape(by_user["nobody@acme.example"]), failed
    assert 'tenant="acme"' in by_user[BOB] and 'tenant="acme"' in by_user["nobody@acme.example"]
    assert 'tenant="-"' in by_user["bob@nowhere.example"]
    # A login is not logged as one, nor a session's user set, for a failure.
    assert not [line for line in server.log().splitlines() if ": login " in line]


def test_a_hostile_account_name_is_escaped_and_bounded(popgate):
    srv = json_server(popgate)
    nasty = "ev\x1b[31mil\r\nINFO forged line " + "\u202e" + "x" * 300
    password = "hunter2-NEVER-LOGGED"
    with srv.connect() as c:
        assert c.cmd("AUTH PLAIN " + b64(f"\0{nasty}\0{password}")) == AUTH_FAILED
    with srv.connect() as c:
        assert c.cmd("AUTH LOGIN " + b64(nasty)) == b"+ UGFzc3dvcmQ6"
        assert c.cmd(b64(password)) == AUTH_FAILED
    deadline = time.monotonic() + TIMEOUT
    while len([o for o in json_lines(srv) if o.get("message") == "auth failed"]) < 2:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    raw = srv.log()
    assert password not in raw
    assert "\x1b" not in raw and "\u202e" not in raw
    assert not any(line.startswith("INFO forged") for line in raw.splitlines())
    failed = [o for o in json_lines(srv) if o.get("message") == "auth failed"]
    assert {o["mechanism"] for o in failed} == {"plain", "login"}, failed
    for o in failed:
        assert o["user"] == escaped(nasty), o
        assert len(o["user"]) <= 64 + len(f"...({len(nasty)} chars)"), o
        assert o["user"].endswith(f"...({len(nasty)} chars)")
        assert "user" not in o["span"], "the span's user is set by a successful login only"


def test_tls_handshake_failures_are_logged_at_info_with_the_reason(popgate, certs):
    implicit = tls_server(popgate, certs, "implicit")
    with socket.create_connection(("127.0.0.1", implicit.port), timeout=TIMEOUT) as s:
        port = s.getsockname()[1]
        s.sendall(b"USER bob\r\n")  # POP3 in clear to a TLS port
        try:
            s.recv(1024)
        except OSError:
            pass
    line = wait_lines(implicit, lambda line: "TLS handshake failed" in line and f"client=127.0.0.1:{port}" in line)[0]
    assert " INFO " in line, line
    assert 'mode="implicit"' in line and 'reason="protocol"' in line, line
    # The fixture's probe connected and closed: no news at info (its
    # failure is counted in the metric, and logged at debug).
    assert len([line for line in implicit.log().splitlines() if "TLS handshake failed" in line]) == 1, implicit.log()

    stls = tls_server(popgate, certs, "starttls")
    with stls.connect() as c:
        port = c.sock.getsockname()[1]
        assert c.cmd("STLS").startswith(b"+OK")
        c.send(b"\x16\x03\x01\x00\x05hello")  # a broken ClientHello
        try:
            c.rest_until_eof()
        except OSError:
            pass
    line = wait_lines(stls, lambda line: "TLS handshake failed" in line)[0]
    assert " INFO " in line and 'mode="starttls"' in line and "reason=" in line, line
    assert f"client=127.0.0.1:{port}" in line and "session{id=" in line, "in the session's span: " + line


def test_session_ids_are_unique_across_restarts(popgate):
    ids = []
    for _ in range(2):
        srv = popgate()
        for _ in range(3):
            with srv.session(BOB) as c:
                c.ok("QUIT")
        ends = wait_lines(srv, lambda line: "session end" in line and f'user="{BOB}"' in line, 3)
        ids.append([fields(line)["id"] for line in ends])
        # The start line ties the prefix to the process (the pod).
        start = wait_lines(srv, lambda line: "popgate starting" in line)[0]
        assert fields(start)["session_prefix"] == ids[-1][0].split("-")[0], start
        assert re.search(r"commit=\S+", start) and "version=" in start, start
        srv.stop()
    first, second = ids
    for run in ids:
        assert all(re.fullmatch(SESSION_ID, i) for i in run), run
        assert len({i.split("-")[0] for i in run}) == 1, f"one prefix per process: {run}"
        seqs = [int(i.split("-")[1]) for i in run]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3, run
    assert first[0].split("-")[0] != second[0].split("-")[0], "a new prefix after a restart"
    assert not set(first) & set(second), ids


def test_json_lines_have_each_field_once(popgate):
    srv = json_server(popgate)
    srv.drop(BOB, b"Subject: x\r\n\r\nhello\r\n")
    with srv.connect() as c:
        assert c.login(BOB, "not-it") == AUTH_FAILED
        c.login_ok(BOB, "secret")
        assert c.retr(1)[0].startswith(b"+OK")
        c.ok("QUIT")
    deadline = time.monotonic() + TIMEOUT
    while not [o for o in json_lines(srv) if o.get("message") == "session end" and "user" in o.get("span", {})]:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    lines = json_lines(srv)  # every line parses, with no key twice
    for o in lines:
        assert "spans" not in o, o
        for k in o.get("span", {}):
            assert k == "name" or k not in o, f"{k} in the event and its span: {o}"
    login = next(o for o in lines if o.get("message") == "login")
    assert login["level"] == "INFO" and login["mechanism"] == "user" and login["tls"] is False
    assert re.fullmatch(SESSION_ID, login["span"]["id"]), login
    assert login["span"]["tenant"] == "acme" and login["span"]["user"] == BOB
    assert login["span"]["client"].startswith("127.0.0.1:")
    end = next(o for o in lines if o.get("message") == "session end" and o["span"].get("user") == BOB)
    assert end["span"]["id"] == login["span"]["id"] and end["outcome"] == "quit" and end["retrieved"] == 1
    failed = next(o for o in lines if o.get("message") == "auth failed")
    assert failed["span"]["id"] == login["span"]["id"] and failed["user"] == BOB


# --------------------------------------------------------------------------
# metrics


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_the_operators_first_metrics_are_there_with_sane_values(popgate):
    srv = metrics_server(popgate)
    s = scrape(srv)
    # The process, as /proc tells it.
    rss_kib = proc_status(srv.pid, "VmRSS")
    assert 0.5 * rss_kib * 1024 < s["process_resident_memory_bytes"] < 2 * rss_kib * 1024, s
    assert s["process_virtual_memory_bytes"] >= s["process_resident_memory_bytes"]
    assert 5 <= s["process_open_fds"] <= len(os.listdir(f"/proc/{srv.pid}/fd")) + 5, s
    soft = next(
        line.split()[3] for line in Path(f"/proc/{srv.pid}/limits").read_text().splitlines() if line.startswith("Max open files")
    )
    assert s["process_max_fds"] == float(soft), s
    assert abs(s["process_start_time_seconds"] - time.time()) < 120, s
    assert s["process_cpu_seconds_total"] >= 0
    # Ready, the hashing pool idle, every per-tenant series at zero.
    assert s["popgate_ready"] == 1
    assert 1 <= s["popgate_password_hashing_slots"] <= 8
    assert s["popgate_password_hashing_slots_busy"] == 0 and s["popgate_password_hashing_waiting"] == 0
    for t in ("acme", "globex"):
        assert s[f'popgate_tenant_sessions_active{{tenant="{t}"}}'] == 0
        for op in ("open", "fetch", "expunge"):
            assert s[f'popgate_tenant_store_errors_total{{op="{op}",tenant="{t}"}}'] == 0
    assert s['popgate_tenant_sessions_active{tenant="-"}'] == 0

    # A session counts under "-" until its login completes, then its tenant's.
    name = srv.drop(BOB, b"Subject: x\r\n\r\nhello\r\n")
    with srv.connect() as c:
        s = scrape(srv)
        assert s['popgate_tenant_sessions_active{tenant="-"}'] == 1 and s["popgate_sessions_active"] == 1
        c.login_ok(BOB, "secret")
        s = scrape(srv)
        assert s['popgate_tenant_sessions_active{tenant="acme"}'] == 1, s
        assert s['popgate_tenant_sessions_active{tenant="-"}'] == 0
        # The message goes away under the session: RETR fails in the store.
        os.unlink(srv.message_path(BOB, name))
        assert c.cmd("RETR 1").startswith(b"-ERR")
        s = scrape(srv)
        assert s['popgate_tenant_store_errors_total{op="fetch",tenant="acme"}'] == 1, s
        assert s['popgate_tenant_store_errors_total{op="fetch",tenant="globex"}'] == 0
        assert sum(v for k, v in s.items() if k.startswith("popgate_store_errors_total{") and 'op="fetch"' in k) == 1
        c.ok("QUIT")
    deadline = time.monotonic() + TIMEOUT
    while scrape(srv)['popgate_tenant_sessions_active{tenant="acme"}'] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_popgate_ready_turns_0_while_draining(popgate):
    srv = metrics_server(popgate, server={"shutdown_grace": "60s"})
    assert scrape(srv)["popgate_ready"] == 1
    with srv.session(BOB):
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while http_get(srv.metrics_port, "/readyz")[0] != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert scrape(srv)["popgate_ready"] == 0


# --------------------------------------------------------------------------
# the command line


def test_version_names_the_commit(popgate_bin):
    r = run_popgate(["--version"])
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().strip()
    m = re.fullmatch(r"popgate \d+\.\d+\.\d+ \(commit ([0-9A-Za-z._-]+)\)", out)
    assert m, out
    if (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{7,40}", m.group(1)), f"built from a checkout: {out}"


def test_did_you_mean_for_a_config_key_and_a_flag(popgate):
    srv = popgate(server={"hostnme": "pop.example"}, start=False)
    r = srv.check_config()
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert 'unknown key "hostnme" (did you mean "hostname"?)' in err, err
    line = next(i for i, text in enumerate(srv.config_text().splitlines(), 1) if text.startswith("hostnme"))
    assert f"(in {srv.config_path}, line {line})" in err, err
    assert "shutdown_grace" not in err, "no list of every key: " + err
    # A mistyped variable is named as a variable.
    r = popgate(start=False).check_config(env={"POPGATE_SERVER__HOSTNMAE": "x"})
    err = r.stderr.decode()
    assert r.returncode == 2 and "(did you mean \"hostname\"?)" in err and "POPGATE_SERVER__HOSTNMAE" in err, err

    r = run_popgate(["check-config", "--confg", str(srv.config_path)])
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "a similar argument exists: '--config'" in err, err
    r = run_popgate(["chek-config"])
    assert r.returncode == 2 and "check-config" in r.stderr.decode(), r.stderr


@pytest.mark.parametrize(
    "args",
    [["serve"], ["check-config"], ["deliver"], ["migrate"], ["user", "add"], ["user", "list"], ["user", "delete"]],
)
def test_every_config_flag_has_its_help(popgate_bin, args):
    r = run_popgate([*args, "--help"])
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "--config <FILE>" in out and "POPGATE_CONFIG" in out, out


def test_user_list_and_delete_on_postgresql(popgate, pg_schema):
    srv = setup_globex_on_postgres(popgate, pg_schema)

    def listing(*extra):
        r = run_popgate(["user", "list", "--config", str(srv.config_path), "--tenant", "globex", *extra], env=srv.env)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()

    out = listing()
    assert out.splitlines() == [f"{login}\tenabled" for login in sorted(GLOBEX_USERS)], out
    for _, password in GLOBEX_USERS.values():
        assert password not in out
    assert user_cmd(srv, "disable", "bob@globex.example").returncode == 0
    r = user_cmd(srv, "add", "slow@globex.example", "slowpw", "--scheme", "PLAIN", "--login-delay", "60")
    assert r.returncode == 0, r.stderr.decode()
    lines = listing().splitlines()
    assert "bob@globex.example\tdisabled" in lines, lines
    assert "slow@globex.example\tenabled\tlogin_delay=60" in lines, lines
    assert "{" not in "".join(lines), "no hash is shown"

    # Delete: the row goes, logins fail, the mail stays in the store.
    user = "eve@globex.example"
    srv.deliver(user, b"Subject: kept\r\n\r\nstill here\r\n")
    r = user_cmd(srv, "delete", user)
    assert r.returncode == 0, r.stderr.decode()
    assert user not in listing()
    with srv.connect() as c:
        assert c.login(user, GLOBEX_USERS[user][1]) == AUTH_FAILED
    kept = psql(
        f"SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.login = '{user}'",
        schema=pg_schema,
    )
    assert kept == "1", kept
    r = user_cmd(srv, "delete", user)
    assert r.returncode != 0 and b"no user" in r.stderr, r.stderr
    # Added again under the same login, the user finds the mail.
    assert user_cmd(srv, "add", user, "back-again", "--scheme", "PLAIN").returncode == 0
    with srv.session(user, "back-again") as c:
        assert c.cmd("STAT").startswith(b"+OK 1 ")

    r = run_popgate(["user", "list", "--config", str(srv.config_path), "--tenant", "initech"], env=srv.env)
    assert r.returncode != 0 and b"acme, globex" in r.stderr, r.stderr
    r = run_popgate(["user", "list", "--config", str(srv.config_path), "--tenant", "acme"], env=srv.env)
    assert r.returncode == 2 and b"tenants[0].auth" in r.stderr, r.stderr
    help_text = run_popgate(["user", "delete", "--help"]).stdout.decode()
    assert "mail stays" in help_text, help_text


def test_shell_completions_and_man_pages(popgate_bin, tmp_path):
    r = run_popgate(["completions", "bash"])
    script = r.stdout.decode()
    assert r.returncode == 0 and "_popgate()" in script and "check-config" in script and "--config" in script
    script_file = tmp_path / "popgate.bash"
    script_file.write_text(script)
    check = subprocess.run(["bash", "-n", str(script_file)], capture_output=True)
    assert check.returncode == 0, check.stderr
    zsh = run_popgate(["completions", "zsh"]).stdout.decode()
    assert zsh.startswith("#compdef popgate"), zsh[:100]
    r = run_popgate(["completions", "tcsh"])
    assert r.returncode == 2 and b"possible values" in r.stderr, r.stderr

    page = run_popgate(["man"]).stdout.decode()
    assert ".TH popgate 1" in page and "popgate\\-user(1)" in page, page[:400]
    r = run_popgate(["man", "--dir", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    delete = (tmp_path / "popgate-user-delete.1").read_text()
    assert ".TH popgate-user-delete 1" in delete and "POPGATE_CONFIG" in delete, delete[:400]
    assert {"popgate.1", "popgate-serve.1", "popgate-check-config.1", "popgate-user-list.1"} <= {
        p.name for p in tmp_path.iterdir()
    }
