"""The connection's edge: PROXY protocol (with a real haproxy in front),
connection caps, the failed-login penalty, and slow command lines."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import free_port
from popclient import AUTH_FAILED, TIMEOUT, Pop3

USER = "bob@acme.example"
PASSWORD = "secret"


def proxy_server(popgate, trusted=("127.0.0.1",), **kw):
    return popgate(listener={"proxy_protocol": True, "trusted_proxies": list(trusted)}, **kw)


def session_clients(srv) -> list[str]:
    """The client addresses of finished sessions, from the session-end log
    lines (the client is the `session` span's: `session{id=... client=...}`)."""
    out = []
    for line in srv.log().splitlines():
        if "session end" in line:
            out.append(line.split("client=", 1)[1].split()[0].rstrip("}:"))
    return out


def wait_sessions(srv, n: int) -> list[str]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        clients = session_clients(srv)
        if len(clients) >= n:
            return clients
        time.sleep(0.05)
    raise AssertionError(f"expected {n} finished sessions:\n{srv.log()}")


def raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def read_all(s: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def v2_header(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 110, command: int = 1) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if command == 0:
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    body += b"\x04\x00\x03abc"  # a TLV the server must skip
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def test_proxy_v1_and_v2_give_the_real_client_address(popgate):
    srv = proxy_server(popgate)
    with raw(srv.port) as s:
        s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 110\r\nQUIT\r\n")
        assert read_all(s).startswith(b"+OK")
    with raw(srv.port) as s:
        s.sendall(v2_header("198.51.100.9", 40002) + b"QUIT\r\n")
        assert read_all(s).startswith(b"+OK")
    with raw(srv.port) as s:
        # v2 LOCAL: a health check of the proxy itself; served as the proxy.
        s.sendall(v2_header("0.0.0.0", 0, command=0) + b"QUIT\r\n")
        assert read_all(s).startswith(b"+OK")
    clients = wait_sessions(srv, 3)
    assert "192.0.2.7:40001" in clients
    assert "198.51.100.9:40002" in clients
    assert any(c.startswith("127.0.0.1:") for c in clients)


def test_missing_or_bad_header_and_untrusted_sender_get_no_greeting(popgate):
    srv = proxy_server(popgate)
    with raw(srv.port) as s:
        s.sendall(b"USER bob\r\n")
        assert read_all(s) == b""
    with raw(srv.port) as s:
        s.sendall(b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n")
        assert read_all(s) == b""
    untrusted = proxy_server(popgate, trusted=("10.0.0.0/8",))
    with raw(untrusted.port) as s:
        s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 110\r\n")
        assert read_all(s) == b""
    assert "untrusted" in untrusted.log()


def test_proxy_listener_needs_trusted_proxies(popgate):
    srv = popgate(listener={"proxy_protocol": True}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"listeners[0].trusted_proxies" in r.stderr, r.stderr
    srv = popgate(listener={"proxy_protocol": True, "trusted_proxies": ["10.0.0.0/40"]}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"listeners[0].trusted_proxies" in r.stderr, r.stderr


@pytest.fixture
def haproxy_bin():
    path = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert shutil.which(path) or __import__("os").access(path, __import__("os").X_OK), \
        "haproxy is not installed: scripts/test installs it"
    return path


@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
def test_behind_a_real_haproxy(popgate, haproxy_bin, tmp_path, send_proxy):
    srv = proxy_server(popgate)
    srv.deliver(USER, b"Subject: via haproxy\r\n\r\nhello\r\n")
    front = free_port()
    cfg = tmp_path / f"haproxy-{send_proxy}.cfg"
    cfg.write_text(
        "global\n  log stderr format raw local0\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
        f"frontend pop3\n  bind 127.0.0.1:{front}\n  default_backend popgate\n"
        f"backend popgate\n  server p1 127.0.0.1:{srv.port} {send_proxy}\n"
    )
    proc = subprocess.Popen([haproxy_bin, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                c = Pop3(front)
                break
            except (ConnectionRefusedError, EOFError):
                assert time.monotonic() < deadline, "haproxy did not start"
                time.sleep(0.05)
        with c:
            local_port = c.sock.getsockname()[1]
            c.login_ok(USER, PASSWORD)
            status, body = c.retr(1)
            assert body == b"Subject: via haproxy\r\n\r\nhello\r\n"
            c.ok("QUIT")
        clients = wait_sessions(srv, 1)
        # popgate saw the client's own address and port, not haproxy's.
        assert f"127.0.0.1:{local_port}" in clients, (local_port, clients)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_connection_caps(popgate):
    srv = popgate(server={"max_connections_per_ip": 2, "max_connections": 100})
    srv.wait_log("session end")  # the fixture's probe connection is counted out
    a, b = srv.connect(), srv.connect()
    assert a.greeting.startswith(b"+OK") and b.greeting.startswith(b"+OK")
    with raw(srv.port) as s:
        assert read_all(s) == b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n"
    a.close()
    time.sleep(0.2)
    with srv.connect() as c:
        assert c.greeting.startswith(b"+OK")
    b.close()
    glob = popgate(server={"max_connections_per_ip": 50, "max_connections": 1})
    glob.wait_log("session end")
    with glob.connect():
        with raw(glob.port) as s:
            assert read_all(s).startswith(b"-ERR [SYS/TEMP] Too many connections")


def test_failed_logins_are_penalised_per_address_and_account(popgate):
    srv = popgate(server={"auth_penalty": "1s", "auth_penalty_max": "2s", "auth_failure_delay": "10ms",
                          "max_auth_failures": 10})
    with srv.connect() as c:
        assert c.login(USER, "wrong") == AUTH_FAILED  # no penalty yet
        start = time.monotonic()
        assert c.login(USER, "wrong") == AUTH_FAILED
        assert time.monotonic() - start >= 0.9, "the second failure waits the penalty"
        start = time.monotonic()
        assert c.login("nobody@acme.example", "x") == AUTH_FAILED
        # The address has 2 recent failures: 2 s (the ceiling).
        assert time.monotonic() - start >= 1.9
    # The right password still works, after the penalty; then it is cleared.
    with srv.connect() as c:
        c.login_ok(USER, PASSWORD)
        c.ok("QUIT")
    with srv.connect() as c:
        start = time.monotonic()
        assert c.login(USER, "wrong") == AUTH_FAILED
        assert time.monotonic() - start < 0.9, "a success clears the record"


def test_a_command_line_must_complete_in_time(popgate):
    srv = popgate(server={"command_timeout": "1s", "auth_timeout": "60s"})
    with srv.connect() as c:
        c.send(b"USE")
        lines = c.lines_until_eof()
        assert lines == [b"-ERR Disconnected for inactivity."], lines
    # A trickle of bytes does not keep a line alive either.
    with srv.connect() as c:
        c.sock.settimeout(0.2)
        got = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"inactivity" not in got:
            try:
                c.send(b"x")
            except OSError:
                break
            try:
                got += c.sock.recv(100)
            except socket.timeout:
                pass
            except OSError:
                break
        assert b"-ERR Disconnected for inactivity." in got, got


def test_a_client_that_stops_reading_is_dropped_without_buffering(popgate):
    srv = popgate(server={"send_timeout": "1s"})
    line = b"x" * 998 + b"\n"
    srv.drop(USER, b"Subject: big\n\n" + line * 20_000)  # 20 MB
    before = srv.memory_kb("VmRSS")
    c = srv.session(USER)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(b"RETR 1\r\n")
    # Read nothing: the socket buffers fill, the server's write waits, and
    # after send_timeout the server gives up on this client.
    srv.wait_log("outcome=\"timeout\"", timeout=30)
    grown = srv.memory_kb("VmHWM") - before
    assert grown < 10_000, f"the server buffered {grown} kB for a client that does not read"
    c.close()
    # Nothing was lost and the next session is served.
    with srv.session(USER) as c2:
        assert c2.cmd("STAT").startswith(b"+OK 1 ")
