"""A TCP relay in front of a backend (PostgreSQL, S3, Redis) that counts
what popgate asks of it: connections, round trips (a client turn answered
by the server), and what each round trip was (an SQL statement prepared or
cached, an S3 operation, a Redis command).

Only for counting, never for timing: it adds a hop. It runs an asyncio loop
in a thread of its own.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading

from .servers import HOST

TURN_PREFIX = 4096  # bytes of a client turn kept to classify it


def classify_http(data: bytes) -> str:
    """The S3 operation of an HTTP request, and which kind of object."""
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) < 2:
        return "http ?"
    method, target = parts[0], parts[1]
    path, _, query = target.partition("?")
    segments = path.lstrip("/").split("/", 1)
    key = segments[1] if len(segments) > 1 else ""
    if method == "GET" and not key:
        return "LIST" if "list-type=2" in query or "prefix=" in query else "GET bucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if not key:
        return f"{method} bucket"
    if "/.popgate/" in "/" + key:
        what = key.rsplit("/.popgate/", 1)[-1].split("-")[0]
    else:
        what = "message"
    return f"{method} {what}"


def _pg_messages(data: bytes) -> list[str]:
    """The message types of a PostgreSQL client turn (a startup or
    SSLRequest message has no type byte: it starts with its length)."""
    if data[:1] == b"\x00":
        return ["startup"]
    out = []
    i = 0
    while i + 5 <= len(data):
        kind = chr(data[i])
        (length,) = struct.unpack("!I", data[i + 1:i + 5])
        out.append(kind)
        i += 1 + max(length, 4)
    return out


def classify_pg(data: bytes) -> str:
    """One PostgreSQL round trip: a statement prepared and run (Parse), a
    prepared statement run again (Bind), a simple query, or a bare Sync
    (sqlx's ping before handing out a pooled connection)."""
    kinds = _pg_messages(data)
    if kinds == ["startup"]:
        return "connection startup"
    if "Q" in kinds:
        return "simple query"
    if "P" in kinds:
        return "statement prepared + run"
    if "B" in kinds:
        return "cached statement run"
    if set(kinds) <= {"S", "H"}:
        return "sync (ping)"
    if "p" in kinds:
        return "authentication"
    return "other " + "".join(sorted(set(kinds)))


def classify_redis(data: bytes) -> str:
    """The first command of a RESP turn; for a script, which key it is on
    (`lock`, `alive`)."""
    parts = data.split(b"\r\n")
    args = [parts[i].decode("latin-1") for i in range(2, len(parts), 2) if i < len(parts)]
    if not args:
        return "redis ?"
    cmd = args[0].upper()
    if cmd in ("EVALSHA", "EVAL") and len(args) > 3:
        return f"{cmd} {args[3].rsplit(':', 1)[-1]}"
    return cmd


class Relay:
    """Relays 127.0.0.1:`port` (returned by `start`) to the backend on
    `target_port`, counting round trips classified by `kind`
    ("postgres", "http" or "redis")."""

    def __init__(self, target_port: int, kind: str):
        self.target_port = target_port
        self.kind = kind
        self.lock = threading.Lock()
        self.connections = 0
        self.trips: collections.Counter = collections.Counter()
        self.loop = asyncio.new_event_loop()
        self.port = 0

    def start(self) -> int:
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, HOST, 0))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        return self.port

    def reset(self) -> None:
        with self.lock:
            self.connections = 0
            self.trips.clear()

    def counts(self) -> dict:
        with self.lock:
            return {"connections": self.connections, "round_trips": sum(self.trips.values()),
                    "by_kind": dict(self.trips)}

    def stop(self) -> None:
        """Closes the listener and every relayed connection."""
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _classify(self, data: bytes) -> str:
        if self.kind == "postgres":
            return classify_pg(data)
        if self.kind == "http":
            return classify_http(data)
        return classify_redis(data)

    async def _serve(self, c_reader, c_writer):
        try:
            s_reader, s_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            c_writer.close()
            return
        with self.lock:
            self.connections += 1
        state = {"turn": bytearray(), "client_turn": False}

        async def client_to_server():
            while data := await c_reader.read(65536):
                if not state["client_turn"]:
                    state["client_turn"] = True
                    state["turn"] = bytearray()
                if len(state["turn"]) < TURN_PREFIX:
                    state["turn"] += data[:TURN_PREFIX - len(state["turn"])]
                s_writer.write(data)
                await s_writer.drain()
            s_writer.close()

        async def server_to_client():
            while data := await s_reader.read(65536):
                if state["client_turn"]:
                    state["client_turn"] = False
                    label = self._classify(bytes(state["turn"]))
                    with self.lock:
                        self.trips[label] += 1
                c_writer.write(data)
                await c_writer.drain()
            c_writer.close()

        try:
            await asyncio.gather(client_to_server(), server_to_client())
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # closed by either side, or by stop()
        finally:
            for w in (c_writer, s_writer):
                w.close()
