//! Credentials never live in configuration files: configs name a secret and a
//! [`SecretsProvider`] resolves it. The file provider refuses a secrets file
//! that other users could read, and [`SecretString`] prints as `***` so a
//! secret that slips into a log line or an error shows nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{SecretsConfig, SecretsProviderKind};
use crate::{Error, Result};

/// A secret value. Debug and Display print `***`; read it with
/// [`SecretString::expose`] only where it is handed to a client library.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Arc<str>);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Resolves secret names such as `minio.secret_access_key` to values.
pub trait SecretsProvider: Send + Sync + fmt::Debug {
    /// The secret's value, or `None` when this provider has no such name.
    fn get(&self, name: &str) -> Result<Option<SecretString>>;

    /// Where secrets come from, for error messages (never a value).
    fn describe(&self) -> String;

    /// Names of the secrets that start with `prefix` (such as `token.`), in
    /// the form [`SecretsProvider::get`] takes. Required, not defaulted:
    /// a provider that silently listed nothing would turn authentication
    /// off.
    fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>>;

    /// The secret's value, or an error that says where it was looked for.
    fn require(&self, name: &str) -> Result<SecretString> {
        self.get(name)?.ok_or_else(|| Error::SecretNotFound {
            name: name.to_owned(),
            provider: self.describe(),
        })
    }
}

/// Builds the configured provider. The file provider reads (and checks) its
/// file now, so a bad file stops the server at start, not at first use.
pub fn from_config(config: &SecretsConfig) -> Result<Arc<dyn SecretsProvider>> {
    Ok(match config.secrets_provider {
        SecretsProviderKind::File => Arc::new(FileSecrets::load_if_exists(&config.secrets_file)?),
        SecretsProviderKind::Env => Arc::new(EnvSecrets::default()),
    })
}

/// Secrets from a TOML file that must be mode 0600 (or stricter):
///
/// ```toml
/// [minio]
/// access_key_id = "lakehouse"
/// secret_access_key = "..."
/// ```
///
/// Tables nest names with dots: the second value is `minio.secret_access_key`.
#[derive(Debug)]
pub struct FileSecrets {
    path: PathBuf,
    values: BTreeMap<String, SecretString>,
    exists: bool,
}

impl FileSecrets {
    /// Reads and checks the file; a missing file is an error.
    pub fn load(path: &Path) -> Result<Self> {
        check_mode(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadSecretsFile {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // toml's message quotes the offending line, which may hold a
            // secret: keep only the position.
            let position = e
                .span()
                .map(|span| format!("syntax error at byte {}", span.start))
                .unwrap_or_else(|| "syntax error".to_owned());
            Error::ParseSecretsFile {
                path: path.to_owned(),
                message: position,
            }
        })?;
        let mut values = BTreeMap::new();
        flatten(path, "", &table, &mut values)?;
        Ok(Self {
            path: path.to_owned(),
            values,
            exists: true,
        })
    }

    /// Like [`FileSecrets::load`], but a missing file is an empty provider
    /// whose lookups fail with a message naming the file.
    pub fn load_if_exists(path: &Path) -> Result<Self> {
        match std::fs::symlink_metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                path: path.to_owned(),
                values: BTreeMap::new(),
                exists: false,
            }),
            _ => Self::load(path),
        }
    }

    /// Names of the secrets held (never their values).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

impl SecretsProvider for FileSecrets {
    fn get(&self, name: &str) -> Result<Option<SecretString>> {
        Ok(self.values.get(name).cloned())
    }

    fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .names()
            .filter(|name| name.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    fn describe(&self) -> String {
        if self.exists {
            format!("secrets file {}", self.path.display())
        } else {
            format!(
                "secrets file {} (it does not exist; create it with mode 0600)",
                self.path.display()
            )
        }
    }
}

#[cfg(unix)]
fn check_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::metadata(path).map_err(|source| Error::ReadSecretsFile {
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureSecretsFile {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path) -> Result<()> {
    Ok(())
}

fn flatten(
    path: &Path,
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, SecretString>,
) -> Result<()> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::String(s) => {
                out.insert(name, SecretString::new(s.as_str()));
            }
            toml::Value::Table(inner) => flatten(path, &name, inner, out)?,
            _ => {
                return Err(Error::ParseSecretsFile {
                    path: path.to_owned(),
                    message: format!("{name:?} must be a string or a table"),
                });
            }
        }
    }
    Ok(())
}

