//! Source DSNs: URL form (`postgres://user:pass@host:port/db?sslmode=…`) or
//! libpq key=value form (`host=db user=app dbname=hr`), with the password
//! possibly from a named secret.
//!
//! The DSN is parsed here, not by sqlx, for two reasons: sqlx logs the value
//! of a parameter it does not recognise (which could be a password), and our
//! errors must never quote the DSN. Unknown parameters are refused by name.
//! Only the redacted form ([`SourceDsn::redacted`]) leaves this module.

use std::fmt;

use lakehouse_shared::secrets::SecretString;
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::error::{Error, Result};

/// A parsed DSN. Debug prints the redacted form only.
#[derive(Clone)]
pub struct SourceDsn {
    host: String,
    socket: bool,
    port: u16,
    user: String,
    database: String,
    password: Option<SecretString>,
    ssl_mode: Option<String>,
    ssl_root_cert: Option<String>,
    application_name: Option<String>,
    options: Option<String>,
}

impl fmt::Debug for SourceDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces a password wherever it appears, for text from libraries that
/// might echo it (driver errors). Short passwords are replaced too.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor of `password` (and its percent-encoded form).
    pub fn new(password: Option<&SecretString>) -> Self {
        let mut secrets = Vec::new();
        if let Some(password) = password {
            let raw = password.expose();
            if !raw.is_empty() {
                secrets.push(raw.to_owned());
                let encoded: String =
                    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
                if encoded != raw {
                    secrets.push(encoded);
                }
            }
        }
        Self { secrets }
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

impl SourceDsn {
    /// Parses `dsn`; `secret` is the password from `password_secret`, which
    /// must not be combined with a password inside the DSN.
    pub fn parse(dsn: &str, secret: Option<SecretString>) -> Result<Self> {
        let dsn = dsn.trim();
        if dsn.is_empty() {
            return Err(Error::InvalidRequest(
                "dsn is required, e.g. postgres://user@host:5432/db".to_owned(),
            ));
        }
        let mut parsed = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
            Self::parse_url(dsn)?
        } else if dsn.contains("://") {
            return Err(Error::InvalidDsn(
                "the URL scheme must be postgres:// or postgresql://".to_owned(),
            ));
        } else {
            Self::parse_key_value(dsn)?
        };
        if let Some(secret) = secret {
            if parsed.password.is_some() {
                return Err(Error::InvalidRequest(
                    "give the password either in the dsn or as password_secret, not both"
                        .to_owned(),
                ));
            }
            parsed.password = Some(secret);
        }
        if parsed.user.is_empty() {
            return Err(Error::InvalidDsn(
                "no user given; add user=NAME or postgres://NAME@host/db".to_owned(),
            ));
        }
        if let Some(mode) = &parsed.ssl_mode {
            mode.parse::<PgSslMode>().map_err(|_| {
                Error::InvalidDsn(
                    "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full"
                        .to_owned(),
                )
            })?;
        }
        Ok(parsed)
    }

    fn empty() -> Self {
        Self {
            host: "localhost".to_owned(),
            socket: false,
            port: 5432,
            user: String::new(),
            database: String::new(),
            password: None,
            ssl_mode: None,
            ssl_root_cert: None,
            application_name: None,
            options: None,
        }
    }

    fn parse_url(dsn: &str) -> Result<Self> {
        // url's errors name the problem ("invalid port number"), never the input.
        let url = url::Url::parse(dsn)
            .map_err(|e| Error::InvalidDsn(format!("not a valid postgres URL: {e}")))?;
        let mut out = Self::empty();
        if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
            let host = decode(host, "host")?;
            out.socket = host.starts_with('/');
            out.host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
        }
        if let Some(port) = url.port() {
            out.port = port;
        }
        out.user = decode(url.username(), "user")?;
        if let Some(password) = url.password() {
            out.password = Some(SecretString::new(decode(password, "password")?));
        }
        let path = url.path().trim_start_matches('/');
        if !path.is_empty() {
            out.database = decode(path, "database")?;
        }
        for (key, value) in url.query_pairs() {
            out.set(&key, &value)?;
        }
        Ok(out)
    }

    fn parse_key_value(dsn: &str) -> Result<Self> {
        let mut out = Self::empty();
        for (key, value) in key_values(dsn)? {
            out.set(&key, &value)?;
        }
        Ok(out)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "host" => {
                self.socket = value.starts_with('/');
                self.host = value.to_owned();
            }
            "hostaddr" => self.host = value.to_owned(),
            "port" => {
                self.port = value.parse().map_err(|_| {
                    Error::InvalidDsn("port must be a number from 1 to 65535".to_owned())
                })?;
            }
            "user" => self.user = value.to_owned(),
            "password" => self.password = Some(SecretString::new(value)),
            "dbname" => self.database = value.to_owned(),
            "sslmode" => self.ssl_mode = Some(value.to_owned()),
            "sslrootcert" => self.ssl_root_cert = Some(value.to_owned()),
            "application_name" => self.application_name = Some(value.to_owned()),
            "options" => self.options = Some(value.to_owned()),
            // Accepted for compatibility; the service's own timeout applies.
            "connect_timeout" => {}
            other => {
                return Err(Error::InvalidDsn(format!(
                    "unknown parameter {other:?}; supported: host, hostaddr, port, user, password, dbname, sslmode, sslrootcert, application_name, options, connect_timeout"
                )));
            }
        }
        Ok(())
    }

    /// The DSN as a URL with the password shown as `***`: what lineage,
    /// logs and ListIngests show.
    pub fn redacted(&self) -> String {
        let credentials = match self.password {
            Some(_) => format!("{}:***@", self.user),
            None => format!("{}@", self.user),
        };
        let host = if self.socket {
            url::form_urlencoded::byte_serialize(self.host.as_bytes()).collect::<String>()
        } else if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut out = format!(
            "postgres://{credentials}{host}:{}/{}",
            self.port, self.database
        );
        if let Some(mode) = &self.ssl_mode {
            out.push_str("?sslmode=");
            out.push_str(mode);
        }
        out
    }

    /// host:port/db, for error messages.
    pub fn target(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// A redactor of this DSN's password.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.password.as_ref())
    }

    /// sqlx connect options. Unset fields fall back to libpq's environment
    /// variables of the server process (PGHOST, …), as libpq does; the
    /// server's ~/.pgpass is not read.
    pub fn connect_options(&self, application: &str) -> PgConnectOptions {
        let mut options = PgConnectOptions::new_without_pgpass()
            .port(self.port)
            .username(&self.user)
            .application_name(self.application_name.as_deref().unwrap_or(application));
        options = if self.socket {
            options.socket(&self.host)
        } else {
            options.host(&self.host)
        };
        if !self.database.is_empty() {
            options = options.database(&self.database);
        }
        if let Some(password) = &self.password {
            options = options.password(password.expose());
        }
        if let Some(mode) = self.ssl_mode.as_deref().and_then(|m| m.parse().ok()) {
            options = options.ssl_mode(mode);
        }
        if let Some(cert) = &self.ssl_root_cert {
            options = options.ssl_root_cert(cert.as_str());
        }
        if let Some(extra) = &self.options {
            options = options.options(
                extra
                    .split_whitespace()
                    .filter_map(|o| o.strip_prefix("-c"))
                    .filter_map(|o| o.trim().split_once('=')),
            );
        }
        // Statement logging would print the caller's filter and query at
        // INFO; the ingest logs what it does itself.
        options.disable_statement_logging()
    }
}

