use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};

use super::duration::parse_duration;
use super::locks::LockBackend;
use super::*;

fn parse(toml: &str) -> Result<Config, ConfigError> {
    Figment::from(Toml::string(toml))
        .extract::<Config>()
        .map_err(figment_error)
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    assert!(parse_duration("ten").is_err());
    assert!(parse_duration("5y").is_err());
}

#[test]
fn a_duration_too_long_is_an_error_naming_it() {
    assert_eq!(
        parse_duration("213503982334601d"),
        Ok(Duration::from_secs(213_503_982_334_601 * 86400))
    );
    let e = parse_duration("99999999999999999d").unwrap_err();
    assert!(e.contains("99999999999999999d"), "{e}");
    assert!(parse_duration("99999999999999999h").is_err());
    assert!(parse_duration("999999999999999999m").is_err());
    let e = parse("[server]\nidle_timeout = \"99999999999999999d\"\n").unwrap_err();
    assert!(
        e.key.contains("idle_timeout") && e.message.contains("99999999999999999d"),
        "{e}"
    );
}

#[test]
#[cfg(feature = "redis")]
fn redis_sentinel_and_cluster_settings() {
    let err = |body: &str| {
        parse(&format!("[locks]\nbackend = \"redis\"\n{body}"))
            .unwrap()
            .locks
            .redis_config()
            .unwrap_err()
    };
    let c = parse(
        "[locks]\nbackend = \"redis\"\nsentinels = [\"redis://:spw@10.0.0.1:26379\", \"redis://:spw@10.0.0.2:26379\"]\n\
         master_name = \"mail\"\nmaster_password = \"mpw\"\nmaster_db = 2\n",
    )
    .unwrap();
    let r = c.locks.redis_config().unwrap().unwrap();
    let backend_redis::Endpoint::Sentinel(s) = &r.endpoint else {
        panic!("{:?}", r.endpoint)
    };
    assert_eq!(
        (
            s.sentinels.len(),
            s.master_name.as_str(),
            s.master_password.as_deref(),
            s.master_db
        ),
        (2, "mail", Some("mpw"), 2)
    );
    assert!(
        !r.endpoint.describe().contains("spw"),
        "{}",
        r.endpoint.describe()
    );
    let e = err("sentinels = [\"redis://10.0.0.1:26379\"]\n");
    assert_eq!(e.key, "locks.master_name");
    let e = err("url = \"redis://h\"\nmaster_name = \"mail\"\n");
    assert_eq!(e.key, "locks.master_name", "{e}");
    let e = err("url = \"redis://h\"\ncluster = [\"redis://h:7000\"]\n");
    assert_eq!(e.key, "locks.cluster");
    assert!(e.to_string().contains("not several"), "{e}");
    let e = err("sentinels = [\"http://h:1\"]\nmaster_name = \"m\"\n");
    assert_eq!(e.key, "locks.sentinels");
    let c = parse("[locks]\nbackend = \"redis\"\ncluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\n").unwrap();
    let r = c.locks.redis_config().unwrap().unwrap();
    assert!(matches!(&r.endpoint, backend_redis::Endpoint::Cluster(n) if n.len() == 2));
}

#[test]
#[cfg(feature = "redis")]
fn redis_locks_settings() {
    let c = parse("[locks]\nbackend = \"redis\"\nurl = \"redis://:pw@127.0.0.1:6379\"\nttl = \"10s\"\nwait = \"250ms\"\n").unwrap();
    let r = c.locks.redis_config().unwrap().unwrap();
    assert_eq!(
        (r.ttl, r.wait, r.key_prefix.as_str()),
        (
            Duration::from_secs(10),
            Duration::from_millis(250),
            "popgate"
        )
    );
    let e = parse("[locks]\nbackend = \"redis\"\n")
        .unwrap()
        .locks
        .redis_config()
        .unwrap_err();
    assert_eq!(e.key, "locks.url");
    let e = parse("[locks]\nbackend = \"redis\"\nurl = \"http://x\"\n")
        .unwrap()
        .locks
        .redis_config()
        .unwrap_err();
    assert_eq!(e.key, "locks.url");
    let e = parse("[locks]\nbackend = \"redis\"\nurl = \"redis://h\"\nttl = \"100ms\"\n")
        .unwrap()
        .locks
        .redis_config()
        .unwrap_err();
    assert_eq!(e.key, "locks.ttl");
    let e = parse("[locks]\nbackend = \"redis\"\nurl = \"redis://h\"\nkey_prefix = \"a b\"\n")
        .unwrap()
        .locks
        .redis_config()
        .unwrap_err();
    assert_eq!(e.key, "locks.key_prefix");
    assert!(
        parse("[locks]\nbackend = \"memory\"\n")
            .unwrap()
            .locks
            .redis_config()
            .unwrap()
            .is_none()
    );
}

