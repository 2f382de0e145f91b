//! Password schemes against reference hashes made by real tools.
//!
//! Fixtures (password `secret` unless noted) were made on Debian 12 with
//! `doveadm -c /dev/null pw -s SCHEME -p secret` (Dovecot 2.3; also the
//! legacy schemes and their `.hex`/`.b64` forms),
//! `openssl passwd -6 -salt saltsalt secret`, `openssl passwd -5 secret`
//! and Python's `crypt.crypt("secret", crypt.mksalt(METHOD))`.

use popgate_auth::scheme::{self, HashParams, Scheme, SchemeError};

const DOVEADM: &[&str] = &[
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$JXUHjdgiKdKsBKMYU5rWQw$SCVqWqgYNPyo6+EjwdPu7UmRru+OvfFiU/VhAHhPjc4",
    "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$bLuTOuw96tmnewmIQLjVLg$o/nYYwbVIS+Uf7vMjPpqUJftTs9ZAdvqvohSZdwa+jg",
    "{BLF-CRYPT}$2y$05$V8gd8DOmgT7U9U2NY1s91.DtqA1jv..5X/UKdKoUaqncsrt5li2k6",
    "{BLF-CRYPT}$2y$04$5D.aL.fV85YiD13oXmGByuH.V3eCTJWidNypC2058qMqJQ3PXvYDu",
    "{SHA512-CRYPT}$6$ueFzmnOeG/RAhqtL$vxD1/2uVZ1mzxXMs7Za8Vk71dEsCauVRWKI4CK2FDba74HefuR2x.B4Cr77JD0hA6wpgrvhVkKDvQJSEHNfiY1",
    "{SHA256-CRYPT}$5$lZcGVldTWhhLZPBo$9M5D5jRrWS.RRVzh8BJM.kx2fmPEHGUbkK0OWfrBTyB",
    "{CRYPT}$2y$05$.xFd4sjphaEnnX9GZCVo0eFTb/wsj5pzBYnz2Zdd7Nphhcj3kX/hG",
    "{PLAIN}secret",
    "{CLEARTEXT}secret",
    // The legacy schemes (Debian 12's Dovecot 2.3.19.1), with encodings.
    "{MD5-CRYPT}$1$hUgJkkD8$oICP3HZF9J5NYe/JgXqlf0",
    "{MD5}$1$1UH0Lxu4$82Cysek9p2R0sLtqMrQjc/",
    "{SSHA}RrIuKM3rrOKbKi2DkkMxfiXw4QExxvNl",
    "{SSHA256}CFrQ3MkHtvMkFQVPNTk2xwivuavD1+9MR9hrOZzKPaT7RY4k",
    "{SSHA512}t2r7BrNse04kjk57xeh+71txADyWqgxugrCFQkdrnKIBjc/QWUttQvw0KrP+B/cwJN55FavqIbWR8Wppr0shAwkLV70=",
    "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69",
    "{LDAP-MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
    "{SMD5}6REgevtaoKyV0ck+siOksQKl60k=",
    "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
    "{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=",
    "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
    "{SHA512}vSsar3708Jvp9Szi2NWZZ02Bqp1qRCFpbcTZPdBhnWgs5WtNZKnvCXdhztmeD2cmW192CF5bDufKRpayrW/isg==",
    "{SHA.HEX}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4",
    "{SSHA.HEX}ca53600940ff60a880fb98b23966902a56b6fbe7221497c8",
    "{PLAIN-MD5.B64}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
    "{SHA512.HEX}bd2b1aaf7ef4f09be9f52ce2d8d599674d81aa9d6a4421696dc4d93dd0619d682ce56b4d64a9ef097761ced99e0f67265b5f76085e5b0ee7ca4696b2ad6fe2b2",
    "{SSHA256.B64}5p6+svqNq0PoKYo0iEbxqJn+Xq0gbZQ600cCoBhqpJd7tc+6",
    "{SMD5.HEX}e7e8dacb8ad1e18a3d4cf9c46cfba26c2a8746ba",
    // `doveadm pw -t` verifies these too: MD5 without `$1$` is PLAIN-MD5,
    // and a hex digest is read as hex whatever the scheme's default.
    "{MD5}5ebe2294ecd0e0f08eab7690d2a6ee69",
    "{SHA256}2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
    // slappasswd's {MD5} (RFC 2307: base64), and a lower-case name.
    "{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
    "{ssha}RrIuKM3rrOKbKi2DkkMxfiXw4QExxvNl",
];

