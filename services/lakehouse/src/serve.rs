//! `lakehouse serve <role>`: assembles the services of a role on one server.
//!
//! In every mode services reach each other only through their gRPC clients;
//! in `all` mode that is loopback to this very address, so there is one code
//! path whatever the deployment.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use lakehouse_shared::auth::audit::{self, AuditJournal};
use lakehouse_shared::auth::{self, AuthPolicy, Tokens};
use lakehouse_shared::server::{GrpcServer, bind};
use lakehouse_shared::{shutdown, telemetry};

use crate::cli::{Role, ServeArgs};

pub async fn run(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let role = args.role;
    let _telemetry = telemetry::init(&args.telemetry, &format!("lakehouse-{}", role.name()))?;
    // Before anything touches the files: a second server on the same
    // folder refuses here, naming the folder and the holder's pid. Held
    // until this function returns, after the services have shut down.
    let _locks = crate::data_locks::acquire(&args)?;
    let shutdown = shutdown::on_signal();

    let secrets = lakehouse_shared::secrets::from_config(&args.secrets)?;
    let listen = args.server.listen_or(role.default_port());
    let mut policy = AuthPolicy {
        tokens: Arc::new(Tokens::from_secrets(&*secrets)?),
        reflection_requires_token: args.auth.reflection_requires_token,
        audit: None,
    };
    auth::check_exposure(listen, &policy, args.auth.insecure)?;
    // Every peer client this process makes carries the service token (set
    // before any service starts, so none is made without it). Storage calls
    // no peer; every other role does, and with authentication on it would
    // be refused without one.
    match auth::service_token(&*secrets)? {
        Some(token) => lakehouse_client::set_service_token(token)?,
        None if policy.is_on() && role != Role::Storage => {
            return Err(lakehouse_shared::Error::ServiceTokenMissing.into());
        }
        None => {}
    }

    // TLS files are read now, once: a renewed certificate takes a restart
    // (ADR 0011). The peer settings apply to every peer client this
    // process makes, like the service token.
    let server_tls = lakehouse_shared::tls::server_tls(&args.tls)?;
    if let Some(tls) = lakehouse_shared::tls::client_tls(&args.peer_tls)? {
        lakehouse_client::set_client_tls(tls)?;
    }

    let listener = bind(listen).await?;
    let local = listener.local_addr()?;
    // In `serve all` the services call this very listener, so they speak
    // its protocol: https when it serves TLS (its certificate must then
    // name 127.0.0.1 and be trusted by --tls-ca, and with mutual TLS this
    // process needs --tls-client-cert/--tls-client-key).
    let self_addr = loopback_uri(local, server_tls.is_some());
    tracing::info!(role = role.name(), %local, "starting");

    let max_message = args.server.max_message_bytes;
    let (storage_addr, catalog_addr) = peer_addresses(&args, &self_addr);

    let mut server = GrpcServer::new(args.server.clone()).with_tls(server_tls);
    let mut storage = None;
    let mut catalog = None;
    let mut ingest = None;
    if matches!(role, Role::Storage | Role::All) {
        let runtime = lakehouse_storage::StorageRuntime::start(
            &args.storage,
            &args.data.data_dir,
            secrets.clone(),
        )
        .await?;
        server = server.add_service(runtime.service(max_message));
        storage = Some(runtime);
    }
    if matches!(role, Role::Catalog | Role::All) {
        let password = args
            .catalog_password
            .catalog_password_secret
            .as_deref()
            .map(|name| secrets.require(name))
            .transpose()?;
        let runtime = lakehouse_catalog::CatalogRuntime::start_with_password(
            &args.catalog,
            password,
            &args.data.data_dir,
            &storage_addr,
        )
        .await?;
        server = server.add_service(runtime.service(max_message));
        catalog = Some(runtime);
    }
    if matches!(role, Role::Ingest | Role::All) {
        let runtime = lakehouse_ingest::IngestRuntime::start(
            &args.ingest,
            secrets.clone(),
            &storage_addr,
            &catalog_addr,
        )
        .await?;
        server = server.add_service(runtime.service(max_message));
        ingest = Some(runtime);
    }
    let mut vector = None;
    if matches!(role, Role::Vector | Role::All) {
        let runtime =
            lakehouse_vector::VectorRuntime::start(&args.vector, &storage_addr, &catalog_addr)?;
        let vector_max = usize::try_from(args.vector.max_message_bytes)
            .unwrap_or(usize::MAX)
            .max(max_message);
        server = server.add_gated_service(runtime.grpc(vector_max), runtime.ready());
        vector = Some(runtime);
    }
    // The audit journal (with authentication on; without tokens there is
    // no one to name) goes to storage's default bucket: directly when this
    // process is the storage service, through storage otherwise. Its own
    // stop token, so it flushes once more after the server has drained.
    let audit_stop = tokio_util::sync::CancellationToken::new();
    let mut audit_flusher = None;
    if policy.is_on() {
        let store: Arc<dyn object_store::ObjectStore> = match &storage {
            Some(runtime) => runtime.storage().registry().default_bucket().store.clone(),
            None => Arc::new(lakehouse_client::GrpcObjectStore::new(
                lakehouse_client::storage(lakehouse_client::connect_lazy(&storage_addr)?),
                String::new(),
            )),
        };
        let journal = AuditJournal::new(store, role.name());
        audit_flusher = Some(tokio::spawn(audit::flush_periodically(
            journal.clone(),
            args.auth.audit_flush_interval,
            audit_stop.clone(),
        )));
        policy.audit = Some(journal);
    }
    server = server.with_auth(policy);

    // Persisted indexes load through storage, which in `serve all` is this
    // very server: load once it accepts calls; health says NOT_SERVING until
    // then.
    if let Some(runtime) = vector.clone() {
        tokio::spawn(async move { runtime.load_persisted().await });
    }

    // A stop drains in order: running ingests finish their internal calls
    // (parts to storage, the commit to the catalog — in `serve all`, calls
    // to this very server) while the server still answers; then running
    // vector builds and trials are cancelled and record their end through
    // storage (each within the same grace); only then does the server stop
    // accepting calls and drain its own in-flight ones.
    let ingest_drain = ingest.as_ref().map(|runtime| runtime.drain_handle());
    let vector_drain = vector.clone();
    let server_stop = if ingest_drain.is_none() && vector_drain.is_none() {
        shutdown
    } else {
        let server_stop = tokio_util::sync::CancellationToken::new();
        let stop = server_stop.clone();
        let grace = args.server.shutdown_grace;
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if let Some(drain) = ingest_drain {
                drain.drain(grace).await;
            }
            if let Some(vector) = vector_drain {
                vector.drain(grace).await;
            }
            stop.cancel();
        });
        server_stop
    };
    server.serve(listener, server_stop).await?;

    audit_stop.cancel();
    if let Some(flusher) = audit_flusher
        && let Err(error) = flusher.await
    {
        tracing::warn!(%error, "audit journal flusher failed");
    }

    // Background work stops after the server has drained, producers first:
    // ingest (which writes to storage and commits to the catalog), then the
    // catalog, then storage (which flushes the error journal last).
    if let Some(runtime) = ingest {
        runtime.shutdown().await;
    }
    if let Some(runtime) = catalog {
        runtime.shutdown().await;
    }
    if let Some(runtime) = storage {
        runtime.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The storage and catalog addresses this process's services call. In
/// `all` mode that is this very process unless a flag says otherwise: the
/// `LAKEHOUSE_STORAGE_ADDR` / `LAKEHOUSE_CATALOG_ADDR` variables are also
/// the CLI's, and a user who exported them for the CLI must not find this
/// server quietly writing into another one; one WARN names the variables it
/// ignored. Other roles use the flag or variable, or the default local
/// port. Clients connect lazily, so start order and self-calls do not
/// matter.
fn peer_addresses(args: &ServeArgs, self_addr: &str) -> (String, String) {
    let role = args.role;
    let mut ignored = Vec::new();
    let mut peer = |configured: &Option<String>, from_env: bool, variable, port: u16| {
        match (configured, role) {
            (Some(addr), Role::All) if from_env => {
                if !same_address(addr, self_addr) {
                    ignored.push(format!("{variable}={addr}"));
                }
                self_addr.to_owned()
            }
            (Some(addr), _) => addr.clone(),
            (None, Role::All) => self_addr.to_owned(),
            // Bare: https once peer TLS is configured (`lakehouse_client::endpoint`).
            (None, _) => format!("127.0.0.1:{port}"),
        }
    };
    let storage = peer(
        &args.peers.storage_addr,
        args.peers_from_env.storage,
        "LAKEHOUSE_STORAGE_ADDR",
        Role::Storage.default_port(),
    );
    let catalog = peer(
        &args.peers.catalog_addr,
        args.peers_from_env.catalog,
        "LAKEHOUSE_CATALOG_ADDR",
        Role::Catalog.default_port(),
    );
    if !ignored.is_empty() {
        tracing::warn!(
            ignored = %ignored.join(" "),
            this_process = self_addr,
            "serve all: its services call this process, not the address in the environment \
             (those variables tell the CLI and the split roles where services are); pass \
             --storage-addr / --catalog-addr to point serve all at another server"
        );
    }
    (storage, catalog)
}

/// Whether two addresses name the same server, ignoring the scheme and a
/// trailing slash (`127.0.0.1:50051` is `http://127.0.0.1:50051/`).
fn same_address(a: &str, b: &str) -> bool {
    let bare = |addr: &str| {
        let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        addr.trim_end_matches('/').to_ascii_lowercase()
    };
    bare(a) == bare(b)
}

/// How this process reaches itself: an unspecified listen address
/// (0.0.0.0 or ::) is reached over loopback.
fn loopback_uri(local: SocketAddr, tls: bool) -> String {
    let ip = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, local.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_server_with_or_without_a_scheme() {
        assert!(same_address("127.0.0.1:50051", "http://127.0.0.1:50051"));
        assert!(same_address("https://Host:1/", "host:1"));
        assert!(!same_address("127.0.0.1:50051", "http://127.0.0.1:50052"));
    }
}
