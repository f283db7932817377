//! Record batches → Parquet parts in storage.
//!
//! The encoder runs on a blocking thread (Parquet encoding and zstd are CPU
//! work that must not stall the async runtime) and receives batches over a
//! bounded channel, so reading and encoding overlap while memory stays
//! bounded: the channel's batches, the row group being encoded (flushed
//! early past `row_group_bytes`), and one upload chunk in flight.
//!
//! Each part is streamed to storage as a multipart upload while it is being
//! written; nothing becomes visible until the upload completes, and an
//! aborted upload leaves nothing behind. Parts rotate once they reach
//! `part_bytes`. Keys are `datasets/<name>/<ingest-id>/part-NNNNN.parquet`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::registry::Progress;

/// How parts are encoded and cut.
#[derive(Debug, Clone)]
pub struct PartOptions {
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Encoded bytes after which a row group is flushed early.
    pub row_group_bytes: usize,
    /// Bytes after which a part is closed and the next one started.
    pub part_bytes: u64,
    /// Bytes per upload call to storage.
    pub upload_chunk_bytes: usize,
    /// zstd level.
    pub zstd_level: i32,
}

/// A part that was uploaded completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPart {
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Rows.
    pub rows: u64,
    /// Storage's entity tag.
    pub etag: String,
}

/// The encoder's task; it yields the parts written.
pub type EncoderTask = tokio::task::JoinHandle<Result<Vec<WrittenPart>>>;

/// Starts the encoder. Send batches to the returned sender and drop it to
/// finish; the handle yields the parts. On error or cancellation the open
/// upload is aborted; finished parts are the caller's to delete.
pub fn start(
    store: Arc<dyn ObjectStore>,
    prefix: String,
    schema: SchemaRef,
    options: PartOptions,
    queue: usize,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<(mpsc::Sender<RecordBatch>, EncoderTask)> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(options.zstd_level).map_err(Error::Parquet)?,
        ))
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(options.row_group_bytes.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("lakehouse-ingest {}", env!("CARGO_PKG_VERSION")))
        .build();
    let (sender, receiver) = mpsc::channel(queue.max(1));
    let handle = Handle::current();
    let encoder = Encoder {
        handle,
        store,
        prefix,
        schema,
        options,
        properties,
        progress,
        cancel,
        parts: Vec::new(),
        finished_bytes: 0,
        rows_seen: 0,
    };
    // The encoder thread uploads parts; entering the caller's span there
    // keeps those uploads in the ingest's trace.
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || span.in_scope(|| encoder.run(receiver)));
    let task = tokio::spawn(async move {
        task.await.map_err(|e| Error::TaskFailed {
            task: "parquet encoder",
            reason: e.to_string(),
        })?
    });
    Ok((sender, task))
}

struct Encoder {
    handle: Handle,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    schema: SchemaRef,
    options: PartOptions,
    properties: WriterProperties,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    parts: Vec<WrittenPart>,
    finished_bytes: u64,
    /// Rows received so far, to name a bad row.
    rows_seen: u64,
}

struct OpenPart {
    key: String,
    writer: ArrowWriter<UploadSink>,
    rows: u64,
    failure: Arc<Mutex<Option<object_store::Error>>>,
}

impl Encoder {
    fn run(mut self, mut receiver: mpsc::Receiver<RecordBatch>) -> Result<Vec<WrittenPart>> {
        let mut open: Option<OpenPart> = None;
        let result = self.encode(&mut receiver, &mut open);
        match result {
            Ok(()) => Ok(self.parts),
            Err(error) => {
                if let Some(part) = open {
                    self.abort(part);
                }
                Err(error)
            }
        }
    }

    fn encode(
        &mut self,
        receiver: &mut mpsc::Receiver<RecordBatch>,
        open: &mut Option<OpenPart>,
    ) -> Result<()> {
        while let Some(batch) = receiver.blocking_recv() {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = self.conform(batch)?;
            if open.is_none() {
                *open = Some(self.open_part()?);
            }
            let Some(part) = open.as_mut() else {
                continue;
            };
            let written = part.writer.write(&batch);
            check(written, &part.failure, &part.key)?;
            part.rows += batch.num_rows() as u64;
            if part.writer.in_progress_size() >= self.options.row_group_bytes {
                let flushed = part.writer.flush();
                check(flushed, &part.failure, &part.key)?;
            }
            let size = part.writer.bytes_written() as u64;
            self.progress.set_bytes(self.finished_bytes + size);
            if size + part.writer.in_progress_size() as u64 >= self.options.part_bytes
                && let Some(part) = open.take()
            {
                self.close_part(part)?;
            }
        }
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if let Some(part) = open.take() {
            self.close_part(part)?;
        }
        Ok(())
    }