/// No `{SCHEME}` prefix: CRYPT, detected by the `$id$`.
const CRYPT_TOOLS: &[&str] = &[
    // openssl passwd -6 -salt saltsalt secret
    "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
    // openssl passwd -5 secret
    "$5$gUn.4WiBlL4IJwez$G2jvJ./wTM0B/buPI0qoHqQ.OfD2KO6s2DqZB3UG390",
    // python3 crypt, METHOD_SHA512 with rounds=1000
    "$6$rounds=1000$i0A..I0IiHpf6no.$lABC6RVYz.1iZ92Hroh36mmbAYKLk5plhHqtwfJffsdSYov8O3dio2btGrk.4LKVVbN60MFEphG51wDiodcEG1",
    // python3 crypt, METHOD_BLOWFISH with rounds=16
    "$2b$04$2Llj07fKeSouZE8uewNLvOkQblSUiHEOE8u1OL7Lz5AtKAGwq034i",
    // openssl passwd -1 -salt saltsalt secret
    "$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
    "{CRYPT}$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
    // OpenLDAP's argon2 module
    "{ARGON2}$argon2id$v=19$m=65536,t=3,p=1$JXUHjdgiKdKsBKMYU5rWQw$SCVqWqgYNPyo6+EjwdPu7UmRru+OvfFiU/VhAHhPjc4",
    // doveadm's ARGON2ID data, bare
    "$argon2id$v=19$m=65536,t=3,p=1$JXUHjdgiKdKsBKMYU5rWQw$SCVqWqgYNPyo6+EjwdPu7UmRru+OvfFiU/VhAHhPjc4",
];

#[test]
fn reference_hashes_verify() {
    for stored in DOVEADM.iter().chain(CRYPT_TOOLS) {
        assert!(scheme::verify(stored, b"secret").unwrap(), "{stored}");
        assert!(!scheme::verify(stored, b"Secret").unwrap(), "{stored}");
        assert!(!scheme::verify(stored, b"").unwrap(), "{stored}");
    }
}

#[test]
fn non_ascii_password_and_explicit_rounds() {
    // doveadm pw -s SHA512-CRYPT -r 10000 -p 'pässwörd with spaces'
    let stored = "{SHA512-CRYPT}$6$rounds=10000$la.zSx0.cKti2a2R$L4g.fsm6LXIiC26q1kJCcZman2EFKBq2maySvznPEZY3hWLOJTrqL.gxwlsnvBIdgczmfLNnLjpi3eKqd1odF1";
    assert!(scheme::verify(stored, "pässwörd with spaces".as_bytes()).unwrap());
    assert!(!scheme::verify(stored, b"passwoerd with spaces").unwrap());
}

#[test]
fn bcrypt_2a_openwall_vector() {
    // From the crypt_blowfish test vectors; python3 crypt agrees.
    let stored = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
    assert!(scheme::verify(stored, b"U*U").unwrap());
    assert!(!scheme::verify(stored, b"U*V").unwrap());
}

#[test]
fn scheme_names_are_case_insensitive() {
    assert_eq!("argon2id".parse::<Scheme>().unwrap(), Scheme::Argon2id);
    assert_eq!("Blf-Crypt".parse::<Scheme>().unwrap(), Scheme::BlfCrypt);
    assert_eq!("cleartext".parse::<Scheme>().unwrap(), Scheme::Plain);
    assert_eq!(
        "sha256-crypt".parse::<Scheme>().unwrap(),
        Scheme::Sha256Crypt
    );
    for s in Scheme::ALL {
        assert_eq!(s.name().parse::<Scheme>().unwrap(), s);
        assert_eq!(s.to_string().to_lowercase().parse::<Scheme>().unwrap(), s);
    }
    assert!(scheme::verify("{plain}secret", b"secret").unwrap());
    assert!(scheme::verify("{sha512-crypt}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1", b"secret").unwrap());
}

