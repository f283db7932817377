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

/// A column's Arrow data type, compared structurally.
///
/// Stored as Arrow's own serde form (the `serde` feature of arrow-schema)
/// beside Arrow's printed text, and read from either: rows written before
/// the structured form (text only) and text given by clients are parsed
/// with Arrow's `FromStr`, which reads the forms `Display` printed in
/// earlier Arrow versions too. So an Arrow upgrade that changes the printed
/// text neither breaks APPEND nor makes every resync report drift.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnType(pub arrow_schema::DataType);

impl ColumnType {
    /// Parses Arrow's printed form, such as `Int64` or
    /// `Timestamp(Microsecond, Some("UTC"))`.
    pub fn parse(text: &str) -> Option<Self> {
        text.trim().parse::<arrow_schema::DataType>().ok().map(Self)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<arrow_schema::DataType> for ColumnType {
    fn from(data_type: arrow_schema::DataType) -> Self {
        Self(data_type)
    }
}

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// The Arrow data type.
    pub data_type: ColumnType,
    /// Whether the column may hold nulls.
    pub nullable: bool,
}

impl Column {
    /// A column from a caller's text type (Arrow's printed form).
    pub fn parse(name: String, data_type: &str, nullable: bool) -> Result<Self> {
        if data_type.trim().is_empty() {
            return Err(Error::InvalidSchema(format!(
                "column {:?} has no data_type",
                shorten(&name)
            )));
        }
        let parsed = ColumnType::parse(data_type).ok_or_else(|| {
            Error::InvalidSchema(format!(
                "column {:?} has data_type {:?}, which is not an Arrow type; use Arrow's names, such as \"Int64\", \"Utf8\" or \"Timestamp(Microsecond, Some(\\\"UTC\\\"))\"",
                shorten(&name),
                shorten(data_type)
            ))
        })?;
        Ok(Self {
            name,
            data_type: parsed,
            nullable,
        })
    }
}

/// The stored form of a column: the structured type (`type`, Arrow's serde
/// form) and, for people and for older readers, the printed text.
#[derive(Serialize, Deserialize)]
struct StoredColumn {
    name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    structured: Option<serde_json::Value>,
    #[serde(default)]
    data_type: String,
    nullable: bool,
}

impl Serialize for Column {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        StoredColumn {
            name: self.name.clone(),
            structured: serde_json::to_value(&self.data_type.0).ok(),
            data_type: self.data_type.to_string(),
            nullable: self.nullable,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Column {
    /// The structured type when present and readable; otherwise the text
    /// (rows written before the structured form, or by an Arrow whose serde
    /// form this one does not read).
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let stored = StoredColumn::deserialize(deserializer)?;
        let data_type = stored
            .structured
            .and_then(|value| serde_json::from_value::<arrow_schema::DataType>(value).ok())
            .map(ColumnType)
            .or_else(|| ColumnType::parse(&stored.data_type))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "column {:?}: unreadable data type {:?}",
                    stored.name, stored.data_type
                ))
            })?;
        Ok(Self {
            name: stored.name,
            data_type,
            nullable: stored.nullable,
        })
    }
}

/// A dataset's columns in file order; empty while unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schema {
    /// The columns.
    pub columns: Vec<Column>,
}

impl Schema {
    /// A schema from columns given by a caller: names must be present and
    /// unique, so "must match" comparisons mean something.
    pub fn new(columns: Vec<Column>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for (index, column) in columns.iter().enumerate() {
            if column.name.is_empty() {
                return Err(Error::InvalidSchema(format!("column {index} has no name")));
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

    /// The columns `wider` adds to this schema, if `wider` is this schema
    /// plus nullable columns: every column here is in `wider`, equal and in
    /// the same order, and every other column of `wider` may hold nulls
    /// (files without it read as nulls). `None` otherwise (a column
    /// missing, changed, reordered, or a new one not null). Equal schemas
    /// give `Some` of nothing.
    pub fn added_nullable_columns<'w>(&self, wider: &'w Schema) -> Option<Vec<&'w Column>> {
        let mut ours = self.columns.iter().peekable();
        let mut added = Vec::new();
        for column in &wider.columns {
            match ours.peek() {
                Some(next) if *next == column => {
                    ours.next();
                }
                _ if self.columns.iter().any(|c| c.name == column.name) => return None,
                _ if column.nullable => added.push(column),
                _ => return None,
            }
        }
        ours.next().is_none().then_some(added)
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

/// What produced a dataset version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineageEventKind {
    /// Not recorded (text a newer server wrote).
    #[default]
    Unspecified,
    /// A CommitFiles (an ingest's, or files registered by hand).
    Commit,
    /// A resync restored the manifest from footers.
    Resync,
    /// An APPEND widened the schema by nullable columns.
    SchemaChange,
}

impl LineageEventKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Commit => "commit",
            Self::Resync => "resync",
            Self::SchemaChange => "schema_change",
        }
    }

    /// The kind stored as text; unknown text reads as unspecified.
    pub fn from_stored(text: &str) -> Self {
        match text {
            "commit" => Self::Commit,
            "resync" => Self::Resync,
            "schema_change" => Self::SchemaChange,
            _ => Self::Unspecified,
        }
    }
}

/// One entry of a dataset's lineage history: what produced a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageEvent {
    /// The dataset version the event produced.
    pub dataset_version: u64,
    /// What happened.
    pub kind: LineageEventKind,
    /// The provenance the event carried (empty for a commit that gave
    /// none, and for schema changes).
    pub lineage: Lineage,
    /// Columns a schema change added, in order.
    pub added_columns: Vec<String>,
    /// When it was recorded.
    pub time: DateTime<Utc>,
}

