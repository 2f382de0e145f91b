//! From a Dovecot configuration tree to popgate.toml: what maps, and a
//! note for everything that does not, with the reason.

use std::net::IpAddr;
use std::path::Path;

use super::conf::{self, Section};
use super::toml::{Toml, quote};

/// The result of a conversion.
pub struct Outcome {
    pub toml: String,
    /// What could not be mapped, and why (also written into `toml`).
    pub unmapped: Vec<String>,
    /// False when a part popgate cannot run without (users, mail) did not
    /// map: the TOML then holds a placeholder that check-config refuses.
    pub complete: bool,
}

/// What the caller adds to the configuration.
pub struct Options {
    /// The tenant's name.
    pub tenant: String,
    /// Mail domains given on the command line.
    pub domains: Vec<String>,
    /// The directory relative paths of the configuration are read from.
    pub base: std::path::PathBuf,
}

struct Ctx<'a> {
    root: &'a Section,
    unmapped: Vec<String>,
    notes: Vec<String>,
    complete: bool,
}

impl Ctx<'_> {
    /// A setting as POP3 sees it: `protocol pop3 { }` wins over the top.
    fn get(&self, key: &str) -> Option<&str> {
        self.root
            .section("protocol", "pop3")
            .and_then(|p| p.text(key))
            .or_else(|| self.root.text(key))
    }

    fn unmapped(&mut self, what: impl Into<String>) {
        self.unmapped.push(what.into());
    }
}

fn yes(v: Option<&str>, default: bool) -> bool {
    match v.map(str::to_ascii_lowercase).as_deref() {
        Some("yes" | "true" | "1") => true,
        Some("no" | "false" | "0") => false,
        _ => default,
    }
}

/// Dovecot's `listen` to the addresses popgate binds.
fn listen_addresses(listen: &str) -> Vec<String> {
    listen
        .split([',', ' '])
        .filter(|a| !a.is_empty())
        .map(|a| match a {
            "*" => "0.0.0.0".to_owned(),
            "::" | "[::]" => "[::]".to_owned(),
            a if a.contains(':') && !a.starts_with('[') => format!("[{a}]"),
            a => a.to_owned(),
        })
        .collect()
}

fn is_loopback(address: &str) -> bool {
    address
        .trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
        || address == "localhost"
}

struct Listener {
    address: String,
    tls: &'static str,
    plaintext: bool,
    proxy: Option<Vec<String>>,
}

