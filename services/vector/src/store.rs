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
//! Every byte read back is checked: the record and the manifest are sealed
//! JSON ([`crate::json_record`]); the manifest holds a CRC32C of each
//! section of `graph.bin` and of `rows.parquet`, verified before a
//! generation is loaded. A generation without its manifest was interrupted
//! (a crash mid-persist) and is never loaded; the record is replaced with
//! one put, so it is either the old or the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::array::RecordBatchReader as _;
use bytes::Bytes;
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
use crate::json_record::{JsonRecords, path};
use crate::record::{IndexDefinition, IndexRecord};

/// Where every index lives.
pub const INDEXES_PREFIX: &str = "indexes/";

/// The files of a generation, the manifest last.
const GENERATION_FILES: [&str; 3] = ["graph.bin", "rows.parquet", "manifest.json"];

/// Names of `graph.bin`'s sections, in [`Graph::to_sections`] order.
const GRAPH_SECTIONS: [&str; 7] = [
    "header",
    "levels",
    "padding",
    "base links",
    "upper offsets",
    "upper links",
    "vectors",
];

/// One section of `graph.bin` and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionSum {
    /// What the section holds.
    pub name: String,
    /// Its length.
    pub bytes: u64,
    /// CRC32C of its bytes.
    pub crc32c: u32,
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
    /// Sections of graph.bin with their CRC32C; empty in a generation
    /// stored before checksums (loaded unverified, with a warning).
    #[serde(default)]
    pub graph_sections: Vec<SectionSum>,
    /// CRC32C of rows.parquet; absent before checksums.
    #[serde(default)]
    pub rows_crc32c: Option<u32>,
    /// The index's definition when this generation was built, so a damaged
    /// record can be rebuilt from its generations; absent in generations
    /// stored before it was kept.
    #[serde(default)]
    pub index: Option<IndexDefinition>,
}

/// What is stored under one index's folder, from one listing.
#[derive(Debug, Clone, Default)]
pub struct IndexListing {
    /// Generations with any file, each with the names of its files.
    pub generations: BTreeMap<u64, BTreeSet<String>>,
    /// Keys that are neither the record nor a generation's file.
    pub strays: Vec<String>,
}

impl IndexListing {
    /// Whether `generation` has its manifest (its files were finished).
    pub fn has_manifest(&self, generation: u64) -> bool {
        self.generations
            .get(&generation)
            .is_some_and(|files| files.contains("manifest.json"))
    }
}

/// Key of an index's record.
pub fn record_key(index: &str) -> String {
    format!("{INDEXES_PREFIX}{index}/index.json")
}

/// Folder of one generation.
pub fn generation_prefix(index: &str, generation: u64) -> String {
    format!("{INDEXES_PREFIX}{index}/gen-{generation}/")
}

/// Index and generation files over one object store.
#[derive(Debug, Clone)]
pub struct IndexStore {
    store: Arc<dyn ObjectStore>,
    records: JsonRecords,
}

