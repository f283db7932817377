//! SweepOrphans against the real storage and catalog services: committed
//! parts and keys a manifest holds stay, the parts of dead ingests go (with
//! grace 0), folders younger than the grace stay, a dry run removes
//! nothing, keys outside ingest folders are never touched, a retry with a
//! request id replays its sweep, and every removal is journaled in the
//! ingest history, which a new process still reads.

#![allow(unused_crate_dependencies)]

mod common;

use std::collections::BTreeSet;

use common::{RealStack, unique};
use futures::TryStreamExt as _;
use lakehouse_ingest::IngestConfig;
use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::ingest::v1 as pb;
use lakehouse_shared::ingest_id::{ingest_prefix, new_ingest_id};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

/// The sweeper's own timer is off: only SweepOrphans sweeps here.
fn config() -> IngestConfig {
    IngestConfig {
        sweep_interval: std::time::Duration::ZERO,
        ..common::small_config()
    }
}

/// Every key under `prefix` in the default bucket.
async fn keys(store: &dyn ObjectStore, prefix: &str) -> BTreeSet<String> {
    store
        .list(Some(&Path::from(prefix)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list")
}

async fn sweep(
    client: &mut lakehouse_client::IngestClient,
    dry_run: bool,
    grace_seconds: Option<u64>,
) -> pb::SweepOrphansResponse {
    sweep_once(client, dry_run, grace_seconds, "")
        .await
        .expect("sweep")
}

async fn sweep_once(
    client: &mut lakehouse_client::IngestClient,
    dry_run: bool,
    grace_seconds: Option<u64>,
    request_id: &str,
) -> Result<pb::SweepOrphansResponse, tonic::Status> {
    client
        .sweep_orphans(pb::SweepOrphansRequest {
            dry_run,
            grace_seconds,
            request_id: request_id.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn removed_keys(response: &pb::SweepOrphansResponse) -> BTreeSet<String> {
    response.removed.iter().map(|r| r.key.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweep_removes_dead_ingests_parts_and_keeps_everything_else() {
    let stack = RealStack::start(&config()).await;
    let mut client = stack.client();
    let mut catalog_client = stack.catalog_client();
    let storage_client = stack.storage_client();
    let store = lakehouse_client::GrpcObjectStore::new(storage_client, String::new());

    // A committed ingest.
    let dataset = unique("swept");
    let csv: String = std::iter::once("id,name\n".to_owned())
        .chain((0..500).map(|i| format!("{i},name-{i}\n")))
        .collect();
    let committed = client
        .ingest_file(lakehouse_client::file_upload(
            pb::IngestFileHeader {
                dataset: dataset.clone(),
                file_name: "rows.csv".to_owned(),
                format: pb::FileFormat::Csv as i32,
                csv: Some(pb::CsvOptions {
                    has_header: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
            lakehouse_client::chunked(csv.as_bytes()),
        ))
        .await
        .expect("ingest a file")
        .into_inner()
        .ingest
        .expect("ingest");
    let committed_parts = keys(&store, &ingest_prefix(&dataset, &committed.ingest_id)).await;
    assert!(!committed_parts.is_empty());

    // The leftovers of ingests this process never ran: one in the committed
    // dataset, two parts of an aborted CREATE (a dataset the catalog does
    // not know).
    let put = |key: String, bytes: &'static [u8]| {
        let store = &store;
        async move {
            store
                .put(&Path::from(key.as_str()), PutPayload::from_static(bytes))
                .await
                .expect("put");
            key
        }
    };
    let dead = new_ingest_id();
    let ghost = unique("ghost");
    let ghost_ingest = new_ingest_id();
    let orphans: BTreeSet<String> = [
        put(
            format!("{}part-00000.parquet", ingest_prefix(&dataset, &dead)),
            b"dead part",
        )
        .await,
        put(
            format!("{}part-00000.parquet", ingest_prefix(&ghost, &ghost_ingest)),
            b"ghost part 0",
        )
        .await,
        put(
            format!("{}part-00001.parquet", ingest_prefix(&ghost, &ghost_ingest)),
            b"ghost part 1",
        )
        .await,
    ]
    .into();
    // A part of an ingest unknown here that the manifest holds (committed
    // by someone else): never swept.
    let held_ingest = new_ingest_id();
    let held = put(
        format!(
            "{}part-00000.parquet",
            ingest_prefix(&dataset, &held_ingest)
        ),
        b"held part",
    )
    .await;
    catalog_client
        .commit_files(catalog::CommitFilesRequest {
            name: dataset.clone(),
            mode: catalog::CommitMode::Append as i32,
            add_files: vec![catalog::DataFile {
                key: held.clone(),
                size_bytes: b"held part".len() as u64,
                row_count: 1,
                etag: String::new(),
            }],
            ..Default::default()
        })
        .await
        .expect("commit a file of an unknown ingest");
    // Keys outside ingest folders: not the sweeper's.
    let outside: BTreeSet<String> = [
        put(format!("datasets/{ghost}/notes.txt"), b"notes").await,
        put(format!("datasets/{dataset}/manual/part.parquet"), b"manual").await,
    ]
    .into();

    let everything = keys(&store, "datasets").await;

    // Everything was written just now: the configured grace (1 h) keeps it.
    let young = sweep(&mut client, false, None).await;
    assert!(young.removed.is_empty(), "{young:?}");
    assert_eq!(keys(&store, "datasets").await, everything);

    // A dry run reports exactly the orphans and removes nothing.
    let dry = sweep(&mut client, true, Some(0)).await;
    assert_eq!(removed_keys(&dry), orphans);
    assert_eq!(keys(&store, "datasets").await, everything);
    let expected_bytes: u64 = [
        b"dead part".len(),
        b"ghost part 0".len(),
        b"ghost part 1".len(),
    ]
    .iter()
    .map(|n| *n as u64)
    .sum();
    assert_eq!(dry.bytes_removed, expected_bytes);

    // With grace 0 the orphans go; everything else stays.
    let swept = sweep_once(&mut client, false, Some(0), "sweep-1")
        .await
        .expect("sweep");
    assert_eq!(removed_keys(&swept), orphans);
    assert_eq!(swept.bytes_removed, expected_bytes);
    for object in &swept.removed {
        assert!(!object.bucket.is_empty(), "{object:?}");
        let expected_ingest = if object.key.contains(&dead) {
            &dead
        } else {
            &ghost_ingest
        };
        assert_eq!(&object.ingest_id, expected_ingest);
    }
    let left = keys(&store, "datasets").await;
    let expected_left: BTreeSet<String> = everything.difference(&orphans).cloned().collect();
    assert_eq!(left, expected_left);
    assert!(committed_parts.is_subset(&left));
    assert!(left.contains(&held));
    assert!(outside.is_subset(&left));

    // Nothing is left to sweep.
    let again = sweep(&mut client, false, Some(0)).await;
    assert!(again.removed.is_empty(), "{again:?}");

    // A retry with the first sweep's request id returns its result and
    // sweeps nothing new; another id sweeps; a bad id is refused.
    let late = put(
        format!(
            "{}part-00000.parquet",
            ingest_prefix(&ghost, &new_ingest_id())
        ),
        b"late part",
    )
    .await;
    let replayed = sweep_once(&mut client, false, Some(0), "sweep-1")
        .await
        .expect("retried sweep");
    assert_eq!(replayed, swept, "the first sweep's result");
    assert!(
        keys(&store, "datasets").await.contains(&late),
        "not swept by a retry"
    );
    let bad = sweep_once(&mut client, false, Some(0), "not an id")
        .await
        .expect_err("a request id with spaces");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let second = sweep_once(&mut client, false, Some(0), "sweep-2")
        .await
        .expect("sweep");
    assert_eq!(removed_keys(&second), BTreeSet::from([late.clone()]));

    // Each removal is in the ingest history journal...
    let mut journal = String::new();
    for key in keys(&store, "_lakehouse/ingests").await {
        let bytes = store
            .get(&Path::from(key.as_str()))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("read");
        journal.push_str(&String::from_utf8_lossy(&bytes));
    }
    for key in &orphans {
        assert!(
            journal
                .lines()
                .any(|line| line.contains("\"kind\":\"swept\"") && line.contains(key.as_str())),
            "{key} is not journaled as swept:\n{journal}"
        );
    }
    // ...and a new process reads the history past those lines.
    let (reader, reader_addr) = stack.another_ingest(&config()).await;
    let mut reader_client =
        lakehouse_client::ingest(lakehouse_client::connect_lazy(&reader_addr).expect("addr"));
    let listed = reader_client
        .get_ingest(pb::GetIngestRequest {
            ingest_id: committed.ingest_id.clone(),
        })
        .await
        .expect("the committed ingest, read back past the swept lines")
        .into_inner()
        .ingest
        .expect("ingest");
    assert_eq!(listed.state, pb::IngestState::Succeeded as i32);

    reader.shutdown().await;
    stack.shutdown().await;
}
