//! The catalog's operations, over a [`CatalogStore`] and the storage
//! service. The gRPC adapter hands these validated values.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use futures::StreamExt as _;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::footer::{FooterError, read_footer};
use crate::model::{
    Commit, CommitMode, DataFile, Dataset, DatasetName, Lineage, ListQuery, NewDataset, SourceKind,
    View,
};
use crate::resync::{self, FileProblem, Listed, Observed, ResyncReport};
use crate::storage::StorageAccess;
use crate::store::CatalogStore;

/// Datasets examined per store page in ResyncMissing.
const SCAN_PAGE: usize = 100;

/// The catalog service's logic.
#[derive(Debug)]
pub struct Catalog {
    store: Arc<dyn CatalogStore>,
    storage: StorageAccess,
    /// Footers read at once during a resync.
    read_concurrency: usize,
}

/// What DeleteDataset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Files deleted from storage.
    pub files: u64,
}

/// What ResyncMissing did.
#[derive(Debug, Clone, Default)]
pub struct MissingReport {
    /// One report per dataset that drifted or has unreadable files.
    pub reports: Vec<ResyncReport>,
    /// Datasets examined.
    pub datasets_checked: u64,
}

impl Catalog {
    /// A catalog over `store` and `storage`.
    pub fn new(
        store: Arc<dyn CatalogStore>,
        storage: StorageAccess,
        read_concurrency: usize,
    ) -> Self {
        Self {
            store,
            storage,
            read_concurrency: read_concurrency.max(1),
        }
    }

    /// The store, for shutdown.
    pub fn store(&self) -> &Arc<dyn CatalogStore> {
        &self.store
    }

    /// Registers an empty dataset (the bucket resolved through storage).
    pub async fn create(&self, mut dataset: NewDataset) -> Result<Dataset> {
        dataset.bucket = self.storage.resolve_bucket(&dataset.bucket).await?;
        self.store.create(dataset).await
    }

    /// One dataset.
    pub async fn get(&self, name: &DatasetName, view: View) -> Result<Dataset> {
        self.store.get(name, view).await
    }

