//! An index's record (`index.json`) and the generation state machine over
//! it, written once: every operation that changes generations (a build, a
//! trial's adopted graph, promote, rollback, delete, retention, recovery
//! at start) goes through these transitions. They are pure: they change a
//! record in memory and say which generations' files may go; the registry
//! writes the record before it deletes those files.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Metric;
use crate::error::{Error, Result};
use crate::hnsw::HnswParams;

/// Failed, cancelled and damaged generations whose records are kept (newest
/// first) so ListGenerations still shows why; they never count against
/// `retained_generations`.
pub const ENDED_RECORDS_KEPT: usize = 3;

/// State of one generation, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationState {
    /// Being built.
    Building,
    /// Whole in storage.
    Ready,
    /// The build failed.
    Failed,
    /// The build was cancelled.
    Cancelled,
    /// Its stored files are missing or fail their checksums; never loaded.
    Damaged,
}

impl GenerationState {
    /// Lowercase name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Damaged => "damaged",
        }
    }

    /// Ended without a usable generation.
    fn ended_unusable(self) -> bool {
        matches!(self, Self::Failed | Self::Cancelled | Self::Damaged)
    }
}

/// One generation, as recorded in the index record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    /// Number.
    pub generation: u64,
    /// Build parameters.
    pub params: HnswParams,
    /// State.
    pub state: GenerationState,
    /// Dataset version it is built from.
    pub dataset_version: u64,
    /// Vectors.
    pub vector_count: u64,
    /// Dimensions.
    pub dimensions: u32,
    /// When the build started.
    pub create_time: DateTime<Utc>,
    /// Load + insert + persist time.
    pub build_ms: u64,
    /// Memory when loaded.
    pub memory_bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The request that started it (replays survive restarts).
    pub request_id: Option<String>,
    /// How its failure was answered (gRPC code, ErrorInfo reason and
    /// metadata), so a replay of the request answers the same. Absent in
    /// records written before it was kept, and for generations that did
    /// not fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<crate::error::RecordedFailure>,
}

/// What a finished build measured, recorded with its READY state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    /// Dataset version it is built from.
    pub dataset_version: u64,
    /// Vectors.
    pub vector_count: u64,
    /// Dimensions.
    pub dimensions: u32,
    /// Load + insert + persist time.
    pub build_ms: u64,
    /// Memory when loaded.
    pub memory_bytes: u64,
}

/// An index's definition, settings and generations: `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// Name.
    pub name: String,
    /// Dataset.
    pub dataset: String,
    /// Id column.
    pub id_column: String,
    /// Text column, if any.
    pub text_column: Option<String>,
    /// Vector column.
    pub vector_column: String,
    /// Payload columns.
    pub payload_columns: Vec<String>,
    /// Metric.
    pub metric: Metric,
    /// Live search setting.
    pub ef_search: u32,
    /// Inactive ready generations kept.
    pub retained_generations: u32,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// The CreateIndex request id.
    pub create_request_id: Option<String>,
    /// Active generation; 0 before the first is ready.
    pub active: u64,
    /// Earlier active generations, most recent last (for rollback).
    pub previous: Vec<u64>,
    /// Every generation kept, oldest first.
    pub generations: Vec<GenerationRecord>,
    /// The number the next generation gets.
    pub next_generation: u64,
}

/// What an index is, apart from its generations: stored in every
/// generation's manifest too, so a damaged record can be rebuilt from the
/// generations found (RepairIndex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexDefinition {
    /// Dataset.
    pub dataset: String,
    /// Id column.
    pub id_column: String,
    /// Text column, if any.
    pub text_column: Option<String>,
    /// Vector column.
    pub vector_column: String,
    /// Payload columns.
    pub payload_columns: Vec<String>,
    /// Metric.
    pub metric: Metric,
    /// Live search setting.
    pub ef_search: u32,
    /// READY generations kept besides the active one.
    pub retained_generations: u32,
    /// Created.
    pub create_time: DateTime<Utc>,
}

