//! IngestPostgres against the real catalog service (SQLite store) and the
//! real storage service: CREATE, then APPEND with the same schema, read back
//! with GetDataset; then APPEND from a query, whose columns PostgreSQL
//! reports as nullable, into the table-created dataset with its NOT NULL
//! column: accepted when the rows have no nulls there, refused (nothing
//! appended) when one does.

#![allow(unused_crate_dependencies)]

mod common;

use common::{RealStack, pg_exec, pg_url, run_ingest, table_request, unique};
use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::ingest::v1 as pb;

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
    let stack = RealStack::start(&common::small_config()).await;
    let mut client = stack.client();

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

    let mut catalog_client = stack.catalog_client();
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

    stack.shutdown().await;
}
