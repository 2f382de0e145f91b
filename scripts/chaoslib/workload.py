"""What happens to the stack during a run: the delivery stream (Maildir
files written as an MTA does, `popgate deliver` for PostgreSQL and S3) and
the clients, each a loop of random POP3 sessions through haproxy. Every
thing a client observes goes to the ledger."""

from __future__ import annotations

import os
import random
import threading
import time

from .ledger import Ledger, Session
from .mail import message, message_id, wire_body
from .services import HOST, Stack
from popclient import Pop3  # noqa: E402  (tests/popclient.py; mail put tests/ on sys.path)

CLIENT_TIMEOUT = 8.0  # past a stopped replica's pause: its clients see it come back


class Deliveries(threading.Thread):
    """One delivery thread per kind of store ("maildir", or "deliver" for the
    stores `popgate deliver` writes to)."""

    def __init__(self, stack: Stack, ledger: Ledger, stop: threading.Event, seed: int, kind: str,
                 interval: float = 0.15):
        super().__init__(daemon=True, name=f"deliver-{kind}")
        self.stack, self.ledger, self.stop, self.kind, self.interval = stack, ledger, stop, kind, interval
        self.rng = random.Random(seed)
        self.logins = [u for u in stack.mailboxes if (stack.store_of(u) == "maildir") == (kind == "maildir")]
        self.seq = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.one()
            self.stop.wait(self.rng.uniform(0, 2 * self.interval))

    def one(self) -> None:
        login = self.rng.choice(self.logins)
        self.seq += 1
        mid = f"{login}#{self.kind[0]}{self.seq}"
        data = message(self.rng, mid, big=self.rng.random() < 0.05)
        if self.kind == "maildir":
            md = self.stack.maildir(login)
            for sub in ("tmp", "new", "cur"):
                (md / sub).mkdir(parents=True, exist_ok=True)
            name = f"{int(time.time())}.M{self.seq}P{os.getpid()}.chaos"
            (md / "tmp" / name).write_bytes(data)
            self.ledger.delivered(mid, login, data)
            os.rename(md / "tmp" / name, md / "new" / name)
        else:
            # In the ledger before the store has it, so a session that sees it
            # finds its bytes; confirmed only when deliver says so.
            self.ledger.delivered(mid, login, data, confirmed=False)
            ok, _err = self.stack.deliver(login, data)
            if ok:
                self.ledger.delivered(mid, login, data, confirmed=True)
            else:
                self.ledger.count("deliveries_refused")


