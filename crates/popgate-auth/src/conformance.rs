//! The conformance kit: the behaviour every [`Directory`] must show.
//!
//! The kit defines the users it needs ([`users`]); a backend's test
//! implements [`Fixture`], writing those users into its own storage (a
//! file, a table, an LDAP tree) and handing back a directory over them, and
//! calls [`run`] from inside a multi-threaded tokio test. The kit panics
//! with a description of the first broken rule:
//!
//! - the right password of a known user, in each scheme the backend
//!   stores, gives `Some(UserInfo)` with the user's fields; a wrong
//!   password, an unknown user and a disabled user give `None`;
//! - `allow_nets` admits its networks (IPv4, IPv6, IPv4-mapped) and
//!   refuses other addresses and a login without an address;
//! - a per-user LOGIN-DELAY comes back in [`UserInfo`];
//! - `find_user` finds a disabled user and not an unknown one;
//! - `verify_unknown` works, and `ping` does;
//! - an unreachable directory answers every call with an [`AuthError`]
//!   (POP3 `[SYS/TEMP]`), never with "wrong password";
//! - an unknown user, and `verify_unknown`, cost what a wrong password of a
//!   known user costs (medians of a slow hash within 0.5x to 2x).
//!
//! Enable it in a backend's `[dev-dependencies]` with
//! `popgate-auth = { workspace = true, features = ["conformance"] }`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::hashing::{HashPool, HashPoolConfig, Hashing};
use crate::scheme::{self, HashParams, Scheme};
use crate::{Directory, Login, UserInfo};

/// The domain of every kit user.
pub const DOMAIN: &str = "kit.example";
/// A login the kit never defines.
pub const UNKNOWN: &str = "nobody";
/// The `allow_nets` of the user `nets`.
pub const ALLOW_NETS: &str = "192.0.2.0/24, 2001:db8::/32";
/// The LOGIN-DELAY of the user `delay`.
pub const LOGIN_DELAY: u32 = 120;

/// A user the backend must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KitUser {
    /// `local@` [`DOMAIN`], lower case.
    pub login: String,
    /// The password in plain text.
    pub password: String,
    /// The password as the backend stores it: a `{SCHEME}data` string, or
    /// a bare crypt string (`$2y$...`: Dovecot's `CRYPT`).
    pub stored: String,
    /// `false`: the user exists but cannot log in.
    pub enabled: bool,
    /// Dovecot's `allow_nets` list, when the user has one.
    pub allow_nets: Option<String>,
    /// Per-user LOGIN-DELAY in seconds.
    pub login_delay: Option<u32>,
}

impl KitUser {
    /// The local part of [`KitUser::login`].
    pub fn local(&self) -> &str {
        self.login.split('@').next().unwrap_or_default()
    }

    fn new(local: &str, stored: String, password: &str) -> KitUser {
        KitUser {
            login: format!("{local}@{DOMAIN}"),
            password: password.to_owned(),
            stored,
            enabled: true,
            allow_nets: None,
            login_delay: None,
        }
    }
}

/// How a backend's test gives the kit its directory.
#[async_trait]
pub trait Fixture: Send {
    /// The schemes the backend stores: one known user per scheme (for
    /// `CRYPT` also one whose hash has no `{SCHEME}` prefix).
    fn schemes(&self) -> Vec<Scheme> {
        Scheme::ALL.to_vec()
    }

    /// Writes `users` into the backend's storage (and nothing else) and
    /// returns a directory over them that hashes in `hashing`.
    async fn directory(&mut self, users: &[KitUser], hashing: Hashing) -> Arc<dyn Directory>;

    /// A directory of the same kind whose storage cannot be reached (a
    /// server that is down, a port nobody listens on), or `None` when the
    /// backend has no outage to speak of (a file already read into memory).
    async fn unreachable(&mut self, hashing: Hashing) -> Option<Arc<dyn Directory>>;
}

/// The local part of the user per scheme: `s-argon2id`, `s-blf-crypt`...
pub fn scheme_local(scheme: Scheme) -> String {
    format!("s-{}", scheme.name().to_ascii_lowercase())
}

