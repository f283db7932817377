//! IngestFile end to end: CSV (inferred and declared schemas, a bad row),
//! NDJSON and Parquet uploads, through the same parts-and-commit pipeline.

#![allow(unused_crate_dependencies)]

mod common;

use std::sync::Arc;

use arrow::array::{AsArray as _, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use common::{Stack, small_config, unique};
use lakehouse_proto::ingest::v1 as pb;
use lakehouse_shared::secrets::StaticSecrets;
use tonic::Code;

fn header(
    dataset: &str,
    format: pb::FileFormat,
    csv: Option<pb::CsvOptions>,
) -> pb::IngestFileRequest {
    pb::IngestFileRequest {
        part: Some(pb::ingest_file_request::Part::Header(
            pb::IngestFileHeader {
                dataset: dataset.to_owned(),
                file_name: "upload.data".to_owned(),
                format: format as i32,
                csv,
                ..Default::default()
            },
        )),
    }
}

/// The commit message that ends an upload of `data`.
fn commit(data: &[u8]) -> pb::IngestFileRequest {
    pb::IngestFileRequest {
        part: Some(pb::ingest_file_request::Part::Commit(
            pb::IngestFileCommit {
                size_bytes: data.len() as u64,
                crc32c: crc32c::crc32c(data),
            },
        )),
    }
}

/// The header, `data` in small chunks (so rows straddle chunks), no commit.
fn messages(head: pb::IngestFileRequest, data: &[u8]) -> Vec<pb::IngestFileRequest> {
    let mut messages = vec![head];
    messages.extend(data.chunks(7).map(|c| pb::IngestFileRequest {
        part: Some(pb::ingest_file_request::Part::Chunk(
            bytes::Bytes::copy_from_slice(c),
        )),
    }));
    messages
}

/// Uploads `data` in small chunks, then its commit.
async fn upload(
    stack: &Stack,
    head: pb::IngestFileRequest,
    data: &[u8],
) -> Result<pb::Ingest, tonic::Status> {
    let mut messages = messages(head, data);
    messages.push(commit(data));
    stack
        .client()
        .ingest_file(futures::stream::iter(messages))
        .await
        .map(|r| r.into_inner().ingest.expect("ingest"))
}

fn csv(has_header: bool) -> Option<pb::CsvOptions> {
    Some(pb::CsvOptions {
        has_header,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_with_a_bad_row_names_the_line() {
    let stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let dataset = unique("badcsv");
    let data = "id,name,score\n1,ann,1.5\n2,bob,2.5\n3,cy,oops\n4,dee,4.5\n";
    let declared = pb::CsvOptions {
        has_header: true,
        columns: vec![
            pb::ColumnSpec {
                name: "id".into(),
                data_type: "Int64".into(),
                nullable: false,
            },
            pb::ColumnSpec {
                name: "name".into(),
                data_type: "Utf8".into(),
                nullable: true,
            },
            pb::ColumnSpec {
                name: "score".into(),
                data_type: "Float64".into(),
                nullable: true,
            },
        ],
        ..Default::default()
    };
    let status = upload(
        &stack,
        header(&dataset, pb::FileFormat::Csv, Some(declared)),
        data.as_bytes(),
    )
    .await
    .expect_err("bad row");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("line 4"), "{}", status.message());
    assert!(stack.files_of(&dataset).is_empty());
    assert!(stack.catalog.dataset(&dataset).is_none());

    // A row with too many fields: also named by line.
    let data = "id,name\n1,a\n2,b,extra\n";
    let status = upload(
        &stack,
        header(&dataset, pb::FileFormat::Csv, csv(true)),
        data.as_bytes(),
    )
    .await
    .expect_err("ragged row");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("line 3"), "{}", status.message());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_schema_is_inferred_and_streamed_into_parts() {
    let stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let dataset = unique("csv");
    let mut data = String::from("id;name;score\n");
    for i in 0..20_000 {
        data.push_str(&format!("{i};name {i};{}.5\n", i % 100));
    }
    data.push_str("20000;last;1.0"); // no trailing newline
    let options = pb::CsvOptions {
        has_header: true,
        delimiter: ";".to_owned(),
        infer_sample_rows: 100,
        columns: vec![],
    };
    let ingest = upload(
        &stack,
        header(&dataset, pb::FileFormat::Csv, Some(options)),
        data.as_bytes(),
    )
    .await
    .expect("csv ingest");
    assert_eq!(ingest.rows, 20_001);
    assert_eq!(ingest.source, "upload.data");
    let batches = common::read_parquet(&stack.files_of(&dataset));
    let schema = batches[0].schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(schema.field(2).data_type(), &DataType::Float64);
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(total, 20_001);
    let last = batches.last().expect("batches");
    assert_eq!(
        last.column(1).as_string::<i32>().value(last.num_rows() - 1),
        "last"
    );
    assert_eq!(
        last.column(2)
            .as_primitive::<Float64Type>()
            .value(last.num_rows() - 1),
        1.0
    );
    let lineage = stack
        .catalog
        .dataset(&dataset)
        .and_then(|d| d.lineage)
        .expect("lineage");
    assert_eq!(lineage.source, "upload.data");
    assert_eq!(lineage.rows, 20_001);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ndjson_and_parquet_uploads_are_ingested() {
    let stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let dataset = unique("ndjson");
    let data = "{\"id\": 1, \"tag\": \"a\"}\n{\"id\": 2, \"tag\": null}\n{\"id\": 3}\n";
    let ingest = upload(
        &stack,
        header(&dataset, pb::FileFormat::Ndjson, None),
        data.as_bytes(),
    )
    .await
    .expect("ndjson ingest");
    assert_eq!(ingest.rows, 3);
    let batches = common::read_parquet(&stack.files_of(&dataset));
    assert_eq!(
        batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec(),
        vec![1, 2, 3]
    );

    let status = upload(
        &stack,
        header(&unique("badjson"), pb::FileFormat::Ndjson, None),
        b"{\"id\": 1}\n{\"id\": \n",
    )
    .await
    .expect_err("bad json");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Parquet: written here, uploaded, re-encoded into our parts.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..5000)),
            Arc::new(StringArray::from_iter(
                (0..5000).map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
            )),
        ],
    )
    .expect("batch");
    let mut file = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let dataset = unique("parquet");
    let ingest = upload(
        &stack,
        header(&dataset, pb::FileFormat::Parquet, None),
        &file,
    )
    .await
    .expect("parquet ingest");
    assert_eq!(ingest.rows, 5000);
    let batches = common::read_parquet(&stack.files_of(&dataset));
    assert!(!batches[0].schema().field(0).is_nullable());
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        5000
    );

    let status = upload(
        &stack,
        header(&unique("junk"), pb::FileFormat::Parquet, None),
        b"not parquet at all",
    )
    .await
    .expect_err("junk");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("Parquet"), "{}", status.message());
    stack.shutdown().await;
}