/// Secrets from environment variables: `minio.secret_access_key` is read
/// from `LAKEHOUSE_SECRET_MINIO_SECRET_ACCESS_KEY`.
#[derive(Debug, Default)]
pub struct EnvSecrets {
    _private: (),
}

impl EnvSecrets {
    /// The variable that holds a secret name.
    pub fn variable(name: &str) -> String {
        let mut var = String::from("LAKEHOUSE_SECRET_");
        var.extend(name.chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        }));
        var
    }
}

impl SecretsProvider for EnvSecrets {
    fn get(&self, name: &str) -> Result<Option<SecretString>> {
        Ok(std::env::var(Self::variable(name))
            .ok()
            .map(SecretString::new))
    }

    /// Variable names are upper case with `_` for every other character, so
    /// the names listed are lower case: `LAKEHOUSE_SECRET_TOKEN_AGENT` under
    /// the prefix `token.` is `token.agent`, which [`EnvSecrets::get`] maps
    /// back to the same variable.
    fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let var_prefix = Self::variable(prefix);
        let mut names: Vec<String> = std::env::vars_os()
            .filter_map(|(var, _)| {
                let var = var.into_string().ok()?;
                let rest = var.strip_prefix(&var_prefix)?;
                (!rest.is_empty()).then(|| format!("{prefix}{}", rest.to_ascii_lowercase()))
            })
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    fn describe(&self) -> String {
        "environment (LAKEHOUSE_SECRET_*)".to_owned()
    }
}

/// Fixed secrets, for tests and for embedding.
#[derive(Debug, Default)]
pub struct StaticSecrets(BTreeMap<String, SecretString>);

impl StaticSecrets {
    /// Adds a secret.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_owned(), SecretString::new(value));
        self
    }
}

impl SecretsProvider for StaticSecrets {
    fn get(&self, name: &str) -> Result<Option<SecretString>> {
        Ok(self.0.get(name).cloned())
    }

    fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .0
            .keys()
            .filter(|name| name.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn describe(&self) -> String {
        "static secrets".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn write(dir: &Path, mode: u32, text: &str) -> PathBuf {
        let path = dir.join("secrets.toml");
        std::fs::write(&path, text).expect("write secrets");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn world_readable_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            0o644,
            "[minio]\nsecret_access_key = \"hunter2\"\n",
        );
        let error = FileSecrets::load(&path).expect_err("0644 must be refused");
        let message = error.to_string();
        assert!(message.contains("644"), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn group_readable_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), 0o640, "a = \"b\"\n");
        assert!(matches!(
            FileSecrets::load(&path),
            Err(Error::InsecureSecretsFile { mode: 0o640, .. })
        ));
    }

    #[test]
    fn private_file_is_read_with_nested_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            0o600,
            "top = \"t\"\n[minio]\naccess_key_id = \"ak\"\nsecret_access_key = \"hunter2\"\n",
        );
        let secrets = FileSecrets::load(&path).expect("0600 accepted");
        assert_eq!(
            secrets
                .require("minio.secret_access_key")
                .expect("present")
                .expose(),
            "hunter2"
        );
        assert_eq!(secrets.require("top").expect("present").expose(), "t");
        let missing = secrets.require("nope").expect_err("absent");
        assert!(missing.to_string().contains("\"nope\""));
    }

    #[test]
    fn parse_errors_do_not_echo_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), 0o600, "key = \"hunter2\" garbage\n");
        let message = FileSecrets::load(&path).expect_err("invalid").to_string();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn secret_string_never_prints_its_value() {
        let secret = SecretString::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(***)");
    }

    #[test]
    fn file_secrets_list_names_under_a_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            0o600,
            "[token]\nowner = \"admin:x\"\nagent = \"read:y\"\n[minio]\nkey = \"z\"\n",
        );
        let secrets = FileSecrets::load(&path).expect("0600 accepted");
        assert_eq!(
            secrets.names_with_prefix("token.").expect("names"),
            ["token.agent", "token.owner"]
        );
    }

    #[test]
    fn env_variable_names_are_derived_from_secret_names() {
        assert_eq!(
            EnvSecrets::variable("minio.secret-access_key"),
            "LAKEHOUSE_SECRET_MINIO_SECRET_ACCESS_KEY"
        );
    }
}
