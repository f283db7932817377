//! [`BatchBuilder`]: one [`ColumnDecoder`] per column, cutting record
//! batches by rows or bytes as COPY tuples arrive.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::ColumnDecoder;
use crate::copy_binary::TupleSink;
use crate::error::Error;
use crate::pg_types::PgType;

/// Builds record batches from COPY tuples.
#[derive(Debug)]
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnDecoder>,
    rows: usize,
    bytes: usize,
    max_rows: usize,
    max_bytes: usize,
    ready: Option<RecordBatch>,
}

impl BatchBuilder {
    /// A builder of batches of at most `max_rows` rows and about
    /// `max_bytes` of field data.
    pub fn new(schema: SchemaRef, types: &[PgType], max_rows: usize, max_bytes: usize) -> Self {
        let capacity = max_rows.min(8192);
        Self {
            columns: types
                .iter()
                .map(|t| ColumnDecoder::new(t, capacity))
                .collect(),
            schema,
            rows: 0,
            bytes: 0,
            max_rows: max_rows.max(1),
            max_bytes: max_bytes.max(1),
            ready: None,
        }
    }

    /// Takes the batch completed by the last tuples, if any.
    pub fn take_ready(&mut self) -> Option<RecordBatch> {
        self.ready.take()
    }

    /// Builds a batch of what is buffered (the tail at the end of a stream).
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, Error> {
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays = self
            .columns
            .iter_mut()
            .map(ColumnDecoder::finish)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Arrow)?;
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(Error::Arrow)
    }
}

impl TupleSink for BatchBuilder {
    type Error = Error;

    fn tuple(&mut self, data: &[u8], fields: &[Option<(usize, usize)>]) -> Result<(), Error> {
        for (index, (decoder, field)) in self.columns.iter_mut().zip(fields).enumerate() {
            let value = field.map(|(start, len)| &data[start..start + len]);
            if value.is_none() && !self.schema.field(index).is_nullable() {
                return Err(Error::UnexpectedNull {
                    column: self.schema.field(index).name().clone(),
                });
            }
            decoder.append(value).map_err(|source| Error::Value {
                column: self.schema.field(index).name().clone(),
                reason: source.reason,
                hint: source.hint,
            })?;
        }
        self.rows += 1;
        self.bytes += data.len();
        if self.rows >= self.max_rows || self.bytes >= self.max_bytes {
            // A full batch must be taken before more tuples arrive; the
            // reader takes it after every chunk, and a chunk holding many
            // tuples simply makes a slightly larger batch.
            if let Some(batch) = self.flush()? {
                match &mut self.ready {
                    None => self.ready = Some(batch),
                    Some(previous) => {
                        let merged =
                            arrow::compute::concat_batches(&self.schema, [&*previous, &batch])
                                .map_err(Error::Arrow)?;
                        *previous = merged;
                    }
                }
            }
        }
        Ok(())
    }
}
