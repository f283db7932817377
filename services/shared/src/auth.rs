//! Who may call what: named bearer tokens with scopes, checked by one tower
//! layer that every [`GrpcServer`](crate::server::GrpcServer) installs.
//!
//! # Where tokens come from
//!
//! Tokens are secrets, so they come from the [`SecretsProvider`] and never
//! from flags or the config file (both end up in shell history, process
//! listings and version control). Every secret named `token.<name>` is one
//! token; its value is `<scopes>:<token>`:
//!
//! ```toml
//! # secrets.toml (mode 0600)
//! [token]
//! owner   = "admin:9c1f…"          # admin implies write, trials and read
//! agent   = "read,trials:4be0…"    # an LLM agent: search and tune, nothing else
//! service = "admin:77d2…"          # what the services use to call each other
//! ```
//!
//! With the environment provider the same token is
//! `LAKEHOUSE_SECRET_TOKEN_AGENT='read,trials:4be0…'`. The scopes come first
//! and never contain `:`, so a token value may contain any visible character.
//! A token is rotated by adding a second name with the new value, moving the
//! clients over, then removing the old name.
//!
//! The token named [`SERVICE_TOKEN`] is the one a server process presents to
//! its peers (see `lakehouse_client`); the caller's own token is never
//! forwarded, and the layer removes it from the request before a handler
//! sees it.
//!
//! When no `token.*` secret exists at all, authentication is off (every call
//! is let through), which is only safe on loopback: see
//! [`check_exposure`].
//!
//! # Scopes
//!
//! `read` (get, list, search, stats), `write` (put, commit, ingest, build),
//! `admin` (delete, journal compaction, cache eviction, promote, rollback)
//! and `trials` (eval sets, trials, tuning). They nest: `admin` grants
//! `write`, `write` grants `trials` and `read`. `trials` alone grants nothing
//! else, so an agent's token is `read,trials`. Each RPC's scope is in
//! [`scope_table`].

pub mod audit;
mod layer;
pub mod scope_table;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

pub use layer::{AuthLayer, AuthService, Caller};

use crate::secrets::{SecretString, SecretsProvider};
use crate::{Error, Result};

/// Prefix of the secrets that are tokens: `token.<name>`.
pub const TOKEN_SECRET_PREFIX: &str = "token.";

/// The token a server process presents when it calls its peers.
pub const SERVICE_TOKEN: &str = "service";

/// Request header the services' own object-store writers send on writes and
/// deletes. With authentication off, storage accepts writes under the
/// reserved `_lakehouse/` prefix only with it: a guard against mistakes (a
/// stray `objects rm _lakehouse/...`), not against attackers, who need no
/// header when nothing is authenticated. With authentication on, only the
/// service token may write there and the header is ignored.
pub const INTERNAL_WRITER_HEADER: &str = "x-lakehouse-internal-writer";

/// Shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_CHARS: usize = 16;

/// One permission an RPC may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Get, list, search, stats.
    Read,
    /// Eval sets, trials and tuning: what an agent tuning its own indexes needs.
    Trials,
    /// Put, commit, ingest, build.
    Write,
    /// Delete, journal compaction, cache eviction, promote, rollback.
    Admin,
}

impl Scope {
    /// Every scope, for parsing and listing.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Trials, Scope::Write, Scope::Admin];

    /// The name used in secrets and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Trials => "trials",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `name`, if any.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == name)
    }

    /// Scopes that holding `self` grants, itself included.
    fn implied(self) -> &'static [Scope] {
        match self {
            Scope::Read => &[Scope::Read],
            Scope::Trials => &[Scope::Trials],
            Scope::Write => &[Scope::Write, Scope::Trials, Scope::Read],
            Scope::Admin => &[Scope::Admin, Scope::Write, Scope::Trials, Scope::Read],
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes a token was given, with their implications applied.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    fn bit(scope: Scope) -> u8 {
        1 << (scope as u8)
    }

    /// The scopes granted by holding `given`.
    pub fn granted_by(given: impl IntoIterator<Item = Scope>) -> Self {
        let mut bits = 0;
        for scope in given {
            for implied in scope.implied() {
                bits |= Self::bit(*implied);
            }
        }
        Self(bits)
    }

    /// Whether a call needing `scope` is allowed.
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Scope::ALL.into_iter().filter(|s| self.allows(*s)))
            .finish()
    }
}

