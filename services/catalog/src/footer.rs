//! Reading ONLY a Parquet file's footer through an `ObjectStore` (in the
//! service: the storage client's), with ranged reads, counting every byte.
//!
//! A footer is the last 8 bytes (metadata length + `PAR1`) preceded by the
//! Thrift metadata; parquet's `ParquetMetaDataReader` fetches exactly that,
//! starting with one suffix read of [`FOOTER_PREFETCH`] bytes, which holds
//! the whole footer of typical files, so most files cost one round trip.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::async_reader::MetadataFetch;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::model::{Column, Schema};

/// The first (suffix) read of a footer. Footers of files with a few dozen
/// columns and row groups fit; larger ones take one more read.
pub const FOOTER_PREFETCH: usize = 16 * 1024;

/// What a footer says about its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Rows in the file.
    pub row_count: u64,
    /// Columns, from the Arrow schema stored in the footer (or derived
    /// from the Parquet schema when the writer stored none).
    pub schema: Schema,
}

/// Why a footer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FooterError {
    /// The object vanished between listing and reading.
    #[error("the file vanished while it was read")]
    Vanished,
    /// Storage could not serve the bytes: not the file's fault.
    #[error("storage could not serve the file: {0}")]
    Storage(#[source] object_store::Error),
    /// The bytes are not a readable Parquet footer.
    #[error("not a readable Parquet file: {0}")]
    NotParquet(String),
}

/// Marks a storage failure inside a `ParquetError`, so it is told apart
/// from a malformed file.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct StorageFailure(object_store::Error);

/// Ranged reads of one object, adding the bytes received to a counter.
struct CountingFetch<'a> {
    store: &'a dyn ObjectStore,
    path: &'a Path,
    bytes_read: &'a AtomicU64,
}

impl MetadataFetch for CountingFetch<'_> {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let bytes = self
                .store
                .get_range(self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(StorageFailure(e))))?;
            self.bytes_read
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok(bytes)
        }
        .boxed()
    }
}

/// Reads the footer of `path`, `size` bytes long (from the listing, so no
/// extra HEAD), adding the bytes fetched to `bytes_read`.
pub async fn read_footer(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
    bytes_read: &AtomicU64,
) -> Result<Footer, FooterError> {
    let fetch = CountingFetch {
        store: store.as_ref(),
        path,
        bytes_read,
    };
    let metadata = ParquetMetaDataReader::new()
        .with_prefetch_hint(Some(FOOTER_PREFETCH))
        .load_and_finish(fetch, size)
        .await
        .map_err(classify)?;
    let file = metadata.file_metadata();
    let row_count = u64::try_from(file.num_rows())
        .map_err(|_| FooterError::NotParquet("the footer gives a negative row count".to_owned()))?;
    let arrow =
        parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
            .map_err(|e| {
                FooterError::NotParquet(format!("its schema has no Arrow equivalent: {e}"))
            })?;
    let columns = arrow
        .fields()
        .iter()
        .map(|field| Column {
            name: field.name().clone(),
            data_type: field.data_type().clone().into(),
            nullable: field.is_nullable(),
        })
        .collect();
    Ok(Footer {
        row_count,
        schema: Schema { columns },
    })
}

fn classify(error: ParquetError) -> FooterError {
    match error {
        ParquetError::External(inner) => match inner.downcast::<StorageFailure>() {
            Ok(failure) => match failure.0 {
                object_store::Error::NotFound { .. } => FooterError::Vanished,
                other => FooterError::Storage(other),
            },
            Err(inner) => FooterError::NotParquet(inner.to_string()),
        },
        other => FooterError::NotParquet(other.to_string()),
    }
}
