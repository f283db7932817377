//! The rules of a commit, as pure functions both backends run inside their
//! transaction: which version check applies, what the schema and lineage
//! become. Kept apart from SQL so the rules read (and test) in one place.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::model::{Commit, CommitMode, Dataset, Lineage, Schema, validate_key};

/// What a commit does to the dataset row.
#[derive(Debug, Clone)]
pub(crate) struct CommitPlan {
    /// The version the row must still have when it is updated (0 on create).
    pub base_version: u64,
    /// The schema after the commit.
    pub schema: Schema,
    /// The lineage after the commit (redacted).
    pub lineage: Lineage,
    /// Whether every current file goes (replace mode).
    pub replace_all: bool,
    /// Columns an APPEND added to the schema (nullable ones), in order.
    pub added_columns: Vec<String>,
}

/// Checks what can be checked without the database.
pub(crate) fn validate(commit: &Commit) -> Result<()> {
    if commit.mode == CommitMode::Replace && !commit.remove_keys.is_empty() {
        return Err(Error::InvalidRequest(
            "remove_keys applies to APPEND mode only; REPLACE already drops every file not in add_files".to_owned(),
        ));
    }
    let mut keys = HashSet::new();
    for file in &commit.add_files {
        validate_key(&file.key)?;
        if !keys.insert(file.key.as_str()) {
            return Err(Error::InvalidRequest(format!(
                "file {:?} appears twice in add_files",
                file.key
            )));
        }
    }
    let mut removed = HashSet::new();
    for key in &commit.remove_keys {
        validate_key(key)?;
        if keys.contains(key.as_str()) || !removed.insert(key.as_str()) {
            return Err(Error::InvalidRequest(format!(
                "key {key:?} appears twice among add_files and remove_keys"
            )));
        }
    }
    Ok(())
}

/// Decides the commit against the dataset as it is now (`None`: absent).
pub(crate) fn plan(current: Option<&Dataset>, commit: &Commit) -> Result<CommitPlan> {
    let name = commit.name.as_str();
    let current_version = current.map_or(0, |d| d.version);
    match (commit.expected_version, current) {
        (None, None) => {
            return Err(Error::NotFound {
                name: name.to_owned(),
            });
        }
        (Some(0), None) | (None, Some(_)) => {}
        (Some(expected), _) if expected != current_version => {
            return Err(match current {
                None => Error::NotFound {
                    name: name.to_owned(),
                },
                Some(_) => Error::VersionConflict {
                    name: name.to_owned(),
                    expected,
                    actual: current_version,
                },
            });
        }
        (Some(_), _) => {}
    }

    // Checked here too, inside the transaction, so a dataset deleted and
    // re-created in another bucket since the caller looked is still caught.
    if let Some(current) = current
        && !commit.bucket.is_empty()
        && commit.bucket != current.bucket
    {
        return Err(Error::BucketMismatch {
            name: name.to_owned(),
            bucket: current.bucket.clone(),
            given: commit.bucket.clone(),
        });
    }

    let current_schema = current.map(|d| d.schema.clone()).unwrap_or_default();
    let mut added_columns = Vec::new();
    let schema = match &commit.schema {
        Some(given) if !given.is_empty() => {
            if commit.mode == CommitMode::Append && !current_schema.is_empty() {
                // APPEND may widen the schema by nullable columns: older
                // files lack them and read as nulls. Anything else (a
                // column removed, changed or not null) is refused.
                match current_schema.added_nullable_columns(given) {
                    Some(added) => {
                        added_columns = added.iter().map(|c| c.name.clone()).collect();
                    }
                    None => {
                        let difference = current_schema
                            .first_difference(given)
                            .unwrap_or_else(|| "the columns differ".to_owned());
                        return Err(Error::Precondition {
                            name: name.to_owned(),
                            reason: format!(
                                "the schema does not match the dataset's ({difference}); APPEND may only add nullable columns; use REPLACE to change it"
                            ),
                        });
                    }
                }
            }
            given.clone()
        }
        _ => current_schema,
    };
    if schema.is_empty() && !commit.add_files.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "dataset {name:?} has no schema yet; pass the files' schema with the commit"
        )));
    }

    let lineage = match &commit.lineage {
        Some(lineage) => lineage.clone().redacted(),
        None => current.map(|d| d.lineage.clone()).unwrap_or_default(),
    };
    Ok(CommitPlan {
        base_version: current_version,
        schema,
        lineage,
        replace_all: commit.mode == CommitMode::Replace,
        added_columns,
    })
}