#[test]
fn unknown_and_malformed_are_errors_that_do_not_leak() {
    let err = scheme::verify("{NTLM}c2VjcmV0c2VjcmV0", b"secret").unwrap_err();
    assert!(
        matches!(err, SchemeError::UnknownScheme(ref n) if n == "NTLM"),
        "{err}"
    );
    assert!(err.to_string().contains("NTLM"));
    let err = scheme::verify("{SHA.ROT13}x", b"secret").unwrap_err();
    assert!(matches!(err, SchemeError::UnknownScheme(_)), "{err}");

    let err = scheme::verify("$3$salt$hashhashhash", b"secret").unwrap_err();
    assert!(err.to_string().contains("$3$"), "{err}");
    // A bare string without `$id$` may be a plaintext password by mistake.
    let err = scheme::verify("hunter2", b"hunter2").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");

    for stored in [
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$JXUHjdgiKdKsBKMY",
        "{ARGON2ID}$argon2i$v=19$m=32768,t=4,p=1$bLuTOuw96tmnewmIQLjVLg$o/nYYwbVIS+Uf7vMjPpqUJftTs9ZAdvqvohSZdwa+jg",
        "{BLF-CRYPT}$2y$05$V8gd8DOmgT7U9U2NY1s91.DtqA1jv",
        "{BLF-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
        "{SHA512-CRYPT}$5$gUn.4WiBlL4IJwez$G2jvJ./wTM0B/buPI0qoHqQ.OfD2KO6s2DqZB3UG390",
        "{SHA512-CRYPT}$6$saltsalt$!!!",
        "{SHA256-CRYPT}",
        "{SSHA512}c2VjcmV0c2VjcmV0",
        "{SSHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{SHA}c2hvcnQ=",
        "{SHA256.HEX}saltsaltnothex",
        "{PLAIN-MD5}!!saltsalt!!",
        "{MD5-CRYPT}$1$saltsalt$short",
        "{MD5-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDeh",
        "{PLAIN.B64}c2VjcmV0",
    ] {
        let err = scheme::verify(stored, b"secret").expect_err(stored);
        assert!(
            matches!(err, SchemeError::Malformed { .. }),
            "{stored}: {err}"
        );
        let text = err.to_string();
        assert!(
            !text.contains("JXUHjdgi") && !text.contains("saltsalt") && !text.contains("V8gd8"),
            "{text}"
        );
    }
}

#[test]
fn argon2_memory_cost_is_capped() {
    let stored = "{ARGON2ID}$argon2id$v=19$m=4194304,t=1,p=1$JXUHjdgiKdKsBKMYU5rWQw$SCVqWqgYNPyo6+EjwdPu7UmRru+OvfFiU/VhAHhPjc4";
    assert!(scheme::verify(stored, b"secret").is_err());
}

#[test]
fn own_hashes_verify() {
    for s in Scheme::ALL {
        let stored = scheme::hash_with(s, b"secret", &HashParams::INSECURE_FAST).unwrap();
        assert!(stored.starts_with(&format!("{{{}}}", s.name())), "{stored}");
        assert!(scheme::verify(&stored, b"secret").unwrap(), "{stored}");
        assert!(!scheme::verify(&stored, b"secreT").unwrap(), "{stored}");
        if s.salted() {
            let again = scheme::hash_with(s, b"secret", &HashParams::INSECURE_FAST).unwrap();
            assert_ne!(stored, again, "salts must differ");
        }
    }
}

#[test]
fn own_hash_formats_match_dovecot() {
    let p = HashParams::PRODUCTION;
    let argon = scheme::hash_with(
        Scheme::Argon2id,
        b"x",
        &HashParams {
            argon2_m_kib: 64,
            ..p
        },
    )
    .unwrap();
    assert!(
        argon.starts_with("{ARGON2ID}$argon2id$v=19$m=64,t=2,p=1$"),
        "{argon}"
    );
    // 16-byte salt, 32-byte output, unpadded base64.
    let fields: Vec<_> = argon.split('$').collect();
    assert_eq!((fields[4].len(), fields[5].len()), (22, 43), "{argon}");

    let bcrypt = scheme::hash_with(
        Scheme::BlfCrypt,
        b"x",
        &HashParams {
            bcrypt_cost: 4,
            ..p
        },
    )
    .unwrap();
    assert!(
        bcrypt.starts_with("{BLF-CRYPT}$2y$04$") && bcrypt.len() == 11 + 60,
        "{bcrypt}"
    );
    let crypt = scheme::hash_with(
        Scheme::Crypt,
        b"x",
        &HashParams {
            bcrypt_cost: 4,
            ..p
        },
    )
    .unwrap();
    assert!(crypt.starts_with("{CRYPT}$2y$04$"), "{crypt}");

    // Default rounds are implicit, as Dovecot writes them; salt is 16 chars.
    let sha512 = scheme::hash_with(Scheme::Sha512Crypt, b"x", &p).unwrap();
    let fields: Vec<_> = sha512.split('$').collect();
    assert_eq!(
        (fields[0], fields[1], fields[2].len(), fields[3].len()),
        ("{SHA512-CRYPT}", "6", 16, 86),
        "{sha512}"
    );
    let sha256 = scheme::hash_with(
        Scheme::Sha256Crypt,
        b"x",
        &HashParams {
            sha_crypt_rounds: 2000,
            ..p
        },
    )
    .unwrap();
    assert!(
        sha256.starts_with("{SHA256-CRYPT}$5$rounds=2000$"),
        "{sha256}"
    );
    assert!(scheme::verify(&sha256, b"x").unwrap());

    assert_eq!(
        scheme::hash(Scheme::Plain, b"secret").unwrap(),
        "{PLAIN}secret"
    );
}

