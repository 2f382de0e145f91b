"""The ledger of a chaos run and the audit at its end.

Every figure comes from what a client could observe: a delivery that
succeeded, a response line and the times around it (time.monotonic(), one
clock for every thread). Nothing here talks to a server, so the arithmetic
is unit-tested on its own (tests/test_ledger.py).

The rules the audit checks, per mailbox:

- present at the end = delivered - deleted by committed QUITs. A QUIT whose
  answer the client never saw is ambiguous: its DELE'd messages may be
  present or gone. A delivery that failed (the store was down) may be
  present or absent.
- A message gone that no session DELE'd is *lost*; one gone that only
  sessions without a +OK QUIT DELE'd is *deleted without a committed QUIT*.
- A message whose committed delete the client saw is never served again to
  a session that logged in after that (*resurrected*).
- Every body served (during the run and in the audit) is the exact message
  delivered to that mailbox: otherwise *wrong mailbox* or *corrupted*.
- Two sessions of one mailbox hold it at once when one got +OK to PASS
  before the other sent a command that was still answered +OK: both times
  are client-side and the order is certain, so this fails the run. When
  the other's +OK only *arrived* after (it may have been answered before,
  or a replica stopped with the command in its buffer answered it on
  resuming), the overlap is possible, not certain: it is printed apart.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

# The figures that must be zero.
FAILURES = ("lost", "deleted_without_quit", "wrong_mailbox", "corrupted", "resurrected", "two_holders")


@dataclass
class Delivery:
    mailbox: str
    data: bytes
    confirmed: bool  # False: the delivery reported a failure, the message may exist


@dataclass
class Session:
    """One login that got +OK to PASS."""

    mailbox: str
    pass_sent: float
    pass_ok: float  # when the +OK of PASS was read
    replica: str = ""
    last_ok_sent: float = 0.0  # when the last command answered +OK was sent
    last_ok_read: float = 0.0  # ... and when its +OK was read
    listed: set = field(default_factory=set)  # ids seen in UIDL or RETR
    deleted: set = field(default_factory=set)  # ids whose DELE got +OK
    quit: str = "none"  # none | ok | err | ambiguous
    quit_ok: float = 0.0

    def __post_init__(self):
        self.last_ok_sent = self.last_ok_sent or self.pass_sent
        self.last_ok_read = self.last_ok_read or self.pass_ok


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.deliveries: dict[str, Delivery] = {}
        self.sessions: list[Session] = []
        self.counts: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.t0 = time.monotonic()
        self.wall0 = time.time()  # to find a moment in the servers' logs
        self.fault_log: list[tuple[float, str]] = []  # (when, kind) of every fault but the clients'
        self.problems: list[str] = []  # a line for each nonzero failure, for the report

    # -- recording (thread-safe) ---------------------------------------
    def delivered(self, mid: str, mailbox: str, data: bytes, confirmed: bool = True) -> None:
        with self.lock:
            self.deliveries[mid] = Delivery(mailbox, data, confirmed)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def fault(self, kind: str, logged: bool = True) -> None:
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1
            if logged:
                self.fault_log.append((time.monotonic(), kind))

    def at(self, t: float) -> str:
        """A monotonic time as the UTC clock of the logs."""
        wall = self.wall0 + (t - self.t0)
        return time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d}"

    def last_fault(self, t: float) -> str:
        """The fault that came last before `t`, for a problem's line."""
        before = [(w, k) for w, k in self.fault_log if w <= t]
        if not before:
            return "no fault before"
        w, k = before[-1]
        return f"{t - w:.1f} s after {k} (at t={w - self.t0:.1f} s)"

    def problem(self, kind: str, text: str) -> None:
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if len(self.problems) < 50:
                self.problems.append(f"{kind}: {text}")

    def session(self, s: Session) -> None:
        with self.lock:
            self.sessions.append(s)

    def check_body(self, mailbox: str, mid: str | None, body: bytes, expected_wire) -> str | None:
        """Checks a body served to `mailbox`; returns its id if it is the
        message delivered there. `expected_wire(data)` is what RETR sends
        for stored bytes `data`."""
        self.count("messages_checked")
        with self.lock:
            d = self.deliveries.get(mid) if mid else None
        if d is None:
            self.problem("corrupted", f"{mailbox}: a body with no known id {mid!r} ({len(body)} octets)")
            return None
        if d.mailbox != mailbox:
            self.problem("wrong_mailbox", f"{mid} (delivered to {d.mailbox}) served to {mailbox}")
            return None
        if expected_wire(d.data) != body:
            self.problem("corrupted", f"{mid}: {len(body)} octets served, not the {len(d.data)} delivered")
            return None
        return mid

    # -- the audit -----------------------------------------------------
    def two_holders(self) -> tuple[int, float, int]:
        """(pairs of sessions that certainly held one mailbox at once, the
        longest such moment in s, pairs that possibly did)."""
        by_box: dict[str, list[Session]] = {}
        for s in self.sessions:
            by_box.setdefault(s.mailbox, []).append(s)
        pairs, longest, possible = 0, 0.0, 0
        for sessions in by_box.values():
            sessions.sort(key=lambda s: s.pass_ok)
            for i, a in enumerate(sessions):
                for b in sessions[i + 1:]:
                    if b.pass_ok < a.last_ok_sent:
                        # b held the lock (its PASS was answered) before a sent
                        # a command that a still answered +OK.
                        pairs += 1
                        longest = max(longest, a.last_ok_sent - b.pass_ok)
                        self.problem("two_holders", f"{b.mailbox}: a login got +OK at {self.at(b.pass_ok)}, "
                                     f"another session's command sent at {self.at(a.last_ok_sent)} was "
                                     f"answered +OK (quit: {a.quit}; {self.last_fault(b.pass_ok)})")
                    elif b.pass_sent < a.last_ok_read:
                        possible += 1
        return pairs, longest, possible

    def audit(self, final: dict[str, set[str]]) -> dict:
        """`final`: mailbox -> the ids found in it at the end (every mailbox
        delivered to must be a key). Returns the figures; also counts the
        resurrections seen during the run."""
        committed: dict[str, float] = {}  # id -> when the deleting QUIT's +OK was read
        ambiguous: set[str] = set()
        dele_uncommitted: set[str] = set()
        for s in self.sessions:
            if s.quit == "ok":
                for mid in s.deleted:
                    committed[mid] = min(committed.get(mid, s.quit_ok), s.quit_ok)
            elif s.quit == "ambiguous":
                ambiguous |= s.deleted
            else:
                dele_uncommitted |= s.deleted
        for s in self.sessions:
            for mid in s.listed:
                if mid in committed and s.pass_sent > committed[mid]:
                    self.problem("resurrected", f"{mid} served to a session that logged in after its delete")
        for box, ids in final.items():
            for mid in ids:
                d = self.deliveries.get(mid)
                if d is None or d.mailbox != box:
                    continue  # the audit's body check counted it
                if mid in committed:
                    self.problem("resurrected", f"{mid} is still in {box} after a committed delete")
        for mid, d in self.deliveries.items():
            present = mid in final.get(d.mailbox, set())
            if present or mid in committed or mid in ambiguous or not d.confirmed:
                continue
            if mid in dele_uncommitted:
                self.problem("deleted_without_quit", f"{mid} is gone from {d.mailbox}; no QUIT that deleted it was +OK")
            else:
                self.problem("lost", f"{mid} is gone from {d.mailbox}; nobody deleted it")
        with self.lock:
            self.counts["two_holders"] = 0  # counted again by two_holders()
        pairs, longest, possible = self.two_holders()
        with self.lock:
            self.counts["two_holders"] = pairs
            self.counts["two_holders_possible"] = possible
        figures = {
            "sessions": len(self.sessions),
            "committed_quits": sum(1 for s in self.sessions if s.quit == "ok"),
            "ambiguous_quits": sum(1 for s in self.sessions if s.quit == "ambiguous"),
            "delivered": sum(1 for d in self.deliveries.values() if d.confirmed),
            "deliveries_failed": sum(1 for d in self.deliveries.values() if not d.confirmed),
            "deleted_committed": len(committed),
            "longest_two_holders_ms": round(longest * 1000, 1),
            "faults": dict(sorted(self.faults.items())),
        }
        for k, v in self.counts.items():
            figures.setdefault(k, v)
        for k in ("messages_checked", *FAILURES):
            figures.setdefault(k, 0)
        return figures


def failed(figures: dict) -> list[str]:
    """The failure figures that are not zero."""
    return [k for k in FAILURES if figures.get(k, 0)]
