//! The operator's query, made safe to run: the login's parts become bound
//! parameters, never text spliced into the SQL.
//!
//! The query names the login as `$user` (`local@domain`, or the bare local
//! part on a tenant without domains), `$local` and `$domain`. Dovecot's
//! `%u`, `%n` and `%d` work too (also `%Lu` and `%{user}`, `%{username}`,
//! `%{domain}`), so that a `password_query` pastes in from
//! `dovecot-sql.conf.ext`: a quoted literal holding them, like `'%u'` or
//! `'%n@%d'`, becomes one parameter whose value is the literal with the
//! variables filled in. `%%` is a `%`. String literals, quoted identifiers
//! and comments are copied as they are; a `$name` or `%x` that is not one of
//! these variables is an error that names it.

use std::fmt;

/// The SQL dialect: how placeholders, strings and comments are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL and MariaDB: `?` placeholders, backslash escapes in strings,
    /// `#` comments, backquoted identifiers.
    MySql,
    /// PostgreSQL: `$1`, `$2`... placeholders.
    Postgres,
}

/// A part of the login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    User,
    Local,
    Domain,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A query ready to run: its SQL with placeholders, and what each binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    sql: String,
    params: Vec<Vec<Piece>>,
}

/// Why a query cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(String);

const VARS: &str = "$user, $local, $domain (or Dovecot's '%u', '%n', '%d')";

impl Query {
    /// Parses the operator's query for `dialect`.
    pub fn parse(text: &str, dialect: Dialect) -> Result<Query, QueryError> {
        let q = Self::parse_any(text, dialect)?;
        if q.params.is_empty() {
            return Err(QueryError(format!(
                "the query does not use the login: name it with {VARS}"
            )));
        }
        Ok(q)
    }

    /// Parses a query that runs without a login (`iterate_query`): it may
    /// use no variable, since there is no login to bind.
    pub fn parse_unbound(text: &str, dialect: Dialect) -> Result<Query, QueryError> {
        let q = Self::parse_any(text, dialect)?;
        if !q.params.is_empty() {
            return Err(QueryError(format!(
                "this query lists every user and runs without a login: it cannot use {VARS}"
            )));
        }
        Ok(q)
    }

    fn parse_any(text: &str, dialect: Dialect) -> Result<Query, QueryError> {
        let mut p = Parser {
            src: text,
            pos: 0,
            dialect,
            out: Query {
                sql: String::with_capacity(text.len()),
                params: Vec::new(),
            },
        };
        p.run()?;
        Ok(p.out)
    }

