//! The API's defaults and limits, and the seed of every build: shared by
//! the index operations, searches and trials (a trial must build the same
//! graph a RebuildIndex with the same parameters would, and accept the same
//! ef_search), so they live beside neither.

/// Default neighbours per query.
pub const DEFAULT_K: usize = 10;
/// Most neighbours per query.
pub const MAX_K: usize = 1000;
/// Default search candidate list: recall@10 >= 0.99 on our 768-d benchmark.
pub const DEFAULT_EF_SEARCH: u32 = 40;
/// Largest ef_search.
pub const MAX_EF_SEARCH: u32 = 4096;
/// Most queries in one BatchSearch.
pub const MAX_BATCH_QUERIES: usize = 10_000;
/// Default inactive generations kept.
pub const DEFAULT_RETAINED: u32 = 2;
/// Seed of every build's level assignment.
pub(crate) const LEVEL_SEED: u64 = 0x1a4e_5eed;
