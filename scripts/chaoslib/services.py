"""The stack of a chaos run, every part a real process on loopback: a
private Redis, a private PostgreSQL (initdb in the run's directory, on a
free port), an S3 server (s3s-fs), popgate replicas and haproxy in front of
them sending PROXY v2. Each part can be stopped and started again on its
port, which is what the faults do."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import mail  # noqa: F401  (puts tests/ on sys.path)
from s3client import S3Server  # noqa: E402  (tests/s3client.py)

HOST = "127.0.0.1"
TENANTS = {"acme": "maildir", "globex": "postgres", "initech": "s3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what} exited ({proc.returncode}) before listening on {port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")
            time.sleep(0.05)


class Redis:
    """redis-server without persistence: a restart comes back empty."""

    fault = "redis-restart"

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 10, self.proc, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def locks_toml(self) -> str:
        return f'url = "{self.url}"\n'

    def inject(self, down: float) -> None:
        """The fault: killed, and back empty after `down` s."""
        self.stop()
        time.sleep(down)
        self.start()


class Sentinels:
    """A master, a replica and three sentinels (tests/test_redis_failover.py's
    set). The fault kills the master; once the sentinels have promoted the
    replica, the old master comes back as the new one's replica."""

    fault = "redis-failover"

    def __init__(self, workdir: Path):
        from test_redis_failover import MASTER, SentinelSet  # tests/: imports pytest, needed only here

        self.master_name = MASTER
        self.set = SentinelSet(workdir / "sentinels")
        self.set.root.mkdir()

    def start(self) -> None:
        self.set.start()

    def stop(self) -> None:
        self.set.stop()

    def locks_toml(self) -> str:
        urls = ", ".join(f'"redis://{HOST}:{p}"' for p in self.set.sentinel_ports)
        return f'sentinels = [{urls}]\nmaster_name = "{self.master_name}"\n'

    def inject(self, down: float) -> None:
        old = self.set.current_master()
        name = "master" if old == self.set.master_port else "replica"
        self.set.kill(name)
        self.set.wait("a failover", lambda: self.set.current_master() != old, timeout=30)
        new = self.set.current_master()
        self.set._spawn(name, ["redis-server", "--bind", HOST, "--save", "", "--appendonly", "no", "--port", str(old),
                               "--dir", str(self.set.root / name), "--replicaof", HOST, str(new)], old)


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (scripts/test installs postgresql)")
    return found[-1]


