//! The generation state machine crashed at every step: a store that fails
//! its n-th write (the shared `TestStore`) (and every call after it, as a dead process would) runs a
//! scenario of builds, promotes, a rollback, a failed build and a delete;
//! then a fresh registry recovers from what the store holds, and the state
//! on "disk" is checked: one active generation, whole and verified, that
//! answers a seeded search right; nothing BUILDING; no files the record
//! does not name.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use lakehouse_shared::testing::TestStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use super::{IndexRegistry, Outcome, Reserved};
use crate::Metric;
use crate::error::{Error, Result};
use crate::generation::LoadedGeneration;
use crate::hnsw::{self, BuildControl, HnswParams};
use crate::record::{GenerationState, IndexRecord, Swap};
use crate::store::{INDEXES_PREFIX, IndexStore, record_key};

const N: usize = 200;
const DIM: usize = 8;
const INDEX: &str = "crashy";

/// The seeded vectors every generation is built from.
fn vectors() -> Arc<Vec<f32>> {
    Arc::new(hnsw::testing::clustered_vectors(N, DIM, 4, 7))
}

fn registry(store: Arc<dyn ObjectStore>) -> IndexRegistry {
    // Journal reports go nowhere (a closed port) and are only logged.
    let channel = lakehouse_client::connect_lazy("http://127.0.0.1:9").expect("address");
    IndexRegistry::new(IndexStore::new(store), lakehouse_client::storage(channel))
}

fn new_record() -> IndexRecord {
    let now = chrono::Utc::now();
    let mut record = IndexRecord {
        name: INDEX.into(),
        dataset: "d".into(),
        id_column: "id".into(),
        text_column: None,
        vector_column: "v".into(),
        payload_columns: vec![],
        metric: Metric::L2,
        ef_search: 40,
        retained_generations: 1,
        create_time: now,
        update_time: now,
        create_request_id: None,
        active: 0,
        previous: vec![],
        generations: vec![],
        next_generation: 1,
    };
    record.reserve(HnswParams::default(), None);
    record
}

fn built(generation: u64) -> LoadedGeneration {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let graph = hnsw::build(
        vectors(),
        DIM,
        Metric::L2,
        HnswParams::default(),
        1,
        &pool,
        &BuildControl::default(),
    )
    .expect("build");
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..N as i64));
    LoadedGeneration {
        generation,
        graph,
        rows: RecordBatch::try_from_iter([("id", ids)]).expect("rows"),
        dataset_version: generation,
        indexes: Default::default(),
    }
}

/// A build of `generation` that persists and ends READY.
async fn build_ready(reg: &IndexRegistry, generation: u64, promote: bool) -> Result<()> {
    let entry = reg.get(INDEX)?;
    let loaded = built(generation);
    reg.store()
        .write_generation(
            &entry.record(),
            generation,
            &loaded.graph,
            &loaded.rows,
            generation,
        )
        .await?;
    let outcome = Outcome::Ready {
        loaded: Arc::new(loaded),
        build_ms: 1,
        promote,
    };
    reg.finish(&entry, generation, outcome).await
}

async fn reserve(reg: &IndexRegistry) -> Result<u64> {
    match reg.reserve(&reg.get(INDEX)?, None, None).await? {
        Reserved::New(generation, _) => Ok(generation),
        Reserved::Replay(_) => Err(Error::Task("unexpected replay")),
    }
}

/// Create (1 active), promote 2, promote 3 (retires 1), roll back to 2, a
/// failed build 4, delete 3. Stops at the first error, as a crash would.
/// Returns the steps that completed.
async fn scenario(reg: &IndexRegistry) -> usize {
    let mut done = 0;
    let steps = async {
        reg.create(new_record()).await?;
        build_ready(reg, 1, true).await?;
        done += 1;
        let g = reserve(reg).await?;
        build_ready(reg, g, true).await?;
        done += 1;
        let g = reserve(reg).await?;
        build_ready(reg, g, true).await?;
        done += 1;
        reg.swap(&reg.get(INDEX)?, Swap::Back, None).await?;
        done += 1;
        let g = reserve(reg).await?;
        let partial = built(g);
        // Half its files, then it fails.
        reg.store()
            .write_generation(
                &reg.get(INDEX)?.record(),
                g,
                &partial.graph,
                &partial.rows,
                g,
            )
            .await?;
        let outcome = Outcome::Ended {
            state: GenerationState::Failed,
            error: "BAD_ROW".into(),
            failure: None,
            build_ms: 1,
        };
        reg.finish(&reg.get(INDEX)?, g, outcome).await?;
        done += 1;
        reg.forget(&reg.get(INDEX)?, 3).await?;
        done += 1;
        Ok::<(), Error>(())
    };
    let _ = steps.await;
    done
}

