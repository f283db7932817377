//! The embedding cache: a dataset's vectors are loaded once per (dataset
//! version, columns) and shared. Concurrent callers of one key share one
//! load; a newer dataset version drops the older entries; a memory budget
//! evicts the least recently used entries, and a load that cannot fit at
//! all fails up front with the bytes it needs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::embeddings::{Embeddings, LoadSpec};
use crate::error::{Error, Result};

#[derive(Debug)]
struct Entry {
    cell: OnceCell<Arc<Embeddings>>,
    last_used: AtomicU64,
}

/// Counters and contents, for GetCacheStats.
#[derive(Debug, Clone)]
pub struct CacheStats {
    /// Loaded entries.
    pub entries: Vec<Arc<Embeddings>>,
    /// Lookups served from memory.
    pub hits: u64,
    /// Lookups that loaded.
    pub misses: u64,
    /// The budget in bytes.
    pub budget_bytes: u64,
}

/// See the module comment.
#[derive(Debug)]
pub struct EmbeddingCache {
    budget_bytes: u64,
    entries: Mutex<HashMap<LoadSpec, Arc<Entry>>>,
    clock: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl EmbeddingCache {
    /// An empty cache holding at most `budget_bytes`.
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            budget_bytes,
            entries: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The entry for `spec`, loading it with `load` unless it is cached or
    /// being loaded (then this waits for that load). `estimated_bytes` is
    /// checked against the budget before loading.
    pub async fn get_or_load<F, Fut>(
        &self,
        spec: &LoadSpec,
        estimated_bytes: u64,
        load: F,
    ) -> Result<Arc<Embeddings>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Embeddings>>,
    {
        let entry = {
            let mut entries = self.entries.lock();
            // A newer version makes older entries of the dataset useless.
            entries.retain(|key, _| key.dataset != spec.dataset || key.version >= spec.version);
            entries
                .entry(spec.clone())
                .or_insert_with(|| {
                    Arc::new(Entry {
                        cell: OnceCell::new(),
                        last_used: AtomicU64::new(0),
                    })
                })
                .clone()
        };
        entry.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if let Some(loaded) = entry.cell.get() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(loaded.clone());
        }
        let loaded_here = std::sync::atomic::AtomicBool::new(false);
        let result = entry
            .cell
            .get_or_try_init(|| async {
                loaded_here.store(true, Ordering::Relaxed);
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.make_room(spec, estimated_bytes)?;
                load().await.map(Arc::new)
            })
            .await
            .cloned();
        if result.is_ok() && !loaded_here.load(Ordering::Relaxed) {
            // Waited for another caller's load: served from memory.
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        if result.is_err() {
            let mut entries = self.entries.lock();
            if entries
                .get(spec)
                .is_some_and(|e| Arc::ptr_eq(e, &entry) && e.cell.get().is_none())
            {
                entries.remove(spec);
            }
        }
        result
    }

    /// Evicts least recently used entries until `needed` more bytes fit.
    fn make_room(&self, spec: &LoadSpec, needed: u64) -> Result<()> {
        if needed > self.budget_bytes {
            return Err(Error::CacheBudget {
                dataset: spec.dataset.clone(),
                needed,
                budget: self.budget_bytes,
            });
        }
        let mut entries = self.entries.lock();
        loop {
            let used: u64 = entries
                .values()
                .filter_map(|e| e.cell.get())
                .map(|e| e.memory_bytes())
                .sum();
            if used + needed <= self.budget_bytes {
                return Ok(());
            }
            // An entry a generation still holds frees nothing when dropped.
            let oldest = entries
                .iter()
                .filter(|(key, e)| *key != spec && e.cell.get().is_some_and(|l| !l.is_shared()))
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => {
                    tracing::info!(dataset = %key.dataset, version = key.version, "evicting cached embeddings for room");
                    entries.remove(&key);
                }
                None => {
                    return Err(Error::CacheBudget {
                        dataset: spec.dataset.clone(),
                        needed: used + needed,
                        budget: self.budget_bytes,
                    });
                }
            }
        }
    }

