//! `lakehouse index | search | eval | trial | tune`: the vector service from
//! the shell, for people (tab-separated lines) and agents (`--output json`,
//! one JSON document per result). Long operations print one line per
//! progress step and per trial on stderr, so stdout stays the result.
//!
//! Exit codes are those of [`crate::cmd`].

use std::process::ExitCode;

use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;
use serde_json::{Value, json};

use crate::cmd::{
    CliError, Output, Progress, Result, Table, VectorTarget, build_step, check, print,
};
use crate::index_check::require_index;

/// `lakehouse index …`.
#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub target: VectorTarget,
    #[command(subcommand)]
    pub command: IndexCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum IndexCommand {
    /// Build a new index over a dataset's vector column.
    Create {
        /// Index name.
        name: String,
        /// Catalog dataset.
        #[arg(long)]
        dataset: String,
        /// Id column (integer or string).
        #[arg(long, default_value = "id")]
        id_column: String,
        /// Vector column.
        #[arg(long, default_value = "embedding")]
        vector_column: String,
        /// Text column returned with hits.
        #[arg(long, default_value = "")]
        text_column: String,
        /// cosine, l2 or dot.
        #[arg(long, default_value = "cosine")]
        metric: String,
        /// Links per node (0: default 16).
        #[arg(long, default_value_t = 0)]
        m: u32,
        /// Build candidate list (0: default 80).
        #[arg(long, default_value_t = 0)]
        ef_construction: u32,
        /// Columns kept with the index, returned with hits (`search
        /// --payload`) and filtered on (`search --where`); repeat or
        /// comma-separate.
        #[arg(long = "payload-column", value_delimiter = ',')]
        payload_columns: Vec<String>,
    },
    /// Build a new generation of an index (new parameters, or the dataset's
    /// current data); searches keep using the active one meanwhile.
    Rebuild {
        /// Index name.
        name: String,
        /// Links per node (0 with --ef-construction 0: keep the active
        /// generation's parameters).
        #[arg(long, default_value_t = 0)]
        m: u32,
        /// Build candidate list (0: see --m).
        #[arg(long, default_value_t = 0)]
        ef_construction: u32,
        /// Make the new generation active when it is ready.
        #[arg(long)]
        promote: bool,
    },
    /// List an index's generations (builds), newest first.
    Generations {
        /// Index name.
        name: String,
    },
    /// Make a READY generation the one searches use.
    Promote {
        /// Index name.
        name: String,
        /// Generation number (see `index generations`).
        generation: u64,
        /// Refuse (exit 4) unless this generation is active now.
        #[arg(long)]
        expected_active: Option<u64>,
    },
    /// Make the previously active generation active again.
    Rollback {
        /// Index name.
        name: String,
        /// Refuse (exit 4) unless this generation is active now.
        #[arg(long)]
        expected_active: Option<u64>,
    },
    /// List indexes.
    Ls,
    /// Show one index.
    Show {
        /// Index name.
        name: String,
    },
    /// Delete an index and its generations.
    Rm {
        /// Index name.
        name: String,
    },
    /// Rebuild a DAMAGED index's record from the generations in storage.
    Repair {
        /// Index name.
        name: String,
    },
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

/// `lakehouse trial …`.
#[derive(Debug, clap::Args)]
pub struct TrialArgs {
    #[command(flatten)]
    pub target: VectorTarget,
    #[command(subcommand)]
    pub command: TrialCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TrialCommand {
    /// Build with given parameters and measure against an eval set.
    Run {
        /// Index name.
        #[arg(long)]
        index: String,
        /// Eval set name.
        #[arg(long)]
        eval_set: String,
        /// Links per node (0: default).
        #[arg(long, default_value_t = 0)]
        m: u32,
        /// Build candidate list (0: default).
        #[arg(long, default_value_t = 0)]
        ef_construction: u32,
        /// ef_search values to measure, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ef_search: Vec<u32>,
        /// Keep the build as an inactive generation.
        #[arg(long)]
        keep: bool,
    },
    /// List journaled trials, best recall first.
    Ls {
        /// Index name.
        #[arg(long)]
        index: String,
    },
    /// The best trial meeting a recall floor (lowest p50).
    Best {
        /// Index name.
        #[arg(long)]
        index: String,
        /// Recall floor, 0 to 1.
        #[arg(long, default_value_t = 0.95)]
        min_recall: f64,
    },
}

/// `lakehouse tune`.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub target: VectorTarget,
    /// Index name.
    #[arg(long)]
    pub index: String,
    /// Eval set name.
    #[arg(long)]
    pub eval_set: String,
    /// Recall target, 0 to 1.
    #[arg(long, default_value_t = 0.95)]
    pub min_recall: f64,
    /// Full-size builds (0: default 4).
    #[arg(long, default_value_t = 0)]
    pub max_builds: u32,
    /// Promote the winner's build.
    #[arg(long)]
    pub promote: bool,
}

pub(crate) async fn client(target: &VectorTarget) -> Result<VectorClient> {
    Ok(lakehouse_client::vector(target.channel().await?))
}

fn index_json(i: &pb::Index) -> Value {
    let config = i.config.unwrap_or_default();
    json!({
        "name": i.name, "dataset": i.dataset, "state": i.state().as_str_name(),
        "vector_count": i.vector_count, "dimensions": i.dimensions,
        "active_generation": i.active_generation, "m": config.m,
        "ef_construction": config.ef_construction, "ef_search": i.ef_search,
        "stale": i.stale, "memory_bytes": i.memory_bytes, "error": i.error,
    })
}

fn generation_json(g: &pb::Generation) -> Value {
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
fn print_build(out: Output, finished: Option<pb::BuildFinished>, call: &'static str) -> Result<()> {
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

fn trial_json(t: &pb::Trial) -> Value {
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

fn trial_line(t: &pb::Trial) -> String {
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

pub async fn index(args: IndexArgs) -> Result<ExitCode> {
    let out = args.target.output;
    let mut client = client(&args.target).await?;
    match args.command {
        IndexCommand::Create {
            name,
            dataset,
            id_column,
            vector_column,
            text_column,
            metric,
            m,
            ef_construction,
            payload_columns,
        } => {
            let metric = match metric.as_str() {
                "cosine" => pb::Metric::Cosine,
                "l2" => pb::Metric::L2,
                "dot" => pb::Metric::Dot,
                other => {
                    return Err(CliError::UnknownMetric {
                        name: other.to_owned(),
                    }
                    .into());
                }
            };
            let mut stream = client
                .create_index(pb::CreateIndexRequest {
                    name,
                    dataset,
                    id_column,
                    text_column,
                    vector_column,
                    metric: metric as i32,
                    config: Some(pb::HnswConfig { m, ef_construction }),
                    payload_columns,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let progress = Progress::new();
            let mut finished = None;
            while let Some(message) = stream.message().await? {
                use pb::create_index_response::Event;
                match message.event {
                    Some(Event::Started(s)) => {
                        progress.note(format!("building {} generation {}", s.index, s.generation))
                    }
                    Some(Event::Progress(p)) => build_step(&progress, &p),
                    Some(Event::Finished(f)) => finished = Some(f),
                    None => {}
                }
            }
            drop(progress);
            print_build(out, finished, "CreateIndex")?;
        }
        IndexCommand::Rebuild {
            name,
            m,
            ef_construction,
            promote,
        } => {
            let config =
                (m > 0 || ef_construction > 0).then_some(pb::HnswConfig { m, ef_construction });
            let mut stream = client
                .rebuild_index(pb::RebuildIndexRequest {
                    name,
                    config,
                    promote,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let progress = Progress::new();
            let mut finished = None;
            while let Some(message) = stream.message().await? {
                use pb::rebuild_index_response::Event;
                match message.event {
                    Some(Event::Started(s)) => progress.note(format!(
                        "rebuilding {} as generation {}",
                        s.index, s.generation
                    )),
                    Some(Event::Progress(p)) => build_step(&progress, &p),
                    Some(Event::Finished(f)) => finished = Some(f),
                    None => {}
                }
            }
            drop(progress);
            print_build(out, finished, "RebuildIndex")?;
        }
        IndexCommand::Generations { name } => {
            let mut table = Table::new(
                out,
                &[
                    "GENERATION",
                    "STATE",
                    "ACTIVE",
                    "VECTORS",
                    "M",
                    "EFC",
                    "BUILD",
                    "TRIAL",
                ],
            );
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_generations(pb::ListGenerationsRequest {
                        index: name.clone(),
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for g in &page.generations {
                    let c = g.config.unwrap_or_default();
                    table.row(&generation_json(g), || {
                        vec![
                            g.generation.to_string(),
                            g.state()
                                .as_str_name()
                                .trim_start_matches("GENERATION_STATE_")
                                .to_owned(),
                            if g.active { "yes" } else { "" }.to_owned(),
                            g.vector_count.to_string(),
                            c.m.to_string(),
                            c.ef_construction.to_string(),
                            format!("{:.1}s", g.build_duration_ms as f64 / 1e3),
                            g.trial_id.clone(),
                        ]
                    });
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            table.finish();
        }
        IndexCommand::Promote {
            name,
            generation,
            expected_active,
        } => {
            let index = client
                .promote_generation(pb::PromoteGenerationRequest {
                    index: name,
                    generation,
                    expected_active_generation: expected_active,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .index
                .unwrap_or_default();
            print(out, &index_json(&index), || {
                format!(
                    "{}\tgeneration {} active",
                    index.name, index.active_generation
                )
            });
        }
        IndexCommand::Rollback {
            name,
            expected_active,
        } => {
            let index = client
                .rollback_generation(pb::RollbackGenerationRequest {
                    index: name,
                    expected_active_generation: expected_active,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .index
                .unwrap_or_default();
            print(out, &index_json(&index), || {
                format!(
                    "{}\tgeneration {} active",
                    index.name, index.active_generation
                )
            });
        }
        IndexCommand::Ls => {
            let mut table = Table::new(out, &["NAME", "DATASET", "STATE", "VECTORS", "GENERATION"]);
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_indexes(pb::ListIndexesRequest {
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for i in &page.indexes {
                    table.row(&index_json(i), || {
                        vec![
                            i.name.clone(),
                            i.dataset.clone(),
                            i.state().as_str_name().to_owned(),
                            i.vector_count.to_string(),
                            i.active_generation.to_string(),
                        ]
                    });
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            table.finish();
        }
        IndexCommand::Show { name } => {
            let index = client
                .get_index(pb::GetIndexRequest { name })
                .await?
                .into_inner()
                .index
                .unwrap_or_default();
            let value = index_json(&index);
            print(out, &value, || format!("{value:#}"));
        }
        IndexCommand::Rm { name } => {
            client
                .delete_index(pb::DeleteIndexRequest {
                    name,
                    ..Default::default()
                })
                .await?;
        }
        IndexCommand::Repair { name } => {
            let repaired = client
                .repair_index(pb::RepairIndexRequest {
                    name,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let value = index_json(&repaired.index.unwrap_or_default());
            print(out, &value, || {
                format!(
                    "recovered generations {:?}\n{value:#}",
                    repaired.recovered_generations
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
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

pub async fn trial(args: TrialArgs) -> Result<ExitCode> {
    let out = args.target.output;
    let mut client = client(&args.target).await?;
    match args.command {
        TrialCommand::Run {
            index,
            eval_set,
            m,
            ef_construction,
            ef_search,
            keep,
        } => {
            let mut stream = client
                .run_trial(pb::RunTrialRequest {
                    index,
                    eval_set,
                    config: Some(pb::HnswConfig { m, ef_construction }),
                    ef_search,
                    keep_generation: keep,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let progress = Progress::new();
            while let Some(message) = stream.message().await? {
                use pb::run_trial_response::Event;
                match message.event {
                    Some(Event::Started(s)) => progress.note(format!("trial run {}", s.run_id)),
                    Some(Event::Progress(p)) => build_step(&progress, &p),
                    Some(Event::Trial(t)) => {
                        progress.suspend(|| print(out, &trial_json(&t), || trial_line(&t)))
                    }
                    Some(Event::Finished(f)) => check(f.status)?,
                    None => {}
                }
            }
        }
        TrialCommand::Ls { index } => {
            let (mut page_token, mut listed) = (String::new(), 0);
            loop {
                let page = client
                    .list_trials(pb::ListTrialsRequest {
                        index: index.clone(),
                        order_by: pb::TrialFigure::Recall as i32,
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                listed += page.trials.len();
                for t in &page.trials {
                    print(out, &trial_json(t), || trial_line(t));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if listed == 0 {
                require_index(&mut client, &index).await?;
            }
        }
        TrialCommand::Best { index, min_recall } => {
            let request = pb::BestTrialRequest {
                index: index.clone(),
                min_recall,
                ..Default::default()
            };
            let trial = match client.best_trial(request).await {
                Err(none) if none.code() == tonic::Code::NotFound => {
                    require_index(&mut client, &index).await?;
                    return Err(none.into());
                }
                answer => answer?.into_inner().trial.unwrap_or_default(),
            };
            print(out, &trial_json(&trial), || trial_line(&trial));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn tune(args: TuneArgs) -> Result<ExitCode> {
    let out = args.target.output;
    let mut client = client(&args.target).await?;
    let mut stream = client
        .tune_index(pb::TuneIndexRequest {
            index: args.index,
            eval_set: args.eval_set,
            min_recall: args.min_recall,
            max_builds: args.max_builds,
            promote: args.promote,
            ..Default::default()
        })
        .await?
        .into_inner();
    let progress = Progress::new();
    while let Some(message) = stream.message().await? {
        use pb::tune_index_response::Event;
        match message.event {
            Some(Event::Started(s)) => progress.note(format!("tune run {}", s.run_id)),
            Some(Event::Progress(p)) => build_step(&progress, &p),
            Some(Event::Trial(t)) => progress.note(trial_line(&t)),
            Some(Event::Finished(f)) => {
                progress.finish();
                check(f.status)?;
                let best = f.best.unwrap_or_default();
                let value = json!({
                    "best": trial_json(&best),
                    "pareto": f.pareto.iter().map(trial_json).collect::<Vec<_>>(),
                    "promoted_generation": f.promoted_generation,
                    "trial_count": f.trial_count,
                });
                print(out, &value, || {
                    let mut text = format!("best\t{}", trial_line(&best));
                    for t in &f.pareto {
                        text.push_str(&format!("\npareto\t{}", trial_line(t)));
                    }
                    if f.promoted_generation > 0 {
                        text.push_str(&format!("\npromoted generation {}", f.promoted_generation));
                    }
                    text
                });
            }
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