/// Parquet as pandas, pyarrow, Spark and DuckDB write it: Snappy by default,
/// and every other standard codec, each ingested whole (issue 11, item 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parquet_in_every_standard_codec_is_ingested() {
    use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
    let stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..3000)),
            Arc::new(StringArray::from_iter_values(
                (0..3000).map(|i| format!("name {i}")),
            )),
        ],
    )
    .expect("batch");
    for codec in [
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4_RAW,
        Compression::LZ4,
        Compression::BROTLI(BrotliLevel::default()),
        Compression::ZSTD(ZstdLevel::default()),
        Compression::UNCOMPRESSED,
    ] {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(codec)
            .build();
        let mut file = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut file, schema.clone(), Some(props))
                .expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        let dataset = unique("codec");
        let ingest = upload(
            &stack,
            header(&dataset, pb::FileFormat::Parquet, None),
            &file,
        )
        .await
        .unwrap_or_else(|status| panic!("{codec:?}: {status:?}"));
        assert_eq!(ingest.rows, 3000, "{codec:?}");
        let batches = common::read_parquet(&stack.files_of(&dataset));
        let names: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(names.len(), 3000, "{codec:?}");
        assert_eq!(names[2999], "name 2999", "{codec:?}");
    }
    stack.shutdown().await;
}

fn reason(status: &tonic::Status) -> Option<String> {
    lakehouse_shared::status::error_reason(status)
}

fn with_request_id(mut head: pb::IngestFileRequest, id: &str) -> pb::IngestFileRequest {
    if let Some(pb::ingest_file_request::Part::Header(h)) = head.part.as_mut() {
        h.request_id = id.to_owned();
    }
    head
}

