//! The trial journal: every measured trial, durable before it is reported,
//! on the shared write-once append log under `trials/<index>/` (NDJSON: a
//! header line, then one trial a line). The journal is read once per index
//! and kept in memory; this process is its only writer.

use std::collections::HashMap;
use std::sync::Arc;

use lakehouse_shared::append_log::AppendLog;
use object_store::ObjectStore;
use tokio::sync::{Mutex, OnceCell};

use super::record::TrialRecord;
use crate::error::{Error, Result};

/// Where the trials of `index` live.
pub fn journal_prefix(index: &str) -> String {
    format!("trials/{index}")
}

/// Parts past this many are merged into one, so a read stays a few objects.
const COMPACT_AFTER_PARTS: usize = 32;

#[derive(Debug)]
struct IndexJournal {
    log: AppendLog<TrialRecord>,
    trials: OnceCell<Mutex<Loaded>>,
}

#[derive(Debug, Default)]
struct Loaded {
    trials: Vec<TrialRecord>,
    /// Appended, not yet durable (a flush failed); the log retries them.
    pending: Vec<TrialRecord>,
    parts_since_compaction: usize,
}

/// Trials of every index.
#[derive(Debug)]
pub struct TrialJournal {
    store: Arc<dyn ObjectStore>,
    indexes: parking_lot::Mutex<HashMap<String, Arc<IndexJournal>>>,
}

impl TrialJournal {
    /// Over `store` (the default bucket).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            indexes: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn journal(&self, index: &str) -> Arc<IndexJournal> {
        self.indexes
            .lock()
            .entry(index.to_owned())
            .or_insert_with(|| {
                Arc::new(IndexJournal {
                    log: AppendLog::new(self.store.clone(), journal_prefix(index)),
                    trials: OnceCell::new(),
                })
            })
            .clone()
    }

    async fn loaded<'a>(&self, journal: &'a IndexJournal) -> Result<&'a Mutex<Loaded>> {
        journal
            .trials
            .get_or_try_init(|| async {
                let trials = journal.log.read_durable().await.map_err(Error::Journal)?;
                Ok::<_, Error>(Mutex::new(Loaded {
                    trials,
                    pending: Vec::new(),
                    parts_since_compaction: COMPACT_AFTER_PARTS / 2,
                }))
            })
            .await
    }

    /// Makes `trials` durable, then visible to readers.
    pub async fn append(&self, index: &str, trials: &[TrialRecord]) -> Result<()> {
        if trials.is_empty() {
            return Ok(());
        }
        let journal = self.journal(index);
        let loaded = self.loaded(&journal).await?;
        let mut loaded = loaded.lock().await;
        for trial in trials {
            journal.log.append(trial.clone());
        }
        if let Err(error) = journal.log.flush().await {
            // The log keeps the records for its next flush: a measured trial
            // is never lost, it becomes visible with the next append.
            loaded.pending.extend_from_slice(trials);
            return Err(Error::Journal(error));
        }
        let pending = std::mem::take(&mut loaded.pending);
        loaded.trials.extend(pending);
        loaded.trials.extend_from_slice(trials);
        loaded.parts_since_compaction += 1;
        if loaded.parts_since_compaction >= COMPACT_AFTER_PARTS {
            match journal.log.compact().await {
                Ok(_) => loaded.parts_since_compaction = 0,
                Err(error) => {
                    tracing::warn!(index, %error, "cannot compact the trial journal")
                }
            }
        }
        Ok(())
    }

    /// Every trial of `index`, in the order measured.
    pub async fn trials(&self, index: &str) -> Result<Vec<TrialRecord>> {
        let journal = self.journal(index);
        let loaded = self.loaded(&journal).await?;
        Ok(loaded.lock().await.trials.clone())
    }
}
