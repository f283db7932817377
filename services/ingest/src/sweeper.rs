//! The orphan sweeper: removes the parts of ingests that died without
//! committing.
//!
//! An ingest writes its parts under `datasets/<dataset>/<ingest-id>/` and
//! only its catalog commit makes them data. A failed or cancelled ingest
//! deletes its own parts, but a process killed mid-ingest (`kill -9`, a lost
//! node) cannot: its finished parts stay behind, outside every manifest,
//! costing space forever (the catalog's resync refuses to adopt them).
//!
//! An object is an orphan when all of these hold:
//! - its key lies in an ingest-id folder under `datasets/<dataset>/`
//!   ([`lakehouse_shared::ingest_id::ingest_of_key`]);
//! - that ingest is not running in this process, and did not commit (the
//!   history records it SUCCEEDED: its parts left the manifest only through
//!   a later REPLACE or resync, and removing those is not this sweeper's
//!   call);
//! - the dataset's manifest does not hold the key (a dataset the catalog
//!   does not know holds nothing: an aborted CREATE leaves such folders; a
//!   dataset in another bucket holds nothing of this bucket);
//! - the folder has gone unwritten for the grace period: its NEWEST object
//!   is older than the grace, so an ingest still writing parts in another
//!   process keeps its whole folder.
//!
//! Right before deleting, the manifest and the registry are read again (a
//! commit may have landed since the first look). The race that remains: a
//! commit landing between that re-check and the delete. Only an ingest this
//! process does not run can commit then — one in another process sharing
//! storage and catalog, or a dead process's CommitFiles still in flight —
//! and it commits right after writing its last part. Its folder has gone
//! unwritten for the whole grace period, so such a commit would arrive
//! `grace` (default one hour) after its last part, far past any call's
//! deadline. Keep the grace above the longest gap between an ingest's last
//! part and its commit; grace 0 is for tests and for an operator who knows
//! no ingest runs anywhere else.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use lakehouse_client::GrpcObjectStore;
use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::storage::v1 as storage;
use lakehouse_shared::ingest_id::ingest_of_key;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _};
use tonic::Code;

use crate::error::{Error, Result};
use crate::history::{History, SweptEvent, SweptKind};
use crate::pipeline::{self, Context};
use crate::registry::{Registry, State};

/// The prefix every dataset's objects live under.
const DATASETS_PREFIX: &str = "datasets";

/// Attempts at reading a manifest's file list at one version before the
/// sweep gives up on the dataset for this round.
const MANIFEST_ATTEMPTS: usize = 5;

/// One sweep's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepOptions {
    /// How long a folder must have gone unwritten.
    pub grace: Duration,
    /// Report only; delete nothing.
    pub dry_run: bool,
}

/// One object removed (or, on a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Its bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// The ingest that wrote it.
    pub ingest_id: String,
    /// The dataset it was written for.
    pub dataset: String,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// The objects removed (on a dry run: those that would be), by bucket
    /// and key.
    pub removed: Vec<Swept>,
    /// Their total size.
    pub bytes_removed: u64,
}

/// Why an object in an ingest folder is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Its ingest runs in this process.
    Running,
    /// Its ingest committed.
    Committed,
    /// The dataset's manifest holds the key.
    Held,
    /// Its folder was written within the grace period.
    Young,
}

