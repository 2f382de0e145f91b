"""The Prometheus exporter end to end: real sessions move the counters by
exactly what happened, promtool accepts the exposition, a real Prometheus
server scrapes popgate on loopback, and /readyz follows the server's life."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse

import pytest

from conftest import free_port, run_popgate
from popclient import Pop3
from test_redis_locks import locks_toml, private_redis  # noqa: F401  (a fixture)

BOB = "bob@acme.example"
DAVE = "dave@acme.example"
SMALL = b"Subject: small\r\n\r\nhello\r\n"
# Larger than the server's 64 KiB flush threshold: RETR flushes mid-command.
BIG = b"Subject: big\r\n\r\n" + b"".join(b"line %06d of a big message\r\n" % i for i in range(8000))

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# --------------------------------------------------------------------------
# helpers


def metrics_server(popgate, token: str | None = None, **kw):
    """A popgate with `[metrics] address` on a free port; `.metrics_port` is set."""
    port = free_port()
    toml = f'\n[metrics]\naddress = "127.0.0.1:{port}"\n'
    if token is not None:
        toml += f'bearer_token = "{token}"\n'
    srv = popgate(extra_toml=toml, **kw)
    srv.metrics_port = port
    srv.metrics_headers = {"Authorization": f"Bearer {token}"} if token else {}
    return srv


def http_get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def scrape_text(srv, headers: dict | None = None) -> str:
    status, head, body = http_get(srv.metrics_port, "/metrics", srv.metrics_headers if headers is None else headers)
    assert status == 200, (status, body)
    assert head["content-type"] == "text/plain; version=0.0.4", head
    return body


def parse(text: str) -> dict[str, float]:
    """`name{label="v",...}` (labels sorted) -> value."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = sorted(_LABEL.findall(labels))
        key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}" if pairs else "")
        out[key] = float(value)
    return out


def scrape(srv) -> dict[str, float]:
    return parse(scrape_text(srv))


def key(name: str, **labels) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def deltas(before: dict, after: dict, prefix: str) -> dict[str, float]:
    """The series of one family that moved, and by how much."""
    out = {}
    for k, v in after.items():
        if k.split("{")[0] == prefix:
            d = v - before.get(k, 0.0)
            if d:
                out[k] = d
    return out


def ended(s: dict) -> float:
    return sum(v for k, v in s.items() if k.startswith("popgate_sessions_total{"))


def quiesce(srv, more: float | None = None, since: dict | None = None, deadline: float = 15.0) -> dict[str, float]:
    """Scrapes until no session is open and every accepted connection's
    session has ended (and, with `more`, that many more sessions ended than
    in `since`): the server records a session after its client saw it close."""
    end = time.monotonic() + deadline
    while True:
        s = scrape(srv)
        done = s["popgate_sessions_active"] == 0 and ended(s) == s["popgate_connections_accepted_total"]
        if more is not None:
            done = done and ended(s) - ended(since) == more
        if done:
            return s
        assert time.monotonic() < end, f"sessions did not settle: {s}"
        time.sleep(0.05)


class _CountingSocket:
    """Counts the bytes the server sent on a client socket."""

    def __init__(self, sock):
        self.sock = sock
        self.received = 0

    def recv(self, n):
        data = self.sock.recv(n)
        self.received += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.sock, name)


def counting_client(srv) -> Pop3:
    c = Pop3(srv.port, greeting=False)
    c.sock = _CountingSocket(c.sock)
    c.greeting = c.line()
    return c


def quit_and_drain(c: Pop3) -> int:
    """QUIT, read to EOF, close; the bytes the server sent on this connection."""
    assert c.cmd("QUIT").startswith(b"+OK")
    c.rest_until_eof()
    c.close()
    return c.sock.received


def promtool_check(text: str) -> str:
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    report = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, report
    return report


# --------------------------------------------------------------------------
# tests