/// Where a swap goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// To this generation (PromoteGeneration).
    To(u64),
    /// Back to the previously active one (RollbackGeneration).
    Back,
}

impl IndexRecord {
    /// A record with no generation yet.
    pub fn new(name: &str, definition: IndexDefinition, request_id: Option<String>) -> Self {
        Self {
            name: name.to_owned(),
            dataset: definition.dataset,
            id_column: definition.id_column,
            text_column: definition.text_column,
            vector_column: definition.vector_column,
            payload_columns: definition.payload_columns,
            metric: definition.metric,
            ef_search: definition.ef_search,
            retained_generations: definition.retained_generations,
            create_time: definition.create_time,
            update_time: Utc::now(),
            create_request_id: request_id,
            active: 0,
            previous: Vec::new(),
            generations: Vec::new(),
            next_generation: 1,
        }
    }

    /// The index's definition, as its manifests keep it.
    pub fn definition(&self) -> IndexDefinition {
        IndexDefinition {
            dataset: self.dataset.clone(),
            id_column: self.id_column.clone(),
            text_column: self.text_column.clone(),
            vector_column: self.vector_column.clone(),
            payload_columns: self.payload_columns.clone(),
            metric: self.metric,
            ef_search: self.ef_search,
            retained_generations: self.retained_generations,
            create_time: self.create_time,
        }
    }

    /// The row columns a generation keeps: id, then text, then payload.
    pub fn row_columns(&self) -> Vec<String> {
        std::iter::once(self.id_column.clone())
            .chain(self.text_column.clone())
            .chain(self.payload_columns.iter().cloned())
            .collect()
    }

    /// One generation's record.
    pub fn generation(&self, generation: u64) -> Option<&GenerationRecord> {
        self.generations.iter().find(|g| g.generation == generation)
    }

    /// One generation's record, to change.
    pub fn generation_mut(&mut self, generation: u64) -> Option<&mut GenerationRecord> {
        self.generations
            .iter_mut()
            .find(|g| g.generation == generation)
    }

    /// Whether no build of this index ever succeeded: none is active or was,
    /// and every generation (at least one) failed or was cancelled. Such an
    /// index has nothing to search or keep (see `IndexRegistry::create`).
    /// The first READY generation always becomes active, so `active == 0`
    /// means none ever was READY.
    pub fn never_built(&self) -> bool {
        self.active == 0
            && self.previous.is_empty()
            && !self.generations.is_empty()
            && self.generations.iter().all(|g| {
                matches!(
                    g.state,
                    GenerationState::Failed | GenerationState::Cancelled
                )
            })
    }

