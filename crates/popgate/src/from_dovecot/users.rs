//! The users: Dovecot's passdbs (passwd-file, sql, ldap) as a popgate
//! directory, and the static home of a userdb.

use std::path::Path;

use super::conf::{self, Section};
use super::map::{Ctx, Options, yes};
use super::toml::quote;

pub(super) struct Auth {
    pub(super) inline: String,
    pub(super) domains: Vec<String>,
}

fn placeholder(cx: &mut Ctx<'_>) -> Auth {
    cx.complete = false;
    Auth {
        inline: "{ kind = \"passwd-file\", path = \"/etc/popgate/users (no passdb mapped: see above)\" }".into(),
        domains: Vec::new(),
    }
}

/// A driver and its args, from 2.3's `driver =`/`args =`.
pub(super) fn passdb(cx: &mut Ctx<'_>, options: &Options) -> Auth {
    let passdbs: Vec<Section> = cx.root.sections("passdb").cloned().collect();
    if passdbs.is_empty() {
        cx.unmapped("no passdb: nothing says who the users are");
        return placeholder(cx);
    }
    let mut chosen = None;
    for p in &passdbs {
        let driver = p.text("driver").unwrap_or("").to_owned();
        if yes(p.text("deny"), false) {
            cx.unmapped(format!(
                "passdb {driver} with deny = yes: popgate has no deny list; disable those users in the directory"
            ));
            continue;
        }
        if yes(p.text("master"), false) {
            cx.unmapped(format!(
                "passdb {driver} with master = yes: popgate has no master users"
            ));
            continue;
        }
        if chosen.is_some() {
            cx.unmapped(format!(
                "passdb {driver}: popgate asks one directory per tenant; the first mapped is used"
            ));
            continue;
        }
        let args = p.text("args").unwrap_or("").to_owned();
        let mapped = match driver.as_str() {
            "passwd-file" => passwd_file(cx, &args, options),
            "sql" => sql(cx, &args, options),
            "ldap" => ldap(cx, &args, options),
            "pam" | "shadow" | "passwd" | "bsdauth" => Err(format!(
                "passdb {driver}: popgate cannot read the system's users; put them in a passwd-file \
                 (user:{{SHA512-CRYPT}}hash from /etc/shadow) or another directory"
            )),
            other => Err(format!("passdb {other}: no popgate directory of this kind")),
        };
        match mapped {
            Ok(a) => chosen = Some(a),
            Err(e) => cx.unmapped(e),
        }
    }
    match chosen {
        Some(a) => a,
        None => placeholder(cx),
    }
}

/// Splits passdb/userdb `args`: `key=value` options and the rest.
pub(super) fn split_args(args: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut opts = Vec::new();
    let mut rest = Vec::new();
    for word in args.split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if !k.contains('/') => opts.push((k.to_owned(), v.to_owned())),
            _ => rest.push(word.to_owned()),
        }
    }
    (opts, rest)
}

fn resolve(base: &Path, path: &str) -> std::path::PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn passwd_file(cx: &mut Ctx<'_>, args: &str, options: &Options) -> Result<Auth, String> {
    let (opts, rest) = split_args(args);
    let Some(path) = rest.last() else {
        return Err("passdb passwd-file without a file in args".into());
    };
    if path.contains('%') {
        return Err(format!(
            "passdb passwd-file {path}: one file per domain or user; popgate reads one passwd-file per tenant \
             (concatenate them with the domain in each login, one tenant per domain)"
        ));
    }
    for (k, v) in &opts {
        match k.as_str() {
            "scheme" if !v.eq_ignore_ascii_case("CRYPT") => cx.unmapped(format!(
                "passwd-file scheme={v}: popgate reads a hash without {{SCHEME}} as CRYPT; prefix those with {{{v}}}"
            )),
            "username_format" if v != "%u" && v != "%Lu" => cx.unmapped(format!(
                "passwd-file username_format={v}: popgate looks up the whole login, then the local part"
            )),
            _ => {}
        }
    }
    let mut domains = Vec::new();
    if let Ok(text) = std::fs::read_to_string(resolve(&options.base, path)) {
        for line in text.lines() {
            let user = line.split(':').next().unwrap_or("");
            if let Some((_, d)) = user.rsplit_once('@') {
                let d = d.to_ascii_lowercase();
                if !d.is_empty() && !domains.contains(&d) {
                    domains.push(d);
                }
            }
        }
    }
    Ok(Auth {
        inline: format!("{{ kind = \"passwd-file\", path = {} }}", quote(path)),
        domains,
    })
}

