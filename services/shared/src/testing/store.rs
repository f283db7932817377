//! One object-store wrapper for every crate's tests: it counts what a test
//! needs to prove (bytes served to readers, list calls and the entries they
//! pulled, writes) and can crash on the n-th write — that write and every
//! call after it fail, as they would for a process killed at that point —
//! so crash safety is tested at every step (ARCHITECTURE: a fault-injecting
//! ObjectStore wrapper). Wrappers compose, as object_store's own do.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// See the module comment.
#[derive(Debug)]
pub struct TestStore {
    inner: Arc<dyn ObjectStore>,
    read_bytes: AtomicU64,
    list_calls: AtomicUsize,
    listed: Arc<AtomicUsize>,
    writes: AtomicUsize,
    /// The write that crashes (1-based); `usize::MAX` for never.
    crash_at: usize,
}

impl TestStore {
    /// Counts calls to `inner`; never fails on its own.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self::crashing_at(inner, usize::MAX)
    }

    /// Over a fresh in-memory store.
    pub fn in_memory() -> Self {
        Self::new(Arc::new(object_store::memory::InMemory::new()))
    }

    /// Fails the `n`-th write (put, multipart upload, delete, copy;
    /// counting from 1) and every call after it, reads and lists too.
    pub fn crashing_at(inner: Arc<dyn ObjectStore>, n: usize) -> Self {
        Self {
            inner,
            read_bytes: AtomicU64::new(0),
            list_calls: AtomicUsize::new(0),
            listed: Arc::new(AtomicUsize::new(0)),
            writes: AtomicUsize::new(0),
            crash_at: n,
        }
    }

    /// The wrapped store (writes to it are neither counted nor failed).
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Bytes served to readers (whole or ranged reads; not heads) since
    /// the last take.
    pub fn take_read_bytes(&self) -> u64 {
        self.read_bytes.swap(0, Ordering::SeqCst)
    }

    /// Bytes served to readers so far.
    pub fn read_bytes(&self) -> u64 {
        self.read_bytes.load(Ordering::SeqCst)
    }

    /// List calls and the listing entries they pulled since the last take.
    pub fn take_list_counts(&self) -> (usize, usize) {
        (
            self.list_calls.swap(0, Ordering::SeqCst),
            self.listed.swap(0, Ordering::SeqCst),
        )
    }

    /// Writes attempted so far (the crashed one included).
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    fn crashed(&self) -> bool {
        self.writes.load(Ordering::SeqCst) >= self.crash_at
    }

    fn write(&self) -> object_store::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.crash_at {
            return Err(crash());
        }
        Ok(())
    }

    fn live(&self) -> object_store::Result<()> {
        if self.crashed() { Err(crash()) } else { Ok(()) }
    }

    fn counted(
        &self,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.crashed() {
            return futures::stream::once(async { Err(crash()) }).boxed();
        }
        self.list_calls.fetch_add(1, Ordering::SeqCst);
        let listed = self.listed.clone();
        stream
            .inspect(move |_| {
                listed.fetch_add(1, Ordering::SeqCst);
            })
            .boxed()
    }
}

fn crash() -> object_store::Error {
    object_store::Error::Generic {
        store: "TestStore",
        source: "injected crash".into(),
    }
}

impl fmt::Display for TestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestStore({})", self.inner)
    }
}

#[tonic::async_trait]
impl ObjectStore for TestStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.write()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.write()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.live()?;
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            self.read_bytes
                .fetch_add(result.range.end - result.range.start, Ordering::SeqCst);
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.live()?;
        let out = self.inner.get_ranges(location, ranges).await?;
        let total: usize = out.iter().map(Bytes::len).sum();
        self.read_bytes.fetch_add(total as u64, Ordering::SeqCst);
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if self.write().is_err() {
            return futures::stream::once(async { Err(crash()) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counted(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counted(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.live()?;
        self.list_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.write()?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt as _;

    use super::*;

    #[tokio::test]
    async fn counts_reads_and_crashes_at_the_nth_write_for_good() {
        let store = TestStore::crashing_at(Arc::new(object_store::memory::InMemory::new()), 3);
        let (a, b) = (Path::from("a"), Path::from("b"));
        store
            .put(&a, PutPayload::from_static(b"12345"))
            .await
            .expect("write 1");
        store
            .put(&b, PutPayload::from_static(b"xy"))
            .await
            .expect("write 2");
        store
            .get(&a)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(store.take_read_bytes(), 5);
        assert!(
            store.put(&a, PutPayload::from_static(b"z")).await.is_err(),
            "write 3 crashes"
        );
        assert!(
            store.get(&b).await.is_err(),
            "nothing works after the crash"
        );
        assert_eq!(store.writes(), 3);
        let kept = store
            .inner()
            .get(&a)
            .await
            .expect("inner")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&kept[..], b"12345", "the crashed write changed nothing");
    }
}
