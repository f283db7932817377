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
    #[error("cannot connect to {address}: {source}; is the server running?")]
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

    /// The process's service token was set twice with different values.
    #[error("the service token is already set to another value in this process")]
    ServiceTokenAlreadySet,
}

/// Result with the client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
