//! A secret given inline (`bind_password`) or in a file
//! (`bind_password_file`, as a Kubernetes Secret is mounted). Never shown.

use std::path::PathBuf;

use super::ConfigError;

/// The secret of `value` or `file` (not both). The file's content without
/// its trailing line break; empty is an error. `key` is the section's key
/// and `name` the inline key, e.g. `tenants[0].auth` and `bind_password`.
pub(crate) fn read(
    key: &str,
    name: &str,
    value: Option<&String>,
    file: Option<&PathBuf>,
) -> Result<Option<String>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            format!("{key}.{name}_file"),
            format!("give {name} or {name}_file, not both"),
        )),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    format!("{key}.{name}_file"),
                    format!("{}: {e}", path.display()),
                )
            })?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            if secret.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.{name}_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(secret.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_file_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let v = "inline".to_owned();
        assert_eq!(
            read("k", "pw", Some(&v), None).unwrap().as_deref(),
            Some("inline")
        );
        assert_eq!(
            read("k", "pw", None, Some(&file)).unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(read("k", "pw", None, None).unwrap(), None);
        let e = read("k", "pw", Some(&v), Some(&file)).unwrap_err();
        assert_eq!(e.key, "k.pw_file");
        std::fs::write(&file, "\n").unwrap();
        let e = read("k", "pw", None, Some(&file)).unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        let e = read("k", "pw", None, Some(&dir.path().join("gone"))).unwrap_err();
        assert_eq!(e.key, "k.pw_file");
    }
}