/// Most lineage events a dataset's FULL view carries (newest first).
pub const LINEAGE_HISTORY_LIMIT: usize = 100;

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
    /// Where the current data came from: the lineage of the latest event
    /// that carried one (a commit without lineage keeps it).
    pub lineage: Lineage,
    /// When the dataset was created.
    pub create_time: DateTime<Utc>,
    /// When the manifest last changed.
    pub update_time: DateTime<Utc>,
    /// Starts at 1; increments on every change.
    pub version: u64,
    /// What produced each version, newest first, at most
    /// [`LINEAGE_HISTORY_LIMIT`]; empty in the basic view.
    #[serde(default)]
    pub lineage_history: Vec<LineageEvent>,
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
        let col = |n: &str| Column::parse(n.into(), "Int64", true).expect("a type");
        assert!(Schema::new(vec![col("a"), col("a")]).is_err());
        assert!(Schema::new(vec![col("")]).is_err());
        let a = Schema::new(vec![col("a"), col("b")]).expect("valid");
        let b = Schema::new(vec![col("a")]).expect("valid");
        assert!(a.first_difference(&a).is_none());
        assert!(a.first_difference(&b).is_some());
        assert_eq!(a.to_string(), "a: Int64, b: Int64");
    }

    fn column(name: &str, data_type: &str, nullable: bool) -> Column {
        Column::parse(name.into(), data_type, nullable).expect("an Arrow type")
    }

    #[test]
    fn types_parse_from_every_printed_form_and_compare_structurally() {
        use arrow_schema::{DataType, Field, TimeUnit};
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        // The form older Arrow versions printed, and this one's.
        let old = column("t", "Timestamp(Microsecond, Some(\"UTC\"))", true);
        let now = column("t", &utc.to_string(), true);
        assert_eq!(old.data_type, ColumnType(utc.clone()));
        assert_eq!(old, now);
        for data_type in [
            DataType::Int64,
            DataType::Utf8,
            DataType::Decimal128(10, 2),
            DataType::Date32,
            utc,
            DataType::List(Field::new_list_field(DataType::Utf8, true).into()),
            DataType::FixedSizeList(Field::new_list_field(DataType::Float32, true).into(), 3),
        ] {
            let printed = data_type.to_string();
            assert_eq!(
                ColumnType::parse(&printed),
                Some(ColumnType(data_type.clone())),
                "{printed}"
            );
        }
        assert!(Column::parse("x".into(), "NotAType", true).is_err());
        assert!(Column::parse("x".into(), " ", true).is_err());
    }

    #[test]
    fn stored_columns_read_old_text_rows_and_new_structured_ones() {
        // A row written before the structured form: text only.
        let old: Schema = serde_json::from_str(
            r#"[{"name":"id","data_type":"Int64","nullable":false},
                {"name":"t","data_type":"Timestamp(Microsecond, Some(\"UTC\"))","nullable":true}]"#,
        )
        .expect("old rows read");
        assert_eq!(
            old,
            Schema::new(vec![
                column("id", "Int64", false),
                column("t", "Timestamp(Microsecond, Some(\"UTC\"))", true)
            ])
            .expect("valid")
        );
        let stored = serde_json::to_string(&old).expect("serialise");
        assert!(stored.contains(r#""type":"#), "{stored}");
        let back: Schema = serde_json::from_str(&stored).expect("read back");
        assert_eq!(back, old);
        // The structured form wins over text another Arrow printed.
        let structured: Schema = serde_json::from_str(
            r#"[{"name":"id","type":"Int64","data_type":"whatever","nullable":true}]"#,
        )
        .expect("structured");
        assert_eq!(structured.columns[0], column("id", "Int64", true));
        assert!(
            serde_json::from_str::<Schema>(r#"[{"name":"x","data_type":"Nope","nullable":true}]"#)
                .is_err()
        );
    }

    #[test]
    fn only_nullable_columns_may_be_added() {
        let base = Schema::new(vec![
            column("id", "Int64", false),
            column("v", "Utf8", true),
        ])
        .expect("valid");
        let schema = |columns: Vec<Column>| Schema::new(columns).expect("valid");
        let wider = schema(vec![
            column("id", "Int64", false),
            column("v", "Utf8", true),
            column("w", "Float64", true),
        ]);
        let names = |added: Option<Vec<&Column>>| {
            added.map(|a| a.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
        };
        assert_eq!(names(base.added_nullable_columns(&base)), Some(vec![]));
        assert_eq!(
            names(base.added_nullable_columns(&wider)),
            Some(vec!["w".to_owned()])
        );
        // A new column between old ones is fine too.
        let between = schema(vec![
            column("id", "Int64", false),
            column("x", "Int32", true),
            column("v", "Utf8", true),
        ]);
        assert_eq!(
            names(base.added_nullable_columns(&between)),
            Some(vec!["x".to_owned()])
        );
        for refused in [
            // Not null.
            schema(vec![
                column("id", "Int64", false),
                column("v", "Utf8", true),
                column("w", "Float64", false),
            ]),
            // Removed.
            schema(vec![column("id", "Int64", false)]),
            // Changed type.
            schema(vec![
                column("id", "Int32", false),
                column("v", "Utf8", true),
            ]),
            // Reordered.
            schema(vec![
                column("v", "Utf8", true),
                column("id", "Int64", false),
            ]),
        ] {
            assert!(base.added_nullable_columns(&refused).is_none(), "{refused}");
        }
        assert!(wider.added_nullable_columns(&base).is_none(), "narrower");
    }
}
