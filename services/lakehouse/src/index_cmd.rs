//! `lakehouse index …`: create, rebuild (with Ctrl-C handled by
//! [`crate::interrupt`]), cancel, update, ls, show, generations, promote,
//! rollback, rm, repair.

use std::process::ExitCode;

use lakehouse_proto::vector::v1 as pb;
use serde_json::{Value, json};

use crate::cmd::{CliError, Progress, Result, Table, VectorTarget, build_step, print};
use crate::interrupt::{
    InterruptArgs, Started, Work, building_generation, cancel_build, interruptible, state_name,
};
use crate::vector_cmd::{client, generation_json, index_json, print_build};

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
        #[command(flatten)]
        interrupt: InterruptArgs,
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
        #[command(flatten)]
        interrupt: InterruptArgs,
    },
    /// Stop a running build (after Ctrl-C on `index create|rebuild`, say);
    /// its generation ends CANCELLED.
    Cancel {
        /// Index name.
        name: String,
        /// The generation being built (see `index generations`); default:
        /// the one building now.
        #[arg(long)]
        generation: Option<u64>,
    },
    /// Change an index's live settings, without a rebuild.
    Update {
        /// Index name.
        name: String,
        /// Candidate list size of searches, 1 to 4096 (`tune` reports the
        /// winner's).
        #[arg(long)]
        ef_search: Option<u32>,
        /// READY generations kept besides the active one, 0 to 100.
        #[arg(long)]
        retained_generations: Option<u32>,
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

pub async fn index(args: IndexArgs) -> Result<ExitCode> {
    let out = args.target.output;
    if let IndexCommand::Create { interrupt, .. } | IndexCommand::Rebuild { interrupt, .. } =
        &args.command
    {
        let cancel = interrupt.cancel_on_interrupt;
        let target = &args.target;
        let work = Work::Build {
            index: args.command.index_name().to_owned(),
            generation: None,
        };
        return interruptible(target, work, cancel, |started| {
            build(target, args.command, started)
        })
        .await;
    }
    let mut client = client(&args.target).await?;
    match args.command {
        // Handled above, interruptible.
        IndexCommand::Create { .. } | IndexCommand::Rebuild { .. } => {}
        IndexCommand::Cancel { name, generation } => {
            let generation = match generation {
                Some(generation) => generation,
                None => building_generation(&mut client, &name).await?.ok_or(
                    CliError::NothingRunning {
                        what: format!("no build of index {name} is running"),
                    },
                )?,
            };
            let state = cancel_build(&mut client, &name, generation).await?;
            let value =
                json!({"index": name, "generation": generation, "state": state.as_str_name()});
            print(out, &value, || {
                format!("{name}\tgeneration {generation}\t{}", state_name(state))
            });
        }
        IndexCommand::Update {
            name,
            ef_search,
            retained_generations,
        } => {
            if ef_search.is_none() && retained_generations.is_none() {
                return Err(CliError::BadArgument {
                    what: "nothing to change: pass --ef-search or --retained-generations",
                }
                .into());
            }
            let index = client
                .update_index(pb::UpdateIndexRequest {
                    name,
                    ef_search,
                    retained_generations,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .index
                .unwrap_or_default();
            print(out, &index_json(&index), || {
                format!(
                    "{}\tef_search {}\tretained_generations {}",
                    index.name, index.ef_search, index.retained_generations
                )
            });
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
            print(out, &index_json(&index), || show_text(&index));
        }
        IndexCommand::Rm { name } => {
            client
                .delete_index(pb::DeleteIndexRequest {
                    name: name.clone(),
                    ..Default::default()
                })
                .await?;
            print(out, &json!({"name": name, "removed": true}), || {
                format!("removed index {name}")
            });
        }
        IndexCommand::Repair { name } => {
            let repaired = client
                .repair_index(pb::RepairIndexRequest {
                    name,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let index = repaired.index.unwrap_or_default();
            let mut value = index_json(&index);
            value["recovered_generations"] = json!(repaired.recovered_generations);
            print(out, &value, || {
                let recovered: Vec<String> = repaired
                    .recovered_generations
                    .iter()
                    .map(u64::to_string)
                    .collect();
                format!(
                    "recovered generations\t{}\n{}",
                    recovered.join(","),
                    show_text(&index)
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `index create` and `index rebuild`: the build stream with its progress,
/// noting the generation in `started` for Ctrl-C.
async fn build(target: &VectorTarget, command: IndexCommand, started: Started) -> Result<ExitCode> {
    let out = target.output;
    let mut client = client(target).await?;
    match command {
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
            interrupt: _,
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
                        started.build(s.generation);
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
            interrupt: _,
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
                    Some(Event::Started(s)) => {
                        started.build(s.generation);
                        progress.note(format!(
                            "rebuilding {} as generation {}",
                            s.index, s.generation
                        ))
                    }
                    Some(Event::Progress(p)) => build_step(&progress, &p),
                    Some(Event::Finished(f)) => finished = Some(f),
                    None => {}
                }
            }
            drop(progress);
            print_build(out, finished, "RebuildIndex")?;
        }
        // `index` sends only the two build verbs here.
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

impl IndexCommand {
    /// The index the command is about.
    fn index_name(&self) -> &str {
        match self {
            IndexCommand::Create { name, .. }
            | IndexCommand::Rebuild { name, .. }
            | IndexCommand::Cancel { name, .. }
            | IndexCommand::Update { name, .. }
            | IndexCommand::Generations { name }
            | IndexCommand::Promote { name, .. }
            | IndexCommand::Rollback { name, .. }
            | IndexCommand::Show { name }
            | IndexCommand::Rm { name }
            | IndexCommand::Repair { name } => name,
            IndexCommand::Ls => "",
        }
    }
}

/// `index show` for people: one `field  value` line each, the same fields
/// as the JSON document.
fn show_text(index: &pb::Index) -> String {
    let value = index_json(index);
    let Some(fields) = value.as_object() else {
        return value.to_string();
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    fields
        .iter()
        .map(|(key, field)| {
            let text = match field {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            format!("{key:<width$}  {text}").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
