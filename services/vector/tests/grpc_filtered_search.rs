//! Filtered search, search by id, distance thresholds and hit vectors,
//! through real gRPC against the `serve all` stack: recall against a brute
//! force computed here (not by the service) at several selectivities, the
//! plan the planner picks for each, and the errors a bad filter gets.

// Integration tests see every dependency of the library.
#![allow(unused_crate_dependencies)]

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, FixedSizeListArray, Float32Array, Float64Array,
    Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field};
use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_shared::status::{error_metadata, error_reason};
use lakehouse_vector::hnsw::testing::clustered_vectors;
use tonic::Code;

mod common;

use common::{DIM, VectorStack as _};

const ROWS: usize = 4000;

/// A pseudo-random number in 0..100 per row, independent of the clusters.
fn bucket(row: usize, salt: u64) -> u64 {
    ((row as u64 ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % 100
}

/// The city of a row: London 50 %, Rome 39 %, Paris 10 %, null 1 %.
fn city(row: usize) -> Option<&'static str> {
    match bucket(row, 1) {
        0..50 => Some("London"),
        50..89 => Some("Rome"),
        89..99 => Some("Paris"),
        _ => None,
    }
}

/// The rate of a row, 0..100, independent of the city.
fn rate(row: usize) -> i64 {
    bucket(row, 2) as i64
}

fn rows_batch(vectors: &[f32]) -> RecordBatch {
    let n = vectors.len() / DIM;
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding = FixedSizeListArray::new(
        field,
        DIM as i32,
        Arc::new(Float32Array::from(vectors.to_vec())),
        None,
    );
    RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        (
            "text",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("doc {i}")),
            )),
        ),
        ("city", Arc::new(StringArray::from_iter((0..n).map(city)))),
        (
            "rate",
            Arc::new(Int64Array::from_iter_values((0..n).map(rate))),
        ),
        (
            "score",
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| rate(i) as f64 / 10.0),
            )),
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter_values(
                (0..n).map(|i| (i % 365) as i32),
            )),
        ),
        (
            "vip",
            Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 50 == 7)))),
        ),
        ("embedding", Arc::new(embedding)),
    ])
    .expect("batch")
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// The `k` nearest passing rows by cosine distance, computed here.
fn truth(data: &[f32], query: &[f32], k: usize, pass: impl Fn(usize) -> bool) -> Vec<String> {
    let q = normalized(query);
    let mut all: Vec<(f32, usize)> = (0..ROWS)
        .filter(|&r| pass(r))
        .map(|r| {
            let row = normalized(&data[r * DIM..(r + 1) * DIM]);
            (1.0 - row.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), r)
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter()
        .take(k)
        .map(|(_, r)| r.to_string())
        .collect()
}

fn string(s: &str) -> pb::FilterValue {
    pb::FilterValue {
        kind: Some(pb::filter_value::Kind::StringValue(s.to_owned())),
    }
}

fn int(i: i64) -> pb::FilterValue {
    pb::FilterValue {
        kind: Some(pb::filter_value::Kind::Int64Value(i)),
    }
}

fn equal(column: &str, value: pb::FilterValue) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Equal(pb::ColumnEquals {
            column: column.to_owned(),
            value: Some(value),
        })),
    }
}

fn below(column: &str, value: pb::FilterValue) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Range(pb::ColumnRange {
            column: column.to_owned(),
            lt: Some(value),
            ..Default::default()
        })),
    }
}

fn list(kind: fn(pb::FilterList) -> pb::filter::Kind, filters: Vec<pb::Filter>) -> pb::Filter {
    pb::Filter {
        kind: Some(kind(pb::FilterList { filters })),
    }
}

fn request(query: &[f32], filter: Option<pb::Filter>) -> pb::SearchRequest {
    pb::SearchRequest {
        index: "places".into(),
        vector: query.to_vec(),
        k: 10,
        filter,
        payload_columns: vec!["city".into(), "rate".into()],
        ..Default::default()
    }
}