#[test]
#[cfg(feature = "s3")]
fn s3_store_settings() {
    let tenant = |store: &str| {
        format!(
            "[[tenants]]\nname = \"a\"\nauth = {{ kind = \"passwd-file\", path = \"/p\" }}\nstore = {{ kind = \"s3\", {store} }}\n"
        )
    };
    let c = parse(&tenant("bucket = \"mail\", read_timeout = \"2s\"")).unwrap();
    let StoreSection::S3(s3) = &c.tenants[0].store else {
        panic!("not s3")
    };
    s3.validate("tenants[0].store").unwrap();
    let sc = s3.store_config();
    assert_eq!(
        (sc.prefix.as_str(), sc.read_timeout),
        ("%d/%n/", Duration::from_secs(2))
    );
    assert!(sc.credentials.is_none(), "no keys: the AWS chain");
    let check = |store: &str| {
        let c = parse(&tenant(store))?;
        let StoreSection::S3(s3) = &c.tenants[0].store else {
            panic!("not s3")
        };
        s3.validate("tenants[0].store")
    };
    let key = |store: &str| check(store).unwrap_err().key;
    assert_eq!(
        key("bucket = \"mail\", prefix = \"%n\""),
        "tenants[0].store.prefix"
    );
    assert_eq!(
        key("bucket = \"mail\", access_key_id = \"k\""),
        "tenants[0].store.secret_access_key"
    );
    assert_eq!(
        key("bucket = \"mail\", endpoint = \"minio:9000\""),
        "tenants[0].store.endpoint"
    );
    assert_eq!(key("bucket = \"\""), "tenants[0].store.bucket");
    let e = check("bucket = \"mail\", connect_timeout = \"soon\"").unwrap_err();
    assert!(e.to_string().contains("connect_timeout"), "{e}");
    let e = check("bucket = \"mail\", bukket = \"x\"").unwrap_err();
    assert!(e.to_string().contains("bukket"), "{e}");
    assert_eq!(sc.conditional_writes, store_s3::ConditionalWrites::Auto);
    let c = parse(&tenant("bucket = \"mail\", conditional_writes = \"on\"")).unwrap();
    let StoreSection::S3(s3) = &c.tenants[0].store else {
        panic!("not s3")
    };
    assert_eq!(
        s3.store_config().conditional_writes,
        store_s3::ConditionalWrites::On
    );
    let e = check("bucket = \"mail\", conditional_writes = \"sometimes\"").unwrap_err();
    assert!(e.to_string().contains("conditional_writes"), "{e}");
}

