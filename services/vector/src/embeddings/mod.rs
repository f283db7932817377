//! Loads a dataset's vectors (and the row columns hits return) from its
//! Parquet files through the storage service into one contiguous `f32`
//! buffer. Every row group of every file is decoded as its own task, and a
//! large row group as several row slices at once (pyarrow writes 100K rows
//! as ONE row group, which one task decoded in 1.35 s against 0.75 s in two
//! slices), so a load uses all cores; rows keep catalog file order, so row
//! numbers in errors are the dataset's. Tasks fetch in row order, a few at
//! a time, so the first decode while the later ones fetch; fixed-size
//! vectors are copied straight to their place in the one buffer.
//!
//! The jobs live in submodules: `ranged_fetch` (Parquet bytes through
//! storage, in fetch order), `row_slicing` (which row slices a row group
//! loads in), `decode` (a slice's Arrow columns to `f32` rows),
//! `validation` (ids, nulls, dimensions, finite values, norms) and
//! `vector_buffer` (the one vector buffer, on huge pages); here are the
//! public types and `load`, which runs the slices and assembles the result.

mod decode;
mod ranged_fetch;
mod row_slicing;
mod validation;
mod vector_buffer;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;
use tracing::Instrument as _;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::PageIndexPolicy;

use crate::error::{Error, Result};
use decode::load_slice;
use ranged_fetch::{FetchOrder, SharedRanges, reader};
use row_slicing::{RowGroupSlice, row_slices};
use validation::spec_columns;
use vector_buffer::{Destination, fixed_dimension, gather};

/// Tasks fetching at once (see `FetchOrder`).
const FETCHES_AHEAD: usize = 2;

/// One Parquet file of a dataset, as the catalog lists it.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Object key in the dataset's bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

impl DataFile {
    /// The files of a catalog manifest, in its order (row numbers in
    /// errors count across them in this order).
    pub fn of(dataset: &lakehouse_proto::catalog::v1::Dataset) -> Vec<Self> {
        dataset
            .files
            .iter()
            .map(|f| Self {
                key: f.key.clone(),
                size: f.size_bytes,
            })
            .collect()
    }
}

/// What to read: the vector column, and the row columns kept for hits (id
/// first, then text and payload columns).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoadSpec {
    /// The dataset.
    pub dataset: String,
    /// Its catalog version.
    pub version: u64,
    /// The vector column.
    pub vector_column: String,
    /// Id column, then text and payload columns.
    pub row_columns: Vec<String>,
    /// Normalise every vector to unit length (cosine).
    pub normalize: bool,
}

/// A dataset's vectors in one buffer, with their row columns.
#[derive(Debug)]
pub struct Embeddings {
    /// What was loaded.
    pub spec: LoadSpec,
    /// Dimensions per vector.
    pub dim: usize,
    /// `rows * dim` floats, row `i` at `i * dim`.
    pub vectors: Arc<Vec<f32>>,
    /// The row columns, one row per vector.
    pub rows: RecordBatch,
    /// How long the load took.
    pub load_ms: u64,
    /// When it finished.
    pub load_time: DateTime<Utc>,
}

impl Embeddings {
    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }

    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.rows.num_rows() == 0
    }

    /// Bytes held, from the real allocations.
    pub fn memory_bytes(&self) -> u64 {
        (self.vectors.capacity() * 4 + self.rows.get_array_memory_size()) as u64
    }

    /// Whether something besides this entry holds its vectors (a graph
    /// built on them): dropping the entry would then free nothing.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.vectors) > 1
    }
}

