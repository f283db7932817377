//! What the vector API says, checked against what it does: a retried
//! request of a failed build answers as the build did (also after a
//! restart), and each Arrow type of a payload column maps to the
//! `google.protobuf.Value` kind the proto documents.

// Integration tests see every dependency of the library.
#![allow(unused_crate_dependencies)]

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, FixedSizeListArray, Float32Array,
    Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field};
use lakehouse_proto::vector::v1 as pb;
use lakehouse_shared::status::error_reason;
use prost_types::value::Kind;

mod common;

use common::{DIM, VectorStack as _};

async fn finished(
    client: &mut lakehouse_client::VectorClient,
    request: pb::CreateIndexRequest,
) -> pb::BuildFinished {
    let mut stream = client
        .create_index(request)
        .await
        .expect("create")
        .into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(pb::create_index_response::Event::Finished(f)) = message.event {
            last = Some(f);
        }
    }
    last.expect("a finished message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_failed_build_answers_as_the_build_did_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = common::start(dir.path()).await;
    let vectors = lakehouse_vector::hnsw::testing::clustered_vectors(50, DIM, 2, 1);
    stack.dataset("wrong", &[common::batch(&vectors, 0)]).await;
    let mut client = stack.vector_client();
    // `text` is not a vector column: the build fails with the column's reason.
    let mut request = common::create("wrong-idx", "wrong", "create-wrong");
    request.vector_column = "text".into();
    let original = finished(&mut client, request.clone())
        .await
        .status
        .expect("status");
    assert_ne!(original.code, 0);
    let original_status = lakehouse_shared::status::from_rpc_status(&original);
    let original_reason = error_reason(&original_status);
    assert!(
        original_reason
            .as_deref()
            .is_some_and(|r| r != "BUILD_FAILED"),
        "{original_reason:?}"
    );
    let check = |replayed: pb::BuildFinished| {
        let status = replayed.status.expect("status");
        assert_eq!(status.code, original.code, "same code");
        assert_eq!(status.message, original.message, "same message");
        let status = lakehouse_shared::status::from_rpc_status(&status);
        assert_eq!(error_reason(&status), original_reason, "same reason");
    };
    check(finished(&mut client, request.clone()).await);
    stack.shutdown().await;
    let stack = common::start(dir.path()).await;
    let mut client = stack.vector_client();
    check(finished(&mut client, request).await);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_arrow_type_maps_to_its_documented_payload_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = common::start(dir.path()).await;
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding = FixedSizeListArray::new(
        field,
        DIM as i32,
        Arc::new(Float32Array::from(vec![0.5f32; 2 * DIM])),
        None,
    );
    let decimal = Decimal128Array::from(vec![Some(1250), None])
        .with_precision_and_scale(10, 2)
        .expect("decimal");
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        (
            "i32",
            Arc::new(Int32Array::from(vec![Some(-7), None])) as ArrayRef,
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![9_007_199_254_740_993i64, 0])) as ArrayRef,
        ),
        (
            "u64",
            Arc::new(UInt64Array::from(vec![u64::MAX, 0])) as ArrayRef,
        ),
        (
            "f64",
            Arc::new(Float64Array::from(vec![0.25, 1.0])) as ArrayRef,
        ),
        (
            "flag",
            Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from(vec![Some("Ada"), None])) as ArrayRef,
        ),
        ("price", Arc::new(decimal) as ArrayRef),
        (
            "day",
            Arc::new(Date32Array::from(vec![19_844, 0])) as ArrayRef,
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_714_564_800_000_000, 0])
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        ("embedding", Arc::new(embedding) as ArrayRef),
    ])
    .expect("batch");
    stack.dataset("types", &[batch]).await;
    let mut client = stack.vector_client();
    let columns: Vec<String> = [
        "i32", "i64", "u64", "f64", "flag", "name", "price", "day", "at",
    ]
    .map(String::from)
    .to_vec();
    let mut request = common::create("types-idx", "types", "create-types");
    request.text_column = String::new();
    request.payload_columns = columns.clone();
    let done = finished(&mut client, request).await;
    assert_eq!(done.status.expect("status").code, 0);
    let hits = client
        .search(pb::SearchRequest {
            index: "types-idx".into(),
            vector: vec![0.5; DIM],
            k: 2,
            exact: true,
            payload_columns: columns,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    let row = |id: &str| {
        hits.iter()
            .find(|h| h.id == id)
            .expect("hit")
            .payload
            .clone()
    };
    let kind = |payload: &std::collections::HashMap<String, prost_types::Value>, column: &str| {
        payload[column].kind.clone().expect("kind")
    };
    let one = row("1");
    // Numbers that fit a double exactly are numbers.
    assert_eq!(kind(&one, "i32"), Kind::NumberValue(-7.0));
    assert_eq!(kind(&one, "f64"), Kind::NumberValue(0.25));
    assert_eq!(kind(&one, "flag"), Kind::BoolValue(true));
    assert_eq!(kind(&one, "name"), Kind::StringValue("Ada".into()));
    // 64-bit integers are decimal strings: a JSON number would round
    // 9007199254740993 to ...992.
    assert_eq!(
        kind(&one, "i64"),
        Kind::StringValue("9007199254740993".into())
    );
    assert_eq!(kind(&one, "u64"), Kind::StringValue(u64::MAX.to_string()));
    // Decimals keep their scale as text; dates and timestamps are ISO 8601.
    assert_eq!(kind(&one, "price"), Kind::StringValue("12.50".into()));
    assert_eq!(kind(&one, "day"), Kind::StringValue("2024-05-01".into()));
    assert_eq!(
        kind(&one, "at"),
        Kind::StringValue("2024-05-01T12:00:00Z".into())
    );
    // Nulls are null, whatever the type.
    let two = row("2");
    assert_eq!(kind(&two, "i32"), Kind::NullValue(0));
    assert_eq!(kind(&two, "name"), Kind::NullValue(0));
    assert_eq!(kind(&two, "price"), Kind::NullValue(0));
    stack.shutdown().await;
}