async fn search(client: &mut VectorClient, request: pb::SearchRequest) -> pb::SearchResponse {
    client.search(request).await.expect("search").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_search_keeps_recall_at_every_selectivity_and_says_how_it_ran() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = clustered_vectors(ROWS + 20, DIM, 12, 21);
    let (data, queries) = all.split_at(ROWS * DIM);
    let stack = common::start(dir.path()).await;
    stack.dataset("places", &[rows_batch(data)]).await;
    let mut client = stack.vector_client();
    let mut create = common::create("places", "places", "create-places");
    create.payload_columns = ["city", "rate", "score", "day", "vip"]
        .map(String::from)
        .to_vec();
    let mut stream = client
        .create_index(create)
        .await
        .expect("create")
        .into_inner();
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(pb::create_index_response::Event::Finished(f)) = message.event {
            assert_eq!(f.status.expect("status").code, 0, "build");
        }
    }

    // Selectivity 50 %, 10 %, 1 % and a combination: recall against the
    // brute force above, every hit passing, and the plan the planner picks
    // at this size (4000 rows, ef 40: a walk above 30·ef matching rows).
    type Case = (
        &'static str,
        pb::Filter,
        Box<dyn Fn(usize) -> bool>,
        pb::SearchPlan,
    );
    let cases: Vec<Case> = vec![
        (
            "city = London (50 %)",
            equal("city", string("London")),
            Box::new(|r| city(r) == Some("London")),
            pb::SearchPlan::FilteredGraph,
        ),
        (
            "rate < 10 (10 %)",
            below("rate", int(10)),
            Box::new(|r| rate(r) < 10),
            pb::SearchPlan::ExactRows,
        ),
        (
            "rate < 1 (1 %)",
            below("rate", int(1)),
            Box::new(|r| rate(r) < 1),
            pb::SearchPlan::ExactRows,
        ),
        (
            "not (city = Rome) (61 %, nulls included)",
            list(
                pb::filter::Kind::NoneOf,
                vec![equal("city", string("Rome"))],
            ),
            Box::new(|r| city(r) != Some("Rome")),
            pb::SearchPlan::FilteredGraph,
        ),
        (
            "city = Paris and score < 5.0 (5 %)",
            list(
                pb::filter::Kind::AllOf,
                vec![
                    equal("city", string("Paris")),
                    below(
                        "score",
                        pb::FilterValue {
                            kind: Some(pb::filter_value::Kind::DoubleValue(5.0)),
                        },
                    ),
                ],
            ),
            Box::new(|r| city(r) == Some("Paris") && rate(r) < 50),
            pb::SearchPlan::ExactRows,
        ),
    ];
    for (name, filter, pass, plan) in &cases {
        let (mut found, mut total) = (0, 0);
        for q in queries.chunks_exact(DIM) {
            let expected = truth(data, q, 10, pass);
            let response = search(&mut client, request(q, Some(filter.clone()))).await;
            assert_eq!(response.plan, *plan as i32, "{name}: plan");
            assert_eq!(
                response.hits.len(),
                expected.len(),
                "{name}: k hits when k rows pass"
            );
            for hit in &response.hits {
                let row: usize = hit.id.parse().expect("id");
                assert!(pass(row), "{name}: row {row} does not pass");
            }
            total += expected.len();
            found += response
                .hits
                .iter()
                .filter(|h| expected.contains(&h.id))
                .count();
        }
        let recall = found as f64 / total as f64;
        eprintln!("{name}: recall@10 {recall:.4}");
        assert!(recall >= 0.95, "{name}: recall {recall}");
    }

    // Unfiltered and exact runs say so too; a filtered exact run is exact.
    let q = &queries[..DIM];
    assert_eq!(
        search(&mut client, request(q, None)).await.plan,
        pb::SearchPlan::Graph as i32
    );
    let mut exact = request(q, Some(equal("city", string("London"))));
    exact.exact = true;
    let response = search(&mut client, exact).await;
    assert_eq!(response.plan, pb::SearchPlan::Exact as i32);
    let ids: Vec<String> = response.hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(ids, truth(data, q, 10, |r| city(r) == Some("London")));

    // Fewer rows pass than k: all of them, no more. A value no row holds
    // passes nothing, without error.
    let three = (0..ROWS)
        .filter(|&r| city(r) == Some("Paris") && rate(r) == 3)
        .count();
    let filter = list(
        pb::filter::Kind::AllOf,
        vec![equal("city", string("Paris")), equal("rate", int(3))],
    );
    let response = search(&mut client, request(q, Some(filter))).await;
    assert_eq!(response.hits.len(), three.min(10));
    let response = search(&mut client, request(q, Some(equal("city", string("Oslo"))))).await;
    assert!(response.hits.is_empty());

    // Dates by string, booleans, nulls, and `in`.
    let day_filter = pb::Filter {
        kind: Some(pb::filter::Kind::Range(pb::ColumnRange {
            column: "day".into(),
            gte: Some(string("1970-01-11")),
            lt: Some(string("1970-01-21")),
            ..Default::default()
        })),
    };
    let response = search(&mut client, request(q, Some(day_filter))).await;
    let expected = truth(data, q, 10, |r| (10..20).contains(&(r % 365)));
    assert_eq!(
        response
            .hits
            .iter()
            .map(|h| h.id.clone())
            .collect::<Vec<_>>(),
        expected
    );
    let vip = equal(
        "vip",
        pb::FilterValue {
            kind: Some(pb::filter_value::Kind::BoolValue(true)),
        },
    );
    let response = search(&mut client, request(q, Some(vip))).await;
    assert_eq!(
        response
            .hits
            .iter()
            .map(|h| h.id.clone())
            .collect::<Vec<_>>(),
        truth(data, q, 10, |r| r % 50 == 7)
    );
    let nulls = pb::Filter {
        kind: Some(pb::filter::Kind::IsNull(pb::ColumnIsNull {
            column: "city".into(),
        })),
    };
    let response = search(&mut client, request(q, Some(nulls))).await;
    assert_eq!(
        response
            .hits
            .iter()
            .map(|h| h.id.clone())
            .collect::<Vec<_>>(),
        truth(data, q, 10, |r| city(r).is_none())
    );
    let either = pb::Filter {
        kind: Some(pb::filter::Kind::InList(pb::ColumnIn {
            column: "city".into(),
            values: vec![string("Paris"), string("Oslo")],
        })),
    };
    let response = search(&mut client, request(q, Some(either))).await;
    assert_eq!(
        response
            .hits
            .iter()
            .map(|h| h.id.clone())
            .collect::<Vec<_>>(),
        truth(data, q, 10, |r| city(r) == Some("Paris"))
    );

    // BatchSearch: one plan per query.
    let batch = client
        .batch_search(pb::BatchSearchRequest {
            index: "places".into(),
            queries: queries
                .chunks_exact(DIM)
                .take(3)
                .map(|q| pb::QueryVector { vector: q.to_vec() })
                .collect(),
            k: 10,
            filter: Some(below("rate", int(1))),
            ..Default::default()
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(batch.results.len(), 3);
    for (result, q) in batch.results.iter().zip(queries.chunks_exact(DIM)) {
        assert_eq!(result.plan, pb::SearchPlan::ExactRows as i32);
        let ids: Vec<String> = result.hits.iter().map(|h| h.id.clone()).collect();
        assert_eq!(ids, truth(data, q, 10, |r| rate(r) < 1));
    }
    assert!(batch.dataset_version > 0);

    // Bad filters: named column, named reason.
    let refuser = client.clone();
    let refused = |request: pb::SearchRequest| {
        let mut client = refuser.clone();
        async move { client.search(request).await.expect_err("refused") }
    };
    let status = refused(request(q, Some(equal("text", string("doc 1"))))).await;
    assert_eq!(
        (status.code(), error_reason(&status).as_deref()),
        (Code::InvalidArgument, Some("UNKNOWN_PAYLOAD_COLUMN"))
    );
    assert_eq!(error_metadata(&status, "column").as_deref(), Some("text"));
    let status = refused(request(q, Some(equal("rate", string("ten"))))).await;
    assert_eq!(
        error_reason(&status).as_deref(),
        Some("FILTER_TYPE_MISMATCH")
    );
    assert!(status.message().contains("integer"), "{}", status.message());
    let status = refused(request(q, Some(below("city", int(3))))).await;
    assert_eq!(
        error_reason(&status).as_deref(),
        Some("FILTER_TYPE_MISMATCH")
    );
    let status = refused(request(q, Some(pb::Filter { kind: None }))).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = refused(request(q, Some(below("day", string("yesterday"))))).await;
    assert!(
        status.message().contains("RFC 3339"),
        "{}",
        status.message()
    );

    // Search by id: the row's own vector, the row itself excluded.
    let by_id = pb::SearchRequest {
        index: "places".into(),
        id: "17".into(),
        k: 10,
        with_vectors: true,
        ..Default::default()
    };
    let response = search(&mut client, by_id.clone()).await;
    let ids: Vec<String> = response.hits.iter().map(|h| h.id.clone()).collect();
    assert!(!ids.contains(&"17".to_owned()), "{ids:?}");
    let own = &data[17 * DIM..18 * DIM];
    let expected = truth(data, own, 11, |r| r != 17);
    let found = ids.iter().filter(|id| expected.contains(id)).count();
    assert!(
        found >= 9,
        "search by id finds the row's neighbours: {ids:?} vs {expected:?}"
    );
    // with_vectors: each hit's stored (normalised) vector.
    for hit in &response.hits {
        let row: usize = hit.id.parse().expect("id");
        let stored = normalized(&data[row * DIM..(row + 1) * DIM]);
        assert_eq!(hit.vector.len(), DIM);
        assert!(
            hit.vector
                .iter()
                .zip(&stored)
                .all(|(a, b)| (a - b).abs() < 1e-5)
        );
    }
    let mut unknown = by_id.clone();
    unknown.id = "no-such-row".into();
    let status = refused(unknown).await;
    assert_eq!(
        (status.code(), error_reason(&status).as_deref()),
        (Code::NotFound, Some("ROW_NOT_FOUND"))
    );
    let mut both = by_id;
    both.vector = q.to_vec();
    assert_eq!(refused(both).await.code(), Code::InvalidArgument);

    // A distance threshold cuts the hits; "nothing close enough" is empty.
    let all_hits = search(&mut client, request(q, None)).await.hits;
    let mut near = request(q, None);
    near.max_distance = Some(all_hits[2].distance);
    let cut = search(&mut client, near.clone()).await.hits;
    assert!(cut.len() >= 3 && cut.len() < 10, "{} hits", cut.len());
    assert!(cut.iter().all(|h| h.distance <= all_hits[2].distance));
    near.max_distance = Some(-1.0);
    assert!(search(&mut client, near).await.hits.is_empty());

    stack.shutdown().await;
}

/// A rebuild that is not promoted can be searched by number before anyone
/// promotes it; failed and unknown generations are refused by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_search_answers_from_an_unpromoted_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = common::start(dir.path()).await;
    let first = clustered_vectors(500, DIM, 5, 3);
    stack.dataset("pins", &[common::batch(&first, 0)]).await;
    let mut client = stack.vector_client();
    let mut create = common::create("pins", "pins", "create-pins");
    create.config = Some(pb::HnswConfig {
        m: 8,
        ef_construction: 40,
    });
    let mut stream = client
        .create_index(create)
        .await
        .expect("create")
        .into_inner();
    while stream.message().await.expect("stream").is_some() {}
    // The dataset grows (a second file); generation 2 is built, not promoted.
    let second = clustered_vectors(100, DIM, 5, 4);
    stack
        .dataset(
            "pins",
            &[common::batch(&first, 0), common::batch(&second, 500)],
        )
        .await;
    let mut stream = client
        .rebuild_index(pb::RebuildIndexRequest {
            name: "pins".into(),
            promote: false,
            request_id: "rebuild-pins".into(),
            // Only ef_construction: m stays the active generation's 8 (one
            // meaning of zero: unset keeps), not the default 16.
            config: Some(pb::HnswConfig {
                m: 0,
                ef_construction: 60,
            }),
        })
        .await
        .expect("rebuild")
        .into_inner();
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(pb::rebuild_index_response::Event::Finished(f)) = message.event {
            assert_eq!(f.status.expect("status").code, 0, "rebuild");
            let config = f.generation.and_then(|g| g.config).expect("config");
            assert_eq!((config.m, config.ef_construction), (8, 60));
        }
    }
    // Row 550 exists only in generation 2: the active one does not find it,
    // the pinned one does (its own vector, at distance 0).
    let query = second[50 * DIM..51 * DIM].to_vec();
    let ask = |generation: u64| pb::SearchRequest {
        index: "pins".into(),
        vector: query.clone(),
        k: 1,
        exact: true,
        generation,
        ..Default::default()
    };
    let active = search(&mut client, ask(0)).await;
    assert_eq!(active.generation, 1);
    assert_ne!(active.hits[0].id, "550");
    let pinned = search(&mut client, ask(2)).await;
    assert_eq!((pinned.generation, pinned.hits[0].id.as_str()), (2, "550"));
    assert!(pinned.dataset_version > active.dataset_version);
    // Pinning the active generation by number is the active generation.
    assert_eq!(
        search(&mut client, ask(1)).await.hits[0].id,
        active.hits[0].id
    );
    let status = client.search(ask(9)).await.expect_err("unknown generation");
    assert_eq!(
        (status.code(), error_reason(&status).as_deref()),
        (Code::NotFound, Some("GENERATION_NOT_FOUND"))
    );
    stack.shutdown().await;
}