class Postgres:
    """A throw-away cluster (trust auth) run as the postgres user."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "pg"
        self.dir.mkdir()
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@{HOST}:{self.port}/postgres"
        self.as_root = os.getuid() == 0
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chmod(self.dir, 0o700)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        if self.as_root:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        r = subprocess.run(cmd, capture_output=True, timeout=120, cwd="/")
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.decode()}{r.stdout.decode()}")
        return r

    def start(self) -> None:
        opts = f"-c listen_addresses={HOST} -p {self.port} -k {self.dir} -c fsync=off -c max_connections=200"
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def terminate_popgate(self) -> int:
        """pg_terminate_backend on every connection of popgate; how many."""
        r = subprocess.run(
            ["psql", self.url, "-X", "-A", "-t", "-c",
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'popgate'"],
            capture_output=True, timeout=30,
        )
        return int(r.stdout.strip() or 0) if r.returncode == 0 else 0


class Replica:
    """One `popgate serve`. `proxy`: its listener wants PROXY headers (it is
    behind haproxy)."""

    def __init__(self, bin_path: str, workdir: Path, name: str, config: str, proxy: bool = True):
        self.bin = bin_path
        self.name = name
        self.port = free_port()
        self.config_path = workdir / f"{name}.toml"
        listener = (f'\n[[listeners]]\naddress = "{HOST}:{self.port}"\ntls = "none"\nplaintext_auth = true\n'
                    f'default_tenant = "acme"\nproxy_protocol = {"true" if proxy else "false"}\n'
                    f'trusted_proxies = ["{HOST}"]\n')
        self.config_path.write_text(config + listener)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.stopped = False

    def start(self) -> None:
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("POPGATE_")}
        env["NO_COLOR"] = "1"
        self.proc = subprocess.Popen([self.bin, "serve", "--config", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        wait_port(self.port, 60, self.proc, f"popgate {self.name}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            if self.stopped:
                self.resume()
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False


class Haproxy:
    """TCP round robin over the replicas with PROXY v2; a replica that does
    not greet within half a second (killed, or stopped) is taken out."""

    def __init__(self, workdir: Path, replicas: list[Replica]):
        self.port = free_port()
        servers = "".join(
            f"  server {r.name} {HOST}:{r.port} send-proxy-v2 check-send-proxy check inter 300ms fall 2 rise 1\n"
            for r in replicas
        )
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(
            "global\n  maxconn 4000\n"
            "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n"
            "  timeout check 500ms\n  retries 2\n  option redispatch\n"
            f"frontend pop\n  bind {HOST}:{self.port}\n  default_backend fleet\n"
            "backend fleet\n  balance roundrobin\n  option tcp-check\n  tcp-check expect string +OK\n" + servers
        )
        self.log_path = workdir / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, "-f", str(self.config_path), "-db"],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        wait_port(self.port, 10, self.proc, "haproxy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Stack:
    """Everything of one run, under `workdir`. `users` per tenant."""

    def __init__(self, bin_path: str, workdir: Path, replicas: int = 3, users: int = 4, ttl: str = "2s",
                 memory_locks: bool = False, sentinel: bool = False):
        self.bin = bin_path
        self.workdir = workdir
        self.ttl = ttl
        self.memory_locks = memory_locks
        self.redis = Sentinels(workdir) if sentinel else Redis(workdir)
        self.pg = Postgres(workdir)
        self.s3 = S3Server(workdir / "s3")
        self.mailboxes: dict[str, str] = {}  # login -> password
        for tenant in TENANTS:
            for i in range(1, users + 1):
                self.mailboxes[f"u{i}@{tenant}.example"] = f"pw-{tenant}-{i}"
        self.replicas = [Replica(bin_path, workdir, f"r{i}", self.config()) for i in range(replicas)]
        self.haproxy = Haproxy(workdir, self.replicas)

    def maildir(self, login: str) -> Path:
        local, domain = login.split("@")
        return self.workdir / "maildir" / domain / local / "Maildir"

    def store_of(self, login: str) -> str:
        return TENANTS[login.split("@")[1].split(".")[0]]

    def config(self, memory_locks: bool | None = None) -> str:
        memory = self.memory_locks if memory_locks is None else memory_locks
        locks = ('[locks]\nbackend = "memory"\n' if memory else
                 f'[locks]\nbackend = "redis"\n{self.redis.locks_toml()}ttl = "{self.ttl}"\nkey_prefix = "chaos"\n')
        out = (
            '[server]\nhostname = "chaos.test"\nauth_failure_delay = "10ms"\nauth_penalty = "10ms"\n'
            'auth_penalty_max = "50ms"\nmax_connections_per_ip = 10000\nshutdown_grace = "1s"\n'
            'log_level = "info"\n\n' + locks
        )
        s3 = self.s3.store()
        for tenant, kind in TENANTS.items():
            passwd = self.workdir / f"{tenant}.passwd"
            if kind == "maildir":
                store = f'{{ kind = "maildir", path = "{self.workdir}/maildir/%d/%n/Maildir" }}'
            elif kind == "postgres":
                store = (f'{{ kind = "postgres", url = "{self.pg.url}", schema = "chaos", '
                         'connect_timeout = "2s", statement_timeout = "5s" }')
            else:
                store = "{ " + ", ".join(
                    f"{k} = {'true' if v is True else chr(34) + str(v) + chr(34)}" for k, v in s3.items()) + " }"
            out += (f'\n[[tenants]]\nname = "{tenant}"\ndomains = ["{tenant}.example"]\n'
                    f'auth = {{ kind = "passwd-file", path = "{passwd}" }}\nstore = {store}\n')
        return out

    def start(self) -> None:
        for tenant in TENANTS:
            (self.workdir / f"{tenant}.passwd").write_text(
                "".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.mailboxes.items() if u.endswith(f"@{tenant}.example")))
        (self.workdir / "maildir").mkdir()
        self.redis.start()
        self.pg.start()
        self.s3.start()
        self.s3.client.create_bucket()
        r = subprocess.run([self.bin, "migrate", "--config", str(self.replicas[0].config_path)],
                           capture_output=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"popgate migrate: {r.stderr.decode()}")
        for rep in self.replicas:
            rep.start()
        self.haproxy.start()

    def deliver(self, login: str, data: bytes) -> tuple[bool, str]:
        """`popgate deliver` (PostgreSQL and S3 tenants): (succeeded, stderr)."""
        r = subprocess.run([self.bin, "deliver", "--config", str(self.replicas[0].config_path), "--user", login],
                           input=data, capture_output=True, timeout=60)
        return r.returncode == 0, r.stderr.decode(errors="replace")

    def fresh_replica(self) -> Replica:
        """A replica of its own, without PROXY, on the fleet's locks: the audit's."""
        rep = Replica(self.bin, self.workdir, "audit", self.config(), proxy=False)
        rep.start()
        self.replicas.append(rep)
        return rep

    def stop(self) -> None:
        for part in (self.haproxy.stop, *(r.kill for r in self.replicas), self.s3.stop, self.pg.stop,
                     self.redis.stop):
            try:
                part()
            except Exception:  # noqa: BLE001  (tearing down: stop the rest regardless)
                pass
