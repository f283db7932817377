//! The manifest model: what the catalog knows about a dataset, as plain
//! validated values. The gRPC adapter builds these from requests (validation
//! happens once, at the edge); the stores persist them; resync derives them
//! from Parquet footers.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::redact::redact_secrets;

/// Longest dataset name, in bytes.
pub const MAX_NAME_BYTES: usize = lakehouse_shared::names::MAX_NAME_BYTES;
/// Longest object key, in bytes (S3's limit; shared::names holds the rule).
pub const MAX_KEY_BYTES: usize = lakehouse_shared::names::MAX_KEY_BYTES;

/// A dataset name: lowercase ASCII letters, digits, `_`, `-` and `.`, at
/// most [`MAX_NAME_BYTES`]. The restricted alphabet keeps names safe as
/// object key segments (`datasets/<name>/`) and makes byte order the sort
/// order on every backend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetName(String);

impl TryFrom<String> for DatasetName {
    type Error = Error;

    fn try_from(name: String) -> Result<Self> {
        Self::parse(&name)
    }
}

impl From<DatasetName> for String {
    fn from(name: DatasetName) -> Self {
        name.0
    }
}

impl DatasetName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidName {
            name: shorten(name),
            reason,
        };
        // One rule for every service's names (shared::names).
        lakehouse_shared::names::validate("dataset", name).map_err(|e| invalid(e.reason))?;
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the dataset's files live in its bucket: `datasets/<name>/`.
    pub fn prefix(&self) -> String {
        format!("datasets/{}/", self.0)
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use lakehouse_shared::names::{is_name_byte, shorten};

/// Checks an object key given in a commit, with the rule storage serves
/// keys by (shared::names), so the catalog never records a key storage
/// would refuse to serve.
pub fn validate_key(key: &str) -> Result<()> {
    lakehouse_shared::names::validate_key(key).map_err(|e| Error::InvalidKey {
        key: e.key,
        reason: e.reason,
    })
}

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// The Arrow data type as Arrow's `Display` prints it.
    pub data_type: String,
    /// Whether the column may hold nulls.
    pub nullable: bool,
}

/// A dataset's columns in file order; empty while unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schema {
    /// The columns.
    pub columns: Vec<Column>,
}

impl Schema {
    /// A schema from columns given by a caller: names and types must be
    /// present and names unique, so "must match" comparisons mean something.
    pub fn new(columns: Vec<Column>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for (index, column) in columns.iter().enumerate() {
            if column.name.is_empty() {
                return Err(Error::InvalidSchema(format!("column {index} has no name")));
            }
            if column.data_type.trim().is_empty() {
                return Err(Error::InvalidSchema(format!(
                    "column {:?} has no data_type",
                    shorten(&column.name)
                )));
            }
            if !seen.insert(column.name.as_str()) {
                return Err(Error::InvalidSchema(format!(
                    "column {:?} appears twice",
                    shorten(&column.name)
                )));
            }
        }
        Ok(Self { columns })
    }

    /// Whether no columns are known.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The first difference from `other`, for "schema does not match" messages.
    pub fn first_difference(&self, other: &Schema) -> Option<String> {
        for (index, (a, b)) in self.columns.iter().zip(&other.columns).enumerate() {
            if a != b {
                return Some(format!(
                    "column {index} is {} but the dataset has {}",
                    describe_column(b),
                    describe_column(a)
                ));
            }
        }
        match self.columns.len().cmp(&other.columns.len()) {
            std::cmp::Ordering::Equal => None,
            _ => Some(format!(
                "{} columns given but the dataset has {}",
                other.columns.len(),
                self.columns.len()
            )),
        }
    }
}

fn describe_column(column: &Column) -> String {
    format!(
        "{:?} {}{}",
        shorten(&column.name),
        column.data_type,
        if column.nullable { "" } else { " not null" }
    )
}

impl fmt::Display for Schema {
    /// `name: type, name: type not null`: the form resync diffs show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, column) in self.columns.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", column.name, column.data_type)?;
            if !column.nullable {
                f.write_str(" not null")?;
            }
        }
        Ok(())
    }
}

/// One Parquet file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Object key in the dataset's bucket.
    pub key: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Rows in the file.
    pub row_count: u64,
    /// The backend's entity tag when registered; may be empty.
    pub etag: String,
}

/// Where a dataset's data came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Not recorded.
    #[default]
    Unspecified,
    /// A PostgreSQL table or query.
    Postgres,
    /// An uploaded file.
    File,
    /// Files registered directly.
    Manual,
    /// Restored from Parquet footers.
    Resync,
}

impl SourceKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Postgres => "postgres",
            Self::File => "file",
            Self::Manual => "manual",
            Self::Resync => "resync",
        }
    }

    /// The kind stored as `text`; unknown text reads as unspecified so an
    /// older server still reads rows a newer one wrote.
    pub fn from_stored(text: &str) -> Self {
        match text {
            "postgres" => Self::Postgres,
            "file" => Self::File,
            "manual" => Self::Manual,
            "resync" => Self::Resync,
            _ => Self::Unspecified,
        }
    }
}

