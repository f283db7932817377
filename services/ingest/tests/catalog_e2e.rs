//! IngestPostgres against the real catalog service (SQLite store) and the
//! real storage service: CREATE, then APPEND with the same schema, read back
//! with GetDataset; then APPEND from a query, whose columns PostgreSQL
//! reports as nullable, into the table-created dataset with its NOT NULL
//! column: accepted when the rows have no nulls there, refused (nothing
//! appended) when one does.

#![allow(unused_crate_dependencies)]

mod common;

use std::sync::Arc;

use clap::Parser as _;
use common::{pg_exec, pg_url, run_ingest, table_request, unique};
use lakehouse_ingest::IngestRuntime;
use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::ingest::v1 as pb;
use lakehouse_shared::secrets::StaticSecrets;
use lakehouse_shared::server::GrpcServer;
use lakehouse_shared::testing::{serve_on_loopback, server_config};
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
struct CatalogFlags {
    #[command(flatten)]
    catalog: lakehouse_catalog::CatalogConfig,
}

/// Serves one service on a loopback port; evaluates to its address.
macro_rules! serve {
    ($service:expr, $stop:expr) => {
        serve_on_loopback(
            GrpcServer::new(server_config()).add_service($service),
            &$stop,
        )
        .await
    };
}

async fn get_dataset(
    catalog_client: &mut lakehouse_client::CatalogClient,
    name: &str,
) -> catalog::Dataset {
    catalog_client
        .get_dataset(catalog::GetDatasetRequest {
            name: name.to_owned(),
            view: catalog::DatasetView::Full as i32,
        })
        .await
        .expect("get dataset")
        .into_inner()
        .dataset
        .expect("dataset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_commits_to_the_real_catalog() {
    let Some(url) = pg_url("ingest_commits_to_the_real_catalog").await else {
        return;
    };
    let table = unique("real_cat");
    pg_exec(
        &url,
        &format!(
            "CREATE TABLE {table} (id int8 PRIMARY KEY, amount numeric(10,2), at timestamptz, u uuid, tags text[]);
             INSERT INTO {table} SELECT g, g * 1.25, now(), gen_random_uuid(), ARRAY['a', g::text] FROM generate_series(1, 1000) g;"
        ),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();
    let storage = lakehouse_storage::StorageRuntime::start(
        &lakehouse_storage::StorageConfig {
            buckets_config: None,
            journal_flush_interval: std::time::Duration::from_secs(1),
            probe_timeout: std::time::Duration::from_secs(2),
            ..Default::default()
        },
        dir.path(),
        Arc::new(StaticSecrets::default()),
    )
    .await
    .expect("storage");
    let storage_addr = serve!(storage.service(16 << 20), stop);
    let flags = CatalogFlags::parse_from(["test"]);
    let catalog_runtime =
        lakehouse_catalog::CatalogRuntime::start(&flags.catalog, dir.path(), &storage_addr)
            .await
            .expect("catalog");
    let catalog_addr = serve!(catalog_runtime.service(16 << 20), stop);
    let ingest = IngestRuntime::start(
        &common::small_config(),
        Arc::new(StaticSecrets::default()),
        &storage_addr,
        &catalog_addr,
    )
    .await
    .expect("ingest");
    let ingest_addr = serve!(ingest.service(16 << 20), stop);
    let mut client =
        lakehouse_client::ingest(lakehouse_client::connect_lazy(&ingest_addr).expect("addr"));

    let dataset = unique("real");
    let created = run_ingest(&mut client, table_request(&dataset, &url, &table))
        .await
        .1
        .expect("create");
    let appended = run_ingest(
        &mut client,
        pb::IngestPostgresRequest {
            mode: pb::IngestMode::Append as i32,
            ..table_request(&dataset, &url, &table)
        },
    )
    .await
    .1
    .expect("append with the same schema");
    assert!(appended.dataset_version > created.dataset_version);

    let mut catalog_client =
        lakehouse_client::catalog(lakehouse_client::connect_lazy(&catalog_addr).expect("addr"));
    let dataset_info = get_dataset(&mut catalog_client, &dataset).await;
    assert_eq!(dataset_info.row_count, 2000);
    assert_eq!(
        dataset_info.files.len() as u64,
        created.parts + appended.parts
    );
    let lineage = dataset_info.lineage.expect("lineage");
    assert_eq!(lineage.ingest_id, appended.ingest_id);
    assert!(lineage.source.contains(":***@"), "{}", lineage.source);
    let columns = dataset_info.schema.expect("schema").columns;
    assert_eq!(columns.len(), 5);
    assert!(!columns[0].nullable);

    // A query's columns are all nullable to PostgreSQL; the dataset's id is
    // NOT NULL. The APPEND takes on the dataset's nullability.
    let query = |sql: String| pb::IngestPostgresRequest {
        mode: pb::IngestMode::Append as i32,
        source: Some(pb::ingest_postgres_request::Source::Query(sql)),
        ..table_request(&dataset, &url, &table)
    };
    let from_query = run_ingest(
        &mut client,
        query(format!(
            "SELECT id, amount, at, u, tags FROM {table} WHERE id <= 10"
        )),
    )
    .await
    .1
    .expect("append from a query without nulls in the NOT NULL column");
    assert_eq!(from_query.rows, 10);
    let refused = run_ingest(
        &mut client,
        query(format!(
            "SELECT CASE WHEN id = 3 THEN NULL ELSE id END AS id, amount, at, u, tags \
             FROM {table} WHERE id <= 5 ORDER BY amount"
        )),
    )
    .await
    .1
    .expect_err("a null in the NOT NULL column");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(
        lakehouse_shared::status::error_reason(&refused).as_deref(),
        Some("NULL_IN_NOT_NULL_COLUMN"),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("\"id\"") && refused.message().contains("row 3"),
        "{}",
        refused.message()
    );
    let dataset_info = get_dataset(&mut catalog_client, &dataset).await;
    assert_eq!(
        dataset_info.row_count, 2010,
        "the refused APPEND added nothing"
    );
    let columns = dataset_info.schema.expect("schema").columns;
    assert!(!columns[0].nullable, "id stays NOT NULL");

    // A resync over the footers finds nothing to change.
    let report = catalog_client
        .resync_dataset(catalog::ResyncDatasetRequest {
            name: dataset.clone(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("resync")
        .into_inner()
        .report
        .expect("report");
    assert!(!report.drifted, "{report:?}");

    stop.cancel();
    ingest.shutdown().await;
    storage.shutdown().await;
}
