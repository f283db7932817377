//! Loads a dataset's vectors (and the row columns hits return) from its
//! Parquet files through the storage service into one contiguous `f32`
//! buffer. Every row group of every file is decoded as its own task, and a
//! large row group as several row slices at once (pyarrow writes 100K rows
//! as ONE row group, which one task decoded in 1.35 s against 0.75 s in two
//! slices), so a load uses all cores; rows keep catalog file order, so row
//! numbers in errors are the dataset's. Tasks fetch in row order, a few at
//! a time, so the first decode while the later ones fetch; fixed-size
//! vectors are copied straight to their place in the one buffer.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument as _;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::error::{Error, Result};

/// Rows per decoded batch: ~3 MB of 768-d vectors, which stays in cache from
/// decode to copy, and whose decoder buffers the heap reuses (25 MB batches
/// were fresh mappings, faulted in each time: loads 1.46 -> 1.18 s). The
/// task yields between batches: in `serve all` the storage calls that feed
/// the other slices run on the same workers.
const BATCH_ROWS: usize = 1_024;
/// Tasks fetching at once (see `FetchOrder`).
const FETCHES_AHEAD: usize = 2;
/// A row group of at least twice this many rows is decoded as several row
/// slices at once.
const SLICE_MIN_ROWS: u64 = 16_384;

/// One Parquet file of a dataset, as the catalog lists it.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Object key in the dataset's bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
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

/// One row group's share of the load.
struct Part {
    vectors: Vec<f32>,
    dim: Option<usize>,
    batches: Vec<RecordBatch>,
    first_row: u64,
}

/// The load's one buffer, when every file's vector column has the same
/// fixed size (FixedSizeList): each slice copies its rows straight to their
/// place, so there is no buffer per slice and nothing to gather after.
/// Slices hold the lock only to copy a checked batch (~3 MB).
#[derive(Debug, Clone)]
struct Destination {
    buffer: Arc<parking_lot::Mutex<Vec<f32>>>,
    dim: usize,
}

impl Destination {
    /// A zeroed buffer for `rows` vectors of `dim`, on huge pages; `None`
    /// when the footers' row count cannot be a buffer on this machine.
    fn new(rows: u64, dim: usize) -> Option<Self> {
        let len = usize::try_from(rows).ok()?.checked_mul(dim)?;
        len.checked_mul(std::mem::size_of::<f32>())
            .filter(|&bytes| bytes <= isize::MAX as usize)?;
        Some(Self {
            buffer: Arc::new(parking_lot::Mutex::new(huge_buffer(len))),
            dim,
        })
    }
}

/// A zeroed buffer of `len` floats for the vectors, on huge pages (builds
/// and searches read it at random). Zeroed by the allocator (calloc), so no
/// page is touched before the advice and the first writes fault huge pages
/// in; `simd::huge_zeroed` writes its zeros, a pass this buffer, about to
/// be overwritten, does not need.
fn huge_buffer(len: usize) -> Vec<f32> {
    let buffer = vec![0f32; len];
    crate::hnsw::simd::advise_huge_pages(&buffer);
    buffer
}

/// Whether `data_type` is a number a vector component can be read from.
fn is_number(data_type: &DataType) -> bool {
    data_type.is_floating() || data_type.is_integer()
}