def test_sessions_move_the_counters_by_exactly_what_happened(popgate):
    srv = metrics_server(popgate)
    srv.drop(BOB, SMALL)
    srv.drop(BOB, BIG)
    srv.drop(DAVE, SMALL)
    before = quiesce(srv)
    assert [v for k, v in before.items() if k.startswith('popgate_build_info{version="')] == [1]
    assert before["popgate_sessions_active"] == 0
    acme_bytes = 0

    # A: a good login.
    a = counting_client(srv)
    a.login_ok(BOB, "secret")
    assert a.cmd("STAT").startswith(b"+OK 2 ")
    acme_bytes += quit_and_drain(a)

    # B: a wrong password, then a domain no tenant serves; never logged in.
    b = counting_client(srv)
    assert b.login(BOB, "wrong").startswith(b"-ERR [AUTH]")
    assert b.login("mallory@nowhere-tenant.example", "x").startswith(b"-ERR [AUTH]")
    no_tenant_bytes = quit_and_drain(b)

    # C: RETR of a small and a big message, no deletion.
    c = counting_client(srv)
    c.login_ok(BOB, "secret")
    assert c.retr(1)[1] == SMALL
    assert c.retr(2)[1] == BIG
    acme_bytes += quit_and_drain(c)

    # D: DELE and a committed QUIT.
    d = counting_client(srv)
    d.login_ok(DAVE, "davepw")
    assert d.cmd("DELE 1").startswith(b"+OK")
    acme_bytes += quit_and_drain(d)
    assert srv.files(DAVE) == []

    # E: [IN-USE] while another session holds the mailbox.
    e1 = counting_client(srv)
    e1.login_ok(BOB, "secret")
    e2 = counting_client(srv)
    assert e2.login(BOB, "secret").startswith(b"-ERR [IN-USE]")
    acme_bytes += quit_and_drain(e2)
    acme_bytes += quit_and_drain(e1)

    after = quiesce(srv, more=6, since=before)

    assert deltas(before, after, "popgate_connections_accepted_total") == {"popgate_connections_accepted_total": 6}
    assert deltas(before, after, "popgate_sessions_total") == {key("popgate_sessions_total", outcome="quit"): 6}
    assert deltas(before, after, "popgate_session_duration_seconds_count") == {
        key("popgate_session_duration_seconds_count", outcome="quit"): 6
    }
    assert after["popgate_sessions_active"] == 0

    def cmd(command, result):
        return key("popgate_commands_total", command=command, result=result)

    assert deltas(before, after, "popgate_commands_total") == {
        cmd("USER", "ok"): 7,
        cmd("PASS", "ok"): 4,
        cmd("PASS", "err"): 3,
        cmd("STAT", "ok"): 1,
        cmd("RETR", "ok"): 2,
        cmd("DELE", "ok"): 1,
        cmd("QUIT", "ok"): 6,
    }

    def login(tenant, result):
        return key("popgate_logins_total", tenant=tenant, mechanism="user", result=result)

    assert deltas(before, after, "popgate_logins_total") == {
        login("acme", "ok"): 4,
        login("acme", "failed"): 1,
        login("-", "failed"): 1,
        login("acme", "in_use"): 1,
    }
    assert deltas(before, after, "popgate_lock_acquisitions_total") == {
        key("popgate_lock_acquisitions_total", tenant="acme", result="ok"): 4,
        key("popgate_lock_acquisitions_total", tenant="acme", result="in_use"): 1,
    }
    assert deltas(before, after, "popgate_locks_lost_total") == {}
    assert deltas(before, after, "popgate_messages_retrieved_total") == {
        key("popgate_messages_retrieved_total", tenant="acme"): 2
    }
    assert deltas(before, after, "popgate_messages_deleted_total") == {
        key("popgate_messages_deleted_total", tenant="acme"): 1
    }
    assert deltas(before, after, "popgate_sent_bytes_total") == {
        key("popgate_sent_bytes_total", tenant="acme"): acme_bytes,
        key("popgate_sent_bytes_total", tenant="-"): no_tenant_bytes,
    }
    assert deltas(before, after, "popgate_store_operation_duration_seconds_count") == {
        key("popgate_store_operation_duration_seconds_count", backend="maildir", op="open"): 4,
        key("popgate_store_operation_duration_seconds_count", backend="maildir", op="fetch"): 2,
        key("popgate_store_operation_duration_seconds_count", backend="maildir", op="expunge"): 1,
    }
    assert deltas(before, after, "popgate_store_errors_total") == {}
    assert deltas(before, after, "popgate_connections_rejected_total") == {}

    # Bounded labels: no user, no unknown domain, no address.
    text = scrape_text(srv)
    for word in ("bob", "dave", "mallory", "nowhere", "127.0.0.1"):
        assert word not in text, word