/// One accepted token: its name and scopes, and only a hash of its value,
/// so a memory dump or a stray `{:?}` shows nothing usable.
#[derive(Clone)]
struct Token {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Scopes,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The tokens a server accepts. Empty means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

/// A token that matched: who called, and what they may do.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The token's name (never its value), for logs and the audit trail.
    pub name: Arc<str>,
    /// What it may do.
    pub scopes: Scopes,
}

impl Tokens {
    /// No tokens: authentication off.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every `token.<name>` secret of `secrets`. A malformed one stops the
    /// server at start with a message naming the secret (never its value).
    pub fn from_secrets(secrets: &dyn SecretsProvider) -> Result<Self> {
        let mut tokens = Self::none();
        for secret in secrets.names_with_prefix(TOKEN_SECRET_PREFIX)? {
            let value = secrets.require(&secret)?;
            let name = &secret[TOKEN_SECRET_PREFIX.len()..];
            let (scopes, token) = parse_token_secret(&secret, &value)?;
            tokens.add(name, scopes, &token)?;
        }
        Ok(tokens)
    }

    /// Adds a token (for tests and embedding; servers use
    /// [`Tokens::from_secrets`]).
    pub fn add(&mut self, name: &str, scopes: Scopes, value: &SecretString) -> Result<()> {
        let value = value.expose();
        if name.is_empty() {
            return Err(Error::InvalidTokenSecret {
                secret: format!("{TOKEN_SECRET_PREFIX}{name}"),
                problem: "the token has no name".to_owned(),
            });
        }
        check_token_value(&format!("{TOKEN_SECRET_PREFIX}{name}"), value)?;
        let digest = digest(value);
        if let Some(existing) = self.tokens.iter().find(|t| t.digest == digest) {
            // Two names for one value would make the audit trail lie about
            // who called.
            return Err(Error::InvalidTokenSecret {
                secret: format!("{TOKEN_SECRET_PREFIX}{name}"),
                problem: format!(
                    "it has the same value as {TOKEN_SECRET_PREFIX}{}; give every token its own value",
                    existing.name
                ),
            });
        }
        self.tokens.push(Token {
            name: name.into(),
            digest,
            scopes,
        });
        Ok(())
    }

    /// Whether no token is configured (authentication off).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Names of the tokens (never values), for the start-up log line.
    pub fn names(&self) -> Vec<&str> {
        self.tokens.iter().map(|t| &*t.name).collect()
    }

    /// The token `presented` matches, if any. The presented value is hashed
    /// and every stored hash compared in constant time, without stopping
    /// at the first match, so timing reveals neither the value nor which
    /// token (or how many) exist.
    pub fn authenticate(&self, presented: &str) -> Option<Authenticated> {
        let presented = digest(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&presented)) {
                found = Some(token);
            }
        }
        found.map(|token| Authenticated {
            name: token.name.clone(),
            scopes: token.scopes,
        })
    }
}

/// Splits `<scopes>:<token>`.
fn parse_token_secret(secret: &str, value: &SecretString) -> Result<(Scopes, SecretString)> {
    let invalid = |problem: String| Error::InvalidTokenSecret {
        secret: secret.to_owned(),
        problem,
    };
    let Some((scopes, token)) = value.expose().split_once(':') else {
        return Err(invalid(
            "its value must be `<scopes>:<token>`, such as `read,trials:<token>`".to_owned(),
        ));
    };
    let mut given = Vec::new();
    for scope in scopes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // The scope list is not secret (it sits before the first colon), so
        // naming the bad entry leaks nothing.
        let parsed = Scope::parse(scope).ok_or_else(|| {
            invalid(format!(
                "unknown scope {scope:?}; scopes are read, trials, write, admin"
            ))
        })?;
        given.push(parsed);
    }
    if given.is_empty() {
        return Err(invalid(
            "it names no scope; its value must be `<scopes>:<token>`, such as `read:<token>`"
                .to_owned(),
        ));
    }
    Ok((Scopes::granted_by(given), SecretString::new(token)))
}

