//! Compaction: merging every object of the log into one, then deleting the
//! merged ones, safely against crashes (see the module docs of [`super`]).

use std::collections::BTreeSet;

use futures::StreamExt as _;
use object_store::path::Path;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AppendLog;
use super::layout::{object_name, plan};
use super::object_format::Header;
use crate::Result;

/// What a compaction wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactOutcome {
    /// The merged object.
    pub key: String,
    /// Objects merged (and deleted, unless deletion failed).
    pub merged_objects: usize,
    /// Records in the merged object.
    pub records: usize,
}

/// Where a compaction stops; tests use it to simulate a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactStop {
    /// Write the merged object, then delete the parts (the normal path).
    Complete,
    /// Write the merged object and stop, as a crash before the deletes would.
    AfterWrite,
}

impl<R> AppendLog<R>
where
    R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Merges every flushed object into one, then deletes the merged ones.
    pub async fn compact(&self) -> Result<Option<CompactOutcome>> {
        self.compact_until(CompactStop::Complete).await
    }

    /// [`AppendLog::compact`], stopping where `stop` says.
    pub async fn compact_until(&self, stop: CompactStop) -> Result<Option<CompactOutcome>> {
        let _guard = self.write_lock.lock().await;
        let listed = self.list_objects().await?;
        if listed.len() < 2 {
            return Ok(None);
        }
        // Under the write lock nothing of ours deletes objects meanwhile.
        let live = match plan(&listed) {
            Some(plan) => self.read_plan(&plan).await?,
            None => self.read_by_name(&listed).await?,
        };
        // Every object present is covered by the merge, including those a
        // previous crashed compaction already covered: cover them
        // transitively so the older merged object may be deleted too.
        let mut covers: BTreeSet<String> = BTreeSet::new();
        for object in &listed {
            covers.insert(object.name.clone());
            if object.merged {
                covers.extend(self.read_header(&object.meta).await?.covers);
            }
        }
        let newest = listed
            .last()
            .map(|o| o.name.split('-').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let name = object_name(&newest, 0..live.len() as u64, "merged");
        let header = Header {
            covers: covers.iter().cloned().collect(),
            ..Header::default()
        };
        let key = self.write_object(&name, header, &live).await?;
        self.lock_buffer().1.durable = Some(live.len() as u64);
        let outcome = CompactOutcome {
            key,
            merged_objects: listed.len(),
            records: live.len(),
        };
        if stop == CompactStop::AfterWrite {
            return Ok(Some(outcome));
        }
        let doomed: Vec<Path> = listed.iter().map(|o| o.meta.location.clone()).collect();
        let deletions = self
            .store
            .delete_stream(futures::stream::iter(doomed.into_iter().map(Ok)).boxed())
            .collect::<Vec<_>>()
            .await;
        for result in deletions {
            if let Err(error) = result {
                // Harmless: the merged object covers it, so readers skip it
                // and the next compaction deletes it.
                tracing::warn!(prefix = %self.prefix, %error, "compacted part not deleted");
            }
        }
        Ok(Some(outcome))
    }
}