    /// The batch under the declared schema, which may hold a column NOT
    /// NULL that the source reads as nullable (an APPEND takes on the
    /// dataset's nullability): a null there is refused, naming the row.
    fn conform(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let seen = self.rows_seen;
        self.rows_seen += batch.num_rows() as u64;
        if Arc::ptr_eq(batch.schema_ref(), &self.schema)
            || batch.schema_ref().fields() == self.schema.fields()
        {
            return Ok(batch);
        }
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            if !field.is_nullable()
                && column.null_count() > 0
                && let Some(index) = (0..column.len()).find(|&i| column.is_null(i))
            {
                return Err(Error::NullInNotNullColumn {
                    column: field.name().clone(),
                    row: seen + index as u64 + 1,
                });
            }
        }
        RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(Error::Arrow)
    }

    fn open_part(&mut self) -> Result<OpenPart> {
        let key = format!("{}part-{:05}.parquet", self.prefix, self.parts.len());
        let path = Path::from(key.as_str());
        let upload = self
            .handle
            .block_on(self.store.put_multipart(&path))
            .map_err(|source| Error::Storage {
                operation: "upload",
                key: key.clone(),
                source: Box::new(source),
            })?;
        let failure = Arc::new(Mutex::new(None));
        let sink = UploadSink {
            handle: self.handle.clone(),
            upload,
            buffer: Vec::with_capacity(self.options.upload_chunk_bytes),
            chunk: self.options.upload_chunk_bytes.max(64 * 1024),
            total: 0,
            failure: failure.clone(),
        };
        let writer = ArrowWriter::try_new(sink, self.schema.clone(), Some(self.properties.clone()))
            .map_err(Error::Parquet)?;
        Ok(OpenPart {
            key,
            writer,
            rows: 0,
            failure,
        })
    }

    fn close_part(&mut self, part: OpenPart) -> Result<()> {
        let OpenPart {
            key,
            writer,
            rows,
            failure,
        } = part;
        // Writes the footer. On failure the sink, and with it the upload, is
        // dropped, which aborts the upload: storage writes nothing.
        let sink = check(writer.into_inner(), &failure, &key)?;
        let (size, etag) = sink.complete().map_err(|source| Error::Storage {
            operation: "upload",
            key: key.clone(),
            source: Box::new(source),
        })?;
        self.finished_bytes += size;
        self.progress.set_bytes(self.finished_bytes);
        self.progress.add_part();
        tracing::debug!(%key, size, rows, "part written");
        self.parts.push(WrittenPart {
            key,
            size,
            rows,
            etag,
        });
        Ok(())
    }

    fn abort(&self, mut part: OpenPart) {
        // Abort explicitly so storage has discarded the upload when this
        // returns (dropping it would abort too, without waiting).
        let upload = &mut part.writer.inner_mut().upload;
        if let Err(error) = self.handle.block_on(upload.abort()) {
            tracing::warn!(key = %part.key, %error, "aborting a part upload failed");
        }
    }
}

/// Prefers the storage failure recorded by the sink over parquet's wrapper.
fn check<T>(
    result: parquet::errors::Result<T>,
    failure: &Mutex<Option<object_store::Error>>,
    key: &str,
) -> Result<T> {
    result.map_err(|error| {
        let stored = failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match stored {
            Some(source) => Error::Storage {
                operation: "upload",
                key: key.to_owned(),
                source: Box::new(source),
            },
            None => Error::Parquet(error),
        }
    })
}

/// A `Write` that streams into a multipart upload in chunks.
struct UploadSink {
    handle: Handle,
    upload: Box<dyn MultipartUpload>,
    buffer: Vec<u8>,
    chunk: usize,
    total: u64,
    failure: Arc<Mutex<Option<object_store::Error>>>,
}

impl UploadSink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.chunk));
        let sent = self
            .handle
            .block_on(self.upload.put_part(PutPayload::from(data)));
        sent.map_err(|error| {
            *self
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
            std::io::Error::other("storage upload failed")
        })
    }

    /// Sends the rest and completes the upload: size and etag.
    fn complete(mut self) -> object_store::Result<(u64, String)> {
        if let Err(error) = self.send() {
            let stored = self
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            return Err(stored.unwrap_or(object_store::Error::Generic {
                store: "LakehouseStorage",
                source: Box::new(error),
            }));
        }
        let result = self.handle.block_on(self.upload.complete())?;
        Ok((self.total, result.e_tag.unwrap_or_default()))
    }
}

impl Write for UploadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        self.total += buf.len() as u64;
        if self.buffer.len() >= self.chunk {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Parts go out in full chunks; the rest goes with complete().
        Ok(())
    }
}