/// Loads `files` per `spec`; `rows_loaded` counts progress.
pub async fn load(
    store: Arc<dyn ObjectStore>,
    files: &[DataFile],
    spec: &LoadSpec,
    rows_loaded: Arc<AtomicU64>,
) -> Result<Embeddings> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    // Footers first (one ranged read each), to number rows and split work.
    let metas = futures::stream::iter(files.iter().cloned())
        .map(|file| {
            let store = store.clone();
            async move {
                let mut reader = reader(store, &file)?;
                let parquet_error = |source| Error::Parquet {
                    key: file.key.clone(),
                    source,
                };
                let mut meta = ArrowReaderMetadata::load_async(&mut reader, Default::default())
                    .await
                    .map_err(parquet_error)?;
                let sliced = meta
                    .metadata()
                    .row_groups()
                    .iter()
                    .any(|group| row_slices(group.num_rows().max(0) as u64, cores).len() > 1);
                if sliced {
                    // The offset index, where the writer kept one (parquet-rs
                    // does, pyarrow does not by default), lets each row slice
                    // fetch only its own pages. Only files with a row group
                    // large enough to slice pay for reading it.
                    let options =
                        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
                    meta = ArrowReaderMetadata::load_async(&mut reader, options)
                        .await
                        .map_err(parquet_error)?;
                }
                Ok::<_, Error>((file, meta))
            }
        })
        .buffered(16)
        .try_collect::<Vec<_>>()
        .await?;

    let footer_rows: u64 = metas
        .iter()
        .flat_map(|(_, meta)| meta.metadata().row_groups())
        .map(|group| group.num_rows().max(0) as u64)
        .sum();
    let destination =
        fixed_dimension(spec, &metas).and_then(|dim| Destination::new(footer_rows, dim));
    let order = FetchOrder::new(FETCHES_AHEAD);
    let mut tasks = Vec::new();
    let mut first_row = 0u64;
    let mut schema = None;
    for (file, meta) in metas {
        let indices = spec_columns(spec, &meta, &file)?;
        for row_group in 0..meta.metadata().num_row_groups() {
            let rows = meta.metadata().row_group(row_group).num_rows().max(0) as u64;
            // The slices of one row group share their fetches (see
            // `SharedRanges`).
            let shared = Arc::new(SharedRanges::default());
            for slice in row_slices(rows, cores) {
                let task = tokio::spawn(
                    load_slice(
                        reader(store.clone(), &file)?
                            .sharing(shared.clone())
                            .in_turn(order.ticket(tasks.len())),
                        file.clone(),
                        meta.clone(),
                        RowGroupSlice {
                            row_group,
                            rows: slice.clone(),
                            whole: slice.end - slice.start == rows,
                        },
                        indices.clone(),
                        spec.clone(),
                        first_row + slice.start,
                        destination.clone(),
                        rows_loaded.clone(),
                    )
                    .in_current_span(),
                );
                tasks.push(task);
            }
            first_row += rows;
        }
        schema.get_or_insert_with(|| meta.schema().clone());
    }
    let slices = tasks.len();
    let mut parts = Vec::with_capacity(tasks.len());
    for i in 0..tasks.len() {
        let outcome = (&mut tasks[i])
            .await
            .map_err(|_| Error::Task("embedding load"))
            .and_then(|part| part);
        match outcome {
            Ok(part) => parts.push(part),
            Err(error) => {
                // The first failing slice in row order names the error; the
                // slices after it stop instead of decoding for nothing.
                tasks[i + 1..].iter().for_each(|task| task.abort());
                return Err(error);
            }
        }
    }
    let decoded = started.elapsed();

    let total_rows = first_row;
    if total_rows == 0 {
        return Err(Error::EmptyDataset {
            dataset: spec.dataset.clone(),
        });
    }
    let mut dim = None;
    for part in &parts {
        match (dim, part.dim) {
            (None, found) => dim = found,
            (Some(d), Some(found)) if found != d => {
                return Err(Error::BadRow {
                    dataset: spec.dataset.clone(),
                    row: part.first_row,
                    problem: format!("vector has {found} dimensions, earlier rows have {d}"),
                });
            }
            _ => {}
        }
    }
    let dim = dim.unwrap_or(0);
    let mut batches = Vec::new();
    let mut slices_vectors = Vec::with_capacity(parts.len());
    for part in parts {
        slices_vectors.push(part.vectors);
        batches.extend(part.batches);
    }
    let vectors = match destination {
        // Every task has finished, so the buffer is no longer shared.
        Some(destination) => Arc::try_unwrap(destination.buffer)
            .map_err(|_| Error::Task("embedding load: buffer still shared"))?
            .into_inner(),
        None => tokio::task::spawn_blocking(move || gather(slices_vectors))
            .await
            .map_err(|_| Error::Task("embedding gather"))?,
    };
    let rows = match batches.first() {
        Some(first) => {
            arrow::compute::concat_batches(&first.schema(), &batches).map_err(|source| {
                Error::Arrow {
                    key: spec.dataset.clone(),
                    source,
                }
            })?
        }
        None => {
            return Err(Error::EmptyDataset {
                dataset: spec.dataset.clone(),
            });
        }
    };
    // Where a load's time goes: fetching and decoding (in parallel), then
    // gathering the slices into the one buffer.
    tracing::info!(
        dataset = %spec.dataset,
        version = spec.version,
        rows = total_rows,
        dim,
        files = files.len(),
        slices,
        fetch_decode_ms = decoded.as_millis() as u64,
        gather_ms = (started.elapsed() - decoded).as_millis() as u64,
        "embeddings loaded"
    );
    Ok(Embeddings {
        spec: spec.clone(),
        dim,
        vectors: Arc::new(vectors),
        rows,
        load_ms: started.elapsed().as_millis() as u64,
        load_time: Utc::now(),
    })
}

