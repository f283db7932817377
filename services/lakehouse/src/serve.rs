//! `lakehouse serve <role>`: assembles the services of a role on one server.
//!
//! In every mode services reach each other only through their gRPC clients;
//! in `all` mode that is loopback to this very address, so there is one code
//! path whatever the deployment.

use std::net::SocketAddr;
use std::process::ExitCode;

use lakehouse_shared::server::{GrpcServer, bind};
use lakehouse_shared::{shutdown, telemetry};

use crate::cli::{Role, ServeArgs};

pub async fn run(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let role = args.role;
    let _telemetry = telemetry::init(&args.telemetry, &format!("lakehouse-{}", role.name()))?;
    let shutdown = shutdown::on_signal();

    let listener = bind(args.server.listen_or(role.default_port())).await?;
    let local = listener.local_addr()?;
    let self_addr = loopback_uri(local);
    tracing::info!(role = role.name(), %local, "starting");

    let max_message = args.server.max_message_bytes;
    // Peers: this very process in `all` mode, otherwise the configured (or
    // default local) addresses. Clients connect lazily, so start order and
    // self-calls do not matter.
    let peer = |configured: &Option<String>, port: u16| match (configured, role) {
        (Some(addr), _) => addr.clone(),
        (None, Role::All) => self_addr.clone(),
        (None, _) => format!("http://127.0.0.1:{port}"),
    };
    let storage_addr = peer(&args.peers.storage_addr, Role::Storage.default_port());
    let catalog_addr = peer(&args.peers.catalog_addr, Role::Catalog.default_port());
    let secrets = lakehouse_shared::secrets::from_config(&args.secrets)?;

    let mut server = GrpcServer::new(args.server.clone());
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
        let runtime = lakehouse_catalog::CatalogRuntime::start(
            &args.catalog,
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
        server = server.add_gated_service(runtime.grpc(max_message), runtime.ready());
        vector = Some(runtime);
    }
    // Persisted indexes load through storage, which in `serve all` is this
    // very server: load once it accepts calls; health says NOT_SERVING until
    // then.
    if let Some(runtime) = vector.clone() {
        tokio::spawn(async move { runtime.load_persisted().await });
    }

    server.serve(listener, shutdown).await?;

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

/// How this process reaches itself: an unspecified listen address
/// (0.0.0.0 or ::) is reached over loopback.
fn loopback_uri(local: SocketAddr) -> String {
    let ip = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, local.port()))
}