fn decode(text: &str, what: &str) -> Result<String> {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| Error::InvalidDsn(format!("the {what} is not valid percent-encoding")))
}

/// libpq's key=value syntax: pairs separated by whitespace, values
/// optionally single-quoted with `\'` and `\\` escapes.
fn key_values(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::InvalidDsn(format!(
                "expected key=value pairs or a postgres:// URL; {key:?} has no '='"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(escaped) => value.push(escaped),
                        None => break,
                    },
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(Error::InvalidDsn(format!(
                    "the quoted value of {key:?} is not closed"
                )));
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err(Error::InvalidDsn("a parameter has no name".to_owned()));
        }
        out.push((key, value));
    }
    if out.is_empty() {
        return Err(Error::InvalidDsn("no parameters given".to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cr3t-p@ss";

    #[test]
    fn url_form_is_parsed_and_redacted() {
        let dsn = SourceDsn::parse(
            "postgres://app:s3cr3t-p%40ss@db.example:6543/hr?sslmode=prefer",
            None,
        )
        .expect("valid");
        assert_eq!(dsn.host, "db.example");
        assert_eq!(dsn.port, 6543);
        assert_eq!(dsn.user, "app");
        assert_eq!(dsn.database, "hr");
        assert_eq!(
            dsn.password.as_ref().map(SecretString::expose),
            Some(PASSWORD)
        );
        assert_eq!(
            dsn.redacted(),
            "postgres://app:***@db.example:6543/hr?sslmode=prefer"
        );
        assert!(!format!("{dsn:?}").contains(PASSWORD));
        assert_eq!(dsn.target(), "db.example:6543/hr");
    }

    #[test]
    fn key_value_form_handles_quotes_and_escapes() {
        let dsn = SourceDsn::parse(
            r"host=db port=5433 user=app dbname='my db' password='it\'s s3cr3t'",
            None,
        )
        .expect("valid");
        assert_eq!(dsn.database, "my db");
        assert_eq!(
            dsn.password.as_ref().map(SecretString::expose),
            Some("it's s3cr3t")
        );
        assert_eq!(dsn.redacted(), "postgres://app:***@db:5433/my db");
    }

    #[test]
    fn errors_never_quote_the_dsn() {
        for bad in [
            "postgres://app:hunter2@db:99999/x",
            "host=db user=app password=hunter2 bogus=hunter2",
            "host=db user=app password='hunter2",
            "mysql://app:hunter2@db/x",
            "host=db password=hunter2",
            "postgres://app:hunter2@db/x?sslmode=hunter2",
        ] {
            let error = SourceDsn::parse(bad, None).expect_err(bad);
            let message = Status::from(error).message().to_owned();
            assert!(!message.contains("hunter2"), "{bad}: {message}");
        }
    }

    use tonic::Status;

    #[test]
    fn secret_password_conflicts_with_an_inline_one() {
        let secret = SecretString::new(PASSWORD);
        let dsn = SourceDsn::parse("host=db user=app dbname=hr", Some(secret.clone()))
            .expect("secret only");
        assert_eq!(dsn.redacted(), "postgres://app:***@db:5432/hr");
        assert!(SourceDsn::parse("postgres://app:x@db/hr", Some(secret)).is_err());
    }

    #[test]
    fn redactor_scrubs_plain_and_encoded_passwords() {
        let secret = SecretString::new(PASSWORD);
        let redactor = Redactor::new(Some(&secret));
        assert_eq!(
            redactor.scrub("failed for s3cr3t-p@ss and s3cr3t-p%40ss"),
            "failed for *** and ***"
        );
    }
}
