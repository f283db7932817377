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
}

/// Result with the client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
