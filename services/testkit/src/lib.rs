//! The test kit: what the service crates' integration tests share, so each
//! test module keeps only what is its own (test data, the ingest tests'
//! fake catalog).
//!
//! - [`Stack`]: the real storage and catalog services (and, with the
//!   `vector` feature, the vector service) on one loopback server over one
//!   folder, as `lakehouse serve all` runs them; restartable over the same
//!   folder, with clients and a byte-counting store under the default
//!   bucket.
//! - [`pg`]: the PostgreSQL gate (`LAKEHOUSE_TEST_PG_URL`) and helpers.
//! - Re-exported from `lakehouse_shared::testing`, where they stay because
//!   unit tests inside `src/` (which cannot take this crate: it depends on
//!   the crates it tests) use them too: [`TestStore`], [`MotoServer`],
//!   [`skip_or_fail`] and the small loopback helpers.
//!
//! A dev-dependency only: it depends on the storage and catalog crates
//! (and optionally the vector crate), and each of them dev-depends on it,
//! which Cargo allows for integration tests in `tests/`.

pub mod pg;
mod stack;

pub use lakehouse_shared::testing::{
    MotoServer, TestStore, files_under, free_port, serve_on_loopback, server_config, skip_or_fail,
    which,
};
pub use pg::{pg_exec, pg_url, unique};
pub use stack::{MESSAGE_BYTES, Stack, StackBuilder, bucket_folder, catalog_config};