#[test]
fn environment_sets_known_sections_and_leaves_the_rest() {
    let env = |vars: &[(&str, &str)]| {
        load_with_env(
            None,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    };
    // What Kubernetes injects for a Service named `popgate`, and the
    // variables popgate reads itself, are no config keys.
    let c = env(&[
        ("POPGATE_PORT", "tcp://10.0.0.1:110"),
        ("POPGATE_SERVICE_HOST", "10.0.0.1"),
        ("POPGATE_PORT_110_TCP_ADDR", "10.0.0.1"),
        ("POPGATE_LOG", "debug"),
        ("POPGATE_SERVER__MAX_BAD_COMMANDS", "5"),
        ("POPGATE_SERVER__LOG_FORMAT", "json"),
        ("POPGATE_TENANTS__0__LOGIN_DELAY", "60"),
        ("POPGATE_LISTENERS__0__ADDRESS", "127.0.0.1:1110"),
    ])
    .unwrap();
    assert_eq!(c.server.max_bad_commands, 5);
    assert_eq!(c.server.log_format, LogFormat::Json);
    assert_eq!(c.tenants[0].login_delay, Some(60));
    assert_eq!(c.tenants[0].name, "local", "the rest of the entry stays");
    assert_eq!(c.listeners[0].address, "127.0.0.1:1110");
    assert!(c.listeners[0].plaintext_auth);
    // A whole array at once, then an entry of it by index.
    let c = env(&[
            (
                "POPGATE_LISTENERS",
                r#"[{address = "127.0.0.1:1111", plaintext_auth = true}, {address = "127.0.0.1:1112", plaintext_auth = true}]"#,
            ),
            ("POPGATE_LISTENERS__1__DEFAULT_TENANT", "local"),
        ])
        .unwrap();
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].address, "127.0.0.1:1111");
    assert_eq!(c.listeners[1].default_tenant.as_deref(), Some("local"));
    // A mistyped key of a known section is still an error, named.
    let e = env(&[("POPGATE_SERVER__HOSTNME", "x")]).unwrap_err();
    assert!(e.to_string().contains("hostnme"), "{e}");
    // An entry the file does not have cannot be made from the environment.
    let e = env(&[("POPGATE_TENANTS__3__NAME", "x")]).unwrap_err();
    assert_eq!(e.key, "POPGATE_TENANTS__3__NAME", "{e}");
    let e = env(&[("POPGATE_CONFIG", "/nonexistent/popgate.toml")]).unwrap_err();
    assert_eq!(e.key, "POPGATE_CONFIG", "{e}");
}

#[test]
fn embedded_default_parses() {
    let c = parse(DEFAULT_CONFIG).unwrap();
    assert_eq!(c.listeners[0].address, "127.0.0.1:1100");
    assert_eq!(c.locks.backend, LockBackend::Memory);
    assert_eq!(c.metrics.unwrap().address, "127.0.0.1:9100");
}

#[test]
fn unknown_and_mistyped_keys_are_named() {
    let e = parse("[server]\nhostnme = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("hostnme"), "{e}");
    let e = parse("[server]\nmax_auth_failures = \"many\"\n").unwrap_err();
    assert_eq!(e.key, "server.max_auth_failures", "{e}");
    let e = parse("[[tenants]]\nname = \"a\"\nexpire = \"sometimes\"\n").unwrap_err();
    assert_eq!(e.key, "tenants[0].expire", "{e}");
    assert!(e.message.contains("days or \"never\""), "{e}");
    let e = parse("[server]\nidle_timeout = \"soon\"\n").unwrap_err();
    assert!(
        e.key.contains("idle_timeout") && e.message.contains("soon"),
        "{e}"
    );
    let e = parse("[[tenants]]\nname = \"a\"\nauth = { kind = \"kerberos\" }\nstore = { kind = \"maildir\", path = \"/m/%n\" }\n")
            .unwrap_err();
    assert!(e.to_string().contains("kerberos"), "{e}");
}

#[test]
fn edit_distance_counts_typos() {
    assert_eq!(edit_distance("hostname", "hostname"), 0);
    assert_eq!(edit_distance("hostnme", "hostname"), 1);
    assert_eq!(edit_distance("hostnmae", "hostname"), 1, "a transposition");
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("abc", ""), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("ca", "abc"), 3, "OSA, not Damerau");
    assert_eq!(
        edit_distance("d\u{e9}j\u{e0}", "deja"),
        2,
        "chars, not bytes"
    );
}

#[test]
fn unknown_names_get_a_suggestion_when_one_is_close() {
    let server = [
        "hostname",
        "shutdown_grace",
        "auth_timeout",
        "idle_timeout",
        "log_level",
    ];
    assert_eq!(did_you_mean("hostnme", &server), Some("hostname"));
    assert_eq!(did_you_mean("HostName", &server), Some("hostname"));
    assert_eq!(did_you_mean("idle_timout", &server), Some("idle_timeout"));
    assert_eq!(
        did_you_mean("log", &server),
        None,
        "too short to be a prefix"
    );
    assert_eq!(did_you_mean("colour", &server), None);
    let listener = ["address", "tls", "plaintext_auth", "default_tenant"];
    assert_eq!(did_you_mean("plaintext", &listener), Some("plaintext_auth"));
    assert_eq!(did_you_mean("tsl", &listener), Some("tls"));
    assert_eq!(did_you_mean("x", &listener), None);
}

