//! Comparing a manifest with what storage holds, as pure functions: which
//! keys belong to a dataset, what a resync would change, and the report.
//! The I/O (listing, footer reads, the commit) is in [`crate::catalog`].

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::{DataFile, Dataset, Schema};

/// Manifest fields that differ, before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field, such as "row_count" or "schema".
    pub field: String,
    /// The manifest's value.
    pub before: String,
    /// The value the files show.
    pub after: String,
}

/// How a file differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChangeKind {
    /// In storage, missing from the manifest.
    Added,
    /// In the manifest, missing from storage (or unreadable).
    Removed,
    /// In both, with a different size or row count.
    Updated,
}

/// One file that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Object key.
    pub key: String,
    /// How.
    pub kind: FileChangeKind,
    /// The manifest's entry.
    pub before: Option<DataFile>,
    /// The entry read from storage.
    pub after: Option<DataFile>,
}

/// A file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// Object key.
    pub key: String,
    /// Why.
    pub error: String,
}

/// What a resync found for one dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// The dataset.
    pub dataset: String,
    /// Whether the manifest differed from the files.
    pub drifted: bool,
    /// Whether the manifest was updated.
    pub applied: bool,
    /// Fields that differ.
    pub field_changes: Vec<FieldChange>,
    /// Files that differ.
    pub file_changes: Vec<FileChange>,
    /// Files left out because they could not be read.
    pub problems: Vec<FileProblem>,
    /// Bytes read from storage (footers only).
    pub bytes_read: u64,
    /// The dataset's version after the resync.
    pub version: u64,
    /// Files under an ingest's folder (`datasets/<name>/<ingest-id>/`) that
    /// the manifest does not hold: parts of an ingest that never committed
    /// (killed, say). Never adopted, and not drift by themselves; the
    /// ingest's orphan sweeper removes them once that ingest is dead.
    pub uncommitted_keys: Vec<String>,
    /// Rows of manifest files that vanished or became unreadable, which
    /// applying the resync drops (also on dry runs and refusals).
    pub rows_lost: u64,
    /// How many manifest files those rows are in.
    pub files_lost: u64,
    /// Whether the resync was not applied because it would drop rows and
    /// the caller did not pass `allow_row_loss`.
    pub refused_row_loss: bool,
}

/// Whether a key listed under a dataset's prefix is one of its data files:
/// a `.parquet` object outside any `_tmp` or `_staging` folder (where
/// writers keep files that are not committed yet).
pub fn is_data_file(key: &str) -> bool {
    key.ends_with(".parquet")
        && !key
            .split('/')
            .rev()
            .skip(1)
            .any(|segment| segment == "_tmp" || segment == "_staging")
}

/// Splits a listing of dataset `name` into the files a resync may use and
/// the keys it must not adopt: files in an ingest-id folder that the
/// manifest does not hold, which only that ingest's commit could make data.
/// Files the manifest does hold there stay, whatever their folder.
pub fn split_uncommitted(dataset: &Dataset, listed: Vec<Listed>) -> (Vec<Listed>, Vec<String>) {
    let held: HashSet<&str> = dataset
        .files
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|f| f.key.as_str())
        .collect();
    let name = dataset.name.as_str();
    let (usable, uncommitted): (Vec<Listed>, Vec<Listed>) = listed.into_iter().partition(|l| {
        held.contains(l.key.as_str())
            || lakehouse_shared::ingest_id::ingest_of_key(name, &l.key).is_none()
    });
    let mut keys: Vec<String> = uncommitted.into_iter().map(|l| l.key).collect();
    keys.sort();
    (usable, keys)
}

/// Rows and files a resync would drop: manifest files it removes (vanished
/// from storage, unreadable, or with other columns). Files whose row count
/// only changes are corrections of statistics, not loss.
pub fn loss(file_changes: &[FileChange]) -> (u64, u64) {
    file_changes
        .iter()
        .filter(|c| c.kind == FileChangeKind::Removed)
        .fold((0, 0), |(rows, files), c| {
            (
                rows + c.before.as_ref().map_or(0, |f| f.row_count),
                files + 1,
            )
        })
}

/// Whether a manifest lacks statistics a resync would restore.
pub fn lacks_stats(dataset: &Dataset) -> bool {
    let files = dataset.files.as_deref().unwrap_or_default();
    !files.is_empty()
        && (dataset.schema.is_empty()
            || files.iter().any(|f| f.size_bytes == 0 || f.row_count == 0))
}

/// One object as listed by storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Entity tag; may be empty.
    pub etag: String,
}

/// Whether the listing disagrees with the manifest's files under the
/// prefix: a key only on one side, or a different size or entity tag. A
/// cheap check (no reads) that decides which datasets ResyncMissing reads.
pub fn listing_differs(dataset: &Dataset, prefix: &str, listed: &[Listed]) -> bool {
    let manifest: HashMap<&str, &DataFile> = dataset
        .files
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|f| f.key.starts_with(prefix))
        .map(|f| (f.key.as_str(), f))
        .collect();
    if manifest.len() != listed.len() {
        return true;
    }
    listed.iter().any(|l| match manifest.get(l.key.as_str()) {
        None => true,
        Some(f) => {
            f.size_bytes != l.size || (!f.etag.is_empty() && !l.etag.is_empty() && f.etag != l.etag)
        }
    })
}