/// The dimension every file's vector column fixes in its schema
/// (FixedSizeList of numbers, one size everywhere), if it does.
fn fixed_dimension(spec: &LoadSpec, metas: &[(DataFile, ArrowReaderMetadata)]) -> Option<usize> {
    let mut dim = None;
    for (_, meta) in metas {
        let field = meta.schema().field_with_name(&spec.vector_column).ok()?;
        let DataType::FixedSizeList(item, size) = field.data_type() else {
            return None;
        };
        let numeric = is_number(item.data_type());
        let size = usize::try_from(*size).ok().filter(|&s| s > 0 && numeric)?;
        if *dim.get_or_insert(size) != size {
            return None;
        }
    }
    dim
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

/// The slices' vectors in one buffer, on huge pages (builds and searches
/// read it at random). Copied by all cores at once: writing 300 MB of fresh
/// memory is as much page faults as copying, ~0.3 s on one core here.
fn gather(slices: Vec<Vec<f32>>) -> Vec<f32> {
    use rayon::prelude::*;
    if slices.len() == 1 {
        // One slice: its buffer is the result, no copy.
        return slices.into_iter().next().unwrap_or_default();
    }
    let mut out = huge_buffer(slices.iter().map(Vec::len).sum());
    let mut regions = Vec::with_capacity(slices.len());
    let mut rest = &mut out[..];
    for slice in &slices {
        let (head, tail) = rest.split_at_mut(slice.len());
        regions.push(head);
        rest = tail;
    }
    regions
        .into_par_iter()
        .zip(slices.into_par_iter())
        .for_each(|(region, slice)| region.copy_from_slice(&slice));
    out
}

fn reader(store: Arc<dyn ObjectStore>, file: &DataFile) -> Result<StorageReader> {
    let path = Path::parse(&file.key).map_err(|e| Error::Storage {
        operation: "read",
        key: file.key.clone(),
        source: e.into(),
    })?;
    Ok(StorageReader {
        store,
        path,
        size: file.size,
        shared: None,
        turn: None,
    })
}

/// The row slices a row group of `rows` rows is decoded in: one when it is
/// small, else up to two per core, each of at least `SLICE_MIN_ROWS`.
fn row_slices(rows: u64, cores: u64) -> Vec<Range<u64>> {
    let count = (rows / SLICE_MIN_ROWS).clamp(1, 2 * cores.max(1));
    let per = rows.div_ceil(count).max(1);
    (0..count)
        .map(|i| (i * per).min(rows)..((i + 1) * per).min(rows))
        .filter(|r| !r.is_empty())
        .collect()
}

/// A fetch that several readers await; errors are shared as `Arc`s.
type SharedFetch = Shared<BoxFuture<'static, std::result::Result<Bytes, Arc<object_store::Error>>>>;

/// Byte ranges fetched once for all the slices of one row group. Without
/// an offset index every slice's reader asks for the whole column chunks
/// (and skips the rows that are not its own while decoding); this makes
/// that one fetch through storage instead of one per slice. With an offset
/// index the slices ask for disjoint pages and nothing is shared.
#[derive(Default)]
struct SharedRanges {
    fetches: parking_lot::Mutex<HashMap<Range<u64>, SharedFetch>>,
}

impl std::fmt::Debug for SharedRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRanges")
            .field("ranges", &self.fetches.lock().len())
            .finish()
    }
}

/// Ranged reads of one Parquet file through the storage service; the size
/// comes from the catalog, so the footer costs one read.
#[derive(Debug, Clone)]
struct StorageReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    shared: Option<Arc<SharedRanges>>,
    turn: Option<Arc<Ticket>>,
}

impl StorageReader {
    fn sharing(mut self, shared: Arc<SharedRanges>) -> Self {
        self.shared = Some(shared);
        self
    }

    fn in_turn(mut self, ticket: Ticket) -> Self {
        self.turn = Some(Arc::new(ticket));
        self
    }

    /// `range`, fetched once however many slices ask for it.
    fn shared_range(&self, shared: &SharedRanges, range: Range<u64>) -> SharedFetch {
        shared
            .fetches
            .lock()
            .entry(range.clone())
            .or_insert_with(|| {
                let (store, path) = (self.store.clone(), self.path.clone());
                async move { store.get_range(&path, range).await.map_err(Arc::new) }
                    .boxed()
                    .shared()
            })
            .clone()
    }

    /// `ranges`, through the shared fetches when the reader has them.
    async fn fetch_ranges(&self, ranges: Vec<Range<u64>>) -> parquet::errors::Result<Vec<Bytes>> {
        let Some(shared) = self.shared.clone() else {
            return self
                .store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_io);
        };
        let fetches = ranges
            .into_iter()
            .map(|range| self.shared_range(&shared, range));
        futures::future::try_join_all(fetches)
            .await
            .map_err(|error| parquet::errors::ParquetError::External(Box::new(error)))
    }
}

/// Tasks fetch in task order, at most `ahead` at once. All fetching at once
/// makes every task wait for nearly all the bytes before any decodes (a
/// row group's pages arrive together); in turn, the first tasks decode
/// while the later ones fetch.
#[derive(Debug, Clone)]
struct FetchOrder {
    /// How many tickets have been spent (their fetch done, or dropped).
    spent: Arc<tokio::sync::watch::Sender<usize>>,
    ahead: usize,
}

