//! What `lakehouse index | eval | trial | tune` share (the client, each
//! message as a JSON document and as a line people read), and `eval`.
//! The verbs live beside it: `index_cmd`, `trial_cmd`, `tune_cmd`, and
//! `search_cmd`; Ctrl-C during their long work is `interrupt`'s.
//!
//! Exit codes are those of [`crate::cmd`].

use std::process::ExitCode;

use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;
use serde_json::{Value, json};

use crate::cmd::{CliError, Output, Result, VectorTarget, check, print};

pub(crate) async fn client(target: &VectorTarget) -> Result<VectorClient> {
    Ok(lakehouse_client::vector(target.channel().await?))
}

/// An index as one JSON document: everything `index show` reports, with
/// the enums as their protobuf names, so `index ls`, `show`, `create` and
/// `update` answer with the same fields.
pub(crate) fn index_json(i: &pb::Index) -> Value {
    let config = i.config.unwrap_or_default();
    json!({
        "name": i.name, "dataset": i.dataset, "state": i.state().as_str_name(),
        "metric": i.metric().as_str_name(), "id_column": i.id_column,
        "text_column": i.text_column, "vector_column": i.vector_column,
        "payload_columns": i.payload_columns,
        "vector_count": i.vector_count, "dimensions": i.dimensions,
        "active_generation": i.active_generation, "m": config.m,
        "ef_construction": config.ef_construction, "ef_search": i.ef_search,
        "dataset_version": i.dataset_version,
        "current_dataset_version": i.current_dataset_version,
        "stale": i.stale, "memory_bytes": i.memory_bytes,
        "retained_generations": i.retained_generations, "error": i.error,
        "create_time": crate::cmd::time_text(i.create_time.as_ref()),
        "update_time": crate::cmd::time_text(i.update_time.as_ref()),
    })
}

pub(crate) fn generation_json(g: &pb::Generation) -> Value {
    let config = g.config.unwrap_or_default();
    json!({
        "generation": g.generation, "state": g.state().as_str_name(), "active": g.active,
        "vector_count": g.vector_count, "m": config.m,
        "ef_construction": config.ef_construction, "trial_id": g.trial_id,
        "dataset_version": g.dataset_version, "build_duration_ms": g.build_duration_ms,
        "memory_bytes": g.memory_bytes, "error": g.error,
        "create_time": crate::cmd::time_text(g.create_time.as_ref()),
    })
}

/// Prints the outcome of a build stream (CreateIndex, RebuildIndex).
pub(crate) fn print_build(
    out: Output,
    finished: Option<pb::BuildFinished>,
    call: &'static str,
) -> Result<()> {
    let finished = finished.ok_or(CliError::NoResult { call })?;
    check(finished.status)?;
    let index = finished.index.unwrap_or_default();
    let generation = finished.generation.unwrap_or_default();
    print(out, &index_json(&index), || {
        format!(
            "{}\tgeneration {}\t{}\t{} vectors",
            index.name,
            generation.generation,
            generation
                .state()
                .as_str_name()
                .trim_start_matches("GENERATION_STATE_"),
            generation.vector_count
        )
    });
    Ok(())
}

pub(crate) fn trial_json(t: &pb::Trial) -> Value {
    let config = t.config.unwrap_or_default();
    let latency = t.latency.unwrap_or_default();
    json!({
        "trial_id": t.trial_id, "eval_set": t.eval_set, "m": config.m,
        "ef_construction": config.ef_construction, "ef_search": t.ef_search,
        "k": t.k, "recall": t.recall, "p50_us": latency.p50_us, "p95_us": latency.p95_us,
        "p99_us": latency.p99_us, "queries_per_second": t.queries_per_second,
        "build_duration_ms": t.build_duration_ms, "memory_bytes": t.memory_bytes,
        "vector_count": t.vector_count, "generation": t.generation,
    })
}

pub(crate) fn trial_line(t: &pb::Trial) -> String {
    let c = t.config.unwrap_or_default();
    let l = t.latency.unwrap_or_default();
    format!(
        "{}\tM={}\tefc={}\tef={}\trecall@{}={:.4}\tp50={}µs\tp99={}µs\tbuild={:.1}s\t{} vectors",
        t.trial_id,
        c.m,
        c.ef_construction,
        t.ef_search,
        t.k,
        t.recall,
        l.p50_us,
        l.p99_us,
        t.build_duration_ms as f64 / 1e3,
        t.vector_count
    )
}

/// `lakehouse eval …`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub target: VectorTarget,
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Sample queries from an index and compute their exact top-k.
    Create {
        /// Eval set name.
        name: String,
        /// Index name.
        #[arg(long)]
        index: String,
        /// Queries to sample.
        #[arg(long, default_value_t = 100)]
        queries: u32,
        /// Exact neighbours per query.
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// Sampler seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// List eval sets.
    Ls {
        /// Only this index's.
        #[arg(long, default_value = "")]
        index: String,
    },
}

pub async fn eval(args: EvalArgs) -> Result<ExitCode> {
    let out = args.target.output;
    let mut client = client(&args.target).await?;
    let line = |e: &pb::EvalSet| {
        format!(
            "{}\t{}\t{} queries\tk={}\t{}",
            e.name, e.index, e.query_count, e.k, e.object_key
        )
    };
    let value = |e: &pb::EvalSet| {
        json!({"name": e.name, "index": e.index, "query_count": e.query_count, "k": e.k,
               "object_key": e.object_key, "dataset_version": e.dataset_version})
    };
    match args.command {
        EvalCommand::Create {
            name,
            index,
            queries,
            k,
            seed,
        } => {
            let set = client
                .create_eval_set(pb::CreateEvalSetRequest {
                    name,
                    index,
                    query_count: queries,
                    k,
                    seed,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .eval_set
                .unwrap_or_default();
            // The server samples at most one query per vector: say so
            // rather than let a smaller set pass for the one asked for.
            if set.query_count < queries {
                eprintln!("{}", fewer_queries_note(&set, queries));
            }
            print(out, &value(&set), || line(&set));
        }
        EvalCommand::Ls { index } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_eval_sets(pb::ListEvalSetsRequest {
                        index: index.clone(),
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for e in &page.eval_sets {
                    print(out, &value(e), || line(e));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why an eval set holds fewer queries than `--queries` asked for.
fn fewer_queries_note(set: &pb::EvalSet, asked: u32) -> String {
    format!(
        "note: made {} queries, not {asked}: index {} has only {} vectors to sample from (one query each)",
        set.query_count, set.index, set.query_count
    )
}
