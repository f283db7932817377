//! What only the vector tests need: the seeded rows, CreateIndex requests,
//! and `stack.dataset(...)`, which registers Parquet parts with the catalog.
//! The stack (storage + catalog + vector on one loopback server over a
//! folder, as in `serve all`) is the test kit's.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field};
use lakehouse_proto::catalog::v1 as catalog_pb;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_vector::VectorConfig;
use object_store::{ObjectStoreExt as _, PutPayload};

pub use lakehouse_testkit::Stack;

pub const DIM: usize = 32;

/// The kit's stack with the vector service over `dir` (kept by the caller,
/// so a test can stop the stack, change files, and start another).
pub async fn start(dir: &Path) -> Stack {
    start_with(dir, VectorConfig::default()).await
}

/// The stack with these vector settings.
pub async fn start_with(dir: &Path, config: VectorConfig) -> Stack {
    Stack::builder().vector(config).start_in(dir).await
}

/// The vector tests' datasets on the kit's stack.
pub trait VectorStack {
    /// Writes each of `parts` as a Snappy Parquet file (pandas' and
    /// pyarrow's default) under the dataset's folder and registers them by
    /// resync.
    async fn dataset(&self, name: &str, parts: &[RecordBatch]);
}

impl VectorStack for Stack {
    async fn dataset(&self, name: &str, parts: &[RecordBatch]) {
        let _ = self
            .catalog()
            .create_dataset(catalog_pb::CreateDatasetRequest {
                name: name.to_owned(),
                ..Default::default()
            })
            .await;
        for (i, batch) in parts.iter().enumerate() {
            let mut bytes = Vec::new();
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build();
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
                    .expect("writer");
            writer.write(batch).expect("write");
            writer.close().expect("close");
            self.object_store()
                .put(
                    &object_store::path::Path::from(format!("datasets/{name}/part-{i}.parquet")),
                    PutPayload::from(bytes),
                )
                .await
                .expect("put");
        }
        self.catalog()
            .resync_dataset(catalog_pb::ResyncDatasetRequest {
                name: name.to_owned(),
                dry_run: false,
                ..Default::default()
            })
            .await
            .expect("resync");
    }
}

/// Rows `first..first+n` of the seeded set: id, text, category, embedding.
pub fn batch(vectors: &[f32], first: usize) -> RecordBatch {
    let n = vectors.len() / DIM;
    let ids = Int64Array::from_iter_values((first..first + n).map(|i| i as i64));
    let texts = StringArray::from_iter_values((first..first + n).map(|i| format!("doc {i}")));
    let category = StringArray::from_iter_values((first..first + n).map(|i| format!("c{}", i % 3)));
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding = FixedSizeListArray::new(
        field,
        DIM as i32,
        Arc::new(Float32Array::from(vectors.to_vec())),
        None,
    );
    RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("text", Arc::new(texts) as ArrayRef),
        ("category", Arc::new(category) as ArrayRef),
        ("embedding", Arc::new(embedding) as ArrayRef),
    ])
    .expect("batch")
}

pub fn create(name: &str, dataset: &str, request_id: &str) -> pb::CreateIndexRequest {
    pb::CreateIndexRequest {
        name: name.to_owned(),
        dataset: dataset.to_owned(),
        id_column: "id".into(),
        text_column: "text".into(),
        vector_column: "embedding".into(),
        metric: pb::Metric::Cosine as i32,
        config: None,
        ef_search: 0,
        payload_columns: vec!["category".into()],
        retained_generations: None,
        request_id: request_id.to_owned(),
    }
}
