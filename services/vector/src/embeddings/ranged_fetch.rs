//! Ranged reads of a dataset's Parquet files through the storage service:
//! the [`StorageReader`] the Parquet decoder pulls bytes through, the
//! fetches the slices of one row group share ([`SharedRanges`]), and the
//! order in which tasks fetch ([`FetchOrder`], [`Ticket`]).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::DataFile;
use crate::error::{Error, Result};

pub(super) fn reader(store: Arc<dyn ObjectStore>, file: &DataFile) -> Result<StorageReader> {
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

/// A fetch that several readers await; errors are shared as `Arc`s.
type SharedFetch = Shared<BoxFuture<'static, std::result::Result<Bytes, Arc<object_store::Error>>>>;

/// Byte ranges fetched once for all the slices of one row group. Without
/// an offset index every slice's reader asks for the whole column chunks
/// (and skips the rows that are not its own while decoding); this makes
/// that one fetch through storage instead of one per slice. With an offset
/// index the slices ask for disjoint pages and nothing is shared.
#[derive(Default)]
pub(super) struct SharedRanges {
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
pub(super) struct StorageReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    shared: Option<Arc<SharedRanges>>,
    turn: Option<Arc<Ticket>>,
}

impl StorageReader {
    pub(super) fn sharing(mut self, shared: Arc<SharedRanges>) -> Self {
        self.shared = Some(shared);
        self
    }

    pub(super) fn in_turn(mut self, ticket: Ticket) -> Self {
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
pub(super) struct FetchOrder {
    /// How many tickets have been spent (their fetch done, or dropped).
    spent: Arc<tokio::sync::watch::Sender<usize>>,
    ahead: usize,
}

impl FetchOrder {
    pub(super) fn new(ahead: usize) -> Self {
        Self {
            spent: Arc::new(tokio::sync::watch::Sender::new(0)),
            ahead: ahead.max(1),
        }
    }

    /// The ticket of task `index`.
    pub(super) fn ticket(&self, index: usize) -> Ticket {
        Ticket {
            order: self.clone(),
            index,
        }
    }
}

/// A task's place in the fetch order; dropping it (fetch done, or the task
/// ended without fetching) lets the next task go, so none waits forever.
#[derive(Debug)]
pub(super) struct Ticket {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
