//! `lakehouse audit`: the audit journal of every role, read through the
//! storage service (where each process writes its own under
//! `_lakehouse/audit/<role>`), oldest first.

use std::process::ExitCode;
use std::sync::Arc;

use lakehouse_client::GrpcObjectStore;
use lakehouse_shared::auth::audit;

use crate::cmd::{Output, Table};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Roles whose journals are read when none is named.
const ROLES: [&str; 5] = ["all", "storage", "catalog", "ingest", "vector"];

/// Reads the audit journal.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Address of the storage service (or of `serve all`): host:port, a
    /// port alone (on 127.0.0.1), http://host:port or https://host:port.
    #[arg(
        long,
        env = "LAKEHOUSE_STORAGE_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub addr: String,

    /// Only the journal of this role (all, storage, catalog, ingest, vector).
    #[arg(long)]
    pub role: Option<String>,

    /// Only calls made with this token name.
    #[arg(long = "token-name")]
    pub token_name: Option<String>,

    /// `table` for people, `json` (one record per line, the journal's own
    /// fields) for scripts and agents.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,

    #[command(flatten)]
    pub auth: crate::client_args::TokenArgs,
}

pub async fn run(args: AuditArgs) -> Result<ExitCode> {
    let channel = lakehouse_client::connect_with(&args.addr, args.auth.token.as_ref()).await?;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(GrpcObjectStore::new(
        lakehouse_client::storage(channel),
        String::new(),
    ));
    let roles: Vec<&str> = match &args.role {
        Some(role) => vec![role.as_str()],
        None => ROLES.to_vec(),
    };
    let mut records = Vec::new();
    for role in roles {
        records.extend(audit::read(store.clone(), role).await?);
    }
    records.retain(|r| args.token_name.as_ref().is_none_or(|name| *name == r.token));
    records.sort_by_key(|r| r.time);
    let mut table = Table::new(
        args.output,
        &[
            "TIME",
            "ROLE",
            "TOKEN",
            "DECISION",
            "SCOPE",
            "METHOD",
            "TARGET",
            "REQUEST_ID",
        ],
    );
    for r in records {
        table.row(&serde_json::to_value(&r)?, || {
            vec![
                r.time.to_rfc3339(),
                r.role.clone(),
                r.token.clone(),
                r.decision.clone(),
                r.scope.clone(),
                r.method.clone(),
                r.target.clone(),
                r.request_id.clone(),
            ]
        });
    }
    table.finish();
    Ok(ExitCode::SUCCESS)
}