#[test]
fn an_unknown_key_is_named_with_a_suggestion_and_the_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("popgate.toml");
    std::fs::write(
        &file,
        "# popgate\n[server]\nhostname = \"pop.example\"\nhostnme = \"x\"\n",
    )
    .unwrap();
    let e = load_with_env(Some(&file), []).unwrap_err();
    assert_eq!(e.key, "server.hostnme");
    assert_eq!(
        e.message,
        format!(
            "unknown key \"hostnme\" (did you mean \"hostname\"?) (in {}, line 4)",
            file.display()
        )
    );
    assert!(
        !e.message.contains("shutdown_grace"),
        "no list of every key: {e}"
    );

    // Nothing close: the keys of the table are listed.
    std::fs::write(&file, "[server]\ncolour = 1\n").unwrap();
    let e = load_with_env(Some(&file), []).unwrap_err();
    assert!(
        e.message
            .starts_with("unknown key \"colour\" (expected one of: hostname, "),
        "{e}"
    );

    // In the second [[tenants]], inside an inline table of a `kind`.
    let tenant = |n: &str, auth: &str| {
        format!(
            "[[tenants]]\nname = \"{n}\"\nauth = {auth}\nstore = {{ kind = \"maildir\", path = \"/m/%n\" }}\n"
        )
    };
    std::fs::write(
        &file,
        tenant("a", "{ kind = \"passwd-file\", path = \"/p\" }")
            + &tenant("b", "{ kind = \"passwd-file\", paht = \"/p\" }"),
    )
    .unwrap();
    let e = load_with_env(Some(&file), []).unwrap_err();
    assert_eq!(e.key, "tenants[1].auth.paht", "{e}");
    assert!(e.message.contains("(did you mean \"path\"?)"), "{e}");
    assert!(e.message.ends_with(", line 7)"), "{e}");

    // A wrong type names the line too; the environment names the variable.
    std::fs::write(&file, "[server]\n\nmax_auth_failures = \"many\"\n").unwrap();
    let e = load_with_env(Some(&file), []).unwrap_err();
    assert_eq!(e.key, "server.max_auth_failures");
    assert!(e.message.ends_with(", line 3)"), "{e}");
    let e = load_with_env(
        None,
        [("POPGATE_SERVER__HOSTNMAE".to_string(), "x".to_string())],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "server.hostnmae: unknown key \"hostnmae\" (did you mean \"hostname\"?) \
             (from the environment: POPGATE_SERVER__HOSTNMAE)"
    );
    // An unknown kind gets its suggestion as well.
    let e = parse(&tenant("a", "{ kind = \"pasword-file\", path = \"/p\" }")).unwrap_err();
    assert!(
        e.message
            .contains("unknown value \"pasword-file\" (did you mean \"passwd-file\"?)"),
        "{e}"
    );
}

