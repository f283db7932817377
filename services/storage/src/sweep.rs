//! Leftovers of uploads that died: the half-written `<key>#<n>` temp files
//! the local backend writes before its rename, and create-only multipart
//! uploads staged under `_lakehouse/uploads/`. Neither is ever listed as an
//! object (the local backend hides `#n` files; the staging area is
//! reserved), so nothing but this sweep would remove them. A file counts as
//! a leftover once it has not been written for the grace period, so an
//! upload still in progress (its file keeps changing) is never touched.
//! Every removal is journaled.

use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;

use crate::journal::ErrorRecord;
use crate::registry::Backend;
use crate::{Bucket, Storage};

/// One removed leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its bucket.
    pub bucket: String,
    /// Its key (for a temp file: its path relative to the bucket's folder).
    pub key: String,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// Where create-only multipart uploads are staged (see `objects.rs`).
fn staging_prefix() -> Path {
    Path::from(format!("{}/uploads", crate::keys::RESERVED_PREFIX))
}

impl Storage {
    /// Removes every leftover not written for `grace`, in every bucket, and
    /// journals each removal. A bucket that cannot be read is skipped (its
    /// failure is journaled as any other); the next sweep tries again.
    pub async fn sweep_leftovers(&self, grace: Duration) -> Vec<Leftover> {
        self.sweep(grace, true).await
    }

    /// At start, removes the local backend's temp files written before
    /// this process started: no upload of this process can own them, so
    /// they are what a killed process left (a vector build's `graph.bin#1`
    /// of 100 MB, say), and they need not wait out the grace period.
    /// Staged multipart uploads wait for the periodic sweep: in a shared
    /// S3 bucket another storage process may still own them.
    pub async fn sweep_dead_temp_files(&self, started: std::time::Instant) -> Vec<Leftover> {
        self.sweep(started.elapsed(), false).await
    }

    async fn sweep(&self, grace: Duration, staged: bool) -> Vec<Leftover> {
        let mut removed = Vec::new();
        for bucket in self.registry().all() {
            if staged {
                removed.extend(self.sweep_staged_uploads(bucket, grace).await);
            }
            if let Backend::Local { root } = &bucket.backend {
                let root = root.clone();
                let found = tokio::task::spawn_blocking(move || remove_temp_files(&root, grace))
                    .await
                    .unwrap_or_default();
                removed.extend(found.into_iter().map(|(key, size_bytes)| Leftover {
                    bucket: bucket.name.clone(),
                    key,
                    size_bytes,
                }));
            }
        }
        for leftover in &removed {
            self.journal().record(ErrorRecord {
                time: Utc::now(),
                service: "storage".to_owned(),
                operation: "sweep_leftovers".to_owned(),
                bucket: leftover.bucket.clone(),
                key: leftover.key.clone(),
                message: format!(
                    "removed the leftover of an interrupted upload ({} bytes, unwritten for over {})",
                    leftover.size_bytes,
                    humantime::format_duration(grace)
                ),
                rescue_bucket: String::new(),
            });
        }
        if !removed.is_empty() {
            let bytes: u64 = removed.iter().map(|l| l.size_bytes).sum();
            tracing::info!(
                files = removed.len(),
                bytes,
                "removed leftovers of interrupted uploads"
            );
        }
        removed
    }

    async fn sweep_staged_uploads(&self, bucket: &Bucket, grace: Duration) -> Vec<Leftover> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let staged: Vec<_> = match bucket
            .store
            .list(Some(&staging_prefix()))
            .try_collect()
            .await
        {
            Ok(staged) => staged,
            Err(error) => {
                tracing::warn!(bucket = %bucket.name, %error, "staged uploads not listed; the next sweep retries");
                return Vec::new();
            }
        };
        let mut removed = Vec::new();
        for meta in staged.into_iter().filter(|m| m.last_modified < cutoff) {
            match bucket.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed.push(Leftover {
                    bucket: bucket.name.clone(),
                    key: meta.location.to_string(),
                    size_bytes: meta.size,
                }),
                Err(error) => {
                    tracing::warn!(bucket = %bucket.name, key = %meta.location, %error, "staged upload not removed; the next sweep retries");
                }
            }
        }
        removed
    }
}

/// Whether `name` is a local-backend temp file: `<name>#<digits>`.
fn is_temp_file(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(stem, n)| {
        !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Removes temp files under `root` not modified for `grace`; returns each
/// one's path relative to `root` and its size.
fn remove_temp_files(root: &FsPath, grace: Duration) -> Vec<(String, u64)> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    let mut folders: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                folders.push(path);
                continue;
            }
            if !kind.is_file() || !is_temp_file(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let idle = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if idle < grace {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    let relative = path.strip_prefix(root).unwrap_or(&path);
                    removed.push((relative.to_string_lossy().into_owned(), meta.len()));
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "temp file not removed; the next sweep retries");
                }
            }
        }
    }
    removed
}

/// Removes what a dead process left at once, then sweeps leftovers every
/// `interval` until `stop`.
pub async fn sweep_periodically(
    storage: std::sync::Arc<Storage>,
    interval: Duration,
    grace: Duration,
    stop: tokio_util::sync::CancellationToken,
    started: std::time::Instant,
) {
    storage.sweep_dead_temp_files(started).await;
    let storage = &storage;
    lakehouse_shared::periodic::every(interval, &stop, None, || async move {
        storage.sweep_leftovers(grace).await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_name_hash_digits() {
        for name in ["part-00000.parquet#1", "a#123"] {
            assert!(is_temp_file(name), "{name}");
        }
        for name in ["part-00000.parquet", "#1", "a#", "a#1b", "notes#draft"] {
            assert!(!is_temp_file(name), "{name}");
        }
    }
}
