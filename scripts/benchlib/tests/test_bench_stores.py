"""scripts/bench-stores: its configurations and the relay that counts
round trips (against a TCP echo-like server of its own)."""

import socket
import struct
import threading
import tomllib

from benchlib import relay, servers, stores


def test_each_server_gets_one_tenant_on_its_store_and_locks():
    class A:
        pg_store = ", max_connections = 32"

    class Fake(stores.Backends):
        def __init__(self):
            self.pg = stores.PgSchema("abc")
            self.redis = stores.RedisPrefix("abc")

            class S3:
                def store(self, endpoint=None):
                    return f'{{ kind = "s3", bucket = "mail", endpoint = "{endpoint or "http://127.0.0.1:1"}" }}'
            self.s3 = S3()

    class R:
        port = 7777

    table = Fake().stores("/w", A(), {"postgres": R(), "redis": R()})
    assert set(table) == set(stores.SERVERS)
    confs = {n: tomllib.loads(servers.popgate_config("/w", 1, stores.tenant("/w", s), l))
             for n, (s, l) in table.items()}
    for conf in confs.values():
        (t,) = conf["tenants"]
        assert t["domains"] == ["bench.test"] and t["auth"]["path"] == "/w/passwd"
    assert confs["maildir"]["locks"] == {"backend": "memory"}
    pg = confs["postgres"]["tenants"][0]["store"]
    assert pg["schema"] == "bench_stores_abc" and pg["max_connections"] == 32
    assert pg["url"].split("@")[1].startswith("127.0.0.1:7777/"), "through the relay"
    locks = confs["maildir+redis"]["locks"]
    assert locks["backend"] == "redis" and locks["key_prefix"] == "bench-stores-abc"
    assert locks["url"].endswith("127.0.0.1:7777")
    assert confs["maildir+redis"]["tenants"][0]["store"] == confs["maildir"]["tenants"][0]["store"]


def test_urls_are_pointed_at_another_port_keeping_credentials():
    assert stores.with_port("postgres://u:p@db:5432/test", 9) == "postgres://u:p@127.0.0.1:9/test"
    assert stores.with_port("redis://127.0.0.1:6379", 9) == "redis://127.0.0.1:9"


def pg_message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", 4 + len(body)) + body


def test_round_trips_are_classified():
    prepared = pg_message(b"P", b"\0SELECT 1\0\0\0") + pg_message(b"B", b"\0" * 8) + pg_message(b"E", b"\0" * 5) \
        + pg_message(b"S")
    assert relay.classify_pg(prepared) == "statement prepared + run"
    assert relay.classify_pg(pg_message(b"B", b"\0" * 8) + pg_message(b"E", b"\0" * 5) + pg_message(b"S")) \
        == "cached statement run"
    assert relay.classify_pg(pg_message(b"S")) == "sync (ping)"
    assert relay.classify_pg(struct.pack("!II", 8, 80877103)) == "connection startup"
    assert relay.classify_http(b"GET /mail?list-type=2&prefix=bench.test%2Fu1%2F HTTP/1.1\r\n") == "LIST"
    assert relay.classify_http(b"GET /mail/bench.test/u1/.popgate/sizes.json HTTP/1.1\r\n") == "GET sizes.json"
    assert relay.classify_http(b"PUT /mail/bench.test/u1/.popgate/fence HTTP/1.1\r\n") == "PUT fence"
    assert relay.classify_http(b"GET /mail/bench.test/u1/1733.1.ab HTTP/1.1\r\n") == "GET message"
    assert relay.classify_http(b"POST /mail?delete HTTP/1.1\r\n") == "DeleteObjects"
    resp = b"*6\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"a" * 40 + b"\r\n$1\r\n2\r\n$14\r\np:{m}:lock\r\n"
    assert relay.classify_redis(resp) == "EVALSHA lock"
    assert relay.classify_redis(b"*1\r\n$4\r\nPING\r\n") == "PING"


class Answering:
    """A server that answers every line it reads with one line."""

    def __init__(self):
        self.sock = socket.create_server((servers.HOST, 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        with conn, conn.makefile("rb") as f:
            for line in f:
                conn.sendall(b"+" + line)


def test_the_relay_counts_one_round_trip_per_answered_turn():
    backend = Answering()
    r = relay.Relay(backend.port, "redis")
    port = r.start()
    try:
        with socket.create_connection((servers.HOST, port)) as c, c.makefile("rb") as f:
            for _ in range(3):
                c.sendall(b"*1\r\n$4\r\nPING\r\n")
                for _ in range(3):
                    f.readline()
            # Two commands in one write, answered together: one round trip.
            c.sendall(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n")
            for _ in range(6):
                f.readline()
        assert r.counts()["round_trips"] == 4
        assert r.counts()["connections"] == 1
        r.reset()
        assert r.counts() == {"connections": 0, "round_trips": 0, "by_kind": {}}
    finally:
        r.stop()
