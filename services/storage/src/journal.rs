//! The error journal: every operational failure, the storage service's own
//! and those other services report, in one write-once log in the default
//! bucket under [`JOURNAL_PREFIX`]. Entries are buffered and flushed
//! periodically, and listing merges flushed and buffered entries, so a
//! failure is findable the moment it is recorded, even while the default
//! bucket itself is down.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lakehouse_shared::append_log::{AppendLog, CompactOutcome, FlushOutcome};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Where the journal lives in the default bucket.
pub const JOURNAL_PREFIX: &str = "_lakehouse/errors";

/// Buffered entries that trigger a flush before the interval is up.
const FLUSH_AT: usize = 1000;

/// One journaled failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The service that saw it.
    pub service: String,
    /// The operation that failed.
    pub operation: String,
    /// The bucket involved, or empty.
    #[serde(default)]
    pub bucket: String,
    /// The key involved, or empty.
    #[serde(default)]
    pub key: String,
    /// What went wrong.
    pub message: String,
    /// The rescue bucket that served the request after the failure.
    #[serde(default)]
    pub rescue_bucket: String,
}

/// A filter over journal entries.
#[derive(Debug, Clone, Default)]
pub struct ErrorFilter {
    /// Only this bucket, when set.
    pub bucket: Option<String>,
    /// Only this service, when set.
    pub service: Option<String>,
    /// Only at or after this time, when set.
    pub since: Option<DateTime<Utc>>,
}

impl ErrorFilter {
    fn matches(&self, record: &ErrorRecord) -> bool {
        self.bucket.as_ref().is_none_or(|b| *b == record.bucket)
            && self.service.as_ref().is_none_or(|s| *s == record.service)
            && self.since.is_none_or(|t| record.time >= t)
    }
}

/// The journal.
#[derive(Debug, Clone)]
pub struct ErrorJournal {
    log: Arc<AppendLog<ErrorRecord>>,
    flush_needed: Arc<tokio::sync::Notify>,
}

impl ErrorJournal {
    /// A journal in `store` (the default bucket's).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            log: Arc::new(AppendLog::new(store, JOURNAL_PREFIX)),
            flush_needed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Records a failure. The failed call itself is logged once by the
    /// server (by class); the journal entry is listable, so the log only
    /// notes it at DEBUG.
    pub fn record(&self, record: ErrorRecord) {
        tracing::debug!(
            service = %record.service,
            operation = %record.operation,
            bucket = %record.bucket,
            key = %record.key,
            rescue_bucket = %record.rescue_bucket,
            message = %record.message,
            "operational failure journaled"
        );
        self.log.append(record);
        if self.log.buffered_len() >= FLUSH_AT {
            self.flush_needed.notify_one();
        }
    }

    /// Up to `limit` matching entries from journal position `from` (0 for
    /// the start), flushed then buffered, oldest first, and the position of
    /// the next match if there is one. Reads only what the page needs (see
    /// `AppendLog::read_page`). When the flushed part cannot be read (the
    /// default bucket is down), the buffered entries are still returned,
    /// after an entry that says so.
    pub async fn list_page(
        &self,
        filter: &ErrorFilter,
        from: u64,
        limit: usize,
    ) -> (Vec<ErrorRecord>, Option<u64>) {
        match self
            .log
            .read_page(from, limit, |record| filter.matches(record))
            .await
        {
            Ok(page) => (page.records, page.next),
            Err(error) => {
                let mut records = vec![ErrorRecord {
                    time: Utc::now(),
                    service: "storage".to_owned(),
                    operation: "list_errors".to_owned(),
                    bucket: String::new(),
                    key: JOURNAL_PREFIX.to_owned(),
                    message: format!(
                        "flushed journal entries are unreadable, showing buffered ones only: {error}"
                    ),
                    rescue_bucket: String::new(),
                }];
                records.extend(
                    self.log
                        .buffered()
                        .into_iter()
                        .filter(|r| filter.matches(r))
                        .take(limit),
                );
                (records, None)
            }
        }
    }

    /// Writes buffered entries out now.
    pub async fn flush(&self) -> Result<Option<FlushOutcome>> {
        self.log.flush().await.map_err(Error::Journal)
    }

    /// Merges flushed parts.
    pub async fn compact(&self) -> Result<Option<CompactOutcome>> {
        self.log.compact().await.map_err(Error::Journal)
    }
}

/// Flushes every `interval`, or sooner when the buffer fills, until `stop`.
pub async fn flush_periodically(
    journal: ErrorJournal,
    interval: Duration,
    stop: CancellationToken,
) {
    let journal = &journal;
    lakehouse_shared::periodic::every(
        interval,
        &stop,
        Some(&journal.flush_needed),
        || async move {
            if let Err(error) = journal.flush().await {
                // The entries stay buffered and listable; the next round retries.
                tracing::warn!(%error, "error journal flush failed; entries stay buffered");
            }
        },
    )
    .await;
}