    /// Reserves the next generation number for a build with `params`.
    pub fn reserve(&mut self, params: HnswParams, request_id: Option<String>) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.generations.push(GenerationRecord {
            generation,
            params,
            state: GenerationState::Building,
            dataset_version: 0,
            vector_count: 0,
            dimensions: 0,
            create_time: Utc::now(),
            build_ms: 0,
            memory_bytes: 0,
            error: None,
            request_id,
            failure: None,
        });
        generation
    }

    /// A build's generation is whole in storage.
    pub fn mark_ready(&mut self, generation: u64, built: Built) {
        if let Some(g) = self.generation_mut(generation) {
            g.state = GenerationState::Ready;
            g.dataset_version = built.dataset_version;
            g.vector_count = built.vector_count;
            g.dimensions = built.dimensions;
            g.build_ms = built.build_ms;
            g.memory_bytes = built.memory_bytes;
            g.error = None;
        }
    }

    /// A generation ended unusable: failed, cancelled or damaged.
    pub fn mark_ended(&mut self, generation: u64, state: GenerationState, error: String) {
        debug_assert!(state.ended_unusable());
        if let Some(g) = self.generation_mut(generation) {
            g.state = state;
            g.error = Some(error);
        }
    }

    /// Makes a READY `generation` active, remembering the one it replaces
    /// for rollback.
    pub fn activate(&mut self, generation: u64) -> Result<()> {
        self.check_ready(generation)?;
        if self.active != generation {
            if self.active > 0 {
                self.previous.push(self.active);
            }
            self.active = generation;
        }
        Ok(())
    }

    /// The generation a swap goes to, checked: it exists and is READY.
    pub fn swap_target(&self, swap: Swap) -> Result<u64> {
        let generation = match swap {
            Swap::To(generation) => generation,
            Swap::Back => *self
                .previous
                .last()
                .ok_or_else(|| Error::NoPreviousGeneration {
                    index: self.name.clone(),
                })?,
        };
        self.check_ready(generation)?;
        Ok(generation)
    }

    /// Applies a swap checked by [`Self::swap_target`].
    pub fn swap(&mut self, swap: Swap) -> Result<()> {
        let generation = self.swap_target(swap)?;
        match swap {
            Swap::To(_) => self.activate(generation),
            Swap::Back => {
                self.previous.pop();
                self.active = generation;
                Ok(())
            }
        }
    }

    fn check_ready(&self, generation: u64) -> Result<()> {
        let g = self
            .generation(generation)
            .ok_or_else(|| Error::GenerationNotFound {
                index: self.name.clone(),
                generation,
            })?;
        if g.state != GenerationState::Ready {
            return Err(Error::GenerationState {
                index: self.name.clone(),
                generation,
                state: g.state.name(),
                hint: "only a READY generation can be made active",
            });
        }
        Ok(())
    }

    /// Forgets an inactive, finished generation (DeleteGeneration).
    pub fn forget(&mut self, generation: u64) -> Result<()> {
        let g = self
            .generation(generation)
            .ok_or_else(|| Error::GenerationNotFound {
                index: self.name.clone(),
                generation,
            })?;
        if self.active == generation || g.state == GenerationState::Building {
            return Err(Error::GenerationState {
                index: self.name.clone(),
                generation,
                state: if self.active == generation {
                    "active"
                } else {
                    "building"
                },
                hint: "promote another generation or cancel the build first",
            });
        }
        self.drop_generations(&[generation]);
        Ok(())
    }

    /// Retention: keeps the active generation, running builds, the newest
    /// `retained_generations` other READY ones (the rollback target first,
    /// then the newest) and the newest [`ENDED_RECORDS_KEPT`] failed,
    /// cancelled or damaged ones; forgets the rest and returns them, whose
    /// files may go once this record is stored. Failed builds never push
    /// out a generation a user could roll back to.
    pub fn retire(&mut self) -> Vec<u64> {
        let mut ready: Vec<u64> = self
            .generations
            .iter()
            .filter(|g| g.generation != self.active && g.state == GenerationState::Ready)
            .map(|g| g.generation)
            .collect();
        // Preference: the rollback chain, most recent first, then the newest.
        ready.sort_unstable_by_key(|g| {
            let in_chain = self.previous.iter().rposition(|p| p == g);
            (
                std::cmp::Reverse(in_chain.map(|i| i + 1).unwrap_or(0)),
                std::cmp::Reverse(*g),
            )
        });
        let mut doomed: Vec<u64> = ready
            .into_iter()
            .skip(self.retained_generations as usize)
            .collect();
        let mut ended: Vec<u64> = self
            .generations
            .iter()
            .filter(|g| g.generation != self.active && g.state.ended_unusable())
            .map(|g| g.generation)
            .collect();
        ended.sort_unstable_by(|a, b| b.cmp(a));
        doomed.extend(ended.into_iter().skip(ENDED_RECORDS_KEPT));
        self.drop_generations(&doomed);
        doomed
    }

    fn drop_generations(&mut self, doomed: &[u64]) {
        self.generations.retain(|g| !doomed.contains(&g.generation));
        self.previous.retain(|g| !doomed.contains(g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(retained: u32) -> IndexRecord {
        let now = Utc::now();
        IndexRecord {
            name: "i".into(),
            dataset: "d".into(),
            id_column: "id".into(),
            text_column: None,
            vector_column: "v".into(),
            payload_columns: vec![],
            metric: Metric::Cosine,
            ef_search: 40,
            retained_generations: retained,
            create_time: now,
            update_time: now,
            create_request_id: None,
            active: 0,
            previous: vec![],
            generations: vec![],
            next_generation: 1,
        }
    }

    fn built() -> Built {
        Built {
            dataset_version: 1,
            vector_count: 10,
            dimensions: 4,
            build_ms: 1,
            memory_bytes: 100,
        }
    }

    /// A build that ends READY and is promoted.
    fn ready_promoted(r: &mut IndexRecord) -> Vec<u64> {
        let g = r.reserve(HnswParams::default(), None);
        r.mark_ready(g, built());
        r.activate(g).expect("activate");
        r.retire()
    }

    fn failed(r: &mut IndexRecord, state: GenerationState) -> Vec<u64> {
        let g = r.reserve(HnswParams::default(), None);
        r.mark_ended(g, state, "boom".into());
        r.retire()
    }

    #[test]
    fn failed_and_cancelled_builds_never_push_out_the_rollback_target() {
        let mut r = record(1);
        ready_promoted(&mut r);
        ready_promoted(&mut r);
        assert_eq!((r.active, r.previous.clone()), (2, vec![1]));
        for _ in 0..5 {
            failed(&mut r, GenerationState::Failed);
            failed(&mut r, GenerationState::Cancelled);
        }
        assert_eq!(r.swap_target(Swap::Back).expect("rollback target"), 1);
        // Only the newest ended records stay, the ready ones all do.
        let ended = r
            .generations
            .iter()
            .filter(|g| g.state.ended_unusable())
            .count();
        assert_eq!(ended, ENDED_RECORDS_KEPT);
        // A promoted rebuild keeps what it replaced as the rollback target
        // and retires the older one.
        let retired = ready_promoted(&mut r);
        assert!(retired.contains(&1), "{retired:?}");
        assert_eq!(r.previous, vec![2]);
        assert_eq!(r.swap_target(Swap::Back).expect("rollback target"), 2);
    }

    #[test]
    fn an_index_is_never_built_until_a_build_succeeds() {
        let mut r = record(1);
        assert!(!r.never_built(), "no build yet: one may be on its way");
        let g = r.reserve(HnswParams::default(), None);
        assert!(!r.never_built(), "building");
        r.mark_ended(g, GenerationState::Failed, "COLUMN_TYPE".into());
        assert!(r.never_built());
        failed(&mut r, GenerationState::Cancelled);
        assert!(r.never_built());
        ready_promoted(&mut r);
        assert!(!r.never_built());
        failed(&mut r, GenerationState::Failed);
        assert!(!r.never_built(), "it was built once");
    }

    #[test]
    fn retention_prefers_the_rollback_target_over_a_newer_unpromoted_build() {
        let mut r = record(1);
        ready_promoted(&mut r); // 1
        ready_promoted(&mut r); // 2, previous [1]
        let g = r.reserve(HnswParams::default(), None); // 3, not promoted
        r.mark_ready(g, built());
        let retired = r.retire();
        assert_eq!(retired, vec![3]);
        assert_eq!(r.previous, vec![1]);
    }

    #[test]
    fn swaps_check_the_target_and_rollback_walks_back() {
        let mut r = record(2);
        ready_promoted(&mut r);
        ready_promoted(&mut r);
        ready_promoted(&mut r);
        assert_eq!((r.active, r.previous.clone()), (3, vec![1, 2]));
        r.swap(Swap::Back).expect("back");
        assert_eq!((r.active, r.previous.clone()), (2, vec![1]));
        r.swap(Swap::Back).expect("back");
        assert_eq!((r.active, r.previous.clone()), (1, vec![]));
        assert!(matches!(
            r.swap(Swap::Back),
            Err(Error::NoPreviousGeneration { .. })
        ));
        let g = r.reserve(HnswParams::default(), None);
        assert!(matches!(
            r.swap(Swap::To(g)),
            Err(Error::GenerationState { .. })
        ));
        assert!(matches!(r.forget(1), Err(Error::GenerationState { .. })));
        r.forget(3).expect("forget an inactive ready generation");
        assert!(r.generation(3).is_none());
    }
}
