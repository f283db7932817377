//! `lakehouse tune`: TuneIndex from the shell. Progress is one view of the
//! whole run (round, builds made of those planned, best so far): a single
//! bar on a terminal, and in a pipe one line per event (a build's phase
//! changing, a trial measured) rather than one per percent, each with the
//! overall count. `--promote` also applies the winner's ef_search, which
//! the server's promote leaves as it was.

use std::process::ExitCode;
use std::time::Duration;

use lakehouse_proto::vector::v1 as pb;
use serde_json::json;

use crate::cmd::{Progress, Result, VectorTarget, build_line, check, print};
use crate::interrupt::{InterruptArgs, Started, Work, interruptible};
use crate::trial_cmd::Objective;
use crate::vector_cmd::{client, trial_json, trial_line};

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
    /// What to optimise among the configurations that reach the target.
    #[arg(long, value_enum, default_value = "latency")]
    pub objective: Objective,
    /// Full-size builds (0: default 4).
    #[arg(long, default_value_t = 0)]
    pub max_builds: u32,
    /// Start no new build after this long (`90s`, `10m`); the best found
    /// so far still wins. Default: no limit.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub time_budget: Option<Duration>,
    /// Promote the winner's build and set the index's ef_search to the
    /// winner's.
    #[arg(long)]
    pub promote: bool,
    #[command(flatten)]
    pub interrupt: InterruptArgs,
}

pub async fn tune(args: TuneArgs) -> Result<ExitCode> {
    let work = Work::Run {
        verb: "tune",
        index: args.index.clone(),
        run_id: None,
    };
    let cancel = args.interrupt.cancel_on_interrupt;
    interruptible(&args.target, work, cancel, |started| run(&args, started)).await
}

