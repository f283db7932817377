//! A stop lets running work finish: SIGTERM on `serve all` while an
//! IngestPostgres streams rows lets it commit (its commit is a call to the
//! same server, which keeps answering until the ingest is done), then the
//! process exits cleanly; a new ingest during the drain is refused.

use crate::support;

use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::ingest::v1 as ingest;
use support::{ServerProcess, psql, skip_or_fail};

#[test]
fn sigterm_during_an_ingest_lets_it_commit_then_exits() {
    let test = "sigterm_during_an_ingest_lets_it_commit_then_exits";
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
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", dir.path(), &[]);
    server.wait_healthy();
    let uri = server.uri();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // About 2 s of rows: each waits 4 ms in the source.
    let request = ingest::IngestPostgresRequest {
        dataset: "drained".into(),
        dsn: url.clone(),
        source: Some(ingest::ingest_postgres_request::Source::Query(
            "SELECT g AS id FROM generate_series(1, 500) g WHERE pg_sleep(0.004) IS NOT NULL"
                .into(),
        )),
        ..Default::default()
    };
    let mut stream = runtime.block_on(async {
        let channel = lakehouse_client::connect(&uri).await.expect("connect");
        let mut stream = lakehouse_client::ingest(channel)
            .ingest_postgres(request)
            .await
            .expect("IngestPostgres")
            .into_inner();
        let first = stream.message().await.expect("message").expect("started");
        assert!(
            matches!(
                first.event,
                Some(ingest::ingest_postgres_response::Event::Started(_))
            ),
            "{first:?}"
        );
        stream
    });
    // SIGTERM while rows are still streaming.
    let pid = server.pid().expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let refused = runtime.block_on(async {
        let channel = lakehouse_client::connect(&uri).await.expect("connect");
        let mut stream = lakehouse_client::ingest(channel)
            .ingest_postgres(ingest::IngestPostgresRequest {
                dataset: "late".into(),
                dsn: url.clone(),
                source: Some(ingest::ingest_postgres_request::Source::Query(
                    "SELECT 1 AS id".into(),
                )),
                ..Default::default()
            })
            .await;
        match &mut stream {
            Err(status) => status.code(),
            Ok(_) => tonic::Code::Ok,
        }
    });
    assert_eq!(
        refused,
        tonic::Code::Unavailable,
        "a new ingest during the drain"
    );
    let finished = runtime.block_on(async {
        let mut finished = None;
        while let Some(message) = stream.message().await.expect("the stream ends cleanly") {
            if let Some(ingest::ingest_postgres_response::Event::Finished(done)) = message.event {
                finished = Some(done);
            }
        }
        finished.expect("a finished message")
    });
    let status = finished.status.expect("status");
    assert_eq!(
        status.code,
        0,
        "the ingest committed: {status:?}\n{}",
        server.log_text()
    );
    assert_eq!(finished.ingest.map(|i| i.rows), Some(500));
    let exit = server.stop().expect("exit status");
    assert!(exit.success(), "{exit:?}\n{}", server.log_text());

    // The commit is durable: a new server over the same data sees it.
    let mut again = ServerProcess::start("all", dir.path(), &[]);
    again.wait_healthy();
    let uri = again.uri();
    let dataset = runtime.block_on(async {
        let channel = lakehouse_client::connect(&uri).await.expect("connect");
        lakehouse_client::catalog(channel)
            .get_dataset(catalog::GetDatasetRequest {
                name: "drained".into(),
                ..Default::default()
            })
            .await
            .expect("the drained ingest's dataset")
            .into_inner()
            .dataset
            .expect("dataset")
    });
    assert_eq!(dataset.row_count, 500);
}
