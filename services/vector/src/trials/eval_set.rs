//! Eval sets: queries with their exact top-k neighbours, the ground truth
//! trials are scored against. Stored through storage as
//!
//! ```text
//! evals/<name>/queries.parquet   query, source_row, vector, truth_rows,
//!                                truth_ids, truth_distances
//! evals/<name>/eval_set.json     written last: the set is whole
//! ```
//!
//! A query sampled from the index's own vectors keeps its row in
//! `source_row`: that row is left out of its ground truth and out of the
//! results scored against it, or every query would find itself at distance
//! 0 and recall would be inflated by one hit in k.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float32Builder, ListArray, ListBuilder,
    RecordBatch, StringArray, StringBuilder, UInt32Array, UInt32Builder, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::measure::EvalQuery;
use crate::Metric;
use crate::error::{Error, Result};
use crate::hnsw::exact_search;
use crate::json_record::{JsonRecords, path};

/// Where every eval set lives.
pub const EVALS_PREFIX: &str = "evals/";

/// Where the queries came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Sampled from the index's vectors (self-matches excluded).
    Sampled,
    /// A dataset's vector column.
    DatasetColumn,
    /// Given in the request.
    Given,
}

/// An eval set's description, `eval_set.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSetRecord {
    /// Name.
    pub name: String,
    /// The index whose vectors are the corpus.
    pub index: String,
    /// Where the queries came from.
    pub source: Source,
    /// Sampler seed.
    pub seed: u64,
    /// Queries.
    pub query_count: u32,
    /// Exact neighbours per query.
    pub k: u32,
    /// Dimensions.
    pub dimensions: u32,
    /// Metric the truth was computed with.
    pub metric: Metric,
    /// Dataset version of the corpus.
    pub dataset_version: u64,
    /// Vectors in the corpus.
    pub corpus_vectors: u64,
    /// The Parquet file.
    pub object_key: String,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Time of the brute-force truth.
    pub ground_truth_ms: u64,
    /// The request that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Only rows passing this count: the truth is exact over them, and
    /// trials search with it (filtered recall).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<crate::filter::Filter>,
}

/// The key of an eval set's description.
pub fn record_key(name: &str) -> String {
    format!("{EVALS_PREFIX}{name}/eval_set.json")
}

/// The key of an eval set's queries.
pub fn data_key(name: &str) -> String {
    format!("{EVALS_PREFIX}{name}/queries.parquet")
}

/// `count` distinct rows of `0..n`, the same for the same seed and `n`
/// (a partial Fisher-Yates shuffle driven by splitmix64).
pub fn sample_rows(n: usize, count: usize, seed: u64) -> Vec<u32> {
    let count = count.min(n);
    let mut rows: Vec<u32> = (0..n as u32).collect();
    let mut state = seed;
    for i in 0..count {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let j = i + (z % (n - i) as u64) as usize;
        rows.swap(i, j);
    }
    rows.truncate(count);
    rows
}

/// A query before its truth is known.
#[derive(Debug, Clone)]
pub struct Query {
    /// Prepared vector.
    pub vector: Vec<f32>,
    /// Its own row, when sampled from the corpus.
    pub source_row: Option<u32>,
}

/// Queries with truth rows and distances.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    /// The queries, truth filled in.
    pub queries: Vec<EvalQuery>,
    /// Distances of the truth rows, per query.
    pub distances: Vec<Vec<f32>>,
}

/// Exact top-`k` of every query over `corpus` (queries in parallel on the
/// current rayon pool; each scan is parallel too).
pub fn ground_truth(
    corpus: &[f32],
    dim: usize,
    metric: Metric,
    queries: Vec<Query>,
    k: usize,
    passing: Option<&[u32]>,
) -> GroundTruth {
    let found: Vec<_> = queries
        .par_iter()
        .map(|q| match passing {
            None => exact_search(corpus, dim, metric, &q.vector, k, q.source_row),
            Some(rows) => {
                let rows: Vec<u32> = rows
                    .iter()
                    .copied()
                    .filter(|&r| Some(r) != q.source_row)
                    .collect();
                crate::hnsw::exact_search_rows(corpus, dim, metric, &q.vector, k, &rows)
            }
        })
        .collect();
    let distances = found
        .iter()
        .map(|hits| hits.iter().map(|h| h.distance).collect())
        .collect();
    let queries = queries
        .into_iter()
        .zip(found)
        .map(|(q, hits)| EvalQuery {
            vector: q.vector,
            exclude: q.source_row,
            truth: hits.iter().map(|h| h.id).collect(),
        })
        .collect();
    GroundTruth { queries, distances }
}

