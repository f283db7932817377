//! Start: each index folder is brought back to a state a crash could not
//! have left half-done, before anything is served.
//!
//! - A folder without a record is what an interrupted DeleteIndex leaves
//!   (the record goes first): its files are deleted.
//! - A record that cannot be read registers the index as damaged: listed
//!   with the reason, refused for everything but DeleteIndex, never
//!   overwritten by a CreateIndex of the same name.
//! - A generation still BUILDING was interrupted: READY when its manifest
//!   was written (the files are whole), FAILED otherwise.
//! - A READY generation whose files are gone is DAMAGED.
//! - The active generation is loaded and verified; a damaged one is marked
//!   DAMAGED, journaled, and the previous active generation serves.
//! - Generation folders the record does not name (a crash between storing
//!   a record and deleting what it retired) and stray files are deleted.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::{INDEXES_PREFIX, generation_prefix};

use super::{IndexEntry, IndexRegistry};
use crate::record::{Built, GenerationState};

impl IndexRegistry {
    /// Recovers and registers one index folder.
    pub async fn recover(&self, name: &str) -> Result<()> {
        let listing = self.store.list_index(name).await?;
        let mut record = match self.store.read_record(name).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                tracing::info!(
                    index = name,
                    "removing the files of an index whose delete was interrupted"
                );
                self.store
                    .delete_prefix(&format!("{INDEXES_PREFIX}{name}/"))
                    .await?;
                return Ok(());
            }
            Err(error @ Error::Corrupt { .. }) => {
                let message = error.to_string();
                self.journal(
                    "load index record",
                    &crate::store::record_key(name),
                    &message,
                )
                .await;
                let entry = IndexEntry::damaged(name, message);
                self.indexes.write().insert(name.to_owned(), entry);
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let mut changed = false;
        let mut doomed: Vec<u64> = Vec::new();

        // Builds a restart interrupted.
        let building: Vec<u64> = record
            .generations
            .iter()
            .filter(|g| g.state == GenerationState::Building)
            .map(|g| g.generation)
            .collect();
        for generation in building {
            changed = true;
            let manifest = if listing.has_manifest(generation) {
                self.store
                    .read_manifest(name, generation)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            match manifest {
                Some(m) => record.mark_ready(
                    generation,
                    Built {
                        dataset_version: m.dataset_version,
                        vector_count: m.vector_count,
                        dimensions: m.dimensions,
                        build_ms: 0,
                        memory_bytes: 0,
                    },
                ),
                None => {
                    record.mark_ended(
                        generation,
                        GenerationState::Failed,
                        "interrupted by a restart before it was stored".to_owned(),
                    );
                    doomed.push(generation);
                }
            }
        }

        // READY generations whose files are gone.
        let missing: Vec<u64> = record
            .generations
            .iter()
            .filter(|g| g.state == GenerationState::Ready && !listing.has_manifest(g.generation))
            .map(|g| g.generation)
            .collect();
        for generation in missing {
            changed = true;
            let message = "its stored files are missing".to_owned();
            self.journal(
                "load generation",
                &generation_prefix(name, generation),
                &message,
            )
            .await;
            record.mark_ended(generation, GenerationState::Damaged, message);
        }

        // The active generation, or the newest earlier one that loads.
        let mut loaded = None;
        let mut load_error = None;
        let mut damage = None;
        if record.active > 0 {
            let candidates: Vec<u64> = std::iter::once(record.active)
                .chain(record.previous.iter().rev().copied())
                .collect();
            for candidate in candidates {
                let ready = record
                    .generation(candidate)
                    .is_some_and(|g| g.state == GenerationState::Ready);
                if !ready {
                    continue;
                }
                match self.read_generation(name, candidate).await {
                    Ok(generation) => {
                        if candidate != record.active {
                            tracing::warn!(
                                index = name,
                                damaged = record.active,
                                serving = candidate,
                                "the active generation is damaged; its predecessor serves"
                            );
                            while record.previous.pop().is_some_and(|p| p != candidate) {}
                            record.active = candidate;
                            changed = true;
                        }
                        loaded = Some(Arc::new(generation));
                        break;
                    }
                    Err(error @ Error::Corrupt { .. }) => {
                        let message = error.to_string();
                        self.journal(
                            "load generation",
                            &generation_prefix(name, candidate),
                            &message,
                        )
                        .await;
                        damage.get_or_insert_with(|| message.clone());
                        record.mark_ended(candidate, GenerationState::Damaged, message);
                        changed = true;
                    }
                    Err(error) => {
                        // Not the files' fault (storage unreachable, say):
                        // nothing is marked; a restart tries again.
                        load_error = Some(error.to_string());
                        break;
                    }
                }
            }
            if loaded.is_none() && load_error.is_none() {
                // This start's finding, else what an earlier one recorded.
                let cause = damage
                    .or_else(|| {
                        record
                            .generation(record.active)
                            .and_then(|g| g.error.clone())
                    })
                    .unwrap_or_else(|| "its files are missing".to_owned());
                load_error = Some(format!(
                    "generation {} is damaged ({cause}) and no earlier generation loads; RebuildIndex builds a new one",
                    record.active
                ));
            }
        }

        // Generations the record does not name.
        doomed.extend(
            listing
                .generations
                .keys()
                .filter(|g| record.generation(**g).is_none())
                .copied(),
        );
        if changed {
            doomed.extend(record.retire());
            record.update_time = chrono::Utc::now();
            self.store.write_record(&record).await?;
        }

        let entry = IndexEntry::new(record);
        if let Some(generation) = loaded {
            entry.set_active(generation);
        }
        *entry.load_error.lock() = load_error;
        self.indexes.write().insert(name.to_owned(), entry);

        doomed.sort_unstable();
        doomed.dedup();
        if !doomed.is_empty() {
            tracing::info!(index = name, generations = ?doomed, "removing generation files no record names");
        }
        self.delete_generations(name, &doomed).await;
        for key in &listing.strays {
            if let Err(error) = self.store.delete_key(key).await {
                tracing::warn!(index = name, key, %error, "cannot remove a stray file");
            }
        }
        Ok(())
    }
}