impl FetchOrder {
    fn new(ahead: usize) -> Self {
        Self {
            spent: Arc::new(tokio::sync::watch::Sender::new(0)),
            ahead: ahead.max(1),
        }
    }

    /// The ticket of task `index`.
    fn ticket(&self, index: usize) -> Ticket {
        Ticket {
            order: self.clone(),
            index,
        }
    }
}

/// A task's place in the fetch order; dropping it (fetch done, or the task
/// ended without fetching) lets the next task go, so none waits forever.
#[derive(Debug)]
struct Ticket {
    order: FetchOrder,
    index: usize,
}

impl Ticket {
    async fn wait(&self) {
        let admitted = self.index.saturating_sub(self.order.ahead - 1);
        let mut spent = self.order.spent.subscribe();
        // The sender lives in this ticket's order, so it cannot close.
        let _ = spent.wait_for(|&n| n >= admitted).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.order.spent.send_modify(|n| *n += 1);
    }
}

fn parquet_io(error: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(error))
}

impl AsyncFileReader for StorageReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_io)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            // A task's first fetch waits for its turn (see `FetchOrder`);
            // its ticket is spent once that fetch is done.
            if let Some(turn) = self.turn.take() {
                turn.wait().await;
                let fetched = self.fetch_ranges(ranges).await;
                drop(turn);
                return fetched;
            }
            self.fetch_ranges(ranges).await
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Root column indices of the vector and row columns in a file, checking
/// they exist.
fn spec_columns(
    spec: &LoadSpec,
    meta: &ArrowReaderMetadata,
    file: &DataFile,
) -> Result<Vec<usize>> {
    let schema = meta.schema();
    std::iter::once(&spec.vector_column)
        .chain(&spec.row_columns)
        .map(|name| {
            schema.index_of(name).map_err(|_| Error::ColumnNotFound {
                dataset: format!("{} (file {})", spec.dataset, file.key),
                column: name.clone(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            })
        })
        .collect()
}

/// Rows `rows` of row group `row_group` (`whole` when that is all of it).
#[derive(Debug, Clone)]
struct RowGroupSlice {
    row_group: usize,
    rows: Range<u64>,
    whole: bool,
}

#[allow(clippy::too_many_arguments)]
async fn load_slice(
    reader: StorageReader,
    file: DataFile,
    meta: ArrowReaderMetadata,
    slice: RowGroupSlice,
    mut indices: Vec<usize>,
    spec: LoadSpec,
    first_row: u64,
    destination: Option<Destination>,
    rows_loaded: Arc<AtomicU64>,
) -> Result<Part> {
    let parquet_error = |source| Error::Parquet {
        key: file.key.clone(),
        source,
    };
    indices.sort_unstable();
    indices.dedup();
    let mask = ProjectionMask::roots(meta.parquet_schema(), indices);
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
        .with_projection(mask)
        .with_row_groups(vec![slice.row_group])
        .with_batch_size(BATCH_ROWS);
    if !slice.whole {
        builder = builder.with_row_selection(RowSelection::from(vec![
            RowSelector::skip(slice.rows.start as usize),
            RowSelector::select((slice.rows.end - slice.rows.start) as usize),
        ]));
    }
    let mut stream = builder.build().map_err(parquet_error)?;
    let mut part = Part {
        vectors: Vec::new(),
        dim: None,
        batches: Vec::new(),
        first_row,
    };
    let mut row = first_row;
    let slice_rows = (slice.rows.end - slice.rows.start) as usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(parquet_error)?;
        let Some(column) = batch.column_by_name(&spec.vector_column) else {
            return Err(Error::Task("embedding load: projected column missing"));
        };
        append_vectors(&spec, column, row, &mut part, destination.as_ref())?;
        if let (Some(dim), None) = (part.dim, &destination) {
            // The whole slice at once, once the first batch told the
            // dimensions: no regrowth (each would copy what was decoded).
            part.vectors.reserve(
                slice_rows
                    .saturating_mul(dim)
                    .saturating_sub(part.vectors.len()),
            );
        }
        let columns = spec
            .row_columns
            .iter()
            .map(|name| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or(Error::Task("embedding load: projected column missing"))
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        if let Some(ids) = columns.first() {
            check_ids(&spec, ids, row)?;
        }
        // No row columns (eval-set queries from a dataset): the batch keeps
        // only its row count.
        let options =
            arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let projected = RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::new(
                spec.row_columns
                    .iter()
                    .zip(&columns)
                    .map(|(name, c)| {
                        arrow::datatypes::Field::new(name, c.data_type().clone(), true)
                    })
                    .collect::<Vec<_>>(),
            )),
            columns,
            &options,
        )
        .map_err(|source| Error::Arrow {
            key: file.key.clone(),
            source,
        })?;
        row += batch.num_rows() as u64;
        rows_loaded.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        part.batches.push(projected);
        tokio::task::yield_now().await;
    }
    Ok(part)
}

