//! The split deployment, as docker-compose runs it: storage and catalog as
//! separate processes that find each other through LAKEHOUSE_STORAGE_ADDR.
//! A Parquet file uploaded to storage is picked up by the catalog's resync,
//! which reads its footer through the storage process.

use crate::support;

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use lakehouse_client::GrpcObjectStore;
use lakehouse_proto::catalog::v1 as catalog;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use support::ServerProcess;

fn parquet_bytes(rows: i64) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
            )),
        ],
    )
    .expect("batch");
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    out
}

#[test]
fn storage_and_catalog_as_separate_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut storage = ServerProcess::start("storage", &dir.path().join("s"), &[]);
    storage.wait_healthy();
    let mut catalog = ServerProcess::start(
        "catalog",
        &dir.path().join("c"),
        &[("LAKEHOUSE_STORAGE_ADDR", storage.uri())],
    );
    catalog.wait_healthy();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let storage_client = lakehouse_client::storage(
            lakehouse_client::connect(&storage.uri())
                .await
                .expect("storage"),
        );
        let mut catalog_client = lakehouse_client::catalog(
            lakehouse_client::connect(&catalog.uri())
                .await
                .expect("catalog"),
        );

        let created = catalog_client
            .create_dataset(catalog::CreateDatasetRequest {
                name: "staff".to_owned(),
                description: "people".to_owned(),
                ..Default::default()
            })
            .await
            .expect("CreateDataset")
            .into_inner()
            .dataset
            .expect("dataset");
        assert_eq!(created.version, 1);
        assert_eq!(
            created.bucket, "default",
            "the storage process's default bucket"
        );

        let store = GrpcObjectStore::new(storage_client, "");
        store
            .put(
                &Path::from("datasets/staff/manual/part-00000.parquet"),
                parquet_bytes(1234).into(),
            )
            .await
            .expect("upload through the storage process");

        let report = catalog_client
            .resync_dataset(catalog::ResyncDatasetRequest {
                name: "staff".to_owned(),
                dry_run: false,
                ..Default::default()
            })
            .await
            .expect("ResyncDataset")
            .into_inner()
            .report
            .expect("report");
        assert!(report.applied && report.drifted, "{report:?}");
        assert!(report.bytes_read > 0);

        let dataset = catalog_client
            .get_dataset(catalog::GetDatasetRequest {
                name: "staff".to_owned(),
                view: catalog::DatasetView::Full as i32,
            })
            .await
            .expect("GetDataset")
            .into_inner()
            .dataset
            .expect("dataset");
        assert_eq!(dataset.row_count, 1234);
        assert_eq!(dataset.files.len(), 1);
        let columns: Vec<_> = dataset
            .schema
            .expect("schema")
            .columns
            .into_iter()
            .map(|c| (c.name, c.nullable))
            .collect();
        assert_eq!(
            columns,
            [("id".to_owned(), false), ("name".to_owned(), true)]
        );
    });
}
