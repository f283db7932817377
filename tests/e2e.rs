//! Every end-to-end test in one test binary. Each module is one area (the
//! files next to this one); they share `support` (the real binary as a child
//! process, grpcurl, psql, a trace collector). One binary instead of one per
//! file: each would link the whole workspace again, minutes of CI on 2 cores.

#![allow(unused_crate_dependencies)]

mod support;

mod deploy_manifests;
mod e2e_auth;
mod e2e_cli;
mod e2e_cli_errors;
mod e2e_cli_vector;
mod e2e_crash;
mod e2e_one_owner;
mod e2e_serve_all;
mod e2e_shutdown;
mod e2e_split;
mod e2e_stack;
mod e2e_storage;
mod e2e_telemetry;
mod e2e_tls;
mod e2e_trace_ingest;
mod e2e_vector;
mod e2e_vector_crash;