fn bad_row(spec: &LoadSpec, row: u64, problem: impl Into<String>) -> Error {
    Error::BadRow {
        dataset: spec.dataset.clone(),
        row,
        problem: problem.into(),
    }
}

/// Appends a batch's vectors to `part`, checking every row: not null, one
/// dimension, finite components, non-zero when normalising.
fn append_vectors(
    spec: &LoadSpec,
    column: &ArrayRef,
    first_row: u64,
    part: &mut Part,
    destination: Option<&Destination>,
) -> Result<()> {
    let type_error = || Error::ColumnType {
        dataset: spec.dataset.clone(),
        column: spec.vector_column.clone(),
        found: column.data_type().to_string(),
        expected: "a list of numbers (FixedSizeList or List of Float32, or of other floats or integers, converted to Float32)",
    };
    if let Some(i) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err(bad_row(spec, first_row + i as u64, "vector is null"));
    }
    // Lists of other numbers become Float32 lists: NDJSON arrays arrive as
    // Float64 (or Int64 for whole numbers), some writers emit float64
    // embeddings. A value past f32's range becomes infinite and is refused
    // below with its row, like any non-finite component.
    let converted;
    let column = match float32_list_type(column.data_type()) {
        Some(target) => {
            converted = arrow::compute::cast(column, &target).map_err(|_| type_error())?;
            &converted
        }
        None => column,
    };
    let start = part.vectors.len();
    match column.data_type() {
        DataType::FixedSizeList(field, size) if field.data_type() == &DataType::Float32 => {
            let list = column.as_fixed_size_list();
            let size = *size as usize;
            let values = list.values().as_primitive::<Float32Type>();
            let begin = if list.is_empty() {
                0
            } else {
                list.value_offset_at(0)
            };
            let slice = values
                .values()
                .get(begin..begin + list.len() * size)
                .ok_or_else(type_error)?;
            if values.null_count() > 0 {
                return Err(bad_row(spec, first_row, "a vector has a null component"));
            }
            check_dim(spec, part, size, first_row)?;
            if let Some(destination) = destination {
                if destination.dim != size {
                    return Err(bad_row(
                        spec,
                        first_row,
                        format!(
                            "vector has {size} dimensions, the other files' schemas say {}",
                            destination.dim
                        ),
                    ));
                }
                return write_rows(spec, slice, size, first_row, destination);
            }
            part.vectors.extend_from_slice(slice);
        }
        DataType::List(field) if field.data_type() == &DataType::Float32 => {
            let list = column.as_list::<i32>();
            append_variable(
                spec,
                part,
                list.values(),
                list.offsets()
                    .windows(2)
                    .map(|w| (w[0] as usize, w[1] as usize)),
                first_row,
            )?;
        }
        DataType::LargeList(field) if field.data_type() == &DataType::Float32 => {
            let list = column.as_list::<i64>();
            append_variable(
                spec,
                part,
                list.values(),
                list.offsets()
                    .windows(2)
                    .map(|w| (w[0] as usize, w[1] as usize)),
                first_row,
            )?;
        }
        _ => return Err(type_error()),
    }
    let dim = part.dim.unwrap_or(0);
    if dim == 0 {
        return Err(bad_row(spec, first_row, "vector is empty"));
    }
    for (i, row) in part.vectors[start..].chunks_exact_mut(dim).enumerate() {
        let norm = checked_norm(spec, row, first_row + i as u64)?;
        if spec.normalize {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    Ok(())
}

/// Checks a row's components and returns the length it is divided by:
/// its norm when `spec` normalises (never 0), else 1.
fn checked_norm(spec: &LoadSpec, row: &[f32], row_number: u64) -> Result<f32> {
    if let Some(c) = row.iter().position(|v| !v.is_finite()) {
        return Err(bad_row(
            spec,
            row_number,
            format!("component {c} is {}", row[c]),
        ));
    }
    if let Some(problem) = crate::checks::magnitude_problem(row) {
        return Err(bad_row(spec, row_number, problem));
    }
    if !spec.normalize {
        return Ok(1.0);
    }
    let norm = crate::Metric::norm(row);
    if norm == 0.0 {
        return Err(bad_row(
            spec,
            row_number,
            "vector is all zeros, which has no cosine direction",
        ));
    }
    Ok(norm)
}

/// Checks `values` (whole rows of `dim`, the first at `first_row`) and
/// writes them, normalised when asked, at their place in the one buffer.
/// Checked before the lock: a bad row writes nothing, and the lock covers
/// only the copy.
fn write_rows(
    spec: &LoadSpec,
    values: &[f32],
    dim: usize,
    first_row: u64,
    destination: &Destination,
) -> Result<()> {
    let norms = values
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, row)| checked_norm(spec, row, first_row + i as u64))
        .collect::<Result<Vec<f32>>>()?;
    let start = usize::try_from(first_row)
        .ok()
        .and_then(|row| row.checked_mul(dim));
    let mut buffer = destination.buffer.lock();
    let Some(out) = start.and_then(|s| buffer.get_mut(s..s.checked_add(values.len())?)) else {
        return Err(bad_row(
            spec,
            first_row,
            "the file holds more rows than its footer counts",
        ));
    };
    for ((out, row), norm) in out
        .chunks_exact_mut(dim)
        .zip(values.chunks_exact(dim))
        .zip(norms)
    {
        if spec.normalize {
            out.iter_mut().zip(row).for_each(|(o, v)| *o = v / norm);
        } else {
            out.copy_from_slice(row);
        }
    }
    Ok(())
}

