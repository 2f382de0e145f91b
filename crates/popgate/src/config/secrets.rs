//! `*_file` variants of the secrets: `url_file = "/run/secrets/redis-url"`
//! instead of `url = "..."`, as Kubernetes and Docker mount secrets. The
//! file is read when the configuration is loaded (by `serve` before anything
//! listens, and by `check-config`), one trailing newline (`\n` or `\r\n`)
//! trimmed; exactly one of `foo` and `foo_file` may be set. Errors name the
//! key and the path, never the content.
//!
//! The secrets: `locks.url`, `locks.master_password` (Sentinel), the URL
//! lists `locks.sentinels` and `locks.cluster` (one URL a line of the file;
//! blank lines and `#` comments skipped),
//! `metrics.bearer_token`, a PostgreSQL store's or directory's `url`, an SQL
//! directory's `url` (read by `SqlSection::sql_config`), an S3 store's
//! `access_key_id` and `secret_access_key`, an LDAP directory's
//! `bind_password` and an HTTP auth hook's `bearer_token`.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, TenantSection};

/// Reads every `*_file` of `config` into its key.
pub(super) fn read_all(config: &mut Config) -> Result<(), ConfigError> {
    let locks = &mut config.locks;
    resolve("locks.url", &mut locks.url, &mut locks.url_file)?;
    resolve(
        "locks.master_password",
        &mut locks.master_password,
        &mut locks.master_password_file,
    )?;
    resolve_list(
        "locks.sentinels",
        &mut locks.sentinels,
        &mut locks.sentinels_file,
    )?;
    resolve_list("locks.cluster", &mut locks.cluster, &mut locks.cluster_file)?;
    if let Some(m) = &mut config.metrics {
        resolve(
            "metrics.bearer_token",
            &mut m.bearer_token,
            &mut m.bearer_token_file,
        )?;
    }
    for (i, t) in config.tenants.iter_mut().enumerate() {
        tenant(&format!("tenants[{i}]"), t)?;
    }
    Ok(())
}

/// A tenant's secrets: its directory's and its store's.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "s3")),
    allow(unused_variables, clippy::match_single_binding)
)]
fn tenant(key: &str, t: &mut TenantSection) -> Result<(), ConfigError> {
    match &mut t.auth {
        #[cfg(feature = "postgres")]
        super::AuthSection::Postgres(pg) => pg.read_secret_files(&format!("{key}.auth"))?,
        #[cfg(any(feature = "mysql", feature = "postgres"))]
        super::AuthSection::Sql(sql) => sql.read_secret_files(&format!("{key}.auth"))?,
        super::AuthSection::Ldap(l) => resolve(
            &format!("{key}.auth.bind_password"),
            &mut l.bind_password,
            &mut l.bind_password_file,
        )?,
        super::AuthSection::Http(h) => resolve(
            &format!("{key}.auth.bearer_token"),
            &mut h.bearer_token,
            &mut h.bearer_token_file,
        )?,
        _ => {}
    }
    match &mut t.store {
        #[cfg(feature = "postgres")]
        super::StoreSection::Postgres(pg) => pg.read_secret_files(&format!("{key}.store"))?,
        #[cfg(feature = "s3")]
        super::StoreSection::S3(s3) => s3.read_secret_files(&format!("{key}.store"))?,
        _ => {}
    }
    Ok(())
}

/// `key` or `key_file`: with the file, its content becomes the value (and
/// the file is taken, so a second pass finds nothing to read).
pub(super) fn resolve(
    key: &str,
    value: &mut Option<String>,
    file: &mut Option<PathBuf>,
) -> Result<(), ConfigError> {
    let Some(path) = file.take() else {
        return Ok(());
    };
    let file_key = format!("{key}_file");
    if value.is_some() {
        return Err(ConfigError::new(
            file_key,
            format!("{key} is set too: give one of them"),
        ));
    }
    *value = Some(read(&file_key, &path)?);
    Ok(())
}