fn with_bucket(
    mut head: pb::IngestFileRequest,
    bucket: &str,
    mode: pb::IngestMode,
) -> pb::IngestFileRequest {
    if let Some(pb::ingest_file_request::Part::Header(h)) = head.part.as_mut() {
        h.bucket = bucket.to_owned();
        h.mode = mode as i32;
    }
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_cut_short_or_corrupted_is_never_committed() {
    let stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let data = b"id,name\n1,a\n2,b\n3,";
    // The stream ends without its commit: the last row may be cut.
    let dataset = unique("cut");
    let refused = stack
        .client()
        .ingest_file(futures::stream::iter(messages(
            header(&dataset, pb::FileFormat::Csv, csv(true)),
            data,
        )))
        .await
        .expect_err("no commit, no ingest");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("UPLOAD_INCOMPLETE"));
    assert!(stack.catalog.dataset(&dataset).is_none());
    assert!(
        stack
            .catalog
            .commits
            .lock()
            .expect("lock")
            .iter()
            .all(|c| c.name != dataset)
    );
    assert!(stack.files_of(&dataset).is_empty(), "parts were cleaned up");

    // A commit that does not match the bytes received.
    let dataset = unique("corrupt");
    let mut sent = messages(header(&dataset, pb::FileFormat::Csv, csv(true)), data);
    sent.push(commit(b"id,name\n1,a\n2,b\n3,c\n"));
    let refused = stack
        .client()
        .ingest_file(futures::stream::iter(sent))
        .await
        .expect_err("mismatch");
    assert_eq!(
        reason(&refused).as_deref(),
        Some("UPLOAD_CORRUPT"),
        "{refused:?}"
    );
    assert!(stack.catalog.dataset(&dataset).is_none());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_upload_is_applied_once_even_after_a_restart() {
    let mut stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let dataset = unique("retry");
    let data = b"id,name\n1,a\n2,b\n";
    let head = || with_request_id(header(&dataset, pb::FileFormat::Csv, csv(true)), "req-7f3a");
    let first = upload(&stack, head(), data).await.expect("first");
    // CREATE again would fail; the same request id returns the first ingest.
    let again = upload(&stack, head(), data).await.expect("retry");
    assert_eq!(again.ingest_id, first.ingest_id);
    assert_eq!(again.request_id, "req-7f3a");
    stack.restart_ingest().await;
    let after_restart = upload(&stack, head(), data)
        .await
        .expect("retry after restart");
    assert_eq!(after_restart.ingest_id, first.ingest_id);
    let commits = stack
        .catalog
        .commits
        .lock()
        .expect("lock")
        .iter()
        .filter(|c| c.name == dataset)
        .count();
    assert_eq!(commits, 1, "one commit for three calls");
    assert_eq!(stack.catalog.dataset(&dataset).expect("ds").version, 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_survives_a_restart_and_filters_by_dataset_and_state() {
    let mut stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let dataset = unique("hist");
    let good = upload(
        &stack,
        header(&dataset, pb::FileFormat::Csv, csv(true)),
        b"id\n1\n2\n",
    )
    .await
    .expect("good");
    assert_eq!(good.rows, 2, "{good:?}");
    // CREATE of an existing dataset fails.
    upload(
        &stack,
        header(&dataset, pb::FileFormat::Csv, csv(true)),
        b"id\n3\n",
    )
    .await
    .expect_err("exists");
    stack.restart_ingest().await;
    let mut client = stack.client();
    let list = |state: pb::IngestState, page_token: String| pb::ListIngestsRequest {
        dataset: dataset.clone(),
        page_size: 1,
        page_token,
        state: state as i32,
    };
    let all = client
        .list_ingests(list(pb::IngestState::Unspecified, String::new()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.ingests.len(), 1);
    assert_eq!(
        all.ingests[0].state,
        pb::IngestState::Failed as i32,
        "newest first"
    );
    let failed = &all.ingests[0];
    let status = failed
        .status
        .as_ref()
        .expect("a finished ingest has a status");
    assert_eq!(status.code, Code::AlreadyExists as i32, "{status:?}");
    // The token is bound to the filters.
    let reused = client
        .list_ingests(list(
            pb::IngestState::Succeeded,
            all.next_page_token.clone(),
        ))
        .await
        .expect_err("other filters");
    assert_eq!(reused.code(), Code::InvalidArgument);
    let rest = client
        .list_ingests(list(pb::IngestState::Unspecified, all.next_page_token))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(rest.ingests.len(), 1);
    assert_eq!(rest.ingests[0].ingest_id, good.ingest_id);
    assert!(rest.next_page_token.is_empty(), "no empty last page");
    let succeeded = client
        .list_ingests(list(pb::IngestState::Succeeded, String::new()))
        .await
        .expect("succeeded")
        .into_inner();
    assert_eq!(
        succeeded
            .ingests
            .iter()
            .map(|i| i.ingest_id.as_str())
            .collect::<Vec<_>>(),
        [good.ingest_id.as_str()]
    );
    let got = client
        .get_ingest(pb::GetIngestRequest {
            ingest_id: good.ingest_id.clone(),
        })
        .await
        .expect("get after restart")
        .into_inner()
        .ingest
        .expect("ingest");
    assert_eq!((got.rows, got.dataset_version), (2, 1));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parts_go_to_the_datasets_bucket_and_unknown_buckets_are_refused() {
    let stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let dataset = unique("bkt");
    let data = b"id\n1\n";
    let created = upload(
        &stack,
        with_bucket(
            header(&dataset, pb::FileFormat::Csv, csv(true)),
            "other",
            pb::IngestMode::Create,
        ),
        data,
    )
    .await
    .expect("create in other");
    assert_eq!(created.bucket, "other");
    // APPEND without a bucket goes to the dataset's bucket, not the default.
    let appended = upload(
        &stack,
        with_bucket(
            header(&dataset, pb::FileFormat::Csv, csv(true)),
            "",
            pb::IngestMode::Append,
        ),
        data,
    )
    .await
    .expect("append");
    assert_eq!(appended.bucket, "other");
    assert!(
        stack.files_of(&dataset).is_empty(),
        "nothing in the default bucket"
    );
    let in_other =
        lakehouse_testkit::files_under(&stack.bucket_dir("other").join("datasets").join(&dataset));
    assert_eq!(in_other.len(), 2, "{in_other:?}");
    let commits: Vec<String> = stack
        .catalog
        .commits
        .lock()
        .expect("lock")
        .iter()
        .filter(|c| c.name == dataset)
        .map(|c| c.bucket.clone())
        .collect();
    assert_eq!(commits, ["other", "other"]);
    // Naming another bucket for an existing dataset is refused.
    let refused = upload(
        &stack,
        with_bucket(
            header(&dataset, pb::FileFormat::Csv, csv(true)),
            "main",
            pb::IngestMode::Append,
        ),
        data,
    )
    .await
    .expect_err("mismatch");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("BUCKET_MISMATCH"));
    // An unknown bucket is refused, naming the known ones.
    let refused = upload(
        &stack,
        with_bucket(
            header(&unique("nob"), pb::FileFormat::Csv, csv(true)),
            "nope",
            pb::IngestMode::Create,
        ),
        data,
    )
    .await
    .expect_err("unknown bucket");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("BUCKET_NOT_FOUND"));
    assert!(
        refused.message().contains("main") && refused.message().contains("other"),
        "{}",
        refused.message()
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_whose_answer_is_lost_is_learned_by_its_request_id_not_applied_twice() {
    let stack = Stack::start(small_config(), Arc::new(StaticSecrets::default())).await;
    let dataset = unique("lost");
    *stack.catalog.lose_next_answer.lock().expect("lock") = true;
    let ingest = upload(
        &stack,
        header(&dataset, pb::FileFormat::Csv, csv(true)),
        b"id\n1\n2\n",
    )
    .await
    .expect("the commit landed, so the ingest succeeded");
    assert_eq!(ingest.state, pb::IngestState::Succeeded as i32);
    assert_eq!(ingest.dataset_version, 1);
    let commits: Vec<String> = stack
        .catalog
        .commits
        .lock()
        .expect("lock")
        .iter()
        .filter(|c| c.name == dataset)
        .map(|c| c.request_id.clone())
        .collect();
    assert_eq!(commits.len(), 2, "asked twice");
    assert_eq!(commits[0], commits[1], "with the same request id");
    assert_eq!(
        stack.catalog.dataset(&dataset).expect("ds").version,
        1,
        "applied once"
    );
    assert_eq!(stack.files_of(&dataset).len(), 1, "its part was kept");
    stack.shutdown().await;
}
