//! `lakehouse trial …`: run (a build measured against an eval set, with
//! Ctrl-C handled by [`crate::interrupt`]), ls, best, cancel.

use std::process::ExitCode;

use lakehouse_proto::vector::v1 as pb;
use serde_json::json;

use crate::cmd::{Progress, Result, VectorTarget, build_step, check, print};
use crate::index_check::require_index;
use crate::interrupt::{InterruptArgs, Started, Work, cancel_run, interruptible};
use crate::vector_cmd::{client, trial_json, trial_line};

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
        #[command(flatten)]
        interrupt: InterruptArgs,
    },
    /// List journaled trials, best recall first.
    Ls {
        /// Index name.
        #[arg(long)]
        index: String,
    },
    /// The best trial meeting a recall floor, by an objective.
    Best {
        /// Index name.
        #[arg(long)]
        index: String,
        /// Only trials measured on this eval set (default: all).
        #[arg(long, default_value = "")]
        eval_set: String,
        /// Recall floor, 0 to 1.
        #[arg(long, default_value_t = 0.95)]
        min_recall: f64,
        /// What "best" means among the trials that meet the floor.
        #[arg(long, value_enum, default_value = "latency")]
        objective: Objective,
    },
    /// Stop a running `trial run` or `tune` by its run id (the first line
    /// they print); the trials it measured stay journaled.
    Cancel {
        /// The run id.
        run_id: String,
    },
}

/// What "best" means among trials that meet the recall floor
/// (`TrialObjective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    /// Lowest p50 latency.
    Latency,
    /// Highest recall.
    Recall,
    /// Shortest build.
    BuildTime,
    /// Least memory.
    Memory,
    /// Highest BatchSearch throughput.
    Throughput,
}

impl From<Objective> for pb::TrialObjective {
    fn from(objective: Objective) -> Self {
        match objective {
            Objective::Latency => pb::TrialObjective::Latency,
            Objective::Recall => pb::TrialObjective::Recall,
            Objective::BuildTime => pb::TrialObjective::BuildTime,
            Objective::Memory => pb::TrialObjective::Memory,
            Objective::Throughput => pb::TrialObjective::Throughput,
        }
    }
}

pub async fn trial(args: TrialArgs) -> Result<ExitCode> {
    let out = args.target.output;
    let command = match args.command {
        TrialCommand::Run {
            index,
            eval_set,
            m,
            ef_construction,
            ef_search,
            keep,
            interrupt,
        } => {
            let target = &args.target;
            let work = Work::Run {
                verb: "trial run",
                index: index.clone(),
                run_id: None,
            };
            let request = pb::RunTrialRequest {
                index,
                eval_set,
                config: Some(pb::HnswConfig { m, ef_construction }),
                ef_search,
                keep_generation: keep,
                ..Default::default()
            };
            return interruptible(target, work, interrupt.cancel_on_interrupt, |started| {
                run(target, request, started)
            })
            .await;
        }
        other => other,
    };
    let mut client = client(&args.target).await?;
    match command {
        TrialCommand::Run { .. } => {}
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
        TrialCommand::Best {
            index,
            eval_set,
            min_recall,
            objective,
        } => {
            let request = pb::BestTrialRequest {
                index: index.clone(),
                eval_set,
                min_recall,
                objective: pb::TrialObjective::from(objective) as i32,
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
        TrialCommand::Cancel { run_id } => {
            let cancelled = cancel_run(&mut client, &run_id).await?;
            print(
                out,
                &json!({"run_id": run_id, "cancelled": cancelled}),
                || {
                    if cancelled {
                        format!("{run_id}\tcancelled")
                    } else {
                        format!("{run_id}\thad already ended")
                    }
                },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `trial run`: the stream, each trial on stdout as it is measured, the
/// run id noted in `started` for Ctrl-C.
async fn run(
    target: &VectorTarget,
    request: pb::RunTrialRequest,
    started: Started,
) -> Result<ExitCode> {
    let out = target.output;
    let mut client = client(target).await?;
    let mut stream = client.run_trial(request).await?.into_inner();
    let progress = Progress::new();
    while let Some(message) = stream.message().await? {
        use pb::run_trial_response::Event;
        match message.event {
            Some(Event::Started(s)) => {
                started.run(&s.run_id);
                progress.note(format!("trial run {}", s.run_id))
            }
            Some(Event::Progress(p)) => build_step(&progress, &p),
            Some(Event::Trial(t)) => {
                progress.suspend(|| print(out, &trial_json(&t), || trial_line(&t)))
            }
            Some(Event::Finished(f)) => check(f.status)?,
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