/// A token must be long enough not to be guessed and fit in an HTTP header.
fn check_token_value(secret: &str, value: &str) -> Result<()> {
    let problem = if value.chars().count() < MIN_TOKEN_CHARS {
        format!(
            "the token is shorter than {MIN_TOKEN_CHARS} characters; generate one with `openssl rand -hex 32`"
        )
    } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
        "the token may hold only visible ASCII characters (no spaces)".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::InvalidTokenSecret {
        secret: secret.to_owned(),
        problem,
    })
}

/// The value of the [`SERVICE_TOKEN`] (without its scopes), which this
/// process presents to its peers; `None` when there is no such secret.
pub fn service_token(secrets: &dyn SecretsProvider) -> Result<Option<SecretString>> {
    let secret = format!("{TOKEN_SECRET_PREFIX}{SERVICE_TOKEN}");
    let Some(value) = secrets.get(&secret)? else {
        return Ok(None);
    };
    let (_, token) = parse_token_secret(&secret, &value)?;
    check_token_value(&secret, token.expose())?;
    Ok(Some(token))
}

/// What the server's auth layer enforces.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    /// Accepted tokens; empty turns authentication off.
    pub tokens: Arc<Tokens>,
    /// Whether server reflection needs a token (`read`). Off by default:
    /// reflection describes the public API, nothing of the data, and
    /// `grpcurl list` is how people find their way around.
    pub reflection_requires_token: bool,
    /// Where write, trials and admin calls are journaled; `None` records
    /// nothing.
    pub audit: Option<audit::AuditJournal>,
}

impl AuthPolicy {
    /// Authentication off: every call passes (the behaviour without tokens).
    pub fn off() -> Self {
        Self::default()
    }

