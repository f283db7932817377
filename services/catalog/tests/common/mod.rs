//! What only the catalog tests need: Parquet files to commit and resync,
//! schema and file entries, and `stack.dataset(...)`. The storage and
//! catalog servers come from the test kit's [`Stack`].

#![allow(dead_code)]

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use lakehouse_client::GrpcObjectStore;
use lakehouse_proto::catalog::v1 as pb;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

pub use lakehouse_testkit::Stack;

/// The catalog tests' questions to the kit's stack.
pub trait CatalogStack {
    /// A dataset as GetDataset returns it in `view`.
    async fn dataset(&self, name: &str, view: pb::DatasetView) -> pb::Dataset;
}

impl CatalogStack for Stack {
    async fn dataset(&self, name: &str, view: pb::DatasetView) -> pb::Dataset {
        self.catalog()
            .get_dataset(pb::GetDatasetRequest {
                name: name.to_owned(),
                view: view as i32,
            })
            .await
            .expect("get dataset")
            .into_inner()
            .dataset
            .expect("dataset")
    }
}

/// A schema column.
pub fn column(name: &str, data_type: &str, nullable: bool) -> pb::Column {
    pb::Column {
        name: name.to_owned(),
        data_type: data_type.to_owned(),
        nullable,
    }
}

/// A file entry of a commit.
pub fn data_file(key: &str, size: u64, rows: u64) -> pb::DataFile {
    pb::DataFile {
        key: key.to_owned(),
        size_bytes: size,
        row_count: rows,
        etag: String::new(),
    }
}

/// A batch of `rows` rows: `id` Int64 (not null), `value` Float64, and
/// with `extra`, a `label` Utf8 column. Values are unique so encodings
/// cannot shrink them: a file's size tracks its row count.
pub fn batch(rows: usize, first_id: i64, extra: bool) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (0..rows as i64).map(|i| first_id + i),
    ));
    let values: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..rows).map(|i| (i as f64).sqrt() * 1.000_1),
    ));
    let mut columns = vec![("id", ids, false), ("value", values, true)];
    if extra {
        let labels: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("label-{i}")),
        ));
        columns.push(("label", labels, true));
    }
    RecordBatch::try_from_iter_with_nullable(columns).expect("valid batch")
}

/// Parquet bytes of `batch`, uncompressed and without dictionaries.
pub fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let properties = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(64 * 1024))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
    out
}

/// Writes a Parquet file through storage; returns its size.
pub async fn put_parquet(store: &GrpcObjectStore, key: &str, batch: &RecordBatch) -> u64 {
    let bytes = parquet_bytes(batch);
    let size = bytes.len() as u64;
    store
        .put(&Path::from(key), PutPayload::from(bytes))
        .await
        .expect("put parquet");
    size
}
