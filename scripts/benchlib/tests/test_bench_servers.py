"""Server control: configurations, readiness, and what /proc tells."""

import os
import socket
import subprocess
import sys
import threading
import tomllib

import pytest

from benchlib import procfs, servers


def test_popgate_config_serves_the_dataset_under_both_domains():
    conf = tomllib.loads(servers.popgate_config("/w", 4242))
    assert conf["listeners"][0]["address"] == "127.0.0.1:4242"
    assert conf["locks"]["backend"] == "memory"
    bench, crypt = conf["tenants"]
    assert bench["domains"] == ["bench.test"]
    assert bench["auth"] == {"kind": "passwd-file", "path": "/w/passwd"}
    assert bench["store"]["path"] == "/w/mail/%d/%n/Maildir"
    assert bench["store"]["uidl_format"] == "%08Xu%08Xv", "Dovecot's UIDLs, to compare them"
    assert crypt["domains"] == ["crypt.test"]
    assert crypt["auth"] == bench["auth"]
    assert crypt["store"] == {**bench["store"], "path": "/w/mail/bench.test/%n/Maildir"}, \
        "the same Maildirs, not through the crypt.test symlink"


def test_dovecot_config_serves_the_same_mail_and_reuses_pop3_processes_on_request():
    reused = servers.dovecot_config("/w/dovecot", "/w", 4343, True, 500)
    assert "port = 4343" in reused
    assert "mail_location = maildir:/w/mail/%d/%n/Maildir" in reused
    assert "args = scheme=PLAIN /w/passwd" in reused
    assert "pop3_uidl_format = %08Xu%08Xv" in reused
    assert "base_dir = /w/dovecot/run" in reused
    pop3 = reused.split("service pop3 {")[1].split("}")[0]
    assert "service_count = 0" in pop3 and "process_limit = 1000" in pop3
    default = servers.dovecot_config("/w/dovecot", "/w", 4343, False, 800)
    pop3 = default.split("service pop3 {")[1].split("}")[0]
    assert "service_count" not in pop3 and "process_limit = 1600" in pop3


class Greeter:
    """A TCP server that greets like a POP3 server once `ready` is set."""

    def __init__(self):
        self.sock = socket.create_server((servers.HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.ready = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.sock.accept()
            with conn:
                if self.ready.is_set():
                    conn.sendall(b"+OK ready\r\n")


class Handle:
    name = "fake"

    def __init__(self, port, proc):
        self.port, self.proc = port, proc


def test_wait_ready_waits_for_the_greeting():
    g = Greeter()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        threading.Timer(0.5, g.ready.set).start()
        servers.wait_ready(Handle(g.port, sleeper), timeout=10)
        assert g.ready.is_set()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_wait_ready_gives_up_on_a_server_that_exited():
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(SystemExit, match="exited with 3"):
        servers.wait_ready(Handle(servers.free_port(), dead), timeout=5)


def test_procfs_sees_children_cpu_and_memory():
    child = subprocess.Popen([sys.executable, "-c", "sum(range(10**7)); import time; time.sleep(30)"])
    try:
        deadline = 50
        while procfs.proc_times(child.pid)[0] < 0.05 and deadline:
            deadline -= 1
            threading.Event().wait(0.1)
        assert child.pid in procfs.descendants(os.getpid())
        assert procfs.proc_times(child.pid)[0] > 0
        assert procfs.status_kb(child.pid, "VmRSS") > 1000
        assert procfs.pss_kb(child.pid) > 0
        assert procfs.comm(child.pid).startswith("python")
    finally:
        child.kill()
        child.wait()
    assert procfs.status_kb(child.pid, "VmRSS") == 0, "a process gone reads as 0"
