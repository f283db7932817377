//! How indexes live in storage (the default bucket):
//!
//! ```text
//! indexes/<name>/index.json               the index record (definition, settings,
//!                                         active generation, generation list)
//! indexes/<name>/gen-<n>/graph.bin        the frozen graph and its vectors
//! indexes/<name>/gen-<n>/rows.parquet     ids, texts and payload columns
//! indexes/<name>/gen-<n>/manifest.json    written last: the generation is whole
//! ```
//!
//! A generation without its manifest was interrupted (a crash mid-persist)
//! and is never loaded; the record is replaced with one put, so it is
//! either the old or the new one.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::array::RecordBatchReader as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use crate::Metric;
use crate::error::{Error, Result};
use crate::hnsw::{Graph, HnswParams};

/// Where every index lives.
pub const INDEXES_PREFIX: &str = "indexes/";

/// State of one generation, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationState {
    /// Being built.
    Building,
    /// Whole in storage.
    Ready,
    /// The build failed.
    Failed,
    /// The build was cancelled.
    Cancelled,
}

/// One generation, as recorded in the index record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    /// Number.
    pub generation: u64,
    /// Build parameters.
    pub params: HnswParams,
    /// State.
    pub state: GenerationState,
    /// Dataset version it is built from.
    pub dataset_version: u64,
    /// Vectors.
    pub vector_count: u64,
    /// Dimensions.
    pub dimensions: u32,
    /// When the build started.
    pub create_time: DateTime<Utc>,
    /// Load + insert + persist time.
    pub build_ms: u64,
    /// Memory when loaded.
    pub memory_bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The request that started it (replays survive restarts).
    pub request_id: Option<String>,
}

/// An index's definition, settings and generations: `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// Name.
    pub name: String,
    /// Dataset.
    pub dataset: String,
    /// Id column.
    pub id_column: String,
    /// Text column, if any.
    pub text_column: Option<String>,
    /// Vector column.
    pub vector_column: String,
    /// Payload columns.
    pub payload_columns: Vec<String>,
    /// Metric.
    pub metric: Metric,
    /// Live search setting.
    pub ef_search: u32,
    /// Inactive ready generations kept.
    pub retained_generations: u32,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// The CreateIndex request id.
    pub create_request_id: Option<String>,
    /// Active generation; 0 before the first is ready.
    pub active: u64,
    /// Earlier active generations, most recent last (for rollback).
    pub previous: Vec<u64>,
    /// Every generation kept, oldest first.
    pub generations: Vec<GenerationRecord>,
    /// The number the next generation gets.
    pub next_generation: u64,
}

impl IndexRecord {
    /// The row columns a generation keeps: id, then text, then payload.
    pub fn row_columns(&self) -> Vec<String> {
        std::iter::once(self.id_column.clone())
            .chain(self.text_column.clone())
            .chain(self.payload_columns.iter().cloned())
            .collect()
    }

    /// One generation's record.
    pub fn generation(&self, generation: u64) -> Option<&GenerationRecord> {
        self.generations.iter().find(|g| g.generation == generation)
    }

    /// One generation's record, to change.
    pub fn generation_mut(&mut self, generation: u64) -> Option<&mut GenerationRecord> {
        self.generations
            .iter_mut()
            .find(|g| g.generation == generation)
    }
}

/// Written last into a generation's folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationManifest {
    /// Number.
    pub generation: u64,
    /// Bytes of graph.bin.
    pub graph_bytes: u64,
    /// Bytes of rows.parquet.
    pub rows_bytes: u64,
    /// Vectors.
    pub vector_count: u64,
    /// Dimensions.
    pub dimensions: u32,
    /// Dataset version.
    pub dataset_version: u64,
    /// Build parameters.
    pub params: HnswParams,
    /// Metric.
    pub metric: Metric,
}

/// Key of an index's record.
pub fn record_key(index: &str) -> String {
    format!("{INDEXES_PREFIX}{index}/index.json")
}

/// Folder of one generation.
pub fn generation_prefix(index: &str, generation: u64) -> String {
    format!("{INDEXES_PREFIX}{index}/gen-{generation}/")
}

fn path(key: &str) -> Result<Path> {
    Path::parse(key).map_err(|e| Error::Storage {
        operation: "address",
        key: key.to_owned(),
        source: e.into(),
    })
}

/// Index and generation files over one object store.
#[derive(Debug, Clone)]
pub struct IndexStore {
    store: Arc<dyn ObjectStore>,
}