impl IndexStore {
    /// Over `store` (the default bucket).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            records: JsonRecords::new(store.clone()),
            store,
        }
    }

    /// The object store, for loaders.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Names of every index folder (with a record or not).
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

    /// Every generation file and stray key under an index's folder.
    pub async fn list_index(&self, index: &str) -> Result<IndexListing> {
        let prefix = format!("{INDEXES_PREFIX}{index}/");
        let keys: Vec<String> = self
            .store
            .list(Some(&path(&prefix)?))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(Error::storage("list", &prefix))?;
        let mut listing = IndexListing::default();
        for key in keys {
            let rest = key.strip_prefix(&prefix).unwrap_or(&key);
            if rest == "index.json" {
                continue;
            }
            let generation = rest
                .split_once('/')
                .filter(|(_, file)| GENERATION_FILES.contains(file))
                .and_then(|(folder, file)| {
                    let n = folder.strip_prefix("gen-")?.parse::<u64>().ok()?;
                    Some((n, file.to_owned()))
                });
            match generation {
                Some((n, file)) => {
                    listing.generations.entry(n).or_default().insert(file);
                }
                None => listing.strays.push(key),
            }
        }
        Ok(listing)
    }

    /// The record of `index`, or `None` when it has none.
    pub async fn read_record(&self, index: &str) -> Result<Option<IndexRecord>> {
        self.records.read("index record", &record_key(index)).await
    }

    /// Replaces the record of its index (one put: old or new, never half).
    pub async fn write_record(&self, record: &IndexRecord) -> Result<()> {
        self.records
            .write("index record", &record_key(&record.name), record)
            .await
    }

    /// Writes a generation: graph, rows, then the manifest that makes it
    /// whole, with a CRC32C of every section. Returns the manifest.
    pub async fn write_generation(
        &self,
        record: &IndexRecord,
        generation: u64,
        graph: &Graph,
        rows: &RecordBatch,
        dataset_version: u64,
    ) -> Result<GenerationManifest> {
        let prefix = generation_prefix(&record.name, generation);
        let graph_key = format!("{prefix}graph.bin");
        let mut writer = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            path(&graph_key)?,
            8 * 1024 * 1024,
        );
        let mut graph_bytes = 0u64;
        let mut graph_sections = Vec::new();
        for (i, section) in graph.to_sections().iter().enumerate() {
            let mut crc = 0u32;
            for chunk in section.chunks(4 * 1024 * 1024) {
                crc = crc32c::crc32c_append(crc, chunk);
                writer
                    .write_all(chunk)
                    .await
                    .map_err(|e| Error::storage("write", &graph_key)(io_error(e)))?;
            }
            graph_bytes += section.len() as u64;
            graph_sections.push(SectionSum {
                name: GRAPH_SECTIONS
                    .get(i)
                    .copied()
                    .unwrap_or("section")
                    .to_owned(),
                bytes: section.len() as u64,
                crc32c: crc,
            });
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
        let rows_crc32c = crc32c::crc32c(&rows_bytes);
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
            graph_sections,
            rows_crc32c: Some(rows_crc32c),
            index: Some(record.definition()),
        };
        self.records
            .write("manifest", &format!("{prefix}manifest.json"), &manifest)
            .await?;
        Ok(manifest)
    }

    /// The manifest of a generation, or `None` when it was never finished.
    pub async fn read_manifest(
        &self,
        index: &str,
        generation: u64,
    ) -> Result<Option<GenerationManifest>> {
        let key = format!("{}manifest.json", generation_prefix(index, generation));
        self.records.read("manifest", &key).await
    }

    /// Reads a whole generation back, checking every byte against its
    /// manifest: sizes, each section's CRC32C, then the graph's own
    /// structure. A damaged generation is [`Error::Corrupt`], never loaded.
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
                reason: "it has no manifest (its build never finished, or its files are gone)"
                    .to_owned(),
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
        if rows_bytes.len() as u64 != manifest.rows_bytes {
            return Err(corrupt(
                "rows",
                &rows_key,
                format!(
                    "{} bytes, the manifest says {}",
                    rows_bytes.len(),
                    manifest.rows_bytes
                ),
            ));
        }
        if let Some(expected) = manifest.rows_crc32c {
            let sum = crc32c::crc32c(&rows_bytes);
            if sum != expected {
                return Err(corrupt(
                    "rows",
                    &rows_key,
                    format!("CRC32C {sum:#010x}, the manifest says {expected:#010x}"),
                ));
            }
        }
        if manifest.graph_sections.is_empty() {
            tracing::warn!(
                index,
                generation,
                "generation stored before checksums: loaded unverified; rebuild it to get checksums"
            );
        }
        let sections = manifest.graph_sections.clone();
        let graph = tokio::task::spawn_blocking(move || {
            verify_sections(&graph_bytes, &sections)?;
            Graph::from_bytes(&graph_bytes).map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| Error::Task("graph decode"))?
        .map_err(|reason| corrupt("graph", &graph_key, reason))?;
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
            self.delete_key(key.as_ref()).await?;
        }
        Ok(keys.len() as u64)
    }

    /// Deletes one object; one already gone is not an error.
    pub async fn delete_key(&self, key: &str) -> Result<()> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::storage("delete", key)(source)),
        }
    }

    /// Deletes an index's record (first, so a crash mid-delete leaves no
    /// half index: startup removes a folder without a record), then its
    /// files.
    pub async fn delete_index(&self, index: &str) -> Result<()> {
        self.delete_key(&record_key(index)).await?;
        self.delete_prefix(&format!("{INDEXES_PREFIX}{index}/"))
            .await
            .map(|_| ())
    }
}

/// Checks `bytes` section by section against the manifest's checksums.
fn verify_sections(bytes: &[u8], sections: &[SectionSum]) -> std::result::Result<(), String> {
    if sections.is_empty() {
        return Ok(());
    }
    let mut at = 0usize;
    for section in sections {
        let end = usize::try_from(section.bytes)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| format!("section {} runs past the end of the file", section.name))?;
        let sum = crc32c::crc32c(&bytes[at..end]);
        if sum != section.crc32c {
            return Err(format!(
                "section {} (bytes {at}..{end}) has CRC32C {sum:#010x}, the manifest says {:#010x}",
                section.name, section.crc32c
            ));
        }
        at = end;
    }
    if at != bytes.len() {
        return Err(format!("{} bytes after the last section", bytes.len() - at));
    }
    Ok(())
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