#[test]
#[cfg(feature = "s3")]
fn configs_that_serve_would_refuse_or_that_serve_nobody_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "bob@a.example:{PLAIN}x\n").unwrap();
    let tenant = |name: &str, domains: &str, store: &str| {
        format!(
            "[[tenants]]\nname = \"{name}\"\ndomains = [{domains}]\n\
                 auth = {{ kind = \"passwd-file\", path = \"{}\" }}\nstore = {{ {store} }}\n",
            passwd.display()
        )
    };
    let listener =
        |addr: &str| format!("[[listeners]]\naddress = \"{addr}\"\nplaintext_auth = true\n");
    let root = dir.path().display().to_string();
    let maildir = |t: &str| format!("kind = \"maildir\", path = \"{root}/{t}\"");
    let check = |toml: String| parse(&toml).unwrap().validate();
    let one = listener("127.0.0.1:1100");
    // Two tenants on one template without the domain share mailboxes.
    let e = check(format!(
        "{one}{}{}",
        tenant("a", "\"a.example\"", &maildir("%n/Maildir")),
        tenant("b", "\"b.example\"", &maildir("%n/Maildir"))
    ))
    .unwrap_err();
    assert_eq!(e.key, "tenants[1].store", "{e}");
    assert!(e.message.contains("tenants[0]"), "{e}");
    let s3 = "kind = \"s3\", bucket = \"mail\", prefix = \"%n/\"";
    let e = check(format!(
        "{one}{}{}",
        tenant("a", "\"a.example\"", s3),
        tenant("b", "\"b.example\"", s3)
    ))
    .unwrap_err();
    assert_eq!(e.key, "tenants[1].store", "{e}");
    // With the domain in it, one template serves every tenant apart.
    check(format!(
        "{one}{}{}",
        tenant("a", "\"a.example\"", &maildir("%d/%n")),
        tenant("b", "\"b.example\"", &maildir("%d/%n"))
    ))
    .unwrap();
    // A tenant without domains that no listener defaults to serves nobody.
    let e = check(format!("{one}{}", tenant("a", "", &maildir("%d/%n")))).unwrap_err();
    assert_eq!(e.key, "tenants[0].domains", "{e}");
    let a = tenant("a", "\"a.example\"", &maildir("%d/%n"));
    // Two listeners, or a listener and metrics, on one address.
    let e = check(format!("{one}{one}{a}")).unwrap_err();
    assert_eq!(e.key, "listeners[1].address", "{e}");
    let e = check(format!("{one}[metrics]\naddress = \"127.0.0.1:1100\"\n{a}")).unwrap_err();
    assert_eq!(e.key, "metrics.address", "{e}");
}

#[test]
fn validation_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "bob@a.example:{PLAIN}x\n").unwrap();
    let base = |extra: &str, store: &str| {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:1100\"\nplaintext_auth = true\n{extra}\n\
                 [[tenants]]\nname = \"a\"\ndomains = [\"a.example\"]\n\
                 auth = {{ kind = \"passwd-file\", path = \"{}\" }}\nstore = {{ kind = \"maildir\", path = \"{store}\" }}\n",
            passwd.display()
        )
    };
    let good = format!("{}/%d/%n", dir.path().display());
    parse(&base("", &good)).unwrap().validate().unwrap();

    let e = parse(&base("default_tenant = \"zz\"", &good))
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e.key, "listeners[0].default_tenant");
    let e = parse(&base("", &format!("{}/%q/%n", dir.path().display())))
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e.key, "tenants[0].store.path");
    assert!(e.message.contains("%q"));
    let e = parse(&base("", "/nonexistent-popgate/%d/%n"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e.key, "tenants[0].store.path");
    let bad_listener = base("", &good).replace("127.0.0.1:1100", "localhost:nope");
    let e = parse(&bad_listener).unwrap().validate().unwrap_err();
    assert_eq!(e.key, "listeners[0].address");
    let mut two = base("", &good);
    two.push_str(&format!(
            "[[tenants]]\nname = \"b\"\ndomains = [\"A.example\"]\nauth = {{ kind = \"passwd-file\", path = \"{}\" }}\n\
             store = {{ kind = \"maildir\", path = \"{good}\" }}\n",
            passwd.display()
        ));
    let e = parse(&two).unwrap().validate().unwrap_err();
    assert_eq!(e.key, "tenants[1].domains");
    let missing = base("", &good).replace(&passwd.display().to_string(), "/nonexistent/passwd");
    let e = parse(&missing).unwrap().validate().unwrap_err();
    assert_eq!(e.key, "tenants[0].auth.path");
    // No TLS and no plaintext login serves nobody, unless a balancer in
    // front terminates TLS and says so in its PROXY v2 header.
    let no_login = base("", &good).replace("plaintext_auth = true", "plaintext_auth = false");
    let e = parse(&no_login).unwrap().validate().unwrap_err();
    assert_eq!(e.key, "listeners[0].plaintext_auth");
    let behind_tls = no_login.replace(
        "plaintext_auth = false",
        "plaintext_auth = false\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]",
    );
    parse(&behind_tls).unwrap().validate().unwrap();
}