    /// Drops the entries of `dataset` (all when `None`) and returns them;
    /// whoever else holds one keeps it alive.
    pub fn evict(&self, dataset: Option<&str>) -> Vec<Arc<Embeddings>> {
        let mut entries = self.entries.lock();
        let mut dropped = Vec::new();
        entries.retain(|key, entry| {
            let drop = dataset.is_none_or(|d| d == key.dataset);
            if drop && let Some(loaded) = entry.cell.get() {
                dropped.push(loaded.clone());
            }
            !drop
        });
        dropped
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.entries.lock();
        let mut loaded: Vec<Arc<Embeddings>> = entries
            .values()
            .filter_map(|e| e.cell.get().cloned())
            .collect();
        loaded.sort_by(|a, b| a.spec.dataset.cmp(&b.spec.dataset));
        CacheStats {
            entries: loaded,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            budget_bytes: self.budget_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use arrow::array::{Int64Array, RecordBatch};

    use super::*;

    fn spec(version: u64) -> LoadSpec {
        LoadSpec {
            dataset: "docs".into(),
            version,
            vector_column: "embedding".into(),
            row_columns: vec!["id".into()],
            normalize: false,
        }
    }

    fn embeddings(spec: &LoadSpec, n: usize) -> Embeddings {
        let ids = Int64Array::from_iter_values(0..n as i64);
        Embeddings {
            spec: spec.clone(),
            dim: 4,
            vectors: Arc::new(vec![0.5; n * 4]),
            rows: RecordBatch::try_from_iter([("id", Arc::new(ids) as _)]).expect("batch"),
            load_ms: 1,
            load_time: chrono::Utc::now(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_load_and_a_new_version_replaces_the_old() {
        let cache = Arc::new(EmbeddingCache::new(1 << 20));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                let s = spec(1);
                cache
                    .get_or_load(&s, 100, || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok(embeddings(&s, 10))
                    })
                    .await
                    .expect("load")
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task").len(), 10);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for 8 callers");
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits), (1, 7));

        let s2 = spec(2);
        cache
            .get_or_load(&s2, 100, || async { Ok(embeddings(&s2, 3)) })
            .await
            .expect("v2");
        let versions: Vec<u64> = cache
            .stats()
            .entries
            .iter()
            .map(|e| e.spec.version)
            .collect();
        assert_eq!(versions, [2], "the older version is gone");
    }

    #[tokio::test]
    async fn budget_refuses_what_cannot_fit_and_evicts_the_least_recent() {
        let cache = EmbeddingCache::new(2000);
        let s = spec(1);
        let error = cache
            .get_or_load(&s, 5000, || async { Ok(embeddings(&s, 1)) })
            .await
            .expect_err("over budget");
        assert!(
            matches!(
                error,
                Error::CacheBudget {
                    needed: 5000,
                    budget: 2000,
                    ..
                }
            ),
            "{error}"
        );
        let mut other = spec(1);
        other.dataset = "other".into();
        cache
            .get_or_load(&s, 10, || async { Ok(embeddings(&s, 10)) })
            .await
            .expect("a");
        let used = cache.stats().entries[0].memory_bytes();
        cache
            .get_or_load(&other, 2000 - used + 1, || async {
                Ok(embeddings(&other, 1))
            })
            .await
            .expect("b evicts a");
        let left: Vec<String> = cache
            .stats()
            .entries
            .iter()
            .map(|e| e.spec.dataset.clone())
            .collect();
        assert_eq!(left, ["other"]);
    }

    #[tokio::test]
    async fn an_entry_a_generation_holds_is_never_evicted_for_room() {
        let cache = EmbeddingCache::new(2000);
        let s = spec(1);
        let a = cache
            .get_or_load(&s, 10, || async { Ok(embeddings(&s, 10)) })
            .await
            .expect("a");
        // A graph built on a's vectors holds them.
        let graph_vectors = a.vectors.clone();
        let used = a.memory_bytes();
        let mut other = spec(1);
        other.dataset = "other".into();
        let error = cache
            .get_or_load(&other, 2000 - used + 1, || async {
                Ok(embeddings(&other, 1))
            })
            .await
            .expect_err("evicting a would free nothing");
        assert!(matches!(error, Error::CacheBudget { .. }), "{error}");
        assert_eq!(cache.stats().entries.len(), 1);
        drop(graph_vectors);
        cache
            .get_or_load(&other, 2000 - used + 1, || async {
                Ok(embeddings(&other, 1))
            })
            .await
            .expect("a is free to go now");
    }
}