/// A readable file as storage shows it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Its manifest entry as the files say.
    pub file: DataFile,
    /// Its columns.
    pub schema: Schema,
}

/// The manifest the files call for, and how it differs.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The file list, sorted by key.
    pub files: Vec<DataFile>,
    /// The schema.
    pub schema: Schema,
    /// Fields that differ.
    pub field_changes: Vec<FieldChange>,
    /// Files that differ.
    pub file_changes: Vec<FileChange>,
    /// Files left out because their columns differ from the rest.
    pub problems: Vec<FileProblem>,
}

/// Compares the manifest (with files) to the readable files.
///
/// All files of a dataset share one schema. When the files disagree, the
/// schema most files have wins (ties: the manifest's, else the one of the
/// last key, the newest ingest); the others are reported as problems and
/// left out, rather than silently mixing schemas.
pub fn compare(manifest: &Dataset, observed: Vec<Observed>) -> Outcome {
    let schema = choose_schema(manifest, &observed);
    let mut problems = Vec::new();
    let mut files: Vec<DataFile> = Vec::with_capacity(observed.len());
    for o in observed {
        match schema.as_ref() {
            Some(schema) if !fits(&o.schema, schema) => problems.push(FileProblem {
                error: format!(
                    "its columns ({}) differ from the dataset's ({schema}); left out",
                    o.schema
                ),
                key: o.file.key,
            }),
            _ => files.push(o.file),
        }
    }
    files.sort_by(|a, b| a.key.cmp(&b.key));
    let schema = schema.unwrap_or_else(|| manifest.schema.clone());

    let before: BTreeMap<&str, &DataFile> = manifest
        .files
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|f| (f.key.as_str(), f))
        .collect();
    let after: BTreeMap<&str, &DataFile> = files.iter().map(|f| (f.key.as_str(), f)).collect();
    let mut file_changes = Vec::new();
    for (key, old) in &before {
        match after.get(key) {
            None => file_changes.push(FileChange {
                key: (*key).to_owned(),
                kind: FileChangeKind::Removed,
                before: Some((*old).clone()),
                after: None,
            }),
            Some(new) if old.size_bytes != new.size_bytes || old.row_count != new.row_count => {
                file_changes.push(FileChange {
                    key: (*key).to_owned(),
                    kind: FileChangeKind::Updated,
                    before: Some((*old).clone()),
                    after: Some((*new).clone()),
                });
            }
            Some(_) => {}
        }
    }
    for (key, new) in &after {
        if !before.contains_key(key) {
            file_changes.push(FileChange {
                key: (*key).to_owned(),
                kind: FileChangeKind::Added,
                before: None,
                after: Some((*new).clone()),
            });
        }
    }
    file_changes.sort_by(|a, b| a.key.cmp(&b.key));

    let mut field_changes = Vec::new();
    let mut field = |name: &str, before: String, after: String| {
        if before != after {
            field_changes.push(FieldChange {
                field: name.to_owned(),
                before,
                after,
            });
        }
    };
    field(
        "file_count",
        manifest.file_count.to_string(),
        files.len().to_string(),
    );
    field(
        "row_count",
        manifest.row_count.to_string(),
        files.iter().map(|f| f.row_count).sum::<u64>().to_string(),
    );
    field(
        "size_bytes",
        manifest.size_bytes.to_string(),
        files.iter().map(|f| f.size_bytes).sum::<u64>().to_string(),
    );
    field("schema", manifest.schema.to_string(), schema.to_string());

    Outcome {
        files,
        schema,
        field_changes,
        file_changes,
        problems,
    }
}

/// Whether a file with columns `file` belongs to a dataset with columns
/// `dataset`: equal, or the dataset has only added nullable columns since
/// the file was written (APPEND widening; readers fill nulls).
fn fits(file: &Schema, dataset: &Schema) -> bool {
    file == dataset || file.added_nullable_columns(dataset).is_some()
}

/// The schema the most files fit (see [`fits`]), among the files' own and
/// the manifest's; ties go to the manifest's, then to the one of the last
/// key (the newest ingest). `None` without files.
fn choose_schema(manifest: &Dataset, observed: &[Observed]) -> Option<Schema> {
    let mut candidates: Vec<&Schema> = Vec::new();
    if !manifest.schema.is_empty() && !observed.is_empty() {
        candidates.push(&manifest.schema);
    }
    for o in observed {
        if !candidates.contains(&&o.schema) {
            candidates.push(&o.schema);
        }
    }
    candidates
        .into_iter()
        .map(|candidate| {
            let fitting = observed.iter().filter(|o| fits(&o.schema, candidate));
            let newest = fitting
                .clone()
                .map(|o| o.file.key.as_str())
                .max()
                .unwrap_or("");
            (candidate, fitting.count(), newest)
        })
        .max_by(|a, b| {
            a.1.cmp(&b.1)
                .then_with(|| (a.0 == &manifest.schema).cmp(&(b.0 == &manifest.schema)))
                .then_with(|| a.2.cmp(b.2))
        })
        .map(|(schema, _, _)| schema.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files() {
        assert!(is_data_file("datasets/a/i1/part-00000.parquet"));
        assert!(!is_data_file("datasets/a/i1/part-00000.csv"));
        assert!(!is_data_file("datasets/a/_tmp/part-00000.parquet"));
        assert!(!is_data_file("datasets/a/i1/_staging/x.parquet"));
        assert!(is_data_file("datasets/a/i1/_tmp.parquet"));
    }
}