pub fn convert(root: &Section, options: &Options) -> Outcome {
    let mut cx = Ctx {
        root,
        unmapped: Vec::new(),
        notes: Vec::new(),
        complete: true,
    };
    let mut out = Toml::default();

    if let Some(protocols) = cx.get("protocols")
        && !protocols.split_whitespace().any(|p| p == "pop3")
    {
        cx.notes.push(format!(
            "protocols = {protocols}: this Dovecot does not serve POP3; the listeners below are Dovecot's defaults"
        ));
    }

    // TLS.
    let ssl = cx.get("ssl").unwrap_or("yes").to_ascii_lowercase();
    let mut ssl_on = ssl != "no";
    let cert = cx.root.get("ssl_cert").map(|v| v.text.clone());
    let key = cx.root.get("ssl_key").map(|v| v.text.clone());
    let tls_paths = match (&cert, &key) {
        (Some(c), Some(k)) if ssl_on && !c.is_empty() && !k.is_empty() => {
            Some((c.clone(), k.clone()))
        }
        _ => None,
    };
    if ssl_on && tls_paths.is_none() {
        cx.unmapped(format!(
            "ssl = {ssl} without both ssl_cert and ssl_key: the listeners below are without TLS"
        ));
        ssl_on = false;
    }
    if cx.get("ssl_key_password").is_some_and(|p| !p.is_empty()) {
        cx.unmapped(
            "ssl_key_password: popgate reads an unencrypted key; decrypt it (openssl pkey)",
        );
    }
    if let Some(v) = cx.get("ssl_min_protocol") {
        cx.notes.push(format!(
            "ssl_min_protocol = {v}: popgate speaks TLS 1.2 and 1.3 (see docs/configuration.md for TLS 1.0 clients)"
        ));
    }
    if cx.get("ssl_dh").is_some() {
        cx.notes
            .push("ssl_dh: not needed, rustls uses ECDHE".into());
    }
    for k in [
        "ssl_cipher_list",
        "ssl_ca",
        "ssl_verify_client_cert",
        "ssl_prefer_server_ciphers",
    ] {
        if cx.get(k).is_some_and(|v| !v.is_empty()) {
            cx.unmapped(format!(
                "{k}: popgate uses rustls's defaults and no client certificates"
            ));
        }
    }
    let cleartext = match cx.get("auth_allow_cleartext") {
        Some(v) => yes(Some(v), false),
        None => !yes(cx.get("disable_plaintext_auth"), true),
    };
    let required = ssl == "required";

    // Listeners.
    let listen = cx.get("listen").unwrap_or("*, ::").to_owned();
    let addresses = listen_addresses(&listen);
    let haproxy_nets: Vec<String> = cx
        .get("haproxy_trusted_networks")
        .unwrap_or("")
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let service = root.section("service", "pop3-login");
    let mut listeners = Vec::new();
    for (name, default_port, implicit) in [("pop3", 110u32, false), ("pop3s", 995, true)] {
        let section = service.and_then(|s| s.section("inet_listener", name));
        let port = section
            .and_then(|s| s.text("port"))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(default_port);
        if port == 0 {
            continue;
        }
        let implicit = implicit || yes(section.and_then(|s| s.text("ssl")), false);
        if implicit && !ssl_on {
            cx.notes.push(format!(
                "inet_listener {name} (port {port}): skipped, TLS is off"
            ));
            continue;
        }
        let addrs = match section.and_then(|s| s.text("address")) {
            Some(a) => listen_addresses(a),
            None => addresses.clone(),
        };
        let Some(address) = addrs.first() else {
            continue;
        };
        if addrs.len() > 1 {
            let note = format!(
                "listen = {listen}: popgate listens on {address} only; add listeners for {}",
                addrs[1..].join(", ")
            );
            if !cx.notes.contains(&note) {
                cx.notes.push(note);
            }
        }
        let proxy =
            yes(section.and_then(|s| s.text("haproxy")), false).then(|| haproxy_nets.clone());
        if proxy.as_ref().is_some_and(Vec::is_empty) {
            cx.unmapped(format!(
                "inet_listener {name}: haproxy = yes without haproxy_trusted_networks; fill in trusted_proxies"
            ));
        }
        // Dovecot counts loopback connections as secured: plaintext logins
        // are allowed there even with disable_plaintext_auth.
        let plaintext = !required && (cleartext || is_loopback(address));
        listeners.push(Listener {
            address: format!("{address}:{port}"),
            tls: if implicit {
                "implicit"
            } else if ssl_on {
                "starttls"
            } else {
                "none"
            },
            plaintext,
            proxy,
        });
    }
    if let Some(nets) = cx.get("login_trusted_networks").filter(|n| !n.is_empty()) {
        cx.unmapped(format!(
            "login_trusted_networks = {nets}: popgate takes the client address from a PROXY header only \
             (haproxy_trusted_networks, trusted_proxies), has no XCLIENT/ID forwarding, and exempts no network \
             from plaintext_auth"
        ));
    }

    // Users.
    let auth = passdb(&mut cx, options);
    let home = userdb_home(&mut cx);

    // Mail.
    let store = mail_location(&mut cx, home.as_deref());
    let uidl_format = cx
        .get("pop3_uidl_format")
        .unwrap_or("%08Xu%08Xv")
        .to_owned();
    let uidl_format = match store_maildir::validate_uidl_format(&uidl_format) {
        Ok(()) => uidl_format,
        Err(e) => {
            cx.unmapped(format!(
                "pop3_uidl_format = {uidl_format}: {e}; using Dovecot's default %08Xu%08Xv"
            ));
            "%08Xu%08Xv".to_owned()
        }
    };
    pop3_settings(&mut cx);
    let userip = cx.get("mail_max_userip_connections").map(str::to_owned);

    // Domains: the command line's, else those of passwd-file logins.
    let mut domains = options.domains.clone();
    if domains.is_empty() {
        domains = auth.domains.clone();
    }
    if domains.is_empty() {
        cx.notes.push(
            "no mail domains known (pass --domain D, or list them in tenants[0].domains): only logins \
             without @domain reach this tenant"
                .to_owned(),
        );
    }

    // Write it out.
    out.comment("popgate.toml made by `popgate from-dovecot` from a Dovecot configuration.");
    out.comment("Check it with `popgate check-config --config FILE` before serving.");
    if !cx.unmapped.is_empty() {
        out.comment("");
        out.comment("Not mapped, and why:");
        for u in &cx.unmapped {
            out.comment(&format!("- {u}"));
        }
    }
    if !cx.notes.is_empty() {
        out.comment("");
        out.comment("Notes:");
        for n in &cx.notes {
            out.comment(&format!("- {n}"));
        }
    }
    out.blank();
    out.table("server");
    let hostname = cx
        .get("hostname")
        .map(str::to_owned)
        .unwrap_or_else(|| "localhost".to_owned());
    out.kv("hostname", &quote(&hostname));
    for l in &listeners {
        out.blank();
        out.array_table("listeners");
        out.kv("address", &quote(&l.address));
        out.kv("tls", &quote(l.tls));
        out.kv("plaintext_auth", &l.plaintext.to_string());
        out.kv("default_tenant", &quote(&options.tenant));
        if let Some(nets) = &l.proxy {
            out.kv("proxy_protocol", "true");
            out.kv("trusted_proxies", &list(nets));
        }
    }
    if let Some((c, k)) = &tls_paths {
        out.blank();
        out.table("tls");
        out.kv("certificate", &quote(c));
        out.kv("private_key", &quote(k));
    }
    out.blank();
    out.table("locks");
    out.kv("backend", "\"memory\"");
    out.blank();
    out.array_table("tenants");
    out.kv("name", &quote(&options.tenant));
    out.kv("domains", &list(&domains));
    if let Some(n) = &userip {
        out.comment(&format!(
            "mail_max_userip_connections = {n}: subsumed. popgate allows one session per mailbox at a time \
             (RFC 1939's exclusive lock, fleet-wide), so no user has more than 1 connection from any address."
        ));
    }
    out.kv("auth", &auth.inline);
    let store_inline = format!(
        "{{ kind = \"maildir\", path = {}, uidl_format = {} }}",
        quote(&store),
        quote(&uidl_format)
    );
    out.kv("store", &store_inline);
    let _ = &options.base;
    Outcome {
        toml: out.finish(),
        unmapped: cx.unmapped,
        complete: cx.complete,
    }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

struct Auth {
    inline: String,
    domains: Vec<String>,
}

fn placeholder(cx: &mut Ctx<'_>) -> Auth {
    cx.complete = false;
    Auth {
        inline: "{ kind = \"passwd-file\", path = \"/etc/popgate/users (no passdb mapped: see above)\" }".into(),
        domains: Vec::new(),
    }
}

/// A driver and its args, from 2.3's `driver =`/`args =`.
fn passdb(cx: &mut Ctx<'_>, options: &Options) -> Auth {
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
fn split_args(args: &str) -> (Vec<(String, String)>, Vec<String>) {
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
    }
    if let Some(s) = ext.text("default_pass_scheme") {
        inline.push_str(&format!(", default_scheme = {}", quote(s)));
    }
    inline.push_str(" }");
    cx.notes.push(format!(
        "the SQL directory's url holds the database password from {}: move it to url_file for production",
        path.display()
    ));
    if ext.text("iterate_query").is_some() {
        cx.notes.push("iterate_query: not needed by popgate".into());
    }
    Ok(Auth {
        inline,
        domains: Vec::new(),
    })
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
                    "password" => {}
                    other => cx.unmapped(format!(
                        "ldap pass_attrs {attr}={other}: no popgate equivalent"
                    )),
                }
            }
        }
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
fn userdb_home(cx: &mut Ctx<'_>) -> Option<String> {
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
                    "userdb {driver} mail={v}: a per-userdb mail location; set the tenant's store path"
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

/// `mail_location`, with `~` replaced by a static home.
fn mail_location(cx: &mut Ctx<'_>, home: Option<&str>) -> String {
    let Some(location) = cx
        .get("mail_location")
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
    else {
        cx.unmapped("mail_location is not set (Dovecot autodetects): name the Maildir in tenants[0].store.path");
        cx.complete = false;
        return "/var/mail/%d/%n/Maildir (mail_location not mapped: see above)".into();
    };
    let mut mapped = location.clone();
    if let Some(home) = home {
        let home = home.trim_end_matches('/');
        mapped = mapped
            .replace(":~/", &format!(":{home}/"))
            .replace("=~/", &format!("={home}/"));
        mapped = mapped.replace("%h", home).replace("%{home}", home);
    }
    match store_maildir::parse_mail_location(&mapped) {
        Ok(l) => {
            for i in &l.ignored {
                cx.notes.push(format!("mail_location: {i} is ignored"));
            }
            if l.control.is_some() {
                cx.notes.push(
                    "mail_location CONTROL=: popgate reads and writes dovecot-uidlist there".into(),
                );
            }
            mapped
        }
        Err(e) => {
            cx.unmapped(format!("mail_location = {location}: {e}"));
            cx.complete = false;
            format!("{mapped} (not mapped: see above)")
        }
    }
}

/// POP3 settings: what popgate does instead.
fn pop3_settings(cx: &mut Ctx<'_>) {
    let keys: Vec<(String, String)> = cx
        .root
        .settings
        .iter()
        .chain(
            cx.root
                .section("protocol", "pop3")
                .into_iter()
                .flat_map(|p| p.settings.iter()),
        )
        .filter(|(k, _)| k.starts_with("pop3_") && k != "pop3_uidl_format")
        .map(|(k, v)| (k.clone(), v.text.clone()))
        .collect();
    for (k, v) in keys {
        let why = match k.as_str() {
            "pop3_lock_session" => {
                cx.notes.push(format!(
                    "{k} = {v}: popgate always locks a mailbox for its session"
                ));
                continue;
            }
            "pop3_client_workarounds" => {
                "popgate has no client workarounds (outlook-no-nuls, oe-ns-eoh are not needed for its output)"
            }
            "pop3_logout_format" => "popgate logs its own fields (docs/logging.md)",
            "pop3_no_flag_updates" | "pop3_fast_size_lookups" | "pop3_enable_last" => {
                "no effect in popgate"
            }
            "pop3_reuse_xuidl" | "pop3_save_uidl" => {
                "popgate honours a UIDL saved in dovecot-uidlist, and derives others from pop3_uidl_format"
            }
            "pop3_deleted_flag" => {
                "popgate deletes the files on QUIT, as Dovecot without this setting"
            }
            "pop3_delete_type" => "popgate deletes on QUIT",
            _ => "no popgate equivalent",
        };
        cx.unmapped(format!("{k} = {v}: {why}"));
    }
    if let Some(mechs) = cx.get("auth_mechanisms") {
        let other: Vec<&str> = mechs
            .split_whitespace()
            .filter(|m| !["plain", "login", "apop"].contains(&m.to_ascii_lowercase().as_str()))
            .collect();
        if !other.is_empty() {
            cx.unmapped(format!(
                "auth_mechanisms {}: popgate offers USER/PASS, APOP, SASL PLAIN and LOGIN",
                other.join(" ")
            ));
        }
    }
    if let Some(f) = cx
        .get("auth_username_format")
        .filter(|f| !["%u", "%Lu"].contains(f))
    {
        cx.unmapped(format!(
            "auth_username_format = {f}: popgate looks up the whole login (lower-cased), then the directory decides"
        ));
    }
}
