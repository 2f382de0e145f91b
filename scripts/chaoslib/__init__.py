"""scripts/chaos: the whole popgate stack on loopback under faults, a
ledger of what every client saw, and an audit at the end (issue 14).

- `ledger`: what was delivered, what each session saw and deleted, and the
  audit's arithmetic (pure, unit-tested).
- `mail`: the messages (each carries its id) and the body check.
- `services`: Redis, PostgreSQL, S3, haproxy and the popgate replicas.
- `workload`: the delivery stream and the client sessions.
- `faults`: the fault injector.
- `cli`: the command line, the run and the report.
"""
