//! From a Dovecot configuration tree to popgate.toml: what maps, and a
//! note for everything that does not, with the reason.

use std::net::IpAddr;

use super::conf::Section;
use super::toml::{Toml, quote};
use super::users::{passdb, userdb_home};

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

pub(super) struct Ctx<'a> {
    pub(super) root: &'a Section,
    pub(super) unmapped: Vec<String>,
    pub(super) notes: Vec<String>,
    pub(super) complete: bool,
}

impl Ctx<'_> {
    /// A setting as POP3 sees it: `protocol pop3 { }` wins over the top.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.root
            .section("protocol", "pop3")
            .and_then(|p| p.text(key))
            .or_else(|| self.root.text(key))
    }

    pub(super) fn unmapped(&mut self, what: impl Into<String>) {
        self.unmapped.push(what.into());
    }
}

pub(super) fn yes(v: Option<&str>, default: bool) -> bool {
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
