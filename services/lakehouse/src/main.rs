//! `lakehouse`: the one binary. `serve <role>` runs one service or all four
//! in one process; the other commands are clients.

use std::process::ExitCode;

mod audit_cmd;
mod cli;
mod client_args;
mod cmd;
mod data_locks;
mod datasets_cmd;
mod health;
mod index_check;
mod index_cmd;
mod ingest_cmd;
mod interrupt;
mod search_cmd;
mod serve;
mod storage_cmd;
mod trial_cmd;
mod tune_cmd;
mod vector_cmd;
mod where_clause;

// Used by the end-to-end tests in ../../tests.
#[cfg(test)]
use {
    arrow as _, bytes as _, opentelemetry_proto as _, parquet as _, rcgen as _, tempfile as _,
    tokio_stream as _, yaml_rust2 as _,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse_args();
    let result = match cli::apply_client_tls(&cli.command) {
        Ok(()) => run(cli.command).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(code) => code,
        Err(error) => cmd::exit_for(error.as_ref()),
    }
}

async fn run(command: cli::Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        cli::Command::Serve(args) => serve::run(*args).await,
        cli::Command::Health(args) => health::run(args).await,
        cli::Command::Buckets(args) => storage_cmd::buckets(args).await,
        cli::Command::Objects(args) => storage_cmd::objects(args).await,
        cli::Command::Errors(args) => storage_cmd::errors(args).await,
        cli::Command::Datasets(args) => datasets_cmd::run(args).await,
        cli::Command::Ingest(args) => ingest_cmd::run(args).await,
        cli::Command::Storage(args) => storage_cmd::run(args).await,
        cli::Command::Audit(args) => audit_cmd::run(args).await,
        cli::Command::Index(args) => index_cmd::index(args).await,
        cli::Command::Search(args) => search_cmd::search(args).await,
        cli::Command::Eval(args) => vector_cmd::eval(args).await,
        cli::Command::Trial(args) => trial_cmd::trial(args).await,
        cli::Command::Tune(args) => tune_cmd::tune(args).await,
    }
}
