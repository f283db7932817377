//! Running trial runs (RunTrial, TuneIndex): each keeps its events, so any
//! number of streams (the caller's, a retry's replay) see every trial and
//! the outcome, while progress is coalesced to the latest. A run outlives
//! its caller's stream; CancelTrialRun stops it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::record::TrialRecord;
use crate::error::Error;
use crate::hnsw::BuildControl;
use crate::progress::Progress;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Ok, or why not.
    pub status: Result<(), Arc<Error>>,
    /// RunTrial: its trials; TuneIndex: every trial it ran.
    pub trials: Vec<TrialRecord>,
    /// TuneIndex: the winner.
    pub best: Option<TrialRecord>,
    /// TuneIndex: the Pareto frontier of its full-size trials.
    pub pareto: Vec<TrialRecord>,
    /// TuneIndex: the generation the winner was promoted as; 0 when not.
    pub promoted_generation: u64,
}

impl RunOutcome {
    /// A run that ended with `error` after measuring `trials`.
    pub fn failed(error: Error, trials: Vec<TrialRecord>) -> Self {
        Self {
            status: Err(Arc::new(error)),
            trials,
            best: None,
            pareto: Vec::new(),
            promoted_generation: 0,
        }
    }
}

/// What a run's stream carries after `started`.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The latest progress.
    Progress(Progress),
    /// A journaled trial.
    Trial(Box<TrialRecord>),
    /// The end.
    Finished(Box<RunOutcome>),
}

#[derive(Debug, Default)]
struct History {
    progress: Option<Progress>,
    /// Trials and the outcome, in order.
    events: Vec<RunEvent>,
}

/// One run.
#[derive(Debug)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// The index.
    pub index: String,
    /// The eval set.
    pub eval_set: String,
    /// Cancellation and insert progress of its current build.
    pub control: Arc<BuildControl>,
    history: Mutex<History>,
    changed: watch::Sender<u64>,
}

impl Run {
    /// Reports progress (replacing the previous one).
    pub fn progress(&self, progress: Progress) {
        self.history.lock().progress = Some(progress);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Reports a journaled trial.
    pub fn trial(&self, trial: TrialRecord) {
        self.history
            .lock()
            .events
            .push(RunEvent::Trial(Box::new(trial)));
        self.changed.send_modify(|v| *v += 1);
    }

    /// Ends the run.
    pub fn finish(&self, outcome: RunOutcome) {
        {
            let mut history = self.history.lock();
            history.events.push(RunEvent::Finished(Box::new(outcome)));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.history.lock().events.last(),
            Some(RunEvent::Finished(_))
        )
    }

    /// Whether the run was told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.control.cancel.load(Ordering::Relaxed)
    }

    /// Every event from the start: each trial, the latest progress while
    /// running, and the outcome last.
    pub fn events(self: &Arc<Self>) -> impl Stream<Item = RunEvent> + Send + use<> {
        let cursor = Cursor {
            run: self.clone(),
            changed: self.changed.subscribe(),
            next: 0,
            progress_seen: None,
            done: false,
        };
        futures::stream::unfold(cursor, |mut c| async move {
            loop {
                if c.done {
                    return None;
                }
                let (event, progress) = {
                    let history = c.run.history.lock();
                    (history.events.get(c.next).cloned(), history.progress)
                };
                if let Some(event) = event {
                    c.next += 1;
                    c.done = matches!(event, RunEvent::Finished(_));
                    return Some((event, c));
                }
                if let Some(progress) = progress
                    && Some(progress) != c.progress_seen
                {
                    c.progress_seen = Some(progress);
                    return Some((RunEvent::Progress(progress), c));
                }
                // The run holds the sender, and the cursor holds the run.
                if c.changed.changed().await.is_err() {
                    return None;
                }
            }
        })
    }
}

struct Cursor {
    run: Arc<Run>,
    changed: watch::Receiver<u64>,
    next: usize,
    progress_seen: Option<Progress>,
    done: bool,
}

/// Running and recently ended runs.
#[derive(Debug, Default)]
pub struct Runs {
    runs: Mutex<HashMap<String, Arc<Run>>>,
    next: AtomicU64,
}

/// Ended runs kept for replays and late CancelTrialRun calls.
const KEEP_ENDED: usize = 64;

impl Runs {
    /// Registers a new run of `index` on `eval_set`.
    pub fn start(&self, kind: &str, index: &str, eval_set: &str) -> Arc<Run> {
        let id = format!(
            "{kind}-{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let run = Arc::new(Run {
            id: id.clone(),
            index: index.to_owned(),
            eval_set: eval_set.to_owned(),
            control: Arc::new(BuildControl::default()),
            history: Mutex::new(History::default()),
            changed: watch::Sender::new(0),
        });
        let mut runs = self.runs.lock();
        let ended: Vec<String> = runs
            .values()
            .filter(|r| r.is_finished())
            .map(|r| r.id.clone())
            .collect();
        if ended.len() >= KEEP_ENDED {
            let mut ended = ended;
            ended.sort();
            for id in ended.iter().take(ended.len() + 1 - KEEP_ENDED) {
                runs.remove(id);
            }
        }
        runs.insert(id, run.clone());
        run
    }

    /// A run by id.
    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        self.runs.lock().get(id).cloned()
    }

    /// Tells every running run to stop; returns how many were running.
    pub fn cancel_all(&self) -> usize {
        let runs = self.runs.lock();
        let running: Vec<&Arc<Run>> = runs.values().filter(|r| !r.is_finished()).collect();
        for run in &running {
            run.control.cancel.store(true, Ordering::Relaxed);
        }
        running.len()
    }

    /// Runs not yet ended.
    pub fn running(&self) -> usize {
        self.runs
            .lock()
            .values()
            .filter(|r| !r.is_finished())
            .count()
    }
}
