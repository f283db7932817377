//! The arguments every client command shares (the bearer token and the
//! client TLS files): one module that `cli` and the verb modules import,
//! so neither imports the other for them.

use lakehouse_shared::config::ClientTlsFiles;
use lakehouse_shared::secrets::SecretString;

/// The bearer token client commands send. `hide_env_values` keeps
/// `LAKEHOUSE_TOKEN`'s value out of `--help`, and [`SecretString`] keeps it
/// out of any `{:?}` of the parsed arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Bearer token for servers with authentication on (a token's value,
    /// not its name). Prefer the environment variable: a flag is visible in
    /// process listings and shell history.
    #[arg(
        long,
        env = "LAKEHOUSE_TOKEN",
        hide_env_values = true,
        global = true,
        value_parser = parse_token
    )]
    pub token: Option<SecretString>,

    #[command(flatten)]
    pub tls: ClientTlsFiles,
}

fn parse_token(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::new(value.trim()))
}
