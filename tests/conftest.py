"""Fixtures for the end-to-end suite: the real `popgate` binary, serving
POP3 over TCP on 127.0.0.1 from a throw-away directory.

`popgate(...)` is a factory: it writes a configuration with two tenants
(acme: acme.example + acme.test, globex: globex.example), each with its own
passwd-file and Maildir root, starts `popgate serve --config FILE` and waits
until it listens. Tests override pieces of the configuration by keyword:

    srv = popgate(server={"max_bad_commands": 3},
                  tenants={"acme": {"max_sessions": 1}},
                  listener={"default_tenant": "globex"},
                  env={"POPGATE_SERVER__HOSTNAME": "x"},
                  start=False)

A value of None removes a key. Every server is killed at teardown.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from popclient import TENANT_DOMAINS, TENANT_USERS, Pop3, crlf

REPO = Path(__file__).resolve().parent.parent
POPGATE_BIN = os.environ.get("POPGATE_BIN") or str(REPO / "target" / "debug" / "popgate")

START_TIMEOUT = 30.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_drop_seq = itertools.count(1)


# --------------------------------------------------------------------------
# TOML, just enough for popgate's configuration


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


def toml_table(header: str, table: dict) -> str:
    lines = [header]
    lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def merged(base: dict, overrides: dict | None) -> dict:
    out = dict(base)
    for k, v in (overrides or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: dict | None = None) -> dict:
    """The environment for popgate: none of the caller's POPGATE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPGATE_") and k != "POPGATE_LOG"}
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def run_popgate(args: list[str], input: bytes | None = None, cwd=None, env: dict | None = None, timeout: float = 60):
    return subprocess.run(
        [POPGATE_BIN, *args], input=input, capture_output=True, cwd=cwd, env=clean_env(env), timeout=timeout
    )


# --------------------------------------------------------------------------
# session-wide: the binary and the hashed passwords


@pytest.fixture(scope="session")
def popgate_bin() -> str:
    assert os.access(POPGATE_BIN, os.X_OK), (
        f"popgate binary not found at {POPGATE_BIN}: run `cargo build -p popgate` or set POPGATE_BIN"
    )
    return POPGATE_BIN


@pytest.fixture(scope="session")
def password_hashes(popgate_bin) -> dict:
    """login -> the passwd-file password field, hashed by `popgate pw`."""
    out = {}
    for users in TENANT_USERS.values():
        for login, (scheme, password) in users.items():
            if scheme == "PLAIN":
                out[login] = "{PLAIN}" + password
                continue
            r = run_popgate(["pw", "--scheme", scheme], input=password.encode() + b"\n")
            assert r.returncode == 0, r.stderr.decode()
            hashed = r.stdout.decode().strip()
            assert hashed.startswith("{" + scheme + "}"), hashed
            assert password not in hashed
            out[login] = hashed
    return out


# --------------------------------------------------------------------------
# one server