/// Encodes an eval set's queries as Parquet; `ids` turns a corpus row into
/// its id text.
pub fn encode(truth: &GroundTruth, dim: usize, ids: &StringArray) -> Result<Vec<u8>> {
    let n = truth.queries.len();
    let query: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..n as u32));
    let source: ArrayRef = Arc::new(UInt64Array::from_iter(
        truth.queries.iter().map(|q| q.exclude.map(u64::from)),
    ));
    let values =
        Float32Array::from_iter_values(truth.queries.iter().flat_map(|q| q.vector.iter().copied()));
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let vector: ArrayRef = Arc::new(
        FixedSizeListArray::try_new(item, dim as i32, Arc::new(values), None)
            .map_err(Error::EvalSetEncode)?,
    );
    let mut rows = ListBuilder::new(UInt32Builder::new());
    let mut id_texts = ListBuilder::new(StringBuilder::new());
    let mut dists = ListBuilder::new(Float32Builder::new());
    for (q, d) in truth.queries.iter().zip(&truth.distances) {
        for &row in &q.truth {
            rows.values().append_value(row);
            let id = ids.is_valid(row as usize).then(|| ids.value(row as usize));
            id_texts.values().append_option(id);
        }
        dists.values().append_slice(d);
        rows.append(true);
        id_texts.append(true);
        dists.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        query,
        source,
        vector,
        Arc::new(rows.finish()),
        Arc::new(id_texts.finish()),
        Arc::new(dists.finish()),
    ];
    let schema = Arc::new(Schema::new(
        [
            "query",
            "source_row",
            "vector",
            "truth_rows",
            "truth_ids",
            "truth_distances",
        ]
        .iter()
        .zip(&columns)
        .map(|(name, c)| Field::new(*name, c.data_type().clone(), *name == "source_row"))
        .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema, columns).map_err(Error::EvalSetEncode)?;
    let mut out = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))
        .map_err(Error::EvalSetParquet)?;
    writer.write(&batch).map_err(Error::EvalSetParquet)?;
    writer.close().map_err(Error::EvalSetParquet)?;
    Ok(out)
}

/// Decodes an eval set's queries.
pub fn decode(name: &str, bytes: Bytes) -> Result<Vec<EvalQuery>> {
    let corrupt = |reason: String| Error::Corrupt {
        what: "eval set",
        key: data_key(name),
        reason,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| corrupt(e.to_string()))?
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| corrupt(format!("no column {name}")))
        };
        let source = column("source_row")?;
        let source = source
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| corrupt("source_row is not uint64".into()))?;
        let vector = column("vector")?;
        let vector = vector
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| corrupt("vector is not a fixed-size list".into()))?;
        let truth = column("truth_rows")?;
        let truth = truth
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| corrupt("truth_rows is not a list".into()))?;
        for i in 0..batch.num_rows() {
            let v = vector.value(i);
            let v = v
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| corrupt("vector items are not float32".into()))?;
            let t = truth.value(i);
            let t = t
                .as_any()
                .downcast_ref::<UInt32Array>()
                .ok_or_else(|| corrupt("truth rows are not uint32".into()))?;
            out.push(EvalQuery {
                vector: v.values().to_vec(),
                exclude: source
                    .is_valid(i)
                    .then(|| u32::try_from(source.value(i)))
                    .transpose()
                    .map_err(|_| corrupt("source_row out of range".into()))?,
                truth: t.values().to_vec(),
            });
        }
    }
    Ok(out)
}