impl IndexStore {
    /// Over `store` (the default bucket).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// The object store, for loaders.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Names of every index with a record.
    pub async fn list_indexes(&self) -> Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&path(INDEXES_PREFIX)?))
            .await
            .map_err(Error::storage("list", INDEXES_PREFIX))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The record of `index`, or `None` when it has none.
    pub async fn read_record(&self, index: &str) -> Result<Option<IndexRecord>> {
        self.read_json("index record", record_key(index)).await
    }

    /// A JSON object, or `None` when it does not exist.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        key: String,
    ) -> Result<Option<T>> {
        let bytes = match self.store.get(&path(&key)?).await {
            Ok(got) => got.bytes().await.map_err(Error::storage("read", &key))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(Error::storage("read", key)(source)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what,
                key,
                reason: e.to_string(),
            })
    }

    /// Replaces the record of its index (one put: old or new, never half).
    pub async fn write_record(&self, record: &IndexRecord) -> Result<()> {
        let key = record_key(&record.name);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::Corrupt {
            what: "index record",
            key: key.clone(),
            reason: e.to_string(),
        })?;
        self.store
            .put(&path(&key)?, PutPayload::from(bytes))
            .await
            .map_err(Error::storage("write", key))?;
        Ok(())
    }

    /// Writes a generation: graph, rows, then the manifest that makes it
    /// whole. Returns the manifest.
    pub async fn write_generation(
        &self,
        index: &str,
        generation: u64,
        graph: &Graph,
        rows: &RecordBatch,
        dataset_version: u64,
    ) -> Result<GenerationManifest> {
        let prefix = generation_prefix(index, generation);
        let graph_key = format!("{prefix}graph.bin");
        let mut writer = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            path(&graph_key)?,
            8 * 1024 * 1024,
        );
        let mut graph_bytes = 0u64;
        for section in graph.to_sections() {
            for chunk in section.chunks(4 * 1024 * 1024) {
                writer
                    .write_all(chunk)
                    .await
                    .map_err(|e| Error::storage("write", &graph_key)(io_error(e)))?;
                graph_bytes += chunk.len() as u64;
            }
        }
        writer
            .shutdown()
            .await
            .map_err(|e| Error::storage("write", &graph_key)(io_error(e)))?;

        let rows_key = format!("{prefix}rows.parquet");
        let rows_bytes = encode_rows(rows).map_err(|e| Error::Corrupt {
            what: "rows",
            key: rows_key.clone(),
            reason: e.to_string(),
        })?;
        let rows_len = rows_bytes.len() as u64;
        self.store
            .put(&path(&rows_key)?, PutPayload::from(rows_bytes))
            .await
            .map_err(Error::storage("write", &rows_key))?;

        let manifest = GenerationManifest {
            generation,
            graph_bytes,
            rows_bytes: rows_len,
            vector_count: graph.len() as u64,
            dimensions: graph.dim() as u32,
            dataset_version,
            params: graph.params(),
            metric: graph.metric(),
        };
        let manifest_key = format!("{prefix}manifest.json");
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Corrupt {
            what: "manifest",
            key: manifest_key.clone(),
            reason: e.to_string(),
        })?;
        self.store
            .put(&path(&manifest_key)?, PutPayload::from(body))
            .await
            .map_err(Error::storage("write", &manifest_key))?;
        Ok(manifest)
    }

    /// The manifest of a generation, or `None` when it was never finished.
    pub async fn read_manifest(
        &self,
        index: &str,
        generation: u64,
    ) -> Result<Option<GenerationManifest>> {
        let key = format!("{}manifest.json", generation_prefix(index, generation));
        self.read_json("manifest", key).await
    }

    /// Reads a whole generation back, checking it against its manifest.
    pub async fn read_generation(
        &self,
        index: &str,
        generation: u64,
    ) -> Result<(Graph, RecordBatch, GenerationManifest)> {
        let prefix = generation_prefix(index, generation);
        let manifest = self
            .read_manifest(index, generation)
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "generation",
                key: prefix.clone(),
                reason: "it has no manifest (its build never finished)".to_owned(),
            })?;
        let graph_key = format!("{prefix}graph.bin");
        let rows_key = format!("{prefix}rows.parquet");
        let (graph_bytes, rows_bytes) =
            tokio::try_join!(self.read_all(&graph_key), self.read_all(&rows_key))?;
        let corrupt = |what, key: &str, reason: String| Error::Corrupt {
            what,
            key: key.to_owned(),
            reason,
        };
        if graph_bytes.len() as u64 != manifest.graph_bytes {
            return Err(corrupt(
                "graph",
                &graph_key,
                format!(
                    "{} bytes, the manifest says {}",
                    graph_bytes.len(),
                    manifest.graph_bytes
                ),
            ));
        }
        let graph = tokio::task::spawn_blocking(move || Graph::from_bytes(&graph_bytes))
            .await
            .map_err(|_| Error::Task("graph decode"))?
            .map_err(|e| corrupt("graph", &graph_key, e.to_string()))?;
        let rows = decode_rows(rows_bytes).map_err(|e| corrupt("rows", &rows_key, e))?;
        if rows.num_rows() != graph.len() || graph.len() as u64 != manifest.vector_count {
            return Err(corrupt(
                "rows",
                &rows_key,
                format!("{} rows for {} vectors", rows.num_rows(), graph.len()),
            ));
        }
        Ok((graph, rows, manifest))
    }

    async fn read_all(&self, key: &str) -> Result<Bytes> {
        self.store
            .get(&path(key)?)
            .await
            .map_err(Error::storage("read", key))?
            .bytes()
            .await
            .map_err(Error::storage("read", key))
    }

    /// Deletes every object under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let keys: Vec<Path> = self
            .store
            .list(Some(&path(prefix)?))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(Error::storage("list", prefix))?;
        for key in &keys {
            match self.store.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(Error::storage("delete", key.to_string())(source)),
            }
        }
        Ok(keys.len() as u64)
    }

    /// Deletes an index's record (first, so a crash mid-delete leaves no
    /// half index), then its files.
    pub async fn delete_index(&self, index: &str) -> Result<()> {
        let key = record_key(index);
        match self.store.delete(&path(&key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(Error::storage("delete", key)(source)),
        }
        self.delete_prefix(&format!("{INDEXES_PREFIX}{index}/"))
            .await
            .map(|_| ())
    }
}

fn encode_rows(rows: &RecordBatch) -> std::result::Result<Vec<u8>, parquet::errors::ParquetError> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, rows.schema(), Some(props))?;
    writer.write(rows)?;
    writer.close()?;
    Ok(out)
}

fn decode_rows(bytes: Bytes) -> std::result::Result<RecordBatch, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| e.to_string())?
        .with_batch_size(1 << 20)
        .build()
        .map_err(|e| e.to_string())?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())
}

fn io_error(error: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LakehouseStorage",
        source: Box::new(error),
    }
}
