//! The trial service: eval sets, trial runs, the trial journal, BestTrial
//! and TuneIndex. It holds the index registry (to read an index's active
//! generation and to adopt a trial's graph as a generation through the
//! registry's state machine) and the shared context (catalog, cache, ready
//! and draining flags) by `Arc`, and owns everything of its own: the eval
//! set store, the journal, runs, slots and its thread pool.

use std::sync::Arc;

use object_store::ObjectStore;

use super::state::TrialState;
use crate::config::VectorConfig;
use crate::context::ServiceContext;
use crate::error::Result;
use crate::registry::IndexRegistry;

/// The trial operations; see the [module](self).
#[derive(Debug)]
pub struct TrialService {
    pub(super) context: Arc<ServiceContext>,
    pub(super) registry: Arc<IndexRegistry>,
    pub(super) state: TrialState,
}

impl TrialService {
    /// Trials over `registry`'s indexes, with eval sets and the journal
    /// kept in `store` (the default bucket).
    pub fn new(
        config: &VectorConfig,
        context: Arc<ServiceContext>,
        registry: Arc<IndexRegistry>,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self> {
        Ok(Self {
            context,
            registry,
            state: TrialState::new(config, store)?,
        })
    }

    /// Tells every running trial run to stop (the process is stopping);
    /// returns how many were running.
    pub(crate) fn cancel_runs(&self) -> usize {
        self.state.runs.cancel_all()
    }

    /// Trial runs not yet ended.
    pub(crate) fn running_runs(&self) -> usize {
        self.state.runs.running()
    }
}