/// Dovecot's `connect = host=... dbname=...` as a URL.
fn connect_url(driver: &str, connect: &str) -> Result<String, String> {
    let mut parts = std::collections::HashMap::new();
    let mut rest = connect.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=').ok_or("connect: expected key=value")?;
        let after = after.trim_start();
        let (v, next) =
            if let Some(q) = after.strip_prefix('\'').or_else(|| after.strip_prefix('"')) {
                let end = q.find(['\'', '"']).ok_or("connect: unterminated quote")?;
                (&q[..end], &q[end + 1..])
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
        parts.insert(k.trim().to_owned(), v.to_owned());
        rest = next.trim_start();
    }
    let scheme = match driver {
        "mysql" => "mysql",
        "pgsql" => "postgres",
        other => {
            return Err(format!(
                "driver = {other}: popgate's SQL directory speaks MySQL/MariaDB and PostgreSQL"
            ));
        }
    };
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let host = parts
        .get("host")
        .cloned()
        .unwrap_or_else(|| "localhost".into());
    if host.starts_with('/') {
        return Err(format!(
            "connect host={host}: a Unix socket; popgate connects over TCP (host=127.0.0.1)"
        ));
    }
    let mut url = format!("{scheme}://");
    if let Some(user) = parts.get("user") {
        url.push_str(&enc(user));
        if let Some(pw) = parts.get("password") {
            url.push(':');
            url.push_str(&enc(pw));
        }
        url.push('@');
    }
    url.push_str(&host);
    if let Some(port) = parts.get("port") {
        url.push(':');
        url.push_str(port);
    }
    url.push('/');
    url.push_str(&enc(parts.get("dbname").map(String::as_str).unwrap_or("")));
    Ok(url)
}

fn sql(cx: &mut Ctx<'_>, args: &str, options: &Options) -> Result<Auth, String> {
    let path = resolve(&options.base, args.trim());
    let ext = conf::read_file(&path).map_err(|e| format!("passdb sql: {e}"))?;
    let driver = ext.text("driver").unwrap_or("");
    let url = connect_url(driver, ext.text("connect").unwrap_or(""))
        .map_err(|e| format!("passdb sql ({}): {e}", path.display()))?;
    let query = ext
        .text("password_query")
        .ok_or_else(|| format!("passdb sql ({}): no password_query", path.display()))?;
    let mut inline = format!(
        "{{ kind = \"sql\", url = {}, password_query = {}",
        quote(&url),
        quote(query)
    );
    if let Some(q) = ext.text("user_query") {
        inline.push_str(&format!(", user_query = {}", quote(q)));
        if names_column(q, "mail")
            && !names_column(query, "mail")
            && !names_column(query, "userdb_mail")
        {
            cx.unmapped(format!(
                "sql user_query's mail column ({}): popgate reads a per-user mail location from the \
                 password_query's `mail` or `userdb_mail` column only; add it there",
                path.display()
            ));
        }
    }
    if let Some(s) = ext.text("default_pass_scheme") {
        inline.push_str(&format!(", default_scheme = {}", quote(s)));
    }
    // Dovecot's user iteration: what `migrate-mail --all` walks.
    if let Some(q) = ext.text("iterate_query") {
        inline.push_str(&format!(", iterate_query = {}", quote(q)));
    }
    inline.push_str(" }");
    cx.notes.push(format!(
        "the SQL directory's url holds the database password from {}: move it to url_file for production",
        path.display()
    ));
    Ok(Auth {
        inline,
        domains: Vec::new(),
    })
}

/// Whether a query selects a column named `column` (`... AS mail`, `mail,`).
fn names_column(query: &str, column: &str) -> bool {
    let lower = query.to_ascii_lowercase();
    let select = lower.split(" from ").next().unwrap_or("");
    select
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| word == column)
}

