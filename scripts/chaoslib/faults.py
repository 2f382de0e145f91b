"""The fault injector: every kind in turn (in a shuffled order each round),
spread over the run, each recorded in the ledger when it has happened."""

from __future__ import annotations

import random
import threading
import time

from .ledger import Ledger
from .services import Stack
from .workload import remove_a_file

KINDS = ("replica-kill", "replica-stop", "redis-restart", "pg-terminate", "pg-restart", "s3-restart")


def kinds(sentinel: bool) -> tuple[str, ...]:
    """The fault kinds as the ledger names them."""
    return tuple("redis-failover" if sentinel and k == "redis-restart" else k for k in KINDS)


class Faults(threading.Thread):
    def __init__(self, stack: Stack, ledger: Ledger, stop: threading.Event, seed: int, seconds: float,
                 rounds: int, pause: float, sabotage: str | None = None):
        super().__init__(daemon=True, name="faults")
        self.stack, self.ledger, self.stop = stack, ledger, stop
        self.rng = random.Random(seed)
        self.pause = pause  # how long a stopped replica stays stopped (past the lock ttl)
        self.plan = []
        for _ in range(rounds):
            kinds = list(KINDS)
            self.rng.shuffle(kinds)
            self.plan += kinds
        if sabotage == "remove-file":
            for i in range(3):
                self.plan.insert(len(self.plan) * (i + 1) // 4, "sabotage-remove-file")
        self.gap = seconds / (len(self.plan) + 1)
        self.error: Exception | None = None

    def run(self) -> None:
        """Fault i at about (i + 1) * gap into the run, or at once when the
        ones before took longer; the run's load lasts until the plan is done."""
        start = time.monotonic()
        try:
            for i, kind in enumerate(self.plan):
                due = start + (i + self.rng.uniform(0.5, 1.0)) * self.gap
                self.stop.wait(max(0.0, due - time.monotonic()))
                getattr(self, kind.replace("-", "_"))()
        except Exception as e:  # noqa: BLE001  (reported by the run: a fault that cannot be injected fails it)
            self.error = e

    def replica_kill(self) -> None:
        rep = self.rng.choice([r for r in self.stack.replicas if r.alive() and not r.stopped])
        rep.kill()
        self.ledger.fault("replica-kill")
        time.sleep(0.3)
        rep.start()

    def replica_stop(self) -> None:
        rep = self.rng.choice([r for r in self.stack.replicas if r.alive() and not r.stopped])
        rep.pause()
        self.ledger.fault("replica-stop")
        time.sleep(self.pause)
        rep.resume()

    def redis_restart(self) -> None:
        """Redis restarted empty, or with Sentinel a failover."""
        self.ledger.fault(self.stack.redis.fault)
        self.stack.redis.inject(down=1.0)

    def pg_terminate(self) -> None:
        for _ in range(3):
            self.stack.pg.terminate_popgate()
            time.sleep(0.2)
        self.ledger.fault("pg-terminate")

    def pg_restart(self) -> None:
        self.stack.pg.stop()
        self.ledger.fault("pg-restart")
        time.sleep(1.5)
        self.stack.pg.start()

    def s3_restart(self) -> None:
        self.stack.s3.stop()
        self.ledger.fault("s3-restart")
        time.sleep(1.5)
        self.stack.s3.start()

    def sabotage_remove_file(self) -> None:
        if remove_a_file(self.stack, self.ledger, self.rng):
            self.ledger.fault("sabotage-remove-file")

    def heal(self) -> None:
        """After the run: every part up again (a fault cut short by the end)."""
        for rep in self.stack.replicas:
            if rep.stopped:
                rep.resume()
            if not rep.alive():
                rep.start()