/// `key` (a list of URLs) or `key_file`, one URL a line; blank lines and
/// lines starting with `#` are skipped.
pub(super) fn resolve_list(
    key: &str,
    value: &mut Vec<String>,
    file: &mut Option<PathBuf>,
) -> Result<(), ConfigError> {
    let Some(path) = file.take() else {
        return Ok(());
    };
    let file_key = format!("{key}_file");
    if !value.is_empty() {
        return Err(ConfigError::new(
            file_key,
            format!("{key} is set too: give one of them"),
        ));
    }
    let text = read(&file_key, &path)?;
    *value = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if value.is_empty() {
        return Err(ConfigError::new(
            file_key,
            format!("{}: no URL in the file", path.display()),
        ));
    }
    Ok(())
}

/// A secret file's content, one trailing newline trimmed.
pub(super) fn read(key: &str, path: &Path) -> Result<String, ConfigError> {
    let at = |what: String| ConfigError::new(key, format!("{}: {what}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| at(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| at("not UTF-8 text".into()))?;
    let trimmed = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    if trimmed.is_empty() {
        return Err(at("the file is empty".into()));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 4] = [
            (b"s3cr3t\n", "s3cr3t"),
            (b"s3cr3t\r\n", "s3cr3t"),
            (b"s3cr3t", "s3cr3t"),
            (b" two words \n\n", " two words \n"),
        ];
        for (i, (content, want)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("s{i}"));
            std::fs::write(&path, content).unwrap();
            assert_eq!(read("k_file", &path).unwrap(), *want);
        }
    }

    #[test]
    fn errors_name_the_key_and_the_path_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = read("locks.url_file", &missing).unwrap_err();
        assert_eq!(e.key, "locks.url_file");
        assert!(e.message.contains(&*missing.to_string_lossy()), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = read("metrics.bearer_token_file", &empty).unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        let binary = dir.path().join("bin");
        std::fs::write(&binary, [0xff, 0xfe, b's', b'e', b'c']).unwrap();
        let e = read("k_file", &binary).unwrap_err();
        assert!(
            e.message.contains("UTF-8") && !e.message.contains("sec"),
            "{e}"
        );
    }

    #[test]
    fn exactly_one_of_the_value_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let (mut value, mut file) = (None, Some(path.clone()));
        resolve("metrics.bearer_token", &mut value, &mut file).unwrap();
        assert_eq!(value.as_deref(), Some("from-file"));
        assert_eq!(file, None);
        // Resolved once, a second pass changes nothing.
        resolve("metrics.bearer_token", &mut value, &mut file).unwrap();
        assert_eq!(value.as_deref(), Some("from-file"));
        let (mut value, mut file) = (Some("inline".to_string()), Some(path));
        let e = resolve("metrics.bearer_token", &mut value, &mut file).unwrap_err();
        assert_eq!(e.key, "metrics.bearer_token_file");
        assert!(e.message.contains("metrics.bearer_token is set too"), "{e}");
        let (mut value, mut file) = (None, None);
        resolve("locks.url", &mut value, &mut file).unwrap();
        assert_eq!(value, None);
    }

    #[test]
    fn url_lists_come_one_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sentinels");
        std::fs::write(
            &path,
            "# the sentinels
redis://:pw@10.0.0.1:26379

  redis://:pw@10.0.0.2:26379  
",
        )
        .unwrap();
        let (mut value, mut file) = (Vec::new(), Some(path.clone()));
        resolve_list("locks.sentinels", &mut value, &mut file).unwrap();
        assert_eq!(
            value,
            ["redis://:pw@10.0.0.1:26379", "redis://:pw@10.0.0.2:26379"]
        );
        assert_eq!(file, None);
        let (mut value, mut file) = (vec!["redis://x:1".to_string()], Some(path));
        let e = resolve_list("locks.cluster", &mut value, &mut file).unwrap_err();
        assert_eq!(e.key, "locks.cluster_file");
        assert!(e.message.contains("locks.cluster is set too"), "{e}");
        let comments = dir.path().join("comments");
        std::fs::write(
            &comments,
            "# nothing

",
        )
        .unwrap();
        let (mut value, mut file) = (Vec::new(), Some(comments));
        let e = resolve_list("locks.cluster", &mut value, &mut file).unwrap_err();
        assert!(e.message.contains("no URL"), "{e}");
        assert!(!e.message.contains("nothing"), "never the content: {e}");
    }
}
