"""The embedded default: `popgate serve` with no configuration at all runs
from ./data on 127.0.0.1:1100, and `popgate pw` + `popgate deliver` are
all it takes to read mail with a real client.

If 127.0.0.1:1100 (or the default metrics port) is taken on this machine,
the listener is moved with an environment override of the whole
`listeners` array (figment parses `[{...}]` from the variable); everything
else stays the embedded default.
"""

import signal
import socket
import subprocess
import time

from conftest import POPGATE_BIN, clean_env, free_port, run_popgate
from popclient import crlf

MSG = b"From: root@localhost\nSubject: hello from the default\n\n.first\nsecond\n"


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listeners_override(port):
    return {
        "POPGATE_LISTENERS": f'[{{address="127.0.0.1:{port}", tls="none", plaintext_auth=true, default_tenant="local"}}]',
        "POPGATE_METRICS__ADDRESS": f"127.0.0.1:{free_port()}",
    }


def wait_for(path, needle, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        assert proc.poll() is None, f"popgate exited ({proc.returncode}):\n{text}"
        time.sleep(0.02)
    raise AssertionError(f"no {needle!r} in the log:\n{path.read_text(errors='replace')}")


def curl_until_ok(port, path, user, password, *args):
    """curl; retried briefly because the passwd-file is re-read at most once a second."""
    deadline = time.monotonic() + 15
    while True:
        r = subprocess.run(
            ["/usr/bin/curl", "-sS", "--max-time", "20", "--user", f"{user}:{password}", *args,
             f"pop3://127.0.0.1:{port}{path}"],
            capture_output=True,
            timeout=60,
        )
        if r.returncode == 0:
            return r.stdout
        assert r.returncode == 67, r.stderr  # login denied: the new user is not read yet
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.3)


def run_default(tmp_path, port, env):
    log = tmp_path / "popgate.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [POPGATE_BIN, "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            env=clean_env(env),
        )
    try:
        text = wait_for(log, f"listening for POP3 address=127.0.0.1:{port}", proc)
        assert text.count("listening for POP3") == 1, text
        # It made its data folder.
        assert (tmp_path / "data" / "mail").is_dir()
        passwd = tmp_path / "data" / "passwd"
        assert passwd.is_file()

        # Add a user the way the passwd file's own comment says.
        r = run_popgate(["pw"], input=b"s3cret pass\n", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        hashed = r.stdout.decode().strip()
        assert hashed.startswith("{ARGON2ID}$argon2id$"), hashed
        with open(passwd, "a") as f:
            f.write(f"bob@localhost:{hashed}\n")

        r = run_popgate(["deliver", "--user", "bob@localhost"], input=MSG, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        uidl = r.stdout.decode().strip()
        assert list((tmp_path / "data" / "mail" / "localhost" / "bob" / "Maildir").glob("*/*")), "no file delivered"

        # A bare login goes to the default tenant "local" (domain localhost).
        assert curl_until_ok(port, "/1", "bob", "s3cret pass") == crlf(MSG)
        assert curl_until_ok(port, "/", "bob@localhost", "s3cret pass", "-X", "UIDL") == f"1 {uidl}\r\n".encode()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_embedded_default_end_to_end(tmp_path, popgate_bin):
    if port_free(1100) and port_free(9100):
        run_default(tmp_path, 1100, {})
    else:
        port = free_port()
        run_default(tmp_path, port, listeners_override(port))


def test_embedded_default_with_listeners_from_the_environment(tmp_path, popgate_bin):
    port = free_port()
    run_default(tmp_path, port, listeners_override(port))