/// The orphan rule for one object of an ingest folder: `None` when it is an
/// orphan, else why it stays. `ingest` is the ingest's state as this
/// process knows it (`None`: unknown, e.g. an id older than the history);
/// `folder_written` is the newest `last_modified` in the folder.
pub fn keep(
    ingest: Option<State>,
    held: bool,
    folder_written: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Option<Keep> {
    if let Some(why) = kept_by_state(ingest) {
        return Some(why);
    }
    if held {
        return Some(Keep::Held);
    }
    // A clock step or a grace beyond chrono's range counts as young: when
    // in doubt, keep.
    let young = chrono::Duration::from_std(grace)
        .ok()
        .and_then(|grace| folder_written.checked_add_signed(grace))
        .is_none_or(|until| until > now);
    young.then_some(Keep::Young)
}

/// The part of [`keep`] that needs only the ingest's state: a running or
/// committed ingest keeps its parts whatever the manifest and the clock say.
fn kept_by_state(ingest: Option<State>) -> Option<Keep> {
    match ingest {
        Some(State::Running) => Some(Keep::Running),
        Some(State::Succeeded) => Some(Keep::Committed),
        Some(State::Failed | State::Cancelled) | None => None,
    }
}

/// How many objects in ingest folders were kept, and why.
#[derive(Debug, Default)]
struct Kept {
    running: u64,
    committed: u64,
    held: u64,
    young: u64,
}

impl Kept {
    fn count(&mut self, why: Keep, objects: u64) {
        match why {
            Keep::Running => self.running += objects,
            Keep::Committed => self.committed += objects,
            Keep::Held => self.held += objects,
            Keep::Young => self.young += objects,
        }
    }
}

/// One ingest folder's objects.
#[derive(Debug)]
struct Folder {
    dataset: String,
    ingest_id: String,
    objects: Vec<ObjectMeta>,
}

impl Folder {
    fn written(&self) -> DateTime<Utc> {
        self.objects
            .iter()
            .map(|o| o.last_modified)
            .max()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// Runs one sweep over every bucket storage serves.
pub async fn sweep(
    ctx: &Context,
    registry: &Registry,
    history: &History,
    options: SweepOptions,
) -> Result<SweepReport> {
    let now = Utc::now();
    let buckets = ctx
        .storage
        .clone()
        .list_buckets(storage::ListBucketsRequest {})
        .await
        .map_err(|status| Error::StorageUnavailable {
            reason: status.message().to_owned(),
        })?
        .into_inner()
        .buckets;
    let mut report = SweepReport::default();
    let mut kept = Kept::default();
    let mut failed = 0_u64;
    let mut unsettled = 0_u64;
    for bucket in buckets {
        let store: Arc<dyn ObjectStore> = Arc::new(GrpcObjectStore::new(
            ctx.storage.clone(),
            bucket.name.clone(),
        ));
        let folders = folders(&store, registry, &mut kept).await?;
        let mut by_dataset: BTreeMap<String, Vec<Folder>> = BTreeMap::new();
        for folder in folders {
            by_dataset
                .entry(folder.dataset.clone())
                .or_default()
                .push(folder);
        }
        for (dataset, folders) in by_dataset {
            let held = match manifest_keys(ctx, &dataset, &bucket.name).await {
                Ok(held) => held,
                // Commits keep landing: leave this dataset to the next
                // sweep rather than hold up every other one.
                Err(error @ Error::ManifestUnsettled { .. }) => {
                    unsettled += 1;
                    tracing::warn!(%error, "orphan sweep skipped a dataset");
                    continue;
                }
                Err(error) => return Err(error),
            };
            let mut orphans = Vec::new();
            for folder in folders {
                let written = folder.written();
                let state = registry.get(&folder.ingest_id).map(|r| r.state);
                for object in folder.objects {
                    let key = object.location.to_string();
                    match keep(state, held.contains(&key), written, now, options.grace) {
                        Some(why) => kept.count(why, 1),
                        None => orphans.push(Swept {
                            bucket: bucket.name.clone(),
                            key,
                            size_bytes: object.size,
                            ingest_id: folder.ingest_id.clone(),
                            dataset: dataset.clone(),
                        }),
                    }
                }
            }
            if orphans.is_empty() {
                continue;
            }
            if options.dry_run {
                report.removed.extend(orphans);
                continue;
            }
            // A commit may have landed since the first look: read the
            // manifest (and the registry) again right before deleting.
            let held = match manifest_keys(ctx, &dataset, &bucket.name).await {
                Ok(held) => held,
                Err(error @ Error::ManifestUnsettled { .. }) => {
                    unsettled += 1;
                    tracing::warn!(%error, "orphan sweep skipped a dataset");
                    continue;
                }
                Err(error) => return Err(error),
            };
            let mut journal = Vec::new();
            for orphan in orphans {
                if held.contains(&orphan.key) {
                    kept.count(Keep::Held, 1);
                    continue;
                }
                if let Some(why) = kept_by_state(registry.get(&orphan.ingest_id).map(|r| r.state)) {
                    kept.count(why, 1);
                    continue;
                }
                match store.delete(&Path::from(orphan.key.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        journal.push(SweptEvent {
                            kind: SweptKind::Swept,
                            time: Utc::now(),
                            bucket: orphan.bucket.clone(),
                            key: orphan.key.clone(),
                            size_bytes: orphan.size_bytes,
                            ingest_id: orphan.ingest_id.clone(),
                            dataset: orphan.dataset.clone(),
                        });
                        report.removed.push(orphan);
                    }
                    Err(error) => {
                        failed += 1;
                        tracing::warn!(
                            bucket = %orphan.bucket,
                            key = %orphan.key,
                            %error,
                            "deleting an orphaned part failed; the next sweep tries again"
                        );
                    }
                }
            }
            history.record_swept(journal).await;
        }
    }
    report.bytes_removed = report.removed.iter().map(|s| s.size_bytes).sum();
    let ingests: HashSet<&str> = report
        .removed
        .iter()
        .map(|s| s.ingest_id.as_str())
        .collect();
    tracing::info!(
        dry_run = options.dry_run,
        grace = ?options.grace,
        removed = report.removed.len(),
        bytes_removed = report.bytes_removed,
        ingests = ingests.len(),
        failed,
        datasets_skipped = unsettled,
        kept_running = kept.running,
        kept_committed = kept.committed,
        kept_in_manifest = kept.held,
        kept_young = kept.young,
        "orphan sweep finished"
    );
    Ok(report)
}

/// The ingest folders under `datasets/` in one bucket, except those of
/// ingests running here or committed (counted in `kept` instead; their
/// objects are not held in memory).
async fn folders(
    store: &Arc<dyn ObjectStore>,
    registry: &Registry,
    kept: &mut Kept,
) -> Result<Vec<Folder>> {
    let prefix = Path::from(DATASETS_PREFIX);
    let mut listing = store.list(Some(&prefix));
    let mut folders: BTreeMap<(String, String), Folder> = BTreeMap::new();
    let mut skipped: BTreeMap<String, Keep> = BTreeMap::new();
    while let Some(object) = listing.try_next().await.map_err(|source| Error::Storage {
        operation: "listing for the orphan sweep",
        key: format!("{DATASETS_PREFIX}/"),
        source: Box::new(source),
    })? {
        let key = object.location.to_string();
        let Some(dataset) = key
            .strip_prefix("datasets/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(dataset, _)| dataset.to_owned())
        else {
            continue;
        };
        let Some(ingest_id) = ingest_of_key(&dataset, &key).map(str::to_owned) else {
            continue;
        };
        if let Some(why) = skipped.get(&ingest_id) {
            kept.count(*why, 1);
            continue;
        }
        if let Some(why) = kept_by_state(registry.get(&ingest_id).map(|r| r.state)) {
            kept.count(why, 1);
            skipped.insert(ingest_id, why);
            continue;
        }
        folders
            .entry((dataset.clone(), ingest_id.clone()))
            .or_insert_with(|| Folder {
                dataset,
                ingest_id,
                objects: Vec::new(),
            })
            .objects
            .push(object);
    }
    Ok(folders.into_values().collect())
}

/// The keys the manifest of `dataset` holds in `bucket`: none when the
/// catalog does not know the dataset or keeps it in another bucket. The
/// file list is read at one version (restarted when a commit lands while
/// paging).
async fn manifest_keys(ctx: &Context, dataset: &str, bucket: &str) -> Result<HashSet<String>> {
    let found = ctx
        .catalog
        .clone()
        .get_dataset(catalog::GetDatasetRequest {
            name: dataset.to_owned(),
            view: catalog::DatasetView::Basic as i32,
        })
        .await;
    let home = match found {
        Ok(response) => response.into_inner().dataset.map(|d| d.bucket),
        Err(status) if status.code() == Code::NotFound => return Ok(HashSet::new()),
        Err(status) => return Err(pipeline::catalog_error(status)),
    };
    if home.as_deref().is_some_and(|home| home != bucket) {
        return Ok(HashSet::new());
    }
    for _ in 0..MANIFEST_ATTEMPTS {
        let mut keys = HashSet::new();
        let mut token = String::new();
        let mut version = None;
        let consistent = loop {
            let page = match ctx
                .catalog
                .clone()
                .list_dataset_files(catalog::ListDatasetFilesRequest {
                    name: dataset.to_owned(),
                    page_size: 1000,
                    page_token: token,
                })
                .await
            {
                Ok(page) => page.into_inner(),
                // Deleted meanwhile: it holds nothing now.
                Err(status) if status.code() == Code::NotFound => return Ok(HashSet::new()),
                Err(status) => return Err(pipeline::catalog_error(status)),
            };
            if *version.get_or_insert(page.version) != page.version {
                break false;
            }
            keys.extend(page.files.into_iter().map(|f| f.key));
            if page.next_page_token.is_empty() {
                break true;
            }
            token = page.next_page_token;
        };
        if consistent {
            return Ok(keys);
        }
    }
    Err(Error::ManifestUnsettled {
        dataset: dataset.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(minutes_ago: i64) -> DateTime<Utc> {
        Utc::now() - chrono::Duration::minutes(minutes_ago)
    }

    #[test]
    fn a_dead_unheld_old_folder_is_an_orphan() {
        let now = Utc::now();
        for state in [None, Some(State::Failed), Some(State::Cancelled)] {
            assert_eq!(keep(state, false, at(61), now, HOUR), None, "{state:?}");
        }
        assert_eq!(keep(None, false, now, now, Duration::ZERO), None);
    }

    #[test]
    fn running_and_committed_ingests_keep_their_parts_whatever_their_age() {
        let now = Utc::now();
        assert_eq!(
            keep(Some(State::Running), false, at(600), now, Duration::ZERO),
            Some(Keep::Running)
        );
        assert_eq!(
            keep(Some(State::Succeeded), false, at(600), now, Duration::ZERO),
            Some(Keep::Committed)
        );
    }

    #[test]
    fn only_running_and_committed_states_settle_a_folder_alone() {
        assert_eq!(kept_by_state(Some(State::Running)), Some(Keep::Running));
        assert_eq!(kept_by_state(Some(State::Succeeded)), Some(Keep::Committed));
        for state in [None, Some(State::Failed), Some(State::Cancelled)] {
            assert_eq!(kept_by_state(state), None, "{state:?}");
        }
    }

    #[test]
    fn a_key_the_manifest_holds_is_never_an_orphan() {
        let now = Utc::now();
        assert_eq!(
            keep(Some(State::Failed), true, at(600), now, Duration::ZERO),
            Some(Keep::Held)
        );
        assert_eq!(keep(None, true, at(600), now, HOUR), Some(Keep::Held));
    }

    #[test]
    fn a_folder_written_within_the_grace_is_kept() {
        let now = Utc::now();
        assert_eq!(keep(None, false, at(59), now, HOUR), Some(Keep::Young));
        // A folder "written in the future" (a clock step) is young too.
        assert_eq!(
            keep(
                None,
                false,
                now + chrono::Duration::minutes(5),
                now,
                Duration::ZERO
            ),
            Some(Keep::Young)
        );
        // A grace beyond chrono's range keeps everything.
        assert_eq!(
            keep(None, false, at(600), now, Duration::MAX),
            Some(Keep::Young)
        );
    }

    #[test]
    fn a_folder_is_as_young_as_its_newest_object() {
        let meta = |minutes_ago| ObjectMeta {
            location: Path::from("datasets/d/x/part-00000.parquet"),
            last_modified: at(minutes_ago),
            size: 1,
            e_tag: None,
            version: None,
        };
        let folder = Folder {
            dataset: "d".to_owned(),
            ingest_id: "x".to_owned(),
            objects: vec![meta(120), meta(5), meta(90)],
        };
        assert_eq!(
            keep(None, false, folder.written(), Utc::now(), HOUR),
            Some(Keep::Young)
        );
    }
}