#[test]
fn unstorable_passwords_are_refused() {
    assert!(scheme::hash(Scheme::Plain, b"a:b").is_err());
    assert!(scheme::hash(Scheme::Plain, b"a\nb").is_err());
    assert!(scheme::hash(Scheme::Plain, &[0xff, 0xfe]).is_err());
    assert!(scheme::hash(Scheme::BlfCrypt, &[b'x'; 72]).is_err());
}

/// Checks that Dovecot accepts what `hash_with` produces, with production
/// and with the cheapest parameters, via `doveadm pw -t`. `scripts/test`
/// installs Dovecot (doveadm comes with it).
#[test]
fn doveadm_accepts_our_hashes() {
    use std::process::Command;
    let cheap_rounds = HashParams {
        sha_crypt_rounds: 1000,
        ..HashParams::PRODUCTION
    };
    for (s, params) in Scheme::ALL.into_iter().flat_map(|s| {
        [
            (s, HashParams::PRODUCTION),
            (s, HashParams::INSECURE_FAST),
            (s, cheap_rounds),
        ]
    }) {
        for password in ["secret", "pässwörd with spaces"] {
            let stored = scheme::hash_with(s, password.as_bytes(), &params).unwrap();
            for (try_pw, expect) in [(password, true), ("wrong", false)] {
                let out = Command::new("doveadm")
                    .args(["-c", "/dev/null", "pw", "-t", &stored, "-p", try_pw])
                    .output()
                    .expect("doveadm runs");
                let ok = out.status.success()
                    && String::from_utf8_lossy(&out.stdout).contains("(verified)");
                assert_eq!(ok, expect, "{stored} with {try_pw:?}: {out:?}");
            }
            println!("doveadm verified {stored}");
        }
    }
}

#[test]
fn legacy_hash_formats_match_dovecot() {
    let p = HashParams::PRODUCTION;
    let md5 = scheme::hash_with(Scheme::Md5Crypt, b"secret", &p).unwrap();
    let fields: Vec<_> = md5.split('$').collect();
    assert_eq!(
        (fields[0], fields[1], fields[2].len(), fields[3].len()),
        ("{MD5-CRYPT}", "1", 8, 22),
        "{md5}"
    );
    // Unsalted digests are what doveadm prints, byte for byte.
    for (s, want) in [
        (
            Scheme::PlainMd5,
            "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69",
        ),
        (Scheme::LdapMd5, "{LDAP-MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ=="),
        (Scheme::Sha, "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="),
        (
            Scheme::Sha256,
            "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
        ),
    ] {
        assert_eq!(scheme::hash_with(s, b"secret", &p).unwrap(), want);
    }
    // Salted: digest then an 8-byte salt, base64.
    let ssha = scheme::hash_with(Scheme::Ssha512, b"secret", &p).unwrap();
    assert_eq!(
        ssha.len() - "{SSHA512}".len(),
        (64 + 8usize).div_ceil(3) * 4
    );
    assert_eq!("sha1".parse::<Scheme>().unwrap(), Scheme::Sha);
    assert_eq!("md5-crypt".parse::<Scheme>().unwrap(), Scheme::Md5Crypt);
}

#[test]
fn legacy_cost_classes_are_one_per_scheme() {
    assert_eq!(
        scheme::cost_class("{SSHA}RrIuKM3rrOKbKi2DkkMxfiXw4QExxvNl").unwrap(),
        "SSHA"
    );
    assert_eq!(
        scheme::cost_class("$1$saltsalt$9xy1btjgzLYfb7hivXtC//").unwrap(),
        "MD5-CRYPT"
    );
    assert_eq!(
        scheme::cost_class("{MD5}$1$1UH0Lxu4$82Cysek9p2R0sLtqMrQjc/").unwrap(),
        "MD5-CRYPT"
    );
    assert_eq!(
        scheme::cost_class("{SHA.HEX}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4").unwrap(),
        "SHA"
    );
}
