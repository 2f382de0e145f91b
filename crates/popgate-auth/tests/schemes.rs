//! Password schemes against reference hashes made by real tools.
//!
//! Fixtures (password `secret` unless noted) were made on Debian 12 with
//! `doveadm -c /dev/null pw -s SCHEME -p secret` (Dovecot 2.3),
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
    let err = scheme::verify("{SSHA512}c2VjcmV0c2VjcmV0", b"secret").unwrap_err();
    assert!(
        matches!(err, SchemeError::UnknownScheme(ref n) if n == "SSHA512"),
        "{err}"
    );
    assert!(err.to_string().contains("SSHA512"));

    let err = scheme::verify("$1$salt$hashhashhash", b"secret").unwrap_err();
    assert!(err.to_string().contains("$1$"), "{err}");
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
        if s != Scheme::Plain {
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