    /// Whether calls are checked at all.
    pub fn is_on(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// Refuses to serve without tokens on an address other hosts can reach,
/// unless the operator said `--insecure`: with no tokens anyone who reaches
/// the port can read, delete and run ingests with the server's credentials.
pub fn check_exposure(listen: SocketAddr, policy: &AuthPolicy, insecure: bool) -> Result<()> {
    if policy.is_on() || listen.ip().is_loopback() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            %listen,
            "AUTHENTICATION IS OFF on an address other hosts can reach (--insecure): \
             anyone who reaches this port can read, write and delete everything"
        );
        return Ok(());
    }
    Err(Error::UnauthenticatedExposure { listen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::StaticSecrets;

    const OWNER: &str = "owner-0123456789abcdef";
    const AGENT: &str = "agent-0123456789abcdef";

    #[test]
    fn tokens_load_from_secrets_with_scopes() {
        let secrets = StaticSecrets::default()
            .with("token.owner", &format!("admin:{OWNER}"))
            .with("token.agent", &format!("read, trials:{AGENT}"))
            .with("minio.secret_access_key", "not-a-token");
        let tokens = Tokens::from_secrets(&secrets).expect("valid tokens");
        let mut names = tokens.names();
        names.sort_unstable();
        assert_eq!(names, ["agent", "owner"]);

        let owner = tokens.authenticate(OWNER).expect("owner");
        assert_eq!(&*owner.name, "owner");
        assert!(Scope::ALL.iter().all(|s| owner.scopes.allows(*s)));

        let agent = tokens.authenticate(AGENT).expect("agent");
        assert!(agent.scopes.allows(Scope::Read));
        assert!(agent.scopes.allows(Scope::Trials));
        assert!(!agent.scopes.allows(Scope::Write));
        assert!(!agent.scopes.allows(Scope::Admin));

        assert!(tokens.authenticate("owner").is_none());
        assert!(tokens.authenticate("").is_none());
        assert!(tokens.authenticate(&format!("{OWNER}x")).is_none());
    }

    #[test]
    fn a_token_value_may_contain_colons() {
        let value = "abc:def:0123456789abcdef";
        let secrets = StaticSecrets::default().with("token.x", &format!("read:{value}"));
        let tokens = Tokens::from_secrets(&secrets).expect("valid");
        assert!(tokens.authenticate(value).is_some());
    }

    #[test]
    fn write_grants_trials_and_read_but_trials_grants_nothing_else() {
        let write = Scopes::granted_by([Scope::Write]);
        assert!(write.allows(Scope::Trials) && write.allows(Scope::Read));
        assert!(!write.allows(Scope::Admin));
        let trials = Scopes::granted_by([Scope::Trials]);
        assert!(!trials.allows(Scope::Read) && !trials.allows(Scope::Write));
    }

    #[test]
    fn bad_token_secrets_are_refused_without_echoing_the_value() {
        let cases = [
            ("no-colon-0123456789abcdef", "<scopes>:<token>"),
            ("root:0123456789abcdef01", "unknown scope \"root\""),
            (":0123456789abcdef01", "names no scope"),
            ("read:x1y2z3", "shorter than 16"),
            ("read:has space 0123456789abcdef", "visible ASCII"),
        ];
        for (value, expected) in cases {
            let secrets = StaticSecrets::default().with("token.bad", value);
            let message = Tokens::from_secrets(&secrets).expect_err(value).to_string();
            assert!(message.contains("token.bad"), "{message}");
            assert!(message.contains(expected), "{value}: {message}");
            let token_part = value.split_once(':').map_or(value, |(_, t)| t);
            assert!(!message.contains(token_part), "{message}");
        }
    }

    #[test]
    fn two_names_for_one_value_are_refused() {
        let secrets = StaticSecrets::default()
            .with("token.a", &format!("read:{OWNER}"))
            .with("token.b", &format!("admin:{OWNER}"));
        let message = Tokens::from_secrets(&secrets).expect_err("dup").to_string();
        assert!(message.contains("same value"), "{message}");
        assert!(!message.contains(OWNER), "{message}");
    }

    #[test]
    fn token_debug_shows_no_value() {
        let secrets = StaticSecrets::default().with("token.owner", &format!("admin:{OWNER}"));
        let tokens = Tokens::from_secrets(&secrets).expect("valid");
        let printed = format!("{tokens:?}");
        assert!(printed.contains("owner"), "{printed}");
        assert!(!printed.contains(OWNER), "{printed}");
    }

    #[test]
    fn service_token_is_the_value_without_scopes() {
        let secrets = StaticSecrets::default().with("token.service", &format!("admin:{OWNER}"));
        let token = service_token(&secrets).expect("valid").expect("present");
        assert_eq!(token.expose(), OWNER);
        assert!(
            service_token(&StaticSecrets::default())
                .expect("valid")
                .is_none()
        );
    }

    #[test]
    fn serving_other_hosts_without_tokens_needs_insecure() {
        let off = AuthPolicy::off();
        let public: SocketAddr = "0.0.0.0:50051".parse().expect("addr");
        let loopback: SocketAddr = "127.0.0.1:50051".parse().expect("addr");
        assert!(check_exposure(loopback, &off, false).is_ok());
        let message = check_exposure(public, &off, false)
            .expect_err("refused")
            .to_string();
        assert!(message.contains("--insecure"), "{message}");
        assert!(check_exposure(public, &off, true).is_ok());
        let mut tokens = Tokens::none();
        tokens
            .add(
                "owner",
                Scopes::granted_by([Scope::Admin]),
                &SecretString::new(OWNER),
            )
            .expect("add");
        let on = AuthPolicy {
            tokens: Arc::new(tokens),
            reflection_requires_token: false,
            audit: None,
        };
        assert!(check_exposure(public, &on, false).is_ok());
    }
}
