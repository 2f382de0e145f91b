"""The popgate vs Dovecot benchmark behind scripts/bench, as a package:

- dataset: the Maildirs and the passwd-file both servers serve
- procfs:  CPU time, memory and processes from /proc
- servers: starting, waiting for and stopping popgate and Dovecot
- runner:  the scenarios, pop3-loadgen runs and the UIDL/LIST cross-check
- report:  the tables printed at the end
- cli:     the command line and the run from start to end
- stores:  scripts/bench-stores: Maildir, PostgreSQL and S3, in-process and
           Redis locks, at session rate (issue 18)
- services: SeaweedFS, a PostgreSQL schema and a Redis prefix of its own
- relay:   a TCP relay that counts round trips to a backend, by kind

Stdlib only. The unit tests (scripts/benchlib/tests) run in scripts/test;
they run no benchmark.
"""