/// The Float32 list type a list of other numbers converts to; `None` when
/// the column needs no conversion (or cannot have one).
fn float32_list_type(data_type: &DataType) -> Option<DataType> {
    let numeric = |field: &arrow::datatypes::FieldRef| {
        let item = field.data_type();
        item != &DataType::Float32 && is_number(item)
    };
    let float32 = |field: &arrow::datatypes::FieldRef| {
        Arc::new(arrow::datatypes::Field::new(
            field.name(),
            DataType::Float32,
            field.is_nullable(),
        ))
    };
    match data_type {
        DataType::FixedSizeList(field, size) if numeric(field) => {
            Some(DataType::FixedSizeList(float32(field), *size))
        }
        DataType::List(field) if numeric(field) => Some(DataType::List(float32(field))),
        DataType::LargeList(field) if numeric(field) => Some(DataType::LargeList(float32(field))),
        _ => None,
    }
}

fn check_dim(spec: &LoadSpec, part: &mut Part, found: usize, row: u64) -> Result<()> {
    match part.dim {
        None => {
            part.dim = Some(found);
            Ok(())
        }
        Some(dim) if dim == found => Ok(()),
        Some(dim) => Err(bad_row(
            spec,
            row,
            format!("vector has {found} dimensions, earlier rows have {dim}"),
        )),
    }
}

fn append_variable(
    spec: &LoadSpec,
    part: &mut Part,
    values: &ArrayRef,
    ranges: impl Iterator<Item = (usize, usize)>,
    first_row: u64,
) -> Result<()> {
    let values = values.as_primitive::<Float32Type>();
    if values.null_count() > 0 {
        return Err(bad_row(spec, first_row, "a vector has a null component"));
    }
    let floats = values.values();
    for (i, (begin, end)) in ranges.enumerate() {
        check_dim(spec, part, end - begin, first_row + i as u64)?;
        let row = floats
            .get(begin..end)
            .ok_or_else(|| bad_row(spec, first_row + i as u64, "list offsets out of range"))?;
        part.vectors.extend_from_slice(row);
    }
    Ok(())
}