class Client(threading.Thread):
    """Random sessions, one after another, until `stop`."""

    def __init__(self, stack: Stack, ledger: Ledger, stop: threading.Event, seed: int, port: int,
                 uidls: dict, uidls_lock: threading.Lock):
        super().__init__(daemon=True, name=f"client-{seed}")
        self.stack, self.ledger, self.stop, self.port = stack, ledger, stop, port
        self.rng = random.Random(seed)
        self.uidls, self.uidls_lock = uidls, uidls_lock  # login -> {uidl: id}, learned from RETR

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.session()
            except (OSError, EOFError, AssertionError):
                pass  # the session's record says how far it got
            self.stop.wait(self.rng.uniform(0, 0.1))

    def known(self, login: str, uidl: bytes) -> str | None:
        with self.uidls_lock:
            return self.uidls.get(login, {}).get(uidl)

    def learn(self, login: str, uidl: bytes, mid: str) -> None:
        with self.uidls_lock:
            self.uidls.setdefault(login, {})[uidl] = mid

    def session(self) -> None:
        login = self.rng.choice(list(self.stack.mailboxes))
        led = self.ledger
        led.count("connections")
        c = Pop3(self.port, host=HOST, timeout=CLIENT_TIMEOUT, greeting=False)
        try:
            greeting = c.line()
            if not greeting.startswith(b"+OK"):
                led.count("refused_at_greeting")
                return
            if not c.cmd(f"USER {login}").startswith(b"+OK"):
                return
            sent = time.monotonic()
            r = c.cmd(f"PASS {self.stack.mailboxes[login]}")
            if r.startswith(b"-ERR [IN-USE]"):
                led.count("in_use")
                return
            if not r.startswith(b"+OK"):
                led.count("login_refused")
                return
            s = Session(login, sent, time.monotonic())
            led.session(s)
            self.transaction(c, s)
        finally:
            c.close()

    def ok(self, c: Pop3, s: Session, command: str) -> bytes | None:
        """One command; its status line if +OK (and the session's last +OK moves)."""
        sent = time.monotonic()
        r = c.cmd(command)
        if r.startswith(b"+OK"):
            s.last_ok_sent, s.last_ok_read = sent, time.monotonic()
            return r
        self.ledger.count("commands_refused")
        return None

    def transaction(self, c: Pop3, s: Session) -> None:
        rng, led = self.rng, self.ledger
        if self.ok(c, s, "STAT") is None:
            return
        numbers: dict[int, bytes] = {}  # n -> uidl
        if self.ok(c, s, "UIDL") is not None:
            for line in c.multi():
                n, uidl = line.split(b" ", 1)
                numbers[int(n)] = uidl
                mid = self.known(s.mailbox, uidl)
                if mid:
                    s.listed.add(mid)
        if rng.random() < 0.5 and self.ok(c, s, "LIST") is not None:
            listed = c.multi()
            if len(listed) != len(numbers):
                led.problem("corrupted", f"{s.mailbox}: LIST has {len(listed)} lines, UIDL {len(numbers)}")
        retrieved: dict[int, str] = {}
        for n in rng.sample(sorted(numbers), min(len(numbers), rng.randint(0, 4))):
            if rng.random() < 0.05:
                c.send(f"RETR {n}\r\n")
                c.sock.recv(rng.randint(1, 4096))  # the status line and a bit of the body, then gone
                led.fault("client-vanish-mid-retr", logged=False)
                return
            if self.ok(c, s, f"RETR {n}") is None:
                continue
            mid = led.check_body(s.mailbox, message_id(body := c.body()), body, wire_body)
            if mid:
                s.listed.add(mid)
                retrieved[n] = mid
                self.learn(s.mailbox, numbers[n], mid)
        # Some clients take their time (a phone on a slow link): their
        # sessions are still open when a fault comes.
        slow = rng.random() < 0.2
        if slow:
            self.stop.wait(rng.uniform(0.2, 3.0))
        for n, mid in retrieved.items():
            if rng.random() < 0.5 and self.ok(c, s, f"DELE {n}") is not None:
                s.deleted.add(mid)
        if slow:
            self.stop.wait(rng.uniform(0.2, 3.0))
        end = rng.random()
        if end < 0.1:
            led.count("dropped_mid_session")
            return
        sent = time.monotonic()
        s.quit = "ambiguous"
        try:
            r = c.cmd("QUIT")
        except (OSError, EOFError):
            led.count("quit_unanswered")
            return
        if r.startswith(b"+OK"):
            s.quit, s.quit_ok, s.last_ok_sent = "ok", time.monotonic(), sent
            s.last_ok_read = s.quit_ok
        else:
            s.quit = "err"
            led.count("quit_refused")


def audit_contents(stack: Stack, ledger: Ledger, port: int, timeout: float = 30.0) -> dict[str, set[str]]:
    """Every mailbox read through `port` (a fresh replica): the ids found,
    each body checked against its delivery."""
    final: dict[str, set[str]] = {}
    for login, password in stack.mailboxes.items():
        deadline = time.monotonic() + timeout
        while True:
            c = Pop3(port, host=HOST, timeout=30)
            r = c.login(login, password)
            if r.startswith(b"+OK"):
                break
            c.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"audit: {login} still refused after {timeout}s: {r!r}")
            time.sleep(0.2)
        ids = set()
        with c:
            status = c.cmd("UIDL")
            if not status.startswith(b"+OK"):
                raise RuntimeError(f"audit: UIDL of {login}: {status!r}")
            for line in c.multi():
                n = int(line.split(b" ", 1)[0])
                status = c.cmd(f"RETR {n}")
                if not status.startswith(b"+OK"):
                    raise RuntimeError(f"audit: RETR {n} of {login}: {status!r}")
                body = c.body()
                mid = ledger.check_body(login, message_id(body), body, wire_body)
                if mid:
                    ids.add(mid)
            c.cmd("QUIT")
        final[login] = ids
        ledger.count("audited_messages", len(ids))
    return final


def remove_a_file(stack: Stack, ledger: Ledger, rng: random.Random) -> bool:
    """Sabotage: one Maildir message nobody DELE'd so far is removed behind
    popgate's back. True if one was."""
    with ledger.lock:
        deleted = set().union(*(s.deleted for s in ledger.sessions)) if ledger.sessions else set()
    for login in rng.sample(list(stack.mailboxes), len(stack.mailboxes)):
        if stack.store_of(login) != "maildir":
            continue
        for sub in ("cur", "new"):
            d = stack.maildir(login) / sub
            for name in sorted(os.listdir(d)) if d.is_dir() else []:
                path = d / name
                try:
                    mid = message_id(wire_body(path.read_bytes()))
                except OSError:
                    continue
                if mid and mid not in deleted:
                    path.unlink()
                    return True
    return False


__all__ = ["Deliveries", "Client", "audit_contents", "remove_a_file"]
