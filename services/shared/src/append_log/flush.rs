//! Flushing: writing the buffered records as a new part object.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AppendLog;
use super::layout::{object_name, plan, timestamp_key};
use super::object_format::Header;
use crate::Result;

/// What a flush wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushOutcome {
    /// The new object.
    pub key: String,
    /// Records in it.
    pub records: usize,
}

impl<R> AppendLog<R>
where
    R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Writes buffered records as a new object. On failure the records go
    /// back to the front of the buffer, so nothing is lost.
    pub async fn flush(&self) -> Result<Option<FlushOutcome>> {
        let _guard = self.write_lock.lock().await;
        if self.lock_buffer().0.is_empty() {
            return Ok(None);
        }
        let known = self.lock_buffer().1.durable;
        let first = match known {
            Some(durable) => durable,
            None => {
                let total = self.durable_count().await?;
                self.lock_buffer().1.durable = Some(total);
                total
            }
        };
        let records = std::mem::take(&mut self.lock_buffer().0);
        let name = object_name(
            &timestamp_key(),
            first..first + records.len() as u64,
            "part",
        );
        match self.write_object(&name, Header::default(), &records).await {
            Ok(key) => {
                let mut state = self.lock_buffer();
                state.1.durable = Some(first + records.len() as u64);
                state.1.flushes += 1;
                Ok(Some(FlushOutcome {
                    key,
                    records: records.len(),
                }))
            }
            Err(error) => {
                let mut buffer = self.lock_buffer();
                let newer = std::mem::replace(&mut buffer.0, records);
                buffer.0.extend(newer);
                Err(error)
            }
        }
    }

    /// The number of flushed records, from the names alone when every object
    /// carries its range.
    async fn durable_count(&self) -> Result<u64> {
        let listed = self.list_objects().await?;
        match plan(&listed) {
            Some(plan) => Ok(plan.total),
            None => Ok(self.read_by_name(&listed).await?.len() as u64),
        }
    }
}
