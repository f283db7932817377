//! A `kill -9` mid-ingest loses nothing and leaves nothing: `serve all` is
//! killed while an IngestPostgres has written some parts but not committed.
//! After a restart on the same data the crashed ingest is listed FAILED
//! (reason INTERRUPTED); the same table ingested again into the same
//! dataset gives exactly the table's rows; a resync reports the dead
//! ingest's parts as uncommitted instead of adopting them; and SweepOrphans
//! (grace 0) removes them and journals each removal.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::ingest::v1 as ingest;
use lakehouse_proto::storage::v1 as storage;
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use support::{ServerProcess, psql, skip_or_fail};

/// Rows in the source table: with the small parts below, a few dozen parts.
const ROWS: u64 = 100_000;

/// Small parts and row groups so an ingest writes many parts; the sweeper's
/// timer off, so only this test sweeps.
fn server_env() -> Vec<(&'static str, String)> {
    vec![
        ("LAKEHOUSE_INGEST_BATCH_ROWS", "1024".to_owned()),
        ("LAKEHOUSE_INGEST_ROW_GROUP_ROWS", "4096".to_owned()),
        ("LAKEHOUSE_INGEST_PART_BYTES", "64KiB".to_owned()),
        ("LAKEHOUSE_INGEST_SWEEP_INTERVAL", "0".to_owned()),
    ]
}