/// The users the kit needs, for a backend that stores `schemes`:
/// - one per scheme (`s-argon2id`, ...; cheap parameters), and `s-bare`, a
///   bcrypt hash without a prefix, when `CRYPT` is among them;
/// - `disabled`, `nets` (with [`ALLOW_NETS`]), `delay` (with
///   [`LOGIN_DELAY`]), `known` and `twin`: ARGON2ID with production
///   parameters, the most common cost class, so that it is the dummy a
///   directory picks for unknown users, and slow enough to time.
pub fn users(schemes: &[Scheme]) -> Vec<KitUser> {
    let fast = HashParams::INSECURE_FAST;
    let mut out = Vec::new();
    for &scheme in schemes {
        let local = scheme_local(scheme);
        let password = format!("right pw of {local}");
        let stored = scheme::hash_with(scheme, password.as_bytes(), &fast).expect("kit hash");
        if scheme == Scheme::Crypt {
            let bare = stored.trim_start_matches("{CRYPT}").to_owned();
            out.push(KitUser::new("s-bare", bare, &password));
        }
        out.push(KitUser::new(&local, stored, &password));
    }
    for local in ["disabled", "nets", "delay", "known", "twin"] {
        let password = format!("right pw of {local}");
        let stored = scheme::hash(Scheme::Argon2id, password.as_bytes()).expect("kit hash");
        let mut user = KitUser::new(local, stored, &password);
        match local {
            "disabled" => user.enabled = false,
            "nets" => user.allow_nets = Some(ALLOW_NETS.to_owned()),
            "delay" => user.login_delay = Some(LOGIN_DELAY),
            _ => {}
        }
        out.push(user);
    }
    out
}

/// Runs every rule against the fixture's directory.
pub async fn run(fixture: &mut dyn Fixture) {
    let users = users(&fixture.schemes());
    let pool = HashPool::new(HashPoolConfig {
        wait: Duration::from_secs(30),
        ..HashPoolConfig::default()
    });
    let dir = fixture.directory(&users, pool.for_tenant("kit")).await;
    let user = |local: &str| {
        users
            .iter()
            .find(|u| u.local() == local)
            .expect("a kit user")
            .clone()
    };

    dir.ping().await.expect("ping of a reachable directory");
    right_and_wrong_passwords(&*dir, &users).await;
    disabled_and_unknown_users_fail(&*dir, &user("disabled")).await;
    allow_nets_admits_only_its_networks(&*dir, &user("nets")).await;
    login_delay_is_returned(&*dir, &user("delay")).await;
    find_user_sees_disabled_users(&*dir, &user("disabled"), &user("known")).await;
    unknown_users_cost_a_wrong_password(&*dir, &user("known")).await;
    a_listing_names_every_user(&*dir, &users).await;

    if let Some(down) = fixture.unreachable(pool.for_tenant("kit-down")).await {
        an_outage_is_an_error(&*down, &user("known")).await;
    }
}

/// A directory that can list its users (`migrate-mail --all`) lists every
/// one, disabled ones too, sorted.
async fn a_listing_names_every_user(dir: &dyn Directory, users: &[KitUser]) {
    let listed = match dir.list_logins().await {
        Ok(listed) => listed,
        Err(crate::ListError::Unsupported(_)) => return,
        Err(e) => panic!("listing the users: {e}"),
    };
    for u in users {
        let full = format!("{}@{DOMAIN}", u.local());
        assert!(
            listed.contains(&full) || listed.iter().any(|l| l == u.local()),
            "the listing names {full}: {listed:?}"
        );
    }
    assert!(listed.is_sorted(), "the listing is sorted: {listed:?}");
}

fn login_of(user: &KitUser) -> Login<'_> {
    Login::new(user.local(), DOMAIN)
}

async fn verify(dir: &dyn Directory, login: Login<'_>, password: &str) -> Option<UserInfo> {
    dir.verify(login, password.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("verify of {}@{}: {e}", login.local, login.domain))
}

async fn right_and_wrong_passwords(dir: &dyn Directory, users: &[KitUser]) {
    let plain = users.iter().filter(|u| u.local().starts_with("s-"));
    for u in plain {
        assert_eq!(
            verify(dir, login_of(u), &u.password).await,
            Some(UserInfo::default()),
            "{}: the right password ({}) logs in, with no per-user fields",
            u.login,
            u.stored.split('$').next().unwrap_or_default()
        );
        let wrong = format!("{}x", u.password);
        assert_eq!(
            verify(dir, login_of(u), &wrong).await,
            None,
            "{}: a wrong password is refused",
            u.login
        );
        assert_eq!(
            verify(dir, login_of(u), "").await,
            None,
            "{}: an empty password is refused",
            u.login
        );
    }
}

async fn disabled_and_unknown_users_fail(dir: &dyn Directory, disabled: &KitUser) {
    assert_eq!(
        verify(dir, login_of(disabled), &disabled.password).await,
        None,
        "a disabled user cannot log in with the right password"
    );
    let unknown = Login::new(UNKNOWN, DOMAIN);
    assert_eq!(
        verify(dir, unknown, "right pw of nobody").await,
        None,
        "an unknown user is refused"
    );
    // The same name on a domain the kit does not use.
    let elsewhere = Login::new(disabled.local(), "other.example");
    assert_eq!(
        verify(dir, elsewhere, &disabled.password).await,
        None,
        "a user of another domain is unknown"
    );
}

