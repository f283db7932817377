//! What every Lakehouse service shares: config blocks, telemetry, the server
//! builder, secrets, the append log and the conventions for errors.
//!
//! Nothing here knows about a particular service; services meet only through
//! `lakehouse-proto`, this crate and `lakehouse-client`.

pub mod append_log;
pub mod auth;
pub mod config;
mod error;
pub mod folder_lock;
pub mod ingest_id;
pub mod names;
pub mod paging;
pub mod periodic;
pub mod request_id;
pub mod secrets;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod tls;

pub use error::{Error, Result};

#[cfg(test)]
use {tempfile as _, tokio_stream as _, tonic_prost as _};
