"""Graceful shutdown on SIGTERM: no new connections, sessions get the grace
period, then `-ERR [SYS/TEMP]`; an interrupted session deletes nothing."""

import hashlib
import select
import signal
import socket
import time

from test_messages import drop_big, read_body_hashing


USER = "bob@acme.example"


def fill(srv, n=3):
    """Drops n messages; their base names in message-number order."""
    return [srv.drop(USER, b"Subject: %d\r\n\r\nbody\r\n" % i) for i in range(n)]


def test_idle_server_exits_zero_on_sigterm(server):
    assert server.stop() == 0
    assert "listening for POP3" in server.log()


def test_sigint_too(server):
    assert server.stop(signal.SIGINT) == 0


def test_grace_runs_out_session_gets_sys_temp_and_nothing_is_deleted(popgate):
    srv = popgate(server={"shutdown_grace": "1s"})
    names = fill(srv)
    with srv.session(USER) as c:
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("DELE 2").startswith(b"+OK")
        srv.proc.send_signal(signal.SIGTERM)
        # The client does nothing; when the grace is over the server says so.
        lines = c.lines_until_eof()
        assert len(lines) == 1 and lines[0].startswith(b"-ERR [SYS/TEMP] "), lines
    assert srv.proc.wait(timeout=30) == 0
    assert srv.bases(USER) == set(names)


def test_session_in_the_middle_of_a_command_batch_at_grace_end(popgate):
    """A session that keeps talking through the grace still gets cut, cleanly."""
    srv = popgate(server={"shutdown_grace": "1s"})
    names = fill(srv)
    with srv.session(USER) as c:
        c.ok("DELE 3")
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_log("shutting down")
        while True:
            # Only talk while the server has said nothing on its own.
            readable, _, _ = select.select([c.sock], [], [], 0.05)
            if readable or c.buf:
                r = c.line()
                break
            r = c.cmd("NOOP")
            if r != b"+OK":
                break
        assert r.startswith(b"-ERR [SYS/TEMP] "), r
    assert srv.proc.wait(timeout=30) == 0
    assert srv.bases(USER) == set(names)


def refused_soon(port, deadline=10.0):
    """True once connections to the port are refused (the listener is closed)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False


def test_no_new_connections_after_sigterm_but_open_sessions_finish(popgate):
    srv = popgate(server={"shutdown_grace": "20s"})
    names = fill(srv)
    c = srv.session(USER)
    try:
        assert c.cmd("DELE 1").startswith(b"+OK")
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_log("shutting down")
        assert refused_soon(srv.port), "still accepting connections after SIGTERM"
        # The open session works on and commits its QUIT within the grace.
        assert c.cmd("STAT").startswith(b"+OK 2 ")
        assert c.cmd("QUIT").startswith(b"+OK")
        assert c.rest_until_eof() == b""
    finally:
        c.close()
    assert srv.proc.wait(timeout=30) == 0
    assert srv.bases(USER) == set(names[1:])


def test_sigterm_before_login_closes_unauthenticated_sessions(popgate):
    srv = popgate(server={"shutdown_grace": "1s"})
    with srv.connect() as c:
        srv.proc.send_signal(signal.SIGTERM)
        lines = c.lines_until_eof()
        assert len(lines) == 1 and lines[0].startswith(b"-ERR"), lines
    assert srv.proc.wait(timeout=30) == 0


def test_a_client_stalled_mid_retr_is_cut_when_the_grace_runs_out(popgate):
    """A client that stops reading in the middle of a big RETR must not keep
    the server past its grace: when the grace runs out the session is closed
    and its end recorded (its -ERR cannot be sent in the middle of a message:
    the client sees the message cut short), nothing is deleted, and the
    process exits 0."""
    srv = popgate(server={"shutdown_grace": "1s"})
    small = srv.drop("big@acme.example", b"Subject: small\r\n\r\n")
    drop_big(srv)  # 50 MB: far more than the socket buffers hold
    names = srv.bases("big@acme.example")
    assert small in names
    with srv.session("big@acme.example") as c:
        c.ok("DELE 1")
        assert c.cmd("RETR 2").startswith(b"+OK")
        got, complete = read_body_hashing(c, hashlib.sha256(), stop_after=1024 * 1024)
        assert not complete
        # The client stays stalled; the server is told to stop.
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0
        log = srv.log()
        ends = [line for line in log.splitlines() if "session end" in line and 'user="big@acme.example"' in line]
        assert ends and 'outcome="shutdown"' in ends[-1], (
            "the stalled session was not closed when the grace ran out (no session end before exit):\n" + log[-1500:]
        )
        try:
            tail = c.rest_until_eof()
        except ConnectionResetError:
            tail = b""
        assert not tail.endswith(b"\r\n.\r\n")
    assert srv.bases("big@acme.example") == names
