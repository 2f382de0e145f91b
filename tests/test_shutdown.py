"""Graceful shutdown on SIGTERM: no new connections, sessions get the grace
period, then `-ERR [SYS/TEMP]`; an interrupted session deletes nothing."""

import signal
import socket
import time

import pytest

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
            r = c.cmd("NOOP")
            if r != b"+OK":
                break
            time.sleep(0.05)
        assert r.startswith(b"-ERR [SYS/TEMP] "), r
    assert srv.proc.wait(timeout=30) == 0
    assert srv.bases(USER) == set(names)


def test_no_new_connections_after_sigterm_but_open_sessions_finish(popgate):
    srv = popgate(server={"shutdown_grace": "20s"})
    names = fill(srv)
    c = srv.session(USER)
    try:
        assert c.cmd("DELE 1").startswith(b"+OK")
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_log("shutting down")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()
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