def test_promtool_accepts_the_exposition(popgate):
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/test does)")
    srv = metrics_server(popgate)
    srv.drop(BOB, SMALL)
    with srv.session(BOB) as c:
        c.retr(1)
        assert c.cmd("QUIT").startswith(b"+OK")
        c.rest_until_eof()
    with srv.connect() as c:
        assert c.login(BOB, "nope").startswith(b"-ERR")
    quiesce(srv)
    text = scrape_text(srv)
    assert "# TYPE popgate_session_duration_seconds histogram" in text
    assert promtool_check(text).strip() == ""


def test_health_endpoints_and_http_edges(popgate):
    srv = metrics_server(popgate)
    port = srv.metrics_port
    assert http_get(port, "/healthz")[::2] == (200, "ok\n")
    assert http_get(port, "/readyz")[::2] == (200, "ready\n")
    assert http_get(port, "/nope")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/metrics", body=b"x")
    r = conn.getresponse()
    assert (r.status, r.getheader("Allow")) == (405, "GET")
    conn.close()
    # An oversized request head is refused, not buffered.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n")
        except OSError:
            pass  # the server may close as soon as it has answered
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]


def test_bearer_token_guards_metrics(popgate):
    srv = metrics_server(popgate, token="t0ps3cret")
    status, head, _ = http_get(srv.metrics_port, "/metrics")
    assert status == 401 and head["www-authenticate"].startswith("Bearer")
    assert http_get(srv.metrics_port, "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert "popgate_build_info" in scrape_text(srv, {"Authorization": "Bearer t0ps3cret"})
    # Probes stay open.
    assert http_get(srv.metrics_port, "/healthz")[0] == 200
    assert http_get(srv.metrics_port, "/readyz")[0] == 200


def test_bearer_token_from_the_environment(popgate):
    srv = metrics_server(popgate, env={"POPGATE_METRICS__BEARER_TOKEN": "from-env"})
    assert http_get(srv.metrics_port, "/metrics")[0] == 401
    assert http_get(srv.metrics_port, "/metrics", {"Authorization": "Bearer from-env"})[0] == 200


def test_a_bad_bearer_token_is_a_configuration_error(popgate):
    srv = popgate(extra_toml='\n[metrics]\naddress = "127.0.0.1:9"\nbearer_token = "two words"\n', start=False)
    r = srv.check_config()
    assert r.returncode == 2, r
    assert "metrics.bearer_token" in r.stderr.decode(), r.stderr


def test_metrics_port_taken_stops_the_start(popgate):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = popgate(extra_toml=f'\n[metrics]\naddress = "127.0.0.1:{port}"\n', start=False)
        srv.start(wait=False)
        rc = srv.proc.wait(timeout=30)
        log = srv.log()
    assert rc != 0, log
    assert "metrics.address" in log and str(port) in log, log
    assert "listening for POP3" not in log, log


def test_readyz_turns_503_while_draining(popgate):
    srv = metrics_server(popgate, server={"shutdown_grace": "60s"})
    assert http_get(srv.metrics_port, "/readyz")[0] == 200
    with srv.session(BOB) as c:
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:
            status, _, body = http_get(srv.metrics_port, "/readyz")
            if status == 503:
                break
            assert time.monotonic() < deadline, (status, body)
            time.sleep(0.05)
        assert body == "not ready: draining\n"
        # The process is alive and the open session still served while draining.
        assert http_get(srv.metrics_port, "/healthz")[0] == 200
        assert scrape(srv)["popgate_sessions_active"] >= 1
        assert c.cmd("NOOP").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
        c.rest_until_eof()
    assert srv.proc.wait(timeout=30) == 0


def backend_up(port: int, tenant: str, backend: str) -> str | None:
    """The value of popgate_backend_up for one backend, or None."""
    _, _, text = http_get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith("popgate_backend_up{") and f'tenant="{tenant}"' in line and f'backend="{backend}"' in line:
            return line.rsplit(" ", 1)[1]
    return None


def wait_backend(port: int, tenant: str, backend: str, want: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while (got := backend_up(port, tenant, backend)) != want:
        assert time.monotonic() < end, (tenant, backend, got)
        time.sleep(0.1)


def test_redis_away_is_a_backend_metric_not_unreadiness(popgate, private_redis):
    # Redis is shared by every replica: taking them all out of the Service
    # for it would help nobody. /readyz stays 200; the metric and /backends
    # tell the operator.
    port = free_port()
    srv = popgate(
        extra_toml=locks_toml(private_redis.url, "pgtest-readyz")
        + f'\n[metrics]\naddress = "127.0.0.1:{port}"\nbackend_check_interval = "200ms"\n'
    )

    def wait_ready(want: int, deadline: float = 20.0) -> str:
        end = time.monotonic() + deadline
        while True:
            status, _, body = http_get(port, "/readyz")
            if status == want:
                return body
            assert time.monotonic() < end, (status, body)
            time.sleep(0.1)

    assert wait_ready(200) == "ready\n"
    wait_backend(port, "-", "locks", "1")
    private_redis.stop()
    wait_backend(port, "-", "locks", "0")
    assert http_get(port, "/readyz")[::2] == (200, "ready\n")
    status, _, page = http_get(port, "/backends")
    assert status == 200 and "- locks redis down" in page, page
    assert http_get(port, "/healthz")[0] == 200
    private_redis.start()
    wait_backend(port, "-", "locks", "1")
    assert srv.proc.poll() is None


def test_a_lock_lost_mid_session_is_counted(popgate, private_redis):
    port = free_port()
    srv = popgate(
        extra_toml=locks_toml(private_redis.url, "pgtest-lost", ttl="2s")
        + f'\n[metrics]\naddress = "127.0.0.1:{port}"\n'
    )
    srv.metrics_port, srv.metrics_headers = port, {}
    before = quiesce(srv)
    c = srv.session(BOB)
    # A restart without persistence forgets the lock; the renewal notices.
    private_redis.stop()
    private_redis.start()
    assert c.line() == b"-ERR [SYS/TEMP] Mailbox lock lost; no messages were deleted."
    c.rest_until_eof()
    c.close()
    after = quiesce(srv, more=1, since=before)
    assert deltas(before, after, "popgate_locks_lost_total") == {key("popgate_locks_lost_total", tenant="acme"): 1}
    assert deltas(before, after, "popgate_sessions_total") == {key("popgate_sessions_total", outcome="lock_lost"): 1}


def test_a_real_prometheus_scrapes_popgate(popgate, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is missing: apt-get install prometheus (scripts/test does)")
    srv = metrics_server(popgate, token="scrape-me")
    srv.drop(BOB, SMALL)
    with srv.session(BOB) as c:
        c.retr(1)
        assert c.cmd("QUIT").startswith(b"+OK")
        c.rest_until_eof()
    quiesce(srv)

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: popgate\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    authorization:\n"
        "      type: Bearer\n"
        "      credentials: scrape-me\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{srv.metrics_port}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd=tmp_path,
    )
    try:

        def query(q: str):
            status, _, body = http_get(prom_port, "/api/v1/query?query=" + urllib.parse.quote(q))
            assert status == 200, body
            data = json.loads(body)
            assert data["status"] == "success", data
            return data["data"]["result"]

        deadline = time.monotonic() + 90
        result = []
        while time.monotonic() < deadline:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                # Prometheus answers 503 until its storage is ready.
                if http_get(prom_port, "/-/ready")[0] != 200:
                    time.sleep(0.5)
                    continue
                result = query('popgate_sessions_total{job="popgate",outcome="quit"}')
            except (OSError, http.client.HTTPException):
                result = []  # not listening yet
            if result:
                break
            time.sleep(0.5)
        assert result, "Prometheus never returned popgate_sessions_total:\n" + (tmp_path / "prometheus.log").read_text()
        assert len(result) == 1 and float(result[0]["value"][1]) == 1.0, result
        assert result[0]["metric"]["instance"] == f"127.0.0.1:{srv.metrics_port}"
        up = query('up{job="popgate"}')
        assert float(up[0]["value"][1]) == 1.0, up
        retrieved = query('popgate_messages_retrieved_total{tenant="acme"}')
        assert float(retrieved[0]["value"][1]) == 1.0, retrieved
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(timeout=10)
        log.close()


def test_healthcheck_subcommand_for_containers(popgate):
    """`popgate healthcheck` is what a shell-less image runs as HEALTHCHECK."""
    srv = metrics_server(popgate)
    base = f"http://127.0.0.1:{srv.metrics_port}"
    assert run_popgate(["healthcheck", "--url", base + "/healthz"]).returncode == 0
    assert run_popgate(["healthcheck", "--url", base + "/readyz"]).returncode == 0
    assert run_popgate(["healthcheck", "--url", base + "/nosuch"]).returncode == 1
    srv.stop(signal.SIGKILL)
    r = run_popgate(["healthcheck", "--url", base + "/healthz"])
    assert r.returncode == 1 and b"unhealthy" in r.stderr
