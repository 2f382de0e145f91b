//! The LDAP directory (reading userPassword) runs the directory
//! conformance kit against a private slapd: the kit's users as entries,
//! their per-user fields in attributes of a small test schema.
//!
//! `auth_bind` is not run through the kit: there slapd checks the password,
//! and it knows only some of the kit's schemes ({SSHA}, {CRYPT}, {ARGON2});
//! tests/slapd.rs tests it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use directory_ldap::{LdapConfig, LdapDirectory, UserAttributes};
use popgate_auth::Directory;
use popgate_auth::conformance::{self, Fixture, KitUser};
use popgate_auth::hashing::Hashing;
use support::{PEOPLE, READER, READER_PW, Slapd, free_port};

fn entry(u: &KitUser) -> String {
    let local = u.local();
    let mut e = format!(
        "dn: uid={local},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
         objectClass: popgateUser\nuid: {local}\ncn: {local}\nsn: {local}\nuidNumber: 1000\n\
         gidNumber: 1000\nhomeDirectory: /home/{local}\nmail: {}\nuserPassword: {}\n\
         popgateEnabled: {}\n",
        u.login,
        u.stored,
        if u.enabled { "TRUE" } else { "FALSE" }
    );
    if let Some(nets) = &u.allow_nets {
        e.push_str(&format!("popgateAllowNets: {nets}\n"));
    }
    if let Some(delay) = u.login_delay {
        e.push_str(&format!("popgateLoginDelay: {delay}\n"));
    }
    e + "\n"
}

fn config(url: String) -> LdapConfig {
    LdapConfig {
        bind_dn: Some(READER.into()),
        bind_password: Some(READER_PW.into()),
        timeout: Duration::from_secs(3),
        attributes: UserAttributes {
            allow_nets: Some("popgateAllowNets".into()),
            login_delay: Some("popgateLoginDelay".into()),
            enabled: Some("popgateEnabled".into()),
            user: None,
            location: None,
        },
        ..LdapConfig::new(url, PEOPLE)
    }
}

#[derive(Default)]
struct Tree {
    slapd: Option<Slapd>,
}

#[async_trait]
impl Fixture for Tree {
    async fn directory(&mut self, users: &[KitUser], hashing: Hashing) -> Arc<dyn Directory> {
        let ldif: String = users.iter().map(entry).collect();
        let slapd = tokio::task::spawn_blocking(move || Slapd::start(&ldif))
            .await
            .unwrap();
        let dir = LdapDirectory::new(config(slapd.url()), hashing).unwrap();
        self.slapd = Some(slapd);
        Arc::new(dir)
    }

    /// A port nobody listens on.
    async fn unreachable(&mut self, hashing: Hashing) -> Option<Arc<dyn Directory>> {
        let url = format!("ldap://127.0.0.1:{}", free_port());
        Some(Arc::new(LdapDirectory::new(config(url), hashing).unwrap()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_passes_the_kit() {
    conformance::run(&mut Tree::default()).await;
}
