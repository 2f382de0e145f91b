"""End-to-end: a per-user mailbox location from the directory (Dovecot's
userdb `mail`), from a MariaDB `password_query` column and from an HTTP
hook's `"location"` field. A location below the tenant's Maildir root is
served; one outside it (`..`, another tenant's root, /etc) refuses the
login with [SYS/TEMP], opens nothing and logs a warning naming the user
and the value.
"""

from __future__ import annotations

import os
import poplib
from pathlib import Path

import pytest

from conftest import run_popgate
from test_http_auth import Hook
from test_ldap import entry, ldap_auth, slapd, ssha  # noqa: F401
from test_sql_directory import MAILBOX, hashed, login, mariadb, refused  # noqa: F401

QUERY = ("SELECT username AS user, password, maildir AS mail FROM mailbox "
         "WHERE username = '%u' AND active = '1'")


def maildir_with(path: Path, name: str, body: bytes) -> None:
    """A Maildir holding one new message, written as an MTA would."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    (path / "new" / name).write_bytes(body)


def uidl_names(pop: poplib.POP3) -> list[str]:
    return [line.split()[1].decode() for line in pop.uidl()[1]]


def outside_locations(root: Path) -> dict[str, str]:
    """Logins whose location is not below globex's root, by what is wrong."""
    return {
        "dotdot@globex.example": f"maildir:{root}/globex/../acme/acme.example/dave/Maildir",
        "neighbour@globex.example": f"{root}/acme/acme.example/dave/Maildir",
        "etc@globex.example": "/etc",
    }


def assert_refused_and_untouched(srv, root: Path, users: dict[str, str], password) -> None:
    dave = root / "acme" / "acme.example" / "dave" / "Maildir"
    for user, location in users.items():
        err = refused(srv, user, password(user))
        assert err.startswith("-ERR [SYS/TEMP]"), (user, err)
    # Nothing was opened: an open would have moved new/ to cur/ and written
    # a dovecot-uidlist there.
    assert sorted(p.name for p in dave.iterdir()) == ["cur", "new", "tmp"]
    assert [p.name for p in (dave / "new").iterdir()] == ["1700000000.M1P1.dave"]
    log = srv.log()
    for user, location in users.items():
        warned = [line for line in log.splitlines()
                  if "location outside this tenant's root" in line and user in line]
        assert warned and location in warned[0], (user, log[-3000:])
    # The other tenant's user still has his mail, untouched.
    pop = login(srv, "dave@acme.example", "davepw")
    assert pop.stat()[0] == 1
    pop.quit()


def test_a_sql_row_names_the_users_maildir_below_the_tenant_root(popgate, mariadb):
    srv = popgate(tenants={"globex": {"auth": {
        "kind": "sql", "url": mariadb.url("postfix"), "password_query": QUERY,
        "query_timeout": "2s", "connect_timeout": "1s"}}}, start=False)
    root = srv.root
    vmail = root / "globex" / "globex.example" / "vmail-bob" / "Maildir"
    maildir_with(vmail, "1700000000.M1P1.only-here", b"Subject: where the row says\r\n\r\nonly here\r\n")
    maildir_with(root / "acme" / "acme.example" / "dave" / "Maildir", "1700000000.M1P1.dave",
                 b"Subject: dave's\r\n\r\nacme mail\r\n")
    pw = hashed("BLF-CRYPT", "loc pw")
    rows = {
        "sqlbob@globex.example": f"maildir:{vmail}",
        # The same Maildir, spelled differently: it shares the lock.
        "sqlbob2@globex.example": str(vmail).replace("/globex/", "/globex//./") + "/",
        "plain@globex.example": "",
        **outside_locations(root),
    }
    values = ", ".join(f"('{u}', '{pw}', '{m}', '{u.split('@')[0]}', 'globex.example')"
                       for u, m in rows.items())
    mariadb.sql("CREATE DATABASE postfix; USE postfix;" + MAILBOX
                + f"INSERT INTO mailbox (username, password, maildir, local_part, domain) VALUES {values};")
    srv.start()

    pop = login(srv, "sqlbob@globex.example", "loc pw")
    assert pop.stat()[0] == 1
    assert uidl_names(pop) and b"only here" in b"\r\n".join(pop.retr(1)[1])
    # The other login on the same Maildir waits for the lock.
    err = refused(srv, "sqlbob2@globex.example", "loc pw")
    assert err.startswith("-ERR [IN-USE]"), err
    uidls = uidl_names(pop)
    pop.quit()
    pop = login(srv, "sqlbob2@globex.example", "loc pw")
    assert uidl_names(pop) == uidls
    pop.quit()
    # The template's own place for sqlbob was never used.
    assert not (root / "globex" / "globex.example" / "sqlbob").exists()
    # An empty column is no location: the template's Maildir.
    srv.deliver("plain@globex.example", b"Subject: t\r\n\r\ntemplate mail\r\n")
    pop = login(srv, "plain@globex.example", "loc pw")
    assert pop.stat()[0] == 1
    pop.quit()

    assert_refused_and_untouched(srv, root, outside_locations(root), lambda _: "loc pw")


