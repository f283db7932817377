//! Which folders a role owns, locked before any service starts (see
//! `lakehouse_shared::folder_lock`): a second server on the same files
//! refuses to start instead of overwriting the first one's.
//!
//! Each role locks only what it writes itself, so the split roles can share
//! one `--data-dir` as they always could:
//! - storage (and `all`) with no buckets file: `<data-dir>/storage.lock`,
//!   for the embedded bucket under `<data-dir>/buckets`; with a buckets
//!   file, `<folder>.lock` beside each `local` bucket's folder instead (the
//!   data folder holds nothing of storage's then);
//! - catalog (and `all`) on the embedded SQLite file:
//!   `<data-dir>/catalog.lock`; a `--catalog-url` database locks itself;
//! - ingest and vector keep nothing on local disk (their state is objects
//!   in storage, guarded by storage's lock), so they lock nothing.

use std::path::Path;

use lakehouse_shared::folder_lock::FolderLock;
use lakehouse_storage::{BackendConfig, BucketsFile};

use crate::cli::{Role, ServeArgs};

/// Takes every lock `args.role` needs; they are held until the returned
/// guards are dropped, which `serve` does only when it returns.
pub fn acquire(args: &ServeArgs) -> Result<Vec<FolderLock>, Box<dyn std::error::Error>> {
    let data_dir = args.data.data_dir.as_path();
    let mut locks = Vec::new();
    if matches!(args.role, Role::Storage | Role::All) {
        match &args.storage.buckets_config {
            None => locks.push(FolderLock::acquire(
                &data_dir.join("storage.lock"),
                data_dir,
                "the local bucket under buckets/",
            )?),
            Some(file) => {
                for folder in local_bucket_folders(&BucketsFile::load(file)?) {
                    locks.push(FolderLock::acquire(
                        &sibling_lock_file(folder),
                        folder,
                        "a local bucket",
                    )?);
                }
            }
        }
    }
    if matches!(args.role, Role::Catalog | Role::All) && args.catalog.catalog_url.is_none() {
        locks.push(FolderLock::acquire(
            &data_dir.join("catalog.lock"),
            data_dir,
            "the SQLite catalog catalog.sqlite",
        )?);
    }
    for lock in &locks {
        tracing::debug!(lock_file = %lock.path().display(), "locked");
    }
    Ok(locks)
}

/// The folders of the file's `local` buckets.
fn local_bucket_folders(file: &BucketsFile) -> impl Iterator<Item = &Path> {
    file.buckets
        .values()
        .filter_map(|bucket| match &bucket.backend {
            BackendConfig::Local { path } => Some(path.as_path()),
            BackendConfig::S3 { .. } | BackendConfig::Memory => None,
        })
}

/// `<folder>.lock` beside a bucket's folder: inside it, the lock file would
/// be an object of the bucket.
fn sibling_lock_file(folder: &Path) -> std::path::PathBuf {
    let mut name = folder
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_else(|| "bucket".into());
    name.push(".lock");
    folder.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lock_sits_beside_its_folder() {
        assert_eq!(
            sibling_lock_file(Path::new("/var/lib/lakehouse/rescue")),
            Path::new("/var/lib/lakehouse/rescue.lock")
        );
        assert_eq!(
            sibling_lock_file(Path::new("/var/lib/lakehouse/rescue/")),
            Path::new("/var/lib/lakehouse/rescue.lock")
        );
    }
}