class Popgate:
    def __init__(self, root: Path, hashes: dict, server=None, listener=None, tenants=None, env=None, extra_toml=""):
        self.root = root
        self.port = free_port()
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.stderr_path = root / "popgate.stderr"
        self.config_path = root / "popgate.toml"
        self.passwd = {}
        for tenant, users in TENANT_USERS.items():
            (root / tenant).mkdir(parents=True, exist_ok=True)
            path = root / f"{tenant}.passwd"
            path.write_text("".join(f"{login}:{hashes[login]}\n" for login in users))
            self.passwd[tenant] = path

        self.server = merged(
            {
                "hostname": "pop.test",
                "auth_failure_delay": "100ms",
                # The brute-force penalty (2s doubling by default) is tested on its own.
                "auth_penalty": "10ms",
                "auth_penalty_max": "50ms",
                "shutdown_grace": "5s",
                "log_level": "info",
            },
            server,
        )
        self.listener = merged(
            {"address": f"127.0.0.1:{self.port}", "plaintext_auth": True, "default_tenant": "acme"}, listener
        )
        self.tenants = []
        for name in ("acme", "globex"):
            base = {
                "name": name,
                "domains": TENANT_DOMAINS[name],
                "auth": {"kind": "passwd-file", "path": str(self.passwd[name])},
                "store": {"kind": "maildir", "path": f"{root}/{name}/%d/%n/Maildir"},
            }
            self.tenants.append(merged(base, (tenants or {}).get(name)))
        self.extra_toml = extra_toml
        self.write_config()

    # -- configuration ---------------------------------------------------
    def config_text(self) -> str:
        parts = [toml_table("[server]", self.server), toml_table("[[listeners]]", self.listener)]
        parts += [toml_table("[[tenants]]", t) for t in self.tenants]
        return "\n".join(parts) + self.extra_toml

    def write_config(self) -> Path:
        self.config_path.write_text(self.config_text())
        return self.config_path

    def check_config(self, env=None) -> subprocess.CompletedProcess:
        return run_popgate(["check-config", "--config", str(self.config_path)], env={**self.env, **(env or {})})

    # -- process ---------------------------------------------------------
    def start(self, wait: bool = True, preexec_fn=None) -> "Popgate":
        """Starts `popgate serve`; `preexec_fn` runs in the child first (to set
        its limits as a service manager would)."""
        assert self.proc is None
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [POPGATE_BIN, "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            cwd=self.root,
            env=clean_env(self.env),
            preexec_fn=preexec_fn,
        )
        if wait:
            self.wait_listening()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        """What the server logged so far (stderr and stdout), without colours."""
        try:
            return _ANSI.sub("", self.stderr_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            if self.proc is not None and self.proc.poll() is not None:
                text = self.log()
                if needle in text:
                    return text
                raise AssertionError(f"popgate exited ({self.proc.returncode}) before logging {needle!r}:\n{text}")
            time.sleep(0.02)
        raise AssertionError(f"popgate did not log {needle!r} within {timeout}s:\n{self.log()}")

    def wait_listening(self) -> None:
        self.wait_log(f"listening for POP3 address=127.0.0.1:{self.port}")
        # The log line follows the bind; make sure connections get through.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as probe:
            probe_port = probe.getsockname()[1]
        # Let the server finish with the probe (a loaded machine may accept it
        # late), so it does not count against caps or metrics of the test.
        # Listeners that log nothing for it (implicit TLS) just wait a little.
        deadline = time.monotonic() + 2
        while f"127.0.0.1:{probe_port}" not in self.log() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        """Sends SIGTERM (by default) and waits for the exit status."""
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._stderr.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc is not None:
            self._stderr.close()

    def memory_kb(self, field: str = "VmHWM") -> int:
        """A figure of /proc/PID/status in kB: VmHWM is the peak RSS."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} not in /proc/{self.pid}/status")

    # -- clients ---------------------------------------------------------
    def connect(self, **kw) -> Pop3:
        return Pop3(self.port, **kw)

    def session(self, user: str, password: str | None = None) -> Pop3:
        """A connection logged in as `user`."""
        c = self.connect()
        c.login_ok(user, password if password is not None else self.password(user))
        return c

    @staticmethod
    def password(user: str) -> str:
        """The test password of a login (bare names: acme's)."""
        user = user.lower()
        local = user.split("@")[0]
        for candidate in (user, f"{user}@acme.example", local):
            for users in TENANT_USERS.values():
                if candidate in users:
                    return users[candidate][1]
        raise KeyError(user)

    # -- mail ------------------------------------------------------------
    def maildir(self, user: str) -> Path:
        """The Maildir of `local@domain` (a bare name: acme's primary domain)."""
        local, _, domain = user.lower().partition("@")
        domain = domain or TENANT_DOMAINS["acme"][0]
        tenant = next(t for t, ds in TENANT_DOMAINS.items() if domain in ds)
        return self.root / tenant / domain / local / "Maildir"

    def deliver(self, user: str, message: bytes) -> str:
        """`popgate deliver`; returns the UIDL it prints."""
        r = run_popgate(["deliver", "--config", str(self.config_path), "--user", user], input=message, env=self.env)
        assert r.returncode == 0, f"deliver to {user} failed: {r.stderr.decode()}"
        uidl = r.stdout.decode().strip()
        assert uidl and "\n" not in uidl, r.stdout
        return uidl

    def deliver_file(self, user: str, message: bytes) -> tuple[str, Path]:
        """`popgate deliver`; returns the UIDL and the file it created."""
        before = self.bases(user) if self.maildir(user).is_dir() else set()
        uidl = self.deliver(user, message)
        new = self.bases(user) - before
        assert len(new) == 1, f"deliver made {new} in {self.maildir(user)}"
        return uidl, self.message_path(user, new.pop())

    def drop(self, user: str, message: bytes, sizes: bool = False, name: str | None = None, cur: bool = False) -> str:
        """Puts a file into the Maildir's new/ as an MTA (or Dovecot's LDA)
        would: written in tmp/, renamed into new/. The name is Dovecot-style,
        `<secs>.M<usecs>P<pid>.<host>`, with `,S=<size>,W=<pop3 size>` when
        `sizes` is set. Names sort in the order of the calls. With `cur`, the
        file goes to cur/ as `<name>:2,S` (seen by an IMAP client). Returns
        the base name."""
        md = self.maildir(user)
        for sub in ("tmp", "new", "cur"):
            (md / sub).mkdir(parents=True, exist_ok=True)
        if name is None:
            seq = next(_drop_seq)
            name = f"{1700000000 + seq}.M{100000 + seq}P{os.getpid()}.testhost"
            if sizes:
                name += f",S={len(message)},W={len(crlf(message))}"
        tmp = md / "tmp" / name
        tmp.write_bytes(message)
        os.rename(tmp, md / "cur" / f"{name}:2,S" if cur else md / "new" / name)
        return name

    def files(self, user: str) -> list[str]:
        """The message files of a Maildir, as `new/NAME` and `cur/NAME`."""
        md = self.maildir(user)
        out = []
        for sub in ("new", "cur"):
            d = md / sub
            if d.is_dir():
                out += [f"{sub}/{n}" for n in os.listdir(d) if not n.startswith(".")]
        return sorted(out)

    def bases(self, user: str) -> set[str]:
        """The base names (before `:`) of the messages in a Maildir."""
        return {f.split("/", 1)[1].split(":", 1)[0] for f in self.files(user)}

    def message_path(self, user: str, base: str) -> Path:
        """Where the message with this base name is now (new/ or cur/)."""
        for f in self.files(user):
            if f.split("/", 1)[1].split(":", 1)[0] == base:
                return self.maildir(user) / f
        raise AssertionError(f"no message {base} in {self.maildir(user)}: {self.files(user)}")


@pytest.fixture
def popgate(tmp_path, popgate_bin, password_hashes):
    """Factory: popgate(server=..., listener=..., tenants=..., env=..., start=True)."""
    made: list[Popgate] = []

    def make(server=None, listener=None, tenants=None, env=None, extra_toml="", start=True) -> Popgate:
        root = tmp_path / f"pg{len(made)}"
        root.mkdir()
        p = Popgate(root, password_hashes, server, listener, tenants, env, extra_toml)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    for p in made:
        p.kill()


@pytest.fixture
def server(popgate) -> Popgate:
    """A running server with the default test configuration."""
    return popgate()