    /// One page of datasets.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Dataset>> {
        self.store.list(query).await
    }

    /// Applies a commit; a commit that creates the dataset gets its bucket
    /// resolved first.
    pub async fn commit(&self, mut commit: Commit) -> Result<Dataset> {
        if commit.expected_version == Some(0) {
            commit.bucket = self.storage.resolve_bucket(&commit.bucket).await?;
        }
        self.store.commit(commit).await
    }

    /// Deletes the manifest, then (optionally) the files: the manifest's
    /// and everything else under the dataset's prefix. The manifest goes
    /// first so no reader is ever pointed at deleted files.
    pub async fn delete(
        &self,
        name: &DatasetName,
        expected_version: Option<u64>,
        delete_files: bool,
    ) -> Result<Deleted> {
        let dataset = self.store.delete(name, expected_version).await?;
        if !delete_files {
            return Ok(Deleted { files: 0 });
        }
        let bucket = dataset.bucket.as_str();
        let mut keys: Vec<String> = dataset
            .files
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.key)
            .collect();
        let mut listing_failed = false;
        match self.storage.list(bucket, &name.prefix()).await {
            Ok(listed) => keys.extend(listed.into_iter().map(|l| l.key)),
            Err(error) => {
                listing_failed = true;
                self.storage
                    .report_error(
                        "delete dataset files",
                        bucket,
                        &name.prefix(),
                        &error.to_string(),
                    )
                    .await;
            }
        }
        let keys: Vec<String> = {
            let mut seen = HashSet::new();
            keys.into_iter()
                .filter(|k| seen.insert(k.clone()))
                .collect()
        };
        let results: Vec<(String, Result<bool>)> = futures::stream::iter(keys)
            .map(|key| async move {
                let result = self.storage.delete(bucket, &key).await;
                (key, result)
            })
            .buffer_unordered(self.read_concurrency)
            .collect()
            .await;
        let mut deleted = 0;
        let mut left = 0;
        for (key, result) in results {
            match result {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(error) => {
                    left += 1;
                    self.storage
                        .report_error("delete dataset files", bucket, &key, &error.to_string())
                        .await;
                }
            }
        }
        if left > 0 || listing_failed {
            return Err(Error::FilesLeft {
                name: name.as_str().to_owned(),
                bucket: bucket.to_owned(),
                deleted,
                left,
            });
        }
        Ok(Deleted { files: deleted })
    }

    /// Restores one manifest from its files' footers (see [`Self::examine`]).
    pub async fn resync(&self, name: &DatasetName, dry_run: bool) -> Result<ResyncReport> {
        let manifest = self.store.get(name, View::Full).await?;
        let listed = self.list_data_files(&manifest).await?;
        self.examine(manifest, listed, dry_run).await
    }

    /// Resyncs every dataset whose manifest lacks statistics or whose files
    /// differ from the listing (keys, sizes, entity tags). Deciding by
    /// listing keeps this cheap for healthy datasets: only drifted ones have
    /// their footers read. Datasets deleted or changed meanwhile are skipped.
    pub async fn resync_missing(&self, dry_run: bool) -> Result<MissingReport> {
        let mut report = MissingReport::default();
        let mut after = None;
        loop {
            let page = self
                .store
                .list(&ListQuery {
                    prefix: String::new(),
                    after: after.clone(),
                    limit: SCAN_PAGE,
                    view: View::Basic,
                })
                .await?;
            let Some(last) = page.last() else {
                return Ok(report);
            };
            after = Some(last.name.as_str().to_owned());
            for basic in page {
                let name = basic.name;
                let manifest = match self.store.get(&name, View::Full).await {
                    Ok(manifest) => manifest,
                    Err(Error::NotFound { .. }) => continue,
                    Err(error) => return Err(error),
                };
                report.datasets_checked += 1;
                let listed = self.list_data_files(&manifest).await?;
                if !resync::lacks_stats(&manifest)
                    && !resync::listing_differs(&manifest, &name.prefix(), &listed)
                {
                    continue;
                }
                match self.examine(manifest, listed, dry_run).await {
                    Ok(found) if found.drifted || !found.problems.is_empty() => {
                        report.reports.push(found);
                    }
                    Ok(_) => {}
                    Err(Error::VersionConflict { .. } | Error::NotFound { .. }) => {
                        tracing::info!(dataset = %name, "dataset changed during resync; skipped");
                    }
                    Err(error) => return Err(error),
                }
            }
        }
    }

    /// The data files under the dataset's prefix, as storage lists them.
    async fn list_data_files(&self, manifest: &Dataset) -> Result<Vec<Listed>> {
        let prefix = manifest.name.prefix();
        match self.storage.list(&manifest.bucket, &prefix).await {
            Ok(listed) => Ok(listed
                .into_iter()
                .filter(|l| resync::is_data_file(&l.key))
                .collect()),
            Err(error) => {
                self.storage
                    .report_error("resync", &manifest.bucket, &prefix, &error.to_string())
                    .await;
                Err(error)
            }
        }
    }

    /// Reads the footers of the listed files (plus any manifest files kept
    /// outside the prefix that still exist), compares, and unless
    /// `dry_run` commits the result as a REPLACE at the manifest's version,
    /// so a concurrent change makes the resync fail with ABORTED instead of
    /// being overwritten. Storage trouble aborts the resync (nothing is
    /// changed); a file that is not readable Parquet is a problem, reported
    /// and journaled, and left out.
    async fn examine(
        &self,
        manifest: Dataset,
        mut listed: Vec<Listed>,
        dry_run: bool,
    ) -> Result<ResyncReport> {
        let started = Utc::now();
        let bucket = manifest.bucket.clone();
        let prefix = manifest.name.prefix();
        for file in manifest.files.as_deref().unwrap_or_default() {
            if !file.key.starts_with(&prefix)
                && let Some(found) = self.storage.head(&bucket, &file.key).await?
            {
                listed.push(found);
            }
        }

        let store = self.storage.object_store(&bucket);
        let bytes_read = AtomicU64::new(0);
        let reads: Vec<(
            Listed,
            std::result::Result<crate::footer::Footer, FooterError>,
        )> = futures::stream::iter(listed)
            .map(|l| {
                let store = &store;
                let bytes_read = &bytes_read;
                async move {
                    let footer = match Path::parse(&l.key) {
                        Ok(path) => read_footer(store, &path, l.size, bytes_read).await,
                        Err(e) => Err(FooterError::NotParquet(format!("unusable key: {e}"))),
                    };
                    (l, footer)
                }
            })
            .buffer_unordered(self.read_concurrency)
            .collect()
            .await;

        let mut observed = Vec::with_capacity(reads.len());
        let mut problems = Vec::new();
        for (listed, footer) in reads {
            match footer {
                Ok(footer) => observed.push(Observed {
                    file: DataFile {
                        key: listed.key,
                        size_bytes: listed.size,
                        row_count: footer.row_count,
                        etag: listed.etag,
                    },
                    schema: footer.schema,
                }),
                Err(FooterError::Vanished) => {}
                Err(FooterError::Storage(error)) => {
                    let message = format!("reading the footer failed: {error}");
                    self.storage
                        .report_error("resync", &bucket, &listed.key, &message)
                        .await;
                    return Err(Error::Storage {
                        operation: "read Parquet footers",
                        status: Box::new(tonic::Status::unavailable(message)),
                    });
                }
                Err(error @ FooterError::NotParquet(_)) => problems.push(FileProblem {
                    key: listed.key,
                    error: error.to_string(),
                }),
            }
        }

        let outcome = resync::compare(&manifest, observed);
        problems.extend(outcome.problems);
        problems.sort_by(|a, b| a.key.cmp(&b.key));
        for problem in &problems {
            self.storage
                .report_error("resync", &bucket, &problem.key, &problem.error)
                .await;
        }
        let drifted = !outcome.field_changes.is_empty() || !outcome.file_changes.is_empty();
        let mut report = ResyncReport {
            dataset: manifest.name.as_str().to_owned(),
            drifted,
            applied: false,
            field_changes: outcome.field_changes,
            file_changes: outcome.file_changes,
            problems,
            bytes_read: bytes_read.load(Ordering::Relaxed),
            version: manifest.version,
        };
        if drifted && !dry_run {
            let rows = outcome.files.iter().map(|f| f.row_count).sum();
            let bytes = outcome.files.iter().map(|f| f.size_bytes).sum();
            let updated = self
                .store
                .commit(Commit {
                    name: manifest.name.clone(),
                    expected_version: Some(manifest.version),
                    mode: CommitMode::Replace,
                    add_files: outcome.files,
                    remove_keys: Vec::new(),
                    // An empty schema keeps the manifest's (no readable files).
                    schema: Some(outcome.schema),
                    lineage: Some(Lineage {
                        source_kind: SourceKind::Resync,
                        source: format!("{bucket}/{prefix}"),
                        query: String::new(),
                        ingest_id: String::new(),
                        start_time: Some(started),
                        finish_time: Some(Utc::now()),
                        snapshot_time: None,
                        rows,
                        bytes,
                    }),
                    bucket: bucket.clone(),
                })
                .await?;
            report.applied = true;
            report.version = updated.version;
        }
        Ok(report)
    }
}
