"""The two servers under test: configuration, start, readiness, stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from .procfs import comm, descendants, proc_times, pss_kb, status_kb

HOST = "127.0.0.1"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


class Server:
    name = ""
    pid = 0

    def pids(self) -> list[int]:
        raise NotImplementedError

    def cpu(self) -> float:
        """CPU seconds used so far by the server (all its processes)."""
        own, reaped = proc_times(self.pid)
        total = own + reaped
        for p in descendants(self.pid):
            try:
                o, r = proc_times(p)
                total += o + r
            except (FileNotFoundError, ProcessLookupError):
                pass  # exited between the listing and the read: in reaped now or soon
        return total

    def context_switches(self) -> int:
        """Context switches of the live processes' threads (a Dovecot process
        that exited takes its count with it)."""
        total = 0
        for p in self.pids():
            try:
                for task in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{task}/status") as f:
                        for line in f:
                            if "ctxt_switches:" in line:
                                total += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total

    def memory(self) -> dict:
        pids = self.pids()
        return {
            "rss_kb": sum(status_kb(p, "VmRSS") for p in pids),
            "pss_kb": sum(pss_kb(p) for p in pids),
            "processes": len(pids),
        }


def popgate_config(work: str, port: int) -> str:
    """popgate.toml: the dataset's Maildirs and passwd-file (bench.test, and
    crypt.test on the same Maildirs), in-process locks, caps high enough
    for the load."""
    return f"""[server]
hostname = "localhost"
shutdown_grace = "1s"
max_connections = 20000
max_connections_per_ip = 20000
log_level = "info"

[[listeners]]
address = "{HOST}:{port}"
tls = "none"
plaintext_auth = true
default_tenant = "bench"

[locks]
backend = "memory"

[[tenants]]
name = "bench"
domains = ["bench.test"]
auth = {{ kind = "passwd-file", path = "{work}/passwd" }}
store = {{ kind = "maildir", path = "{work}/mail/%d/%n/Maildir", uidl_format = "%08Xu%08Xv" }}

# The same Maildirs for the SHA512-CRYPT logins. Not through the crypt.test
# symlink Dovecot uses: popgate follows no symlink below a path's fixed
# prefix unless told to, and the other scenarios measure that path.
[[tenants]]
name = "crypt"
domains = ["crypt.test"]
auth = {{ kind = "passwd-file", path = "{work}/passwd" }}
store = {{ kind = "maildir", path = "{work}/mail/bench.test/%n/Maildir", uidl_format = "%08Xu%08Xv" }}
"""


class Popgate(Server):
    name = "popgate"

    def __init__(self, work: str, port: int, uid: int, gid: int, binary: str, config: str | None = None):
        """`config`: the popgate.toml to run with; by default popgate_config's."""
        self.port = port
        self.conf = os.path.join(work, "popgate.toml")
        with open(self.conf, "w") as f:
            f.write(config if config is not None else popgate_config(work, port))
        os.chmod(self.conf, 0o644)
        self.log = open(os.path.join(work, "popgate.log"), "ab")
        env = {"PATH": "/usr/bin:/bin", "HOME": work}
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
             binary, "serve", "--config", self.conf],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=work, env=env,
        )
        self.pid = self.proc.pid  # setpriv execs popgate: same pid

    def pids(self) -> list[int]:
        return [self.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def dovecot_config(run_dir: str, work: str, port: int, reuse: bool, idle: int) -> str:
    """dovecot.conf: POP3 only, on the same Maildirs and passwd-file, tuned as
    Dovecot's documentation suggests for speed (high-performance login
    mode; pop3 processes reused when `reuse`)."""
    limit = max(1000, idle * 2)
    pop3_reuse = "  service_count = 0\n  process_min_avail = 2\n" if reuse else ""
    return f"""# Written by scripts/bench.
base_dir = {run_dir}/run
state_dir = {run_dir}/state
log_path = {run_dir}/dovecot.log
protocols = pop3
listen = {HOST}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:{work}/mail/%d/%n/Maildir
pop3_uidl_format = %08Xu%08Xv
default_process_limit = {limit}
default_client_limit = {limit * 4}
default_vsz_limit = 1G

passdb {{
  driver = passwd-file
  args = scheme=PLAIN {work}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={work}/mail/%d/%n
}}

service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}
    port = {port}
  }}
  # High-performance login mode: a few long-lived login processes.
  service_count = 0
  process_min_avail = {os.cpu_count() or 2}
  client_limit = {limit * 2}
}}
service pop3 {{
{pop3_reuse}  process_limit = {limit}
}}
service anvil {{
  client_limit = {limit * 4}
}}
service auth {{
  client_limit = {limit * 4}
}}
"""


class Dovecot(Server):
    name = "dovecot"

    def __init__(self, work: str, port: int, reuse: bool, idle: int):
        self.port = port
        self.dir = os.path.join(work, "dovecot")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(dovecot_config(self.dir, work, port, reuse, idle))
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", self.conf],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "master.err"), "wb"),
        )
        self.pid = self.proc.pid

    def pids(self) -> list[int]:
        return [self.pid] + descendants(self.pid)

    def pop3_pids(self) -> list[int]:
        return [p for p in descendants(self.pid) if comm(p) == "pop3"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_ready(server: Server, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited with {server.proc.returncode} at startup")
        try:
            with socket.create_connection((HOST, server.port), timeout=2) as s:
                if s.recv(100).startswith(b"+OK"):
                    return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise SystemExit(f"{server.name} does not answer on {HOST}:{server.port}: {last}")
