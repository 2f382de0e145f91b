//! The LDAP directory against a real, private OpenLDAP server.

mod support;

use std::time::Duration;

use directory_ldap::{LdapConfig, LdapDirectory};
use popgate_auth::hashing::Hashing;
use popgate_auth::scheme::{self, HashParams, Scheme};
use popgate_auth::{Directory, Login};
use support::{BASE, PEOPLE, READER, READER_PW, Slapd, user};

fn reader(url: String) -> LdapConfig {
    LdapConfig {
        bind_dn: Some(READER.into()),
        bind_password: Some(READER_PW.into()),
        timeout: Duration::from_secs(3),
        ..LdapConfig::new(url, PEOPLE)
    }
}

fn directory(config: LdapConfig) -> LdapDirectory {
    LdapDirectory::new(config, Hashing::standalone()).unwrap()
}

fn fast(scheme: Scheme, password: &str) -> String {
    scheme::hash_with(scheme, password.as_bytes(), &HashParams::INSECURE_FAST).unwrap()
}

/// `{CRYPT}$6$...`, `{CRYPT}$2y$...` and `{ARGON2}$argon2id$...`, as an
/// LDAP tree holds them.
fn users() -> String {
    let crypt = |s| {
        format!(
            "{{CRYPT}}{}",
            fast(s, "crypt-pw").split_once('}').unwrap().1
        )
    };
    let argon = fast(Scheme::Argon2id, "argon-pw");
    let argon = format!("{{ARGON2}}{}", argon.strip_prefix("{ARGON2ID}").unwrap());
    let ssha = scheme::hash(Scheme::Ssha, b"ssha-pw").unwrap();
    [
        user("ssha", "ssha@example.org", &ssha),
        user("sha512", "sha512@example.org", &crypt(Scheme::Sha512Crypt)),
        user("bcrypt", "bcrypt@example.org", &crypt(Scheme::BlfCrypt)),
        user("argon", "argon@example.org", &argon),
        user("twin1", "twin@example.org", &ssha),
        user("twin2", "twin@example.org", &ssha),
        // Legacy hashes as `doveadm pw` makes them: {CRYPT} with MD5-crypt,
        // {SSHA512}, and Dovecot's {PLAIN-MD5} (hex).
        user("md5crypt", "md5crypt@example.org", "{CRYPT}$1$wXKxLija$iHN1JiihdYCQ.pMTnG8WT0"),
        user("ssha512", "ssha512@example.org", "{SSHA512}UEaMqoMaxp4O0nl0dYbjvGOJ9uktyLfzrtPyfQtuJVmqVHHnRvwMJbM+o25AzEPWcmkCMn01UPY+ZDCyVGWYQHkxTeQ="),
        user("plainmd5", "plainmd5@example.org", "{PLAIN-MD5}993f3f9ac3a160087272fe66d322a51b"),
        // An alias whose `description` names the mailbox it opens.
        user("alias", "alias@example.org", &ssha).replace("\n\n", "\ndescription: ssha@example.org\n\n"),
    ]
    .concat()
}

async fn ok(dir: &LdapDirectory, local: &str, password: &str) -> bool {
    dir.verify(Login::new(local, "example.org"), password.as_bytes())
        .await
        .expect("the directory answers")
        .is_some()
}

#[tokio::test]
async fn reads_and_checks_the_password_attribute() {
    let slapd = Slapd::start(&users());
    let dir = directory(reader(slapd.url()));
    for (local, password) in [
        ("ssha", "ssha-pw"),
        ("sha512", "crypt-pw"),
        ("bcrypt", "crypt-pw"),
        ("argon", "argon-pw"),
        ("md5crypt", "md5-pw"),
        ("ssha512", "ssha512-pw"),
        ("plainmd5", "plainmd5-pw"),
    ] {
        assert!(ok(&dir, local, password).await, "{local} logs in");
        assert!(!ok(&dir, local, "wrong").await, "{local}: wrong password");
        assert!(!ok(&dir, local, "").await, "{local}: empty password");
    }
    assert!(!ok(&dir, "nobody", "ssha-pw").await);
    let exists = |l| dir.find_user(Login::new(l, "example.org"));
    assert!(exists("argon").await.unwrap().is_some());
    assert!(exists("nobody").await.unwrap().is_none());
    // Two entries for one login: neither logs in.
    assert!(!ok(&dir, "twin", "ssha-pw").await);
    dir.ping().await.unwrap();
}

#[tokio::test]
async fn auth_bind_asks_the_server() {
    let slapd = Slapd::start(&users());
    let dir = directory(LdapConfig {
        auth_bind: true,
        ..reader(slapd.url())
    });
    // slapd checks {SSHA}, {CRYPT} (glibc) and {ARGON2} (its module).
    for (local, password) in [
        ("ssha", "ssha-pw"),
        ("sha512", "crypt-pw"),
        ("argon", "argon-pw"),
    ] {
        assert!(ok(&dir, local, password).await, "{local} binds");
        assert!(!ok(&dir, local, "wrong").await, "{local}: wrong password");
        // An empty simple bind is anonymous and would succeed.
        assert!(!ok(&dir, local, "").await, "{local}: empty password");
    }
    assert!(!ok(&dir, "nobody", "ssha-pw").await);
    // The bind connections are reused: many logins in a row still work.
    for _ in 0..20 {
        assert!(ok(&dir, "ssha", "ssha-pw").await);
        assert!(!ok(&dir, "ssha", "nope").await);
    }
    // Anonymous searches work too: the filter only reads mail.
    let anonymous = directory(LdapConfig {
        auth_bind: true,
        ..LdapConfig::new(slapd.url(), PEOPLE)
    });
    assert!(ok(&anonymous, "ssha", "ssha-pw").await);
    assert!(!ok(&anonymous, "ssha", "").await);
}