/// Eval sets in storage.
#[derive(Debug)]
pub struct EvalSetStore {
    store: Arc<dyn ObjectStore>,
    records: JsonRecords,
}

impl EvalSetStore {
    /// Over `store` (the default bucket).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            records: JsonRecords::new(store.clone()),
            store,
        }
    }

    /// Writes the queries, then the description that makes the set whole.
    pub async fn write(&self, record: &EvalSetRecord, parquet: Vec<u8>) -> Result<()> {
        let key = data_key(&record.name);
        self.store
            .put(&path(&key)?, PutPayload::from(parquet))
            .await
            .map_err(Error::storage("write", &key))?;
        self.records
            .write("eval set", &record_key(&record.name), record)
            .await?;
        Ok(())
    }

    /// The description of `name`, or `None`.
    pub async fn read(&self, name: &str) -> Result<Option<EvalSetRecord>> {
        self.records.read("eval set", &record_key(name)).await
    }

    /// The queries of `record`.
    pub async fn queries(&self, record: &EvalSetRecord) -> Result<Vec<EvalQuery>> {
        let key = &record.object_key;
        let bytes = self
            .store
            .get(&path(key)?)
            .await
            .map_err(Error::storage("read", key))?
            .bytes()
            .await
            .map_err(Error::storage("read", key))?;
        decode(&record.name, bytes)
    }

    /// Every whole eval set, by name.
    pub async fn list(&self) -> Result<Vec<EvalSetRecord>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&path(EVALS_PREFIX)?))
            .await
            .map_err(Error::storage("list", EVALS_PREFIX))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // A set without its description was interrupted: not listed.
            if let Some(record) = self.read(&name).await? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Deletes the description first (the set is gone at once), then the data.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let mut existed = false;
        for key in [record_key(name), data_key(name)] {
            match self.store.delete(&path(&key)?).await {
                Ok(()) => existed = true,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(Error::storage("delete", key)(source)),
            }
        }
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_for_a_seed() {
        let a = sample_rows(10_000, 100, 42);
        assert_eq!(a, sample_rows(10_000, 100, 42));
        assert_ne!(a, sample_rows(10_000, 100, 43));
        let mut unique = a.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 100, "rows are distinct");
        assert!(a.iter().all(|&r| r < 10_000));
        assert_eq!(sample_rows(5, 10, 1).len(), 5, "never more than the corpus");
    }

    #[test]
    fn sampled_queries_never_find_themselves() {
        let dim = 8;
        let corpus = crate::hnsw::testing::clustered_vectors(500, dim, 4, 7);
        let rows = sample_rows(500, 20, 3);
        let queries = rows
            .iter()
            .map(|&r| Query {
                vector: corpus[r as usize * dim..(r as usize + 1) * dim].to_vec(),
                source_row: Some(r),
            })
            .collect();
        let truth = ground_truth(&corpus, dim, Metric::L2, queries, 5, None);
        for (q, d) in truth.queries.iter().zip(&truth.distances) {
            assert!(!q.truth.contains(&q.exclude.expect("sampled")));
            assert_eq!(q.truth.len(), 5);
            assert!(d.windows(2).all(|w| w[0] <= w[1]), "nearest first");
        }
    }

    #[test]
    fn parquet_round_trips() {
        let dim = 4;
        let corpus = crate::hnsw::testing::clustered_vectors(50, dim, 2, 1);
        let queries = vec![
            Query {
                vector: corpus[..dim].to_vec(),
                source_row: Some(0),
            },
            Query {
                vector: vec![0.5; dim],
                source_row: None,
            },
        ];
        let truth = ground_truth(&corpus, dim, Metric::L2, queries, 3, None);
        let ids = StringArray::from_iter_values((0..50).map(|i| format!("id-{i}")));
        let bytes = encode(&truth, dim, &ids).expect("encode");
        let back = decode("t", Bytes::from(bytes)).expect("decode");
        assert_eq!(back.len(), 2);
        for (a, b) in back.iter().zip(&truth.queries) {
            assert_eq!(
                (&a.vector, a.exclude, &a.truth),
                (&b.vector, b.exclude, &b.truth)
            );
        }
    }
}