    /// The SQL as sent, with placeholders.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The values to bind, in order, for the login `local`@`domain`.
    pub fn params(&self, local: &str, domain: &str) -> Vec<String> {
        let user = if domain.is_empty() {
            local.to_owned()
        } else {
            format!("{local}@{domain}")
        };
        self.params
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|piece| match piece {
                        Piece::Text(t) => t.as_str(),
                        Piece::Var(Var::User) => &user,
                        Piece::Var(Var::Local) => local,
                        Piece::Var(Var::Domain) => domain,
                    })
                    .collect()
            })
            .collect()
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    dialect: Dialect,
    out: Query,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn run(&mut self) -> Result<(), QueryError> {
        while let Some(c) = self.rest().chars().next() {
            match c {
                '\'' => self.literal()?,
                '"' => self.copy_quoted('"'),
                '`' if self.dialect == Dialect::MySql => self.copy_quoted('`'),
                '-' if self.rest().starts_with("--") => self.copy_until("\n"),
                '#' if self.dialect == Dialect::MySql => self.copy_until("\n"),
                '/' if self.rest().starts_with("/*") => self.copy_until("*/"),
                '$' => self.dollar()?,
                '%' => {
                    let pieces = self.percent()?;
                    self.placeholder(pieces);
                }
                '?' if self.dialect == Dialect::MySql => {
                    return Err(QueryError(format!(
                        "a `?` placeholder at byte {}: name the login with {VARS}",
                        self.pos
                    )));
                }
                _ => {
                    self.out.sql.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
        Ok(())
    }

    fn placeholder(&mut self, pieces: Vec<Piece>) {
        self.out.params.push(pieces);
        match self.dialect {
            Dialect::MySql => self.out.sql.push('?'),
            Dialect::Postgres => {
                let n = self.out.params.len();
                self.out.sql.push_str(&format!("${n}"));
            }
        }
    }

    /// Copies a quoted identifier (a doubled quote stays inside it).
    fn copy_quoted(&mut self, quote: char) {
        let body = &self.src[self.pos + 1..];
        let mut end = body.len();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                if chars.peek().is_some_and(|&(_, n)| n == quote) {
                    chars.next();
                    continue;
                }
                end = i + 1;
                break;
            }
        }
        let stop = (self.pos + 1 + end).min(self.src.len());
        self.out.sql.push_str(&self.src[self.pos..stop]);
        self.pos = stop;
    }

    /// Copies up to and including `end` (or to the end of the query).
    fn copy_until(&mut self, end: &str) {
        let stop = self.rest()[1..]
            .find(end)
            .map_or(self.src.len(), |i| self.pos + 1 + i + end.len());
        self.out.sql.push_str(&self.src[self.pos..stop]);
        self.pos = stop;
    }

    /// `$user`, `$local`, `$domain`.
    fn dollar(&mut self) -> Result<(), QueryError> {
        let name: String = self.rest()[1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let var = match name.as_str() {
            "user" => Var::User,
            "local" => Var::Local,
            "domain" => Var::Domain,
            "" => {
                return Err(QueryError(format!(
                    "a bare `$` at byte {} (dollar quoting is not supported): name the login with {VARS}",
                    self.pos
                )));
            }
            other => {
                return Err(QueryError(format!(
                    "unknown variable ${other}: the query can use {VARS}"
                )));
            }
        };
        self.pos += 1 + name.len();
        self.placeholder(vec![Piece::Var(var)]);
        Ok(())
    }

    /// A `%` variable at the cursor: `%%` is text.
    fn percent(&mut self) -> Result<Vec<Piece>, QueryError> {
        let rest = &self.rest()[1..];
        let (len, piece) = if let Some(long) = rest.strip_prefix('{') {
            let name = long.split('}').next().unwrap_or_default();
            if !long.contains('}') {
                return Err(QueryError("an unclosed %{ in the query".into()));
            }
            let var = match name {
                "user" => Var::User,
                "username" => Var::Local,
                "domain" => Var::Domain,
                other => {
                    return Err(QueryError(format!(
                        "unknown variable %{{{other}}}: the query can use {VARS}"
                    )));
                }
            };
            (name.len() + 3, Piece::Var(var))
        } else {
            // %Lu: lower case; logins are lower case already.
            let lower = rest.starts_with('L');
            let key = rest[usize::from(lower)..].chars().next();
            let var = match key {
                Some('u') => Piece::Var(Var::User),
                Some('n') => Piece::Var(Var::Local),
                Some('d') => Piece::Var(Var::Domain),
                Some('%') if !lower => Piece::Text("%".into()),
                Some(other) => {
                    let shown = if lower {
                        format!("L{other}")
                    } else {
                        other.into()
                    };
                    return Err(QueryError(format!(
                        "unknown variable %{shown}: the query can use {VARS} (write %% for a %)"
                    )));
                }
                None => return Err(QueryError("a `%` at the end of the query".into())),
            };
            (2 + usize::from(lower), var)
        };
        self.pos += len;
        Ok(vec![piece])
    }

    /// A string literal: copied as it is, or one parameter when it holds
    /// `%` variables.
    fn literal(&mut self) -> Result<(), QueryError> {
        let start = self.pos;
        self.pos += 1;
        let mut pieces: Vec<Piece> = Vec::new();
        let mut text = String::new();
        let mut has_var = false;
        loop {
            let Some(c) = self.rest().chars().next() else {
                return Err(QueryError(format!(
                    "a string literal opened at byte {start} is not closed"
                )));
            };
            match c {
                '\'' if self.rest().starts_with("''") => {
                    text.push('\'');
                    self.pos += 2;
                }
                '\'' => {
                    self.pos += 1;
                    break;
                }
                '\\' if self.dialect == Dialect::MySql => {
                    let next = self.rest()[1..].chars().next().unwrap_or('\\');
                    text.push(next);
                    self.pos += 1 + next.len_utf8();
                }
                '%' => {
                    for piece in self.percent()? {
                        match piece {
                            Piece::Text(t) => text.push_str(&t),
                            var => {
                                has_var = true;
                                if !text.is_empty() {
                                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                                }
                                pieces.push(var);
                            }
                        }
                    }
                }
                _ => {
                    text.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
        if has_var {
            if !text.is_empty() {
                pieces.push(Piece::Text(text));
            }
            self.placeholder(pieces);
        } else {
            // No variable: the literal as written, `%%` as `%`.
            let raw = &self.src[start..self.pos];
            self.out.sql.push_str(&raw.replace("%%", "%"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(q: &str) -> Query {
        Query::parse(q, Dialect::Postgres).unwrap()
    }

    fn my(q: &str) -> Query {
        Query::parse(q, Dialect::MySql).unwrap()
    }

    #[test]
    fn variables_become_placeholders() {
        let q = pg("SELECT password FROM mailbox WHERE username = $user AND domain = $domain");
        assert_eq!(
            q.sql(),
            "SELECT password FROM mailbox WHERE username = $1 AND domain = $2"
        );
        assert_eq!(
            q.params("bob", "acme.example"),
            ["bob@acme.example", "acme.example"]
        );
        let q = my("SELECT password FROM users WHERE local = $local AND domain = $domain");
        assert_eq!(
            q.sql(),
            "SELECT password FROM users WHERE local = ? AND domain = ?"
        );
        assert_eq!(q.params("bob", "acme.example"), ["bob", "acme.example"]);
        // A tenant without domains: $user is the bare name.
        assert_eq!(pg("SELECT 1 WHERE $user = 'x'").params("bob", ""), ["bob"]);
    }

    #[test]
    fn dovecot_queries_paste_in() {
        // Postfix Admin's dovecot-sql.conf.ext.
        let q = my(
            "SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = '1'",
        );
        assert_eq!(
            q.sql(),
            "SELECT username AS user, password FROM mailbox WHERE username = ? AND active = '1'"
        );
        assert_eq!(q.params("bob", "acme.example"), ["bob@acme.example"]);
        let q = pg(
            "SELECT password FROM users WHERE userid = '%n@%d' OR login = '%Lu' OR x = '%{domain}'",
        );
        assert_eq!(
            q.sql(),
            "SELECT password FROM users WHERE userid = $1 OR login = $2 OR x = $3"
        );
        assert_eq!(
            q.params("bob", "acme.example"),
            ["bob@acme.example", "bob@acme.example", "acme.example"]
        );
        let q = my("SELECT password FROM u WHERE name = '%n' AND note LIKE '100%%'");
        assert_eq!(
            q.sql(),
            "SELECT password FROM u WHERE name = ? AND note LIKE '100%'"
        );
    }

    #[test]
    fn literals_identifiers_and_comments_are_not_parsed() {
        let q = pg(r#"SELECT "$user" AS "a""b", '$6$x' AS c -- $nope
/* %x $y */ FROM t WHERE u = $user"#);
        assert_eq!(q.params("a", "b"), ["a@b"]);
        assert!(
            q.sql()
                .contains(r#""$user" AS "a""b", '$6$x' AS c -- $nope"#),
            "{}",
            q.sql()
        );
        let q = my("SELECT `$user`, 'it\\'s $1', 'x''y' # $z\nFROM t WHERE u = $user");
        assert_eq!(q.params("a", "b"), ["a@b"]);
        assert!(q.sql().ends_with("FROM t WHERE u = ?"), "{}", q.sql());
        // Values in a literal with a variable are unescaped once.
        let q = my(r"SELECT 1 FROM t WHERE u = 'it\'s %u'");
        assert_eq!(q.params("a", "b"), ["it's a@b"]);
    }

    #[test]
    fn a_listing_query_binds_nothing() {
        let q = Query::parse_unbound(
            "SELECT username, domain FROM mailbox WHERE active = '1' AND x LIKE '%%a'",
            Dialect::MySql,
        )
        .unwrap();
        assert!(q.sql().ends_with("x LIKE '%a'"), "{}", q.sql());
        assert!(q.params("a", "b").is_empty());
        let e = Query::parse_unbound("SELECT username FROM m WHERE d = '%d'", Dialect::MySql)
            .unwrap_err()
            .to_string();
        assert!(e.contains("runs without a login"), "{e}");
        let e = Query::parse_unbound("SELECT username FROM m WHERE d = $nope", Dialect::Postgres)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variable $nope"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let err = |q: &str, d| Query::parse(q, d).unwrap_err().to_string();
        let e = err("SELECT password FROM t WHERE u = $usr", Dialect::Postgres);
        assert!(
            e.contains("unknown variable $usr") && e.contains("$user"),
            "{e}"
        );
        let e = err("SELECT password FROM t WHERE u = '%x'", Dialect::MySql);
        assert!(e.contains("unknown variable %x"), "{e}");
        let e = err("SELECT password FROM t WHERE u = '%{home}'", Dialect::MySql);
        assert!(e.contains("%{home}"), "{e}");
        let e = err("SELECT password FROM t WHERE u = $1", Dialect::Postgres);
        assert!(e.contains("unknown variable $1"), "{e}");
        let e = err("SELECT password FROM t WHERE u = ?", Dialect::MySql);
        assert!(e.contains("`?` placeholder"), "{e}");
        let e = err("SELECT password FROM t", Dialect::MySql);
        assert!(e.contains("does not use the login"), "{e}");
        let e = err("SELECT password FROM t WHERE u = '%u", Dialect::MySql);
        assert!(e.contains("not closed"), "{e}");
        let e = err("SELECT password FROM t WHERE u = $$x$$", Dialect::Postgres);
        assert!(e.contains("bare `$`"), "{e}");
    }
}