#[tokio::test]
async fn an_injected_filter_finds_nothing() {
    let slapd = Slapd::start(&users());
    let config = LdapConfig {
        user_filter: "(&(objectClass=posixAccount)(uid=%n))".into(),
        ..reader(slapd.url())
    };
    for auth_bind in [false, true] {
        let dir = directory(LdapConfig {
            auth_bind,
            ..config.clone()
        });
        assert!(ok(&dir, "ssha", "ssha-pw").await);
        // Unescaped, each of these would find uid=ssha (and log in).
        for local in ["ss*", "*", "ssha)(objectClass=*", "*)(uid=ssha", "ssha\\"] {
            assert!(
                !ok(&dir, local, "ssha-pw").await,
                "{local:?} (auth_bind {auth_bind})"
            );
            let exists = dir.find_user(Login::new(local, "example.org")).await;
            assert!(exists.unwrap().is_none(), "{local:?} exists");
        }
    }
}

#[tokio::test]
async fn an_outage_is_an_auth_error_until_the_server_is_back() {
    let mut slapd = Slapd::start(&users());
    for auth_bind in [false, true] {
        let dir = directory(LdapConfig {
            auth_bind,
            ..reader(slapd.url())
        });
        assert!(ok(&dir, "ssha", "ssha-pw").await);
        slapd.kill();
        let login = Login::new("ssha", "example.org");
        let e = dir.verify(login, b"ssha-pw").await.unwrap_err();
        assert!(
            e.to_string().contains(&format!("127.0.0.1:{}", slapd.port)),
            "{e}"
        );
        assert!(dir.find_user(login).await.is_err());
        assert!(dir.ping().await.is_err());
        slapd.run();
        assert!(
            ok(&dir, "ssha", "ssha-pw").await,
            "reconnects (auth_bind {auth_bind})"
        );
    }
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_an_auth_error_in_bounded_time() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let dir = directory(LdapConfig {
        timeout: Duration::from_millis(300),
        ..reader(url)
    });
    let verify = dir.verify(Login::new("ssha", "example.org"), b"ssha-pw");
    let result = tokio::time::timeout(Duration::from_secs(10), verify)
        .await
        .expect("the timeout bounds the login");
    assert!(result.is_err());
    held.abort();
}

#[tokio::test]
async fn a_refused_service_bind_is_an_auth_error_without_the_password() {
    let slapd = Slapd::start(&users());
    let dir = directory(LdapConfig {
        bind_password: Some("not-the-reader-pw".into()),
        ..reader(slapd.url())
    });
    let e = dir
        .verify(Login::new("ssha", "example.org"), b"ssha-pw")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("service bind") && e.contains("49"), "{e}");
    assert!(!e.contains("not-the-reader-pw"), "{e}");
    // A base that does not exist fails the readiness check.
    let missing = directory(LdapConfig::new(slapd.url(), format!("ou=gone,{BASE}")));
    assert!(missing.ping().await.is_err());
}

#[tokio::test]
async fn ldaps_and_starttls_with_a_private_ca() {
    let slapd = Slapd::start_tls(&users());
    let ldaps = format!("ldaps://127.0.0.1:{}", slapd.tls_port.unwrap());
    let with_ca = |url: String, starttls: bool| LdapConfig {
        starttls,
        tls_ca_file: Some(slapd.ca_file()),
        ..reader(url)
    };
    for config in [with_ca(ldaps.clone(), false), with_ca(slapd.url(), true)] {
        for auth_bind in [false, true] {
            let dir = directory(LdapConfig {
                auth_bind,
                ..config.clone()
            });
            assert!(
                ok(&dir, "ssha", "ssha-pw").await,
                "{} auth_bind {auth_bind}",
                config.url
            );
            assert!(!ok(&dir, "ssha", "wrong").await);
        }
    }
    // The system's roots do not know the test CA: no login, an AuthError.
    let untrusted = directory(reader(ldaps));
    let e = untrusted
        .verify(Login::new("ssha", "example.org"), b"ssha-pw")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("connect"), "{e}");
}

#[tokio::test]
async fn the_user_attribute_names_the_mailbox() {
    let slapd = Slapd::start(&users());
    let mut config = reader(slapd.url());
    config.attributes.user = Some("description".into());
    let dir = directory(config);
    let info = |local: &'static str| {
        let dir = &dir;
        async move {
            dir.verify(Login::new(local, "example.org"), b"ssha-pw")
                .await
                .unwrap()
        }
    };
    let alias = info("alias").await.expect("the alias logs in");
    assert_eq!(alias.mailbox.as_deref(), Some("ssha@example.org"));
    // Without the attribute: the login's own mailbox.
    let own = info("ssha").await.expect("ssha logs in");
    assert_eq!(own.mailbox, None);
}
