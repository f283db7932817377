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
    Commit, CommitMode, DataFile, Dataset, DatasetName, Lineage, LineageEvent, ListQuery,
    NewDataset, SourceKind, View,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Files deleted from storage.
    pub files: u64,
    /// Files not deleted, with why: a storage failure, a key outside the
    /// dataset's prefix, or (keyed by the prefix) a failed listing.
    pub left: Vec<FileProblem>,
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

    /// Applies a commit after checking that its files belong to the
    /// dataset: in the dataset's bucket (a commit that creates the dataset
    /// gets its bucket resolved first), under its prefix, and present in
    /// storage with the stated sizes. A retried commit (a request id already
    /// applied) is answered from the store before any check, so a retry
    /// gets the first answer even if its files changed since.
    pub async fn commit(&self, mut commit: Commit) -> Result<Dataset> {
        if let Some(id) = &commit.request_id
            && let Some((used_for, dataset)) = self.store.find_commit(id).await?
        {
            if used_for == commit.name.as_str() {
                return Ok(dataset);
            }
            return Err(Error::RequestIdReused {
                request_id: id.clone(),
                used_for,
                name: commit.name.as_str().to_owned(),
            });
        }
        commit.bucket = match self.store.get(&commit.name, View::Basic).await {
            Ok(current) => {
                if !commit.bucket.is_empty() && commit.bucket != current.bucket {
                    return Err(Error::BucketMismatch {
                        name: commit.name.as_str().to_owned(),
                        bucket: current.bucket,
                        given: commit.bucket,
                    });
                }
                current.bucket
            }
            Err(Error::NotFound { .. }) if commit.expected_version == Some(0) => {
                self.storage.resolve_bucket(&commit.bucket).await?
            }
            Err(error) => return Err(error),
        };
        self.check_files(&commit).await?;
        self.store.commit(commit).await
    }

    /// Every added file lies under the dataset's prefix and exists in its
    /// bucket with the stated size (HeadObject, a few at a time). The store
    /// would accept any key; these rules need storage, so they live here.
    async fn check_files(&self, commit: &Commit) -> Result<()> {
        let name = commit.name.as_str();
        let prefix = commit.name.prefix();
        for file in &commit.add_files {
            crate::model::validate_key(&file.key)?;
            if !file.key.starts_with(&prefix) {
                return Err(Error::KeyOutsideDataset {
                    name: name.to_owned(),
                    key: crate::model::shorten(&file.key),
                    prefix,
                });
            }
        }
        let bucket = commit.bucket.as_str();
        // Owned items: a closure over borrowed ones trips the compiler's
        // higher-ranked lifetime check inside the async trait method.
        let stated: Vec<(String, u64)> = commit
            .add_files
            .iter()
            .map(|f| (f.key.clone(), f.size_bytes))
            .collect();
        let mut heads = futures::stream::iter(stated)
            .map(|(key, size)| async move {
                let found = self.storage.head(bucket, &key).await;
                (key, size, found)
            })
            .buffer_unordered(self.read_concurrency);
        while let Some((key, size, found)) = heads.next().await {
            match found? {
                None => {
                    return Err(Error::FileNotFound {
                        name: name.to_owned(),
                        bucket: bucket.to_owned(),
                        key: crate::model::shorten(&key),
                    });
                }
                Some(found) if found.size != size => {
                    return Err(Error::FileSizeMismatch {
                        name: name.to_owned(),
                        key: crate::model::shorten(&key),
                        stated: size,
                        actual: found.size,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// One page of a dataset's files sorted by key, with its version.
    pub async fn list_files(
        &self,
        name: &DatasetName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(u64, Vec<DataFile>)> {
        self.store.list_files(name, after, limit).await
    }

    /// One page of a dataset's lineage events, newest first, with its
    /// version.
    pub async fn list_lineage(
        &self,
        name: &DatasetName,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(u64, Vec<(i64, LineageEvent)>)> {
        self.store.list_lineage(name, before, limit).await
    }

    /// Deletes the manifest, then (optionally) the files under the
    /// dataset's prefix: those the manifest names and everything else there.
    /// Manifest files outside the prefix (older manifests could hold another
    /// dataset's keys) are never deleted, only reported. The manifest goes
    /// first so no reader is ever pointed at deleted files; whatever could
    /// not be deleted is reported in [`Deleted::left`] and journaled.
    pub async fn delete(
        &self,
        name: &DatasetName,
        expected_version: Option<u64>,
        delete_files: bool,
    ) -> Result<Deleted> {
        let dataset = self.store.delete(name, expected_version).await?;
        if !delete_files {
            return Ok(Deleted::default());
        }
        let bucket = dataset.bucket.as_str();
        let prefix = name.prefix();
        let mut left = Vec::new();
        let (mut keys, outside): (Vec<String>, Vec<String>) = dataset
            .files
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.key)
            .partition(|key| key.starts_with(&prefix));
        for key in outside {
            left.push(FileProblem {
                key,
                error: format!(
                    "outside the dataset's prefix {prefix:?}; not deleted (it may belong to another dataset)"
                ),
            });
        }
        match self.storage.list(bucket, &prefix).await {
            Ok(listed) => keys.extend(
                listed
                    .into_iter()
                    .map(|l| l.key)
                    .filter(|key| key.starts_with(&prefix)),
            ),
            Err(error) => {
                let message = error.to_string();
                self.storage
                    .report_error("delete dataset files", bucket, &prefix, &message)
                    .await;
                left.push(FileProblem {
                    key: prefix.clone(),
                    error: format!(
                        "listing the prefix failed, so files the manifest did not name may remain: {message}"
                    ),
                });
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
        for (key, result) in results {
            match result {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(error) => {
                    let message = error.to_string();
                    self.storage
                        .report_error("delete dataset files", bucket, &key, &message)
                        .await;
                    left.push(FileProblem {
                        key,
                        error: message,
                    });
                }
            }
        }
        left.sort_by(|a, b| a.key.cmp(&b.key));
        if !left.is_empty() {
            tracing::warn!(dataset = %name, bucket, left = left.len(), "dataset deleted, but some files were left");
        }
        Ok(Deleted {
            files: deleted,
            left,
        })
    }

    /// Restores one manifest from its files' footers (see [`Self::examine`]).
    /// A resync that would drop manifest files fails with
    /// [`Error::RowLoss`] unless `allow_row_loss` (or `dry_run`).
    pub async fn resync(
        &self,
        name: &DatasetName,
        dry_run: bool,
        allow_row_loss: bool,
    ) -> Result<ResyncReport> {
        let manifest = self.store.get(name, View::Full).await?;
        let listed = self.list_data_files(&manifest).await?;
        let report = self
            .examine(manifest, listed, dry_run, allow_row_loss)
            .await?;
        if report.refused_row_loss {
            let keys = report
                .file_changes
                .iter()
                .filter(|c| c.kind == resync::FileChangeKind::Removed)
                .take(crate::error::ROW_LOSS_KEYS_SHOWN)
                .map(|c| c.key.clone())
                .collect();
            return Err(Error::RowLoss {
                name: report.dataset,
                rows: report.rows_lost,
                files: report.files_lost,
                keys,
            });
        }
        Ok(report)
    }

    /// Resyncs every dataset whose manifest lacks statistics or whose files
    /// differ from the listing (keys, sizes, entity tags). Deciding by
    /// listing keeps this cheap for healthy datasets: only drifted ones have
    /// their footers read. Datasets deleted or changed meanwhile are skipped.
    /// A dataset whose resync would drop manifest files is left unchanged
    /// (its report says `refused_row_loss`) unless `allow_row_loss`.
    pub async fn resync_missing(
        &self,
        dry_run: bool,
        allow_row_loss: bool,
    ) -> Result<MissingReport> {
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
                    && !resync::listing_differs(&manifest, &name.prefix(), &listed.0)
                {
                    continue;
                }
                match self
                    .examine(manifest, listed, dry_run, allow_row_loss)
                    .await
                {
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

    /// The data files under the dataset's prefix, as storage lists them,
    /// with the keys of uncommitted ingest parts set apart (never adopted;
    /// see [`resync::split_uncommitted`]).
    async fn list_data_files(&self, manifest: &Dataset) -> Result<(Vec<Listed>, Vec<String>)> {
        let prefix = manifest.name.prefix();
        match self.storage.list(&manifest.bucket, &prefix).await {
            Ok(listed) => Ok(resync::split_uncommitted(
                manifest,
                listed
                    .into_iter()
                    .filter(|l| resync::is_data_file(&l.key))
                    .collect(),
            )),
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
    ///
    /// Applying drops the rows of manifest files that vanished or became
    /// unreadable; without `allow_row_loss` such a resync is not applied
    /// and its report says `refused_row_loss`. With it, the loss is logged
    /// at WARN and journaled to the storage error journal.
    async fn examine(
        &self,
        manifest: Dataset,
        (mut listed, uncommitted_keys): (Vec<Listed>, Vec<String>),
        dry_run: bool,
        allow_row_loss: bool,
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
        let (rows_lost, files_lost) = resync::loss(&outcome.file_changes);
        let mut report = ResyncReport {
            dataset: manifest.name.as_str().to_owned(),
            drifted,
            applied: false,
            field_changes: outcome.field_changes,
            file_changes: outcome.file_changes,
            problems,
            bytes_read: bytes_read.load(Ordering::Relaxed),
            version: manifest.version,
            uncommitted_keys,
            rows_lost,
            files_lost,
            refused_row_loss: false,
        };
        if !report.uncommitted_keys.is_empty() {
            tracing::info!(
                dataset = %manifest.name,
                keys = report.uncommitted_keys.len(),
                "uncommitted ingest parts left out of the resync"
            );
        }
        if drifted && !dry_run && files_lost > 0 {
            if !allow_row_loss {
                tracing::info!(
                    dataset = %manifest.name,
                    rows_lost,
                    files_lost,
                    "resync would drop rows; not applied without allow_row_loss"
                );
                report.refused_row_loss = true;
                return Ok(report);
            }
            let message = format!(
                "resync with allow_row_loss dropped {files_lost} file(s) with {rows_lost} row(s) from dataset {:?} at version {}",
                manifest.name.as_str(),
                manifest.version
            );
            tracing::warn!(dataset = %manifest.name, rows_lost, files_lost, "{message}");
            for change in report
                .file_changes
                .iter()
                .filter(|c| c.kind == resync::FileChangeKind::Removed)
            {
                let rows = change.before.as_ref().map_or(0, |f| f.row_count);
                self.storage
                    .report_error(
                        "resync row loss",
                        &bucket,
                        &change.key,
                        &format!("{message}; this file held {rows} row(s)"),
                    )
                    .await;
            }
        }
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
                    request_id: None,
                })
                .await?;
            report.applied = true;
            report.version = updated.version;
        }
        Ok(report)
    }
}