/// Every key under the index's folder.
async fn keys(store: &InMemory) -> Vec<String> {
    use futures::TryStreamExt as _;
    let prefix = Path::from(INDEXES_PREFIX);
    let mut keys: Vec<String> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

/// The state after a restart is whole, verified and searchable.
async fn check_recovered(inner: &Arc<InMemory>, done: usize, fail_at: usize) {
    let reg = registry(inner.clone());
    for name in reg.store().list_indexes().await.expect("list") {
        reg.recover(&name).await.expect("recover");
    }
    let files = keys(inner).await;
    let Ok(entry) = reg.get(INDEX) else {
        // The crash came before the record was stored: nothing may remain.
        assert!(
            files.is_empty(),
            "fail at {fail_at}: no record but {files:?}"
        );
        return;
    };
    let record = entry.record();
    let context = format!("fail at write {fail_at} after {done} steps: {record:#?} {files:?}");
    assert!(
        record
            .generations
            .iter()
            .all(|g| g.state != GenerationState::Building),
        "{context}"
    );
    // Only the record and the files of generations it names.
    for key in &files {
        let named = *key == record_key(INDEX)
            || record
                .generations
                .iter()
                .any(|g| key.starts_with(&crate::store::generation_prefix(INDEX, g.generation)));
        assert!(named, "stray {key}: {context}");
    }
    // Every READY generation is whole and verified.
    for g in record
        .generations
        .iter()
        .filter(|g| g.state == GenerationState::Ready)
    {
        reg.read_generation(INDEX, g.generation)
            .await
            .unwrap_or_else(|e| panic!("generation {} unreadable ({e}): {context}", g.generation));
    }
    if done >= 1 {
        assert!(record.active > 0, "{context}");
    }
    if record.active > 0 {
        let active = entry
            .active()
            .unwrap_or_else(|| panic!("nothing loaded: {context}"));
        assert_eq!(active.generation, record.active, "{context}");
        assert!(entry.load_error().is_none(), "{context}");
        let v = vectors();
        for i in [0, 57, 199] {
            let hits = active.search(&v[i * DIM..(i + 1) * DIM], 1, 40, false);
            assert_eq!(hits[0].id as usize, i, "{context}");
        }
        // The rollback target, if any, is READY.
        if let Some(p) = record.previous.last() {
            let g = record.generation(*p).expect("previous is recorded");
            assert_eq!(g.state, GenerationState::Ready, "{context}");
        }
    }
    // The active generation is one the completed steps or the interrupted
    // one made active.
    let allowed: &[u64] = match done {
        0 => &[0, 1],
        1 => &[1, 2],
        2 => &[2, 3],
        3 => &[3, 2],
        _ => &[2],
    };
    assert!(allowed.contains(&record.active), "{context}");
}

#[tokio::test]
async fn a_crash_at_any_write_leaves_one_whole_active_generation() {
    // The scenario's writes, counted without faults.
    let clean = Arc::new(InMemory::new());
    let counter = Arc::new(TestStore::new(clean.clone()));
    let done = scenario(&registry(counter.clone())).await;
    assert_eq!(done, 6, "the scenario runs whole without faults");
    let total = counter.writes();
    assert!(total > 20, "{total} writes");
    check_recovered(&clean, done, usize::MAX).await;
    let record = registry(clean.clone());
    record.recover(INDEX).await.expect("recover");
    let r = record.get(INDEX).expect("entry").record();
    assert_eq!((r.active, r.previous.clone()), (2, vec![]));

    for fail_at in 1..=total {
        let inner = Arc::new(InMemory::new());
        let faulty = Arc::new(TestStore::crashing_at(inner.clone(), fail_at));
        let done = scenario(&registry(faulty)).await;
        check_recovered(&inner, done, fail_at).await;
    }
}

#[tokio::test]
async fn a_damaged_active_generation_is_refused_and_the_previous_one_serves() {
    let inner = Arc::new(InMemory::new());
    let reg = registry(inner.clone());
    reg.create(new_record()).await.expect("create");
    build_ready(&reg, 1, true).await.expect("gen 1");
    let g = reserve(&reg).await.expect("reserve");
    build_ready(&reg, g, true).await.expect("gen 2");

    // Flip bytes in the vector section of generation 2's graph.
    let key = Path::from(format!(
        "{}graph.bin",
        crate::store::generation_prefix(INDEX, 2)
    ));
    let mut bytes = inner
        .get(&key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    let at = bytes.len() - 64;
    bytes[at..].iter_mut().for_each(|b| *b ^= 0x5a);
    inner.put(&key, PutPayload::from(bytes)).await.expect("put");

    let reg = registry(inner.clone());
    reg.recover(INDEX).await.expect("recover");
    let entry = reg.get(INDEX).expect("entry");
    let record = entry.record();
    assert_eq!(record.active, 1);
    let damaged = record.generation(2).expect("gen 2 recorded");
    assert_eq!(damaged.state, GenerationState::Damaged);
    let reason = damaged.error.clone().unwrap_or_default();
    assert!(
        reason.contains("vectors") && reason.contains("CRC32C"),
        "{reason}"
    );
    assert_eq!(entry.active().expect("serving").generation, 1);
    // Stored that way: a second start agrees without reading generation 2.
    let again = registry(inner.clone());
    again.recover(INDEX).await.expect("recover");
    assert_eq!(again.get(INDEX).expect("entry").record().active, 1);
    // It can never be promoted again.
    assert!(matches!(
        again
            .swap(&again.get(INDEX).expect("entry"), Swap::To(2), None)
            .await,
        Err(Error::GenerationState { .. })
    ));
}

#[tokio::test]
async fn a_damaged_record_is_listed_kept_and_only_deleted_on_request() {
    let inner = Arc::new(InMemory::new());
    let reg = registry(inner.clone());
    reg.create(new_record()).await.expect("create");
    build_ready(&reg, 1, true).await.expect("gen 1");
    inner
        .put(
            &Path::from(record_key(INDEX)),
            PutPayload::from_static(b"{garbage"),
        )
        .await
        .expect("put");

    let reg = registry(inner.clone());
    reg.recover(INDEX).await.expect("recover");
    let entry = reg.get(INDEX).expect("listed");
    assert!(entry.damage().is_some_and(|d| d.contains("index record")));
    assert!(matches!(reg.usable(INDEX), Err(Error::IndexDamaged { .. })));
    // A create of the same name does not overwrite its generations.
    assert!(matches!(
        reg.create(new_record()).await,
        Err(Error::IndexExists { .. })
    ));
    let gen_files = keys(&inner).await;
    assert!(
        gen_files.iter().any(|k| k.contains("gen-1/graph.bin")),
        "{gen_files:?}"
    );
    reg.remove(INDEX).await.expect("delete");
    assert!(keys(&inner).await.is_empty());
}

#[tokio::test]
async fn a_ready_generation_whose_files_are_gone_is_damaged_not_ready() {
    let inner = Arc::new(InMemory::new());
    let reg = registry(inner.clone());
    reg.create(new_record()).await.expect("create");
    build_ready(&reg, 1, true).await.expect("gen 1");
    let g = reserve(&reg).await.expect("reserve");
    build_ready(&reg, g, false).await.expect("gen 2");
    reg.store()
        .delete_prefix(&crate::store::generation_prefix(INDEX, 2))
        .await
        .expect("delete");
    let reg = registry(inner.clone());
    reg.recover(INDEX).await.expect("recover");
    let record = reg.get(INDEX).expect("entry").record();
    assert_eq!(record.active, 1);
    assert_eq!(
        record.generation(2).map(|g| g.state),
        Some(GenerationState::Damaged)
    );
}

#[tokio::test]
async fn a_damaged_record_is_repaired_from_its_generations() {
    let inner = Arc::new(InMemory::new());
    let reg = registry(inner.clone());
    reg.create(new_record()).await.expect("create");
    build_ready(&reg, 1, true).await.expect("gen 1");
    let g = reserve(&reg).await.expect("reserve");
    build_ready(&reg, g, true).await.expect("gen 2");
    // A build interrupted before its manifest.
    let g = reserve(&reg).await.expect("reserve");
    let partial = built(g);
    reg.store()
        .write_generation(
            &reg.get(INDEX).expect("entry").record(),
            g,
            &partial.graph,
            &partial.rows,
            g,
        )
        .await
        .expect("write");
    inner
        .delete(&Path::from(format!(
            "{}manifest.json",
            crate::store::generation_prefix(INDEX, g)
        )))
        .await
        .expect("drop the manifest");
    inner
        .put(
            &Path::from(record_key(INDEX)),
            PutPayload::from_static(b"\x00\x01"),
        )
        .await
        .expect("damage the record");

    let reg = registry(inner.clone());
    reg.recover(INDEX).await.expect("recover");
    assert!(matches!(reg.usable(INDEX), Err(Error::IndexDamaged { .. })));
    let recovered = reg.repair(INDEX).await.expect("repair");
    assert_eq!(recovered, [2, 1]);
    let entry = reg.usable(INDEX).expect("usable again");
    let record = entry.record();
    assert_eq!((record.active, record.next_generation), (2, 4));
    assert_eq!(record.dataset, "d");
    assert_eq!(entry.active().expect("loaded").generation, 2);
    assert!(matches!(
        reg.repair(INDEX).await,
        Err(Error::NotDamaged { .. })
    ));
    // The unfinished generation's files are gone; the record reads back.
    assert!(!keys(&inner).await.iter().any(|k| k.contains("gen-3/")));
    let again = registry(inner.clone());
    again.recover(INDEX).await.expect("recover");
    assert_eq!(again.usable(INDEX).expect("entry").record().active, 2);
}

#[tokio::test]
async fn an_index_unread_at_start_is_never_overwritten_and_repair_loads_it() {
    let inner = Arc::new(InMemory::new());
    let reg = registry(inner.clone());
    reg.create(new_record()).await.expect("create");
    build_ready(&reg, 1, true).await.expect("gen 1");

    // A start where storage failed for this index: it is not registered.
    let reg = registry(inner.clone());
    assert!(matches!(
        reg.create(new_record()).await,
        Err(Error::IndexExists { .. })
    ));
    assert!(
        keys(&inner)
            .await
            .iter()
            .any(|k| k.contains("gen-1/graph.bin"))
    );
    reg.register_unreadable(INDEX, "storage was down".into());
    assert!(matches!(reg.usable(INDEX), Err(Error::IndexDamaged { .. })));
    // Storage answers again: RepairIndex loads the intact record.
    assert_eq!(reg.repair(INDEX).await.expect("repair"), [1]);
    let entry = reg.usable(INDEX).expect("usable");
    assert_eq!(entry.active().expect("loaded").generation, 1);
}

/// A first build that failed leaves nothing to keep: a create of the same
/// name replaces it (its record and files), where one with a READY
/// generation, or with a build running, is refused.
#[tokio::test]
async fn a_create_replaces_an_index_whose_only_build_failed() {
    let inner = Arc::new(InMemory::new());
    let reg = registry(inner.clone());
    let entry = reg.create(new_record()).await.expect("create");
    assert!(
        matches!(
            reg.create(new_record()).await,
            Err(Error::IndexExists { .. })
        ),
        "a build is running"
    );
    let failed = Outcome::Ended {
        state: GenerationState::Failed,
        error: "column v is Utf8".into(),
        failure: None,
        build_ms: 1,
    };
    reg.finish(&entry, 1, failed).await.expect("failed");

    let mut corrected = new_record();
    corrected.vector_column = "embedding".into();
    let replaced = reg.create(corrected).await.expect("replaced");
    assert!(!reg.is_registered(INDEX, &entry));
    assert!(reg.is_registered(INDEX, &replaced));
    let stored = reg
        .store()
        .read_record(INDEX)
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(stored.vector_column, "embedding");
    assert_eq!(stored.generations.len(), 1);
    assert_eq!(stored.generations[0].state, GenerationState::Building);

    // Once built, the name is taken for good.
    build_ready(&reg, 1, true).await.expect("ready");
    assert!(matches!(
        reg.create(new_record()).await,
        Err(Error::IndexExists { .. })
    ));
}
