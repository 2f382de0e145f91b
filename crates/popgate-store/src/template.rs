//! Dovecot-style path templates: `%n` local part, `%d` domain, `%u` whole
//! login (also `%{username}`, `%{domain}`, `%{user}`), `%%` a percent sign,
//! with Dovecot's modifiers between the `%` and the variable: `L` lower
//! case, `U` upper case, and a width with an optional offset before them
//! (`%1n` the first character, `%2.1n` the third, `%-2.2n` ... counted from
//! the end), as in `/var/mail/%Ld/%1Ln/%Ln/Maildir`.

use crate::MailboxId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Local,
    Domain,
    Login,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// One `%...` sequence: the variable and what is done to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spec {
    var: Var,
    offset: isize,
    width: Option<usize>,
    case: Case,
}

enum Token {
    Percent,
    Var(Spec),
}

/// Reads the sequence after a `%` at the start of `rest`: the token and the
/// bytes it took, or why it is not one.
fn token(rest: &str) -> Result<(Token, usize), String> {
    let b = rest.as_bytes();
    if b.first() == Some(&b'%') {
        return Ok((Token::Percent, 1));
    }
    let mut i = 0;
    let number = |i: &mut usize| -> Option<isize> {
        let start = *i;
        if b.get(*i) == Some(&b'-') {
            *i += 1;
        }
        let digits = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        (*i > digits).then(|| rest[start..*i].parse().unwrap_or(isize::MAX))
    };
    let first = number(&mut i);
    let (offset, width) = if b.get(i) == Some(&b'.') {
        i += 1;
        let w = number(&mut i).ok_or("a '.' in a % sequence needs a width after it")?;
        (first.unwrap_or(0), Some(w))
    } else {
        (0, first)
    };
    let width = match width {
        Some(w) if w < 0 => return Err("a negative width".into()),
        Some(w) => Some(w.unsigned_abs()),
        None => None,
    };
    let mut case = Case::Keep;
    while let Some(&m) = b.get(i) {
        match m {
            b'L' => case = Case::Lower,
            b'U' => case = Case::Upper,
            _ => break,
        }
        i += 1;
    }
    let (var, len) = match b.get(i) {
        Some(b'n') => (Var::Local, 1),
        Some(b'd') => (Var::Domain, 1),
        Some(b'u') => (Var::Login, 1),
        Some(b'{') => {
            let end = rest[i..].find('}').ok_or("a %{ without its closing }")?;
            let name = &rest[i + 1..i + end];
            let var = match name {
                "username" => Var::Local,
                "domain" => Var::Domain,
                "user" => Var::Login,
                other => {
                    return Err(format!(
                        "unknown variable %{{{other}}} (use %n, %d, %u, %{{username}}, %{{domain}}, %{{user}} or %%)"
                    ));
                }
            };
            (var, end + 1)
        }
        Some(_) => {
            let seq: String = rest[..=i].chars().take(8).collect();
            let seq = seq.trim_end_matches(|c: char| !c.is_ascii());
            return Err(format!(
                "unknown variable %{seq} (use %n, %d, %u or %%, with Dovecot's L, U and width modifiers)"
            ));
        }
        None => return Err("template ends inside a % sequence".into()),
    };
    Ok((
        Token::Var(Spec {
            var,
            offset,
            width,
            case,
        }),
        i + len,
    ))
}

/// Calls `each` with the literal text and the sequences of `template`.
fn walk(template: &str, mut each: impl FnMut(&str, Option<Spec>)) -> Result<(), String> {
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        each(&rest[..at], None);
        let after = &rest[at + 1..];
        if after.is_empty() {
            return Err("template ends with a lone %".into());
        }
        let (tok, len) = token(after)?;
        match tok {
            Token::Percent => each("%", None),
            Token::Var(spec) => each("", Some(spec)),
        }
        rest = &after[len..];
    }
    each(rest, None);
    Ok(())
}

fn apply(spec: Spec, value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len() as isize;
    let start = if spec.offset < 0 {
        (n + spec.offset).max(0)
    } else {
        spec.offset.min(n)
    } as usize;
    let end = match spec.width {
        Some(w) => start.saturating_add(w).min(chars.len()),
        None => chars.len(),
    };
    let part: String = chars[start..end].iter().collect();
    match spec.case {
        Case::Keep => part,
        Case::Lower => part.to_lowercase(),
        Case::Upper => part.to_uppercase(),
    }
}

