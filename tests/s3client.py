"""A loopback S3 server for the S3 store's end-to-end tests, and a small S3
client (AWS Signature V4, standard library only) to look at and change the
bucket behind popgate's back, as an MTA or an operator would.

The server is s3s-fs, started by `scripts/s3-server PORT DIR` (which
installs it first if it is missing): objects are plain files under DIR, the
S3 API checks SigV4 signatures with the keys below.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACCESS_KEY = "popgate-test"
SECRET_KEY = "popgate-test-secret"
REGION = "us-east-1"
BUCKET = "mail"
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Error(Exception):
    def __init__(self, status: int, body: bytes):
        super().__init__(f"S3 answered {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class S3Client:
    """Path-style S3 requests to one endpoint, signed with SigV4."""

    def __init__(self, port: int, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, timeout: float = 30):
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.access_key = access_key
        self.secret_key = secret_key
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    # -- signing ---------------------------------------------------------
    def _sign(self, method: str, path: str, query: dict, headers: dict, payload_hash: str) -> dict:
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        headers = {k.lower(): str(v).strip() for k, v in headers.items()}
        headers["host"] = self.host
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = payload_hash
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(str(v), safe='-_.~')}"
            for k, v in sorted(query.items())
        )
        signed = sorted(headers)
        canonical = "\n".join(
            [
                method,
                urllib.parse.quote(path, safe="/-_.~"),
                canonical_query,
                "".join(f"{h}:{headers[h]}\n" for h in signed),
                ";".join(signed),
                payload_hash,
            ]
        )
        scope = f"{day}/{REGION}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}"
        )
        return headers

    def request(self, method: str, key: str = "", query: dict | None = None, body: bytes = b"",
                headers: dict | None = None, bucket: str = BUCKET) -> tuple[int, dict, bytes]:
        path = f"/{bucket}" + (f"/{key}" if key else "")
        query = query or {}
        hdrs = self._sign(method, path, query, headers or {}, hashlib.sha256(body).hexdigest())
        url = urllib.parse.quote(path, safe="/-_.~")
        if query:
            url += "?" + urllib.parse.urlencode(sorted(query.items()), quote_via=urllib.parse.quote, safe="-_.~")
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self._conn.request(method, url, body=body, headers=hdrs)
                resp = self._conn.getresponse()
                data = resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ok(self, status: int, body: bytes) -> None:
        if status // 100 != 2:
            raise S3Error(status, body)

    # -- operations ------------------------------------------------------
    def create_bucket(self, bucket: str = BUCKET) -> None:
        status, _, body = self.request("PUT", bucket=bucket)
        self._ok(status, body)

    def put(self, key: str, data: bytes, metadata: dict | None = None) -> None:
        headers = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        status, _, body = self.request("PUT", key, body=data, headers=headers)
        self._ok(status, body)

    def get(self, key: str) -> bytes:
        status, _, body = self.request("GET", key)
        self._ok(status, body)
        return body

    def head(self, key: str) -> dict | None:
        """The response headers, or None when there is no such object."""
        status, headers, body = self.request("HEAD", key)
        if status == 404:
            return None
        self._ok(status, body)
        return headers

    def delete(self, key: str) -> None:
        status, _, body = self.request("DELETE", key)
        self._ok(status, body)

    def list(self, prefix: str = "", page_size: int = 1000) -> list[tuple[str, int]]:
        """(key, size) of every object under `prefix`, following every page."""
        out = []
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": str(page_size)}
            if token:
                query["continuation-token"] = token
            status, _, body = self.request("GET", query=query)
            self._ok(status, body)
            root = ET.fromstring(body)
            for c in root.findall(f"{_NS}Contents"):
                out.append((c.findtext(f"{_NS}Key"), int(c.findtext(f"{_NS}Size"))))
            if root.findtext(f"{_NS}IsTruncated") != "true":
                return out
            token = root.findtext(f"{_NS}NextContinuationToken")

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k, _ in self.list(prefix)]


class S3Server:
    """s3s-fs on 127.0.0.1, on a free port, storing under `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "s3-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = root / "s3s-fs.log"
        self.client = S3Client(self.port)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        assert self.proc is None or self.proc.poll() is not None
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, S3_ACCESS_KEY=ACCESS_KEY, S3_SECRET_KEY=SECRET_KEY)
        self.proc = subprocess.Popen(
            [str(REPO / "scripts" / "s3-server"), str(self.port), str(self.data)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"s3s-fs exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"s3s-fs did not listen on {self.port}:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        """Stops the server (its data stays)."""
        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None:
            self._log.close()

    def store(self, prefix: str = "%d/%n/", **extra) -> dict:
        """A tenant's `store` table that points at this server."""
        return {
            "kind": "s3",
            "bucket": BUCKET,
            "prefix": prefix,
            "region": REGION,
            "endpoint": self.endpoint,
            "force_path_style": True,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            **extra,
        }