fn table_request(dataset: &str, dsn: &str, table: &str) -> ingest::IngestPostgresRequest {
    ingest::IngestPostgresRequest {
        dataset: dataset.to_owned(),
        dsn: dsn.to_owned(),
        source: Some(ingest::ingest_postgres_request::Source::Table(
            ingest::TableSource {
                table: table.to_owned(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Every key under `prefix` in the default bucket.
async fn list(client: &lakehouse_client::StorageClient, prefix: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .clone()
            .list_objects(storage::ListObjectsRequest {
                prefix: prefix.to_owned(),
                page_token,
                ..Default::default()
            })
            .await
            .expect("ListObjects")
            .into_inner();
        keys.extend(page.objects.into_iter().map(|o| o.key));
        if page.next_page_token.is_empty() {
            return keys;
        }
        page_token = page.next_page_token;
    }
}

#[test]
fn kill_9_mid_ingest_leaves_no_data_and_its_parts_are_swept() {
    let test = "kill_9_mid_ingest_leaves_no_data_and_its_parts_are_swept";
    let Ok(url) = std::env::var("LAKEHOUSE_TEST_PG_URL") else {
        skip_or_fail(test, "LAKEHOUSE_TEST_PG_URL is not set");
        return;
    };
    if !psql(&url, "SELECT 1") {
        skip_or_fail(
            test,
            "PostgreSQL (via psql and LAKEHOUSE_TEST_PG_URL) is not reachable",
        );
        return;
    }
    let suffix = &uuid_like();
    let table = format!("crash_{suffix}");
    let dataset = format!("crashed-{suffix}");
    assert!(psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id int8 PRIMARY KEY, payload text NOT NULL);
             INSERT INTO {table} SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, {ROWS}) g;"
        )
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let env = server_env();
    let mut server = ServerProcess::start("all", dir.path(), &env);
    server.wait_healthy();
    let uri = server.uri();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // The first ingest reads the table slowly (a short sleep per row), so
    // it is still streaming when it is killed.
    let slow = ingest::IngestPostgresRequest {
        source: Some(ingest::ingest_postgres_request::Source::Query(format!(
            "SELECT id, payload FROM {table} WHERE pg_sleep(0.0001) IS NOT NULL"
        ))),
        ..table_request(&dataset, &url, &table)
    };
    let (stream, dead_ingest, leftovers) = runtime.block_on(async {
        let channel = lakehouse_client::connect(&uri).await.expect("connect");
        let mut stream = lakehouse_client::ingest(channel.clone())
            .ingest_postgres(slow)
            .await
            .expect("IngestPostgres")
            .into_inner();
        let first = stream.message().await.expect("message").expect("started");
        let Some(ingest::ingest_postgres_response::Event::Started(started)) = first.event else {
            panic!("the first message is not `started`: {first:?}");
        };
        // Wait until at least one part is in storage (the stream is kept
        // open: dropping it would cancel the ingest, which cleans up).
        let storage = lakehouse_client::storage(channel);
        let prefix = lakehouse_shared::ingest_id::ingest_prefix(&dataset, &started.ingest_id);
        let deadline = Instant::now() + Duration::from_secs(60);
        let parts = loop {
            let parts = list(&storage, &prefix).await;
            if !parts.is_empty() {
                break parts;
            }
            assert!(
                Instant::now() < deadline,
                "no part written within 60 s:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        (stream, started.ingest_id, parts)
    });

    // kill -9: no drain, no cleanup, no commit.
    let pid = server.pid().expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = server.stop().expect("exit status");
    assert!(!exit.success(), "{exit:?}");
    drop(stream);

    let mut again = ServerProcess::start("all", dir.path(), &env);
    again.wait_healthy();
    let uri = again.uri();
    runtime.block_on(async {
        let channel = lakehouse_client::connect(&uri).await.expect("connect");
        let mut ingest_client = lakehouse_client::ingest(channel.clone());
        let mut catalog_client = lakehouse_client::catalog(channel.clone());
        let storage_client = lakehouse_client::storage(channel.clone());
        let prefix = lakehouse_shared::ingest_id::ingest_prefix(&dataset, &dead_ingest);
        // Parts written after the first poll are left too.
        let leftovers: BTreeSet<String> = leftovers
            .union(&list(&storage_client, &prefix).await)
            .cloned()
            .collect();

        // The crashed ingest is listed as interrupted.
        let crashed = ingest_client
            .get_ingest(ingest::GetIngestRequest {
                ingest_id: dead_ingest.clone(),
            })
            .await
            .expect("GetIngest of the crashed ingest")
            .into_inner()
            .ingest
            .expect("ingest");
        assert_eq!(
            crashed.state,
            ingest::IngestState::Failed as i32,
            "{crashed:?}"
        );
        let status =
            lakehouse_shared::status::from_rpc_status(&crashed.status.clone().expect("status"));
        assert_eq!(
            lakehouse_shared::status::error_reason(&status).as_deref(),
            Some("INTERRUPTED"),
            "{crashed:?}"
        );
        let listed = ingest_client
            .list_ingests(ingest::ListIngestsRequest {
                dataset: dataset.clone(),
                state: ingest::IngestState::Failed as i32,
                ..Default::default()
            })
            .await
            .expect("ListIngests")
            .into_inner()
            .ingests;
        assert!(
            listed.iter().any(|i| i.ingest_id == dead_ingest),
            "{listed:?}"
        );

        // It never committed: the dataset does not exist, so CREATE works.
        let missing = catalog_client
            .get_dataset(catalog::GetDatasetRequest {
                name: dataset.clone(),
                ..Default::default()
            })
            .await
            .expect_err("the crashed ingest created no dataset");
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let mut stream = ingest_client
            .ingest_postgres(table_request(&dataset, &url, &table))
            .await
            .expect("IngestPostgres again")
            .into_inner();
        let mut finished = None;
        while let Some(message) = stream.message().await.expect("the stream ends cleanly") {
            if let Some(ingest::ingest_postgres_response::Event::Finished(done)) = message.event {
                finished = Some(done);
            }
        }
        let finished = finished.expect("a finished message");
        assert_eq!(
            finished.status.as_ref().map(|s| s.code),
            Some(0),
            "{finished:?}"
        );
        assert_eq!(finished.ingest.as_ref().map(|i| i.rows), Some(ROWS));

        // A resync does not adopt the dead ingest's parts.
        let missing_report = catalog_client
            .resync_missing(catalog::ResyncMissingRequest {
                dry_run: false,
                ..Default::default()
            })
            .await
            .expect("ResyncMissing")
            .into_inner();
        for report in missing_report
            .reports
            .iter()
            .filter(|r| r.dataset == dataset)
        {
            for change in &report.file_changes {
                assert!(
                    !leftovers.contains(&change.key),
                    "ResyncMissing adopted a leftover: {report:?}"
                );
            }
        }
        let report = catalog_client
            .resync_dataset(catalog::ResyncDatasetRequest {
                name: dataset.clone(),
                dry_run: false,
                ..Default::default()
            })
            .await
            .expect("ResyncDataset")
            .into_inner()
            .report
            .expect("report");
        let uncommitted: BTreeSet<String> = report.uncommitted_keys.iter().cloned().collect();
        assert_eq!(uncommitted, leftovers, "{report:?}");
        let info = catalog_client
            .get_dataset(catalog::GetDatasetRequest {
                name: dataset.clone(),
                ..Default::default()
            })
            .await
            .expect("GetDataset")
            .into_inner()
            .dataset
            .expect("dataset");
        assert_eq!(info.row_count, ROWS, "exactly the table's rows: {info:?}");

        // The sweeper removes the leftovers (and only them) and journals it.
        let swept = ingest_client
            .sweep_orphans(ingest::SweepOrphansRequest {
                dry_run: false,
                grace_seconds: Some(0),
                request_id: String::new(),
            })
            .await
            .expect("SweepOrphans")
            .into_inner();
        let removed: BTreeSet<String> = swept.removed.iter().map(|r| r.key.clone()).collect();
        assert_eq!(removed, leftovers, "{swept:?}");
        assert!(swept.removed.iter().all(|r| r.ingest_id == dead_ingest));
        assert!(list(&storage_client, &prefix).await.is_empty());
        let after = catalog_client
            .resync_dataset(catalog::ResyncDatasetRequest {
                name: dataset.clone(),
                dry_run: true,
                ..Default::default()
            })
            .await
            .expect("ResyncDataset after the sweep")
            .into_inner()
            .report
            .expect("report");
        assert!(after.uncommitted_keys.is_empty(), "{after:?}");
        assert!(!after.drifted, "the committed data is untouched: {after:?}");

        let store = lakehouse_client::GrpcObjectStore::new(storage_client.clone(), String::new());
        let journal_keys: Vec<Path> = store
            .list(Some(&Path::from("_lakehouse/ingests")))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .expect("list the history journal");
        let mut journal = String::new();
        for key in journal_keys {
            let bytes = store
                .get(&key)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("read");
            journal.push_str(&String::from_utf8_lossy(&bytes));
        }
        for key in &leftovers {
            assert!(
                journal
                    .lines()
                    .any(|line| line.contains("\"kind\":\"swept\"") && line.contains(key.as_str())),
                "{key} is not journaled as swept:\n{journal}"
            );
        }
    });
    assert!(psql(&url, &format!("DROP TABLE {table}")));
}

/// A short random suffix (lowercase hex), without a uuid dependency.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos & 0xffff_ffff, std::process::id())
}