/// Expands `template` for `mailbox`. A sequence that does not parse is
/// kept as written ([`validate_template`] refuses it at config time).
pub(crate) fn expand(mailbox: &MailboxId, template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let walked = walk(template, |text, spec| {
        out.push_str(text);
        if let Some(spec) = spec {
            let value = match spec.var {
                Var::Local => mailbox.local.clone(),
                Var::Domain => mailbox.domain.clone(),
                Var::Login => mailbox.login(),
            };
            out.push_str(&apply(spec, &value));
        }
    });
    if walked.is_err() {
        return template.replace("%%", "%");
    }
    out
}

/// Checks a template for unknown `%` variables and modifiers. Returns the
/// offending sequence, for a config error that names it.
pub fn validate_template(template: &str) -> Result<(), String> {
    walk(template, |_, _| {})
}

/// Whether `template` names each user's own place: it holds the local
/// part or the whole login, untruncated (`%n`, `%Ln`, `%u`, not `%1n`
/// alone). Without, every user would share one Maildir or prefix.
pub fn template_names_user(template: &str) -> bool {
    let mut found = false;
    let _ = walk(template, |_, spec| {
        if let Some(s) = spec
            && matches!(s.var, Var::Local | Var::Login)
            && s.width.is_none()
            && s.offset == 0
        {
            found = true;
        }
    });
    found
}

/// Whether `template` holds the domain (`%d` or `%u`, untruncated): two
/// tenants may then share it, each keeping to its own domains.
pub fn template_names_domain(template: &str) -> bool {
    let mut found = false;
    let _ = walk(template, |_, spec| {
        if let Some(s) = spec
            && matches!(s.var, Var::Domain | Var::Login)
            && s.width.is_none()
            && s.offset == 0
        {
            found = true;
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_modifiers_expand() {
        let m = MailboxId::new("t", "Bob.Smith", "Acme.Example");
        let x = |t| expand(&m, t);
        assert_eq!(x("/m/%d/%n"), "/m/Acme.Example/Bob.Smith");
        assert_eq!(x("/m/%Ld/%Ln"), "/m/acme.example/bob.smith");
        assert_eq!(x("/m/%Lu"), "/m/bob.smith@acme.example");
        assert_eq!(x("/m/%Un"), "/m/BOB.SMITH");
        assert_eq!(x("/m/%1Ln/%Ln"), "/m/b/bob.smith");
        assert_eq!(x("/m/%2.1n"), "/m/b");
        assert_eq!(x("/m/%3.2n"), "/m/.S");
        assert_eq!(x("/m/%-3.3Ld"), "/m/ple");
        assert_eq!(x("/m/%20n"), "/m/Bob.Smith");
        assert_eq!(
            x("/m/%{domain}/%{username}/%{user}"),
            "/m/Acme.Example/Bob.Smith/Bob.Smith@Acme.Example"
        );
        assert_eq!(x("100%%/%n"), "100%/Bob.Smith");
        let jurgen = MailboxId::new("t", "Jürgen", "x");
        assert_eq!(expand(&jurgen, "%1Ln%Ln"), "jjürgen");
    }

    #[test]
    fn bad_sequences_are_named() {
        assert!(validate_template("/m/%Ld/%1Ln/%{user}").is_ok());
        assert!(validate_template("/m/%q").unwrap_err().contains("%q"));
        assert!(validate_template("/m/%Lh").unwrap_err().contains("%Lh"));
        assert!(
            validate_template("/m/%{home}")
                .unwrap_err()
                .contains("%{home}")
        );
        assert!(validate_template("/m/%{user").is_err());
        assert!(validate_template("/m/%2.").is_err());
        assert!(validate_template("/m/%").is_err());
        assert!(validate_template("/m/%L").is_err());
    }

    #[test]
    fn a_user_or_domain_must_be_whole() {
        assert!(template_names_user("/m/%1n/%Ln"));
        assert!(template_names_user("/m/%{user}"));
        assert!(!template_names_user("/m/%1n/%d"));
        assert!(!template_names_user("/m/%d"));
        assert!(template_names_domain("/m/%Ld/%n"));
        assert!(template_names_domain("/m/%u"));
        assert!(!template_names_domain("/m/%n/%1d"));
    }
}
