//! One server per folder: an exclusive lock a server holds, for as long as it
//! runs, on each folder whose files it owns (the embedded bucket, the SQLite
//! catalog, a local bucket).
//!
//! Two servers on one folder overwrite each other's files without either
//! noticing (an index built by both, a journal compacted by both), so the
//! second one must refuse to start. The lock is the operating system's
//! (`flock` on Unix, `LockFileEx` on Windows, through `File::try_lock`):
//! the kernel drops it when the process ends, however it ends, so a crash
//! leaves no stale lock to clear by hand. The lock file also holds the
//! holder's pid, for the refusal to name; after the holder ends the file
//! stays with an old pid in it, which means nothing while nobody holds the
//! lock, and the next server overwrites it. The file is never deleted:
//! unlinking a lock file lets a third process lock a new file of the same
//! name while the second still holds the old one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A held lock; released when dropped (at the latest when the process ends).
#[derive(Debug)]
pub struct FolderLock {
    /// Kept open: closing the file releases the lock.
    _file: File,
    /// The lock file.
    path: PathBuf,
}

impl FolderLock {
    /// Locks `lock_file` (created, with its parent folders, when missing),
    /// which stands for `folder` and the `what` a server keeps there ("the
    /// local bucket", "the SQLite catalog"), and writes this process's pid
    /// into it. When another process holds it, fails with
    /// [`Error::FolderInUse`] naming the folder and that process's pid.
    pub fn acquire(lock_file: &Path, folder: &Path, what: &str) -> Result<Self> {
        let io_error = |source| Error::LockFolder {
            lock_file: lock_file.to_owned(),
            source,
        };
        if let Some(parent) = lock_file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        // Not truncated on open: while another process holds the lock, the
        // file holds its pid, which the refusal reads.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_file)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::FolderInUse {
                    folder: folder.to_owned(),
                    what: what.to_owned(),
                    pid: holder_pid(&mut file),
                    lock_file: lock_file.to_owned(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(io_error)?;
        Ok(Self {
            _file: file,
            path: lock_file.to_owned(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid the holder wrote; `None` when it has not written it yet (it
/// writes right after it locks) or the file holds something else.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_folder_and_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock_file = dir.path().join("data").join("storage.lock");
        let folder = dir.path().join("data");
        let held = FolderLock::acquire(&lock_file, &folder, "the local bucket").expect("first");
        assert_eq!(
            std::fs::read_to_string(held.path()).expect("read").trim(),
            std::process::id().to_string(),
            "the holder's pid is in the file"
        );

        // A second open file description of the same file conflicts even in
        // the same process, as a second server would.
        let error = FolderLock::acquire(&lock_file, &folder, "the local bucket")
            .expect_err("the folder is locked");
        let text = error.to_string();
        assert!(matches!(
            error,
            Error::FolderInUse { pid: Some(pid), .. } if pid == std::process::id()
        ));
        assert!(text.contains(&folder.display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );

        // Released on drop: the next server starts, and the file is kept.
        drop(held);
        let again = FolderLock::acquire(&lock_file, &folder, "the local bucket").expect("again");
        assert!(again.path().exists());
    }
}