def test_an_http_hook_names_the_users_maildir_below_the_tenant_root(popgate):
    hook = Hook()
    try:
        srv = popgate(tenants={"globex": {"auth": {
            "kind": "http", "url": hook.url, "timeout": "2s", "cache_ttl": "0s"}}}, start=False)
        root = srv.root
        vmail = root / "globex" / "hosted" / "bob"
        maildir_with(vmail, "1700000000.M2P2.hooked", b"Subject: hook\r\n\r\nfrom the hook's place\r\n")
        maildir_with(root / "acme" / "acme.example" / "dave" / "Maildir", "1700000000.M1P1.dave",
                     b"Subject: dave's\r\n\r\nacme mail\r\n")
        locations = {"bob@globex.example": str(vmail), **outside_locations(root)}

        def answer(body):
            if body["request"] != "auth":
                return 200, {"exists": body.get("user") in locations}
            ok = body["user"] in locations and body["password"] == "hook pw"
            return 200, {"allow": ok, "location": locations.get(body["user"])}

        hook.answer = answer
        srv.start()
        pop = login(srv, "bob@globex.example", "hook pw")
        assert pop.stat()[0] == 1
        assert b"from the hook's place" in b"\r\n".join(pop.retr(1)[1])
        pop.quit()
        outside = outside_locations(root)
        assert_refused_and_untouched(srv, root, outside, lambda _: "hook pw")
    finally:
        hook.close()


def test_an_ldap_attribute_names_the_users_maildir_below_the_tenant_root(popgate, slapd):
    srv = popgate(tenants={"globex": {"auth": ldap_auth(slapd, location_attribute="description")}},
                  start=False)
    root = srv.root
    vmail = root / "globex" / "ldap" / "bob" / "Maildir"
    maildir_with(vmail, "1700000000.M3P3.ldap", b"Subject: ldap\r\n\r\nfrom the entry's place\r\n")
    maildir_with(root / "acme" / "acme.example" / "dave" / "Maildir", "1700000000.M1P1.dave",
                 b"Subject: dave's\r\n\r\nacme mail\r\n")
    outside = outside_locations(root)
    ldif = ""
    for user, location in {"locbob@globex.example": f"maildir:{vmail}", **outside}.items():
        uid = user.split("@")[0]
        ldif += entry(uid, user, ssha("ldap pw")).rstrip("\n") + f"\ndescription: {location}\n\n"
    slapd.add(ldif)
    srv.start()
    pop = login(srv, "locbob@globex.example", "ldap pw")
    assert b"from the entry's place" in b"\r\n".join(pop.retr(1)[1])
    pop.quit()
    assert_refused_and_untouched(srv, root, outside, lambda _: "ldap pw")


@pytest.mark.parametrize("bad", ["/etc", "../x"])
def test_a_refused_location_is_not_a_wrong_password(popgate, bad):
    """A wrong password with a bad location is still [AUTH]: the location
    is looked at only once the password matched."""
    hook = Hook()
    try:
        srv = popgate(tenants={"globex": {"auth": {"kind": "http", "url": hook.url}}})
        hook.answer = lambda body: (200, {"allow": body.get("password") == "ok", "location": bad})
        assert refused(srv, "x@globex.example", "wrong").startswith("-ERR [AUTH]")
        assert refused(srv, "x@globex.example", "ok").startswith("-ERR [SYS/TEMP]")
    finally:
        hook.close()


def test_deliver_puts_mail_where_a_login_opens(popgate):
    """`popgate deliver` to a passwd-file user whose userdb_mail names a
    Maildir of its own writes there (not to the template's path), and POP3
    serves it; a location outside the tenant's root is a temporary failure
    (EX_TEMPFAIL: the MTA keeps the message) that writes nothing."""
    srv = popgate(start=False)
    root = srv.root
    own = root / "acme" / "boxes" / "dave-own"
    passwd = srv.passwd["acme"]
    lines = passwd.read_text().splitlines()
    lines = [f"{line}::::::userdb_mail=maildir:{own}" if line.startswith("dave@acme.example:") else line
             for line in lines]
    lines.append("evil@acme.example:{PLAIN}evilpw::::::userdb_mail=maildir:/etc")
    passwd.write_text("\n".join(lines) + "\n")
    srv.start()

    uidl = srv.deliver("dave@acme.example", b"Subject: to the row's Maildir\n\nhello dave\n")
    assert len(os.listdir(own / "new")) == 1
    assert not srv.maildir("dave@acme.example").exists(), "nothing under the template's path"
    pop = login(srv, "dave@acme.example", "davepw")
    assert uidl_names(pop) == [uidl]
    assert b"hello dave" in b"\r\n".join(pop.retr(1)[1])
    pop.quit()

    r = run_popgate(["deliver", "--config", str(srv.config_path), "--user", "evil@acme.example"],
                    input=b"Subject: x\n\nx\n")
    assert r.returncode == 75, r
    assert b"outside this tenant's root" in r.stderr, r.stderr
    assert not srv.maildir("evil@acme.example").exists()
