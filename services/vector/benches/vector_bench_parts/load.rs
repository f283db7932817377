//! Embedding-load rounds (`LAKEHOUSE_BENCH_LOAD_ROUNDS`): the load alone,
//! repeated, because one load is ~1.5 s and varies by ±0.1 s run to run.
//! Each round starts a build of a fresh index, waits until the stream leaves
//! the loading phase, reads the load time from GetCacheStats, then cancels
//! the build, deletes the index and evicts the cache for the next round.

use std::path::Path;

use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;

/// The load time of each round, in milliseconds (GetCacheStats `load_duration_ms`);
/// each round also prints the server's own split of it from its log.
pub async fn rounds(
    vector: &mut VectorClient,
    dataset: &str,
    config: pb::HnswConfig,
    rounds: usize,
    log: &Path,
) -> Vec<u64> {
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let index = format!("load-probe-{round}");
        let mut stream = vector
            .create_index(pb::CreateIndexRequest {
                name: index.clone(),
                dataset: dataset.to_owned(),
                id_column: "id".to_owned(),
                vector_column: "embedding".to_owned(),
                metric: pb::Metric::Cosine as i32,
                config: Some(config),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("CreateIndex {index}: {status}"))
            .into_inner();
        let mut generation = None;
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => panic!("the CreateIndex stream of {index} ended early"),
                Err(status) => panic!("CreateIndex stream of {index}: {status}"),
            };
            match message.event {
                Some(pb::create_index_response::Event::Started(s)) => {
                    generation = Some(s.generation)
                }
                Some(pb::create_index_response::Event::Progress(p))
                    if p.phase == pb::BuildPhase::Inserting as i32 =>
                {
                    break;
                }
                Some(pb::create_index_response::Event::Finished(f)) => {
                    panic!("{index} finished while loading: {:?}", f.status)
                }
                _ => {}
            }
        }
        let stats = vector
            .get_cache_stats(pb::GetCacheStatsRequest {})
            .await
            .unwrap_or_else(|status| panic!("GetCacheStats: {status}"))
            .into_inner();
        let load_ms = stats
            .entries
            .iter()
            .find(|e| e.dataset == dataset)
            .map_or_else(
                || panic!("no cache entry for {dataset}"),
                |e| e.load_duration_ms,
            );
        vector
            .cancel_build(pb::CancelBuildRequest {
                index: index.clone(),
                generation: generation.expect("the stream named its generation first"),
            })
            .await
            .unwrap_or_else(|status| panic!("CancelBuild {index}: {status}"));
        // The stream ends with its terminal message once the build stops.
        while let Ok(Some(_)) = stream.message().await {}
        vector
            .delete_index(pb::DeleteIndexRequest {
                name: index.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("DeleteIndex {index}: {status}"));
        vector
            .evict_cache(pb::EvictCacheRequest {
                dataset: dataset.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("EvictCache: {status}"));
        let log_line = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("embeddings loaded"))
            .nth(round)
            .map(|l| {
                l.split("embeddings loaded")
                    .nth(1)
                    .unwrap_or(l)
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        println!("load round {}: {load_ms} ms; server: {log_line}", round + 1);
        out.push(load_ms);
    }
    out
}