async fn run(args: &TuneArgs, started: Started) -> Result<ExitCode> {
    let out = args.target.output;
    let mut client = client(&args.target).await?;
    let index = client
        .get_index(pb::GetIndexRequest {
            name: args.index.clone(),
        })
        .await?
        .into_inner()
        .index
        .unwrap_or_default();
    let objective = pb::TrialObjective::from(args.objective);
    let mut stream = client
        .tune_index(pb::TuneIndexRequest {
            index: args.index.clone(),
            eval_set: args.eval_set.clone(),
            min_recall: args.min_recall,
            objective: objective as i32,
            max_builds: args.max_builds,
            promote: args.promote,
            // A budget under a second would be 0, "no limit": round up.
            time_budget_seconds: args.time_budget.map_or(0, |t| {
                t.as_secs_f64().ceil().min(f64::from(u32::MAX)) as u32
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut status = TuneStatus::new(
        plan(index.vector_count, args.max_builds),
        args.min_recall,
        args.objective,
    );
    let progress = Progress::new();
    while let Some(message) = stream.message().await? {
        use pb::tune_index_response::Event;
        match message.event {
            Some(Event::Started(s)) => {
                started.run(&s.run_id);
                progress.note(format!("tune run {}", s.run_id));
            }
            Some(Event::Progress(p)) => {
                let phase_changed = status.progress(&p);
                if progress.is_bar() {
                    progress.step(status.builds_made(), status.length(), status.summary(true));
                } else if phase_changed {
                    progress.note(status.summary(false));
                }
            }
            Some(Event::Trial(t)) => {
                status.trial(&t);
                if progress.is_bar() {
                    progress.step(status.builds_made(), status.length(), status.summary(true));
                } else {
                    progress.note(format!("{}\ttrial {}", status.overall(), trial_line(&t)));
                }
            }
            Some(Event::Finished(f)) => {
                progress.finish();
                check(f.status)?;
                let best = f.best.unwrap_or_default();
                // The server's promote swaps the graph but keeps the
                // index's ef_search; the winner was measured at its own,
                // so without this the promoted build searches at another.
                let ef_search_applied = if f.promoted_generation > 0 {
                    client
                        .update_index(pb::UpdateIndexRequest {
                            name: args.index.clone(),
                            ef_search: Some(best.ef_search),
                            ..Default::default()
                        })
                        .await?;
                    Some(best.ef_search)
                } else {
                    None
                };
                let value = json!({
                    "best": trial_json(&best),
                    "pareto": f.pareto.iter().map(trial_json).collect::<Vec<_>>(),
                    "promoted_generation": f.promoted_generation,
                    "ef_search_applied": ef_search_applied,
                    "trial_count": f.trial_count,
                });
                print(out, &value, || {
                    let mut text = format!("best\t{}", trial_line(&best));
                    for t in &f.pareto {
                        text.push_str(&format!("\npareto\t{}", trial_line(t)));
                    }
                    if let Some(ef) = ef_search_applied {
                        text.push_str(&format!(
                            "\npromoted generation {} and set ef_search to {ef}, the winner's \
                             (UpdateIndex, from the CLI)",
                            f.promoted_generation
                        ));
                    }
                    text
                });
            }
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The builds the server plans for the default grid over `vectors` (the
/// CLI sends no candidates), per round. Computed with the server crate's
/// own plan, so a CLI of another version than the server may count
/// differently: the bar says "planned", and a time budget ends it sooner.
fn plan(vectors: u64, max_builds: u32) -> Vec<u64> {
    use lakehouse_vector::trials::tune;
    let max_builds = match max_builds {
        0 => tune::DEFAULT_MAX_BUILDS,
        n => n as usize,
    };
    tune::plan(vectors as usize, tune::default_grid().len(), max_builds)
        .iter()
        .map(|rung| rung.builds as u64)
        .collect()
}

/// The whole tune run as the stream shows it: round, builds made, the
/// phase of the current build, the best trial so far.
#[derive(Debug)]
struct TuneStatus {
    /// Planned builds per round.
    plan: Vec<u64>,
    min_recall: f64,
    objective: Objective,
    /// Build labels (`r0b3`) seen in trial ids, in order.
    builds: Vec<String>,
    /// Round of the latest build, from 0.
    round: usize,
    /// The current build's phase, and its step.
    phase: Option<pb::BuildProgress>,
    /// The best trial meeting the target, else the highest recall.
    best: Option<pb::Trial>,
}

impl TuneStatus {
    fn new(plan: Vec<u64>, min_recall: f64, objective: Objective) -> Self {
        Self {
            plan,
            min_recall,
            objective,
            builds: Vec::new(),
            round: 0,
            phase: None,
            best: None,
        }
    }

    /// A build step; true when its phase differs from the last one's (a
    /// line worth printing in a pipe).
    fn progress(&mut self, p: &pb::BuildProgress) -> bool {
        let changed = self.phase.as_ref().is_none_or(|old| old.phase != p.phase);
        self.phase = Some(*p);
        changed
    }

    /// A measured trial: a new build when its label is new; maybe the best.
    fn trial(&mut self, t: &pb::Trial) {
        if let Some(label) = build_label(&t.trial_id) {
            if !self.builds.iter().any(|b| b == label) {
                self.builds.push(label.to_owned());
            }
            if let Some(round) = label_round(label) {
                self.round = round;
            }
        }
        let better = match &self.best {
            None => true,
            Some(best) => self.better(t, best),
        };
        if better {
            self.best = Some(t.clone());
        }
    }

    /// Whether `a` beats `b`: a later round first (its builds are on more
    /// vectors, and the last round's are the ones the server picks the
    /// winner from), then meeting the target, then by the objective among
    /// those that do, else by recall.
    fn better(&self, a: &pb::Trial, b: &pb::Trial) -> bool {
        let round = |t: &pb::Trial| build_label(&t.trial_id).and_then(label_round);
        if round(a) != round(b) {
            return round(a) > round(b);
        }
        let (meets_a, meets_b) = (a.recall >= self.min_recall, b.recall >= self.min_recall);
        if meets_a != meets_b {
            return meets_a;
        }
        if !meets_a {
            return a.recall > b.recall;
        }
        let p50 = |t: &pb::Trial| t.latency.unwrap_or_default().p50_us;
        match self.objective {
            Objective::Latency => p50(a) < p50(b),
            Objective::Recall => a.recall > b.recall,
            Objective::BuildTime => a.build_duration_ms < b.build_duration_ms,
            Objective::Memory => a.memory_bytes < b.memory_bytes,
            Objective::Throughput => a.queries_per_second > b.queries_per_second,
        }
    }

    fn builds_made(&self) -> u64 {
        self.builds.len() as u64
    }

    /// The bar's length: the planned builds (more if the server made more).
    fn length(&self) -> u64 {
        self.plan.iter().sum::<u64>().max(self.builds_made())
    }

    /// `round 2/3, builds 16/22 planned`.
    fn overall(&self) -> String {
        format!(
            "round {}/{}, builds {}/{} planned",
            self.round + 1,
            self.plan.len().max(self.round + 1),
            self.builds_made(),
            self.length()
        )
    }

    /// The overall line: counts, the current step, the best so far. On
    /// the bar, which draws the builds as `B/T` itself, the round only.
    fn summary(&self, bar: bool) -> String {
        let mut text = if bar {
            format!(
                "builds (planned); round {}/{}",
                self.round + 1,
                self.plan.len().max(self.round + 1)
            )
        } else {
            self.overall()
        };
        if let Some(p) = &self.phase {
            text.push_str(&format!(", now {}", build_line(p)));
        }
        if let Some(best) = &self.best {
            let c = best.config.unwrap_or_default();
            let what = if best.recall >= self.min_recall {
                "best"
            } else {
                "best recall so far"
            };
            text.push_str(&format!(
                "; {what} recall@{}={:.4} p50={}µs (M={} efc={} ef={})",
                best.k,
                best.recall,
                best.latency.unwrap_or_default().p50_us,
                c.m,
                c.ef_construction,
                best.ef_search
            ));
        }
        text
    }
}

/// The build label of a trial id `<run_id>.<label>.ef<ef_search>`.
fn build_label(trial_id: &str) -> Option<&str> {
    let mut parts = trial_id.rsplit('.');
    parts.next()?.strip_prefix("ef")?;
    parts.next()
}

/// The round of a build label: `r2b5` is round 2 (from 0).
fn label_round(label: &str) -> Option<usize> {
    label.strip_prefix('r')?.split('b').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(label: &str, ef: u32, recall: f64, p50: u64) -> pb::Trial {
        pb::Trial {
            trial_id: format!("tune-1.{label}.ef{ef}"),
            recall,
            k: 10,
            ef_search: ef,
            latency: Some(pb::LatencyStats {
                p50_us: p50,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_whole_run_counts_up_to_its_plan_once() {
        let mut status = TuneStatus::new(vec![2, 1], 0.9, Objective::Latency);
        assert_eq!(status.overall(), "round 1/2, builds 0/3 planned");
        // Two builds of round 1, each measured at several ef: counted once.
        status.trial(&trial("r0b0", 10, 0.5, 10));
        status.trial(&trial("r0b0", 16, 0.92, 20));
        status.trial(&trial("r0b1", 10, 0.95, 15));
        assert_eq!(status.overall(), "round 1/2, builds 2/3 planned");
        let best = status.best.as_ref().map(|t| t.trial_id.as_str());
        assert_eq!(
            best,
            Some("tune-1.r0b1.ef10"),
            "meets the target, lowest p50"
        );
        status.trial(&trial("r1b1", 10, 0.96, 40));
        assert_eq!(status.overall(), "round 2/2, builds 3/3 planned");
        // The last round's trial leads, though a sample's was faster.
        let best = status.best.as_ref().map(|t| t.trial_id.as_str());
        assert_eq!(best, Some("tune-1.r1b1.ef10"));
        assert!(
            status
                .summary(false)
                .contains("best recall@10=0.9600 p50=40µs")
        );
    }

    #[test]
    fn a_pipe_gets_a_line_per_phase_not_per_step() {
        let mut status = TuneStatus::new(vec![1], 0.9, Objective::Latency);
        let step = |phase: pb::BuildPhase, done| pb::BuildProgress {
            phase: phase as i32,
            done,
            total: 10,
            ..Default::default()
        };
        assert!(status.progress(&step(pb::BuildPhase::Inserting, 1)));
        assert!(!status.progress(&step(pb::BuildPhase::Inserting, 5)));
        assert!(status.progress(&step(pb::BuildPhase::Evaluating, 0)));
        assert!(!status.progress(&step(pb::BuildPhase::Evaluating, 3)));
    }

    #[test]
    fn below_the_target_the_highest_recall_leads() {
        let mut status = TuneStatus::new(vec![1], 0.99, Objective::Latency);
        status.trial(&trial("r0b0", 10, 0.8, 5));
        status.trial(&trial("r0b1", 10, 0.9, 50));
        assert!(
            status
                .summary(false)
                .contains("best recall so far recall@10=0.9000")
        );
    }

    #[test]
    fn labels_come_from_trial_ids() {
        assert_eq!(build_label("tune-ab.cd.r2b5.ef48"), Some("r2b5"));
        assert_eq!(build_label("no-label"), None);
    }
}