/// An eval set with a filter: its truth is exact over the passing rows and
/// RunTrial searches with the filter, so a trial's recall is filtered
/// recall (had either side ignored the filter, recall would be near the
/// share of rows that pass, 0.5 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eval_set_with_a_filter_measures_filtered_recall() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = common::start(dir.path()).await;
    let rows = 2000;
    let data = clustered_vectors(rows, DIM, 8, 5);
    stack.dataset("evals", &[rows_batch(&data)]).await;
    let mut client = stack.vector_client();
    let mut create = common::create("evals", "evals", "create-evals");
    create.payload_columns = vec!["city".into(), "rate".into()];
    let mut stream = client
        .create_index(create)
        .await
        .expect("create")
        .into_inner();
    while stream.message().await.expect("stream").is_some() {}

    let london = equal("city", string("London"));
    let eval = client
        .create_eval_set(pb::CreateEvalSetRequest {
            name: "london".into(),
            index: "evals".into(),
            query_count: 30,
            k: 10,
            seed: 3,
            filter: Some(london.clone()),
            ..Default::default()
        })
        .await
        .expect("eval set")
        .into_inner()
        .eval_set
        .expect("eval set");
    assert_eq!(eval.filter, Some(london), "the eval set shows its filter");

    let mut stream = client
        .run_trial(pb::RunTrialRequest {
            index: "evals".into(),
            eval_set: "london".into(),
            ef_search: vec![200],
            ..Default::default()
        })
        .await
        .expect("run trial")
        .into_inner();
    let mut recalls = Vec::new();
    while let Some(message) = stream.message().await.expect("stream") {
        match message.event {
            Some(pb::run_trial_response::Event::Trial(t)) => recalls.push(t.recall),
            Some(pb::run_trial_response::Event::Finished(f)) => {
                assert_eq!(f.status.expect("status").code, 0, "trial run");
            }
            _ => {}
        }
    }
    assert_eq!(recalls.len(), 1);
    assert!(recalls[0] >= 0.95, "filtered recall {}", recalls[0]);

    // TuneIndex says plainly that it does not take filtered eval sets yet.
    let status = client
        .tune_index(pb::TuneIndexRequest {
            index: "evals".into(),
            eval_set: "london".into(),
            ..Default::default()
        })
        .await
        .expect_err("tune refuses a filtered eval set");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("filter"), "{}", status.message());

    // A filter on a column the index does not keep is refused by name.
    let status = client
        .create_eval_set(pb::CreateEvalSetRequest {
            name: "bad".into(),
            index: "evals".into(),
            filter: Some(equal("text", string("doc 1"))),
            ..Default::default()
        })
        .await
        .expect_err("unknown column");
    assert_eq!(
        error_reason(&status).as_deref(),
        Some("UNKNOWN_PAYLOAD_COLUMN")
    );
    stack.shutdown().await;
}