#[test]
#[cfg(not(all(feature = "postgres", feature = "redis", feature = "s3")))]
fn a_backend_this_build_lacks_is_refused_by_key_not_by_serde() {
    let config = |locks: &str, auth: &str, store: &str| {
        format!(
            "{locks}[[listeners]]\naddress = \"127.0.0.1:1100\"\nplaintext_auth = true\n\
             [[tenants]]\nname = \"a\"\ndomains = [\"a.example\"]\nauth = {{ {auth} }}\nstore = {{ {store} }}\n"
        )
    };
    let pg = "kind = \"postgres\", url = \"postgres://db/mail\"";
    let s3 = "kind = \"s3\", bucket = \"mail\"";
    let redis = "[locks]\nbackend = \"redis\"\nurl = \"redis://r\"\n";
    let refused = |toml: String| parse(&toml).unwrap().validate().unwrap_err().to_string();
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "bob@a.example:{PLAIN}x\n").unwrap();
    let file = format!("kind = \"passwd-file\", path = \"{}\"", passwd.display());
    #[cfg(not(feature = "s3"))]
    assert_eq!(
        refused(config("", &file, s3)),
        "tenants[0].store: kind \"s3\" is not in this build (built without the \"s3\" feature)"
    );
    #[cfg(not(feature = "postgres"))]
    assert_eq!(
        refused(config("", pg, s3)),
        "tenants[0].auth: kind \"postgres\" is not in this build (built without the \"postgres\" feature)"
    );
    #[cfg(not(feature = "redis"))]
    assert_eq!(
        refused(config(redis, pg, s3)),
        "locks.backend: \"redis\" is not in this build (built without the \"redis\" feature)"
    );
    let _ = (redis, pg, s3, config, file);
}

#[test]
#[cfg(all(feature = "postgres", feature = "redis", feature = "s3"))]
fn every_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        path.display().to_string()
    };
    let redis = secret("redis-url", "redis://:pw@127.0.0.1:6379\n");
    let token = secret("token", "t0ken\n");
    let pg = secret("pg-url", "postgres://popgate:pw@db/mail\r\n");
    let key_id = secret("s3-id", "AKIDEXAMPLE\n");
    let key = secret("s3-secret", "wJalrXUtnFEMI/K7MDENG\n");
    let toml = format!(
        "[locks]\nbackend = \"redis\"\nurl_file = \"{redis}\"\n\
         [metrics]\naddress = \"127.0.0.1:9100\"\nbearer_token_file = \"{token}\"\n\
         [[tenants]]\nname = \"a\"\n\
         auth = {{ kind = \"postgres\", url_file = \"{pg}\" }}\n\
         store = {{ kind = \"s3\", bucket = \"mail\", access_key_id_file = \"{key_id}\", \
         secret_access_key_file = \"{key}\" }}\n"
    );
    let file = dir.path().join("popgate.toml");
    std::fs::write(&file, &toml).unwrap();
    let c = load_with_env(Some(&file), []).unwrap();
    let r = c.locks.redis_config().unwrap().unwrap();
    assert!(
        matches!(&r.endpoint, backend_redis::Endpoint::Url(u) if u == "redis://:pw@127.0.0.1:6379"),
        "{:?}",
        r.endpoint
    );
    assert_eq!(
        c.metrics.as_ref().unwrap().bearer_token.as_deref(),
        Some("t0ken")
    );
    let AuthSection::Postgres(pgs) = &c.tenants[0].auth else {
        panic!("not postgres")
    };
    assert_eq!(pgs.url, "postgres://popgate:pw@db/mail");
    let StoreSection::S3(s3) = &c.tenants[0].store else {
        panic!("not s3")
    };
    s3.validate("tenants[0].store").unwrap();
    let creds = s3.store_config().credentials.unwrap();
    assert_eq!(
        (
            creds.access_key_id.as_str(),
            creds.secret_access_key.as_str()
        ),
        ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG")
    );
    // An environment variable names the file as well.
    let other = secret("token2", "other\n");
    let c = load_with_env(
        Some(&file),
        [(
            "POPGATE_METRICS__BEARER_TOKEN_FILE".to_string(),
            other.clone(),
        )],
    )
    .unwrap();
    assert_eq!(c.metrics.unwrap().bearer_token.as_deref(), Some("other"));

    // Errors name the key and the path.
    let load = |toml: String| {
        std::fs::write(&file, toml).unwrap();
        load_with_env(Some(&file), []).unwrap_err()
    };
    let e = load(toml.replace(&redis, "/nonexistent/redis-url"));
    assert_eq!(e.key, "locks.url_file", "{e}");
    assert!(e.message.contains("/nonexistent/redis-url"), "{e}");
    let e = load(toml.replace(&pg, "/nonexistent/pg"));
    assert_eq!(e.key, "tenants[0].auth.url_file", "{e}");
    let e = load(toml.replace(&key, "/nonexistent/s3"));
    assert_eq!(e.key, "tenants[0].store.secret_access_key_file", "{e}");
    // One of the two, not both.
    let e = load(toml.replace(
        "bearer_token_file",
        "bearer_token = \"inline\"\nbearer_token_file",
    ));
    assert_eq!(e.key, "metrics.bearer_token_file", "{e}");
    assert!(e.message.contains("metrics.bearer_token is set too"), "{e}");
    let e = load(toml.replace(
        &format!("url_file = \"{redis}\""),
        &format!("url = \"redis://h\"\nurl_file = \"{redis}\""),
    ));
    assert_eq!(e.key, "locks.url_file", "{e}");
    let e = load(toml.replace(
        &format!("url_file = \"{pg}\""),
        &format!("url = \"postgres://x\", url_file = \"{pg}\""),
    ));
    assert!(
        e.to_string().contains("url and url_file are both set"),
        "{e}"
    );
    // A lone key file is refused like a lone key.
    std::fs::write(
        &file,
        toml.replace(&format!(", secret_access_key_file = \"{key}\""), ""),
    )
    .unwrap();
    let c = load_with_env(Some(&file), []).unwrap();
    let StoreSection::S3(s3) = &c.tenants[0].store else {
        panic!("not s3")
    };
    let e = s3.validate("tenants[0].store").unwrap_err();
    assert_eq!(e.key, "tenants[0].store.secret_access_key", "{e}");
    // Secrets stay out of the debug form.
    std::fs::write(&file, &toml).unwrap();
    let c = load_with_env(Some(&file), []).unwrap();
    assert!(!format!("{c:?}").contains("wJalrXUtnFEMI"));
}