/// Provenance of a dataset's current data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Kind of source.
    pub source_kind: SourceKind,
    /// The source, password redacted (see [`Lineage::redacted`]).
    pub source: String,
    /// Table or query read.
    pub query: String,
    /// The ingest that produced the data.
    pub ingest_id: String,
    /// When the ingest started.
    pub start_time: Option<DateTime<Utc>>,
    /// When the ingest finished.
    pub finish_time: Option<DateTime<Utc>>,
    /// When the source snapshot was taken.
    pub snapshot_time: Option<DateTime<Utc>>,
    /// Rows read from the source.
    pub rows: u64,
    /// Bytes written to storage.
    pub bytes: u64,
}

impl Lineage {
    /// The same lineage with any password in `source` replaced by `***`.
    /// Callers are meant to redact before sending; the catalog does it again
    /// on every write because a manifest is readable by anyone who can list
    /// datasets, and a stored password cannot be taken back.
    pub fn redacted(mut self) -> Self {
        self.source = redact_secrets(&self.source);
        self
    }
}

/// How much of a dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Everything except the file list.
    Basic,
    /// Everything, including the file list.
    Full,
}

/// A dataset's manifest. Serialisable because an idempotent commit stores
/// its response (see [`Commit::request_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Unique name.
    pub name: DatasetName,
    /// The bucket that holds the files.
    pub bucket: String,
    /// Free text.
    pub description: String,
    /// The files, sorted by key; `None` in the basic view.
    pub files: Option<Vec<DataFile>>,
    /// Number of files.
    pub file_count: u64,
    /// Columns of every file.
    pub schema: Schema,
    /// Sum of the files' row counts.
    pub row_count: u64,
    /// Sum of the files' sizes.
    pub size_bytes: u64,
    /// Where the data came from.
    pub lineage: Lineage,
    /// When the dataset was created.
    pub create_time: DateTime<Utc>,
    /// When the manifest last changed.
    pub update_time: DateTime<Utc>,
    /// Starts at 1; increments on every change.
    pub version: u64,
}

/// A dataset to register.
#[derive(Debug, Clone)]
pub struct NewDataset {
    /// Its name.
    pub name: DatasetName,
    /// Its bucket, already resolved (never empty).
    pub bucket: String,
    /// Free text.
    pub description: String,
    /// Columns, when known.
    pub schema: Schema,
}

/// How a commit changes the file list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// Add files (replacing entries with the same key) and remove keys.
    Append,
    /// The given files become the only files.
    Replace,
}

/// One versioned change of a dataset's files.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The dataset.
    pub name: DatasetName,
    /// `None`: no check. `Some(0)`: must not exist, is created.
    /// `Some(n)`: must be at version `n`.
    pub expected_version: Option<u64>,
    /// How the file list changes.
    pub mode: CommitMode,
    /// Files to add; keys unique.
    pub add_files: Vec<DataFile>,
    /// Keys to remove (append mode only).
    pub remove_keys: Vec<String>,
    /// The files' schema; `None` keeps the dataset's.
    pub schema: Option<Schema>,
    /// New provenance; `None` keeps the dataset's.
    pub lineage: Option<Lineage>,
    /// Bucket for a commit that creates the dataset (resolved, never empty);
    /// for an existing dataset, empty or the dataset's own bucket.
    pub bucket: String,
    /// The caller's id for this commit (validated): a commit whose id was
    /// already applied is not applied again; the store returns the dataset
    /// as that first commit left it. `None`: no replay protection.
    pub request_id: Option<String>,
}

/// One page request of a listing.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only names starting with this.
    pub prefix: String,
    /// Only names after this one (the previous page's last name).
    pub after: Option<String>,
    /// Most datasets returned.
    pub limit: usize,
    /// How much of each.
    pub view: View,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "hr.employees", "x_1-2", &"a".repeat(128)] {
            DatasetName::parse(ok).expect(ok);
        }
        for bad in ["", "A", "a/b", "a b", "é", "..", &"a".repeat(129)] {
            assert!(DatasetName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys() {
        validate_key("datasets/a/x.parquet").expect("valid");
        for bad in ["", "/a", "a/../b", "a//b", "a\0b"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn schema_rules() {
        let col = |n: &str| Column {
            name: n.into(),
            data_type: "Int64".into(),
            nullable: true,
        };
        assert!(Schema::new(vec![col("a"), col("a")]).is_err());
        assert!(Schema::new(vec![col("")]).is_err());
        let a = Schema::new(vec![col("a"), col("b")]).expect("valid");
        let b = Schema::new(vec![col("a")]).expect("valid");
        assert!(a.first_difference(&a).is_none());
        assert!(a.first_difference(&b).is_some());
        assert_eq!(a.to_string(), "a: Int64, b: Int64");
    }
}
