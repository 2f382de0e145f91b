"""Helpers shared by the end-to-end tests: a raw POP3 client that keeps the
exact bytes of every response, the CRLF rules, and the test accounts.

Standard library only.
"""

from __future__ import annotations

import base64
import re
import socket

# Every socket read waits at most this long: a hang fails, it never blocks.
TIMEOUT = 10.0

# The accounts every test server has: login -> (scheme, password).
# Hashed ones are hashed by `popgate pw` once per test run.
ACME_USERS = {
    "bob@acme.example": ("PLAIN", "secret"),
    "alice@acme.example": ("ARGON2ID", "wonder land"),  # a space in it
    "carol@acme.example": ("SHA512-CRYPT", "c4rol:pass!"),  # ':' is fine hashed
    "dave@acme.example": ("PLAIN", "davepw"),
    "big@acme.example": ("PLAIN", "bigpw"),
    "compat1@acme.example": ("PLAIN", "compat"),
    "compat2@acme.example": ("PLAIN", "compat"),
    # A bare name: valid for every domain of the tenant (acme.example, acme.test).
    "frank": ("PLAIN", "frankpw"),
}
GLOBEX_USERS = {
    "bob@globex.example": ("PLAIN", "globex-secret"),
    "eve@globex.example": ("PLAIN", "evepw"),
}
TENANT_USERS = {"acme": ACME_USERS, "globex": GLOBEX_USERS}
TENANT_DOMAINS = {"acme": ["acme.example", "acme.test"], "globex": ["globex.example"]}

# What a refused login looks like, whatever the reason.
AUTH_FAILED = b"-ERR [AUTH] Authentication failed."

_LONE_LF = re.compile(rb"(?<!\r)\n")


def crlf(data: bytes) -> bytes:
    """A stored message as POP3 sends it: every bare LF becomes CRLF
    (a lone CR is content and stays)."""
    return _LONE_LF.sub(b"\r\n", data)


def wire_body(data: bytes) -> bytes:
    """What RETR's unstuffed body is for a stored message: CRLF-normalised,
    and an unterminated last line ended with CRLF (that CRLF belongs to the
    terminator, it is not counted in the size)."""
    body = crlf(data)
    if body and not body.endswith(b"\r\n"):
        body += b"\n" if body.endswith(b"\r") else b"\r\n"
    return body


def top_body(data: bytes, lines: int) -> bytes:
    """What TOP n <lines> sends (unstuffed): the header, the blank line and
    the first `lines` lines of the body."""
    msg = wire_body(data)
    out = []
    in_header = True
    left = lines
    for line in msg.split(b"\r\n")[:-1] if msg else []:
        if in_header:
            out.append(line)
            if line == b"":
                in_header = False
            continue
        if left == 0:
            break
        out.append(line)
        left -= 1
    return b"".join(line + b"\r\n" for line in out)


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def plain_ir(user: str, password: str, authzid: str = "") -> str:
    """A SASL PLAIN response, base64."""
    return b64(f"{authzid}\0{user}\0{password}".encode())


class Pop3:
    """A POP3 client on a raw socket that shows exactly what the server sent.

    `line()` returns one response line without its CRLF and fails if a line
    ends with a bare LF. Multi-line bodies come back still dot-stuffed from
    `multi()` or unstuffed from `body()`.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT, greeting: bool = True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()
        self.greeting = self.line() if greeting else None

    # -- context manager -------------------------------------------------
    def __enter__(self) -> "Pop3":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- bytes -----------------------------------------------------------
    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(256 * 1024)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self) -> bytes:
        """One response line, without its CRLF."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                raw = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                assert raw.endswith(b"\r\n"), f"line not ended by CRLF: {raw[-80:]!r}"
                return raw[:-2]
            if not self._fill():
                raise EOFError(f"server closed the connection; unfinished line {bytes(self.buf)[:200]!r}")

    def cmd(self, command: bytes | str) -> bytes:
        """Sends one command line (CRLF added) and returns the status line."""
        if isinstance(command, str):
            command = command.encode()
        self.send(command + b"\r\n")
        return self.line()

    def ok(self, command: bytes | str) -> bytes:
        r = self.cmd(command)
        assert r.startswith(b"+OK"), f"{command!r} -> {r!r}"
        return r

    def multi(self) -> list[bytes]:
        """The lines of a multi-line body up to the terminator, as sent (stuffed)."""
        lines = []
        while True:
            line = self.line()
            if line == b".":
                return lines
            lines.append(line)

    def body(self) -> bytes:
        """A multi-line body, unstuffed, every line ended by CRLF."""
        return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in self.multi())

    def listing(self, command: str = "LIST") -> list[bytes]:
        """A multi-line listing command (LIST, UIDL, CAPA): its lines."""
        status = self.cmd(command)
        assert status.startswith(b"+OK"), f"{command} -> {status!r}"
        return self.multi()

    def retr(self, n: int) -> tuple[bytes, bytes]:
        """RETR n: (status line, unstuffed body)."""
        status = self.cmd(f"RETR {n}")
        assert status.startswith(b"+OK"), f"RETR {n} -> {status!r}"
        return status, self.body()

    def login(self, user: str, password: str) -> bytes:
        """USER/PASS; returns PASS's status line (the USER answer must be +OK)."""
        r = self.cmd(f"USER {user}")
        assert r.startswith(b"+OK"), f"USER {user} -> {r!r}"
        return self.cmd(f"PASS {password}")

    def login_ok(self, user: str, password: str) -> bytes:
        r = self.login(user, password)
        assert r.startswith(b"+OK"), f"login {user} -> {r!r}"
        return r

    def rest_until_eof(self) -> bytes:
        """Everything the server still sends before it closes; fails on timeout."""
        data = bytearray(self.buf)
        self.buf.clear()
        while True:
            chunk = self.sock.recv(256 * 1024)
            if not chunk:
                return bytes(data)
            data += chunk

    def lines_until_eof(self) -> list[bytes]:
        rest = self.rest_until_eof()
        assert rest == b"" or rest.endswith(b"\r\n"), rest
        return rest.split(b"\r\n")[:-1] if rest else []


def status_size(status: bytes) -> int:
    """The octet count in `+OK <n> octets`."""
    m = re.match(rb"\+OK (\d+) octets$", status)
    assert m, status
    return int(m.group(1))