#[test]
#[cfg(all(feature = "redis", feature = "mysql"))]
fn sentinel_password_and_sql_url_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        path.display().to_string()
    };
    let pw = write("master-pw", "m4ster\n");
    let sql = write("sql-url", "mysql://postfix:pw@db/postfix\n");
    let toml = format!(
        "[locks]\nbackend = \"redis\"\nsentinels = [\"redis://127.0.0.1:26379\"]\n\
         master_name = \"mymaster\"\nmaster_password_file = \"{pw}\"\n\
         [[tenants]]\nname = \"a\"\n\
         auth = {{ kind = \"sql\", url_file = \"{sql}\", \
         password_query = \"SELECT password FROM mailbox WHERE username = '%u'\" }}\n\
         store = {{ kind = \"maildir\", path = \"/m/%d/%n\" }}\n"
    );
    let file = dir.path().join("popgate.toml");
    std::fs::write(&file, &toml).unwrap();
    let c = load_with_env(Some(&file), []).unwrap();
    assert_eq!(c.locks.master_password.as_deref(), Some("m4ster"));
    c.locks.redis_config().unwrap().unwrap();
    let AuthSection::Sql(s) = &c.tenants[0].auth else {
        panic!("not sql")
    };
    assert_eq!(s.url.as_deref(), Some("mysql://postfix:pw@db/postfix"));
    s.validate("tenants[0].auth").unwrap();
    // Both forms, or a missing file: the key named.
    std::fs::write(
        &file,
        toml.replace("url_file", "url = \"mysql://x/y\", url_file"),
    )
    .unwrap();
    let e = load_with_env(Some(&file), []).unwrap_err();
    assert_eq!(e.key, "tenants[0].auth.url_file", "{e}");
    std::fs::write(&file, toml.replace(&pw, "/nonexistent/pw")).unwrap();
    let e = load_with_env(Some(&file), []).unwrap_err();
    assert_eq!(e.key, "locks.master_password_file", "{e}");
    assert!(e.message.contains("/nonexistent/pw"), "{e}");
}