#[cfg(test)]
mod slice_tests {
    use std::sync::atomic::Ordering;

    use arrow::array::{AsArray, FixedSizeListArray, Float32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStoreExt as _, PutPayload};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::row_slicing::SLICE_MIN_ROWS;
    use super::*;

    /// One row group of ~49K rows (pyarrow's shape for a small dataset),
    /// written with and without an offset index: sliced, it loads every row
    /// once, in file order, ids beside their own vectors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_row_group_loads_in_slices_in_row_order() {
        let rows = 3 * SLICE_MIN_ROWS as usize + 123;
        let dim = 4;
        let item = Arc::new(Field::new_list_field(DataType::Float32, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "embedding",
                DataType::FixedSizeList(item.clone(), dim as i32),
                false,
            ),
        ]));
        let values: Vec<f32> = (0..rows * dim).map(|v| v as f32).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(FixedSizeListArray::new(
                    item,
                    dim as i32,
                    Arc::new(Float32Array::from(values.clone())),
                    None,
                )),
            ],
        )
        .expect("batch");
        for offset_index in [true, false] {
            let props = WriterProperties::builder()
                .set_offset_index_disabled(!offset_index)
                // Small pages, so slices start mid-chunk on page bounds.
                .set_data_page_row_count_limit(1_000)
                .build();
            let mut bytes = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut bytes, schema.clone(), Some(props)).expect("writer");
            writer.write(&batch).expect("write");
            writer.close().expect("close");
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let size = bytes.len() as u64;
            store
                .put(&Path::from("part-0.parquet"), PutPayload::from(bytes))
                .await
                .expect("put");
            let files = [DataFile {
                key: "part-0.parquet".to_owned(),
                size,
            }];
            let spec = LoadSpec {
                dataset: "docs".to_owned(),
                version: 1,
                vector_column: "embedding".to_owned(),
                row_columns: vec!["id".to_owned()],
                normalize: false,
            };
            let counted = Arc::new(AtomicU64::new(0));
            let loaded = load(store, &files, &spec, counted.clone())
                .await
                .expect("load");
            assert_eq!(counted.load(Ordering::Relaxed), rows as u64);
            assert_eq!(loaded.dim, dim);
            assert_eq!(*loaded.vectors, values, "offset index {offset_index}");
            let ids = loaded
                .rows
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>();
            assert!(
                ids.values().iter().copied().eq(0..rows as i64),
                "ids in file order (offset index {offset_index})"
            );
        }
    }
}