fn ldap(cx: &mut Ctx<'_>, args: &str, options: &Options) -> Result<Auth, String> {
    let path = resolve(&options.base, args.trim());
    let ext = conf::read_file(&path).map_err(|e| format!("passdb ldap: {e}"))?;
    let url = match (ext.text("uris"), ext.text("hosts")) {
        (Some(u), _) => u.split_whitespace().next().unwrap_or("").to_owned(),
        (None, Some(h)) => format!("ldap://{}", h.split_whitespace().next().unwrap_or("")),
        (None, None) => {
            return Err(format!(
                "passdb ldap ({}): neither uris nor hosts",
                path.display()
            ));
        }
    };
    let base = ext
        .text("base")
        .ok_or_else(|| format!("passdb ldap ({}): no base", path.display()))?;
    let filter = ext
        .text("pass_filter")
        .unwrap_or("(&(objectClass=posixAccount)(uid=%u))");
    let mut inline = format!(
        "{{ kind = \"ldap\", url = {}, base_dn = {}, user_filter = {}",
        quote(&url),
        quote(base),
        quote(filter)
    );
    if let Some(dn) = ext.text("dn") {
        inline.push_str(&format!(", bind_dn = {}", quote(dn)));
        if let Some(pw) = ext.text("dnpass") {
            inline.push_str(&format!(", bind_password = {}", quote(pw)));
            cx.notes
                .push("the LDAP bind_password is inline: move it to bind_password_file".into());
        }
    }
    if yes(ext.text("auth_bind"), false) {
        inline.push_str(", auth_bind = true");
    }
    if yes(ext.text("tls"), false) {
        inline.push_str(", starttls = true");
    }
    // Dovecot's userdb `mail` (`user_attrs = mailMessageStore=mail`, or
    // `=userdb_mail` in pass_attrs for prefetch): the user's Maildir.
    let mut location = None;
    if let Some(attrs) = ext.text("user_attrs") {
        for pair in attrs.split(',') {
            if let Some((attr, "mail")) = pair.trim().split_once('=').map(|(a, f)| (a, f.trim())) {
                location = Some(attr.trim().to_owned());
            }
        }
    }
    if let Some(attrs) = ext.text("pass_attrs") {
        // `userPassword=password,uid=user`: the attributes mapped to
        // `password` and to `user` (the mailbox an alias opens).
        for pair in attrs.split(',') {
            if let Some((attr, field)) = pair.trim().split_once('=') {
                match field.trim() {
                    "password" if attr.trim() != "userPassword" => {
                        inline.push_str(&format!(", password_attribute = {}", quote(attr.trim())));
                    }
                    "user" => {
                        inline.push_str(&format!(", user_attribute = {}", quote(attr.trim())));
                    }
                    "userdb_mail" => location = Some(attr.trim().to_owned()),
                    "password" => {}
                    other => cx.unmapped(format!(
                        "ldap pass_attrs {attr}={other}: no popgate equivalent"
                    )),
                }
            }
        }
    }
    if let Some(attr) = location {
        inline.push_str(&format!(", location_attribute = {}", quote(&attr)));
    }
    if let Some(s) = ext.text("default_pass_scheme") {
        cx.unmapped(format!(
            "ldap default_pass_scheme = {s}: popgate reads a userPassword without {{SCHEME}} as CRYPT"
        ));
    }
    inline.push_str(" }");
    Ok(Auth {
        inline,
        domains: Vec::new(),
    })
}

/// The home template of a `userdb static` (`home=/var/vmail/%d/%n`).
pub(super) fn userdb_home(cx: &mut Ctx<'_>) -> Option<String> {
    let userdbs: Vec<Section> = cx.root.sections("userdb").cloned().collect();
    let mut home = None;
    for u in &userdbs {
        let driver = u.text("driver").unwrap_or("");
        let (opts, _) = split_args(u.text("args").unwrap_or(""));
        for (k, v) in opts {
            match k.as_str() {
                "home" if driver == "static" && home.is_none() => home = Some(v),
                "uid" | "gid" => {}
                "mail" => cx.unmapped(format!(
                    "userdb {driver} mail={v}: one mail location for the whole userdb; set the tenant's store \
                     path (per-user locations come from the SQL password_query's mail or userdb_mail column, \
                     LDAP user_attrs =mail, or the HTTP hook's \"location\")"
                )),
                _ => {}
            }
        }
        if driver != "static" && driver != "prefetch" {
            cx.notes.push(format!(
                "userdb {driver}: popgate needs no userdb (files take the Maildir's owner); per-user homes or mail \
                 locations from it are not read"
            ));
        }
    }
    home
}