/// Ids must be integers or strings, never null.
fn check_ids(spec: &LoadSpec, ids: &ArrayRef, first_row: u64) -> Result<()> {
    let usable = ids.data_type().is_integer()
        || matches!(
            ids.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
    if !usable {
        return Err(Error::ColumnType {
            dataset: spec.dataset.clone(),
            column: spec.row_columns[0].clone(),
            found: ids.data_type().to_string(),
            expected: "an integer or string column for ids",
        });
    }
    if let Some(i) = (0..ids.len()).find(|&i| ids.is_null(i)) {
        return Err(bad_row(spec, first_row + i as u64, "id is null"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Builder, Int64Builder, ListBuilder};

    use super::*;

    fn spec() -> LoadSpec {
        LoadSpec {
            dataset: "docs".to_owned(),
            version: 1,
            vector_column: "embedding".to_owned(),
            row_columns: vec!["id".to_owned()],
            normalize: false,
        }
    }

    fn part() -> Part {
        Part {
            vectors: Vec::new(),
            dim: None,
            batches: Vec::new(),
            first_row: 0,
        }
    }

    /// NDJSON arrays arrive as lists of Float64 (or Int64): they load as
    /// Float32 vectors, and a value f32 cannot hold is refused with its row.
    #[test]
    fn lists_of_other_numbers_load_as_float32() {
        let mut floats = ListBuilder::new(Float64Builder::new());
        floats.values().append_slice(&[1.0, 0.5]);
        floats.append(true);
        floats.values().append_slice(&[0.25, -2.0]);
        floats.append(true);
        let column: ArrayRef = Arc::new(floats.finish());
        let mut loaded = part();
        append_vectors(&spec(), &column, 0, &mut loaded, None).expect("float64 lists load");
        assert_eq!(loaded.vectors, vec![1.0, 0.5, 0.25, -2.0]);
        assert_eq!(loaded.dim, Some(2));

        let mut ints = ListBuilder::new(Int64Builder::new());
        ints.values().append_slice(&[1, 0]);
        ints.append(true);
        let column: ArrayRef = Arc::new(ints.finish());
        let mut loaded = part();
        append_vectors(&spec(), &column, 0, &mut loaded, None).expect("int64 lists load");
        assert_eq!(loaded.vectors, vec![1.0, 0.0]);

        let mut huge = ListBuilder::new(Float64Builder::new());
        huge.values().append_slice(&[1.0, 1e300]);
        huge.append(true);
        let column: ArrayRef = Arc::new(huge.finish());
        let error =
            append_vectors(&spec(), &column, 7, &mut part(), None).expect_err("overflows f32");
        assert!(matches!(error, Error::BadRow { row: 7, .. }), "{error:?}");
    }
}

#[cfg(test)]
mod slice_tests {
    use arrow::array::{FixedSizeListArray, Float32Array, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use object_store::PutPayload;
    use object_store::memory::InMemory;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;

    #[test]
    fn large_row_groups_split_into_contiguous_slices() {
        assert_eq!(row_slices(10, 2), vec![0..10]);
        assert_eq!(row_slices(2 * SLICE_MIN_ROWS - 1, 2).len(), 1);
        let slices = row_slices(100_000, 2);
        assert_eq!(slices.len(), 4, "two per core");
        assert_eq!(slices.first().map(|r| r.start), Some(0));
        assert_eq!(slices.last().map(|r| r.end), Some(100_000));
        assert!(slices.windows(2).all(|w| w[0].end == w[1].start));
        assert!(row_slices(0, 2).is_empty());
    }

    /// Task k fetches once at most `ahead` tasks before it have not
    /// finished theirs; a ticket dropped without a fetch lets the next go.
    #[tokio::test]
    async fn tasks_fetch_in_turn() {
        let order = FetchOrder::new(1);
        let (first, second, third) = (order.ticket(0), order.ticket(1), order.ticket(2));
        async fn waits(ticket: &Ticket) -> bool {
            tokio::time::timeout(std::time::Duration::from_millis(20), ticket.wait())
                .await
                .is_ok()
        }
        assert!(waits(&first).await, "the first task goes at once");
        assert!(!waits(&second).await, "the second waits for the first");
        drop(first);
        assert!(waits(&second).await, "the first is done: the second goes");
        assert!(!waits(&third).await, "the third waits for the second");
        drop(second);
        assert!(waits(&third).await);

        let order = FetchOrder::new(2);
        let tickets: Vec<Ticket> = (0..3).map(|i| order.ticket(i)).collect();
        assert!(waits(&tickets[1]).await, "two fetch at once");
        assert!(!waits(&tickets[2]).await, "not three");
    }

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