async fn allow_nets_admits_only_its_networks(dir: &dyn Directory, nets: &KitUser) {
    let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
    for (client, admitted) in [
        ("192.0.2.7", true),
        ("::ffff:192.0.2.8", true),
        ("2001:db8::1", true),
        ("198.51.100.1", false),
        ("2001:db9::1", false),
        ("127.0.0.1", false),
    ] {
        let login = login_of(nets).with_client(ip(client));
        assert_eq!(
            verify(dir, login, &nets.password).await.is_some(),
            admitted,
            "allow_nets {ALLOW_NETS:?}: a login from {client} is {}",
            if admitted { "admitted" } else { "refused" }
        );
        assert_eq!(
            verify(dir, login, "wrong").await,
            None,
            "a wrong password from {client} is refused"
        );
    }
    assert_eq!(
        verify(dir, login_of(nets), &nets.password).await,
        None,
        "allow_nets without \"local\" refuses a login without a client address"
    );
}

async fn login_delay_is_returned(dir: &dyn Directory, delay: &KitUser) {
    let from = login_of(delay).with_client("203.0.113.5".parse().expect("an address"));
    assert_eq!(
        verify(dir, from, &delay.password).await,
        Some(UserInfo {
            login_delay: Some(LOGIN_DELAY),
            mailbox: None,
            location: None,
        }),
        "the per-user LOGIN-DELAY comes back with the login"
    );
}

async fn find_user_sees_disabled_users(dir: &dyn Directory, disabled: &KitUser, known: &KitUser) {
    let exists = |login| async move { dir.find_user(login).await.expect("find_user").is_some() };
    assert!(exists(login_of(known)).await, "a known user exists");
    assert!(
        exists(login_of(disabled)).await,
        "a disabled user exists (delivery takes their mail)"
    );
    assert!(
        !exists(Login::new(UNKNOWN, DOMAIN)).await,
        "an unknown user does not exist"
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn unknown_users_cost_a_wrong_password(dir: &dyn Directory, known: &KitUser) {
    let (mut wrong, mut unknown, mut outside) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..8 {
        let t = Instant::now();
        let r = verify(dir, login_of(known), "a guess").await;
        let w = t.elapsed();
        assert_eq!(r, None, "a wrong password is refused");
        let t = Instant::now();
        let r = verify(dir, Login::new(UNKNOWN, DOMAIN), "a guess").await;
        let u = t.elapsed();
        assert_eq!(r, None, "an unknown user is refused");
        let t = Instant::now();
        dir.verify_unknown(b"a guess")
            .await
            .expect("verify_unknown");
        let o = t.elapsed();
        // The first round warms caches and pools up.
        if round > 0 {
            wrong.push(w);
            unknown.push(u);
            outside.push(o);
        }
    }
    let w = median(wrong);
    assert!(
        w > Duration::from_millis(2),
        "a wrong password of a production ARGON2ID user is hashed ({w:?})"
    );
    for (what, t) in [
        ("an unknown user", median(unknown)),
        ("verify_unknown", median(outside)),
    ] {
        let ratio = t.as_secs_f64() / w.as_secs_f64();
        eprintln!(
            "{} kit: {what} {t:?}, a wrong password {w:?}, ratio {ratio:.2}",
            dir.kind()
        );
        assert!(
            (0.5..=2.0).contains(&ratio),
            "{what} costs {t:?}, a wrong password {w:?} (ratio {ratio:.2}, want 0.5 to 2): \
             timing tells users apart"
        );
    }
}

async fn an_outage_is_an_error(dir: &dyn Directory, known: &KitUser) {
    let login = login_of(known);
    let bounded = |what: &'static str, r: Result<Result<(), crate::AuthError>, _>| match r {
        Ok(Err(_)) => {}
        Ok(Ok(())) => panic!("{what} of an unreachable directory must fail with AuthError"),
        Err(_) => panic!("{what} of an unreachable directory must fail within 30 s"),
    };
    let limit = Duration::from_secs(30);
    let r = tokio::time::timeout(limit, dir.verify(login, known.password.as_bytes())).await;
    bounded("verify", r.map(|r| r.map(drop)));
    let r = tokio::time::timeout(limit, dir.find_user(login)).await;
    bounded("find_user", r.map(|r| r.map(drop)));
    let r = tokio::time::timeout(limit, dir.verify_unknown(b"a guess")).await;
    bounded("verify_unknown", r);
    let r = tokio::time::timeout(limit, dir.ping()).await;
    bounded("ping", r);
}
