/// Errors of the clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not a valid URI.
    #[error("invalid server address {address:?}: {source}; use host:port or http://host:port")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// Why it was rejected.
        source: tonic::transport::Error,
    },

    /// The server could not be reached.
    #[error("cannot connect to {address}: {details}; is the server running (and is its TLS what the flags say)?", details = chain(source))]
    Connect {
        /// The address tried.
        address: String,
        /// Why it failed.
        source: tonic::transport::Error,
    },

    /// A bearer token holds characters an HTTP header cannot carry. The
    /// token itself is not echoed.
    #[error("the token holds characters a gRPC header cannot carry (use visible ASCII only)")]
    InvalidToken,

    /// The client TLS settings (CA, client certificate or key) cannot be
    /// used. Names the address, never the key.
    #[error("TLS settings for {address} cannot be used: {details}", details = chain(source))]
    Tls {
        /// The address (or what was being checked).
        address: String,
        /// Why.
        source: tonic::transport::Error,
    },

    /// The client TLS settings were set twice in this process.
    #[error("the client TLS settings are already set in this process")]
    ClientTlsAlreadySet,

    /// The process's service token was set twice with different values.
    #[error("the service token is already set to another value in this process")]
    ServiceTokenAlreadySet,
}

/// Result with the client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes: tonic's transport errors say only "transport
/// error" themselves, the cause (refused certificate, unknown CA, …) is in
/// the chain.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
