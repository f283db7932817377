//! Where a build is, as its stream shows it: phases, counted progress, the
//! outcome, and the handle a build's watchers and its canceller share.

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::Error;
use crate::hnsw::BuildControl;

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a build slot.
    Queued,
    /// Reading embeddings.
    Loading,
    /// Inserting into the graph.
    Inserting,
    /// Writing to storage.
    Persisting,
    /// Measuring a trial.
    Evaluating,
}

/// Progress of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// Units done.
    pub done: u64,
    /// Units in the phase.
    pub total: u64,
    /// Since the build started.
    pub elapsed_ms: u64,
}

impl Progress {
    /// The message that closes this phase when `next` shows the build has
    /// moved on before a watcher saw it finish.
    ///
    /// A build stream samples the latest state, so a small build can go
    /// from "inserting 0 / 4" straight to "persisting", which reads as if
    /// nothing was inserted. A counted phase only ends by finishing (a
    /// failure ends the build instead), so it is closed at `total`.
    pub fn closing(&self, next: &Progress) -> Option<Progress> {
        let counted = matches!(self.phase, Phase::Loading | Phase::Inserting);
        (counted && next.phase != self.phase && self.done < self.total).then_some(Progress {
            done: self.total,
            elapsed_ms: next.elapsed_ms,
            ..*self
        })
    }
}

/// What a build stream shows: its latest progress, then its outcome.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// Running.
    Progress(Progress),
    /// Ended: Ok when the generation is ready.
    Finished(std::result::Result<(), Arc<Error>>),
}

/// A started (or replayed) build: what to name in the first message, and
/// where to watch it.
#[derive(Debug)]
pub struct BuildTicket {
    /// The index.
    pub index: String,
    /// The generation.
    pub generation: u64,
    /// A retry of an earlier request.
    pub replayed: bool,
    /// Events until the outcome (the latest one first).
    pub events: watch::Receiver<BuildEvent>,
}

/// A running build: its cancel switch and its event channel.
#[derive(Debug)]
pub struct RunningBuild {
    /// Cancel and insert counters.
    pub control: Arc<BuildControl>,
    /// Latest progress, then the outcome.
    pub events: watch::Sender<BuildEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phase: Phase, done: u64, total: u64, elapsed_ms: u64) -> Progress {
        Progress {
            phase,
            done,
            total,
            elapsed_ms,
        }
    }

    #[test]
    fn a_counted_phase_left_early_is_closed_at_its_total() {
        let inserting = at(Phase::Inserting, 0, 4, 10);
        let persisting = at(Phase::Persisting, 0, 1, 12);
        assert_eq!(
            inserting.closing(&persisting),
            Some(at(Phase::Inserting, 4, 4, 12))
        );
        // Still in the phase, already at its total, or not a counted phase.
        assert_eq!(inserting.closing(&at(Phase::Inserting, 2, 4, 11)), None);
        assert_eq!(at(Phase::Inserting, 4, 4, 10).closing(&persisting), None);
        assert_eq!(at(Phase::Queued, 0, 1, 0).closing(&inserting), None);
        assert_eq!(at(Phase::Persisting, 0, 1, 12).closing(&inserting), None);
    }
}
