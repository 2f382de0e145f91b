"""Run real Dovecot POP3 on a Maildir, to compare popgate with it.

Dovecot's pop3 binary runs pre-authenticated on stdin/stdout when it is
started outside the dovecot master with USER set and a config file given
by -c: no daemon, no auth, no network. This module writes a minimal config
into a temporary directory, runs one session and returns the transcript.

Dovecot refuses mail access as root, so when the caller is root the Maildir
is chowned (recursively) to an unprivileged user (nobody:nogroup by default),
its ancestors get o+x where they lack it, and Dovecot is told to run as that
user. popgate, running as root in the tests, can still read and write
everything afterwards.

Stdlib only. Usage from a test:

    from dovecot_pop3 import dovecot_listing
    for num, uidl, size in dovecot_listing("/tmp/m/Maildir"):
        ...

or from a shell: python3 tests/dovecot_pop3.py /path/to/Maildir [UIDL_FORMAT]
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

POP3_BINARY = os.environ.get("DOVECOT_POP3", "/usr/lib/dovecot/pop3")
DEFAULT_UIDL_FORMAT = "%08Xu%08Xv"


class DovecotError(RuntimeError):
    pass


def _unprivileged_ids(user: str, group: str) -> tuple[int, int]:
    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid


def _allow_traversal(path: str) -> None:
    """Adds o+x to the Maildir's ancestors that lack it (popgate creates
    missing parents 0700 as root), so the unprivileged Dovecot can reach it."""
    parent = os.path.dirname(path)
    while parent and parent != "/":
        mode = os.stat(parent).st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)
        parent = os.path.dirname(parent)


def _chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def dovecot_session(
    maildir: str,
    commands: list[str],
    uidl_format: str = DEFAULT_UIDL_FORMAT,
    extra_settings: dict[str, str] | None = None,
    run_as: tuple[str, str] = ("nobody", "nogroup"),
    timeout: float = 30.0,
    strict: bool = True,
) -> str:
    """Runs one pre-authenticated Dovecot POP3 session on `maildir`.

    Sends `commands` (without line endings; QUIT is added when missing) and
    returns everything Dovecot wrote to stdout, CRLFs included. The Maildir
    is created by Dovecot if it does not exist. Dovecot's own index files
    are kept in the Maildir, as in a real Dovecot installation. With
    `strict`, any warning or error in Dovecot's log raises DovecotError.
    """
    maildir = os.path.abspath(maildir)
    if os.geteuid() == 0:
        uid, gid = _unprivileged_ids(*run_as)
        os.makedirs(maildir, exist_ok=True)
        _allow_traversal(maildir)
        _chown_tree(maildir, uid, gid)
    else:
        uid, gid = os.geteuid(), os.getegid()

    settings = {
        "protocols": "pop3",
        "mail_location": f"maildir:{maildir}",
        "pop3_uidl_format": uidl_format,
        "log_path": "/dev/stderr",
        "ssl": "no",
        "mail_uid": str(uid),
        "mail_gid": str(gid),
        "first_valid_uid": "1" if uid else "0",
        "first_valid_gid": "1" if gid else "0",
    }
    settings.update(extra_settings or {})

    if not commands or commands[-1].upper() != "QUIT":
        commands = list(commands) + ["QUIT"]

    work = tempfile.mkdtemp(prefix="dovecot-pop3-")
    try:
        os.chmod(work, 0o755)
        settings["base_dir"] = os.path.join(work, "run")
        settings["state_dir"] = os.path.join(work, "state")
        conf = os.path.join(work, "dovecot.conf")
        with open(conf, "w") as f:
            for key, value in settings.items():
                f.write(f"{key} = {value}\n")
        env = {"USER": "popgate-test", "HOME": work, "PATH": "/usr/bin:/bin"}
        proc = subprocess.run(
            [POP3_BINARY, "-c", conf],
            input="".join(c + "\r\n" for c in commands).encode(),
            capture_output=True,
            env=env,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = proc.stdout.decode("latin-1")
    log = proc.stderr.decode("latin-1", "replace")
    if proc.returncode != 0 or out.startswith("-ERR"):
        raise DovecotError(f"dovecot pop3 failed (rc={proc.returncode}): {out!r} {log}")
    complaints = [
        line
        for line in log.splitlines()
        if any(f"{level}:" in line for level in ("Warning", "Error", "Fatal", "Panic"))
    ]
    if strict and complaints:
        # e.g. "Broken file dovecot-uidlist": Dovecot disliked the Maildir.
        raise DovecotError("dovecot complained:\n" + "\n".join(complaints))
    return out


def _multiline(lines: list[str], start: int) -> tuple[list[str], int]:
    """The body of a multi-line response whose +OK line is lines[start]."""
    if not lines[start].startswith("+OK"):
        raise DovecotError(f"unexpected response {lines[start]!r}")
    body = []
    i = start + 1
    while i < len(lines) and lines[i] != ".":
        body.append(lines[i])
        i += 1
    if i == len(lines):
        raise DovecotError("multi-line response cut short (see Dovecot's log)")
    return body, i + 1


def dovecot_listing(
    maildir: str, uidl_format: str = DEFAULT_UIDL_FORMAT, **kwargs
) -> list[tuple[int, str, int]]:
    """(message number, UIDL, LIST size) for every message, as Dovecot sees them."""
    out = dovecot_session(maildir, ["UIDL", "LIST"], uidl_format, **kwargs)
    lines = out.split("\r\n")
    # A pre-authenticated session sends no greeting.
    uidls, i = _multiline(lines, 0)
    sizes, _ = _multiline(lines, i)
    by_num = {}
    for line in uidls:
        num, uidl = line.split(" ", 1)
        by_num[int(num)] = [uidl, None]
    for line in sizes:
        num, size = line.split(" ", 1)
        by_num[int(num)][1] = int(size)
    return [(num, uidl, size) for num, (uidl, size) in sorted(by_num.items())]


def dovecot_retr(maildir: str, num: int, **kwargs) -> bytes:
    """The bytes Dovecot sends for RETR num, dot-unstuffed, CRLF line endings."""
    out = dovecot_session(maildir, [f"RETR {num}"], **kwargs)
    lines = out.split("\r\n")
    body, _ = _multiline(lines, 0)
    return "".join(
        (line[1:] if line.startswith("..") else line) + "\r\n" for line in body
    ).encode("latin-1")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(f"usage: {sys.argv[0]} MAILDIR [UIDL_FORMAT]", file=sys.stderr)
        sys.exit(2)
    fmt = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_UIDL_FORMAT
    for num, uidl, size in dovecot_listing(sys.argv[1], fmt):
        print(f"{num} {uidl} {size}")
