//! RepairIndex: a DAMAGED index (its record unreadable) gets a new record
//! rebuilt from the generations found in storage. Each whole generation's
//! manifest carries the index definition, so nothing is guessed: the
//! newest manifest's definition, every whole generation READY, and the
//! newest one that loads and verifies active.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::record::{Built, GenerationRecord, GenerationState, IndexRecord};

use super::{IndexEntry, IndexRegistry};

impl IndexRegistry {
    /// Rebuilds the record of the DAMAGED index `name` from its whole
    /// generations; returns the generations recovered, newest first.
    pub async fn repair(&self, name: &str) -> Result<Vec<u64>> {
        let damaged = self.get(name)?;
        let _writer = damaged.writer.lock().await;
        if !self.is_registered(name, &damaged) {
            return Err(Error::IndexNotFound {
                name: name.to_owned(),
            });
        }
        if damaged.damage().is_none() {
            return Err(Error::NotDamaged {
                index: name.to_owned(),
            });
        }
        // Unreadable at start but whole now (storage was down): load it.
        if let Ok(Some(record)) = self.store.read_record(name).await {
            drop(_writer);
            self.recover(name).await?;
            return Ok(record
                .generations
                .iter()
                .rev()
                .map(|g| g.generation)
                .collect());
        }
        let listing = self.store.list_index(name).await?;
        let mut manifests = Vec::new();
        for generation in listing.generations.keys().rev() {
            if !listing.has_manifest(*generation) {
                continue;
            }
            match self.store.read_manifest(name, *generation).await {
                Ok(Some(manifest)) => manifests.push(manifest),
                Ok(None) => {}
                Err(Error::Corrupt { reason, .. }) => {
                    tracing::warn!(
                        index = name,
                        generation,
                        reason,
                        "skipping a damaged manifest"
                    );
                }
                Err(error) => return Err(error),
            }
        }
        let Some(definition) = manifests.iter().find_map(|m| m.index.clone()) else {
            return Err(Error::Unrepairable {
                index: name.to_owned(),
                reason: if manifests.is_empty() {
                    "no whole generation was found".to_owned()
                } else {
                    "its generations were stored before manifests kept the index definition"
                        .to_owned()
                },
            });
        };
        let mut record = IndexRecord::new(name, definition, None);
        record.next_generation = listing.generations.keys().max().map_or(1, |g| g + 1);
        // Oldest first, as records keep them.
        for manifest in manifests.iter().rev() {
            record.generations.push(GenerationRecord {
                generation: manifest.generation,
                params: manifest.params,
                state: GenerationState::Ready,
                dataset_version: 0,
                vector_count: 0,
                dimensions: 0,
                create_time: record.create_time,
                build_ms: 0,
                memory_bytes: 0,
                error: None,
                request_id: None,
                failure: None,
            });
            record.mark_ready(
                manifest.generation,
                Built {
                    dataset_version: manifest.dataset_version,
                    vector_count: manifest.vector_count,
                    dimensions: manifest.dimensions,
                    build_ms: 0,
                    memory_bytes: 0,
                },
            );
        }
        // The newest generation that verifies serves.
        let mut loaded = None;
        for manifest in &manifests {
            match self.read_generation(name, manifest.generation).await {
                Ok(generation) => {
                    record.active = manifest.generation;
                    loaded = Some(Arc::new(generation));
                    break;
                }
                Err(error @ Error::Corrupt { .. }) => {
                    record.mark_ended(
                        manifest.generation,
                        GenerationState::Damaged,
                        error.to_string(),
                    );
                }
                Err(error) => return Err(error),
            }
        }
        let recovered: Vec<u64> = manifests.iter().map(|m| m.generation).collect();
        let doomed = record.retire();
        self.store.write_record(&record).await?;
        let entry = IndexEntry::new(record);
        if let Some(generation) = loaded {
            entry.set_active(generation);
        }
        self.indexes.write().insert(name.to_owned(), entry);
        // Folders of unfinished generations, and what retention let go.
        let unfinished: Vec<u64> = listing
            .generations
            .keys()
            .filter(|g| !recovered.contains(g) || doomed.contains(g))
            .copied()
            .collect();
        self.delete_generations(name, &unfinished).await;
        tracing::info!(index = name, generations = ?recovered, "index record repaired from its generations");
        Ok(recovered)
    }
}
