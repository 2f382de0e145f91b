//! A private OpenLDAP server for the tests: Debian's `slapd` on a free
//! loopback port, an mdb database in a temporary folder, loaded with
//! `ldapadd`. The service account `cn=reader` may read `userPassword`;
//! anyone may bind with it. Like Active Directory and others, it takes a
//! DN with an empty password as an anonymous bind (`allow bind_anon_dn`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE: &str = "dc=example,dc=org";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const READER: &str = "cn=reader,dc=example,dc=org";
pub const READER_PW: &str = "reader-secret";

/// Attributes for the per-user fields popgate can read (the kit's disabled
/// user, allow_nets and LOGIN-DELAY), on an auxiliary class.
const SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'popgateAllowNets' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.55555.1.2 NAME 'popgateLoginDelay' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.3 NAME 'popgateEnabled' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'popgateUser' AUXILIARY MAY ( popgateAllowNets $ popgateLoginDelay $ popgateEnabled ) )
";

pub struct Slapd {
    pub port: u16,
    /// The ldaps:// port, when started with [`Slapd::start_tls`].
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Slapd {
    /// Starts a server with the base entries and `ldif` loaded.
    pub fn start(ldif: &str) -> Slapd {
        Slapd::start_with(ldif, false)
    }

    /// [`Slapd::start`] with TLS: StartTLS on the plain port and ldaps://
    /// on [`Slapd::tls_port`], with a certificate for 127.0.0.1 signed by
    /// the CA in [`Slapd::ca_file`].
    #[allow(dead_code)]
    pub fn start_tls(ldif: &str) -> Slapd {
        Slapd::start_with(ldif, true)
    }

    #[allow(dead_code)]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(ldif: &str, tls: bool) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut slapd = Slapd {
            port,
            tls_port: None,
            dir,
            child: None,
        };
        if tls {
            make_certs(slapd.dir.path());
            slapd.tls_port = Some(free_port());
        }
        std::fs::create_dir(slapd.dir.path().join("db")).unwrap();
        std::fs::write(slapd.dir.path().join("popgate.schema"), SCHEMA).unwrap();
        std::fs::write(slapd.conf(), slapd.config_text()).unwrap();
        slapd.run();
        let base = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: {READER}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
             cn: reader\nuserPassword: {READER_PW}\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n{ldif}"
        );
        slapd.ldapadd(&base);
        slapd
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slapd.conf")
    }

    fn config_text(&self) -> String {
        let dir = self.dir.path().display();
        let tls = match self.tls_port {
            Some(_) => format!(
                "TLSCACertificateFile {dir}/ca.pem\nTLSCertificateFile {dir}/server.pem\n\
                 TLSCertificateKeyFile {dir}/server.key\n"
            ),
            None => String::new(),
        };
        tls + &format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {dir}/popgate.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload argon2\n\
             allow bind_anon_dn\n\
             pidfile {dir}/slapd.pid\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{BASE}\"\n\
             rootdn \"cn=admin,{BASE}\"\n\
             rootpw admin-secret\n\
             directory {dir}/db\n\
             access to attrs=userPassword by dn.exact=\"{READER}\" read by anonymous auth by * none\n\
             access to * by * read\n"
        )
    }

    /// Starts slapd (again, on the same port and data) and waits until it
    /// accepts connections.
    pub fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.conf())
            .arg("-h")
            .arg(match self.tls_port {
                Some(tls) => format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{tls}/", self.port),
                None => format!("ldap://127.0.0.1:{}/", self.port),
            })
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd (Debian package slapd) must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "slapd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills slapd, as an outage does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    pub fn ldapadd(&self, ldif: &str) {
        use std::io::Write;
        let mut child = Command::new("ldapadd")
            .args(["-x", "-H", &self.url(), "-D", &format!("cn=admin,{BASE}")])
            .args(["-w", "admin-secret"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapadd (Debian package ldap-utils) must be installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ldapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test CA (`ca.pem`) and a certificate for 127.0.0.1 it signs
/// (`server.pem`, `server.key`), made with openssl in `dir`.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=popgate test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An LDIF entry for a mail user below `ou=people`. (Not every test binary
/// that includes this module uses it.)
#[allow(dead_code)]
pub fn user(uid: &str, mail: &str, password: &str) -> String {
    format!(
        "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
         uid: {uid}\ncn: {uid}\nsn: {uid}\nuidNumber: 1000\ngidNumber: 1000\n\
         homeDirectory: /home/{uid}\nmail: {mail}\nuserPassword: {password}\n\n"
    )
}
