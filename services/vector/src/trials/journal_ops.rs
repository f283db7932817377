//! Reading the trial journal: ListTrials, GetTrial, BestTrial.

use super::rank::{self, Best, Figure, Objective};
use super::record::TrialRecord;
use super::service::TrialService;
use super::state::TrialFilter;
use crate::error::{Error, Result};

impl TrialService {
    /// Trials of `index` that pass `filter`, ordered by `order`, each with
    /// its sort key (the page position).
    pub async fn list_trials(
        &self,
        index: &str,
        filter: &TrialFilter,
        order: Figure,
    ) -> Result<Vec<(String, TrialRecord)>> {
        let mut trials: Vec<(String, TrialRecord)> = self
            .state
            .journal
            .trials(index)
            .await?
            .into_iter()
            .filter(|t| filter.keeps(t))
            .map(|t| (rank::sort_key(order, &t), t))
            .collect();
        trials.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(trials)
    }

    /// One trial.
    pub async fn get_trial(&self, index: &str, trial_id: &str) -> Result<TrialRecord> {
        self.state
            .journal
            .trials(index)
            .await?
            .into_iter()
            .find(|t| t.trial_id == trial_id)
            .ok_or_else(|| Error::TrialNotFound {
                index: index.to_owned(),
                trial_id: trial_id.to_owned(),
            })
    }

    /// The best journaled trial meeting `min_recall`, with how many were
    /// considered.
    pub async fn best_trial(
        &self,
        index: &str,
        eval_set: Option<&str>,
        min_recall: f64,
        objective: Objective,
    ) -> Result<(TrialRecord, usize)> {
        let trials: Vec<TrialRecord> = self
            .state
            .journal
            .trials(index)
            .await?
            .into_iter()
            .filter(|t| eval_set.is_none_or(|e| e == t.eval_set))
            .collect();
        match rank::best(&trials, min_recall, objective) {
            Best::Found(trial) => Ok((trial.clone(), trials.len())),
            Best::NoneMeets { best_recall } => Err(Error::NoTrialMeetsRecall {
                index: index.to_owned(),
                min_recall,
                best_recall,
                considered: trials.len(),
            }),
        }
    }
}
